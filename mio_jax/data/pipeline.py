"""Config → grain iterator of packed batches. The only entry points the training loop needs.

    per source: ArrayRecord/TFDS records → validating parser → seeded shuffle → repeat
    → weighted mix (config.data.weights) → packing streams → this process's rows of the global
    batch → optional grain worker processes (config.data.worker_count) → thread prefetch

Config keys (ml_collections.ConfigDict; declared with their defaults in mio_jax/config.py): seed,
seq_len, global_batch, data_dir, data.sources {name: dataset dir relative to data_dir, absolute
path, or 'tfds:NAME:SPLIT'}, data.weights {name: weight > 0}, data.overlong ('auto': drop on SFT
sources, split elsewhere), data.skip_corrupt,
data.worker_count, data.shuffle, data.pack_rows, data.prefetch, data.cache_dir.
"""

from __future__ import annotations

import atexit
import logging
import math
import numbers
import weakref
import zlib

import grain

from mio_jax import config as base_config
from mio_jax.data import shuffle as shuffle_lib
from mio_jax.data import sources as sources_lib
from mio_jax.data import streams
from mio_jax.errors import MissingDatasetError
from mio_jax.io import paths
from mio_jax.tokens import vocab as vocab_lib

# Read by the training loop, not by this pipeline.
_LOOP_KEYS = ("kind", "build_demo_corpus", "corpus_builder", "eval_suffix")
# Defaults for the keys this pipeline reads: mio_jax/config.py declares them (one home), filled
# in here for configs built by hand without get_base_config.
_DEFAULTS = {
  k: v
  for k, v in base_config.get_base_config().data.to_dict().items()
  if k not in _LOOP_KEYS + ("sources",)
}


def data_options(config) -> dict:
  """config.data with defaults filled in (plain dict)."""
  data = dict(config.data) if "data" in config else {}
  unknown = set(data) - set(_DEFAULTS) - {"sources", *_LOOP_KEYS}
  if unknown:
    logging.warning(
      "ignoring unknown config.data keys %s (typo?); this pipeline reads %s",
      sorted(unknown),
      sorted(_DEFAULTS) + ["sources"],
    )
  out = {**_DEFAULTS, **{k: v for k, v in data.items() if v is not None}}
  if out.get("mixture"):  # what config.with_mixture spells out, for callers other than train()
    out["weights"] = base_config.parse_mixture(out["mixture"])
    out["sources"] = {name: name for name in out["weights"]}
  if not out.get("sources"):
    raise ValueError("config.data.sources is empty: name at least one dataset")
  out["sources"] = {str(k): str(v) for k, v in dict(out["sources"]).items()}
  return out


def mixture_weights(names, weights) -> list[float]:
  """Weights in `names` order; every source needs one, each finite and > 0."""
  if not weights:  # None or an empty ConfigDict
    if len(names) > 1:
      raise ValueError(f"config.data.weights is missing; give a weight for each of {sorted(names)}")
    return [1.0]
  weights = dict(weights)
  unknown = sorted(set(weights) - set(names))
  if unknown:
    raise ValueError(
      f"config.data.weights names unknown source(s) {unknown}; sources are {sorted(names)}"
    )
  missing = sorted(set(names) - set(weights))
  if missing:
    raise ValueError(f"config.data.weights lacks a weight for source(s) {missing}")
  out = []
  for name in names:
    w = weights[name]
    if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w <= 0:
      raise ValueError(f"config.data.weights[{name!r}] = {w!r}: weights must be finite and > 0")
    out.append(float(w))
  return out


def _seed_for(seed: int, name: str) -> int:
  """Per-source shuffle seed: stable across runs and Python versions (no hash())."""
  return zlib.crc32(f"{int(seed)}/{name}".encode()) & 0x7FFFFFFF


def open_sources(config, vocab: vocab_lib.Vocab) -> dict:
  opts = data_options(config)
  parse = sources_lib.ParseOptions(
    vocab_size=vocab.size,
    max_tokens=int(config.seq_len) + 1,
    overlong=opts["overlong"],
    skip_corrupt=bool(opts["skip_corrupt"]),
  )
  data_dir = config.data_dir or ""
  check_sources_exist(opts["sources"], data_dir)
  return {
    name: sources_lib.open_source(spec, data_dir, vocab, parse, str(opts["cache_dir"]))
    for name, spec in opts["sources"].items()
  }


