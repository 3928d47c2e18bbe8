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

import logging
import os
import signal
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
                 async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=max(1, save_every), max_to_keep=keep, keep_period=keep_period or None,
      enable_async_checkpointing=async_save, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=("state", "data", "meta"))


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator, meta: dict,
         force: bool = False) -> bool:
  """Start saving (async) if `step` is due or `force`; returns whether a save started."""
  items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
  if data_iterator is not None:
    items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
  return manager.save(step, args=ocp.args.Composite(**items), force=force)


def _check_compatible(manager, step, abstract_state, vocab_fingerprint: str | None, where: str):
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  if vocab_fingerprint is not None and meta.get("vocab_fingerprint") != vocab_fingerprint:
    raise CheckpointMismatchError(
        f"{where}: vocab fingerprint {meta.get('vocab_fingerprint')} differs from this run's "
        f"{vocab_fingerprint}; token ids would mean different things")
  saved = manager.item_metadata(step)["state"]
  if saved is None:
    return meta
  saved_shapes = jax.tree.map(lambda m: tuple(m.shape), saved.tree if hasattr(saved, "tree") else saved)
  wanted_shapes = jax.tree.map(lambda a: tuple(a.shape), abstract_state)
  flat_saved = dict(_flatten_with_paths(saved_shapes))
  for path, shape in _flatten_with_paths(wanted_shapes):
    if path not in flat_saved:
      raise CheckpointMismatchError(f"{where}: tensor {path} is missing from the checkpoint")
    if flat_saved[path] != shape:
      raise CheckpointMismatchError(f"{where}: tensor {path} has shape {flat_saved[path]} in the "
                                    f"checkpoint but {shape} in this model config")
  return meta


def _flatten_with_paths(tree):
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, tuple))[0]
  return [("/".join(_key_name(k) for k in path), leaf) for path, leaf in leaves]


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
      items = {"state": ocp.args.StandardRestore(abstract_state)}
      if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
      restored = manager.restore(step, args=ocp.args.Composite(**items))
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


def _step_dirs(path: str) -> list[str]:
  if os.path.isdir(os.path.join(path, "state")):
    return [path]
  root = path if os.path.basename(path) == "checkpoints" else checkpoint_dir(path)
  if not os.path.isdir(root):
    raise FileNotFoundError(f"no checkpoints under {path}")
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
