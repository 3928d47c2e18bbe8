"""Non-finite steps: the jitted step applies no update when its loss or gradient norm is not
finite (train/step.py) and reports `nonfinite`; the host reads those flags in batches (at log
steps and before every save, so no extra sync per step) and stops the run, or skips up to
`config.skip_nonfinite_updates` such updates in the whole run."""

from __future__ import annotations

import logging

import jax

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
  """The run diverged: names the step and its per-modality losses."""


class DivergenceGuard:
  def __init__(self, allowed: int, last_good_checkpoint: int | None, skipped: int = 0):
    """`skipped`: updates skipped before this process started (saved in the checkpoint's meta):
    the allowance covers the whole run, across restarts."""
    self.allowed = max(0, int(allowed))
    self.skipped = int(skipped)
    self.last_good_checkpoint = last_good_checkpoint
    self._pending: list[tuple[int, dict]] = []  # (step, device metrics) since the last check

  def record(self, step: int, metrics: dict) -> None:
    self._pending.append((step, metrics))

  def saved(self, step: int) -> None:
    self.last_good_checkpoint = step

  def check(self) -> int:
    """Fetches the pending `nonfinite` flags (one host sync) → skipped updates so far; raises
    NonFiniteError once more than `allowed` updates were non-finite."""
    if not self._pending:
      return self.skipped
    flags = jax.device_get([m["nonfinite"] for _, m in self._pending])
    for (step, metrics), flag in zip(self._pending, flags):
      if float(flag) == 0.0:
        continue
      self.skipped += 1
      detail = describe(step, jax.device_get(metrics))
      if self.skipped > self.allowed:
        self._pending = []
        where = (
          f"the last checkpoint (step {self.last_good_checkpoint}) holds the last good state"
          if self.last_good_checkpoint
          else "no checkpoint was saved yet"
        )
        raise NonFiniteError(
          f"{detail}; no update was applied at that step and nothing after it is saved: {where}. "
          f"Lower the learning rate or check the data; --config.skip_nonfinite_updates=N skips up "
          f"to N such updates ({self.allowed} allowed now)."
        )
      log.warning("%s: update skipped (%d of %d allowed)", detail, self.skipped, self.allowed)
    self._pending = []
    return self.skipped


def describe(step: int, metrics: dict) -> str:
  mods = ", ".join(
    f"{k.split('/', 1)[1]}={float(metrics[k]):.4g}"
    for k in sorted(metrics)
    if k.startswith("loss/") and float(metrics.get("tokens/" + k[5:], 0)) > 0
  )
  return (
    f"non-finite update at step {step}: loss {float(metrics['loss']):.4g}, grad_norm "
    f"{float(metrics['grad_norm']):.4g} (modality losses: {mods or 'none'})"
  )
