"""A pixel-statistics classifier for shapes-world images: which coloured shapes are where.

Used to score text-to-image generation on the demo corpus without a learned model:

1. foreground = pixels far from the background colour; objects = its 4-connected components
   (shapes in neighbouring cells never touch: a large shape's radius is under half a cell);
2. colour = the palette colour most of the component's pixels are nearest to;
3. cell = the grid cell of the component's bounding-box centre;
4. shape and size = the (shape, size) whose ideal silhouette, drawn by the corpus's own renderer at
   the cell centre and at the box centre, overlaps the component best (intersection over union).

Its accuracy on ground-truth images (and on the image tokenizer's reconstructions of them, the
best a generated image can look) is measured by tests/test_evaluate.py and reported by evaluate.
Registered with mio_jax's evaluation by data_pipelines/demo_eval.py.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from data_pipelines import shapes_world as world

_PALETTE = np.asarray(list(world.COLOURS.values()), np.float32)  # [C, 3]
_NAMES = list(world.COLOURS)
# RGB distance from the background; the darkest palette colour is > 150 away.
FOREGROUND_DISTANCE = 60.0


@functools.lru_cache(maxsize=4096)
def _silhouette(shape: str, size: str, centre: tuple, side: int) -> np.ndarray:
  obj = {"colour": "white", "shape": shape, "size": size, "cell": (0, 0)}
  return np.any(world.draw([obj], size=side, centres=[centre]) != world.BACKGROUND, axis=-1)


def _best_template(mask: np.ndarray, centres) -> tuple[str, str, float]:
  best = ("", "", -1.0)
  # Centres in order of trust: on ties (small shapes can coincide off-centre) the earlier one wins.
  for centre in centres:
    for shape in world.SHAPES:
      for size in world.SIZES:
        tmpl = _silhouette(shape, size, (float(centre[0]), float(centre[1])), mask.shape[0])
        iou = np.sum(tmpl & mask) / max(1, np.sum(tmpl | mask))
        if iou > best[2]:
          best = (shape, size, float(iou))
  return best


def detect(image_HxWx3: np.ndarray, min_pixels: int = 4) -> list[dict]:
  """Objects in a square shapes-world image: [{colour, shape, size, cell, pixels, iou}], largest
  first."""
  image = np.asarray(image_HxWx3, np.float32)
  side = image.shape[0]
  dist_bg = np.linalg.norm(image - np.asarray(world.BACKGROUND, np.float32), axis=-1)
  labels, n = ndimage.label(dist_bg > FOREGROUND_DISTANCE)
  nearest = np.argmin(np.linalg.norm(image[:, :, None, :] - _PALETTE, axis=-1), axis=-1)
  step = side / 3
  objects = []
  for k in range(1, n + 1):
    mask = labels == k
    if mask.sum() < min_pixels:
      continue
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    cell = (min(2, int(cy // step)), min(2, int(cx // step)))
    colour = _NAMES[int(np.bincount(nearest[mask], minlength=len(_NAMES)).argmax())]
    shape, size, iou = _best_template(mask, [world.cell_centre(cell, side), (cy, cx)])
    objects.append(
      {
        "colour": colour,
        "shape": shape,
        "size": size,
        "cell": cell,
        "pixels": int(mask.sum()),
        "iou": iou,
      }
    )
  return sorted(objects, key=lambda o: -o["pixels"])


def _match(detections: list[dict], target: dict) -> dict | None:
  """The detection in the target's cell, else the nearest one (its position then counts as
  wrong)."""
  if not detections:
    return None
  cell = tuple(target["cell"])
  same = [d for d in detections if tuple(d["cell"]) == cell]
  if same:
    return same[0]
  return min(
    detections, key=lambda d: (d["cell"][0] - cell[0]) ** 2 + (d["cell"][1] - cell[1]) ** 2
  )


def image_counts(detections: list[dict], objects: list[dict]) -> dict:
  """Per prompted object: colour / shape / size / position of the matching detection, all four
  ("object"), and their mean ("attribute_accuracy", defined as for captions)."""
  keys = ("colour", "shape", "size", "position", "object")
  hits = dict.fromkeys(keys, 0.0)
  for o in objects:
    d = _match(detections, o)
    if d is None:
      continue
    ok = {k: d[k] == o[k] for k in ("colour", "shape", "size")}
    ok["position"] = tuple(d["cell"]) == tuple(o["cell"])
    ok["object"] = all(ok.values())
    for k in keys:
      hits[k] += float(ok[k])
  out = {k: (hits[k], float(len(objects))) for k in keys}
  out["attribute_accuracy"] = (sum(hits[k] for k in keys[:4]), 4.0 * len(objects))
  return out
