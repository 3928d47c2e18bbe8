"""On-disk format of pre-tokenized datasets (format version 1). No pickle anywhere.

A dataset is a directory:

    manifest.json                 written last, atomically (tmp + rename, or one object upload):
                                  a dataset without it is incomplete and is refused
    shard-00000.array_record      ArrayRecord files; one record = one example
    shard-00001.array_record      ...

manifest.json:
    {"format": "mio_jax.shards", "format_version": 1, "vocab_fingerprint": "…", "vocab": {layout},
     "data_type": "image_text" | "interleaved" | "video_text" | "speech_text" | "text" | "sft" | …,
     "source": "free text: where the examples came from", "license": "…",
     "shards": [{"file": "shard-00000.array_record", "records": N, "tokens": T}, …],
     "records": N, "tokens": {"total": T, "text": …, "special": …, "image": …, "speech": …},
     "loss_tokens": L}

A record (little-endian bytes):
    magic b"MIOR" | version u8 | reserved u8 u16 | n u32 | tokens int32[n] | loss_mask uint8[n]
    | crc32 u32
The crc32 covers every byte before it, so a flipped byte anywhere is caught.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import zlib

import numpy as np

from mio_jax.errors import UserError
from mio_jax.io import paths
from mio_jax.tokens import vocab as vocab_lib

MAGIC = b"MIOR"
RECORD_VERSION = 1
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_HEADER = struct.Struct("<4sBBHI")  # magic, version, reserved, reserved, n


class DataFormatError(UserError, ValueError):
  """A shard, record or manifest that does not follow this format. The message names the place
  (file and record), and the command lines print it as their one line (exit 2)."""


def encode_record(tokens, loss_mask) -> bytes:
  tokens = np.asarray(tokens)
  loss_mask = np.asarray(loss_mask)
  if tokens.ndim != 1 or loss_mask.shape != tokens.shape:
    raise ValueError(
      f"tokens and loss_mask must be 1-D of equal length, got {tokens.shape} and {loss_mask.shape}"
    )
  if tokens.size == 0:
    raise ValueError("refusing to write an empty example")
  if (
    not np.issubdtype(tokens.dtype, np.integer)
    or tokens.min() < 0
    or tokens.max() > np.iinfo(np.int32).max
  ):
    raise ValueError("tokens must be non-negative int32 ids")
  if loss_mask.size and (loss_mask.min() < 0 or loss_mask.max() > 1):
    raise ValueError("loss_mask must hold 0/1 values")
  body = (
    _HEADER.pack(MAGIC, RECORD_VERSION, 0, 0, tokens.size)
    + tokens.astype("<i4").tobytes()
    + loss_mask.astype(np.uint8).tobytes()
  )
  return body + struct.pack("<I", zlib.crc32(body))


def decode_record(blob: bytes, where: str = "record") -> tuple[np.ndarray, np.ndarray]:
  """Bytes → (tokens int32[n], loss_mask uint8[n]); raises DataFormatError naming `where`."""
  if len(blob) < _HEADER.size + 4:
    raise DataFormatError(f"{where}: record of {len(blob)} bytes is shorter than a header")
  magic, version, _, _, n = _HEADER.unpack_from(blob)
  if magic != MAGIC:
    raise DataFormatError(f"{where}: bad magic {magic!r} (not a mio_jax record)")
  if version != RECORD_VERSION:
    raise DataFormatError(f"{where}: record version {version}, this reader knows {RECORD_VERSION}")
  expected = _HEADER.size + 5 * n + 4
  if len(blob) != expected:
    raise DataFormatError(
      f"{where}: record is {len(blob)} bytes, header says {expected} (truncated or corrupt)"
    )
  (crc,) = struct.unpack_from("<I", blob, expected - 4)
  if zlib.crc32(memoryview(blob)[: expected - 4]) != crc:
    raise DataFormatError(f"{where}: checksum mismatch (corrupt bytes)")
  tokens = np.frombuffer(blob, dtype="<i4", count=n, offset=_HEADER.size).astype(np.int32)
  loss_mask = np.frombuffer(blob, dtype=np.uint8, count=n, offset=_HEADER.size + 4 * n)
  return tokens, loss_mask


class ShardWriter:
  """Writes examples into rolling ArrayRecord shards; `close()` writes the manifest atomically.

      with ShardWriter(out_dir, vocab, data_type="image_text", source="demo shapes") as w:
        w.write(tokens, loss_mask)

  `out_dir` may be a URL: ArrayRecord writes local files only, so each shard is written into a
  local staging directory and uploaded once finished; the manifest still comes last.
  """

  def __init__(
    self,
    out_dir: str,
    vocab: vocab_lib.Vocab,
    data_type: str,
    source: str,
    license: str = "",
    max_shard_bytes: int = 64 << 20,
    extra: dict | None = None,
  ):
    out_dir = paths.check(out_dir)
    if paths.exists(paths.join(out_dir, MANIFEST)):
      raise FileExistsError(f"{out_dir} already holds a finished dataset ({MANIFEST} exists)")
    # Removed again by abort() when this writer made it (a failed run leaves no trace).
    self._made_dir = not paths.isdir(out_dir)
    paths.check_writable(out_dir)  # a missing bucket fails now, not at the first upload
    self.out_dir, self.vocab, self.max_shard_bytes = out_dir, vocab, max_shard_bytes
    # Shards are written here; for a local out_dir that is out_dir itself (no copy).
    self._staging = tempfile.mkdtemp(prefix="mio_jax_shards-") if paths.is_url(out_dir) else out_dir
    self.meta = {"data_type": data_type, "source": source, "license": license, **(extra or {})}
    self.shards: list[dict] = []
    self.tokens_by_modality = np.zeros(len(vocab_lib.MODALITY_NAMES), np.int64)
    self.loss_tokens = 0
    self._writer = None
    self._bytes = 0
    self._closed = False
    self._finished = False  # the manifest is written

  def _roll(self):
    from array_record.python.array_record_module import ArrayRecordWriter

    self._close_shard()
    name = f"shard-{len(self.shards):05d}.array_record"
    self._writer = ArrayRecordWriter(os.path.join(self._staging, name), "group_size:1")
    self.shards.append({"file": name, "records": 0, "tokens": 0})
    self._bytes = 0

  def _close_shard(self, upload: bool = True):
    if self._writer is None:
      return
    self._writer.close()
    self._writer = None
    if self._staging != self.out_dir and upload:
      local = os.path.join(self._staging, self.shards[-1]["file"])
      paths.copy_file(local, paths.join(self.out_dir, self.shards[-1]["file"]))
      os.remove(local)  # staging holds at most one shard at a time

  def _drop_staging(self):
    if self._staging != self.out_dir:
      shutil.rmtree(self._staging, ignore_errors=True)

  def write(self, tokens, loss_mask) -> None:
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab.size):
      bad = int(tokens.max()) if tokens.max() >= self.vocab.size else int(tokens.min())
      raise ValueError(
        f"example {self.num_records} for {self.out_dir}: token id {bad} outside the "
        f"vocab [0, {self.vocab.size})"
      )
    blob = encode_record(tokens, loss_mask)
    if self._writer is None or self._bytes + len(blob) > self.max_shard_bytes:
      self._roll()
    self._writer.write(blob)
    self._bytes += len(blob)
    self.shards[-1]["records"] += 1
    self.shards[-1]["tokens"] += int(tokens.size)
    self.tokens_by_modality += np.bincount(
      self.vocab.modality_of(tokens), minlength=len(vocab_lib.MODALITY_NAMES)
    )
    self.loss_tokens += int(np.asarray(loss_mask).sum())

  @property
  def num_records(self) -> int:
    return sum(s["records"] for s in self.shards)

  def close(self) -> dict:
    if self._closed:
      raise RuntimeError(f"ShardWriter for {self.out_dir} closed twice")
    self._close_shard()
    self._drop_staging()
    self._closed = True
    counts = dict(zip(vocab_lib.MODALITY_NAMES, map(int, self.tokens_by_modality)))
    counts.pop("padding")
    manifest = {
      "format": "mio_jax.shards",
      "format_version": FORMAT_VERSION,
      "vocab_fingerprint": self.vocab.fingerprint(),
      "vocab": self.vocab.layout(),
      **self.meta,
      "shards": self.shards,
      "records": self.num_records,
      "tokens": {"total": sum(counts.values()), **counts},
      "loss_tokens": self.loss_tokens,
    }
    paths.write_text(
      paths.join(self.out_dir, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True)
    )
    self._finished = True
    return manifest

  def __enter__(self):
    return self

  def abort(self) -> None:
    """Stops writing and removes every shard this writer wrote (and its directory, when this
    writer made it and it is empty now): a failed run never leaves shards without a manifest.
    Only a killed process can; its shards stay visibly incomplete (no manifest)."""
    if self._finished:
      return
    self._closed = True
    self._close_shard(upload=False)
    self._drop_staging()
    for shard in self.shards:
      target = paths.join(self.out_dir, shard["file"])
      if paths.exists(target):
        paths.remove_tree(target)
    if self._made_dir and paths.isdir(self.out_dir) and not paths.listdir(self.out_dir):
      paths.remove_tree(self.out_dir)

  def __exit__(self, exc_type, *_):
    if exc_type is None:
      self.close()
    else:
      self.abort()


def read_manifest(dataset_dir: str, vocab: vocab_lib.Vocab | None = None) -> dict:
  """Load and check a dataset's manifest (and, given a vocab, its fingerprint). `dataset_dir` may
  be a URL; errors name the directory or file."""
  dataset_dir = paths.check(dataset_dir)
  path = paths.join(dataset_dir, MANIFEST)
  if not paths.isdir(dataset_dir):
    raise FileNotFoundError(f"dataset directory {dataset_dir} does not exist")
  names = set(paths.listdir(dataset_dir))  # one listing, not one request per shard
  if MANIFEST not in names:
    raise FileNotFoundError(f"{path} is missing: {dataset_dir} is not a finished dataset")
  try:
    manifest = json.loads(paths.read_text(path))
  except json.JSONDecodeError as e:
    raise DataFormatError(f"{path}: not valid JSON ({e})") from e
  if manifest.get("format") != "mio_jax.shards" or manifest.get("format_version") != FORMAT_VERSION:
    raise DataFormatError(
      f"{path}: format {manifest.get('format')!r} v{manifest.get('format_version')}, "
      f"expected 'mio_jax.shards' v{FORMAT_VERSION}"
    )
  if vocab is not None:
    vocab.check_fingerprint(manifest.get("vocab_fingerprint"), path)
  for shard in manifest["shards"]:
    if shard["file"] not in names:
      file = paths.join(dataset_dir, shard["file"])
      raise FileNotFoundError(f"{file} listed in {path} is missing")
  return manifest