def check_sources_exist(sources: dict, data_dir: str) -> None:
  """One error naming every missing dataset directory and what data_dir does hold: a stage
  config's mixture names datasets (e.g. `text`) a user's own data may not have."""
  missing = [
    sources_lib.dataset_path(spec, data_dir)
    for spec in sources.values()
    if not spec.startswith(sources_lib.TFDS_PREFIX)
    and not paths.isdir(sources_lib.dataset_path(spec, data_dir))
  ]
  if not missing:
    return
  what = (
    f"dataset directory {missing[0]} does not exist"
    if len(missing) == 1
    else f"dataset directories {', '.join(missing)} do not exist"
  )
  if data_dir and not paths.isdir(data_dir):
    raise MissingDatasetError(
      f"{what}: config.data_dir {data_dir} itself does not exist. Point --config.data_dir at "
      "the folder that holds your datasets"
    )
  held = sorted(paths.listdir(data_dir)) if data_dir else []
  raise MissingDatasetError(
    f"{what}; {data_dir or 'data_dir'} holds "
    f"{held or 'nothing'}. Train on what is there with --config.data.mixture=NAME:WEIGHT,... "
    "(e.g. image_text:12,speech_text:2)"
  )


def mixed_dataset(sources: dict, weights, seed: int, shuffle: bool) -> grain.MapDataset:
  """Infinite MapDataset of Parsed examples: each source shuffled per epoch, repeated, mixed."""
  proportions = mixture_weights(list(sources), weights)  # validates even a single source's
  parts = []
  for name, source in sources.items():
    ds = sources_lib.SourceDataset(source)
    if shuffle:
      ds = shuffle_lib.shuffle(ds, _seed_for(seed, name))  # then repeat: reshuffled every epoch
    parts.append(ds.repeat())
  if len(parts) == 1:
    return parts[0]
  return grain.MapDataset.mix(parts, proportions)


def _local_rows(global_batch: int, process_index: int, process_count: int) -> tuple[int, int]:
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside [0, process_count={process_count})")
  if global_batch % process_count:
    raise ValueError(
      f"global_batch {global_batch} is not divisible by process_count {process_count}"
    )
  rows = global_batch // process_count
  return process_index * rows, (process_index + 1) * rows


def make_train_iterator(
  config, vocab: vocab_lib.Vocab, process_index: int | None = None, process_count: int | None = None
) -> grain.DatasetIterator:
  """Infinite, checkpointable iterator of this process's rows of each global batch.

  Yields {tokens, targets, loss_mask, segment_ids, positions}: int32 [global_batch //
  process_count, seq_len]. The global batch at step s is a function of (seed, s, config) only,
  whatever process_count is; data.worker_count is part of that function (changing it changes
  the order)."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top

    process_index, process_count = jax.process_index(), jax.process_count()
  opts = data_options(config)
  sources = open_sources(config, vocab)
  mixed = mixed_dataset(sources, opts["weights"], int(config.seed), bool(opts["shuffle"]))
  workers = int(opts["worker_count"])
  if workers < 0:
    raise ValueError(f"config.data.worker_count must be >= 0, got {workers}")
  ds = streams.PackedBatchDataset(
    mixed,
    global_batch=int(config.global_batch),
    rows=_local_rows(int(config.global_batch), process_index, process_count),
    seq_len=int(config.seq_len),
    pad_id=vocab.special_id("<pad>"),
    step_groups=max(1, workers),
    rows_per_window=int(opts["pack_rows"]),
  )
  if workers:
    from absl import flags  # pylint: disable=g-import-not-at-top

    if not flags.FLAGS.is_parsed():  # grain reads its absl flags; outside an absl app use defaults
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  elif opts["prefetch"]:
    ds = grain.experimental.ThreadPrefetchIterDataset(
      ds, prefetch_buffer_size=int(opts["prefetch"])
    )
  logging.info(
    "data: %s sources %s, rows %s of %s per step",
    len(sources),
    list(sources),
    _local_rows(int(config.global_batch), process_index, process_count),
    config.global_batch,
  )
  return _close_at_exit(iter(ds))


def _close_at_exit(iterator):
  """Stops prefetch threads/workers before interpreter teardown: a grain prefetch thread still
  inside array_record at exit aborts the process (rc 134) instead of exiting cleanly."""
  ref = weakref.ref(iterator)

  def close():
    it = ref()
    if it is not None and hasattr(it, "close"):
      it.close()
      todo = [it]
      while todo:  # grain's __del__ closes again during teardown, when its modules are gone
        node = todo.pop()
        node.close = lambda: None
        todo.extend(getattr(node, "_parents", ()))
        todo.extend(x for x in getattr(node, "_iterators_in_use", ()) if x is not None)  # mp

  atexit.register(close)
  return iterator


def make_eval_iterator(
  config,
  vocab: vocab_lib.Vocab,
  process_index: int | None = None,
  process_count: int | None = None,
  interleave: bool = False,
) -> grain.DatasetIterator:
  """One pass over every record of every source (no shuffle, no repeat, weights ignored), packed
  into the same batch layout. Every process packs the whole global batch and keeps its rows, so
  all processes see the same number of batches; rows past the end are padding (loss_mask 0).
  Sources follow one another, or with `interleave` alternate record by record, so that the first
  few batches already hold every source (evaluation during training reads only those)."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top

    process_index, process_count = jax.process_index(), jax.process_count()
  opts = data_options(config)
  sources = open_sources(config, vocab)
  parts = [sources_lib.SourceDataset(s) for s in sources.values()]
  if len(parts) == 1:
    mixed = parts[0]
  else:
    mixed = _interleaved(parts) if interleave else grain.MapDataset.concatenate(parts)
  global_batch = int(config.global_batch)
  start, end = _local_rows(global_batch, process_index, process_count)
  ds = streams.PackedBatchDataset(
    mixed,
    global_batch=global_batch,
    rows=(0, global_batch),
    seq_len=int(config.seq_len),
    pad_id=vocab.special_id("<pad>"),
    rows_per_window=int(opts["pack_rows"]),
    chunk=1,
  )  # no mixture to keep local: spread small eval sets over all rows
  return iter(ds.map(lambda batch: {k: v[start:end] for k, v in batch.items()}))


