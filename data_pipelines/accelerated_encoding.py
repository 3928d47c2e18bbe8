"""`tokenize_jsonl --runtime=jax`: MIO's image and speech codes from the JAX encoders
(mio_jax/encoders), in fixed-size batches sharded over every local device.

Each line goes through the shared per-line path (`builders.tokenize_raw`) twice:
  1. collect: with `RecordingTokenizer`s in place of the image/speech tokenizers. Media are read and
     preprocessed on the host exactly as the torch adapters do (SEED's `pixels()`, SpeechTokenizer's
     sinc-Hann resampling) and kept under the key (line position, k-th call); the builder gets
     placeholder codes of the right shape, and its records are thrown away. This pass runs in a
     Grain `MapDataset` with worker threads (decoding is PIL/libsndfile work that frees the GIL).
  2. build: `MediaBatcher` encodes the collected media on the accelerator; once every code of a
     line is known, the line goes through the normal path again with `LookupTokenizer`s that
     return those codes, so its records are the ones the torch runtime writes.
Media are decoded twice (read once per pass); the accelerator work, the part that costs, runs once.

Every batch has one shape (images: `encode_batch` rows; the last is padded with copies whose codes
are dropped), so XLA compiles once. Speech batches group waves of one length (the BiLSTM and the
reflect padding see the whole wave: zero-padding a wave would change its codes), so each distinct
length is its own compile.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from data_pipelines.builders import BadExample, tokenize_raw
from mio_jax.errors import UserError
from mio_jax.io.media import check_wave, resample

IMAGE, SPEECH = "image", "speech"
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# ---- several hosts -------------------------------------------------------------------------------
def process_share(lines: list, process_index: int, process_count: int) -> list:
  """The lines one process tokenizes: positions i with i % process_count == process_index."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside [0, {process_count})")
  return lines[process_index::process_count]


def process_suffix(suffix: str, process_index: int, process_count: int) -> str:
  """The dataset-name suffix of one process: unchanged for a single process (the torch
  runtime's names), else `<suffix>_host<i>of<n>`, so that no two processes write one dataset
  directory or report (each directory still refuses to be written twice, as one process's)."""
  if process_count == 1:
    return suffix
  width = len(str(process_count - 1))
  return f"{suffix}_host{process_index:0{width}d}of{process_count}"


