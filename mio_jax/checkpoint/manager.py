"""Orbax checkpoints of the whole training run: state, data iterator, and a sealed `meta` record.

Layout: `<workdir>/checkpoints/<step>/{state, data, meta}` (workdir may be a gs:// URL).
- `state`: the TrainState pytree, saved asynchronously, restored onto whatever shardings the
  caller asks for (so a checkpoint moves between meshes and process counts).
- `data`: the data iterator's state, one JSON file per process, each sealed with its digest.
- `meta`: config, vocab fingerprint, step, lineage, a digest of every state array; sealed.
Orbax finishes a checkpoint atomically (rename locally, a commit marker on GCS), so a crash
mid-save never leaves one that looks finished. One that is finished but damaged is skipped: the
previous one is used, and the damaged one is moved to `<workdir>/checkpoints.damaged/` (kept,
never deleted). Damage is only what `digest.CheckpointDamage` names: a digest mismatch
(`ChecksumError`: a flipped bit), a truncated or unreadable file (`CheckpointReadError`), a missing
file (`CheckpointDamaged`). Any other error while restoring (a bug, a KeyError, a ValueError) stops
the run as itself and moves nothing. A checkpoint written before digests existed restores with a
warning that its arrays cannot be verified. When checkpoints exist and none is usable the run
stops with an error listing each and why; it never starts from scratch.

Lineage: a fresh run draws a random lineage id, resumed runs keep it. Before every save the run
checks that no newer checkpoint of another lineage (or of a second job of the same run) is in the
directory, so two jobs can never interleave their steps in one workdir.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import json
import logging
import os
import re

import grain
import jax
import orbax.checkpoint as ocp

from mio_jax.checkpoint import data_state, digest
from mio_jax.checkpoint.writer import (
  host_snapshot,
  keep_writer_in_background,
)
from mio_jax.errors import StorageError, UserError
from mio_jax.io import paths

log = logging.getLogger(__name__)

# What a damaged checkpoint raises while being read, and nothing else: read sites turn file-system
# and decode failures into these named errors, so a bug's KeyError or ValueError is never taken
# for damage (which would move good checkpoints aside).
DAMAGE_ERRORS = (digest.CheckpointDamage,)


# Files every finished checkpoint holds (relative to its step directory); the data item's files
# are checked by `restore_data`, which knows the process count.
REQUIRED_FILES = ("state/_METADATA", "meta/metadata")


class CheckpointMismatchError(UserError, ValueError):
  """A checkpoint that is intact but does not fit this run (names the key and both values)."""


class NoUsableCheckpointError(UserError, RuntimeError):
  """Checkpoints exist but none can be restored: the run stops rather than start over."""


class SaveFailedError(StorageError):
  """A checkpoint could not be written (no space left, permission denied): the run stops at the
  first step that learns of it, naming the path and the last good checkpoint (exit 3)."""


class LineageConflictError(UserError, RuntimeError):
  """The checkpoint directory holds newer checkpoints written by another run."""


def checkpoint_dir(workdir: str) -> str:
  return paths.join(paths.absolute(workdir), "checkpoints")


def damaged_dir(workdir_checkpoints: str) -> str:
  return paths.join(paths.parent(workdir_checkpoints), "checkpoints.damaged")


class _OrbaxErrorsWithoutTracebacks(logging.Filter):
  """Orbax logs a failed background write with its full traceback from up to four threads
  before the failure reaches the run, which reports it once, in one line (SaveFailedError):
  Orbax's own lines stay, their tracebacks go."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.exc_info and f"{os.sep}orbax{os.sep}" in record.pathname:
      record.exc_info, record.exc_text = None, None
    return True


def _quiet_orbax_tracebacks() -> None:
  absl_logger = logging.getLogger("absl")  # Orbax logs through absl
  if not any(isinstance(f, _OrbaxErrorsWithoutTracebacks) for f in absl_logger.filters):
    absl_logger.addFilter(_OrbaxErrorsWithoutTracebacks())


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
  _quiet_orbax_tracebacks()
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
    return data_state.seal_state(self.iterator.get_state())


