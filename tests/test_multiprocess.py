"""A real 2-process run on CPU (gloo collectives) through `python -m mio_jax.main`: both
processes report the same final loss as a 1-process run on the same global batch."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from mio_jax.config import get_base_config
from mio_jax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A constant LR after one warmup step, so a 3-step run resumed to 5 steps matches 5 straight steps.
OVERRIDES = dict(
  total_steps=3, seq_len=32, global_batch=8, log_every=1, lr=1e-2, warmup_frac=0.0, end_lr_frac=1.0
)
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
  flags += [
    "--config.mesh.data=2",
    "--config.mesh.fsdp=2",  # 2 processes x 2 devices
    "--config.data.kind=synthetic",
    f"--config.total_steps={total_steps}",
  ]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  return [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "mio_jax.main",
        "--config=configs/stage1.py",
        f"--workdir={tmp_path}/mp",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
        *flags,
      ],
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]


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


# --- Multi-host preemption and restore on another process count (shard data, elastic state) ---


def _launch_n(tmp_path, n, devices_each, workdir, total_steps, extra=(), tag="run"):
  """An n-process job (gloo) on one host; logs go to files (an unread pipe would block them)."""
  port = _free_port()
  flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  flags += [f"--config.model_overrides.{k}={v}" for k, v in MODEL.items()]
  flags += [
    "--config.mesh.data=2",
    "--config.mesh.fsdp=2",
    f"--config.total_steps={total_steps}",
    f"--workdir={workdir}",
    *extra,
  ]
  if n > 1:
    flags.append(f"--coordinator_address=127.0.0.1:{port}")
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}",
  )
  procs = []
  for i in range(n):
    log = open(tmp_path / f"{tag}-{i}.log", "w+")
    multi = [f"--num_processes={n}", f"--process_id={i}"] if n > 1 else []
    procs.append(
      (
        subprocess.Popen(
          [sys.executable, "-m", "mio_jax.main", "--config=configs/stage1.py", *flags, *multi],
          cwd=ROOT,
          env=env,
          stdout=subprocess.DEVNULL,
          stderr=log,
          text=True,
        ),
        log,
      )
    )
  return procs


def _wait_all(procs, timeout=600) -> list[str]:
  logs = []
  for proc, log in procs:
    proc.wait(timeout=timeout)
    log.seek(0)
    text = log.read()
    assert proc.returncode == 0, text[-3000:]
    logs.append(text)
  return logs


def _metrics(workdir) -> dict:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {m["step"]: m for m in map(json.loads, f)}


def _shard_flags(shards):
  return [
    f"--config.data_dir={shards}",
    "--config.data.build_demo_corpus=false",
    "--config.log_every=1",
    "--config.checkpoint_every=4",
    "--config.seq_len=64",
  ]


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
  workdir = str(tmp_path / "pre")
  extra = ["--config.data.kind=synthetic", "--config.log_every=1", "--config.checkpoint_every=1000"]
  procs = _launch_n(tmp_path, 2, 2, workdir, 100_000, extra, tag="pre")
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 300
  while not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 3):
    assert time.time() < deadline and all(p.poll() is None for p, _ in procs)
    time.sleep(0.1)
  procs[1][0].send_signal(signal.SIGTERM)  # only process 1 is told
  logs = _wait_all(procs)
  stops = [int(re.search(r"stopping at step (\d+) on a preemption", log).group(1)) for log in logs]
  assert stops[0] == stops[1]
  saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert saved == [stops[0]]
  logs = _wait_all(_launch_n(tmp_path, 2, 2, workdir, stops[0] + 2, extra, tag="again"))
  assert all(f"resumed from step {stops[0]}" in log for log in logs)


def test_restore_on_one_and_four_processes_continues_the_run(shards, tmp_path):
  straight, half = str(tmp_path / "straight"), str(tmp_path / "half")
  ref = _launch_n(tmp_path, 2, 2, straight, 8, _shard_flags(shards), tag="straight")
  _wait_all(_launch_n(tmp_path, 2, 2, half, 4, _shard_flags(shards), tag="half"))
  _wait_all(ref)
  expected = _metrics(straight)
  reference_params = _final_params(straight)
  for n, devices_each in ((1, 4), (4, 1)):
    workdir = str(tmp_path / f"on{n}")
    shutil.copytree(half, workdir)
    logs = _wait_all(
      _launch_n(tmp_path, n, devices_each, workdir, 8, _shard_flags(shards), tag=f"on{n}")
    )
    assert "resumed from step 4" in logs[0] and "saved by 2 processes, this run has" in logs[0]
    got = _metrics(workdir)
    for step in range(5, 9):  # the same global batches, and the same training
      assert got[step]["batch_checksum"] == expected[step]["batch_checksum"], (n, step)
      np.testing.assert_allclose(got[step]["loss"], expected[step]["loss"], rtol=1e-5)
    for x, y in zip(jax.tree.leaves(_final_params(workdir)), jax.tree.leaves(reference_params)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def _final_params(workdir):
  from mio_jax.checkpoint import params as checkpoint_params
  from mio_jax.checkpoint.trained import abstract_params
  from mio_jax.model.sizes import get_model

  cfg, _ = get_model("tiny", **MODEL)
  params, step_dir = checkpoint_params.restore_params(workdir, abstract_params(cfg))
  assert step_dir.endswith("/8")
  return params
