"""Scores as (numerator, denominator) counts, so corpus-level rates and chance levels share one
path.

A scorer maps (prediction, reference) → {name: (num, den)}; `summarise` sums counts over examples
and divides (corpus-level WER = all edits / all reference words, as is standard).

Chance level (`chance`): the score of predictions that ignore the input but follow the data's
distribution — reference j used as the prediction for example i, averaged over all pairs i != j
(optionally only within a group, e.g. the same question). It needs no model and is computed on the
very references being evaluated, so it moves with `--limit` and with the data set.

Scorers that know a data set (the demo's shapes-world captions) plug in through registry.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from mio_jax.evaluation import standard_metrics as standard

Counts = dict  # name -> (num, den)


def summarise(counts: Sequence[Counts]) -> dict[str, float | None]:
  total: dict[str, list[float]] = {}
  for c in counts:
    for name, (num, den) in c.items():
      t = total.setdefault(name, [0.0, 0.0])
      t[0] += num
      t[1] += den
  return {name: (num / den if den else None) for name, (num, den) in total.items()}


def chance(
  score: Callable, predictions_from_refs: Sequence, refs: Sequence, groups: Sequence | None = None
) -> dict[str, float | None] | None:
  """Mean of `score(predictions_from_refs[j], refs[i])` over i != j (same group only, if given).
  None when there is no such pair (fewer than two examples)."""
  counts = [
    score(predictions_from_refs[j], refs[i])
    for i in range(len(refs))
    for j in range(len(refs))
    if i != j and (groups is None or groups[i] == groups[j])
  ]
  return summarise(counts) if counts else None


# ---- words -----------------------------------------------------------------------------------
def normalize(text: str) -> str:
  """Lower case, punctuation to spaces (apostrophes kept), single spaces: what WER compares."""
  text = re.sub(r"[^\w\s']", " ", text.lower())
  return " ".join(text.split())


def words(text: str) -> list[str]:
  return normalize(text).split()


def wer_counts(prediction: str, reference: str) -> Counts:
  """{"wer": (edits, reference words)}: jiwer's alignment after `normalize` (the demo's light
  normaliser; `wer_norm` uses the Whisper-style English one, standard_metrics.py)."""
  if not words(reference):
    return {"wer": (len(words(prediction)), 0)}
  return standard.wer_counts(prediction, reference, normalize=normalize)


def wer(predictions: Sequence[str], references: Sequence[str]) -> float | None:
  """Corpus word error rate: total word edits / total reference words."""
  return summarise([wer_counts(p, r) for p, r in zip(predictions, references)])["wer"]


def exact_counts(prediction: str, reference: str) -> Counts:
  return {"exact_match": (float(normalize(prediction) == normalize(reference)), 1.0)}


def cider(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float | None:
  """CIDEr-D of pycocoevalcap on PTB-tokenised captions (standard_metrics.caption_scores)."""
  if not predictions:
    return None
  return standard.caption_scores(predictions, references)["cider"]


def mean_or_none(values) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None