def sharded_batch(encode_batch: int, device_count: int) -> int:
  """`encode_batch` rounded up to a multiple of the device count (the batch axis is split over
  the devices)."""
  if encode_batch < 1:
    raise UserError(f"--encode_batch must be >= 1, got {encode_batch}")
  return -(-encode_batch // device_count) * device_count


# ---- the accelerator side ------------------------------------------------------------------------
def data_mesh() -> Mesh:
  """A 1-D mesh named "data" over this process's devices (each host encodes its own lines)."""
  return Mesh(np.array(jax.local_devices()), ("data",))


def sharded_encoder(encode, params, mesh: Mesh):
  """-> fn(host batch [N, ...]) -> numpy codes [N, ...]: params replicated, the batch axis split
  over the mesh's "data" axis."""
  params = jax.device_put(params, NamedSharding(mesh, P()))
  rows = NamedSharding(mesh, P("data"))

  def run(batch):
    return np.asarray(encode(params, jax.device_put(batch, rows)))

  return run


def seed_image_encoder(image_dir: str, mesh: Mesh, compute_dtype: str = "float32"):
  from mio_jax.encoders.seed import encode_pixels, load_seed_encoder

  params, config = load_seed_encoder(image_dir)
  encode = functools.partial(
    encode_pixels, config=config, compute_dtype=COMPUTE_DTYPES[compute_dtype]
  )
  return sharded_encoder(lambda p, x: encode(p, pixels_NxCxHxW=x), params, mesh)


def speech_encoder(speech_dir: str, num_layers: int, mesh: Mesh, compute_dtype: str = "float32"):
  """-> (fn(waves [B, T]) -> codes [B, L, frames], SpeechEncoderConfig)."""
  from mio_jax.encoders.speechtokenizer import encode_wave, load_speech_encoder

  params, config = load_speech_encoder(speech_dir, num_layers=num_layers)
  encode = functools.partial(
    encode_wave, config=config, compute_dtype=COMPUTE_DTYPES[compute_dtype]
  )
  return sharded_encoder(lambda p, x: encode(p, wave_BxT=x), params, mesh), config


class MediaBatcher:
  """Collects preprocessed media by (kind, shape) and encodes them in batches of `batch` rows
  (a multiple of the device count). `codes[key]` holds each item's codes once encoded."""

  def __init__(self, encoders: dict, batch: int, device_count: int):
    self.encoders, self.batch, self.device_count = encoders, batch, device_count
    self.pending = collections.defaultdict(list)  # (kind, shape) -> [(key, array)]
    self.codes = {}
    self.batches = 0

  def add(self, kind: str, key, array: np.ndarray) -> None:
    self.pending[(kind, array.shape)].append((key, array))

  def run_full(self) -> None:
    """Encodes every full batch."""
    for group, items in self.pending.items():
      while len(items) >= self.batch:
        self._encode(group[0], items[: self.batch], self.batch)
        del items[: self.batch]

  def flush(self) -> None:
    """Encodes everything pending: images padded to `batch` rows (one compiled shape), a speech
    group (its own shape anyway) to the next multiple of the device count."""
    self.run_full()
    for (kind, _), items in self.pending.items():
      if items:
        rows = self.batch if kind == IMAGE else sharded_batch(len(items), self.device_count)
        self._encode(kind, items, rows)
    self.pending.clear()

  def _encode(self, kind: str, items: list, rows: int) -> None:
    arrays = [a for _, a in items]
    arrays += [arrays[-1]] * (rows - len(arrays))  # copies: their codes are dropped below
    codes = self.encoders[kind](np.stack(arrays))
    for i, (key, _) in enumerate(items):
      self.codes[key] = codes[i]
    self.batches += 1


# ---- the host side -------------------------------------------------------------------------------
class RecordingTokenizer:
  """Pass 1 stand-in for an image or speech tokenizer: `encode` keeps the preprocessed input
  under (line position, k) in `media` and returns placeholder codes of the real shape. Every other
  attribute (codebook_size, sample_rate, ...) is the wrapped adapter's."""

  def __init__(self, kind: str, adapter, preprocess, placeholder, position: int, media: list):
    self.kind, self.adapter, self.preprocess, self.placeholder = (
      kind,
      adapter,
      preprocess,
      placeholder,
    )
    self.position, self.media = position, media

  def __getattr__(self, name):
    return getattr(self.adapter, name)

  def encode(self, *media_input):
    array = self.preprocess(*media_input)
    self.media.append((self.kind, (self.position, len(self.media)), array))
    return self.placeholder(array)


class LookupTokenizer:
  """Pass 2 stand-in: `encode` returns the codes the accelerator computed for the k-th media
  item of the line at `position` (the same call order as pass 1: the same code path)."""

  def __init__(self, adapter, codes: dict, position: int, counter: list):
    self.adapter, self.codes, self.position, self.counter = adapter, codes, position, counter

  def __getattr__(self, name):
    return getattr(self.adapter, name)

  def encode(self, *_):
    key = (self.position, self.counter[0])
    self.counter[0] += 1
    return self.codes.pop(key)


def image_pixels(adapter, image_HxWx3: np.ndarray) -> np.ndarray:
  """float32 [3, S, S]: the SEED adapter's own preprocessing (`pixels()`), as numpy."""
  return adapter.pixels(image_HxWx3).float().cpu().numpy()[0]


def speech_wave(adapter, wave: np.ndarray, sample_rate: int) -> np.ndarray:
  """float32 [T] at the tokenizer's rate: what the SpeechTokenizer adapter's `encode` feeds its
  model (check_wave, then torchaudio-style sinc-Hann resampling)."""
  wave = check_wave(wave, sample_rate)
  return resample(wave, sample_rate, adapter.sample_rate, "sinc_hann").astype(np.float32)


@dataclasses.dataclass
class MediaParts:
  """Which of a Tokenizers' parts run on the accelerator: kind -> (preprocess, placeholder)."""

  toks: object  # the loaded Tokenizers (torch adapters)
  hooks: dict

  def recording(self, position: int, media: list):
    parts = {
      kind: RecordingTokenizer(kind, getattr(self.toks, kind), pre, ph, position, media)
      for kind, (pre, ph) in self.hooks.items()
    }
    return dataclasses.replace(self.toks, **parts)

  def lookup(self, position: int, codes: dict):
    counter = [0]  # shared by the parts: one call order per line, as pass 1 numbered it
    parts = {
      kind: LookupTokenizer(getattr(self.toks, kind), codes, position, counter)
      for kind in self.hooks
    }
    return dataclasses.replace(self.toks, **parts)


def collect_media(line_and_position, parts: MediaParts, builder, opts) -> list:
  """Pass 1 for one line: -> [(kind, key, preprocessed array)]. A bad line yields what it read
  before failing (harmless: pass 2 skips it and reports it, as the torch runtime does)."""
  (index, example, where), position = line_and_position
  media = []
  if example is not None:
    try:
      tokenize_raw(example, index, builder, parts.recording(position, media), opts, where, [])
    except BadExample:
      pass  # reported by pass 2, which meets the same error on the same code path
  return media


def collected(lines: list, parts: MediaParts, builder, opts, threads: int):
  """Pass 1 over `lines`, in order, on `threads` Grain worker threads."""
  dataset = grain.MapDataset.source([(line, i) for i, line in enumerate(lines)]).map(
    functools.partial(collect_media, parts=parts, builder=builder, opts=opts)
  )
  if threads <= 1:
    return iter(dataset)
  return iter(
    dataset.to_iter_dataset(
      grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4 * threads)
    )
  )


class Progress:
  """One stderr line every `every_s` seconds and at the end: lines done / total, lines/s, ETA."""

  def __init__(self, total: int, stream=sys.stderr, every_s: float = 30.0, label: str = "tokenize"):
    self.total, self.stream, self.every_s, self.label = total, stream, every_s, label
    self.start = self.last = time.monotonic()

  def update(self, done: int, batches: int, final: bool = False) -> None:
    now = time.monotonic()
    if not final and now - self.last < self.every_s:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    eta = (self.total - done) / rate if rate > 0 else float("inf")
    print(
      f"{self.label}: {done}/{self.total} lines, {rate:.1f} lines/s, ETA {eta:.0f} s, "
      f"{batches} batches",
      file=self.stream,
      flush=True,
    )


def processes(distributed: bool) -> tuple[int, int]:
  """(process_index, process_count); `distributed` joins the multi-host job first
  (`jax.distributed.initialize()`: on a TPU pod slice every argument is found on its own)."""
  if distributed:
    jax.distributed.initialize()
  return jax.process_index(), jax.process_count()
