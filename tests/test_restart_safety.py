"""A restart never loses or forks a run: it resumes, or stops with a named error and deletes
nothing. Damage beyond truncation (flipped bits) is detected; diverged runs stop."""

import json
import os
import re
import signal
import subprocess

import jax
import numpy as np
import pytest

from mio_jax.checkpoint import digest
from mio_jax.checkpoint import manager as ckpt
from mio_jax.checkpoint import params as checkpoint_params
from mio_jax.checkpoint.trained import abstract_params
from mio_jax.model.sizes import get_model
from mio_jax.train import divergence, loop
from tests.test_checkpoint import MODEL, ROOT, _config, _env, _flags, _run


def _steps(workdir) -> list[int]:
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def _train(shards, workdir, total_steps, every=3, **overrides):
  c = _config(shards, total_steps, (1, 1, 1))
  c.checkpoint_every, c.keep_checkpoints = every, 5
  c.warmup_frac, c.end_lr_frac = 0.0, 1.0  # constant LR: a 6-step run continues like a 9-step one
  for k, v in overrides.items():
    setattr(c, k, v)
  return loop.train(c, str(workdir), devices=jax.devices()[:1])


def _params(workdir):
  cfg, _ = get_model("tiny", **MODEL)
  return checkpoint_params.restore_params(str(workdir), abstract_params(cfg))[0]


def _flip_bit(path, offset_frac=0.5, bit=3):
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    i = int(len(data) * offset_frac)
    data[i] ^= 1 << bit
    f.seek(0)
    f.write(data)


def _biggest_file(directory):
  files = [os.path.join(r, f) for r, _, fs in os.walk(directory) for f in fs]
  return max(files, key=os.path.getsize)


def test_changed_global_batch_is_a_named_error_and_deletes_nothing(shards, tmp_path):
  workdir = str(tmp_path / "run")
  _run(_flags(shards, workdir, 20, 5))
  before = _steps(workdir)
  cmd = _flags(shards, workdir, 30, 5) + ["--config.global_batch=8"]
  out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 2, out.stderr[-2000:]
  error = [line for line in out.stderr.splitlines() if line.startswith("mio_jax.main: error")]
  assert len(error) == 1 and "global_batch=4" in error[0] and "global_batch=8" in error[0]
  assert "Traceback" not in out.stderr
  assert _steps(workdir) == before  # nothing deleted, nothing written
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert max(json.loads(line)["step"] for line in f) == 20


def test_every_checkpoint_damaged_stops_and_lists_each(shards, tmp_path):
  _train(shards, tmp_path / "run", 6)
  for step in (3, 6):
    biggest = _biggest_file(tmp_path / "run" / "checkpoints" / str(step) / "state")
    with open(biggest, "r+b") as f:
      f.truncate(os.path.getsize(biggest) // 2)
  with pytest.raises(ckpt.NoUsableCheckpointError) as error:
    _train(shards, tmp_path / "run", 9)
  assert "step 6:" in str(error.value) and "step 3:" in str(error.value)
  assert _steps(tmp_path / "run") == [3, 6]  # kept for the user to inspect


def test_flipped_bit_in_arrays_falls_back_and_run_continues_exactly(shards, tmp_path, caplog):
  straight = _train(shards, tmp_path / "straight", 9)
  _train(shards, tmp_path / "run", 6)
  _flip_bit(_biggest_file(tmp_path / "run" / "checkpoints" / "6" / "state"))
  with caplog.at_level("WARNING", logger="mio_jax.checkpoint"):
    resumed = _train(shards, tmp_path / "run", 9)
  # The chunk decodes fine: only the digest written at save time can tell.
  assert "differ from what was saved" in caplog.text and "checkpoints/6 is unusable" in caplog.text
  assert os.path.isdir(tmp_path / "run" / "checkpoints.damaged" / "6")  # moved aside, not deleted
  assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history[3:]]
  for x, y in zip(
    jax.tree.leaves(_params(tmp_path / "run")), jax.tree.leaves(_params(tmp_path / "straight"))
  ):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_flipped_bit_in_meta_or_data_state_is_detected(shards, tmp_path):
  _train(shards, tmp_path / "run", 3)
  step_dir = tmp_path / "run" / "checkpoints" / "3"
  data_file = step_dir / "data" / "process_0-of-1.json"
  text = data_file.read_text()
  damaged = re.sub(r'"emitted": (\d)', lambda m: f'"emitted": {int(m.group(1)) ^ 1}', text, count=1)
  assert damaged != text
  data_file.write_text(damaged)  # one bit of one digit: still valid JSON, another value
  with pytest.raises(digest.ChecksumError, match="process_0-of-1.json"):
    ckpt.restore_data(None, str(step_dir / "data"))
  meta_file = step_dir / "meta" / "metadata"
  record = json.loads(meta_file.read_text())
  record["step"] = 4
  meta_file.write_text(json.dumps(record))
  with pytest.raises(digest.ChecksumError, match="does not match its digest"):
    ckpt.read_meta(str(step_dir))


