"""Orbax checkpoints of the whole training run: state, data iterator, and a sealed `meta` record.

Layout: `<workdir>/checkpoints/<step>/{state, data, meta}` (workdir may be a gs:// URL).
- `state`: the TrainState pytree, saved asynchronously, restored onto whatever shardings the
  caller asks for (so a checkpoint moves between meshes and process counts).
- `data`: the data iterator's state, one JSON file per process, each sealed with its digest.
- `meta`: config, vocab fingerprint, step, lineage, a digest of every state array; sealed.
Orbax finishes a checkpoint atomically (rename locally, a commit marker on GCS), so a crash
mid-save never leaves one that looks finished. One that is finished but damaged (truncated, or a
flipped bit that the digests catch) is skipped: the previous one is used, and the damaged one is
moved to `<workdir>/checkpoints.damaged/` (kept, never deleted). When checkpoints exist and none
is usable the run stops with an error listing each and why; it never starts from scratch.

Lineage: a fresh run draws a random lineage id, resumed runs keep it. Before every save the run
checks that no newer checkpoint of another lineage (or of a second job of the same run) is in the
directory, so two jobs can never interleave their steps in one workdir.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re

import grain
import jax
import orbax.checkpoint as ocp

from mio_jax import digest, paths
from mio_jax.checkpoint_params import latest_step_dir, restore_params  # noqa: F401
from mio_jax.data import elastic
from mio_jax.errors import NoCheckpointError  # noqa: F401  (ckpt.NoCheckpointError)
from mio_jax.writer_priority import (  # noqa: F401
  host_snapshot,
  keep_writer_in_background,
  lower_writer_priority,
  writer_threads,
)

log = logging.getLogger(__name__)

# What a damaged or unreadable checkpoint raises while being read: file-system errors, decode
# errors (TensorStore and JSON raise ValueError), missing entries, failed digests.
DAMAGE_ERRORS = (OSError, ValueError, KeyError)


class CheckpointMismatchError(ValueError):
  """A checkpoint that is intact but does not fit this run (names the key and both values)."""


class NoUsableCheckpointError(RuntimeError):
  """Checkpoints exist but none can be restored: the run stops rather than start over."""


class LineageConflictError(RuntimeError):
  """The checkpoint directory holds newer checkpoints written by another run."""


def checkpoint_dir(workdir: str) -> str:
  return paths.join(paths.absolute(workdir), "checkpoints")


def damaged_dir(workdir_checkpoints: str) -> str:
  return paths.join(paths.parent(workdir_checkpoints), "checkpoints.damaged")


def make_manager(
  workdir: str,
  save_every: int,
  keep: int,
  keep_period: int | None = None,
  async_save: bool = True,
  compress: bool = False,
) -> ocp.CheckpointManager:
  """`compress` = zstd on the state's array chunks: 10–30 % smaller f32 state on disk, but the
  writer then costs ~4× the CPU time and competes with training on the host (off by default)."""
  every = max(1, save_every)
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep,
    keep_period=keep_period or None,
    enable_async_checkpointing=async_save,
    create=True,
    # Exactly every N steps (Orbax would also save the first step of a run by default).
    should_save_fn=lambda step, _last: step % every == 0,
  )
  handlers = {
    "state": ocp.PyTreeCheckpointHandler(use_compression=compress),
    "meta": ocp.JsonCheckpointHandler(),
    "data": grain.checkpoint.CheckpointHandler(),
  }
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_handlers=handlers)


class SealedDataState:
  """Hands grain's checkpoint handler the iterator state as bytes with a digest around it (grain
  stores bytes verbatim), so a damaged data file is detected at restore."""

  def __init__(self, iterator):
    self.iterator = iterator

  def get_state(self) -> bytes:
    return json.dumps(digest.seal({"state": self.iterator.get_state()}), indent=1).encode()


def save(
  manager: ocp.CheckpointManager,
  step: int,
  state,
  data_iterator,
  meta: dict,
  force: bool = False,
  writer_nice: int = 19,
) -> bool:
  """Start saving (async) if `step` is due or `force`; returns whether a save started.

  `meta` gets the digests of every state array and is sealed. Called every step: while a save
  is being written its threads are kept at `writer_nice`.
  """
  started = False
  if force or manager.should_save(step):  # the snapshot only when a save is due
    check_no_newer(manager, step, meta.get("lineage"))
    snapshot = host_snapshot(state)
    sealed = digest.seal(
      {
        **meta,
        "step": step,
        "process_count": jax.process_count(),
        "digest_algorithm": digest.ALGORITHM,
        "state_digest": digest.state_digest(snapshot),
      },
      key="meta_sha256",
    )
    items = {"state": ocp.args.PyTreeSave(snapshot), "meta": ocp.args.JsonSave(sealed)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(SealedDataState(data_iterator))
    started = manager.save(step, args=ocp.args.Composite(**items), force=force)
  keep_writer_in_background(manager, writer_nice)
  return started


def check_no_newer(manager: ocp.CheckpointManager, step: int, lineage: str | None) -> None:
  """LineageConflictError when the directory already holds a checkpoint past `step`: another
  run's (other lineage) or a second job of this one. Writing there would fork the run."""
  manager.reload()  # list the storage, not Orbax's cache: another job may have written
  newer = [s for s in manager.all_steps() if s >= step]
  if not newer:
    return
  step_dir = paths.join(str(manager.directory), str(max(newer)))
  try:
    other = read_meta(step_dir).get("lineage")
  except DAMAGE_ERRORS:
    other = "unreadable"
  whose = (
    f"another run (lineage {other}; this run is {lineage})"
    if other != lineage
    else "a second job of this same run"
  )
  raise LineageConflictError(
    f"{manager.directory} already holds step {max(newer)} ≥ {step}, written by {whose}; "
    "refusing to write beside it. Stop the other job, or give this run its own --workdir."
  )


