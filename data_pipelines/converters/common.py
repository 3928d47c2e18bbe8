"""What every converter shares: its options, bad-row values, media paths relative to the output.

A converter is `fn(opts: ConvertOptions) -> iterator of (raw row dict | BadExample)`: rows in the
schema of data_pipelines/builders/raw.py, and a BadExample (reason + message naming the source
file and row) for each source record it cannot turn into a row. The driver (data_pipelines/
convert.py) writes the rows, counts the bad ones, and raises them under --strict.
Sources are local directories and files (real datasets are downloaded before converting).
"""

from __future__ import annotations

import dataclasses
import os

from mio_jax.tokens.layouts import BadExample

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".gif", ".npy")


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
  src: str  # the dataset as downloaded (file or directory; layout per converter)
  out_dir: str  # the output JSONL's directory: media paths are written relative to it
  split: str | None = None
  media_root: str | None = None  # where media paths in the source resolve (default per converter)
  media_dir: str | None = None  # where media unpacked from archives go (webdataset)


class SourceError(ValueError):
  """The dataset as a whole cannot be read (not JSON, wrong layout, nothing to convert): one line
  at the CLI, exit 2. A single bad record is a BadExample instead, counted and skipped."""


class MissingSource(SourceError, FileNotFoundError):
  """A file or folder the layout needs is not there."""


def bad(reason: str, message: str) -> BadExample:
  return BadExample(reason, message)


def rel(path: str, out_dir: str) -> str:
  """`path` relative to the output's directory (tokenize_jsonl resolves it against the same)."""
  return os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))


def text_or_none(value) -> str | None:
  return value.strip() if isinstance(value, str) and value.strip() else None


def require(path: str, what: str, hint: str = "") -> str:
  """`path` if it exists; MissingSource naming it otherwise (a missing source is no bad row)."""
  if not os.path.exists(path):
    raise MissingSource(f"{what} not found: {path}{'; ' + hint if hint else ''}")
  return path
