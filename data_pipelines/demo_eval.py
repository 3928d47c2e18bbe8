"""The demo corpus's evaluation scorers, registered with mio_jax/evaluation/registry.py on import
(`python -m mio_jax.evaluate` imports this module by default; see `--plugins`).

Captions (image and video) are scored by the shapes-world words they contain: per ground-truth
object, its colour / shape / size word and its place phrase. Generated images go through the pixel
classifier (shapes_classifier.py) and are scored against the prompted objects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from data_pipelines import shapes_classifier as shapes
from data_pipelines import shapes_world as world
from mio_jax.evaluation import registry
from mio_jax.evaluation.scores import Counts, normalize, words

# Place phrases, longest first so "the top left" is never read as "the top".
_PLACE_OF = {phrase: cell for cell, phrase in world.PLACES.items()}
_PLACE_RE = re.compile(
  r"\b(" + "|".join(sorted(map(re.escape, _PLACE_OF), key=len, reverse=True)) + r")\b"
)


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
  """ "a small cyan circle moves from the left to the top": object words, start and end place."""
  out = caption_counts(prediction, [attrs["object"]])
  out.pop("position")
  cells = places(prediction)
  out["start"] = (float(len(cells) > 0 and cells[0] == tuple(attrs["object"]["cell"])), 1.0)
  out["end"] = (float(len(cells) > 1 and cells[1] == tuple(attrs["end"])), 1.0)
  num = sum(out[k][0] for k in ("colour", "shape", "size", "start", "end"))
  out["attribute_accuracy"] = (num, 5.0)
  return out


def describe(detections) -> str:
  """Detected objects as text: "large red circle at (0, 1) and ..."."""
  return " and ".join(
    f"{d['size']} {d['colour']} {d['shape']} at {tuple(d['cell'])}" for d in detections or ()
  )


def image_counts(detections, objects) -> Counts:
  """shapes_classifier.image_counts; no image (None) scores as nothing detected."""
  return shapes.image_counts(detections or [], objects)


registry.register(
  "image_captioning",
  registry.Scorer(
    keys=("colour", "shape", "size", "position", "attribute_accuracy"), counts=caption_counts
  ),
)
registry.register(
  "video_captioning",
  registry.Scorer(
    keys=("colour", "shape", "size", "start", "end", "attribute_accuracy"),
    counts=video_caption_counts,
  ),
)
registry.register(
  "text_to_image",
  registry.Scorer(
    keys=("colour", "shape", "size", "position", "attribute_accuracy", "object"),
    counts=image_counts,
    read=shapes.detect,
    describe=describe,
  ),
)