@dataclasses.dataclass
class Restored:
  state: object
  meta: dict
  step_dir: str


def read_meta(step_dir: str) -> dict:
  """The sealed `meta` item of one checkpoint directory, checked against its digest."""
  where = paths.join(step_dir, "meta")
  record = json.loads(paths.read_text(paths.join(where, "metadata")))
  if "meta_sha256" in record:
    return digest.unseal(record, where, key="meta_sha256")
  return record  # written before meta was sealed: readable, but its arrays have no digest


def restore_latest(
  manager: ocp.CheckpointManager,
  abstract_state,
  data_iterator,
  vocab_fingerprint: str | None = None,
  check_meta=None,
) -> Restored | None:
  """Restore the newest usable checkpoint, or None when the directory holds none at all.

  `abstract_state`: ShapeDtypeStructs carrying the target shardings. `check_meta(meta, where)`
  raises CheckpointMismatchError for a checkpoint that does not fit this run's config; such a
  checkpoint stops the run (falling back past it would silently resume an older state).
  Damaged checkpoints are skipped (and moved aside once a restore succeeds); when every one is
  damaged, NoUsableCheckpointError lists them with the reason for each.
  """
  manager.reload()
  steps = sorted(manager.all_steps(), reverse=True)
  failures = []
  for step in steps:
    where = paths.join(str(manager.directory), str(step))
    try:
      restored = _restore_step(
        manager, step, where, abstract_state, data_iterator, vocab_fingerprint, check_meta
      )
    except CheckpointMismatchError:
      raise
    except DAMAGE_ERRORS as e:
      reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
      log.warning("checkpoint %s is unusable (%s); falling back to the previous one", where, reason)
      failures.append((step, reason))
      continue
    if failures:
      _move_aside(manager, [s for s, _ in failures])
    return restored
  if failures:
    listing = "\n".join(f"  step {s}: {why}" for s, why in failures)
    raise NoUsableCheckpointError(
      f"{manager.directory} holds {len(failures)} checkpoint(s) and none can be restored; "
      f"refusing to start over and overwrite them:\n{listing}"
    )
  return None


def _restore_step(
  manager, step, where, abstract_state, data_iterator, vocab_fingerprint, check_meta
) -> Restored:
  meta = read_meta(where)
  if vocab_fingerprint is not None and meta.get("vocab_fingerprint") != vocab_fingerprint:
    raise CheckpointMismatchError(
      f"{where}: vocab fingerprint {meta.get('vocab_fingerprint')} differs from this run's "
      f"{vocab_fingerprint}; token ids would mean different things"
    )
  if check_meta is not None:
    check_meta(meta, where)
  _check_shapes(manager, step, abstract_state, where)
  args = ocp.args.PyTreeRestore(
    item=abstract_state, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state)
  )
  state = _orbax_read(lambda: manager.restore(step, args=ocp.args.Composite(state=args)), where)[
    "state"
  ]
  verify_digest(state, meta, where)
  if data_iterator is not None:
    restore_data(data_iterator, paths.join(where, "data"))
  return Restored(state, meta, where)


class CheckpointReadError(OSError):
  """Orbax could not read a checkpoint's arrays (truncated or corrupt chunk files)."""


