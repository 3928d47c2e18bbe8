"""Tokenizer files on local disk or gs://, through mio_jax.io.paths: JSON, npz, whole directories.

Built-in tokenizers read and write their few small files whole. Pretrained adapters whose libraries
only open local directories (transformers, safetensors.torch) use `local_dir` / `staged_dir`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile

import numpy as np

from mio_jax.io import paths


def read_json(path: str) -> dict:
  try:
    return json.loads(paths.read_text(path))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from e


def write_json(path: str, obj) -> None:
  paths.write_text(path, json.dumps(obj, indent=2))


def save_npz(path: str, **arrays) -> None:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  paths.write_bytes(path, buf.getvalue())


def load_npz(path: str):
  """An `np.load` NpzFile (use it as a context manager); never unpickles."""
  return np.load(io.BytesIO(paths.read_bytes(path)), allow_pickle=False)


@contextlib.contextmanager
def local_dir(directory: str):
  """Yields a local directory holding `directory`'s files: itself, or a temporary copy of a URL
  (removed on exit; the libraries that need it load everything into memory first)."""
  if not paths.is_url(directory):
    yield directory
    return
  tmp = tempfile.mkdtemp(prefix="mio_jax_tok-")
  try:
    paths.copy_tree(directory, tmp)
    yield tmp
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(directory: str):
  """Yields a local directory to write into: `directory` itself, or for a URL a temporary one
  whose files are uploaded to it on a clean exit."""
  if not paths.is_url(directory):
    os.makedirs(directory, exist_ok=True)
    yield directory
    return
  tmp = tempfile.mkdtemp(prefix="mio_jax_tok-")
  try:
    yield tmp
    paths.copy_tree(tmp, directory)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
