"""Small building blocks: RMSNorm, rotary embeddings, SwiGLU MLP, logically partitioned params."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mio_jax.model.config import ModelConfig


def param_with_axes(module: nn.Module, name: str, init, shape, axes, dtype):
  """A parameter annotated with logical axis names (mapped to the mesh in mio_jax/sharding.py)."""
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def dense_init(config: ModelConfig):
  return nn.initializers.normal(stddev=config.init_std)


class RMSNorm(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD):
    cfg = self.config
    scale = param_with_axes(self, "scale", nn.initializers.ones, (x_BxLxD.shape[-1],), ("embed",),
                            jnp.dtype(cfg.param_dtype))
    # Statistics in f32 whatever the compute dtype (as HF Llama does).
    x = x_BxLxD.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + cfg.norm_eps)
    return (scale.astype(jnp.float32) * x).astype(cfg.dtype)


def rope(x_BxLxHxK, positions_BxL, theta: float):
  """Rotary embedding in the rotate-half convention of HF Llama (so HF weights import unpermuted)."""
  head_dim = x_BxLxHxK.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles_BxLxK2 = positions_BxL[..., None].astype(jnp.float32) * inv_freq
  sin = jnp.sin(angles_BxLxK2)[:, :, None, :]
  cos = jnp.cos(angles_BxLxK2)[:, :, None, :]
  x = x_BxLxHxK.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxHxK.dtype)


def dense(x, w, n_in: int = 1):
  """Contract the last `n_in` axes of x with the first `n_in` axes of w, as one 2-D matmul.

  XLA:CPU runs [B, T, D] @ [D, F] fast forward but its weight gradient (contracting B and T
  together) far slower than the same product on [B*T, D]; reshaping is free on every backend.
  """
  lead, k = x.shape[:x.ndim - n_in], w.shape[n_in:]
  x2 = x.reshape(-1, int(np.prod(x.shape[x.ndim - n_in:])))
  w2 = w.reshape(x2.shape[1], -1)
  return (x2 @ w2).reshape(lead + k)


class SwiGLU(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD):
    cfg = self.config
    d, f, pdt = cfg.d_model, cfg.ffn_dim, jnp.dtype(cfg.param_dtype)
    gate_DxF = param_with_axes(self, "gate", dense_init(cfg), (d, f), ("embed", "mlp"), pdt)
    up_DxF = param_with_axes(self, "up", dense_init(cfg), (d, f), ("embed", "mlp"), pdt)
    down_FxD = param_with_axes(self, "down", dense_init(cfg), (f, d), ("mlp", "embed"), pdt)
    x = x_BxLxD.astype(cfg.dtype)
    h_BxLxF = nn.silu(dense(x, gate_DxF.astype(cfg.dtype))) * dense(x, up_DxF.astype(cfg.dtype))
    h_BxLxF = nn.with_logical_constraint(h_BxLxF, ("batch", "length", "mlp"))
    return dense(h_BxLxF, down_FxD.astype(cfg.dtype))
