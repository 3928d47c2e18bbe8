"""COCO Captions: `SRC/annotations/captions_{split}2017.json` + `SRC/{split}2017/*.jpg`.

One row per caption, direction "both": image -> text (captioning) and text -> image (generation).
`--media_root` overrides the image folder (default SRC/{split}2017).
"""

from __future__ import annotations

import glob
import json
import os

from data_pipelines.converters.common import (
  ConvertOptions,
  SourceError,
  bad,
  rel,
  require,
  text_or_none,
)


def convert(opts: ConvertOptions):
  split = opts.split or "train"
  ann_path = require(
    os.path.join(opts.src, "annotations", f"captions_{split}2017.json"),
    "COCO captions annotations",
    _splits_hint(opts.src),
  )
  image_dir = opts.media_root or os.path.join(opts.src, f"{split}2017")
  with open(ann_path) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise SourceError(f"{ann_path}: not JSON: {e}") from None
  images = {im.get("id"): im.get("file_name") for im in data.get("images", [])}
  for i, ann in enumerate(data.get("annotations", [])):
    where = f"{ann_path}: annotation {i} (id {ann.get('id')})"
    name, caption = images.get(ann.get("image_id")), text_or_none(ann.get("caption"))
    if name is None:
      yield bad("unknown_image_id", f"{where}: image_id {ann.get('image_id')!r} not in images")
    elif caption is None:
      yield bad("empty_text", f"{where}: empty caption")
    elif not os.path.isfile(os.path.join(image_dir, name)):
      yield bad("missing_image", f"{where}: image file not found: {os.path.join(image_dir, name)}")
    else:
      yield {
        "type": "image_text",
        "id": f"coco_{ann.get('id')}",
        "direction": "both",
        "image": rel(os.path.join(image_dir, name), opts.out_dir),
        "text": caption,
      }


def _splits_hint(src: str) -> str:
  """Which splits SRC/annotations does hold, as the --split to pass."""
  found = sorted(
    os.path.basename(f)[len("captions_") : -len("2017.json")]
    for f in glob.glob(os.path.join(src, "annotations", "captions_*2017.json"))
  )
  if not found:
    return "no annotations/captions_*2017.json there (download COCO's annotations zip)"
  return f"found {', '.join(found)}: pass --split={found[0]}"
