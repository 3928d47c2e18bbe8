"""Small building blocks: RMSNorm, rotary embeddings, SwiGLU MLP, logically partitioned params."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mio_jax.model.architecture import ModelConfig


def param_with_axes(module: nn.Module, name: str, init, shape, axes, dtype):
  """A parameter annotated with logical axis names (mapped to the mesh in
  mio_jax/parallel/sharding.py)."""
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def dense_init(config: ModelConfig):
  return nn.initializers.normal(stddev=config.init_std)


def _rms_norm_fwd(x_BxTxD, scale_D, eps: float, dtype):
  # Statistics in f32 whatever the compute dtype (as HF Llama does).
  x = x_BxTxD.astype(jnp.float32)
  inv_BxTx1 = jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
  y_BxTxD = (scale_D.astype(jnp.float32) * (x * inv_BxTx1)).astype(dtype)
  return y_BxTxD, (x_BxTxD, scale_D, inv_BxTx1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def rms_norm(x_BxTxD, scale_D, eps: float, dtype):
  """scale * x / rms(x). The backward keeps x (already kept as the residual stream) and 1/rms
  and recomputes x/rms: autodiff kept x/rms as well, one more [.., D] array per norm."""
  return _rms_norm_fwd(x_BxTxD, scale_D, eps, dtype)[0]


def _rms_norm_bwd(eps, dtype, residuals, dy_BxTxD):
  del eps, dtype
  x, scale, inv = residuals
  n = x.astype(jnp.float32) * inv
  dn = dy_BxTxD.astype(jnp.float32) * scale.astype(jnp.float32)
  dx = inv * (dn - n * jnp.mean(dn * n, axis=-1, keepdims=True))
  dscale = jnp.sum((dy_BxTxD.astype(jnp.float32) * n).reshape(-1, n.shape[-1]), axis=0)
  return dx.astype(x.dtype), dscale.astype(scale.dtype)


rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


class RMSNorm(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    cfg = self.config
    scale = param_with_axes(
      self,
      "scale",
      nn.initializers.ones,
      (x_BxTxD.shape[-1],),
      ("embed",),
      jnp.dtype(cfg.param_dtype),
    )
    return rms_norm(x_BxTxD, scale, cfg.norm_eps, jnp.dtype(cfg.dtype))


def rope(x_BxTxHxK, positions_BxT, theta: float):
  """Rotary embedding in the rotate-half convention of HF Llama (so HF weights import
  unpermuted)."""
  head_dim = x_BxTxHxK.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles_BxTxK2 = positions_BxT[..., None].astype(jnp.float32) * inv_freq
  sin = jnp.sin(angles_BxTxK2)[:, :, None, :]
  cos = jnp.cos(angles_BxTxK2)[:, :, None, :]
  x = x_BxTxHxK.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxHxK.dtype)


def dense(x, w, n_in: int = 1):
  """Contract the last `n_in` axes of x with the first `n_in` axes of w, as one 2-D matmul.

  XLA:CPU runs [B, T, D] @ [D, F] fast forward but its weight gradient (contracting B and T
  together) far slower than the same product on [B*T, D]; reshaping is free on every backend.
  """
  lead, k = x.shape[: x.ndim - n_in], w.shape[n_in:]
  x2 = x.reshape(-1, int(np.prod(x.shape[x.ndim - n_in :])))
  w2 = w.reshape(x2.shape[1], -1)
  return (x2 @ w2).reshape(lead + k)


def _matmul_t(a_MxK, b_MxN):
  """a^T @ b over the merged leading axes (a weight gradient), as one 2-D matmul."""
  return a_MxK.reshape(-1, a_MxK.shape[-1]).T @ b_MxN.reshape(-1, b_MxN.shape[-1])


def _swiglu_fwd(x_BxTxD, gate_up_Dx2xF, down_FxD):
  gu_BxTx2xF = dense(x_BxTxD, gate_up_Dx2xF)
  g, u = gu_BxTx2xF[..., 0, :], gu_BxTx2xF[..., 1, :]
  h_BxTxF = nn.with_logical_constraint(nn.silu(g) * u, ("batch", "length", "mlp"))
  return dense(h_BxTxF, down_FxD), (x_BxTxD, gate_up_Dx2xF, down_FxD, gu_BxTx2xF)


@jax.custom_vjp
def swiglu(x_BxTxD, gate_up_Dx2xF, down_FxD):
  """down(silu(x @ gate) * (x @ up)) with gate and up stacked into one matmul ([D, 2, F] keeps
  each F column on its `mlp` shard). The backward keeps only x and the [.., 2, F] product and
  recomputes the activation: autodiff kept five [.., F] arrays per layer."""
  return _swiglu_fwd(x_BxTxD, gate_up_Dx2xF, down_FxD)[0]


def _swiglu_bwd(residuals, dy_BxTxD):
  x, gate_up, down, gu = residuals
  g, u = gu[..., 0, :], gu[..., 1, :]
  sig = jax.nn.sigmoid(g)
  silu = g * sig
  dh = dense(dy_BxTxD, down.T)
  dgu = jnp.stack([dh * u * (sig * (1 + g * (1 - sig))), dh * silu], axis=-2)
  dgu = nn.with_logical_constraint(dgu, ("batch", "length", None, "mlp"))
  d_gate_up = _matmul_t(x, dgu.reshape(dgu.shape[:-2] + (-1,))).reshape(gate_up.shape)
  dx = dense(dgu, jnp.transpose(gate_up, (1, 2, 0)), n_in=2)
  return dx, d_gate_up, _matmul_t(silu * u, dy_BxTxD)


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


class SwiGLU(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    cfg = self.config
    d, f, pdt = cfg.d_model, cfg.ffn_dim, jnp.dtype(cfg.param_dtype)
    gate_DxF = param_with_axes(self, "gate", dense_init(cfg), (d, f), ("embed", "mlp"), pdt)
    up_DxF = param_with_axes(self, "up", dense_init(cfg), (d, f), ("embed", "mlp"), pdt)
    down_FxD = param_with_axes(self, "down", dense_init(cfg), (f, d), ("mlp", "embed"), pdt)
    gate_up = jnp.stack([gate_DxF.astype(cfg.dtype), up_DxF.astype(cfg.dtype)], axis=1)
    return swiglu(x_BxTxD.astype(cfg.dtype), gate_up, down_FxD.astype(cfg.dtype))