def save(
  manager: ocp.CheckpointManager,
  step: int,
  state,
  data_iterator,
  meta: dict,
  force: bool = False,
  writer_nice: int = 19,
  watch: SaveWatch | None = None,
) -> bool:
  """Start saving (async) if `step` is due or `force`; returns whether a save started.

  `meta` gets the digests of every state array and is sealed. Called every step: while a save
  is being written its threads are kept at `writer_nice`. With a `watch`, a failed save (this
  one or the one before, still in flight) raises SaveFailedError.
  """
  started = False
  if watch is not None:
    watch.check(step)  # every step: a save that failed in the background stops the run now
  if force or manager.should_save(step):  # the snapshot only when a save is due
    if watch is not None:
      watch.check(step, wait=True)  # Orbax would wait for it inside manager.save anyway
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
    if watch is not None:
      watch.check_space(step, snapshot)
    if watch is None:
      started = manager.save(step, args=ocp.args.Composite(**items), force=force)
    else:
      try:
        started = manager.save(step, args=ocp.args.Composite(**items), force=force)
      except SAVE_ERRORS as e:  # a synchronous save, or the directory not creatable
        raise watch.failed(step, step, e) from e
      if started:
        watch.pending = step
  keep_writer_in_background(manager, writer_nice)
  return started


# What a failed write raises: TensorStore reports ENOSPC/EACCES as ValueError
# ("RESOURCE_EXHAUSTED: …", "PERMISSION_DENIED: …"), file-system calls as OSError.
SAVE_ERRORS = (OSError, ValueError)


class SaveWatch:
  """Follows the async save in flight, so a failed save stops the run at the first step after
  the writer gave up (not one save later, as Orbax alone would), in one line naming the
  checkpoint's path and the last good checkpoint. `check` costs nothing while the save runs.

  After a failure, `close` ends Orbax's writer without raising the same failure a second time,
  and finishes its abandoned write coroutines while the interpreter still can (otherwise they
  print 'sys.meta_path is None' tracebacks at exit)."""

  def __init__(self, manager: ocp.CheckpointManager):
    self.manager = manager
    self.pending: int | None = None  # the step whose save is in flight
    self.last_good: int | None = None  # the run's newest finished checkpoint (set on resume)
    self.failure: BaseException | None = None

  def check(self, now: int, wait: bool = False) -> None:
    """SaveFailedError when the pending save failed; with `wait`, waits for it to end first."""
    if self.pending is None or (not wait and self.manager.is_saving_in_progress()):
      return
    step, self.pending = self.pending, None
    try:
      self.manager.wait_until_finished()  # returns at once: the writer has ended
    except Exception as e:  # noqa: BLE001 - the writer thread's own error, named and chained
      raise self.failed(step, now, e) from e
    self.last_good = step

  def check_space(self, step: int, snapshot) -> None:
    """SaveFailedError before the save starts when the workdir's disk lacks the room for it (a
    local disk; Orbax keeps the older checkpoints until this one is finished): the run stops
    at this very step, and no half-written save is left behind."""
    directory = str(self.manager.directory)
    if paths.is_url(directory) or not os.path.isdir(directory):
      return
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize
    arrays = [x for x in jax.tree.leaves(snapshot) if hasattr(x, "nbytes")]
    needed = sum(int(x.nbytes) for x in arrays) // jax.process_count()  # each writes its part
    if needed > free:
      reason = (
        f"No space left on device: it needs ~{needed / 2**20:.1f} MiB, "
        f"{free / 2**20:.1f} MiB are free"
      )
      raise self.failed(step, step, OSError(errno.ENOSPC, reason), reason)

  def failed(
    self, step: int, now: int, error: BaseException, reason: str | None = None
  ) -> SaveFailedError:
    self.failure = error
    where = paths.join(str(self.manager.directory), str(step))
    last = (
      f"the last good checkpoint is {paths.join(str(self.manager.directory), str(self.last_good))}"
      if self.last_good is not None
      else "no checkpoint of this run was written"
    )
    return SaveFailedError(
      f"saving checkpoint {where} failed ({reason or _save_reason(error)}); the run stopped at "
      f"step {now}; {last}. Free space (or fix permissions) there and rerun the same command to "
      "resume"
    )

  def close(self) -> None:
    """`manager.close()`, after a failed save too (where Orbax would raise it again)."""
    if self.failure is None:
      self.manager.wait_until_finished()
      self.manager.close()
      return
    try:
      self.manager.close()
    except Exception as e:  # noqa: BLE001 - only the failure already reported is dropped
      if e is not self.failure:
        raise
    # The failed save's abandoned write tasks end now, not during interpreter teardown
    # ('sys.meta_path is None'); asyncio would log each one's copy of the reported error.
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.disabled = True
    try:
      gc.collect()
    finally:
      asyncio_log.disabled = False


