"""Errors that mean "the user asked for something that cannot work": the command lines print them
as one line naming the problem and exit 2, without a traceback (mio_jax/entry.py)."""

from __future__ import annotations


class UserError(Exception):
  """Bad flags, paths, names or media, found before anything expensive runs."""


class NoCheckpointError(UserError, FileNotFoundError):
  """A workdir (or path) that holds no finished checkpoint."""


class MissingDatasetError(UserError, FileNotFoundError):
  """A data source names a dataset directory that does not exist."""


def user_errors() -> tuple:
  """Every exception type the CLIs report as a user error (imported lazily: they live in
  modules that import JAX)."""
  from mio_jax import checkpoint, paths

  return (
    UserError,
    paths.PathError,
    checkpoint.CheckpointMismatchError,
    checkpoint.NoUsableCheckpointError,
    checkpoint.LineageConflictError,
  )
