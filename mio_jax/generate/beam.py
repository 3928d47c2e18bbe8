"""Beam search for text (MIO decodes text with 5 beams), on the same KV cache and constraints.

Each prompt keeps K alive beams and a pool of K finished hypotheses. Every step takes the top 2K
extensions of the alive beams: those ending in a stop id (or reaching the budget) join the finished
pool, scored `sum log p / length ** length_penalty` (Hugging Face's convention); the best K others
stay alive. Log-probs are taken after the constraint mask (renormalised over allowed ids); the
repetition penalty then scales the log-probs of seen ids (all <= 0, so multiplied by the penalty),
as transformers' beam search (MIO's) applies it after its log_softmax. Search stops early once no
alive beam can beat the K-th finished hypothesis.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from mio_jax.generate import constraints as cons
from mio_jax.generate import decode as dec
from mio_jax.generate import sampling as smp
from mio_jax.model.architecture import ModelConfig

NEG_INF = -1e30  # finite: keeps score arithmetic NaN-free where -inf - -inf would appear


@dataclasses.dataclass(frozen=True)
class BeamSpec:
  model: ModelConfig
  constraints: cons.Constraints
  max_new_tokens: int
  beam_size: int
  length_penalty: float = 1.0
  penalty: bool = False  # any repetition penalty != 1


def _take_rows(cache, rows):
  """Reorder cache rows (beams) after selection; the index is shared and stays."""
  return {
    "k": jnp.take(cache["k"], rows, axis=1),
    "v": jnp.take(cache["v"], rows, axis=1),
    "segment_ids": jnp.take(cache["segment_ids"], rows, axis=0),
    "index": cache["index"],
  }


def _normalise(logp, length, alpha: float):
  return logp / jnp.asarray(length, jnp.float32) ** alpha


@functools.partial(jax.jit, static_argnames=("spec",))
def beam_search(params, prompt_BxT, segment_ids_BxT, repetition_penalty_3, *, spec: BeamSpec):
  """Returns (best tokens [B, max_new] padded with `<pad>`, lengths [B], normalised scores [B])."""
  c, n_new, k, alpha = spec.constraints, spec.max_new_tokens, spec.beam_size, spec.length_penalty
  b, t = prompt_BxT.shape
  pad_id = c.vocab.special_id("<pad>")
  logits_BxV, cache, prompt_len_B = dec.prefill(
    params, spec.model, prompt_BxT, segment_ids_BxT, t + n_new
  )
  vocab_size = logits_BxV.shape[-1]

  # Beams are rows b * K + j of every per-beam array.
  rep = lambda x, axis=0: jnp.repeat(x, k, axis=axis)
  cache = {
    "k": rep(cache["k"], 1),
    "v": rep(cache["v"], 1),
    "segment_ids": rep(cache["segment_ids"]),
    "index": cache["index"],
  }
  logits_NxV, prompt_len_N = rep(logits_BxV), rep(prompt_len_B)
  state = jax.tree.map(rep, cons.state_after_prompt(c, prompt_BxT, segment_ids_BxT))
  seen = None
  if spec.penalty:
    seen = rep(smp.seen_in_prompt(prompt_BxT, segment_ids_BxT, vocab_size))

  alive_seq = jnp.full((b, k, n_new), pad_id, jnp.int32)
  alive_logp = jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, NEG_INF), (b, 1))
  fin_seq = jnp.full((b, k, n_new), pad_id, jnp.int32)
  fin_score = jnp.full((b, k), NEG_INF)
  fin_len = jnp.zeros((b, k), jnp.int32)

  def body(carry):
    step, logits_NxV, cache, state, seen, alive_seq, alive_logp, fin_seq, fin_score, fin_len = carry
    allowed = cons.allowed_mask(c, state, n_new - step, vocab_size)
    logp_NxV = jax.nn.log_softmax(jnp.where(allowed, logits_NxV, -jnp.inf), axis=-1)
    if spec.penalty:  # on log-probs, as transformers' beam search applies its logits processors
      logp_NxV = smp.apply_repetition_penalty(
        logp_NxV, seen, jnp.take(repetition_penalty_3, state.mode)
      )
    logp_NxV = jnp.where(allowed, logp_NxV, NEG_INF)
    cand_BxKV = (alive_logp[:, :, None] + logp_NxV.reshape(b, k, vocab_size)).reshape(
      b, k * vocab_size
    )
    cand_logp, cand_idx = jax.lax.top_k(cand_BxKV, 2 * k)  # [B, 2K]
    parent, token = cand_idx // vocab_size, (cand_idx % vocab_size).astype(jnp.int32)
    valid = cand_logp > NEG_INF / 2
    ends = (cons.finished(c, token) | (step + 1 >= n_new)) & valid
    cand_seq = jnp.take_along_axis(alive_seq, parent[:, :, None], axis=1)
    cand_seq = jax.lax.dynamic_update_slice_in_dim(cand_seq, token[:, :, None], step, axis=2)

    # Finished pool: merge the K kept with this step's ending candidates, keep the best K.
    new_fin_score = jnp.where(ends, _normalise(cand_logp, step + 1, alpha), NEG_INF)
    pool_score = jnp.concatenate([fin_score, new_fin_score], axis=1)
    pool_seq = jnp.concatenate([fin_seq, cand_seq], axis=1)
    pool_len = jnp.concatenate([fin_len, jnp.full((b, 2 * k), step + 1, jnp.int32)], axis=1)
    fin_score, keep = jax.lax.top_k(pool_score, k)
    fin_seq = jnp.take_along_axis(pool_seq, keep[:, :, None], axis=1)
    fin_len = jnp.take_along_axis(pool_len, keep, axis=1)

    # Alive: the best K candidates that did not end.
    alive_cand = jnp.where(ends, NEG_INF, cand_logp)
    alive_logp, pick = jax.lax.top_k(alive_cand, k)
    alive_seq = jnp.take_along_axis(cand_seq, pick[:, :, None], axis=1)
    token_BxK = jnp.take_along_axis(token, pick, axis=1)
    src_N = (jnp.arange(b)[:, None] * k + jnp.take_along_axis(parent, pick, axis=1)).reshape(-1)
    token_N = token_BxK.reshape(-1)
    cache = _take_rows(cache, src_N)
    state = cons.advance(c, jax.tree.map(lambda x: x[src_N], state), token_N)
    if spec.penalty:
      seen = smp.mark_seen(seen[src_N], token_N)
    logits_NxV, cache = dec.step_forward(params, spec.model, cache, token_N, prompt_len_N + step)
    return (
      step + 1,
      logits_NxV,
      cache,
      state,
      seen,
      alive_seq,
      alive_logp,
      fin_seq,
      fin_score,
      fin_len,
    )

  def cond(carry):
    step, alive_logp, fin_score = carry[0], carry[6], carry[8]
    # Optimistic bound for an alive beam: its log-prob can only fall; length can grow to n_new.
    best_len = jnp.where(alpha > 0, n_new, step + 1)
    bound = _normalise(jnp.max(alive_logp, axis=1), best_len, alpha)
    can_improve = (bound > jnp.min(fin_score, axis=1)) & (jnp.max(alive_logp, axis=1) > NEG_INF / 2)
    return (step < n_new) & jnp.any(can_improve)

  carry = (
    jnp.asarray(0, jnp.int32),
    logits_NxV,
    cache,
    state,
    seen,
    alive_seq,
    alive_logp,
    fin_seq,
    fin_score,
    fin_len,
  )
  carry = jax.lax.while_loop(cond, body, carry)
  fin_seq, fin_score, fin_len = carry[7], carry[8], carry[9]
  best = jnp.argmax(fin_score, axis=1)
  take = lambda x: jnp.take_along_axis(x, best.reshape((b,) + (1,) * (x.ndim - 1)), axis=1)[:, 0]
  return take(fin_seq), take(fin_len), take(fin_score)
