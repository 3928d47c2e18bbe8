"""Evaluation examples from a raw JSONL manifest: the demo corpus's `raw/<split>.jsonl`, or any
JSONL of the same shape (e.g. COCO captions or LibriSpeech converted to it).

One JSON object per line; media paths are relative to the manifest's folder (or absolute, or URLs;
the manifest itself may be a gs:// URL):

    {"type": "image_text", "image": "a.png", "text": "a caption",
     "texts": ["ref 1", "ref 2"],               # optional: all references (COCO has 5), for CIDEr
     "attributes": [{"colour": "red", "shape": "circle", "size": "small", "cell": [0, 0]}],
                                                  # demo only
     "direction": "caption" | "generate" | "both"}
    {"type": "speech_text", "audio": "x.wav", "text": "the transcript",
     "direction": "asr" | "tts" | "both"}
    {"type": "video_text", "video": "v.npy" | "frames_dir/" | "v.gif", "text": "a caption",
     "attributes": {"object": {...}, "end": [row, col]}}         # demo only
    {"type": "sft", "task": "video_qa",
     "messages": [{"role": "user", "content": [{"video": "v.npy"},
      {"text": "Where does the shape go?"}]},
      {"role": "assistant", "content": "It moves from .. to .."}]}

Which tasks a row feeds: image_text → image captioning (direction caption/both) and text-to-image
(generate/both, only with `attributes`: the pixel classifier knows the shapes world only);
speech_text → ASR (asr/both) and TTS (tts/both); video_text → video captioning; sft rows whose user
turn holds a video and whose answer is text → video QA (unless their "task" names another task).
Other rows are ignored.

Standard benchmarks (`--tasks=coco_captions,vqa,...`) read the rows data_pipelines/convert.py
writes (data_pipelines/converters/):
  coco_captions  image_text rows (direction caption/both), grouped by image: the converter writes
                 one row per caption, so an image's rows together are its references (BLEU/CIDEr)
  vqa            sft rows whose first user turn holds an image and text and whose answer is text
                 (LLaVA-style; "task" absent or "vqa"); optional "answers": the annotators' answers
                 (VQAv2 has 10), else the assistant turn is the one answer
  text_to_image  with `attributes_for_t2i=False` (evaluate --clip_model) every image_text row
                 with direction generate/both, scored with CLIP instead of the shapes classifier

COCO: one row per caption (`data_pipelines.convert --format=coco_captions`); LibriSpeech: one row
per utterance with its transcript (FLAC is read as it is; any rate is resampled).
"""

from __future__ import annotations

import dataclasses
import json
import os

from mio_jax.io import paths

DEMO_TASKS = ("image_captioning", "text_to_image", "asr", "tts", "video_captioning", "video_qa")
TASKS = DEMO_TASKS + ("coco_captions", "vqa")
# An sft row's "task" values that make it a video_qa / vqa example.
QA_TASK_NAMES = {"video_qa": ("video_qa", "video"), "vqa": ("vqa",)}


@dataclasses.dataclass
class Example:
  task: str
  key: str  # "<manifest line>" for messages and samples
  text: str  # caption / transcript / question (video QA) / prompt (TTS, text-to-image)
  answer: str = ""  # reference answer (video QA, VQA)
  answers: tuple = ()  # every annotator's answer (VQA accuracy)
  references: tuple = ()  # all reference captions (CIDEr)
  media: str | None = None  # absolute path (or URL) of the input or ground-truth media
  attributes: object = None  # shapes-world ground truth, when the row has it


def _path(base: str, rel: str | None) -> str | None:
  if not rel:
    return None
  return rel if paths.is_url(rel) or os.path.isabs(rel) else paths.join(base, rel)


def _directions(row, allowed):
  d = row.get("direction", "both")
  return allowed if d == "both" else (d,)


def _text_only(content) -> str | None:
  """An assistant turn's text: a string, or a list of text parts (as the converters write it);
  None when it holds media."""
  if isinstance(content, str):
    return content
  if (
    isinstance(content, list)
    and content
    and all(isinstance(p, dict) and set(p) == {"text"} for p in content)
  ):
    return " ".join(p["text"] for p in content)
  return None