def test_a_second_lineage_never_writes_beside_newer_checkpoints(tmp_path):
  manager = ckpt.make_manager(str(tmp_path), 1, 3, async_save=False)
  state = {"w": jax.numpy.ones((4,))}
  assert ckpt.save(manager, 5, state, None, {"lineage": "aaaa"}, force=True)
  with pytest.raises(ckpt.LineageConflictError, match="another run"):
    ckpt.save(manager, 5, state, None, {"lineage": "bbbb"}, force=True)
  with pytest.raises(ckpt.LineageConflictError, match="second job of this same run"):
    ckpt.save(manager, 2, state, None, {"lineage": "aaaa"}, force=True)
  assert ckpt.save(manager, 6, state, None, {"lineage": "aaaa"}, force=True)
  manager.close()


def test_nonfinite_update_stops_with_step_and_modality_losses(shards, tmp_path):
  # lr 1e30: the first steps are finite but blow the weights up, until the loss overflows.
  with pytest.raises(divergence.NonFiniteError) as error:
    _train(shards, tmp_path / "run", 8, every=1, lr=1e30, warmup_frac=0.0)
  message = str(error.value)
  bad = int(re.search(r"non-finite update at step (\d+)", message).group(1))
  assert bad > 1 and "modality losses: text=nan" in message
  assert f"step {bad - 1}) holds the last good state" in message
  assert _steps(tmp_path / "run") == list(range(1, bad))  # the bad state was never saved
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(_params(tmp_path / "run")))


def test_skip_nonfinite_updates_counts_and_keeps_state(shards, tmp_path):
  run = _train(
    shards, tmp_path / "run", 6, every=1, lr=1e30, warmup_frac=0.0, skip_nonfinite_updates=6
  )
  skipped = [h["step"] for h in run.history if h["nonfinite"]]
  assert skipped and run.metrics["skipped_updates"] == len(skipped)
  before = _params_at(tmp_path / "run", skipped[0] - 1)
  for x, y in zip(
    jax.tree.leaves(before), jax.tree.leaves(_params_at(tmp_path / "run", skipped[0]))
  ):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # skipped = no update at all


def _params_at(workdir, step):
  cfg, _ = get_model("tiny", **MODEL)
  return checkpoint_params.restore_params(
    str(workdir / "checkpoints" / str(step)), abstract_params(cfg)
  )[0]


def test_sigterm_before_the_loop_starts_is_honoured(shards, tmp_path):
  from mio_jax.parallel import preemption

  _train(shards, tmp_path / "run", 3)
  previous = signal.getsignal(signal.SIGTERM)
  assert preemption.install_sigterm_handler()
  try:
    os.kill(os.getpid(), signal.SIGTERM)  # arrives before the next run's first step
    run = _train(shards, tmp_path / "run", 9)
  finally:
    signal.signal(signal.SIGTERM, previous)
    preemption._requested.clear()
    preemption._installed = False
  assert run.preempted and int(run.state.step) == 3 and not run.history
  assert _steps(tmp_path / "run") == [3]
