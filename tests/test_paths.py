"""mio_jax/io/paths.py on local disk: atomic writes honour the umask like an ordinary file."""

import os
import stat

import jax
import numpy as np
import pytest

from mio_jax.checkpoint import trained
from mio_jax.hf import weights as hf
from mio_jax.io import paths
from mio_jax.model.sizes import get_model


@pytest.fixture
def umask():
  """Sets the process umask for one test and restores it after."""
  saved = os.umask(0o022)
  yield lambda mask: os.umask(mask)
  os.umask(saved)


def _mode(p) -> int:
  return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_atomic_write_honours_umask(tmp_path, umask, mask):
  umask(mask)
  written = tmp_path / "out.txt"
  paths.write_text(str(written), "hello\n")
  plain = tmp_path / "plain.txt"
  plain.write_text("hello\n")  # what open() gives under the same umask: the reference
  assert _mode(written) == _mode(plain) == 0o666 & ~mask
  assert written.read_text() == "hello\n"
  # No temp file is left beside it.
  assert sorted(os.listdir(tmp_path)) == ["out.txt", "plain.txt"]


def test_export_files_readable_by_others(tmp_path, umask):
  """Every file an HF export writes (config.json, vocab through paths; shards through
  safetensors, which creates them 0600) is world-readable under the usual umask 0022."""
  cfg, vocab = get_model("tiny")
  params = jax.tree.map(lambda a: np.ones(a.shape, a.dtype), trained.abstract_params(cfg))
  umask(0o022)
  out = tmp_path / "hf"
  hf.save_hf(cfg, params, str(out), vocab=vocab)
  files = sorted(os.listdir(out))
  assert "config.json" in files and any(f.endswith(".safetensors") for f in files)
  assert {name: _mode(out / name) for name in files} == {name: 0o644 for name in files}
