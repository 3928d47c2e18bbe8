"""Random-access sources of validated examples: mio_jax shard datasets and TFDS datasets.

Each source maps a record index to a `Parsed` example: its pieces (one piece, or several when an
overlong example is split) and what became of the record: skipped as corrupt, dropped as
overlong, split, or too short to train on; the pipeline counts each kind into the iterator state.
Every error names the file (or TFDS dataset) and the record index. Sources are picklable so
grain workers can use them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from concurrent import futures
from typing import NamedTuple

import grain
import numpy as np

from mio_jax.data import format as fmt
from mio_jax.data import packing
from mio_jax.io import paths
from mio_jax.tokens import vocab as vocab_lib

TFDS_PREFIX = "tfds:"


class OverlongError(fmt.DataFormatError):
  """An example longer than seq_len + 1 under data.overlong='reject' (never skipped)."""


class Parsed(NamedTuple):
  pieces: tuple  # ((tokens int32[n], loss_mask uint8[n]), ...); empty if nothing to learn
  skipped: int  # 1 when the record was corrupt and data.skip_corrupt let us skip it
  dropped: int = 0  # 1 when the record was longer than seq_len + 1 under overlong='drop'
  short: int = 0  # 1 when the record had fewer than 2 tokens (nothing to predict): not trained on
  split: int = 0  # 1 when the record was longer than seq_len + 1 and cut into pieces


# 'auto' resolves per source: a conversation cut into pieces can leave an answer without its
# prompt, so SFT sources drop overlong examples; other sources split them.
OVERLONG_POLICIES = ("auto", "split", "drop", "reject")


def is_conversation(data_type: str) -> bool:
  """SFT data types: 'sft' and the per-task 'sft_<task>' (data_pipelines/builders/raw.py)."""
  return data_type == "sft" or data_type.startswith("sft_")


@dataclasses.dataclass(frozen=True)
class ParseOptions:
  vocab_size: int  # real ids, excluding the padding rows
  max_tokens: int  # seq_len + 1: the longest example one row holds
  overlong: str = "split"  # one of OVERLONG_POLICIES
  skip_corrupt: bool = False

  def __post_init__(self):
    if self.overlong not in OVERLONG_POLICIES:
      raise ValueError(
        f"config.data.overlong must be one of {OVERLONG_POLICIES}, got {self.overlong!r}"
      )

  def for_source(self, data_type: str) -> ParseOptions:
    """'auto' made concrete for a source of `data_type` ('' when unknown: split)."""
    if self.overlong != "auto":
      return self
    policy = "drop" if is_conversation(data_type) else "split"
    return dataclasses.replace(self, overlong=policy)


def check_example(tokens, loss_mask, where, opts: ParseOptions) -> Parsed:
  """Validates ids and mask, applies the overlong policy. Raises DataFormatError naming `where`
  (a str, or anything whose str() is one: formatted only on error)."""
  tokens = np.asarray(tokens)
  loss_mask = np.asarray(loss_mask)
  if tokens.ndim != 1 or loss_mask.shape != tokens.shape:
    raise fmt.DataFormatError(
      f"{where}: tokens {tokens.shape} and loss_mask {loss_mask.shape} must be 1-D of equal length"
    )
  n = tokens.size
  if n and _out_of_range(tokens, opts.vocab_size):
    bad = int(tokens.max()) if tokens.max() >= opts.vocab_size else int(tokens.min())
    raise fmt.DataFormatError(f"{where}: token id {bad} outside the vocab [0, {opts.vocab_size})")
  if n and (int(loss_mask.max()) > 1 or (loss_mask.dtype != np.uint8 and loss_mask.min() < 0)):
    raise fmt.DataFormatError(f"{where}: loss_mask holds values other than 0/1")
  if n < 2:
    return Parsed((), 0, short=1)  # a single token predicts nothing
  if n > opts.max_tokens and opts.overlong == "reject":
    raise OverlongError(
      f"{where}: example of {n} tokens is longer than seq_len + 1 = {opts.max_tokens} "
      "(config.data.overlong='reject'; 'split' would cut it into pieces)"
    )
  if n > opts.max_tokens and opts.overlong == "drop":
    logging.warning(
      "dropping overlong record (config.data.overlong 'drop', or 'auto' on an SFT "
      "source): %s: %d tokens > seq_len + 1 = %d",
      where,
      n,
      opts.max_tokens,
    )
    return Parsed((), 0, 1)
  if n > opts.max_tokens and opts.overlong == "auto":
    raise ValueError(f"{where}: overlong='auto' must be resolved per source (for_source)")
  tokens = tokens.astype(np.int32, copy=False)
  pieces = tuple(packing.split_overlong(tokens, loss_mask, opts.max_tokens))
  return Parsed(pieces, 0, split=int(len(pieces) > 1))


def _out_of_range(tokens: np.ndarray, size: int) -> bool:
  if tokens.dtype == np.int32:  # negative ids read as uint32 are huge: one pass checks both ends
    return int(tokens.view(np.uint32).max()) >= size
  return bool(tokens.min() < 0 or tokens.max() >= size)


def _skip_or_raise(error: fmt.DataFormatError, opts: ParseOptions) -> Parsed:
  if not opts.skip_corrupt or isinstance(error, OverlongError):
    raise error
  logging.warning("skipping corrupt record (config.data.skip_corrupt=True): %s", error)
  return Parsed((), 1)


class ShardSource:
  """Records of one mio_jax dataset directory (manifest.json + *.array_record shards).

  A URL dataset is first staged into a local cache (ArrayRecord reads local files only) under
  `cache_dir` ("" = the system temp dir); errors still name the URL of the shard."""

  def __init__(
    self, dataset_dir: str, vocab: vocab_lib.Vocab, opts: ParseOptions, cache_dir: str = ""
  ):
    manifest = fmt.read_manifest(dataset_dir, vocab)
    self.dataset_dir, self.opts = dataset_dir, opts.for_source(str(manifest.get("data_type", "")))
    manifest_path = paths.join(dataset_dir, fmt.MANIFEST)
    self.files = [paths.join(dataset_dir, s["file"]) for s in manifest["shards"]]
    local = stage_shards(dataset_dir, manifest, self.files, cache_dir)
    with futures.ThreadPoolExecutor(16) as pool:  # opening thousands of shards adds up
      counts = list(
        pool.map(_count_records, local, [s["records"] for s in manifest["shards"]], self.files)
      )
    if sum(counts) == 0:
      raise fmt.DataFormatError(f"{manifest_path}: the dataset has 0 records (empty source)")
    kept = [(f, l, n) for f, l, n in zip(self.files, local, counts) if n]
    self.files = [f for f, _, _ in kept]
    # Counts are verified above, so the slices spare grain from reopening every file.
    self._source = grain.sources.ArrayRecordDataSource([f"{l}[0:{n}]" for _, l, n in kept])
    self._ends = np.cumsum([n for _, _, n in kept])

  def __len__(self) -> int:
    return int(self._ends[-1])

  def where(self, index: int) -> str:
    shard = int(np.searchsorted(self._ends, index, side="right"))
    local = index - (int(self._ends[shard - 1]) if shard else 0)
    return f"{self.files[shard]} record {local}"

  def _parse(self, index: int, blob) -> Parsed:
    where = _Where(self, index)
    try:
      tokens, loss_mask = fmt.decode_record(blob, where)
      return check_example(tokens, loss_mask, where, self.opts)
    except fmt.DataFormatError as e:
      return _skip_or_raise(e, self.opts)

  def _read_error(self, index: int, error: Exception) -> Parsed:
    e = fmt.DataFormatError(f"{self.where(index)}: cannot read record ({error})")
    return _skip_or_raise(e, self.opts)

  def __getitem__(self, index) -> Parsed:
    index = int(index)
    try:
      blob = self._source[index]
    except Exception as e:  # pylint: disable=broad-except  # array_record raises plain RuntimeError
      return self._read_error(index, e)
    return self._parse(index, blob)

  def __repr__(self) -> str:  # grain shows it in pipeline descriptions
    return f"ShardSource({self.dataset_dir!r}, records={len(self)})"


class _Where:
  """'<file> record <i>', formatted only when an error message needs it (saves ~10 % per record)."""

  def __init__(self, source, index: int):
    self.source, self.index = source, index

  def __str__(self) -> str:
    return self.source.where(self.index)


class SourceDataset(grain.MapDataset):
  """A source as a grain MapDataset (index modulo length, like grain's own source dataset),
  without grain's per-record monitoring, which costs ~15 % of a record's time here."""

  def __init__(self, source):
    super().__init__([])
    self._source = source
    self._n = len(source)

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._source[index % self._n]

  def __str__(self) -> str:
    return f"SourceDataset({self._source!r})"


def stage_shards(dataset_dir: str, manifest: dict, files: list[str], cache_dir: str = "") -> list:
  """Local paths of `files`: themselves for a local dataset; for a URL, copies in a local cache
  (one per version of the manifest, so a rewritten dataset is never read from a stale copy)."""
  if not paths.is_url(dataset_dir):
    return list(files)
  manifest_path = paths.join(dataset_dir, fmt.MANIFEST)
  version = json.dumps(manifest, sort_keys=True) + str(paths.path(manifest_path).stat().mtime)
  root = os.path.join(
    cache_dir or os.path.join(tempfile.gettempdir(), "mio_jax_cache"),
    "shards-" + hashlib.sha256(version.encode()).hexdigest()[:16],
  )
  with futures.ThreadPoolExecutor(16) as pool:
    local = list(pool.map(lambda f: paths.local_copy(f, root), files))
  size = sum(os.path.getsize(f) for f in local)
  logging.info(
    "data: staged %d shards (%.1f MB) from %s to %s",
    len(local),
    size / 1e6,
    dataset_dir,
    os.path.dirname(local[0]) if local else root,
  )
  return local


def _count_records(path: str, expected: int, name: str | None = None) -> int:
  """Records in the local ArrayRecord file `path`; errors name `name` (its URL) if given."""
  from array_record.python.array_record_module import ArrayRecordReader  # pylint: disable=g-import-not-at-top

  name = name or path
  try:
    reader = ArrayRecordReader(path)
    n = reader.num_records()
    reader.close()
  except Exception as e:  # pylint: disable=broad-except
    raise fmt.DataFormatError(
      f"{name}: not a readable ArrayRecord file, truncated or corrupt ({e})"
    ) from e
  if n != expected:
    raise fmt.DataFormatError(
      f"{name}: holds {n} records, the manifest says {expected} (truncated or replaced shard)"
    )
  return n


class TfdsSource:
  """A split of a TFDS dataset (features `tokens` int, optional `loss_mask`) prepared in
  `data_dir` with file_format='array_record'. Spec: 'tfds:NAME[:VERSION]:SPLIT'."""

  def __init__(self, spec: str, data_dir: str, vocab: vocab_lib.Vocab, opts: ParseOptions):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  # slow import

    body = spec[len(TFDS_PREFIX) :]
    if ":" not in body:
      raise ValueError(f"TFDS source {spec!r}: expected 'tfds:NAME:SPLIT'")
    self.name, self.split = body.rsplit(":", 1)
    self.spec, self.opts = spec, opts.for_source("")  # TFDS carries no data type: split
    try:
      builder = tfds.builder(self.name, data_dir=data_dir)
      self._source = builder.as_data_source(split=self.split)
    except Exception as e:  # pylint: disable=broad-except  # tfds raises many types
      raise FileNotFoundError(f"TFDS source {spec!r} in {data_dir}: cannot open ({e})") from e
    fingerprint = (builder.info.metadata or {}).get("vocab_fingerprint")
    if fingerprint is not None:
      vocab.check_fingerprint(fingerprint, f"TFDS source {spec!r}")
    else:
      logging.warning(
        "TFDS source %r has no vocab_fingerprint in its metadata; ids are checked "
        "against the vocab size only",
        spec,
      )
    if len(self._source) == 0:
      raise fmt.DataFormatError(f"TFDS source {spec!r} in {data_dir}: 0 records (empty source)")

  def __len__(self) -> int:
    return len(self._source)

  def where(self, index: int) -> str:
    return f"TFDS {self.spec} record {index}"

  def __getitem__(self, index) -> Parsed:
    index = int(index)
    try:
      example = self._source[index]
      tokens, loss_mask = example["tokens"], example.get("loss_mask")
      if loss_mask is None:
        loss_mask = np.ones_like(tokens, np.uint8)
      return check_example(tokens, loss_mask, self.where(index), self.opts)
    except fmt.DataFormatError as e:
      return _skip_or_raise(e, self.opts)
    except Exception as e:  # pylint: disable=broad-except  # decoding errors from tfds
      return _skip_or_raise(
        fmt.DataFormatError(f"{self.where(index)}: cannot decode ({e})"), self.opts
      )

  def __repr__(self) -> str:
    return f"TfdsSource({self.spec!r}, records={len(self)})"


def open_source(
  spec: str, data_dir: str, vocab: vocab_lib.Vocab, opts: ParseOptions, cache_dir: str = ""
):
  """'tfds:NAME:SPLIT' or a dataset directory (relative to data_dir unless absolute or a URL)."""
  if spec.startswith(TFDS_PREFIX):
    return TfdsSource(spec, data_dir, vocab, opts)
  return ShardSource(dataset_path(spec, data_dir), vocab, opts, cache_dir)


def dataset_path(spec: str, data_dir: str) -> str:
  """`spec` under `data_dir`; an absolute path or a URL stands alone (os.path.join's rule)."""
  spec = paths.check(spec)
  if not data_dir or paths.is_url(spec) or os.path.isabs(spec):
    return spec
  return paths.join(data_dir, spec)