def _save_reason(error: BaseException) -> str:
  """The OS reason of a failed write ('No space left on device'), else the error's first line."""
  text = str(error)
  match = re.search(r"(No space left on device|Permission denied|Read-only file system)", text)
  if match:
    return match.group(1)
  first = text.splitlines()[0] if text else ""
  return f"{type(error).__name__}: {first[:300]}"


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
  path = paths.join(where, "metadata")
  try:
    record = json.loads(paths.read_text(path))
  except OSError as e:
    raise digest.CheckpointReadError(f"{path}: unreadable ({e})") from e
  except json.JSONDecodeError as e:
    raise digest.CheckpointReadError(f"{path}: not valid JSON, truncated? ({e})") from e
  if not isinstance(record, dict):
    raise digest.CheckpointReadError(f"{path}: holds {type(record).__name__}, not a record")
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
  check_complete(where, with_data=data_iterator is not None)
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
  state = orbax_read(lambda: manager.restore(step, args=ocp.args.Composite(state=args)), where)[
    "state"
  ]
  verify_digest(state, meta, where)
  if data_iterator is not None:
    restore_data(data_iterator, paths.join(where, "data"))
  return Restored(state, meta, where)


def check_complete(where: str, with_data: bool = True) -> None:
  """CheckpointDamaged naming every file a finished checkpoint must have and this one lacks
  (checked before anything is read: a missing array index would otherwise read as another
  model's checkpoint)."""
  required = REQUIRED_FILES + (("data",) if with_data else ())
  missing = [name for name in required if not paths.exists(paths.join(where, name))]
  if missing:
    raise digest.CheckpointDamaged(
      f"{where}: {', '.join(missing)} missing (an incomplete checkpoint)"
    )


# TensorStore reports stored bytes it cannot read as ValueErrors with these status codes (a
# truncated chunk: OUT_OF_RANGE "Requested byte range … is not valid"; a corrupt one: DATA_LOSS).
_TENSORSTORE_READ_FAILURE = re.compile(
  r"\b(DATA_LOSS|OUT_OF_RANGE|NOT_FOUND|Error reading|Error opening|Requested byte range)\b"
)


def orbax_read(read, where: str):
  """Orbax wraps TensorStore read failures in a bare `Exception`: the one place a broad catch is
  needed to tell a damaged checkpoint from a bug. A failure to read stored bytes (a file-system
  error, undecodable JSON, TensorStore's read failures) becomes CheckpointReadError naming the
  file, and the caller falls back; anything else is re-raised unchanged and stops the run."""
  try:
    return read()
  except Exception as e:  # noqa: BLE001 - classified, chained, never swallowed
    if not _is_read_failure(e):
      raise
    raise digest.CheckpointReadError(f"{where}: {_read_failure(e, where)}") from e


