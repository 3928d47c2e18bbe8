"""The decoder: embedding → N × (RMSNorm, GQA attention, RMSNorm, SwiGLU) → RMSNorm → LM head.

Parameter tree (scanned layout; unscanned replaces `layers` with `layers_0` … `layers_{N-1}` and
drops the leading layer axis):

    embedding [V, D]                  layers/attention/{q [L,D,H,K], k,v [L,D,G,K], o [L,H,K,D]}
    layers/attention_norm/scale [L,D] layers/mlp/{gate,up [L,D,F], down [L,F,D]}
    layers/mlp_norm/scale [L,D]       final_norm/scale [D]     lm_head [D, V]
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mio_jax.model.architecture import ModelConfig
from mio_jax.model.attention import Attention
from mio_jax.model.layers import RMSNorm, SwiGLU, dense_init, param_with_axes

REMAT_POLICY = {
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.checkpoint_dots,
  "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
  "attn_out": jax.checkpoint_policies.save_only_these_names("attn_out"),
  # Weight-matmul outputs and the attention output: with splash nothing but elementwise ops
  # and the norms are recomputed (the kernel's residuals are named "attn_out" too).
  "dots_attn_out": jax.checkpoint_policies.save_from_both_policies(
    jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    jax.checkpoint_policies.save_only_these_names("attn_out"),
  ),
}


class Block(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, segment_ids, positions, kv_segments, index, layer_kv):
    cfg = self.config
    decode = None if layer_kv is None else (layer_kv, kv_segments, index)
    h, new_kv = Attention(cfg, name="attention")(
      RMSNorm(cfg, name="attention_norm")(x_BxTxD), segment_ids, positions, decode
    )
    x = x_BxTxD + h
    x = x + SwiGLU(cfg, name="mlp")(RMSNorm(cfg, name="mlp_norm")(x))
    return nn.with_logical_constraint(x, ("batch", "length", "embed")), new_kv


def block_class(cfg: ModelConfig):
  if cfg.remat_policy == "none":
    return Block
  # prevent_cse is only needed outside scan (scan already stops XLA from merging recomputation).
  return nn.remat(Block, policy=REMAT_POLICY[cfg.remat_policy], prevent_cse=not cfg.scan_layers)


class Transformer(nn.Module):
  """`apply({'params': p}, tokens, segment_ids, positions)` → f32 logits [B, T, V].

  With `cache=` (from `init_cache`) it also returns the updated cache: prefill with the prompt,
  then call with one token at a time. `return_hidden=True` returns the final-norm hidden states
  instead of logits (for a loss that applies the LM head in chunks).
  """

  config: ModelConfig

  @nn.compact
  def __call__(
    self, tokens_BxT, segment_ids_BxT=None, positions_BxT=None, cache=None, return_hidden=False
  ):
    cfg = self.config
    if segment_ids_BxT is None:
      segment_ids_BxT = jnp.ones_like(tokens_BxT, dtype=jnp.int32)
    if positions_BxT is None:
      # With a cache the new tokens continue the sequence already stored there.
      start = 0 if cache is None else cache["index"]
      positions_BxT = jnp.broadcast_to(
        start + jnp.arange(tokens_BxT.shape[1], dtype=jnp.int32), tokens_BxT.shape
      )
    embedding = param_with_axes(
      self,
      "embedding",
      nn.initializers.normal(stddev=cfg.init_std),
      (cfg.vocab_size, cfg.d_model),
      ("vocab", "embed"),
      jnp.dtype(cfg.param_dtype),
    )
    x = jnp.take(embedding, tokens_BxT, axis=0).astype(cfg.dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

    index = kv_segments = layer_kv = None
    if cache is not None:
      index = cache["index"]
      kv_segments = jax.lax.dynamic_update_slice_in_dim(
        cache["segment_ids"], segment_ids_BxT, index, axis=1
      )
      layer_kv = {"k": cache["k"], "v": cache["v"]}

    block = block_class(cfg)
    if cfg.scan_layers:
      stack = nn.scan(
        block,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=(nn.broadcast,) * 4 + (0,),
        out_axes=0,
        length=cfg.n_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
      )
      x, new_kv = stack(cfg, name="layers")(
        x, segment_ids_BxT, positions_BxT, kv_segments, index, layer_kv
      )
    else:
      per_layer = []
      for i in range(cfg.n_layers):
        kv_i = None if layer_kv is None else jax.tree.map(lambda a, i=i: a[i], layer_kv)
        x, kv_i = block(cfg, name=f"layers_{i}")(
          x, segment_ids_BxT, positions_BxT, kv_segments, index, kv_i
        )
        per_layer.append(kv_i)
      new_kv = None if layer_kv is None else jax.tree.map(lambda *a: jnp.stack(a), *per_layer)

    x = RMSNorm(cfg, name="final_norm")(x)
    if return_hidden:
      out = x
    else:
      lm_head = param_with_axes(
        self,
        "lm_head",
        dense_init(cfg),
        (cfg.d_model, cfg.vocab_size),
        ("embed", "vocab"),
        jnp.dtype(cfg.param_dtype),
      )
      out = jnp.einsum(
        "btd,dv->btv", x, lm_head.astype(cfg.dtype), preferred_element_type=jnp.float32
      )
      out = nn.with_logical_constraint(out, ("batch", "length", "vocab"))
    if cache is None:
      return out
    t = tokens_BxT.shape[1]
    return out, {**new_kv, "segment_ids": kv_segments, "index": index + t}


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=None):
  """An empty KV cache for `max_len` tokens (prompt + generated)."""
  dtype = jnp.dtype(dtype or cfg.dtype)
  shape = (cfg.n_layers, batch, max_len, cfg.n_kv_heads, cfg.head_dim)
  return {
    "k": jnp.zeros(shape, dtype),
    "v": jnp.zeros(shape, dtype),
    "segment_ids": jnp.zeros((batch, max_len), jnp.int32),
    "index": jnp.zeros((), jnp.int32),
  }
