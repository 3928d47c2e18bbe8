"""Masked next-token cross-entropy with the LM head applied chunk by chunk.

`fused_cross_entropy` never materialises the full [B, T, V] f32 logits: it scans over chunks of
the sequence, and in the same pass computes the gradient w.r.t. the hidden states and the LM head
(softmax - one_hot is known as soon as the chunk's softmax is), so the backward pass is a scale by
the incoming cotangent instead of a recomputation of the logits. The loss it differentiates is a
SUM (not a mean): micro-batches add sums and the step normalises once by the counted tokens.

    loss_sum = sum_t weight_t * nll_t + z_loss * sum_t z_mask_t * logZ_t^2
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def _chunk(h_BxCxD, w_DxV, targets_BxC, weight_BxC, zmask_BxC, z_loss: float, with_grad: bool):
  """Stats of one chunk; with_grad also returns d(loss_sum)/dh and d(loss_sum)/dw (f32)."""
  logits = jnp.einsum("bcd,dv->bcv", h_BxCxD, w_DxV, preferred_element_type=jnp.float32)
  logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
  m_BxC = jnp.max(logits, axis=-1)
  e_BxCxV = jnp.exp(logits - m_BxC[..., None])
  s_BxC = jnp.sum(e_BxCxV, axis=-1)
  logz_BxC = m_BxC + jnp.log(s_BxC)
  target_logit = jnp.take_along_axis(logits, targets_BxC[..., None], axis=-1)[..., 0]
  nll_BxC = logz_BxC - target_logit
  correct_BxC = (target_logit >= m_BxC).astype(jnp.float32)  # ties count as correct (rare)
  loss_sum = jnp.sum(weight_BxC * nll_BxC) + z_loss * jnp.sum(zmask_BxC * logz_BxC**2)
  stats = (loss_sum, nll_BxC, logz_BxC, correct_BxC)
  if not with_grad:
    return stats, None
  # d loss_sum / d logits = (weight + 2 z logZ zmask) * softmax - weight * one_hot(target)
  coef_BxC = weight_BxC + 2.0 * z_loss * zmask_BxC * logz_BxC
  p_scale = (coef_BxC / s_BxC)[..., None]
  vocab_iota = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2)
  one_hot = jnp.where(vocab_iota == targets_BxC[..., None], weight_BxC[..., None], 0.0)
  dlogits = (e_BxCxV * p_scale - one_hot).astype(h_BxCxD.dtype)
  dlogits = nn.with_logical_constraint(dlogits, ("batch", "length", "vocab"))
  dh = jnp.einsum("bcv,dv->bcd", dlogits, w_DxV, preferred_element_type=jnp.float32)
  dw = jnp.einsum("bcd,bcv->dv", h_BxCxD, dlogits, preferred_element_type=jnp.float32)
  return stats, (dh, dw)


def _scan(h_BxTxD, w_DxV, targets_BxT, weight_BxT, zmask_BxT, z_loss, chunk, with_grad):
  b, t, d = h_BxTxD.shape
  c = t if chunk <= 0 or chunk >= t else chunk
  if t % c:
    raise ValueError(f"loss_chunk {c} must divide seq_len {t}")
  n = t // c

  def split(x):  # [B, T, ...] -> [n, B, C, ...]: each chunk keeps every (sharded) batch row
    return jnp.moveaxis(x.reshape((b, n, c) + x.shape[2:]), 1, 0)

  def merge(x):  # inverse of split
    return jnp.moveaxis(x, 0, 1).reshape((b, t) + x.shape[3:])

  def body(dw_acc, xs):
    h, targets, weight, zmask = xs
    stats, grads = _chunk(h, w_DxV, targets, weight, zmask, z_loss, with_grad)
    if grads is None:
      return dw_acc, (stats, None)
    return dw_acc + grads[1], (stats, grads[0])

  dw0 = jnp.zeros(w_DxV.shape, jnp.float32) if with_grad else None
  xs = (split(h_BxTxD), split(targets_BxT), split(weight_BxT), split(zmask_BxT))
  if n == 1:
    dw, (stats, dh) = body(dw0, jax.tree.map(lambda x: x[0], xs))
    stats = jax.tree.map(lambda x: x[None], stats)
    dh = None if dh is None else dh[None]
  else:
    dw, (stats, dh) = jax.lax.scan(body, dw0, xs)
  loss_sum, nll, logz, correct = stats
  outputs = (jnp.sum(loss_sum), merge(nll), merge(logz), merge(correct))
  if not with_grad:
    return outputs, None
  return outputs, (merge(dh).astype(h_BxTxD.dtype), dw.astype(w_DxV.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def fused_cross_entropy(h_BxTxD, w_DxV, targets_BxT, weight_BxT, zmask_BxT, z_loss=0.0, chunk=0):
  """-> (loss_sum, nll_BxT, logz_BxT, correct_BxT). Differentiable in h and w through loss_sum
  only; the per-token stats are metrics (their cotangents are ignored)."""
  outputs, _ = _scan(h_BxTxD, w_DxV, targets_BxT, weight_BxT, zmask_BxT, z_loss, chunk, False)
  return outputs


def _fwd(h, w, targets, weight, zmask, z_loss, chunk):
  return _scan(h, w, targets, weight, zmask, z_loss, chunk, True)


def _bwd(z_loss, chunk, residuals, cotangents):
  dh, dw = residuals
  g = cotangents[0]
  return (g.astype(dh.dtype) * dh, g.astype(dw.dtype) * dw, None, None, None)


fused_cross_entropy.defvjp(_fwd, _bwd)


def reference_cross_entropy(logits_BxTxV, targets_BxT, weight_BxT, zmask_BxT, z_loss=0.0):
  """Plain autodiff version over full logits (tests compare the fused one against it)."""
  logits = logits_BxTxV.astype(jnp.float32)
  logz = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets_BxT[..., None], axis=-1)[..., 0]
  nll = logz - target_logit
  correct = (jnp.argmax(logits, axis=-1) == targets_BxT).astype(jnp.float32)
  loss_sum = jnp.sum(weight_BxT * nll) + z_loss * jnp.sum(zmask_BxT * logz**2)
  return loss_sum, nll, logz, correct
