"""Loss, metrics, optimizer, gradient accumulation, synthetic data, the loop and the CLI."""

import glob
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mio_jax.config import get_base_config
from mio_jax.data.synthetic_task import SyntheticIterator, make_batch
from mio_jax.hardware import cpu_peak
from mio_jax.model.sizes import get_model
from mio_jax.model.transformer import Transformer
from mio_jax.tokens.vocab import IMAGE, SPECIAL, SPEECH, TEXT
from mio_jax.train import loop, mfu, optimizer
from mio_jax.train import loss as loss_lib
from mio_jax.train import metrics as metrics_lib
from mio_jax.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)


def small_config(**kw):
  c = get_base_config()
  c.model_overrides.update(SMALL)
  c.seq_len, c.global_batch, c.total_steps, c.lr, c.log_every = 32, 8, 5, 1e-2, 1
  c.mesh.fsdp = -1
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def _init_params(model_cfg):
  init = jax.jit(lambda k: nn.unbox(Transformer(model_cfg).init(k, jnp.zeros((1, 2), jnp.int32))))
  return init(jax.random.key(0))["params"]


# ---- loss -------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk, z_loss", [(0, 0.0), (4, 1e-3)])
def test_fused_cross_entropy_matches_autodiff(chunk, z_loss):
  rng = np.random.default_rng(0)
  h = jnp.asarray(rng.normal(size=(2, 8, 16)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(16, 50)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 50, (2, 8)), jnp.int32)
  weight = jnp.asarray(rng.uniform(0, 2, (2, 8)) * (rng.random((2, 8)) > 0.3), jnp.float32)
  zmask = (weight > 0).astype(jnp.float32)

  def fused(h, w):
    return loss_lib.fused_cross_entropy(h, w, targets, weight, zmask, z_loss, chunk)[0]

  def ref(h, w):
    return loss_lib.reference_cross_entropy(
      jnp.einsum("btd,dv->btv", h, w), targets, weight, zmask, z_loss
    )[0]

  (v1, g1), (v2, g2) = (jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(h, w) for f in (fused, ref))
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  stats = jax.jit(loss_lib.fused_cross_entropy, static_argnums=(5, 6))(
    h, w, targets, weight, zmask, z_loss, chunk
  )
  ref_stats = jax.jit(loss_lib.reference_cross_entropy)(h @ w, targets, weight, zmask, z_loss)
  for a, b in zip(stats[1:], ref_stats[1:]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_per_modality_metrics_match_numpy():
  model_cfg, vocab = get_model("tiny", **SMALL)
  batch = make_batch(seed=3, step=0, rows=range(4), seq_len=64, vocab=vocab)
  mods = vocab.modality_of(batch["targets"])[batch["loss_mask"] > 0]
  assert {TEXT, SPECIAL, IMAGE, SPEECH} <= set(mods.tolist())  # every modality is exercised
  params = _init_params(model_cfg)
  sums_fn = jax.jit(
    lambda p, b: step_lib.loss_sums(p, b, model_cfg, vocab, step_lib.StepConfig(loss_chunk=16))[1]
  )
  got = metrics_lib.finalize(sums_fn(params, batch))
  logits = jax.jit(Transformer(model_cfg).apply)(
    {"params": params}, batch["tokens"], batch["segment_ids"], batch["positions"]
  )
  want = metrics_lib.numpy_reference(logits, batch["targets"], batch["loss_mask"], vocab)
  for key, value in want.items():
    np.testing.assert_allclose(float(got[key]), value, rtol=1e-4, err_msg=key)
  np.testing.assert_allclose(float(got["loss"]), want["nll"], rtol=1e-4)


def test_modality_weights_and_z_loss_change_the_loss():
  _, vocab = get_model("tiny", **SMALL)
  targets = jnp.asarray([[5, vocab.image_start + 1, vocab.speech_start(0) + 2]])
  mask = jnp.ones_like(targets)
  w = metrics_lib.token_weights(targets, mask, vocab, {"image": 0.5, "speech": 0.0})
  np.testing.assert_array_equal(w, [[1.0, 0.5, 0.0]])
  with pytest.raises(ValueError, match="unknown keys"):
    metrics_lib.token_weights(targets, mask, vocab, {"video": 1.0})


# ---- optimizer --------------------------------------------------------------------------------
def test_schedule_and_decay_mask():
  c = small_config(lr=1.0, warmup_frac=0.1, end_lr_frac=0.1)
  sched = optimizer.make_schedule(c, 100)
  np.testing.assert_allclose(
    [sched(0), sched(5), sched(10), sched(100)], [0, 0.5, 1.0, 0.1], atol=1e-6
  )
  params = {
    "embedding": 0,
    "lm_head": 0,
    "final_norm": {"scale": 0},
    "layers": {"attention": {"q": 0}, "mlp_norm": {"scale": 0}},
  }
  mask = optimizer.decay_mask(params)
  assert mask == {
    "embedding": False,
    "lm_head": True,
    "final_norm": {"scale": False},
    "layers": {"attention": {"q": True}, "mlp_norm": {"scale": False}},
  }


# ---- step: gradient accumulation --------------------------------------------------------------
def test_gradient_accumulation_equals_one_big_batch():
  model_cfg, vocab = get_model("tiny", **SMALL)
  batch = make_batch(seed=1, step=0, rows=range(8), seq_len=32, vocab=vocab)
  params = _init_params(model_cfg)

  def grads(m):
    cfg = step_lib.StepConfig(micro_batches=m, z_loss=1e-3, loss_chunk=8)
    return jax.jit(lambda p, b: step_lib.compute_grads(p, b, model_cfg, vocab, cfg))(params, batch)

  (g1, s1), (g4, s4) = grads(1), grads(4)
  for key in ("loss_sum", "tokens", "nll_sum/image", "correct_sum/text"):
    np.testing.assert_allclose(s4[key], s1[key], rtol=1e-6, err_msg=key)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g1))
  for a, b in zip(jax.tree.leaves(g4), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * scale)


