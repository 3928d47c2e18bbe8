"""MMC4 interleaved documents: `SRC/*.jsonl` (or one .jsonl file), a document per line with
`text_list` (sentences) and `image_info` ([{"image_name", "matched_text_index"}, ...]), and the
downloaded images in `SRC/images/` (`--media_root` overrides).

One "interleaved" row per document: sentences in order, each image placed before the sentence it
is matched to. Images that were not downloaded are left out (MMC4 ships URLs, many dead); a
document left with no image, or no text, is a bad row.
"""

from __future__ import annotations

import glob
import json
import os

from data_pipelines.converters.common import (
  ConvertOptions,
  MissingSource,
  bad,
  rel,
  require,
  text_or_none,
)


def _files(src: str) -> list[str]:
  if os.path.isfile(require(src, "MMC4 documents")):
    return [src]
  files = sorted(glob.glob(os.path.join(src, "*.jsonl")))
  if not files:
    raise MissingSource(f"no *.jsonl documents in {src}")
  return files


def _parts(doc: dict, image_dir: str, out_dir: str, where: str):
  texts = doc.get("text_list")
  if not isinstance(texts, list) or not isinstance(doc.get("image_info", []), list):
    raise ValueError(f"{where}: text_list and image_info must be lists")
  before: dict[int, list] = {}
  for info in doc.get("image_info") or []:
    name, index = info.get("image_name"), info.get("matched_text_index")
    if not isinstance(name, str) or not isinstance(index, int) or not 0 <= index < len(texts):
      raise ValueError(f"{where}: bad image_info entry {info!r}")
    if os.path.isfile(os.path.join(image_dir, name)):
      before.setdefault(index, []).append({"image": rel(os.path.join(image_dir, name), out_dir)})
  parts = []
  for i, sentence in enumerate(texts):
    parts += before.get(i, [])
    if text_or_none(sentence):
      parts.append({"text": sentence.strip()})
  return parts


def convert(opts: ConvertOptions):
  files = _files(opts.src)
  image_dir = opts.media_root or os.path.join(os.path.dirname(files[0]), "images")
  for path in files:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
    for n, line in enumerate(lines, 1):
      if not line.strip():
        continue
      where = f"{path}:{n}"
      try:
        doc = json.loads(line)
        parts = _parts(doc, image_dir, opts.out_dir, where) if isinstance(doc, dict) else None
      except json.JSONDecodeError:
        yield bad("bad_json", f"{where}: not JSON")
        continue
      except ValueError as e:
        yield bad("bad_document", str(e))
        continue
      if parts is None:
        yield bad("bad_json", f"{where}: not a JSON object")
      elif not any("image" in p for p in parts):
        yield bad("missing_image", f"{where}: none of its images is in {image_dir}")
      elif not any("text" in p for p in parts):
        yield bad("empty_text", f"{where}: no text")
      else:
        yield {"type": "interleaved", "id": f"mmc4_{os.path.basename(path)}_{n}", "parts": parts}
