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
# A constant LR after one warmup step, so a 3-step run resumed to 5 steps matches 5 straight steps.
OVERRIDES = dict(total_steps=3, seq_len=32, global_batch=8, log_every=1, lr=1e-2, warmup_frac=0.0,
                 end_lr_frac=1.0)
MODEL = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _final_metrics(stderr: str) -> dict:
  match = re.search(r"final metrics: (\{.*\})", stderr)
  assert match, stderr[-3000:]
  return json.loads(match.group(1))


def _launch(tmp_path, port, total_steps):
  """Both processes of one 2-process job; they share one workdir (Orbax coordinates the save)."""
  flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  flags += [f"--config.model_overrides.{k}={v}" for k, v in MODEL.items()]
  flags += ["--config.mesh.data=2", "--config.mesh.fsdp=2",  # 2 processes x 2 devices
            "--config.data.kind=synthetic", f"--config.total_steps={total_steps}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  return [subprocess.Popen(
      [sys.executable, "-m", "mio_jax.main", "--config=configs/stage1.py", f"--workdir={tmp_path}/mp",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}", *flags],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]


def _finish(procs) -> list[tuple[dict, str]]:
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return [(_final_metrics(err), err) for _, err in outs]


def _reference(tmp_path, total_steps) -> dict:
  """The same config in this process (1 process, 2 devices, data-parallel only)."""
  c = get_base_config()
  for k, v in OVERRIDES.items():
    setattr(c, k, v)
  c.model_overrides.update(MODEL)
  c.mesh.fsdp = -1
  c.total_steps = total_steps
  return loop.train(c, str(tmp_path / f"ref{total_steps}"), devices=jax.devices()[:2]).metrics


def _assert_match(finals, ref):
  for m, _ in finals:
    np.testing.assert_allclose(m["loss"], ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(m["grad_norm"], ref["grad_norm"], rtol=1e-4)
    assert m["tokens"] == ref["tokens"]


def test_two_processes_match_one_and_resume(tmp_path):
  procs = _launch(tmp_path, _free_port(), total_steps=3)
  ref3 = _reference(tmp_path, 3)  # meanwhile, in this process
  finals = _finish(procs)
  assert "process 1/2" in finals[1][1]
  _assert_match(finals, ref3)
  assert os.path.isdir(os.path.join(tmp_path, "mp", "checkpoints", "3", "data"))
  data_files = os.listdir(os.path.join(tmp_path, "mp", "checkpoints", "3", "data"))
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(data_files)

  # Restart the 2-process job for 2 more steps: both restore step 3 and match 5 straight steps.
  procs = _launch(tmp_path, _free_port(), total_steps=5)
  ref5 = _reference(tmp_path, 5)
  finals = _finish(procs)
  for _, err in finals:
    assert "resumed from step 3" in err
  _assert_match(finals, ref5)
