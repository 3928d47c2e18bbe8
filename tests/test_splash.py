"""Splash attention (model/splash.py): on CPU it runs in Pallas interpret mode and must match
attend_xla on packed GQA batches, alone and under a mesh; the TPU compiler must accept it (AOT)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import stage1
from mio_jax.hardware.tpu_specs import parse_topology
from mio_jax.model import attention as attn
from mio_jax.model import splash
from mio_jax.model.architecture import ModelConfig
from mio_jax.model.transformer import Transformer
from mio_jax.parallel import sharding as shd
from mio_jax.scale import aot, roofline

B, T, H, G, K = 4, 200, 4, 2, 16  # T pads to 256 inside the kernel


def _segments():
  """Several packed examples per row, trailing padding (0), one row without padding."""
  seg = np.zeros((B, T), np.int32)
  seg[0, :] = 1
  seg[1, :50], seg[1, 50:130], seg[1, 130:190] = 1, 2, 3
  seg[2, :10], seg[2, 10:] = 1, 2
  seg[3, :70], seg[3, 70:100] = 5, 6
  return jnp.asarray(seg)


def _qkv(seed=0):
  r = np.random.default_rng(seed)
  return [jnp.asarray(r.normal(size=(B, T, n, K)), jnp.float32) for n in (H, G, G, H)]


def _reference(seg, q, k, v, w):
  idx = jnp.broadcast_to(jnp.arange(T), (B, T))
  mask = attn.packed_causal_mask(seg, seg, idx, idx)
  out = jax.jit(attn.attend_xla)(q, k, v, mask)
  grads = jax.jit(
    jax.grad(lambda q, k, v: (attn.attend_xla(q, k, v, mask) * w).sum(), argnums=(0, 1, 2))
  )(q, k, v)
  return out, grads


def _splash(seg, q, k, v, w):
  out = jax.jit(splash.attend_splash)(q, k, v, seg)
  grads = jax.jit(
    jax.grad(lambda q, k, v: (splash.attend_splash(q, k, v, seg) * w).sum(), argnums=(0, 1, 2))
  )(q, k, v)
  return out, grads


def _close(a, b):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=2e-5)


def test_padding_and_blocks():
  assert splash.padded_length(2800) == (2816, 256)
  assert splash.padded_length(512) == (512, 512)
  assert splash.padded_length(200) == (256, 256)


# No mesh; fsdp x tensor with K/V heads split; tensor 4 > G = 2, so K/V replicated over tensor
# and each shard picks its query heads' groups; a batch of 4 over fsdp 8 (not split).
@pytest.mark.parametrize("fsdp,tensor", [(1, 1), (2, 2), (2, 4), (8, 1)])
def test_matches_xla_forward_and_grad(fsdp, tensor):
  seg, (q, k, v, w) = _segments(), _qkv()
  want_out, want_grads = _reference(seg, q, k, v, w)
  if fsdp * tensor == 1:
    got_out, got_grads = _splash(seg, q, k, v, w)
  else:
    shape = shd.MeshShape(1, 1, fsdp, tensor)
    mesh = shd.build_mesh(shape, jax.devices()[: fsdp * tensor])
    rules = shd.rules_for(ModelConfig(8, 8, 1, H, G, 8), shape)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      got_out, got_grads = _splash(seg, q, k, v, w)
  _close(got_out, want_out)
  for got, want in zip(got_grads, want_grads):
    _close(got, want)


def test_model_with_splash_matches_xla_and_decoding_stays_on_xla():
  cfg = ModelConfig(
    vocab_size=61,
    d_model=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    ffn_dim=64,
    init_std=0.2,
    remat_policy="dots_attn_out",
  )
  tokens = jnp.asarray(np.random.RandomState(1).randint(0, 61, (2, 40)), jnp.int32)
  seg = jnp.asarray(np.repeat([[1, 2, 0], [1, 1, 1]], [25, 10, 5], axis=1), jnp.int32)
  pos = jnp.asarray(np.concatenate([np.arange(25), np.arange(10), np.arange(5)])[None].repeat(2, 0))
  params = nn.unbox(jax.jit(Transformer(cfg).init)(jax.random.PRNGKey(0), tokens)["params"])

  def loss(params, impl):
    logits = Transformer(cfg.replace(attention_impl=impl)).apply(
      {"params": params}, tokens, seg, pos
    )
    return jnp.mean(jnp.where(seg[..., None] > 0, logits, 0.0) ** 2)

  for got, want in zip(
    jax.tree.leaves(jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, "splash")),
    jax.tree.leaves(jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, "xla")),
  ):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4, rtol=1e-4)
  # "auto" resolves to XLA on a CPU; a KV-cache call with "splash" uses XLA (T != S).
  assert splash.resolve_impl("auto") == "xla" and splash.resolve_impl("splash") == "splash"
  from mio_jax.model.transformer import init_cache

  model = Transformer(cfg.replace(attention_impl="splash"))
  logits, _ = model.apply({"params": params}, tokens[:1, :3], cache=init_cache(cfg, 1, 8))
  assert logits.shape == (1, 3, 61)


def test_roofline_adds_the_kernel_xla_cannot_see():
  from mio_jax.model.sizes import get_model

  topo, mesh = parse_topology("v5p-128"), {"dcn": 1, "data": 1, "fsdp": 64, "tensor": 1}
  fake_probe = {"flops": 1e15, "bytes accessed": 1e12}
  out = {}
  for impl in ("xla", "splash"):
    cfg, _ = get_model("mio-7b", attention_impl=impl, remat_policy="dots_attn_out")
    out[impl] = roofline.roofline(cfg, topo, 2800, 256, mesh, 1, fake_probe)
  k = out["splash"]["splash_kernel"]
  # 4 sequences x 32 layers x (2 forward + 7 backward block matmuls) over 66 of 121 blocks.
  mm = 2 * 2816 * 256 * 128 * 6 * 32
  assert k["flops"] == pytest.approx(4 * 32 * 9 * mm) and k["forward_runs"] == 1
  assert out["splash"]["xla_flops_per_chip"] == pytest.approx(1e15 + k["flops"])
  assert out["splash"]["xla_bytes_per_chip"] == pytest.approx(1e12 + k["bytes"])
  assert out["splash"]["model_flops_per_chip"] == out["xla"]["model_flops_per_chip"]
  # Causal block skipping: fewer hardware FLOPs than XLA's full [T, T] attention.
  assert out["splash"]["hardware_flops_per_chip"] < out["xla"]["hardware_flops_per_chip"]
  cfg, _ = get_model("mio-7b", remat_policy="full")  # the default 'auto' is splash on TPU
  assert roofline.splash_kernel_cost(cfg, 2800, 4)["forward_runs"] == 2


def test_aot_compiles_splash_for_tpu():
  # "auto" must resolve by the target (TPU), not by this CPU process.
  topo = parse_topology("v5e-4")
  config = aot.with_overrides(
    stage1.get_config("demo"), topo, {"attention_impl": "auto", "remat_policy": "dots_attn_out"}
  )
  _, compiled, _ = aot.compile_step(config, aot.topology_devices(topo))
  hlo = compiled.as_text()
  assert all(f"splash_mha_{k}_segmented" in hlo for k in ("fwd", "dq", "dkv"))
  assert roofline.verdict(roofline.memory_report(aot.memory_stats(compiled), topo.chip.hbm_bytes))[
    0
  ]
