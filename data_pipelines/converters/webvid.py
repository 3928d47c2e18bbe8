"""WebVid: a CSV with `videoid` and `name` (or `caption`) columns, as results_10M_train.csv ships,
and the downloaded clips under `videos/` beside it (`videos/{videoid}.mp4`, or in the
`page_dir` subfolder). SRC is the CSV, or a folder holding one `*{split}*.csv`.
`--media_root` overrides the clip folder.

One row per clip, direction "both": video -> text and text -> video.
"""

from __future__ import annotations

import csv
import glob
import os

from data_pipelines.converters.common import (
  VIDEO_EXTS,
  ConvertOptions,
  MissingSource,
  SourceError,
  bad,
  rel,
  require,
  text_or_none,
)


def _csv_path(opts: ConvertOptions) -> str:
  if os.path.isfile(require(opts.src, "WebVid CSV")):
    return opts.src
  found = sorted(glob.glob(os.path.join(opts.src, f"*{opts.split or ''}*.csv")))
  if len(found) != 1:
    raise MissingSource(f"expected one *{opts.split or ''}*.csv in {opts.src}, found {found}")
  return found[0]


def _find_clip(video_dir: str, row: dict) -> str | None:
  vid = row["videoid"].strip()
  for folder in (video_dir, os.path.join(video_dir, (row.get("page_dir") or "").strip())):
    for ext in VIDEO_EXTS:
      if os.path.isfile(os.path.join(folder, vid + ext)):
        return os.path.join(folder, vid + ext)
  return None


def convert(opts: ConvertOptions):
  path = _csv_path(opts)
  video_dir = opts.media_root or os.path.join(os.path.dirname(path), "videos")
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    column = next((c for c in ("name", "caption") if c in (reader.fieldnames or [])), None)
    if "videoid" not in (reader.fieldnames or []) or column is None:
      raise SourceError(f"{path}: needs videoid and name/caption columns, has {reader.fieldnames}")
    for n, row in enumerate(reader, 2):  # line 1 is the header
      where = f"{path}:{n}"
      caption, vid = text_or_none(row.get(column)), text_or_none(row.get("videoid"))
      clip = _find_clip(video_dir, row) if vid else None
      if vid is None:
        yield bad("missing_id", f"{where}: empty videoid")
      elif caption is None:
        yield bad("empty_text", f"{where}: empty {column} for video {vid}")
      elif clip is None:
        yield bad("missing_video", f"{where}: no clip {vid}.{{mp4,webm,...}} in {video_dir}")
      else:
        yield {
          "type": "video_text",
          "id": f"webvid_{vid}",
          "direction": "both",
          "video": rel(clip, opts.out_dir),
          "text": caption,
        }
