"""Token choice from logits: repetition penalty, temperature, top-k, top-p, greedy.

Settings are per modality (text / image / speech, indexed by the constraint state's mode), packed
into a small table of arrays so one jitted decode loop serves every setting without recompiling.
Processing order follows Hugging Face `generate`: penalty → temperature → top-k → top-p → sample.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

MODALITY_KEYS = ("text", "image", "speech")  # row order = constraints.*_MODE


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  temperature: float = 1.0  # 0 = greedy (argmax)
  top_k: int = 0  # 0 = off
  top_p: float = 1.0  # 1 = off
  repetition_penalty: float = 1.0  # 1 = off; >1 lowers already-seen tokens (prompt + generated)

  def __post_init__(self):
    if (
      self.temperature < 0
      or self.top_k < 0
      or not 0 < self.top_p <= 1
      or self.repetition_penalty <= 0
    ):
      raise ValueError(f"invalid {self}")


GREEDY = SamplingConfig(temperature=0.0)
Sampling = SamplingConfig | Mapping[str, SamplingConfig]


def mio_sampling() -> dict[str, SamplingConfig]:
  """MIO's decoding (paper §4): text greedy here (beam 5 via `beam_size=5`), image top-p 0.7 with
  repetition penalty 1.0, speech top-p 0.7 with repetition penalty 1.15."""
  return {
    "text": GREEDY,
    "image": SamplingConfig(top_p=0.7, repetition_penalty=1.0),
    "speech": SamplingConfig(top_p=0.7, repetition_penalty=1.15),
  }


class SamplingTable(NamedTuple):
  """One entry per modality (text, image, speech); each [3]."""

  temperature: jnp.ndarray
  top_k: jnp.ndarray
  top_p: jnp.ndarray
  repetition_penalty: jnp.ndarray


def per_modality(sampling: Sampling) -> tuple[SamplingConfig, ...]:
  if isinstance(sampling, SamplingConfig):
    return (sampling,) * len(MODALITY_KEYS)
  unknown = set(sampling) - set(MODALITY_KEYS)
  if unknown:
    raise ValueError(f"unknown sampling modalities {sorted(unknown)}; known: {MODALITY_KEYS}")
  return tuple(sampling.get(k, SamplingConfig()) for k in MODALITY_KEYS)


def make_table(sampling: Sampling) -> SamplingTable:
  cfgs = per_modality(sampling)
  return SamplingTable(
    np.asarray([c.temperature for c in cfgs], np.float32),
    np.asarray([c.top_k for c in cfgs], np.int32),
    np.asarray([c.top_p for c in cfgs], np.float32),
    np.asarray([c.repetition_penalty for c in cfgs], np.float32),
  )


@dataclasses.dataclass(frozen=True)
class SamplingFeatures:
  """Static switches so the common cases (greedy, no penalty) skip sorting and bookkeeping."""

  filtering: bool  # any top-k / top-p
  penalty: bool  # any repetition penalty != 1
  random: bool = True  # any temperature > 0 (else argmax only: no [B, V] random draws)

  @classmethod
  def of(cls, sampling: Sampling) -> SamplingFeatures:
    cfgs = per_modality(sampling)
    random = any(c.temperature > 0 for c in cfgs)
    return cls(
      filtering=random and any(c.top_k > 0 or c.top_p < 1 for c in cfgs),
      penalty=any(c.repetition_penalty != 1 for c in cfgs),
      random=random,
    )


def apply_repetition_penalty(logits_BxV, seen_BxV, penalty_B):
  """CTRL-style penalty (as HF): seen tokens' positive logits are divided, negative multiplied."""
  p = penalty_B[:, None]
  penalized = jnp.where(logits_BxV > 0, logits_BxV / p, logits_BxV * p)
  return jnp.where(seen_BxV, penalized, logits_BxV)


def filter_top_k_top_p(logits_BxV, top_k_B, top_p_B):
  """Set logits outside the top-k and outside the smallest top-p nucleus to -inf (one sort)."""
  vocab = logits_BxV.shape[-1]
  sorted_BxV = -jnp.sort(-logits_BxV, axis=-1)
  rank_V = jnp.arange(vocab)
  k_B = jnp.where(top_k_B > 0, jnp.minimum(top_k_B, vocab), vocab)
  sorted_BxV = jnp.where(rank_V[None] < k_B[:, None], sorted_BxV, -jnp.inf)
  probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
  # Keep a token if the mass strictly before it is below p: the top token is always kept.
  mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
  keep_BxV = (mass_before_BxV < top_p_B[:, None]) & (rank_V[None] < k_B[:, None])
  kept_BxV = jnp.where(keep_BxV, sorted_BxV, jnp.inf)
  threshold_B = jnp.min(kept_BxV, axis=-1)
  return jnp.where(logits_BxV >= threshold_B[:, None], logits_BxV, -jnp.inf)


def argmax_last(x_BxV):
  """argmax over the last axis (first index on ties, as jnp.argmax), as two plain reductions: XLA
  CPU runs jnp.argmax's (value, index) reduction unvectorised, 5x slower over a 76k vocab, which
  was ~10 % of a decode step."""
  top = jnp.max(x_BxV, axis=-1, keepdims=True)
  iota = jax.lax.broadcasted_iota(jnp.int32, x_BxV.shape, x_BxV.ndim - 1)
  return jnp.min(jnp.where(x_BxV == top, iota, x_BxV.shape[-1]), axis=-1).astype(jnp.int32)


def choose_tokens(
  rng,
  logits_BxV,
  allowed_BxV,
  mode_B,
  table: SamplingTable,
  features: SamplingFeatures,
  seen_BxV=None,
):
  """Pick one token per row. Rows whose temperature is 0 take the argmax (no randomness)."""
  row = lambda a: jnp.take(jnp.asarray(a), mode_B)
  logits = logits_BxV.astype(jnp.float32)
  if features.penalty:
    logits = apply_repetition_penalty(logits, seen_BxV, row(table.repetition_penalty))
  logits = jnp.where(allowed_BxV, logits, -jnp.inf)
  argmax_B = argmax_last(logits)
  if not features.random:
    return argmax_B
  temperature_B = row(table.temperature)
  greedy_B = temperature_B <= 0
  scaled = logits / jnp.where(greedy_B, 1.0, temperature_B)[:, None]
  if features.filtering:
    scaled = filter_top_k_top_p(scaled, row(table.top_k), row(table.top_p))
  # = jax.random.categorical(rng, scaled): the same Gumbel draws, the faster argmax.
  sampled_B = argmax_last(scaled + jax.random.gumbel(rng, scaled.shape, scaled.dtype))
  return jnp.where(greedy_B, argmax_B, sampled_B).astype(jnp.int32)


def mark_seen(seen_BxV, tokens_B, valid_B=None):
  """Add tokens to the per-row set used by the repetition penalty."""
  rows = jnp.arange(seen_BxV.shape[0])
  value = True if valid_B is None else valid_B
  return seen_BxV.at[rows, tokens_B].max(value)


def seen_in_prompt(prompt_BxT, segment_ids_BxT, vocab_size: int):
  """[B, V] bool: ids present in each prompt's real (non-pad) tokens."""
  rows_BxT = jnp.broadcast_to(jnp.arange(prompt_BxT.shape[0])[:, None], prompt_BxT.shape)
  return (
    jnp.zeros((prompt_BxT.shape[0], vocab_size), bool)
    .at[rows_BxT, prompt_BxT]
    .max(segment_ids_BxT > 0)
  )
