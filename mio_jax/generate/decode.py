"""Jitted prefill + KV-cache sampling loop with constraints and classifier-free guidance.

Shapes are fixed: prompts are left-padded to [B, T] (segment id 0 on pads, positions starting at 0
at each prompt's first real token), the cache holds T + max_new_tokens, and a `lax.while_loop`
emits one token per row per step until every row has stopped or the budget is spent.

CFG: the null prompts run as B extra rows in the same batch; on rows inside an image span the
logits become `cond + (scale - 1) * (cond - null)` (= `null + scale * (cond - null)`, written so
that scale 1 reproduces the conditional logits bit for bit). Both halves are fed the same token.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from mio_jax.generate import constraints as cons
from mio_jax.generate import sampling as smp
from mio_jax.model.architecture import ModelConfig
from mio_jax.model.transformer import Transformer, init_cache


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
  """Everything static about one decode call (a jit static argument)."""

  model: ModelConfig
  constraints: cons.Constraints
  max_new_tokens: int
  features: smp.SamplingFeatures
  use_cfg: bool = False


def prompt_positions(segment_ids_BxT):
  """Per-row positions starting at 0 at the first real token (left padding stays at 0)."""
  return jnp.maximum(jnp.cumsum(segment_ids_BxT > 0, axis=1) - 1, 0).astype(jnp.int32)


def prefill(params, model_cfg: ModelConfig, tokens_RxT, segment_ids_RxT, max_len: int):
  """Run the prompt through the model; returns (last logits [R, V], cache, prompt lengths [R])."""
  cache = init_cache(model_cfg, tokens_RxT.shape[0], max_len)
  logits, cache = Transformer(model_cfg).apply(
    {"params": params}, tokens_RxT, segment_ids_RxT, prompt_positions(segment_ids_RxT), cache=cache
  )
  # Left padding puts every prompt's last real token in the last column.
  return logits[:, -1], cache, jnp.sum(segment_ids_RxT > 0, axis=1).astype(jnp.int32)


def step_forward(params, model_cfg: ModelConfig, cache, token_R, position_R):
  """One decode step for all rows: returns (logits [R, V], cache)."""
  ones = jnp.ones_like(token_R)[:, None]
  logits, cache = Transformer(model_cfg).apply(
    {"params": params}, token_R[:, None], ones, position_R[:, None], cache=cache
  )
  return logits[:, 0], cache


def guided_logits(logits_RxV, mode_B, cfg_scale, use_cfg: bool):
  """Conditional logits [B, V], with CFG applied on image-span rows when `use_cfg`."""
  if not use_cfg:
    return logits_RxV
  b = mode_B.shape[0]
  cond, null = logits_RxV[:b], logits_RxV[b:]
  guided = cond + (cfg_scale - 1.0) * (cond - null)
  return jnp.where((mode_B == cons.IMAGE_MODE)[:, None], guided, cond)


@functools.partial(jax.jit, static_argnames=("spec",))
def decode(
  params,
  prompt_BxT,
  segment_ids_BxT,
  rng,
  table: smp.SamplingTable,
  cfg_scale=1.0,
  null_prompt_BxT=None,
  null_segment_ids_BxT=None,
  *,
  spec: DecodeSpec,
):
  """Sample up to `spec.max_new_tokens` per prompt.

  Returns (tokens [B, max_new] with `<pad>` after each row's end, lengths [B]); a row's length
  counts its stop token (or closing span token in forced image/speech mode)."""
  c, n_new, mcfg = spec.constraints, spec.max_new_tokens, spec.model
  b, t = prompt_BxT.shape
  pad_id = c.vocab.special_id("<pad>")
  rows, row_segments = prompt_BxT, segment_ids_BxT
  if spec.use_cfg:
    rows = jnp.concatenate([prompt_BxT, null_prompt_BxT], axis=0)
    row_segments = jnp.concatenate([segment_ids_BxT, null_segment_ids_BxT], axis=0)
  logits_RxV, cache, prompt_len_R = prefill(params, mcfg, rows, row_segments, t + n_new)
  vocab_size = logits_RxV.shape[-1]

  state = cons.state_after_prompt(c, prompt_BxT, segment_ids_BxT)
  seen = None
  if spec.features.penalty:
    seen = smp.seen_in_prompt(prompt_BxT, segment_ids_BxT, vocab_size)

  def choose(step, logits_RxV, state, seen, done, rng):
    logits = guided_logits(logits_RxV, state.mode, cfg_scale, spec.use_cfg)
    allowed = cons.allowed_mask(c, state, n_new - step, vocab_size)
    token = smp.choose_tokens(rng, logits, allowed, state.mode, table, spec.features, seen)
    token = jnp.where(done, pad_id, token)
    live = ~done
    state = cons.advance(c, state, token, live)
    if seen is not None:
      seen = smp.mark_seen(seen, token, live)
    return token, state, seen, done | cons.finished(c, token)

  rng, key = jax.random.split(rng)
  done0 = jnp.zeros((b,), bool)
  token, state, seen, done = choose(0, logits_RxV, state, seen, done0, key)
  out = jnp.full((b, n_new), pad_id, jnp.int32).at[:, 0].set(token)

  def cond_fn(carry):
    step, done = carry[0], carry[5]
    return (step < n_new) & ~jnp.all(done)

  def body_fn(carry):
    step, token, cache, state, seen, done, out, rng = carry
    token_R = jnp.concatenate([token, token]) if spec.use_cfg else token
    logits_RxV, cache = step_forward(params, mcfg, cache, token_R, prompt_len_R + step - 1)
    rng, key = jax.random.split(rng)
    token, state, seen, done = choose(step, logits_RxV, state, seen, done, key)
    out = jax.lax.dynamic_update_slice_in_dim(out, token[:, None], step, axis=1)
    return step + 1, token, cache, state, seen, done, out, rng

  carry = (jnp.asarray(1, jnp.int32), token, cache, state, seen, done, out, rng)
  carry = jax.lax.while_loop(cond_fn, body_fn, carry)
  out = carry[6]
  lengths = jnp.sum(out != pad_id, axis=1).astype(jnp.int32)
  return out, lengths