def _orbax_read(read, where: str):
  """Orbax wraps TensorStore read failures in a bare `Exception`: the one place a broad catch is
  needed to tell a damaged checkpoint from a bug. Anything raised here becomes a named read error
  for this checkpoint; the caller falls back, and stops the run when no checkpoint is readable."""
  try:
    return read()
  except Exception as e:  # noqa: BLE001 - classified, chained, never swallowed
    raise CheckpointReadError(f"{where}: {type(e).__name__}: {e}") from e


def verify_digest(tree, meta: dict, where: str, prefix: str = "") -> None:
  """ChecksumError when any restored array differs from what was saved. `prefix` limits the
  check to saved arrays under it ('params/' for a params-only restore)."""
  expected = meta.get("state_digest")
  if expected is None:
    raise digest.ChecksumError(f"{where}: meta has no state digest (written by an older mio_jax)")
  if meta.get("digest_algorithm") != digest.ALGORITHM:
    raise digest.ChecksumError(
      f"{where}: digest algorithm {meta.get('digest_algorithm')!r}, "
      f"this mio_jax computes {digest.ALGORITHM!r}"
    )
  actual = digest.state_digest(tree)
  expected = {k: v for k, v in expected.items() if k.startswith(prefix)}
  bad = digest.mismatches(expected, actual)
  if bad:
    raise digest.ChecksumError(
      f"{where}: {len(bad)} array(s) differ from what was saved (damaged), e.g. {bad[:3]}"
    )


_DATA_FILE = re.compile(r"^process_(\d+)-of-(\d+)\.json$")


def restore_data(iterator, data_dir: str) -> None:
  """Sets `iterator` from a checkpoint's data files: this process's own file when the process
  count is unchanged, else the union of every process's streams (see mio_jax/data/elastic.py)."""
  files = {}
  for name in paths.listdir(data_dir):
    match = _DATA_FILE.match(name)
    if match:
      files[(int(match.group(1)), int(match.group(2)))] = paths.join(data_dir, name)
  counts = {n for _, n in files}
  if len(counts) != 1 or sorted(i for i, _ in files) != list(range(counts.copy().pop())):
    raise FileNotFoundError(
      f"{data_dir}: expected process_i-of-n.json for every i < n, found "
      f"{sorted(paths.basename(f) for f in files.values())}"
    )
  saved_count = counts.pop()
  own = (jax.process_index(), jax.process_count())
  if own in files:
    state = _read_data_state(files[own])  # checked before the iterator is touched
    iterator.set_state(state)
    return
  states = [_read_data_state(files[(i, saved_count)]) for i in range(saved_count)]
  log.info(
    "data state of %s was saved by %d processes, this run has %d: merging every "
    "process's streams (the global batches continue unchanged)",
    data_dir,
    saved_count,
    jax.process_count(),
  )
  if all("streams" not in st for st in states) and all(st == states[0] for st in states):
    iterator.set_state(states[0])  # a process-independent state (the synthetic iterator)
  else:
    iterator.set_state(elastic.merge_states(states))


def _read_data_state(path: str) -> dict:
  record = json.loads(paths.read_text(path))
  return digest.unseal(record, path)["state"]


def _move_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Damaged checkpoints newer than the one restored go to checkpoints.damaged/ (kept for
  inspection): the resumed run will write those steps again."""
  target = damaged_dir(str(manager.directory))
  if jax.process_index() == 0:
    paths.makedirs(target)
    for step in steps:
      src = paths.join(str(manager.directory), str(step))
      dst = paths.join(target, f"{step}")
      n = 1
      while paths.exists(dst):
        dst, n = paths.join(target, f"{step}.{n}"), n + 1
      log.warning("moving damaged checkpoint %s to %s", src, dst)
      paths.rename(src, dst)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("damaged_checkpoints_moved")
  manager.reload()


def _check_shapes(manager, step, abstract_state, where):
  saved = _orbax_read(lambda: manager.item_metadata(step), where)["state"]
  saved = saved.tree if hasattr(saved, "tree") else saved
  saved_shapes = dict(_shapes_by_path(saved))
  for path, shape in _shapes_by_path(abstract_state):
    if path not in saved_shapes:
      raise CheckpointMismatchError(
        f"{where}: tensor {path} is missing from the checkpoint (another model or optimizer?)"
      )
    if saved_shapes[path] != shape:
      raise CheckpointMismatchError(
        f"{where}: tensor {path} has shape {saved_shapes[path]} in "
        f"the checkpoint but {shape} in this model config"
      )


def _shapes_by_path(tree):
  """[('params/layers/mlp/up', shape), …] for every array-like leaf (optimizer tuples included)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return [
    ("/".join(_key_name(k) for k in path), tuple(leaf.shape))
    for path, leaf in leaves
    if hasattr(leaf, "shape")
  ]


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)
