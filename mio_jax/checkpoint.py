"""Orbax checkpoints of the whole training run: state, data iterator, config and vocab fingerprint.

Layout: `<workdir>/checkpoints/<step>/{state, data, meta}`.
- `state`: the TrainState pytree (params, optimizer state, step), saved asynchronously, restored
  onto whatever shardings the caller asks for (so a checkpoint moves between meshes).
- `data`: the Grain iterator state, one JSON file per process.
- `meta`: resolved config, vocab fingerprint, step.
Orbax writes each checkpoint into a temporary directory and renames it when complete, so a crash
mid-save never leaves a checkpoint that looks finished. A finished checkpoint that fails to restore
(truncated or corrupt file) is reported and the previous one is used instead.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
  """A checkpoint that is intact but belongs to another model or vocabulary."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, save_every: int, keep: int, keep_period: int | None = None,
                 async_save: bool = True, compress: bool = False) -> ocp.CheckpointManager:
  """`compress` = zstd on the state's array chunks: 10–30 % smaller f32 state on disk, but the
  writer then costs ~4× the CPU time and competes with training on the host (off by default)."""
  every = max(1, save_every)
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, keep_period=keep_period or None, enable_async_checkpointing=async_save,
      create=True,
      # Exactly every N steps (Orbax would also save the first step of a run by default).
      should_save_fn=lambda step, _last: step % every == 0)
  handlers = {"state": ocp.PyTreeCheckpointHandler(use_compression=compress), "meta": ocp.JsonCheckpointHandler(),
              "data": grain.checkpoint.CheckpointHandler()}
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator, meta: dict,
         force: bool = False, writer_nice: int = 19) -> bool:
  """Start saving (async) if `step` is due or `force`; returns whether a save started.

  Called every step: while a save is being written its threads are kept at `writer_nice`.
  """
  started = False
  if force or manager.should_save(step):  # the snapshot only when a save is due
    items = {"state": ocp.args.PyTreeSave(host_snapshot(state)), "meta": ocp.args.JsonSave(meta)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    started = manager.save(step, args=ocp.args.Composite(**items), force=force)
  keep_writer_in_background(manager, writer_nice)
  return started


def host_snapshot(state):
  """The arrays Orbax may read after `save` returns.

  On accelerators Orbax copies them to host memory before `save` returns. Arrays that already
  live in host memory (CPU devices) it reads in place while the next step runs, and that step
  donates them: it then waits for the writer (measured: the next step 1.4–2.7× slower). A copy
  made here costs one memcpy of the state and leaves the step's buffers free.
  """
  arrays = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array)]
  if not arrays or any(d.platform != "cpu" for x in arrays for d in x.devices()):
    return state
  return jax.block_until_ready(
      jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, state))


def keep_writer_in_background(manager: ocp.CheckpointManager, writer_nice: int) -> None:
  # The writer's thread pool grows while it works, so new threads are reniced on every call.
  if writer_nice and manager.is_saving_in_progress():
    lower_writer_priority(writer_nice)


# Python threads Orbax starts for a save (metadata, finalize: which also deletes old checkpoints).
_ORBAX_SAVE_THREADS = ("async_save", "save_finalize", "array_type_handler", "json_ch_save",
                       "metadata_store", "serialize_shardings", "write_metadata_after_commits")


def writer_threads() -> list[int]:
  """Thread ids of the save's writers in this process (Linux): TensorStore's I/O pool
  ('ts_pool_worker') and Orbax's own save threads."""
  if not sys.platform.startswith("linux"):
    return []
  tids = [t.native_id for t in threading.enumerate()
          if t.native_id and t.name.startswith(_ORBAX_SAVE_THREADS)]
  for tid in os.listdir("/proc/self/task"):
    try:
      with open(f"/proc/self/task/{tid}/comm") as f:
        if f.read().strip() == "ts_pool_worker":
          tids.append(int(tid))
    except OSError:  # the thread ended meanwhile
      pass
  return tids


def lower_writer_priority(nice: int = 19) -> int:
  """Give TensorStore's writer threads the lowest CPU priority → how many were found.

  On hosts where training itself runs on the CPU cores, an async save would otherwise take
  cores from the step; at nice 19 it runs on the cycles the step leaves idle. Harmless on
  accelerator hosts.
  """
  count = 0
  for tid in writer_threads():
    try:
      if os.getpriority(os.PRIO_PROCESS, tid) < nice:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
      count += 1
    except OSError:  # the thread ended meanwhile
      pass
  return count


def _check_compatible(manager, step, abstract_state, vocab_fingerprint: str | None, where: str):
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  if vocab_fingerprint is not None and meta.get("vocab_fingerprint") != vocab_fingerprint:
    raise CheckpointMismatchError(
        f"{where}: vocab fingerprint {meta.get('vocab_fingerprint')} differs from this run's "
        f"{vocab_fingerprint}; token ids would mean different things")
  saved = manager.item_metadata(step)["state"]
  saved = saved.tree if hasattr(saved, "tree") else saved
  saved_shapes = dict(_shapes_by_path(saved))
  for path, shape in _shapes_by_path(abstract_state):
    if path not in saved_shapes:
      raise CheckpointMismatchError(f"{where}: tensor {path} is missing from the checkpoint")
    if saved_shapes[path] != shape:
      raise CheckpointMismatchError(f"{where}: tensor {path} has shape {saved_shapes[path]} in the "
                                    f"checkpoint but {shape} in this model config")
  return meta


