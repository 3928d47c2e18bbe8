"""The decoder: param tree, KV-cache decoding, packing, remat policies, bf16 compute."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mio_jax.model import attention, layers
from mio_jax.model.architecture import REMAT_POLICIES, ModelConfig
from mio_jax.model.transformer import REMAT_POLICY, Transformer, init_cache

CFG = ModelConfig(
  vocab_size=97,
  d_model=32,
  n_layers=2,
  n_heads=4,
  n_kv_heads=2,
  ffn_dim=64,
  rope_theta=500.0,
  init_std=0.2,
)  # large init: logits O(1), so mistakes show


@functools.cache
def _params(scan_layers: bool):
  """Scanned params from `init`; the unscanned ones are the same weights split per layer (so both
  layouts must compute identical functions)."""
  if scan_layers:
    init = jax.jit(Transformer(CFG).init)
    return nn.unbox(init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  params = dict(_params(True))
  stacked = params.pop("layers")
  return {
    **params,
    **{f"layers_{i}": jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(CFG.n_layers)},
  }


def test_unscanned_init_has_the_same_tree():
  shapes = jax.eval_shape(
    Transformer(CFG.replace(scan_layers=False)).init,
    jax.random.PRNGKey(0),
    jnp.zeros((1, 4), jnp.int32),
  )
  want = jax.tree.map(lambda a: (a.shape, a.dtype), _params(False))
  assert jax.tree.map(lambda a: (a.shape, a.dtype), nn.unbox(shapes["params"])) == want


def _tokens(shape, seed=0):
  return jnp.asarray(np.random.RandomState(seed).randint(0, CFG.vocab_size, shape), jnp.int32)


def _forward(cfg, params, tokens, segment_ids=None, positions=None):
  return jax.jit(Transformer(cfg).apply)({"params": params}, tokens, segment_ids, positions)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_param_tree(scan_layers):
  params = _params(scan_layers)
  d, h, g, k, f, l = 32, 4, 2, 8, 64, 2
  layer = params["layers"] if scan_layers else params["layers_1"]
  lead = (l,) if scan_layers else ()
  assert params["embedding"].shape == (97, d) and params["lm_head"].shape == (d, 97)
  assert layer["attention"]["q"].shape == (*lead, d, h, k)
  assert layer["attention"]["k"].shape == (*lead, d, g, k)
  assert layer["attention"]["o"].shape == (*lead, h, k, d)
  assert layer["mlp"]["down"].shape == (*lead, f, d)
  assert layer["mlp_norm"]["scale"].shape == (*lead, d)
  assert params["final_norm"]["scale"].shape == (d,)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_kv_cache_matches_full_forward(scan_layers):
  cfg, params = CFG.replace(scan_layers=scan_layers), _params(scan_layers)
  tokens = _tokens((2, 9))
  full = _forward(cfg, params, tokens)
  step = jax.jit(lambda p, tok, cache: Transformer(cfg).apply({"params": p}, tok, cache=cache))
  # max_len > 9 leaves empty cache slots that must stay masked; positions default to the cache
  # index.
  logits, cache = step(params, tokens[:, :4], init_cache(cfg, 2, 12))
  outs = [logits]
  for t in range(4, 9):
    logits, cache = step(params, tokens[:, t : t + 1], cache)
    outs.append(logits)
  decoded = jnp.concatenate(outs, axis=1)
  assert int(cache["index"]) == 9
  np.testing.assert_allclose(decoded, full, atol=1e-5, rtol=1e-5)


def test_packed_example_equals_alone():
  params = _params(True)
  a, b = _tokens((1, 5), seed=1), _tokens((1, 7), seed=2)
  packed = jnp.concatenate([a, b, jnp.zeros((1, 3), jnp.int32)], axis=1)  # 3 padding tokens
  segment_ids = jnp.asarray([[1] * 5 + [2] * 7 + [0] * 3], jnp.int32)
  positions = jnp.asarray([list(range(5)) + list(range(7)) + [0] * 3], jnp.int32)
  out = _forward(CFG, params, packed, segment_ids, positions)
  np.testing.assert_allclose(out[:, :5], _forward(CFG, params, a), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(out[:, 5:12], _forward(CFG, params, b), atol=1e-5, rtol=1e-5)
  # Without segment ids b would attend to a: the check above is not vacuous.
  unpacked = _forward(CFG, params, packed, jnp.ones_like(segment_ids), positions)
  assert np.abs(unpacked[:, 5:12] - out[:, 5:12]).max() > 1e-3
  # jax.nn.dot_product_attention applies the same packed mask.
  dpa = _forward(
    CFG.replace(attention_impl="dot_product_attention"), params, packed, segment_ids, positions
  )
  np.testing.assert_allclose(dpa, out, atol=1e-5, rtol=1e-5)


def _plain_attention(q, k, v, mask):
  """Reference: 4-D einsums over repeated KV heads, softmax differentiated by autodiff."""
  r = q.shape[2] // k.shape[2]
  k, v = jnp.repeat(k, r, axis=2), jnp.repeat(v, r, axis=2)
  scores = jnp.einsum("bthk,bshk->bhts", q, k) * q.shape[-1] ** -0.5
  probs = jax.nn.softmax(jnp.where(mask[:, None], scores, attention.NEG_INF), axis=-1)
  return jnp.einsum("bhts,bshk->bthk", probs, v)


@pytest.mark.parametrize("block", [3, 4, 1000])  # 4, 3 and 1 causal query blocks
def test_blocked_attention_matches_plain(block):
  rng = np.random.RandomState(0)
  q, k, v, w = (jnp.asarray(rng.randn(2, 12, h, 8), jnp.float32) for h in (4, 2, 2, 4))
  seg = jnp.asarray([[1] * 5 + [2] * 7, [1] * 9 + [0] * 3], jnp.int32)  # packed, padded
  idx = jnp.broadcast_to(jnp.arange(12), (2, 12))
  mask = attention.packed_causal_mask(seg, seg, idx, idx)

  def loss(attend):
    return lambda q, k, v: jnp.sum(attend(q, k, v, mask) * w)

  got = jax.value_and_grad(loss(functools.partial(attention.attend_xla, block=block)), (0, 1, 2))(
    q, k, v
  )
  want = jax.value_and_grad(loss(_plain_attention), (0, 1, 2))(q, k, v)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_custom_vjp_layers_match_autodiff():
  rng = np.random.RandomState(1)
  x, dy = (jnp.asarray(rng.randn(2, 3, 8), jnp.float32) for _ in range(2))
  scale, gate, up, down = (
    jnp.asarray(rng.randn(*s), jnp.float32) for s in ((8,), (8, 6), (8, 6), (6, 8))
  )
  cases = [  # (plain, custom, args)
    (
      lambda x, s: s * x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-5),
      lambda x, s: layers.rms_norm(x, s, 1e-5, jnp.float32),
      (x, scale),
    ),
    (
      lambda x, g, u, d: (nn.silu(x @ g) * (x @ u)) @ d,
      lambda x, g, u, d: layers.swiglu(x, jnp.stack([g, u], axis=1), d),
      (x, gate, up, down),
    ),
  ]
  for plain, custom, args in cases:
    (want, want_vjp), (got, got_vjp) = jax.vjp(plain, *args), jax.vjp(custom, *args)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    for a, b in zip(got_vjp(dy), want_vjp(dy)):
      np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@functools.cache
def _grads(cfg):
  params, tokens = _params(cfg.scan_layers), _tokens((2, 8))

  def loss(p):
    logits = Transformer(cfg).apply({"params": p}, tokens[:, :-1])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], axis=-1))

  return jax.jit(jax.value_and_grad(loss))(params)


def test_every_remat_policy_is_defined():
  assert set(REMAT_POLICIES) == {"none", *REMAT_POLICY}


@pytest.mark.parametrize(
  "policy, scan_layers", [("full", True), ("attn_out", True), ("full", False)]
)
def test_remat_policy_gives_same_grads(policy, scan_layers):
  base_loss, base = _grads(CFG)
  loss, grads = _grads(CFG.replace(scan_layers=scan_layers, remat_policy=policy))
  if not scan_layers:  # restack per-layer grads to compare with the scanned baseline
    layers = [grads.pop(f"layers_{i}") for i in range(CFG.n_layers)]
    grads = {**grads, "layers": jax.tree.map(lambda *a: jnp.stack(a), *layers)}
  np.testing.assert_allclose(loss, base_loss, rtol=1e-6)
  assert jax.tree.structure(grads) == jax.tree.structure(base)
  for g, want in zip(jax.tree.leaves(grads), jax.tree.leaves(base)):
    np.testing.assert_allclose(g, want, atol=1e-6, rtol=1e-5)


def _assert_bf16_close(out, ref):
  """bf16 really used (not bit-equal to f32), and still close: max error under 5 % of the largest
  logit, RMS error under 3 % (a few bf16 roundings, 2^-8 relative each, through two layers)."""
  assert out.dtype == jnp.float32 and bool(jnp.isfinite(out).all())
  err = jnp.abs(out - ref)
  assert 0 < float(err.max()) < 0.05 * float(jnp.abs(ref).max())
  rms = lambda a: float(jnp.sqrt(jnp.mean(jnp.square(a))))
  assert rms(out - ref) < 0.03 * rms(ref), (rms(out - ref), rms(ref))


def test_bf16_compute_close_to_f32():
  params, tokens = _params(True), _tokens((2, 8))
  ref = _forward(CFG, params, tokens)
  _assert_bf16_close(_forward(CFG.replace(dtype="bfloat16"), params, tokens), ref)


def test_bf16_params_close_to_f32():
  params, tokens = _params(True), _tokens((2, 8))
  ref = _forward(CFG, params, tokens)
  bf16_params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  assert {x.dtype for x in jax.tree.leaves(bf16_params)} == {jnp.dtype(jnp.bfloat16)}
  out = _forward(CFG.replace(dtype="bfloat16", param_dtype="bfloat16"), bf16_params, tokens)
  _assert_bf16_close(out, ref)
  # The same rounding seen from the other side: f32 compute over the bf16-rounded weights.
  rounded = jax.tree.map(lambda x: x.astype(jnp.float32), bf16_params)
  _assert_bf16_close(out, _forward(CFG, rounded, tokens))


def test_bad_config_is_rejected():
  with pytest.raises(ValueError, match="n_kv_heads"):
    CFG.replace(n_kv_heads=3)
  with pytest.raises(ValueError, match="remat_policy"):
    CFG.replace(remat_policy="sometimes")
