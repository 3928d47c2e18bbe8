"""A quiet, useful console for the command lines.

By default a CLI shows mio_jax's own INFO lines (one per log step) and every library's warnings
and errors; the INFO chatter of Orbax, JAX and absl (handler registration, thread names, backend
probes) is hidden. `--verbosity=1` (absl's flag) brings all of it back.
"""

from __future__ import annotations

import logging
import os

_OWN_CODE = (
  f"{os.sep}mio_jax{os.sep}",
  f"{os.sep}data_pipelines{os.sep}",
  f"{os.sep}benchmarks{os.sep}",
)


class OwnInfoOnly(logging.Filter):
  """Passes warnings and errors from anyone, lower levels only from this project's files."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or any(p in record.pathname for p in _OWN_CODE)


def quiet_native_logs() -> None:
  """Before TensorFlow/XLA load: their C++ INFO lines ('oneDNN custom operations are on')."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  # TensorFlow only writes event files here; its oneDNN notice is printed before its C++ logging
  # honours TF_CPP_MIN_LOG_LEVEL, so it is switched off rather than filtered.
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def configure(verbosity: int) -> None:
  """Called once the absl handler exists (inside app.run's main)."""
  logging.getLogger("absl").setLevel(logging.INFO)
  root = logging.getLogger()
  root.setLevel(logging.INFO)
  for handler in root.handlers:
    for old in [f for f in handler.filters if isinstance(f, OwnInfoOnly)]:
      handler.removeFilter(old)
    if verbosity < 1:
      handler.addFilter(OwnInfoOnly())
