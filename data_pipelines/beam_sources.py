"""Raw-example sources besides JSONL: a prepared TFDS dataset, read as (index, example, where)
lines.

    --tfds=coco_captions:train --tfds_type=image_text --tfds_fields=image=image,text=captions/text

`fields` maps raw-example keys (builders/raw.py schema: image, video, audio, text) to TFDS feature
paths ("a/b" descends into nested features; a list-valued text takes its first entry). Media stay in
memory: images as uint8 arrays, audio as {"array", "sample_rate"} (the rate from the feature spec).
Lines are read on the launcher in dataset order (`shuffle_files=False`), so both runners agree.
"""

from __future__ import annotations

import numpy as np


def parse_fields(text: str) -> dict:
  pairs = [p.split("=", 1) for p in text.split(",") if p]
  if any(len(p) != 2 for p in pairs):
    raise ValueError(f"--tfds_fields must look like image=image,text=captions/text, got {text!r}")
  return dict(pairs)


def _get(example: dict, path: str):
  for key in path.split("/"):
    if not isinstance(example, dict) or key not in example:
      raise KeyError(f"feature {path!r} not in the TFDS example (keys: {sorted(example)})")
    example = example[key]
  return example


def _text(value) -> str:
  value = np.asarray(value)
  if value.ndim:
    value = value.reshape(-1)[0] if value.size else b""
  value = value.item() if hasattr(value, "item") else value
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _audio(value, rate: int) -> dict:
  value = np.asarray(value)
  if np.issubdtype(value.dtype, np.integer):  # TFDS Audio is int16 PCM by default
    value = value.astype(np.float32) / float(np.iinfo(value.dtype).max)
  return {
    "array": value.astype(np.float32).reshape(value.shape[0], -1).mean(axis=1),
    "sample_rate": rate,
  }


def tfds_lines(
  spec: str, data_type: str, fields: dict, data_dir: str | None = None, limit: int | None = None
) -> list:
  """'name[:split]' -> [(index, raw example, where)] for `tokenize_jsonl.encode_line`."""
  import tensorflow_datasets as tfds

  name, _, split = spec.partition(":")
  split = split or "train"
  builder = tfds.builder(name, data_dir=data_dir)
  ds = builder.as_dataset(split=split, shuffle_files=False)
  lines = []
  for i, ex in enumerate(tfds.as_numpy(ds)):
    if limit is not None and i >= limit:
      break
    raw = {"type": data_type}
    for key, path in fields.items():
      value = _get(ex, path)
      if key == "text":
        raw[key] = _text(value)
      elif key == "audio":
        raw[key] = _audio(value, int(builder.info.features[path.split("/")[0]].sample_rate))
      else:
        raw[key] = np.asarray(value)
    lines.append((i, raw, f"tfds:{name}/{split}[{i}]"))
  return lines
