"""Training with a gs:// workdir against a real GCS server (fake-gcs-server): SIGKILL mid-run and
rerun gives the losses and bit-identical params of an uninterrupted run; a stage hands off from
gs://; export reads from gs://; bad URLs fail in one line before anything compiles; nothing named
'gs:' ever lands on local disk."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from mio_jax.checkpoint import manager as ckpt
from mio_jax.checkpoint import params as checkpoint_params
from mio_jax.checkpoint.trained import abstract_params
from mio_jax.io import paths
from mio_jax.model.sizes import get_model
from tests.test_checkpoint import MODEL, ROOT, _flags, _losses


def _env(gcs):
  return dict(
    os.environ, **gcs.env, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1"
  )


def _remote_losses(workdir) -> dict:
  return {
    m["step"]: m["loss"]
    for m in map(json.loads, paths.read_text(f"{workdir}/metrics.jsonl").splitlines())
  }


def _wait_for_remote_step(proc, workdir, step, log_file, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      log_file.seek(0)
      raise AssertionError(f"run ended early: {log_file.read()[-3000:]}")
    if paths.exists(f"{workdir}/metrics.jsonl") and max(_remote_losses(workdir)) >= step:
      return
    time.sleep(0.2)
  raise AssertionError(f"step {step} never logged")


def _params(workdir):
  cfg, _ = get_model("tiny", **MODEL)
  return checkpoint_params.restore_params(workdir, abstract_params(cfg))


def _no_local_gs_dirs(*roots):
  for root in roots:
    for dirpath, dirnames, filenames in os.walk(root):
      assert "gs:" not in dirnames + filenames, f"a local 'gs:' under {dirpath}"


def test_gs_workdir_sigkill_restart_is_bit_identical(shards, tmp_path, gcs):
  bucket = gcs.new_bucket()
  remote = f"gs://{bucket}/run"
  straight = str(tmp_path / "straight")
  # Logs go to files: an unread pipe fills up and blocks the process.
  local_log, remote_log = open(tmp_path / "local.log", "w+"), open(tmp_path / "remote.log", "w+")
  local = subprocess.Popen(
    _flags(shards, straight, 24, 4),
    cwd=ROOT,
    env=_env(gcs),
    stdout=subprocess.DEVNULL,
    stderr=local_log,
    text=True,
  )
  proc = subprocess.Popen(
    _flags(shards, remote, 24, 4),
    cwd=ROOT,
    env=_env(gcs),
    stdout=subprocess.DEVNULL,
    stderr=remote_log,
    text=True,
  )
  _wait_for_remote_step(proc, remote, 9, remote_log)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert local.wait(timeout=600) == 0, open(tmp_path / "local.log").read()[-3000:]
  saved = checkpoint_params.latest_step_dir(remote)
  resumed_from = int(paths.basename(saved))
  assert 4 <= resumed_from < 24
  out = subprocess.run(
    _flags(shards, remote, 24, 4),
    cwd=ROOT,
    env=_env(gcs),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"resumed from step {resumed_from}" in out.stderr

  a, b = _losses(straight), _remote_losses(remote)
  assert [a[s] for s in range(resumed_from + 1, 25)] == [b[s] for s in range(resumed_from + 1, 25)]
  (pa, da), (pb, db) = _params(straight), _params(remote)
  assert da.endswith("/24") and db == f"{remote}/checkpoints/24"
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  objects = gcs.object_names(bucket)
  assert any(n.startswith("run/events.out.tfevents") for n in objects), objects[:20]
  assert "run/checkpoints/24/commit_success.txt" in objects

  # Stage hand-off from gs:// into gs://, then export from gs:// to gs://.
  stage2 = f"gs://{bucket}/stage2"
  _run_ok(gcs, _flags(shards, stage2, 2, 2) + [f"--config.init_from={remote}"])
  exported = f"gs://{bucket}/hf"
  _run_ok(gcs, [sys.executable, "-m", "mio_jax.export", f"--workdir={stage2}", f"--out={exported}"])
  assert paths.exists(f"{exported}/config.json") and paths.exists(f"{exported}/mio_vocab.json")
  _no_local_gs_dirs(ROOT, str(tmp_path))


def _run_ok(gcs, cmd):
  out = subprocess.run(cmd, cwd=ROOT, env=_env(gcs), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def test_bad_workdir_urls_fail_in_one_line_before_compiling(shards, tmp_path, gcs):
  for workdir, expected in (
    ("gs://no-such-bucket-mio/run", "gs://no-such-bucket-mio/run: cannot write"),
    ("gs:/bucket/run", "malformed scheme"),
    ("gcs://bucket/run", "unknown URL scheme 'gcs'"),
  ):
    out = subprocess.run(
      _flags(shards, workdir, 2, 1),
      cwd=ROOT,
      env=_env(gcs),
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("mio_jax.main: error")]
    assert len(errors) == 1 and expected in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "Compiling" not in out.stderr
  _no_local_gs_dirs(ROOT, str(tmp_path))


def test_damaged_checkpoint_on_gs_falls_back_and_is_moved_aside(gcs):
  workdir = f"gs://{gcs.new_bucket()}/run"
  manager = ckpt.make_manager(workdir, 1, 3, async_save=False)
  state = {"w": jax.numpy.arange(8.0)}
  for step in (1, 2):
    ckpt.save(manager, step, {"w": state["w"] + step}, None, {"lineage": "x"}, force=True)
  meta_file = f"{workdir}/checkpoints/2/meta/metadata"
  record = json.loads(paths.read_text(meta_file))
  record["lineage"] = "y"  # a changed value: only the seal can tell
  paths.write_text(meta_file, json.dumps(record))
  abstract = {"w": jax.ShapeDtypeStruct((8,), np.float32, sharding=state["w"].sharding)}
  restored = ckpt.restore_latest(manager, abstract, None)
  assert restored.meta["step"] == 1
  np.testing.assert_array_equal(np.asarray(restored.state["w"]), np.arange(8.0) + 1)
  assert paths.exists(f"{workdir}/checkpoints.damaged/2/meta/metadata")
  assert not paths.exists(f"{workdir}/checkpoints/2/meta/metadata")
  manager.close()
