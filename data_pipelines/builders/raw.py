"""One raw example (a JSONL manifest line) -> records. Shared by the local runner, Beam and the
demo.

Raw example schema (media paths are relative to the manifest's directory, absolute, or gs:// URLs):

    {"type": "text", "text": "..."}
    {"type": "image_text", "image": "a.png", "text": "...",
     "direction": "caption"|"generate"|"both"}
    {"type": "video_text", "video": "v.npy"|"v.gif"|"frames_dir", "text": "...", "direction": ...}
    {"type": "speech_text", "audio": "x.flac", "text": "...", "direction": "asr"|"tts"|"both",
     "sample_rate": 22050}                   # optional: the rate the file must have
    {"type": "interleaved", "parts": [{"text": "..."}, {"image": "a.png"}, ...]}
    {"type": "sft", "messages": [{"role": "user", "content": [{"text": ".."}, {"image": ".."}]},
                                 {"role": "assistant", "content": "..."}],
     "task": "vqa"}   # content parts may be "audio"/"video"; task (optional): source sft_<task>

SFT rows with a "task" land in their own dataset `sft_<task>` (SFT_TASKS are the standard ones;
any lower-case name works), so the stage-4 config weighs each task; rows without one land in
`sft`. RawOptions(sft_by_task=False) keeps every SFT row in `sft` (the demo corpus, whose
"task" names its evaluator's chat tasks).

`direction` defaults to "both" (two records: captioning then generation; ASR then TTS).
Any example may carry an "id" (converters write one): it seeds the choice of its instruction from
the prompt pools (builders/prompt_pools.py; the line index when absent). Audio is any format
libsndfile reads, any channel count, resampled to the speech tokenizer's rate (counted as a
"resampled_audio" note in the report); video is .npy, GIF/WebP, a frames folder or a container
PyAV reads (MP4, WebM, AVI, ...).
A bad input raises `BadExample(reason, message naming the input)`; the caller counts or re-raises.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from data_pipelines.builders import prompt_pools
from mio_jax.io import paths
from mio_jax.io.media import read_video, resample
from mio_jax.tokens.layouts import BadExample, Builder, Image, Speech, Video, cfg_dropped

DATA_TYPES = ("text", "image_text", "video_text", "speech_text", "interleaved", "sft")
# Per-task SFT sources: configs/curriculum.py weighs them in stage 4 (chat = text-only chat).
SFT_TASKS = ("caption", "vqa", "asr", "tts", "s2s", "t2i", "video", "chat")
_TASK_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MIN_SAMPLE_RATE = 8000  # below this a WAV is not usable speech (and likely mislabelled)


@dataclasses.dataclass(frozen=True)
class RawOptions:
  base_dir: str = "."  # relative media paths resolve against it (a local path or a URL)
  max_speech_s: float = 15.0  # MIO drops longer utterances
  cfg_prob: float = 0.0  # null-prompt dropout for image/video generation examples
  seed: int = 0
  prompts: str = "pool"  # "pool": instruction drawn per example; "fixed": MIO's own wording
  pinned_prompts: tuple = ()  # ((direction, template), ...): one template for that direction
  sft_by_task: bool = True  # SFT rows with a "task" go to sft_<task>; False: all to sft

  def __post_init__(self):
    if self.prompts not in prompt_pools.MODES:
      raise ValueError(f"prompts={self.prompts!r} not in {prompt_pools.MODES}")
    prompt_pools.check_pinned(self.pinned_prompts)


def tokenize_raw(
  example: dict,
  index: int,
  builder: Builder,
  toks,
  opts: RawOptions,
  where: str | None = None,
  notes: list | None = None,
):
  """-> list of (data_type, tokens int32, loss_mask uint8). `toks` is a tokenizers.base.Tokenizers;
  `index` seeds CFG dropout; `where` names the input in errors (default "example {index}");
  `notes` (if given) collects what was done to accept the input, e.g. "resampled_audio"."""
  where = where or f"example {index}"
  kind = example.get("type") if isinstance(example, dict) else None
  if kind not in DATA_TYPES:
    raise BadExample("unknown_type", f"{where}: type {kind!r} not in {DATA_TYPES}")
  loader = _Loader(toks, opts, where, notes if notes is not None else [])
  cfg_null = cfg_dropped(opts.seed, index, opts.cfg_prob)
  prompt = _Prompts(opts, example.get("id", index))
  try:
    records = _BUILD[kind](example, builder, loader, cfg_null, prompt)
  except BadExample as e:
    if str(e).startswith(where):
      raise
    raise BadExample(e.reason, f"{where}: {e}") from None
  if kind == "sft":
    kind = sft_source(example, opts, where)
  return [(kind, tokens, mask) for tokens, mask in records]


def sft_source(example: dict, opts: RawOptions, where: str) -> str:
  """The dataset an SFT row goes to: sft_<task>, or sft (no task, or opts.sft_by_task off)."""
  task = example.get("task")
  if task is None or not opts.sft_by_task:
    return "sft"
  if not isinstance(task, str) or not _TASK_RE.fullmatch(task):
    raise BadExample(
      "bad_task",
      f"{where}: task {task!r} must be a lower-case name like "
      f"{SFT_TASKS} (it names the dataset sft_<task>)",
    )
  return f"sft_{task}"


def _directions(example, allowed):
  d = example.get("direction", "both")
  if d != "both" and d not in allowed:
    raise BadExample("bad_direction", f"direction {d!r} not in {allowed + ('both',)}")
  return allowed if d == "both" else (d,)


def _text(example):
  text = example.get("text")
  if not isinstance(text, str) or not text.strip():
    raise BadExample("empty_text", "empty caption/text")
  return text


class _Prompts:
  """The instruction of each direction for one example (prompt_pools.choose)."""

  def __init__(self, opts: RawOptions, example_id):
    self.opts, self.example_id = opts, example_id

  def __call__(self, direction: str) -> str:
    o = self.opts
    return prompt_pools.choose(direction, self.example_id, o.seed, o.prompts, o.pinned_prompts)


def _build_text(ex, b, load, cfg_null, prompt):
  return [b.text_only(_text(ex))]


def _build_image_text(ex, b, load, cfg_null, prompt):
  text, dirs = _text(ex), _directions(ex, ("caption", "generate"))
  codes = load.image(ex.get("image"))
  return [
    b.image_caption(codes, text, prompt("caption_image"))
    if d == "caption"
    else b.image_generation(text, codes, cfg_null, prompt("generate_image"))
    for d in dirs
  ]


def _build_video_text(ex, b, load, cfg_null, prompt):
  text, dirs = _text(ex), _directions(ex, ("caption", "generate"))
  codes = load.video(ex.get("video"))
  return [
    b.video_caption(codes, text, prompt("caption_video"))
    if d == "caption"
    else b.video_generation(text, codes, cfg_null, prompt("generate_video"))
    for d in dirs
  ]


def _build_speech_text(ex, b, load, cfg_null, prompt):
  text, dirs = _text(ex), _directions(ex, ("asr", "tts"))
  codes = load.speech(ex.get("audio"), ex.get("sample_rate"))
  return [
    b.asr(codes, text, prompt("asr")) if d == "asr" else b.tts(text, codes, prompt("tts"))
    for d in dirs
  ]


def _build_interleaved(ex, b, load, cfg_null, prompt):
  return [b.interleaved([load.part(p) for p in ex.get("parts") or []])]


def _build_sft(ex, b, load, cfg_null, prompt):
  messages = []
  for m in ex.get("messages") or []:
    content = m.get("content")
    parts = [content] if isinstance(content, str) else [load.part(p) for p in content or []]
    messages.append({"role": m.get("role"), "content": parts})
  return [b.chat(messages)]


_BUILD = {
  "text": _build_text,
  "image_text": _build_image_text,
  "video_text": _build_video_text,
  "speech_text": _build_speech_text,
  "interleaved": _build_interleaved,
  "sft": _build_sft,
}


class _Loader:
  """Reads media named by an example and tokenizes it; every failure is a BadExample."""

  def __init__(self, toks, opts: RawOptions, where: str, notes: list):
    self.toks, self.opts, self.where, self.notes = toks, opts, where, notes

  def path(self, rel, what):
    """A media path relative to `base_dir` (or absolute, or a URL)."""
    if not isinstance(rel, str) or not rel:
      raise BadExample(f"unreadable_{what}", f"{self.where}: no {what} path given")
    return resolve(self.opts.base_dir, rel)

  # Media are paths, or in memory (e.g. from TFDS): pixel arrays, {"array", "sample_rate"} audio.
  def image(self, rel):
    from mio_jax.io.media import read_image

    in_memory = isinstance(rel, np.ndarray)
    path = self.where if in_memory else self.path(rel, "image")
    try:
      pixels = _rgb(rel, path) if in_memory else read_image(path)
    except ValueError as e:
      raise BadExample("unreadable_image", f"{self.where}: {e}") from None
    return self.toks.image.encode(pixels)

  def video(self, rel):
    in_memory = isinstance(rel, np.ndarray)
    path = self.where if in_memory else self.path(rel, "video")
    try:
      frames = np.stack([_rgb(f, path) for f in rel]) if in_memory else read_video(path)
    except ValueError as e:
      raise BadExample("unreadable_video", f"{self.where}: {e}") from None
    return self.toks.video.encode(frames)

  def speech(self, rel, expected_rate=None):
    from mio_jax.io.media import check_wave, read_audio

    in_memory = isinstance(rel, dict)
    path = self.where if in_memory else self.path(rel, "audio")
    try:
      if in_memory:
        rate = int(rel.get("sample_rate") or 0)
        wave = check_wave(rel.get("array"), rate, path)
      else:
        wave, rate = read_audio(path)
    except ValueError as e:
      raise BadExample("unreadable_audio", f"{self.where}: {e}") from None
    if (expected_rate and rate != expected_rate) or rate < MIN_SAMPLE_RATE:
      want = f"{expected_rate} Hz" if expected_rate else f">= {MIN_SAMPLE_RATE} Hz"
      raise BadExample(
        "wrong_sample_rate", f"{self.where}: {path} has sample rate {rate} Hz, expected {want}"
      )
    seconds = wave.size / rate
    if seconds > self.opts.max_speech_s:
      raise BadExample(
        "speech_too_long",
        f"{self.where}: {path} lasts {seconds:.1f} s, longer than the "
        f"{self.opts.max_speech_s:g} s limit",
      )
    target = int(getattr(self.toks.speech, "sample_rate", rate))
    if rate != target:  # any usable rate is accepted: resampled here, counted by the report
      wave, rate = resample(wave, rate, target), target
      self.notes.append("resampled_audio")
    return self.toks.speech.encode(wave, rate)

  def part(self, p):
    if isinstance(p, str):
      return p
    if not isinstance(p, dict) or len(p) != 1:
      raise BadExample(
        "bad_part", f"{self.where}: part must be one of {{text|image|video|audio: ...}}, got {p!r}"
      )
    ((key, value),) = p.items()
    if key == "text":
      return value
    if key == "image":
      return Image(self.image(value))
    if key == "video":
      return Video(self.video(value))
    if key == "audio":
      return Speech(self.speech(value))
    raise BadExample("bad_part", f"{self.where}: unknown part key {key!r}")


def _rgb(pixels, where):
  """In-memory pixels -> uint8 HxWx3 (greyscale HxW or HxWx1 is expanded)."""
  from mio_jax.io.media import check_image

  pixels = np.asarray(pixels)
  if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] == 1):
    pixels = np.repeat(pixels.reshape(pixels.shape[:2] + (1,)), 3, axis=-1)
  return check_image(pixels, where)


def resolve(base_dir: str, rel: str) -> str:
  """`rel` under `base_dir`; an absolute path or a URL stands alone (os.path.join's rule)."""
  return rel if paths.is_url(rel) or os.path.isabs(rel) else paths.join(base_dir, rel)
