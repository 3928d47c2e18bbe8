"""Errors that mean "the user asked for something that cannot work": the command lines print them
as one line naming the problem and exit 2, without a traceback (mio_jax/cli/entry.py)."""

from __future__ import annotations


class UserError(Exception):
  """Bad flags, paths, names or media, found before anything expensive runs."""


class NoCheckpointError(UserError, FileNotFoundError):
  """A workdir (or path) that holds no finished checkpoint."""


class MissingDatasetError(UserError, FileNotFoundError):
  """A data source names a dataset directory that does not exist."""


class VocabMismatchError(UserError, ValueError):
  """Data, a checkpoint or a tokenizer made for another vocab (its fingerprint differs): token
  ids would mean different things."""


class StorageError(Exception):
  """The run's own storage failed it mid-run (a full disk, write permission lost): not a mistake
  in the command. The CLIs print one line and exit with STORAGE_EXIT_CODE, a code of its own: free
  space or fix the permissions, then rerun the same command to resume from the last good
  checkpoint."""


STORAGE_EXIT_CODE = 3