# ---- synthetic data ---------------------------------------------------------------------------
def test_synthetic_batches_are_deterministic_packed_and_sliced():
  _, vocab = get_model("tiny")
  full = next(SyntheticIterator(7, 8, 128, vocab))
  part = SyntheticIterator(7, 8, 128, vocab, process_index=1, process_count=2)
  half = next(part)
  for k in full:
    np.testing.assert_array_equal(half[k], full[k][4:])
    assert full[k].shape == (8, 128) and full[k].dtype == np.int32
  assert part.get_state() == {"step": 1}
  seg, tok, tgt, mask, pos = (
    full[k] for k in ("segment_ids", "tokens", "targets", "loss_mask", "positions")
  )
  assert seg.max() > 1  # packed
  same_next = seg[:, 1:] == seg[:, :-1]
  np.testing.assert_array_equal(mask[:, :-1], same_next & (seg[:, :-1] > 0))
  np.testing.assert_array_equal(
    np.where(mask[:, :-1] > 0, tgt[:, :-1], 0), np.where(mask[:, :-1] > 0, tok[:, 1:], 0)
  )
  starts = np.diff(seg, axis=1, prepend=0) != 0
  assert (pos[starts & (seg > 0)] == 0).all()


# ---- the loop ---------------------------------------------------------------------------------
def test_loss_decreases_over_50_steps(tmp_path):
  # micro_batches=2: the real step's accumulation path trains too.
  c = small_config(total_steps=50, log_every=10, lr=1e-2, seq_len=64, micro_batches=2)
  run = loop.train(c, str(tmp_path), devices=jax.devices()[:2])
  losses = [h["loss"] for h in run.history]
  assert [h["step"] for h in run.history] == [10, 20, 30, 40, 50]
  uniform = np.log(get_model("tiny", **SMALL)[0].vocab_size)  # loss of the untrained model
  assert losses[-1] < uniform - 1.5 and losses[-1] < losses[0] - 1.0, losses
  assert int(run.state.step) == 50
  for name in ("text", "special", "image", "speech"):
    assert run.metrics[f"tokens/{name}"] > 0
    assert np.isfinite(run.metrics[f"loss/{name}"])
  assert run.metrics["perf/tokens_per_s"] > 0 and run.metrics["perf/mfu"] > 0


def test_unknown_data_kind_is_a_clear_error():
  c = small_config()
  c.data.kind = "nope"
  with pytest.raises(ValueError, match="unknown data.kind 'nope'"):
    loop.make_data_iterator(c, None, 0, 1)


def test_peak_flops_table():
  assert mfu.spec_peak_flops("TPU v5 lite") == 197e12
  assert mfu.spec_peak_flops("TPU v5p") == 459e12
  assert mfu.spec_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert mfu.spec_peak_flops("some cpu") is None
  assert mfu.measured_cpu_peak_flops() > 1e9
  assert mfu.measured_cpu_peak_flops() == mfu.measured_cpu_peak_flops()  # cached


def test_cpu_mfu_is_against_the_hardware_peak_not_xlas_rate():
  """Cores x clock x the ISA's FMA FLOPs per cycle (lscpu); XLA's matmul rate only without it."""
  info = cpu_peak.lscpu()
  f32, bf16, _ = cpu_peak.fma_flops_per_cycle(info)
  expected = cpu_peak.usable_cores() * cpu_peak.cpu_mhz(info) * 1e6 * f32
  assert mfu.cpu_peak_flops("float32") == pytest.approx(expected)
  assert mfu.cpu_peak_flops("bfloat16") == pytest.approx(expected * bf16 / f32)
  assert mfu.total_peak_flops("float32") == pytest.approx(expected)  # one process


def test_cpu_peak_without_isa_info_falls_back_to_the_measured_rate(monkeypatch, caplog):
  monkeypatch.setattr(cpu_peak, "lscpu", lambda: {})
  monkeypatch.setattr(cpu_peak, "cpu_mhz", lambda info: None)
  for cached in (cpu_peak.hardware_peak_flops, cpu_peak.log_peak_once):
    cached.cache_clear()
  try:
    with caplog.at_level("WARNING"):
      assert mfu.cpu_peak_flops("float32") == mfu.measured_cpu_peak_flops("float32")
    assert "MFU is against XLA's measured matmul rate" in caplog.text
  finally:
    for cached in (cpu_peak.hardware_peak_flops, cpu_peak.log_peak_once):
      cached.cache_clear()


