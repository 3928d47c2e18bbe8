"""Evaluation examples from a raw JSONL manifest: the demo corpus's `raw/<split>.jsonl`, or any
JSONL of the same shape (e.g. COCO captions or LibriSpeech converted to it).

One JSON object per line; media paths are relative to the manifest's folder (or absolute, or URLs;
the manifest itself may be a gs:// URL):

    {"type": "image_text", "image": "a.png", "text": "a caption",
     "texts": ["ref 1", "ref 2"],               # optional: all references (COCO has 5), for CIDEr
     "attributes": [{"colour": "red", "shape": "circle", "size": "small", "cell": [0, 0]}],  # demo only
     "direction": "caption" | "generate" | "both"}
    {"type": "speech_text", "audio": "x.wav", "text": "the transcript", "direction": "asr" | "tts" | "both"}
    {"type": "video_text", "video": "v.npy" | "frames_dir/" | "v.gif", "text": "a caption",
     "attributes": {"object": {...}, "end": [row, col]}}                                  # demo only
    {"type": "sft", "task": "video_qa", "messages": [{"role": "user", "content": [{"video": "v.npy"},
     {"text": "Where does the shape go?"}]}, {"role": "assistant", "content": "It moves from .. to .."}]}

Which tasks a row feeds: image_text → image captioning (direction caption/both) and text-to-image
(generate/both, only with `attributes`: the pixel classifier knows the shapes world only);
speech_text → ASR (asr/both) and TTS (tts/both); video_text → video captioning; sft rows whose user
turn holds a video and whose answer is text → video QA (unless their "task" names another task).
Other rows are ignored.

COCO: one row per image with `text` = first caption and `texts` = all five. LibriSpeech: one row per
utterance with its transcript; convert FLAC to 16-bit WAV first (read_wav reads WAV only).
"""

from __future__ import annotations

import dataclasses
import json
import os

from mio_jax import paths

TASKS = ("image_captioning", "text_to_image", "asr", "tts", "video_captioning", "video_qa")


@dataclasses.dataclass
class Example:
  task: str
  key: str                    # "<manifest line>" for messages and samples
  text: str                   # caption / transcript / question (video QA) / prompt (TTS, text-to-image)
  answer: str = ""            # reference answer (video QA)
  references: tuple = ()      # all reference captions (CIDEr)
  media: str | None = None    # absolute path (or URL) of the input or ground-truth media
  attributes: object = None   # shapes-world ground truth, when the row has it


def _path(base: str, rel: str | None) -> str | None:
  if not rel:
    return None
  return rel if paths.is_url(rel) or os.path.isabs(rel) else paths.join(base, rel)


def _directions(row, allowed):
  d = row.get("direction", "both")
  return allowed if d == "both" else (d,)


def _video_qa(row, base, key):
  if row.get("task", "video_qa") != "video_qa":  # e.g. the demo's "describe_video" SFT rows
    return None
  msgs = row.get("messages") or []
  user = next((m for m in msgs if m.get("role") == "user"), None)
  answer = next((m.get("content") for m in msgs if m.get("role") == "assistant"), None)
  if user is None or not isinstance(answer, str) or isinstance(user.get("content"), str):
    return None
  parts = user.get("content") or []
  video = next((p["video"] for p in parts if isinstance(p, dict) and "video" in p), None)
  question = " ".join(p["text"] for p in parts if isinstance(p, dict) and "text" in p)
  if video is None or not question:
    return None
  return Example("video_qa", key, question, answer=answer, media=_path(base, video))


def examples_of(row: dict, base: str, key: str) -> list[Example]:
  kind, out = row.get("type"), []
  text = row.get("text") or ""
  if kind == "image_text" and text:
    refs = tuple(row.get("texts") or [text])
    for d in _directions(row, ("caption", "generate")):
      task = "image_captioning" if d == "caption" else "text_to_image"
      if task == "text_to_image" and not row.get("attributes"):
        continue
      out.append(Example(task, key, text, references=refs, media=_path(base, row.get("image")),
                         attributes=row.get("attributes")))
  elif kind == "speech_text" and text:
    for d in _directions(row, ("asr", "tts")):
      out.append(Example(d, key, text, media=_path(base, row.get("audio"))))
  elif kind == "video_text" and text:
    out.append(Example("video_captioning", key, text, references=(text,),
                       media=_path(base, row.get("video")), attributes=row.get("attributes")))
  elif kind == "sft":
    ex = _video_qa(row, base, key)
    if ex is not None:
      out.append(ex)
  return out


def load_examples(manifest: str, limit: int | None = None) -> dict[str, list[Example]]:
  """task → its first `limit` examples, in manifest order (deterministic)."""
  try:
    text = paths.read_text(manifest)
  except (FileNotFoundError, IsADirectoryError):
    raise FileNotFoundError(f"evaluation manifest not found: {manifest}") from None
  base = paths.parent(paths.absolute(manifest))
  out: dict[str, list[Example]] = {t: [] for t in TASKS}
  for i, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except ValueError as e:
      raise ValueError(f"{manifest}:{i}: not JSON: {e}") from None
    for ex in examples_of(row, base, f"{paths.basename(manifest)}:{i}"):
      if limit is None or len(out[ex.task]) < limit:
        out[ex.task].append(ex)
  return out
