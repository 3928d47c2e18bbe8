"""Checkpoints through the real CLI: exact resume after SIGKILL, SIGTERM → save + exit 0, a corrupt
newest checkpoint falls back, restore onto another mesh, stage hand-off (also from an HF model)."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import curriculum
from mio_jax.checkpoint import manager as ckpt
from mio_jax.checkpoint import params as checkpoint_params
from mio_jax.checkpoint import writer
from mio_jax.model.sizes import get_model
from mio_jax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)
SMALL = dict(seq_len=64, global_batch=4, log_every=1, lr=3e-3, warmup_frac=0.1)


def _flags(shards, workdir, total_steps, checkpoint_every):
  flags = [f"--config.{k}={v}" for k, v in SMALL.items()]
  flags += [f"--config.model_overrides.{k}={v}" for k, v in MODEL.items()]
  flags += [
    f"--config.data_dir={shards}",
    "--config.data.build_demo_corpus=false",
    f"--config.total_steps={total_steps}",
    f"--config.checkpoint_every={checkpoint_every}",
    f"--workdir={workdir}",
  ]
  return [sys.executable, "-m", "mio_jax.main", "--config=configs/stage1.py", *flags]


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")


def _run(cmd):
  out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _losses(workdir) -> dict:
  """step → loss, the last value written for each step (a resumed run re-logs some steps)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {m["step"]: m["loss"] for m in map(json.loads, f)}


def _wait_for_step(proc, workdir, step, timeout=300):
  path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      raise AssertionError(f"run ended early: {proc.stderr.read()[-3000:]}")
    if os.path.exists(path) and any(json.loads(l)["step"] >= step for l in open(path)):
      return
    time.sleep(0.05)
  raise AssertionError(f"step {step} never logged")


def _final_params(workdir):
  cfg, _ = get_model("tiny", **MODEL)
  from mio_jax.checkpoint.trained import abstract_params

  params, step_dir = checkpoint_params.restore_params(workdir, abstract_params(cfg))
  return params, step_dir


