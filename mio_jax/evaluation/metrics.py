"""Scores as (numerator, denominator) counts, so corpus-level rates and chance levels share one path.

A scorer maps (prediction, reference) → {name: (num, den)}; `summarise` sums counts over examples
and divides (corpus-level WER = all edits / all reference words, as is standard).

Chance level (`chance`): the score of predictions that ignore the input but follow the data's
distribution — reference j used as the prediction for example i, averaged over all pairs i != j
(optionally only within a group, e.g. the same question). It needs no model and is computed on the
very references being evaluated, so it moves with `--limit` and with the data set.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from data_pipelines import shapes_world as world

Counts = dict  # name -> (num, den)


def summarise(counts: Sequence[Counts]) -> dict[str, float | None]:
  total: dict[str, list[float]] = {}
  for c in counts:
    for name, (num, den) in c.items():
      t = total.setdefault(name, [0.0, 0.0])
      t[0] += num
      t[1] += den
  return {name: (num / den if den else None) for name, (num, den) in total.items()}


def chance(score: Callable, predictions_from_refs: Sequence, refs: Sequence,
           groups: Sequence | None = None) -> dict[str, float | None] | None:
  """Mean of `score(predictions_from_refs[j], refs[i])` over i != j (same group only, if given).
  None when there is no such pair (fewer than two examples)."""
  counts = [score(predictions_from_refs[j], refs[i])
            for i in range(len(refs)) for j in range(len(refs))
            if i != j and (groups is None or groups[i] == groups[j])]
  return summarise(counts) if counts else None


# ---- words -----------------------------------------------------------------------------------
def normalize(text: str) -> str:
  """Lower case, punctuation to spaces (apostrophes kept), single spaces: what WER compares."""
  text = re.sub(r"[^\w\s']", " ", text.lower())
  return " ".join(text.split())


def words(text: str) -> list[str]:
  return normalize(text).split()


def edit_distance(a: Sequence, b: Sequence) -> int:
  """Levenshtein distance between two sequences (substitution = insertion = deletion = 1)."""
  prev = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    cur = [i]
    for j, y in enumerate(b, 1):
      cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
    prev = cur
  return prev[-1]


def wer_counts(prediction: str, reference: str) -> Counts:
  ref = words(reference)
  return {"wer": (edit_distance(ref, words(prediction)), len(ref))}


def wer(predictions: Sequence[str], references: Sequence[str]) -> float | None:
  """Corpus word error rate: total word edits / total reference words."""
  return summarise([wer_counts(p, r) for p, r in zip(predictions, references)])["wer"]


def exact_counts(prediction: str, reference: str) -> Counts:
  return {"exact_match": (float(normalize(prediction) == normalize(reference)), 1.0)}


# ---- shapes-world captions ---------------------------------------------------------------------
# Place phrases, longest first so "the top left" is never read as "the top".
_PLACE_OF = {phrase: cell for cell, phrase in world.PLACES.items()}
_PLACE_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _PLACE_OF), key=len, reverse=True)) + r")\b")


def places(text: str) -> list[tuple[int, int]]:
  """Grid cells named in `text`, in order ("at the top left" → (0, 0))."""
  return [_PLACE_OF[m.group(1)] for m in _PLACE_RE.finditer(normalize(text))]


def caption_counts(prediction: str, objects: Sequence[dict]) -> Counts:
  """Per ground-truth object: is its colour / shape / size word, and its position, in the caption?
  (Word presence: binding a colour to the right shape is not checked.)"""
  said, cells = set(words(prediction)), set(places(prediction))
  n = float(len(objects))
  hits = {k: sum(o[k] in said for o in objects) for k in ("colour", "shape", "size")}
  hits["position"] = sum(tuple(o["cell"]) in cells for o in objects)
  out = {k: (float(v), n) for k, v in hits.items()}
  out["attribute_accuracy"] = (float(sum(hits.values())), 4 * n)
  return out


def video_caption_counts(prediction: str, attrs: dict) -> Counts:
  """"a small cyan circle moves from the left to the top": object words, start and end place."""
  out = caption_counts(prediction, [attrs["object"]])
  out.pop("position")
  cells = places(prediction)
  out["start"] = (float(len(cells) > 0 and cells[0] == tuple(attrs["object"]["cell"])), 1.0)
  out["end"] = (float(len(cells) > 1 and cells[1] == tuple(attrs["end"])), 1.0)
  num = sum(out[k][0] for k in ("colour", "shape", "size", "start", "end"))
  out["attribute_accuracy"] = (num, 5.0)
  return out


def cider(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float | None:
  """CIDEr-D via `pycocoevalcap` (pip install pycocoevalcap) when installed, else None."""
  try:
    from pycocoevalcap.cider.cider import Cider
  except ImportError:
    return None
  gts = {i: [normalize(r) for r in refs] for i, refs in enumerate(references)}
  res = {i: [normalize(p) or "empty"] for i, p in enumerate(predictions)}
  score, _ = Cider().compute_score(gts, res)
  return float(score)


def mean_or_none(values) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None
