"""A real 2-process run on CPU (gloo collectives) through `python -m mio_jax.main`: both
processes report the same final loss as a 1-process run on the same global batch."""

import json
import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np

from configs.base import get_base_config
from mio_jax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = dict(total_steps=3, seq_len=32, global_batch=8, log_every=1, lr=1e-2)
MODEL = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _final_metrics(stderr: str) -> dict:
  match = re.search(r"final metrics: (\{.*\})", stderr)
  assert match, stderr[-3000:]
  return json.loads(match.group(1))


def test_two_processes_match_one(tmp_path):
  port = _free_port()
  flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  flags += [f"--config.model_overrides.{k}={v}" for k, v in MODEL.items()]
  flags += ["--config.mesh.data=2", "--config.mesh.fsdp=2"]  # 2 processes x 2 devices
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "mio_jax.main", "--config=configs/stage1.py", f"--workdir={tmp_path}/p{i}",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}", *flags],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]

  # Meanwhile: the same config in this process (1 process, 2 devices, data-parallel only).
  c = get_base_config()
  for k, v in OVERRIDES.items():
    setattr(c, k, v)
  c.model_overrides.update(MODEL)
  c.mesh.fsdp = -1
  ref = loop.train(c, str(tmp_path / "ref"), devices=jax.devices()[:2]).metrics

  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  finals = [_final_metrics(err) for _, err in outs]
  assert "process 1/2" in outs[1][1]
  for m in finals:
    np.testing.assert_allclose(m["loss"], ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(m["grad_norm"], ref["grad_norm"], rtol=1e-4)
    assert m["tokens"] == ref["tokens"]