def test_sigkill_then_restart_is_bit_identical(shards, tmp_path):
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  _run(_flags(shards, straight, 40, 4))

  proc = subprocess.Popen(
    _flags(shards, killed, 40, 4),
    cwd=ROOT,
    env=_env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  _wait_for_step(proc, killed, 12)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed_from = max(int(d) for d in os.listdir(os.path.join(killed, "checkpoints")) if d.isdigit())
  assert 4 <= resumed_from < 40  # 40 steps leave ample time to kill the run before it ends
  out = _run(_flags(shards, killed, 40, 4))
  assert f"resumed from step {resumed_from}" in out.stderr

  a, b = _losses(straight), _losses(killed)
  assert [a[s] for s in range(13, 41)] == [b[s] for s in range(13, 41)]  # bitwise equal floats
  pa, da = _final_params(straight)
  pb, db = _final_params(killed)
  assert da.endswith("/40") and db.endswith("/40")
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigterm_saves_current_step_and_exits_zero(shards, tmp_path):
  workdir = str(tmp_path / "term")
  proc = subprocess.Popen(
    _flags(shards, workdir, 10_000, 1000),
    cwd=ROOT,
    env=_env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  _wait_for_step(proc, workdir, 3)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert "preemption" in err
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert len(steps) == 1 and steps[0] >= 3  # one checkpoint, at the step where it stopped
  assert steps[0] == max(_losses(workdir))


def test_truncated_newest_checkpoint_falls_back(shards, tmp_path):
  workdir = str(tmp_path / "trunc")
  _run(_flags(shards, workdir, 6, 3))
  newest = os.path.join(workdir, "checkpoints", "6", "state")
  biggest = max(
    (os.path.join(r, f) for r, _, fs in os.walk(newest) for f in fs), key=os.path.getsize
  )
  with open(biggest, "r+b") as f:
    f.truncate(os.path.getsize(biggest) // 2)
  out = _run(_flags(shards, workdir, 8, 3))
  assert "checkpoints/6 is unusable" in out.stderr and "falling back" in out.stderr
  assert "resumed from step 3" in out.stderr


def _config(shards, total_steps, mesh):
  c = curriculum.demo(1)
  c.data_dir, c.data.build_demo_corpus = shards, False
  for k, v in SMALL.items():
    setattr(c, k, v)
  c.model_overrides.update(MODEL)
  c.total_steps, c.checkpoint_every, c.async_checkpoint = total_steps, 1000, False
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh
  c.global_batch = 8  # divisible by every mesh's data-parallel size
  return c


def test_restore_onto_another_mesh(shards, tmp_path):
  devices = jax.devices()[:8]
  workdir = str(tmp_path / "mesh")
  run_a = loop.train(_config(shards, 3, (8, 1, 1)), workdir, devices=devices)
  on_b = loop.setup(_config(shards, 4, (2, 2, 2)), devices)
  from mio_jax.model.transformer import Transformer
  from mio_jax.train import state as state_lib

  abstract = state_lib.abstract_state(Transformer(on_b.model_cfg), on_b.tx, on_b.shardings)
  params_b, _ = checkpoint_params.restore_params(workdir, abstract.params)
  for x, y in zip(jax.tree.leaves(run_a.state.params), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  up_a, up_b = run_a.state.params["layers"]["mlp"]["up"], params_b["layers"]["mlp"]["up"]
  assert up_b.sharding.shard_shape(up_b.shape) != up_a.sharding.shard_shape(up_a.shape)  # resharded

  import shutil

  shutil.copytree(workdir, str(tmp_path / "mesh_copy"))
  next_a = loop.train(_config(shards, 4, (8, 1, 1)), workdir, devices=devices).metrics["loss"]
  next_b = loop.train(_config(shards, 4, (2, 2, 2)), str(tmp_path / "mesh_copy"), devices=devices)
  np.testing.assert_allclose(next_b.metrics["loss"], next_a, rtol=1e-5)


def test_stage_handoff_starts_from_previous_params(shards, tmp_path):
  devices = jax.devices()[:1]
  stage1 = loop.train(_config(shards, 2, (1, 1, 1)), str(tmp_path / "s1"), devices=devices)
  c2 = _config(shards, 0, (1, 1, 1))
  c2.stage, c2.init_from = 2, str(tmp_path / "s1")
  c2.data.sources, c2.data.weights = {"text": "text"}, {"text": 1.0}  # stage 2's own mixture
  stage2 = loop.train(c2, str(tmp_path / "s2"), devices=devices)
  for x, y in zip(jax.tree.leaves(stage1.state.params), jax.tree.leaves(stage2.state.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert all(
    float(np.abs(np.asarray(m)).max()) == 0.0
    for m in jax.tree.leaves(stage2.state.opt_state)
    if np.asarray(m).ndim > 0
  )  # fresh optimizer moments
  # A restarted stage resumes its own checkpoint rather than re-initialising from init_from.
  c2.total_steps = 1
  loop.train(c2, str(tmp_path / "s2"), devices=devices)
  c2.total_steps = 2
  assert (
    "resumed"
    == loop.resume.restore_or_init(
      loop.setup(c2, devices), ckpt.make_manager(str(tmp_path / "s2"), 1, 2), None, loop.init_state
    )[1]
  )


def test_stage1_from_hf_text_model_extends_vocab(shards, tmp_path):
  import torch
  import transformers

  cfg, vocab = get_model("tiny", **MODEL)
  hf_cfg = transformers.LlamaConfig(
    vocab_size=vocab.text_size,
    hidden_size=cfg.d_model,
    intermediate_size=cfg.ffn_dim,
    num_hidden_layers=cfg.n_layers,
    num_attention_heads=cfg.n_heads,
    num_key_value_heads=cfg.n_kv_heads,
    rope_theta=cfg.rope_theta,
    rms_norm_eps=cfg.norm_eps,
  )
  torch.manual_seed(0)
  transformers.LlamaForCausalLM(hf_cfg).save_pretrained(
    str(tmp_path / "hf"), safe_serialization=True
  )
  c = _config(shards, 0, (1, 1, 1))
  c.init_from = str(tmp_path / "hf")
  run = loop.train(c, str(tmp_path / "from_hf"), devices=jax.devices()[:1])
  from mio_jax.hf import weights as hf

  _, hf_params = hf.load_hf(str(tmp_path / "hf"))
  emb = np.asarray(run.state.params["embedding"])
  assert emb.shape == (vocab.padded_size, cfg.d_model)
  np.testing.assert_array_equal(emb[: vocab.text_size], hf_params["embedding"])
  np.testing.assert_array_equal(
    np.asarray(run.state.params["lm_head"])[:, : vocab.text_size], hf_params["lm_head"]
  )

  c.model_overrides.d_model = 128  # a model that does not match the HF checkpoint
  c.model_overrides.n_heads = 4
  with pytest.raises(ValueError, match="d_model is 64 in the HF model but 128"):
    loop.train(c, str(tmp_path / "mismatch"), devices=jax.devices()[:1])


def test_export_cli_loads_in_transformers(shards, tmp_path):
  import torch
  import transformers

  workdir = str(tmp_path / "run")
  _run(_flags(shards, workdir, 2, 1))
  out = str(tmp_path / "hf")
  cmd = [
    sys.executable,
    "-m",
    "mio_jax.export",
    f"--workdir={workdir}",
    f"--out={out}",
    "--dtype=float32",
  ]
  printed = _run(cmd).stdout
  assert "exported step 2" in printed
  params, _ = _final_params(workdir)
  cfg, vocab = get_model("tiny", **MODEL)
  model = transformers.AutoModelForCausalLM.from_pretrained(out)
  tokens = np.arange(3, 40, dtype=np.int64)[None]
  with torch.no_grad():
    theirs = model(torch.from_numpy(tokens)).logits.numpy()
  from mio_jax.model.transformer import Transformer

  ours = np.asarray(Transformer(cfg).apply({"params": params}, tokens.astype(np.int32)))
  np.testing.assert_allclose(theirs, ours, atol=1e-4)
  with open(os.path.join(out, "mio_vocab.json")) as f:
    assert json.load(f)["fingerprint"] == vocab.fingerprint()


def test_async_writer_threads_run_at_low_priority(tmp_path):
  """The writer's TensorStore threads are reniced so a save uses idle cycles, not the step's."""
  main_priority = os.getpriority(os.PRIO_PROCESS, 0)  # this thread's nice value
  manager = ckpt.make_manager(str(tmp_path), 1, 2)
  state = {"w": jax.numpy.ones((1024, 1024)), "b": jax.numpy.zeros((1024,))}
  assert ckpt.save(manager, 1, state, None, {"step": 1}, force=True, writer_nice=0)
  manager.wait_until_finished()  # the pool's threads outlive the save
  assert writer.lower_writer_priority(19) >= 1
  priorities = []
  for tid in writer.writer_threads():
    try:
      priorities.append(os.getpriority(os.PRIO_PROCESS, tid))
    except OSError:  # an idle pool thread may exit at any time
      pass
  assert priorities and all(p == 19 for p in priorities), priorities
  assert os.getpriority(os.PRIO_PROCESS, 0) == main_priority  # training threads untouched
  restored = ckpt.restore_latest(
    manager,
    jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state),
    None,
  )
  np.testing.assert_array_equal(restored.state["w"], state["w"])
  manager.close()


def test_save_of_host_arrays_does_not_hold_the_steps_buffers(tmp_path):
  """CPU arrays are copied before the async write, so the next step can donate its buffers;
  the checkpoint still holds the values of the saved step, not of later in-place updates."""
  state = {"w": jax.numpy.arange(4096.0).reshape(64, 64), "step": jax.numpy.int32(3), "n": 7}
  snap = writer.host_snapshot(state)
  assert snap["w"].unsafe_buffer_pointer() != state["w"].unsafe_buffer_pointer()
  np.testing.assert_array_equal(snap["w"], state["w"])
  assert snap["w"].sharding == state["w"].sharding and snap["n"] == 7

  manager = ckpt.make_manager(str(tmp_path), 2, 2)
  donate_step = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)
  arrays = {"w": state["w"], "step": state["step"]}
  assert ckpt.save(manager, 1, arrays, None, {"step": 1}, force=True)
  saved = jax.tree.map(np.asarray, arrays)
  arrays = donate_step(arrays)  # the buffers handed to save are donated while it writes
  manager.wait_until_finished()
  restored = ckpt.restore_latest(
    manager,
    jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), arrays),
    None,
  ).state
  np.testing.assert_array_equal(restored["w"], saved["w"])
  assert int(restored["step"]) == 3
  assert not ckpt.save(manager, 3, arrays, None, {"step": 3}, force=False)  # not due: no copy
  manager.close()