def _is_read_failure(error: BaseException) -> bool:
  """Whether `error` or any error it wraps says stored bytes could not be read."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, (OSError, json.JSONDecodeError)):
      return True
    wrapper_or_tensorstore = isinstance(error, ValueError) or type(error) is Exception
    if wrapper_or_tensorstore and _TENSORSTORE_READ_FAILURE.search(str(error)):
      return True
    error = error.__cause__ or error.__context__
  return False


def _read_failure(error: BaseException, where: str) -> str:
  """What went wrong, naming the file: Orbax's own message is a page of TensorStore spec; the
  TensorStore error it wraps (its cause) names the array, and for a truncated data file the
  file's size, by which the file itself is found."""
  inner = error
  while inner.__cause__ is not None or inner.__context__ is not None:
    inner = inner.__cause__ or inner.__context__
  text = str(inner).splitlines()[0] if str(inner) else type(inner).__name__
  short = re.search(
    r'Error reading "([^"]+)".*Requested byte range \[\d+, (\d+)\) is not valid for value of '
    r"size (\d+)",
    text,
  )
  if short and not paths.is_url(where):
    array, needed, size = short.group(1), int(short.group(2)), int(short.group(3))
    files = [
      os.path.join(d, f)
      for d, _, names in os.walk(where)
      for f in names
      if os.path.getsize(os.path.join(d, f)) == size
    ]
    if len(files) == 1:  # named relative to `where`, which the message starts with
      return (
        f"truncated file {os.path.relpath(files[0], where)}: {size} bytes, array {array} "
        f"is stored up to byte {needed}"
      )
  return text if inner is not error else f"{type(error).__name__}: {text[:300]}"


def verify_digest(tree, meta: dict, where: str, prefix: str = "") -> None:
  """ChecksumError when any restored array differs from what was saved. `prefix` limits the
  check to saved arrays under it ('params/' for a params-only restore).

  A checkpoint without a state digest (written before mio_jax recorded them) or with another
  digest algorithm is not damage: it restores, with a warning that its arrays are unverified.
  Refusing it would strand every run that started on an older version."""
  expected = meta.get("state_digest")
  if expected is None:
    log.warning(
      "%s: meta has no state digest (written by an older mio_jax): its arrays cannot be "
      "verified against damage",
      where,
    )
    return
  if meta.get("digest_algorithm") != digest.ALGORITHM:
    log.warning(
      "%s: digest algorithm %r, this mio_jax computes %r: its arrays cannot be verified "
      "against damage",
      where,
      meta.get("digest_algorithm"),
      digest.ALGORITHM,
    )
    return
  actual = digest.state_digest(tree)
  expected = {k: v for k, v in expected.items() if k.startswith(prefix)}
  bad = digest.mismatches(expected, actual)
  if bad:
    raise digest.ChecksumError(
      f"{where}: {len(bad)} array(s) differ from what was saved (damaged), e.g. {bad[:3]}"
    )


def restore_data(iterator, data_dir: str) -> None:
  """Sets `iterator` from a checkpoint's data files: this process's own file when the process
  count is unchanged, else the union of every process's streams (see
  mio_jax/checkpoint/data_state.py).
  Every file is read through data_state.read_state, which checks its digest."""
  files = data_state.state_files(data_dir)
  own = (jax.process_index(), jax.process_count())
  if own in files:
    state = data_state.read_state(files[own])  # checked before the iterator is touched
    iterator.set_state(state)
    return
  states = [data_state.read_state(files[key]) for key in sorted(files)]
  log.info(
    "data state of %s was saved by %d processes, this run has %d: merging every "
    "process's streams (the global batches continue unchanged)",
    data_dir,
    len(states),
    jax.process_count(),
  )
  iterator.set_state(data_state.merged_state(states))


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
  saved = orbax_read(lambda: manager.item_metadata(step), where)["state"]
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
