"""SIGTERM / TPU maintenance → 'save at the next step boundary, then exit 0', on every process.

One process: a Python SIGTERM handler sets a flag, checked every step (free).
Several processes: they must all stop after the same step, or the save deadlocks. JAX's
distributed runtime already solves this: `jax.distributed.initialize` starts a preemption sync
manager whose notifier catches SIGTERM (and TPU maintenance notices) on any process, and
`reached_preemption_sync_point(step)` turns true on every process at the same agreed step. It is
a local flag check (measured 0.2 µs per call), so it runs every step. We must then NOT install a
Python SIGTERM handler there: it would replace the runtime's and no process would learn of it.

A SIGTERM that arrives before the training loop starts is kept and honoured at its first check.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax

log = logging.getLogger(__name__)

_requested = threading.Event()
_installed = False


def _on_sigterm(signum, frame):
  del signum, frame
  log.warning("SIGTERM received: saving a checkpoint at the next step boundary, then exiting")
  _requested.set()


def install_sigterm_handler() -> bool:
  """Single-process runs: catch SIGTERM from now on (call as early as possible). Returns whether
  it installed (not in multi-process runs, not off the main thread)."""
  global _installed
  if _installed:
    return True
  if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
    return False
  signal.signal(signal.SIGTERM, _on_sigterm)
  _installed = True
  return True


class PreemptionWatcher:
  """`should_stop(step)`: call once per step on every process, with the same step."""

  def __init__(self):
    self.multi_process = jax.process_count() > 1
    if not self.multi_process:
      install_sigterm_handler()

  def should_stop(self, step: int) -> bool:
    if self.multi_process:
      from jax.experimental import multihost_utils

      return bool(multihost_utils.reached_preemption_sync_point(step))
    return _requested.is_set()
