"""Reading only the params of a finished checkpoint (stage hand-off, export), and finding the
newest finished checkpoint under a workdir."""

from __future__ import annotations

import logging

import orbax.checkpoint as ocp

from mio_jax.checkpoint.manager import (
  DAMAGE_ERRORS,
  NoUsableCheckpointError,
  checkpoint_dir,
  orbax_read,
  read_meta,
  verify_digest,
)
from mio_jax.errors import NoCheckpointError
from mio_jax.io import paths

log = logging.getLogger(__name__)


def restore_params(path: str, abstract_params):
  """Params only → (params, step_dir), from a workdir, its `checkpoints` dir, or one step dir.

  Used by the stage hand-off (`init_from`) and export. `abstract_params` are ShapeDtypeStructs
  (with shardings) of the state's `params` subtree. A damaged newest checkpoint (named damage,
  digest.CheckpointDamage) falls back; any other error is raised as itself. A checkpoint without
  digests restores with a warning that its params cannot be verified.
  """
  target = {"params": abstract_params}
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  failures = []
  for step_dir in _step_dirs(paths.absolute(path)):
    try:
      meta = read_meta(step_dir)
      with ocp.PyTreeCheckpointer() as ckptr:
        restored = orbax_read(
          lambda: ckptr.restore(
            paths.join(step_dir, "state"),  # noqa: B023 - orbax_read calls it at once
            args=ocp.args.PyTreeRestore(
              item=target, restore_args=restore_args, partial_restore=True
            ),
          ),
          step_dir,
        )
      # Warns when the checkpoint has no digest to check (written by an older mio_jax).
      verify_digest(restored, meta, step_dir, prefix="params/")
      return restored["params"], step_dir
    except DAMAGE_ERRORS as e:
      log.warning(
        "checkpoint %s is unusable (%s: %s); falling back to the previous one",
        step_dir,
        type(e).__name__,
        str(e).splitlines()[0][:300] if str(e) else "",
      )
      failures.append(f"{step_dir}: {type(e).__name__}")
  raise NoUsableCheckpointError(f"no usable checkpoint with params under {path}: {failures}")


def latest_step_dir(path: str) -> str:
  """Newest finished checkpoint directory under a workdir (or its `checkpoints` dir)."""
  return _step_dirs(paths.absolute(path))[0]


def _step_dirs(path: str) -> list[str]:
  if paths.isdir(paths.join(path, "state")):
    return [path]
  root = path if paths.basename(path) == "checkpoints" else checkpoint_dir(path)
  if not paths.isdir(root):
    raise NoCheckpointError(f"no finished checkpoint under {path}: {root} does not exist")
  steps = sorted(
    (int(d) for d in paths.listdir(root) if d.isdigit() and _finished(root, d)), reverse=True
  )
  if not steps:
    raise NoCheckpointError(f"no finished checkpoint in {root}")
  return [paths.join(root, str(s)) for s in steps]


def _finished(root: str, step: str) -> bool:
  """Orbax marks a finished checkpoint by its rename (local) or a commit file (GCS)."""
  if not paths.is_url(root):
    return True
  return paths.exists(paths.join(root, step, "commit_success.txt"))