def test_stage1_configs():
  from configs import stage1

  demo, big = stage1.get_config(), stage1.get_config("mio-7b")
  assert demo.model == "tiny" and demo.data.kind == "shards" and demo.data.build_demo_corpus
  assert (big.seq_len, big.global_batch, big.total_steps, big.lr, big.mesh.fsdp) == (
    2800,
    256,
    24_800,
    3e-5,
    -1,
  )
  for key in (
    "model_overrides",
    "seed",
    "micro_batches",
    "mesh.dcn",
    "checkpoint_every",
    "keep_checkpoints",
    "data_dir",
    "init_from",
    "profile_steps",
    "data.overlong",
    "data.skip_corrupt",
    "data.worker_count",
    "data.shuffle",
    "data.sources",
    "data.weights",
  ):
    obj = big
    for part in key.split("."):
      assert part in obj, key
      obj = obj[part]
  with pytest.raises(ValueError, match="unknown variant 'huge' for stage 1"):
    stage1.get_config("huge")


def test_config_keys_declared_with_their_defaults():
  """One home per setting: ModelConfig overrides come from its fields; data.pack_rows and
  data.prefetch are declared, so --config.data.pack_rows=16 can be set."""
  import dataclasses

  from mio_jax.config import MODEL_OVERRIDE_TYPES
  from mio_jax.model.architecture import ModelConfig

  fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"vocab_size"}
  assert set(MODEL_OVERRIDE_TYPES) == fields
  assert MODEL_OVERRIDE_TYPES["head_dim"] is int and MODEL_OVERRIDE_TYPES["scan_layers"] is bool
  c = get_base_config()
  assert (c.data.pack_rows, c.data.prefetch, c.data.corpus_builder) == (8, 2, "")
  c.model_overrides.head_dim = 64
  with pytest.raises(TypeError):
    c.model_overrides.head_dim = "wide"


def test_demo_corpus_hook_imports_the_module_the_config_names(tmp_path, monkeypatch):
  """A missing demo corpus is built by config.data.corpus_builder, a module name: mio_jax never
  imports data_pipelines itself."""
  import types

  built = []
  fake = types.ModuleType("fake_corpus_builder")
  fake.build = lambda data_dir, seed: built.append((data_dir, seed))
  monkeypatch.setitem(sys.modules, "fake_corpus_builder", fake)
  loop._build_demo_corpus("fake_corpus_builder", str(tmp_path), 7)
  assert built == [(str(tmp_path), 7)]
  with pytest.raises(ValueError, match="corpus_builder"):
    loop._build_demo_corpus("", str(tmp_path), 7)
  from configs import stage1

  assert stage1.get_config().data.corpus_builder == "data_pipelines.demo_corpus"


def test_cli_writes_tensorboard_events_and_one_quiet_line_per_step(tmp_path):
  """Synthetic data: the demo config's default data_dir would build ./demo_data in the repo."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  base = [
    sys.executable,
    "-m",
    "mio_jax.main",
    "--config=configs/stage1.py",
    "--config.data.kind=synthetic",
    "--config.total_steps=3",
    "--config.log_every=1",
  ]
  cmd = base + [f"--workdir={tmp_path}/run", "--config.profile_steps=1,2"]
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stderr.splitlines()
  for step in (1, 2, 3):  # exactly one console line per logged step, with progress and ETA
    ours = [line for line in lines if f"step {step}/3 [" in line]
    assert len(ours) == 1 and " eta 0:" in ours[0], ours
  assert "step 3/3 [####################] 100%" in out.stderr
  assert "checkpoint_manager.py" not in out.stderr  # Orbax's INFO chatter is off by default
  assert "malloc huge pages" in out.stderr  # mio_jax/hardware/host_memory.py says what it did
  with open(os.path.join(tmp_path, "run", "metrics.jsonl")) as f:
    logged = {m["step"]: m for m in map(json.loads, f)}
  assert _event_scalars(os.path.join(tmp_path, "run"), "loss") == pytest.approx(
    {s: logged[s]["loss"] for s in (1, 2, 3)}, rel=1e-6
  )
  assert glob.glob(os.path.join(tmp_path, "run", "profile", "**", "*.xplane.pb"), recursive=True)

  loud = subprocess.run(
    base + [f"--workdir={tmp_path}/loud", "--verbosity=1"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert loud.returncode == 0 and "checkpoint_manager.py" in loud.stderr


def _event_scalars(logdir: str, tag: str) -> dict:
  """step → value of `tag` in the TensorBoard event files under `logdir`."""
  import tensorflow as tf

  values = {}
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        if v.tag == tag:
          values[event.step] = (
            float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") else v.simple_value
          )
  return values