def _shapes_by_path(tree):
  """[('params/layers/mlp/up', shape), …] for every array-like leaf (optimizer tuples included)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return [("/".join(_key_name(k) for k in path), tuple(leaf.shape)) for path, leaf in leaves
          if hasattr(leaf, "shape")]


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def restore_latest(manager: ocp.CheckpointManager, abstract_state, data_iterator,
                   vocab_fingerprint: str | None = None):
  """Restore the newest intact checkpoint → (state, meta), or None when there is none.

  `abstract_state` is a pytree of `jax.ShapeDtypeStruct`s carrying the target shardings.
  Corrupt checkpoints are skipped with a warning; an intact but incompatible one is an error.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    where = os.path.join(str(manager.directory), str(step))
    try:
      meta = _check_compatible(manager, step, abstract_state, vocab_fingerprint, where)
      items = {"state": ocp.args.PyTreeRestore(
          item=abstract_state, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state))}
      data_dir = os.path.join(where, "data")
      own_file = os.path.join(data_dir, f"process_{jax.process_index()}-of-{jax.process_count()}.json")
      same_processes = os.path.exists(own_file)
      if data_iterator is not None and same_processes:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
      restored = manager.restore(step, args=ocp.args.Composite(**items))
      if data_iterator is not None and not same_processes:
        # Saved by another number of processes: merge every process's stream states.
        from mio_jax.data import elastic
        log.info("data state of %s was saved by another process count; merging", where)
        elastic.restore_from_dir(data_iterator, data_dir)
      return restored["state"], meta
    except CheckpointMismatchError:
      raise
    except Exception as e:  # noqa: BLE001 - any read failure means this checkpoint is unusable
      log.warning("checkpoint %s is unreadable (%s: %s); falling back to the previous one",
                  where, type(e).__name__, str(e).splitlines()[0][:300])
  return None


def restore_params(path: str, abstract_params):
  """Params only → (params, step_dir), from a workdir, its `checkpoints` dir, or one step dir.

  Used by the stage hand-off (`init_from`) and export. `abstract_params` are ShapeDtypeStructs
  (with shardings) of the state's `params` subtree. An unreadable newest checkpoint falls back.
  """
  target = {"params": abstract_params}
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  for step_dir in _step_dirs(os.path.abspath(path)):
    try:
      with ocp.PyTreeCheckpointer() as ckptr:
        restored = ckptr.restore(os.path.join(step_dir, "state"), args=ocp.args.PyTreeRestore(
            item=target, restore_args=restore_args, partial_restore=True))
      return restored["params"], step_dir
    except Exception as e:  # noqa: BLE001 - unreadable: try the previous one
      log.warning("checkpoint %s is unreadable (%s: %s); falling back to the previous one",
                  step_dir, type(e).__name__, str(e).splitlines()[0][:300])
  raise FileNotFoundError(f"no readable checkpoint with params under {path}")


def read_meta(step_dir: str) -> dict:
  """The `meta` item (config JSON, vocab fingerprint, step) of one checkpoint directory."""
  path = os.path.join(step_dir, "meta", "metadata")
  with open(path) as f:
    return json.load(f)


def latest_step_dir(path: str) -> str:
  """Newest finished checkpoint directory under a workdir (or its `checkpoints` dir)."""
  return _step_dirs(os.path.abspath(path))[0]


def _step_dirs(path: str) -> list[str]:
  if os.path.isdir(os.path.join(path, "state")):
    return [path]
  root = path if os.path.basename(path) == "checkpoints" else checkpoint_dir(path)
  if not os.path.isdir(root):
    raise FileNotFoundError(f"no finished checkpoint under {path}: {root} does not exist")
  steps = sorted((int(d) for d in os.listdir(root) if d.isdigit()), reverse=True)
  if not steps:
    raise FileNotFoundError(f"no finished checkpoint in {root}")
  return [os.path.join(root, str(s)) for s in steps]


class PreemptionWatcher:
  """Turns SIGTERM (and JAX's TPU preemption notice) into 'save at the next step boundary'.

  All processes must stop at the same step, so in multi-process runs the local flags are
  combined with an all-gather every `sync_every` steps (a small host sync, off most steps).
  """

  def __init__(self, sync_every: int = 1):
    self.sync_every = max(1, sync_every)
    self._flag = threading.Event()
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)

  def _on_signal(self, signum, frame):
    del signum, frame
    log.warning("SIGTERM received: saving a checkpoint at the next step boundary, then exiting")
    self._flag.set()

  def should_stop(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self._flag.is_set()
    if step % self.sync_every:
      return False
    from jax.experimental import multihost_utils
    local = np.array([self._flag.is_set()], np.int32)
    stop = bool(np.asarray(multihost_utils.process_allgather(local)).any())
    try:  # TPU maintenance events, when the distributed runtime reports them
      stop = stop or multihost_utils.reached_preemption_sync_point(step)
    except Exception:  # noqa: BLE001 - no preemption service on this platform
      pass
    return stop

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
