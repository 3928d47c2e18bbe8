"""Grouped-query attention over packed sequences, with an optional KV cache for decoding.

Packing: `segment_ids` name the example each token belongs to (0 = padding); a query attends to a
key only if both share a segment and the key is not later in the sequence. `positions` restart at
0 for every segment, so RoPE sees each example as if it were alone.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from mio_jax.model.architecture import ModelConfig
from mio_jax.model.layers import dense, dense_init, param_with_axes, rope
from mio_jax.model.splash import attend_splash, resolve_impl

NEG_INF = -1e30  # finite, so fully masked rows (never produced by our masks) cannot give NaN


def packed_causal_mask(q_segments_BxT, kv_segments_BxS, q_index_BxT, kv_index_BxS):
  """True where query t may attend to key s: same segment and s at or before t."""
  same = q_segments_BxT[:, :, None] == kv_segments_BxS[:, None, :]
  causal = kv_index_BxS[:, None, :] <= q_index_BxT[:, :, None]
  return same & causal


def _query_blocks(t: int, s: int, block: int) -> list:
  """(lo, hi, keys) per query block. Self-attention (T == S, queries and keys the same positions,
  as in `attend_dpa`) is causal, so block [lo, hi) needs only keys [0, hi): ~(n+1)/2n of the
  scores. Otherwise one block over all keys. At most 16 blocks (each is its own matmuls)."""
  n = max((m for m in range(1, min(t // max(block, 1), 16) + 1) if t % m == 0), default=1)
  if t != s or n == 1:
    return [(0, t, s)]
  c = t // n
  return [(i * c, (i + 1) * c, (i + 1) * c) for i in range(n)]


def _attention_fwd(q_NxRxTxK, k_NxSxK, v_NxSxK, mask_BxTxS, blocks):
  """Softmax attention per query block; returns the output and the probabilities of each block."""
  n, r, _, hd = q_NxRxTxK.shape
  b = mask_BxTxS.shape[0]
  probs, outs = [], []
  for lo, hi, keys in blocks:
    q = q_NxRxTxK[:, :, lo:hi].reshape(n, r * (hi - lo), hd)
    scores = jnp.einsum("nqk,nsk->nqs", q, k_NxSxK[:, :keys], preferred_element_type=jnp.float32)
    scores = scores.reshape(b, n // b, r, hi - lo, keys) * (hd**-0.5)
    scores = jnp.where(mask_BxTxS[:, None, None, lo:hi, :keys], scores, NEG_INF)
    e = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
    p = (
      (e / jnp.sum(e, axis=-1, keepdims=True)).astype(v_NxSxK.dtype).reshape(n, r * (hi - lo), keys)
    )
    probs.append(p)
    outs.append(jnp.einsum("nqs,nsk->nqk", p, v_NxSxK[:, :keys]).reshape(n, r, hi - lo, hd))
  return jnp.concatenate(outs, axis=2) if len(outs) > 1 else outs[0], probs


def _to_groups(x_BxTxHxK, g: int):
  """[B, T, H, K] -> [B*G, H/G, T, K]: the heads sharing a KV head become rows of one matrix."""
  b, t, h, hd = x_BxTxHxK.shape
  return jnp.transpose(x_BxTxHxK.reshape(b, t, g, h // g, hd), (0, 2, 3, 1, 4)).reshape(
    b * g, h // g, t, hd
  )


def _from_groups(x_NxRxTxK, b: int):
  n, r, t, hd = x_NxRxTxK.shape
  return jnp.transpose(x_NxRxTxK.reshape(b, n // b, r, t, hd), (0, 3, 1, 2, 4)).reshape(
    b, t, n // b * r, hd
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, mask_BxTxS, blocks):
  return _attention_vjp_fwd(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, mask_BxTxS, blocks)[0]


def _attention_vjp_fwd(q, k, v, mask, blocks):
  g = k.shape[2]
  qn, kn, vn = _to_groups(q, g), _to_groups(k, g)[:, 0], _to_groups(v, g)[:, 0]
  out_n, probs = _attention_fwd(qn, kn, vn, mask, blocks)
  out = _from_groups(out_n, q.shape[0])
  return out, (qn, kn, vn, out, probs)  # the probabilities only: autodiff also kept exp(scores)


def _attention_vjp_bwd(blocks, residuals, dout_BxTxHxK):
  """Flash-attention backward: dS = P * (dP - rowsum(dO * O)); masked entries have P = 0."""
  q, k, v, out, probs = residuals
  n, r, _, hd = q.shape
  b, g, f32 = out.shape[0], n // out.shape[0], jnp.float32
  delta = jnp.sum(dout_BxTxHxK.astype(f32) * out.astype(f32), axis=-1, keepdims=True)
  delta, dout = _to_groups(delta, g), _to_groups(dout_BxTxHxK, g)
  dqs, dk, dv = [], jnp.zeros(k.shape, f32), jnp.zeros(v.shape, f32)
  for (lo, hi, keys), p in zip(blocks, probs):
    rows = r * (hi - lo)
    do = dout[:, :, lo:hi].reshape(n, rows, hd)
    dp = jnp.einsum("nqk,nsk->nqs", do, v[:, :keys], preferred_element_type=f32)
    ds = (p * (dp - delta[:, :, lo:hi].reshape(n, rows, 1)) * (hd**-0.5)).astype(q.dtype)
    dqs.append(jnp.einsum("nqs,nsk->nqk", ds, k[:, :keys]).reshape(n, r, hi - lo, hd))
    pad = ((0, 0), (0, k.shape[1] - keys), (0, 0))
    q_blk = q[:, :, lo:hi].reshape(n, rows, hd)
    dk = dk + jnp.pad(jnp.einsum("nqs,nqk->nsk", ds, q_blk, preferred_element_type=f32), pad)
    dv = dv + jnp.pad(jnp.einsum("nqs,nqk->nsk", p, do, preferred_element_type=f32), pad)
  dq = jnp.concatenate(dqs, axis=2) if len(dqs) > 1 else dqs[0]
  return (
    _from_groups(dq, b),
    _from_groups(dk[:, None].astype(k.dtype), b),
    _from_groups(dv[:, None].astype(v.dtype), b),
    None,
  )


_attention.defvjp(_attention_vjp_fwd, _attention_vjp_bwd)


def attend_xla(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, mask_BxTxS, block: int = 128):
  """Plain XLA attention; G key/value heads are shared by R = H // G query heads each.

  Laid out as batched 3-D matmuls over N = B*G with the R query heads of a group stacked along
  the rows ([N, R*T, K] x [N, S, K]) and the mask/softmax on [N, R*T, S]: on XLA:CPU this runs
  the forward and backward ~25 % faster than 5-D einsums with two batch dimensions. Causal
  self-attention runs in query blocks of ~`block` rows that skip the keys after the block, and
  the backward (custom VJP, as flash attention) keeps only the probabilities.
  """
  t, s = q_BxTxHxK.shape[1], k_BxSxGxK.shape[1]
  return _attention(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, mask_BxTxS, tuple(_query_blocks(t, s, block)))


def attend_dpa(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, mask_BxTxS):
  """`jax.nn.dot_product_attention`; on GPU in bf16/f16 over a full sequence, cuDNN flash attention.

  jax's default implementation is XLA everywhere, so cuDNN must be asked for. Its causal flag
  (top-left aligned, so only when queries and keys are the same positions) lets it skip the
  masked blocks; the packed-segment mask travels as a bias. Decoding (T != S) stays on XLA.
  """
  t, s = q_BxTxHxK.shape[1], k_BxSxGxK.shape[1]
  flash = (
    jax.default_backend() == "gpu" and t == s and q_BxTxHxK.dtype in (jnp.bfloat16, jnp.float16)
  )
  return jax.nn.dot_product_attention(
    q_BxTxHxK,
    k_BxSxGxK,
    v_BxSxGxK,
    mask=mask_BxTxS[:, None],
    is_causal=flash,
    implementation="cudnn" if flash else None,
  )


ATTEND = {"xla": attend_xla, "dot_product_attention": attend_dpa}


class Attention(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, segment_ids_BxT, positions_BxT, decode=None):
    """`decode` = None for training, or (layer_kv, kv_segments_BxS, index) when decoding with a
    cache: layer_kv holds this layer's 'k'/'v' [B, S, G, K]; kv_segments are already updated for
    this call."""
    cfg = self.config
    d, h, g, hd, pdt = (
      cfg.d_model,
      cfg.n_heads,
      cfg.n_kv_heads,
      cfg.head_dim,
      jnp.dtype(cfg.param_dtype),
    )
    wq = param_with_axes(
      self, "q", dense_init(cfg), (d, h, hd), ("embed", "heads", "head_dim"), pdt
    )
    wk = param_with_axes(
      self, "k", dense_init(cfg), (d, g, hd), ("embed", "kv_heads", "head_dim"), pdt
    )
    wv = param_with_axes(
      self, "v", dense_init(cfg), (d, g, hd), ("embed", "kv_heads", "head_dim"), pdt
    )
    wo = param_with_axes(
      self, "o", dense_init(cfg), (h, hd, d), ("heads", "head_dim", "embed"), pdt
    )

    x = x_BxTxD.astype(cfg.dtype)
    # q, k and v in one matmul (few big matmuls beat many small ones on CPU). Laid out per KV
    # group as [R query heads, k, v], so a `tensor` shard of heads stays on its device.
    b, t, r = x.shape[0], x.shape[1], h // g
    if decode is not None and t == 1:
      # One-token decode steps: concatenating the weights would copy them every step, for a
      # matmul that only streams them once.
      q, k, v = (dense(x, w.astype(cfg.dtype)) for w in (wq, wk, wv))
    else:
      w_qkv = jnp.concatenate(
        [
          wq.astype(cfg.dtype).reshape(d, g, r, hd),
          wk.astype(cfg.dtype)[:, :, None],
          wv.astype(cfg.dtype)[:, :, None],
        ],
        axis=2,
      )
      qkv_BxTxGx_R2_xK = dense(x, w_qkv)
      q = qkv_BxTxGx_R2_xK[:, :, :, :r].reshape(b, t, h, hd)
      k, v = qkv_BxTxGx_R2_xK[:, :, :, r], qkv_BxTxGx_R2_xK[:, :, :, r + 1]
    q = nn.with_logical_constraint(q, ("batch", "length", "heads", "head_dim"))
    k = nn.with_logical_constraint(k, ("batch", "length", "kv_heads", "head_dim"))
    v = nn.with_logical_constraint(v, ("batch", "length", "kv_heads", "head_dim"))
    q = rope(q, positions_BxT, cfg.rope_theta)
    k = rope(k, positions_BxT, cfg.rope_theta)

    t = x_BxTxD.shape[1]
    q_index = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), segment_ids_BxT.shape)
    if decode is None:
      mask = packed_causal_mask(segment_ids_BxT, segment_ids_BxT, q_index, q_index)
      new_kv = None
    else:
      layer_kv, kv_segments_BxS, index = decode
      k = jax.lax.dynamic_update_slice_in_dim(
        layer_kv["k"], k.astype(layer_kv["k"].dtype), index, axis=1
      )
      v = jax.lax.dynamic_update_slice_in_dim(
        layer_kv["v"], v.astype(layer_kv["v"].dtype), index, axis=1
      )
      new_kv = {"k": k, "v": v}
      kv_index = jnp.broadcast_to(jnp.arange(k.shape[1], dtype=jnp.int32), kv_segments_BxS.shape)
      mask = packed_causal_mask(segment_ids_BxT, kv_segments_BxS, q_index + index, kv_index)
      k, v = k.astype(cfg.dtype), v.astype(cfg.dtype)
    impl = resolve_impl(cfg.attention_impl)  # 'auto' → by the platform compiled for
    splash = impl == "splash" and decode is None  # decoding with a KV cache stays on XLA
    if splash:
      out = attend_splash(q, k, v, segment_ids_BxT)  # the kernel builds the mask itself
    else:
      out = ATTEND["xla" if impl == "splash" else impl](q, k, v, mask)
    out = nn.with_logical_constraint(out, ("batch", "length", "heads", "head_dim"))
    if not splash:  # splash names its own output and log-sum-exp "attn_out" (model/splash.py)
      # Named so the "attn_out" remat policy can keep it and skip recomputing attention.
      out = checkpoint_name(out, "attn_out")
    return dense(out, wo.astype(cfg.dtype), n_in=2), new_kv
