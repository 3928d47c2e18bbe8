"""A procedural "shapes world": coloured shapes on a 3x3 grid, their captions, stories and motions.

Pure functions of a numpy Generator: the same seed gives the same scenes, texts and pixels.
Images are 48 px, drawn at the image tokenizer's size: the grid cell of a shape is what captions
name ("a small red circle at the top left"). A cell is 16 px, exactly one patch of the demo image
tokenizer (demo_corpus.py), so an object sitting in its cell is one image token.
"""

from __future__ import annotations

import numpy as np

COLOURS = {
  "red": (230, 40, 40),
  "green": (40, 200, 60),
  "blue": (50, 90, 240),
  "yellow": (240, 220, 40),
  "purple": (150, 60, 200),
  "orange": (250, 140, 30),
  "white": (245, 245, 245),
  "cyan": (40, 220, 230),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
SIZES = ("small", "large")
# Grid cell (row, col) -> words; "at the top left", "in the centre".
POSITIONS = {
  (0, 0): "at the top left",
  (0, 1): "at the top",
  (0, 2): "at the top right",
  (1, 0): "on the left",
  (1, 1): "in the centre",
  (1, 2): "on the right",
  (2, 0): "at the bottom left",
  (2, 1): "at the bottom",
  (2, 2): "at the bottom right",
}
CELLS = tuple(POSITIONS)
PLACES = {
  c: w.split(" ", 1)[1] for c, w in POSITIONS.items()
}  # "the top left" (after a preposition)
BACKGROUND = (16, 16, 24)
SIZE_PX = 48
CELL_PX = SIZE_PX // 3  # one image-tokenizer patch per grid cell


def random_object(rng, avoid=()) -> dict:
  cells = [c for c in CELLS if c not in avoid]
  return {
    "colour": str(rng.choice(list(COLOURS))),
    "shape": str(rng.choice(SHAPES)),
    "size": str(rng.choice(SIZES)),
    "cell": tuple(int(v) for v in cells[rng.integers(len(cells))]),
  }


def random_scene(rng, max_objects: int = 2) -> list[dict]:
  objects = []
  for _ in range(int(rng.integers(1, max_objects + 1))):
    objects.append(random_object(rng, avoid=[o["cell"] for o in objects]))
  return objects


def noun(o: dict) -> str:
  return f"{o['size']} {o['colour']} {o['shape']}"


def caption(objects) -> str:
  return " and ".join(f"a {noun(o)} {POSITIONS[o['cell']]}" for o in objects)


# ---- drawing ----------------------------------------------------------------------------------
def _mask(shape: str, cy: float, cx: float, r: float, size: int) -> np.ndarray:
  y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
  dy, dx = y - cy, x - cx
  if shape == "circle":
    return dy * dy + dx * dx <= r * r
  if shape == "square":
    return (abs(dy) <= r * 0.85) & (abs(dx) <= r * 0.85)
  if shape == "diamond":
    return abs(dy) + abs(dx) <= r
  if shape == "cross":
    return ((abs(dy) <= r * 0.35) & (abs(dx) <= r)) | ((abs(dx) <= r * 0.35) & (abs(dy) <= r))
  if shape == "triangle":  # apex up
    return (dy <= r * 0.8) & (dy >= -r) & (abs(dx) <= (dy + r) * 0.55)
  raise ValueError(f"unknown shape {shape!r}")


def cell_centre(cell, size: int = SIZE_PX) -> tuple[float, float]:
  step = size / 3
  return (cell[0] + 0.5) * step, (cell[1] + 0.5) * step


def draw(objects, size: int = SIZE_PX, centres=None) -> np.ndarray:
  """uint8 [size, size, 3]. `centres` overrides cell centres (for motion between cells)."""
  image = np.empty((size, size, 3), np.uint8)
  image[:] = BACKGROUND
  for i, o in enumerate(objects):
    cy, cx = centres[i] if centres is not None else cell_centre(o["cell"], size)
    r = size / 6 * (0.55 if o["size"] == "small" else 0.9)
    image[_mask(o["shape"], cy, cx, r, size)] = COLOURS[o["colour"]]
  return image


def atlas() -> list[np.ndarray]:
  """Every (colour, shape, size) drawn in all nine cells, one image each: the demo image tokenizer
  gives each distinct cell of these its own code (demo_corpus.train_image_vq_demo)."""
  return [
    draw([{"colour": c, "shape": s, "size": z, "cell": cell} for cell in CELLS])
    for c in COLOURS
    for s in SHAPES
    for z in SIZES
  ]


# ---- stories (interleaved) and motions (video) -------------------------------------------------
def story(rng, steps: int = 3) -> list[tuple[str, list[dict]]]:
  """[(sentence, scene)]: one object that moves, changes colour or changes shape between images."""
  o = random_object(rng)
  out = [(f"First, there is a {noun(o)} {POSITIONS[o['cell']]}.", [dict(o)])]
  for i in range(steps - 1):
    what = ("move", "colour", "shape")[int(rng.integers(3))]
    word = "Finally" if i == steps - 2 else "Then"
    if what == "move":
      o["cell"] = random_object(rng, avoid=[o["cell"]])["cell"]
      text = f"{word}, it moves to {PLACES[o['cell']]}."
    elif what == "colour":
      o["colour"] = str(rng.choice([c for c in COLOURS if c != o["colour"]]))
      text = f"{word}, it turns {o['colour']}."
    else:
      o["shape"] = str(rng.choice([s for s in SHAPES if s != o["shape"]]))
      text = f"{word}, it becomes a {o['shape']}."
    out.append((text, [dict(o)]))
  return out


def motion(rng) -> tuple[dict, tuple]:
  """(object, end cell): the object slides from its cell to another one."""
  o = random_object(rng)
  return o, random_object(rng, avoid=[o["cell"]])["cell"]


def motion_frames(o: dict, end, frames: int = 16) -> np.ndarray:
  """uint8 [frames, SIZE_PX, SIZE_PX, 3]: `o` moving in a straight line from its cell to `end`."""
  (y0, x0), (y1, x1) = cell_centre(o["cell"]), cell_centre(end)
  return np.stack(
    [
      draw([o], centres=[(y0 + (y1 - y0) * t, x0 + (x1 - x0) * t)])
      for t in np.linspace(0.0, 1.0, frames)
    ]
  )


def motion_caption(o: dict, end) -> str:
  return f"a {noun(o)} moves from {PLACES[o['cell']]} to {PLACES[end]}"


# ---- text-only sentences -------------------------------------------------------------------
FACTS = {
  "circle": "is round",
  "square": "has four equal sides",
  "triangle": "has three corners",
  "diamond": "has four corners",
  "cross": "has four arms",
}


def sentence(rng) -> str:
  """A true statement about the world: relations between two objects, or a shape fact."""
  kind = int(rng.integers(3))
  a = random_object(rng)
  b = random_object(rng, avoid=[a["cell"]])
  if kind == 0:
    return f"A {a['shape']} {FACTS[a['shape']]}."
  (ra, ca), (rb, cb) = a["cell"], b["cell"]
  if kind == 1 and ra != rb:
    rel = "above" if ra < rb else "below"
  elif ca != cb:
    rel = "to the left of" if ca < cb else "to the right of"
  else:
    rel = "above" if ra < rb else "below"
  return f"The {a['colour']} {a['shape']} is {rel} the {b['colour']} {b['shape']}."
