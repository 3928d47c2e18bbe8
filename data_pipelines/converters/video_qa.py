"""Open-ended video QA as MSRVTT-QA and MSVD-QA ship it: `SRC` = a JSON list
`[{"id", "video_id" | "video", "question", "answer"}, ...]` (e.g. `test_qa.json`), clips under
`--media_root` (default: `videos/` next to SRC) named `video{video_id}.*` (MSRVTT),
`vid{video_id}.*` or `{video_id}.*`; MSVD's YouTube names are found through
`youtube_mapping.txt` ("NAME vidN" per line) next to SRC when it is there.

One "sft" row (task "video", the stage-4 source sft_video) per question: the clip and the
question, answered with the one-word answer; `mio_jax.evaluate --tasks=video_qa` scores it.
"""

from __future__ import annotations

import json
import os

from data_pipelines.converters.common import (
  VIDEO_EXTS,
  ConvertOptions,
  SourceError,
  bad,
  rel,
  require,
  text_or_none,
)


def _youtube_names(src: str) -> dict[str, str]:
  """vidN -> YouTube clip name, from MSVD's youtube_mapping.txt (empty without one)."""
  path = os.path.join(os.path.dirname(os.path.abspath(src)), "youtube_mapping.txt")
  if not os.path.isfile(path):
    return {}
  out = {}
  with open(path) as f:
    for line in f:
      parts = line.split()
      if len(parts) == 2:
        out[parts[1]] = parts[0]
  return out


def _find_video(video_dir: str, video_id, youtube: dict) -> str | None:
  vid = str(video_id)
  stems = [f"video{vid}", f"vid{vid}", vid]
  stems += [youtube[s] for s in (f"vid{vid}", vid) if s in youtube]
  for stem in stems:
    for ext in VIDEO_EXTS:
      path = os.path.join(video_dir, stem + ext)
      if os.path.isfile(path):
        return path
  return None


def convert(opts: ConvertOptions):
  src = require(opts.src, "video QA questions")
  video_dir = opts.media_root or os.path.join(os.path.dirname(os.path.abspath(src)), "videos")
  with open(src) as f:
    try:
      items = json.load(f)
    except json.JSONDecodeError as e:
      raise SourceError(f"{src}: not JSON: {e}") from None
  if not isinstance(items, list):
    raise SourceError(f"{src}: expected a JSON list of questions")
  youtube = _youtube_names(src)
  for i, item in enumerate(items):
    item = item if isinstance(item, dict) else {}
    where = f"{src}: item {i} (id {item.get('id')})"
    question, answer = text_or_none(item.get("question")), text_or_none(item.get("answer"))
    video_id = item.get("video_id", item.get("video"))
    video = None if video_id is None else _find_video(video_dir, video_id, youtube)
    if question is None or answer is None:
      yield bad("empty_text", f"{where}: empty question or answer")
    elif video is None:
      yield bad("missing_video", f"{where}: no clip for video {video_id!r} in {video_dir}")
    else:
      yield {
        "type": "sft",
        "task": "video",
        "id": f"videoqa_{item.get('id', i)}",
        "messages": [
          {"role": "user", "content": [{"video": rel(video, opts.out_dir)}, {"text": question}]},
          {"role": "assistant", "content": answer},
        ],
      }
