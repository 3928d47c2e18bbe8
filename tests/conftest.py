"""Tests run on 8 virtual CPU devices so that meshes can be exercised without accelerators."""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tokenizers do many small numpy matmuls: threaded BLAS makes them far slower on 2 busy cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# gcsfs reads this at import: its zonal-bucket probe needs a gRPC control plane the GCS emulator
# (tests/gcs_emulator.py) does not have.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def gcs():
  """A running fake-gcs-server; `gcs.new_bucket()` gives each test its own bucket."""
  from tests.gcs_emulator import GcsEmulator

  emulator = GcsEmulator()
  emulator.start()
  yield emulator
  emulator.stop()


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
  """Tiny token sources named as the stage-1 demo mixture expects (real ArrayRecord shards), so
  the Grain iterator state is exercised."""
  from mio_jax.data.format import ShardWriter
  from mio_jax.model.sizes import get_model

  root = tmp_path_factory.mktemp("shards")
  _, vocab = get_model("tiny")
  rng = np.random.default_rng(0)
  for name, low, high in (("image_text", 3, 300), ("text", 300, 600), ("speech_text", 600, 1000)):
    with ShardWriter(
      str(root / name), vocab, "text", f"test source {name}", max_shard_bytes=4096
    ) as w:
      for _ in range(200):
        n = int(rng.integers(5, 90))
        w.write(rng.integers(low, high, n), np.ones(n, np.uint8))
  return str(root)
