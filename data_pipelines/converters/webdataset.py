"""WebDataset tar shards, as img2dataset writes CC3M / CC12M / LAION: members grouped by key
(the path up to the first dot of the file name), `KEY.jpg|png|webp` + `KEY.txt` and/or
`KEY.json` (its "caption" field; .txt wins). SRC is one .tar or a folder of them.

Images are unpacked to `--media_dir` (default OUT_media/ beside the output JSONL), one folder per
shard. One row per sample, direction "both": image -> text and text -> image.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile

from data_pipelines.converters.common import (
  IMAGE_EXTS,
  ConvertOptions,
  MissingSource,
  bad,
  rel,
  require,
  text_or_none,
)


def _shards(src: str) -> list[str]:
  if os.path.isfile(require(src, "webdataset shards")):
    return [src]
  shards = sorted(glob.glob(os.path.join(src, "*.tar")))
  if not shards:
    raise MissingSource(f"no *.tar shards in {src}")
  return shards


def _samples(tar: tarfile.TarFile):
  """-> {key: {extension: member}} in archive order."""
  samples: dict[str, dict] = {}
  for member in tar:
    if not member.isfile():
      continue
    folder, name = os.path.split(member.name)
    stem, dot, ext = name.partition(".")
    if dot and not name.startswith("."):
      samples.setdefault(os.path.join(folder, stem), {})[ext.lower()] = member
  return samples


def _caption(tar, members, where):
  if "txt" in members:
    return text_or_none(tar.extractfile(members["txt"]).read().decode("utf-8", "replace"))
  if "json" in members:
    try:
      meta = json.loads(tar.extractfile(members["json"]).read())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f"{where}: json is not valid: {e}") from None
    return text_or_none(meta.get("caption") if isinstance(meta, dict) else None)
  return None


def convert(opts: ConvertOptions):
  media_dir = opts.media_dir or os.path.join(opts.out_dir, "webdataset_media")
  for shard in _shards(opts.src):
    try:
      tar = tarfile.open(shard)
    except (tarfile.TarError, OSError) as e:
      yield bad("bad_tar", f"{shard}: cannot open tar: {e}")
      continue
    with tar:
      for key, members in _samples(tar).items():
        where = f"{shard}: sample {key}"
        image_ext = next((e for e in members if "." + e in IMAGE_EXTS), None)
        try:
          caption = _caption(tar, members, where)
        except ValueError as e:
          yield bad("bad_json", str(e))
          continue
        if image_ext is None:
          yield bad("missing_image", f"{where}: no image member (have {sorted(members)})")
        elif caption is None:
          yield bad("empty_text", f"{where}: no caption in .txt or .json")
        else:
          out = os.path.join(
            media_dir, os.path.splitext(os.path.basename(shard))[0], f"{key}.{image_ext}"
          )
          os.makedirs(os.path.dirname(out), exist_ok=True)
          with open(out, "wb") as f:
            f.write(tar.extractfile(members[image_ext]).read())
          yield {
            "type": "image_text",
            "id": f"wds_{os.path.basename(shard)}_{key}",
            "direction": "both",
            "image": rel(out, opts.out_dir),
            "text": caption,
          }
