"""Per-step metrics: token-level stats → sums (add across micro-batches) → means (once per step).

Modalities follow `Vocab.modality_of(targets)`: a token's modality is that of the token it must
predict. Padding-range ids never appear as targets; they are folded out of the per-modality keys.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mio_jax.tokens.vocab import MODALITY_NAMES, Vocab

MODALITIES = MODALITY_NAMES[:4]  # text, special, image, speech


def token_weights(targets_BxT, loss_mask_BxT, vocab: Vocab, modality_weights: dict | None):
  """Loss weight per token: loss_mask, times a per-modality factor when configured (default 1)."""
  mask = loss_mask_BxT.astype(jnp.float32)
  if not modality_weights:
    return mask
  unknown = set(modality_weights) - set(MODALITIES)
  if unknown:
    raise ValueError(f"modality_loss_weights has unknown keys {sorted(unknown)}; use {MODALITIES}")
  table = jnp.asarray([float(modality_weights.get(m, 1.0)) for m in MODALITY_NAMES], jnp.float32)
  return mask * table[vocab.modality_of(targets_BxT)]


def metric_sums(nll_BxT, correct_BxT, targets_BxT, loss_mask_BxT, vocab: Vocab) -> dict:
  """Unnormalised sums over this (micro-)batch; every value is a f32 scalar so sums add up."""
  mask = loss_mask_BxT.astype(jnp.float32)
  modality = vocab.modality_of(targets_BxT)
  sums = {
    "tokens": jnp.sum(mask),
    "nll_sum": jnp.sum(mask * nll_BxT),
    "correct_sum": jnp.sum(mask * correct_BxT),
  }
  for code, name in enumerate(MODALITIES):
    m = mask * (modality == code)
    sums[f"tokens/{name}"] = jnp.sum(m)
    sums[f"nll_sum/{name}"] = jnp.sum(m * nll_BxT)
    sums[f"correct_sum/{name}"] = jnp.sum(m * correct_BxT)
  return sums


def finalize(sums: dict) -> dict:
  """Sums → step metrics: `loss` (train objective incl. weights and z-loss), `nll`, `accuracy`,
  `loss/<modality>`, `accuracy/<modality>`, `tokens/<modality>` (unnormalised)."""
  count = jnp.maximum(sums["tokens"], 1.0)
  out = {
    "loss": sums["loss_sum"] / count,
    "nll": sums["nll_sum"] / count,
    "accuracy": sums["correct_sum"] / count,
    "tokens": sums["tokens"],
  }
  for name in MODALITIES:
    n = sums[f"tokens/{name}"]
    # NaN-free: a modality absent from the batch reports 0 (its token count says so).
    out[f"loss/{name}"] = sums[f"nll_sum/{name}"] / jnp.maximum(n, 1.0)
    out[f"accuracy/{name}"] = sums[f"correct_sum/{name}"] / jnp.maximum(n, 1.0)
    out[f"tokens/{name}"] = n
  return out


def numpy_reference(logits_BxTxV, targets_BxT, loss_mask_BxT, vocab: Vocab) -> dict:
  """Straightforward numpy recomputation of `finalize(metric_sums(...))` (used by tests)."""
  logits = np.asarray(logits_BxTxV, np.float64)
  logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  nll = logz - np.take_along_axis(logits, targets_BxT[..., None], -1)[..., 0]
  correct = logits.argmax(-1) == targets_BxT
  modality = vocab.modality_of(np.asarray(targets_BxT))
  mask = np.asarray(loss_mask_BxT) > 0
  out = {"nll": nll[mask].mean(), "accuracy": correct[mask].mean(), "tokens": mask.sum()}
  for code, name in enumerate(MODALITIES):
    sel = mask & (modality == code)
    out[f"tokens/{name}"] = sel.sum()
    out[f"loss/{name}"] = nll[sel].mean() if sel.any() else 0.0
    out[f"accuracy/{name}"] = correct[sel].mean() if sel.any() else 0.0
  return out