def _interleaved(parts: list) -> grain.MapDataset:
  """Record 0 of each source, then record 1 of each, ...; a source that runs out drops out."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  lengths = [len(p) for p in parts]
  source = np.concatenate([np.full(n, i, np.int32) for i, n in enumerate(lengths)])
  record = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
  order = np.lexsort((source, record))  # by record index, then source
  source, record = source[order], record[order]
  return grain.MapDataset.range(len(order)).map(lambda i: parts[int(source[i])][int(record[i])])


def skipped_records(iterator, key: str = "skipped_records") -> int:
  """Corrupt records skipped so far (config.data.skip_corrupt=True), summed over the iterator's
  state, so it also counts inside grain worker processes and survives checkpoint restores.
  key="dropped_records": overlong records dropped (config.data.overlong='drop')."""
  total, todo = 0, [iterator.get_state()]
  while todo:
    node = todo.pop()
    if isinstance(node, dict):
      for k, v in node.items():
        if k == key and isinstance(v, int):
          total += v
        else:
          todo.append(v)
    elif isinstance(node, (list, tuple)):
      todo.extend(node)
    elif isinstance(node, (str, bytes)) and node[:1] in ("{", b"{"):
      import json  # pylint: disable=g-import-not-at-top  # grain workers report state as JSON

      try:
        todo.append(json.loads(node))
      except ValueError:
        pass
  return total


def dropped_records(iterator) -> int:
  """Overlong records dropped so far (config.data.overlong='drop', or 'auto' on SFT sources)."""
  return skipped_records(iterator, "dropped_records")


def short_records(iterator) -> int:
  """Records of fewer than 2 tokens read so far: nothing to predict, so never trained on."""
  return skipped_records(iterator, "short_records")


def split_records(iterator) -> int:
  """Overlong records cut into pieces so far (config.data.overlong='split', or 'auto')."""
  return skipped_records(iterator, "split_records")


def record_counts(iterator) -> dict[str, int]:
  """{'skipped_records': …, 'dropped_records': …, 'short_records': …, 'split_records': …}:
  what became of the records read so far, cumulative across restarts (the training metrics)."""
  return {
    f"{kind}_records": skipped_records(iterator, f"{kind}_records") for kind in streams.COUNTED
  }


__all__ = [
  "make_train_iterator",
  "make_eval_iterator",
  "skipped_records",
  "dropped_records",
  "short_records",
  "split_records",
  "record_counts",
  "mixture_weights",
]