def _first_qa(row, base, key):
  """The Example of an sft row's first user turn (media + question) and first answer, or None."""
  msgs = row.get("messages") or []
  user = next((m for m in msgs if m.get("role") == "user"), None)
  answer = _text_only(next((m.get("content") for m in msgs if m.get("role") == "assistant"), None))
  if user is None or answer is None or isinstance(user.get("content"), str):
    return None
  parts = [p for p in user.get("content") or [] if isinstance(p, dict)]
  question = " ".join(p["text"] for p in parts if "text" in p)
  for kind, task in (("video", "video_qa"), ("image", "vqa")):
    media = next((p[kind] for p in parts if kind in p), None)
    # "task" names another use of the row, e.g. the demo's "describe_video" SFT rows; the SFT
    # task names (vqa, video: the sources sft_vqa, sft_video) are these tasks.
    if media is not None and question and row.get("task", task) in QA_TASK_NAMES[task]:
      answers = tuple(row.get("answers") or (answer,))
      if not all(isinstance(a, str) for a in answers):
        raise ValueError(f'{key}: "answers" must be a list of strings')
      return Example(task, key, question, answer=answer, answers=answers, media=_path(base, media))
  return None


def examples_of(row: dict, base: str, key: str, attributes_for_t2i: bool = True) -> list[Example]:
  kind, out = row.get("type"), []
  text = row.get("text") or ""
  if kind == "image_text" and text:
    refs = tuple(row.get("texts") or [text])
    for d in _directions(row, ("caption", "generate")):
      task = "image_captioning" if d == "caption" else "text_to_image"
      if task == "text_to_image" and attributes_for_t2i and not row.get("attributes"):
        continue
      out.append(
        Example(
          task,
          key,
          text,
          references=refs,
          media=_path(base, row.get("image")),
          attributes=row.get("attributes"),
        )
      )
      if task == "image_captioning":
        out.append(
          Example("coco_captions", key, text, references=refs, media=_path(base, row.get("image")))
        )
  elif kind == "speech_text" and text:
    for d in _directions(row, ("asr", "tts")):
      out.append(Example(d, key, text, media=_path(base, row.get("audio"))))
  elif kind == "video_text" and text:
    out.append(
      Example(
        "video_captioning",
        key,
        text,
        references=(text,),
        media=_path(base, row.get("video")),
        attributes=row.get("attributes"),
      )
    )
  elif kind == "sft":
    ex = _first_qa(row, base, key)
    if ex is not None:
      out.append(ex)
  return out


def load_examples(
  manifest: str, limit: int | None = None, attributes_for_t2i: bool = True
) -> dict[str, list[Example]]:
  """task → its first `limit` examples, in manifest order (deterministic). coco_captions: one
  example per image, its references the captions of all its rows."""
  try:
    text = paths.read_text(manifest)
  except (FileNotFoundError, IsADirectoryError):
    raise FileNotFoundError(f"evaluation manifest not found: {manifest}") from None
  base = paths.parent(paths.absolute(manifest))
  out: dict[str, list[Example]] = {t: [] for t in TASKS}
  by_image: dict[str, Example] = {}
  for i, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except ValueError as e:
      raise ValueError(f"{manifest}:{i}: not JSON: {e}") from None
    if not isinstance(row, dict):
      raise ValueError(f"{manifest}:{i}: expected a JSON object, got {type(row).__name__}")
    for ex in examples_of(row, base, f"{paths.basename(manifest)}:{i}", attributes_for_t2i):
      if ex.task == "coco_captions" and ex.media in by_image:
        first = by_image[ex.media]
        first.references += tuple(r for r in ex.references if r not in first.references)
        continue
      if limit is None or len(out[ex.task]) < limit:
        if ex.task == "coco_captions":
          by_image[ex.media] = ex
        out[ex.task].append(ex)
  return out
