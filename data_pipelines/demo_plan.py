"""What the demo corpus holds: raw examples (JSONL rows) per split and the media they name.

Pure function of (seed, scale): no files are touched here. Media paths are relative to DIR/raw/;
`media` maps each path to how it is made: ("image", objects) | ("video", (object, end cell)) |
("audio", (text, voice index)). Every data type draws from its own seeded generator, so changing
one type's count leaves the others unchanged. The first example of each type goes to test, the
second to val (so no split is ever empty), the rest: 5 % test, 5 % val, 90 % train.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from data_pipelines import shapes_world as W
from data_pipelines.espeak import VOICES

COUNTS = {
  "image_text": 2500,
  "interleaved": 300,
  "video_text": 600,
  "speech_text": 1000,
  "text": 2000,
  "sft": 1500,
}
SPLITS = ("train", "val", "test")
SAMPLE_RATE = 22_050  # espeak-ng's output rate; rows state it so a mismatching file is caught
SYSTEM = "You are a helpful assistant that sees, draws, listens and speaks."
# One SFT task per direction the evaluator asks in chat form (mio_jax/generate/prompting.py CHAT_*).
SFT_KINDS = ("describe", "draw", "transcribe", "say", "video_qa", "describe_video")
VIDEO_QUESTIONS = (
  "What colour is the moving shape?",
  "What shape is moving?",
  "Where does the shape go?",
)


@dataclasses.dataclass
class Plan:
  examples: dict  # split -> [raw example dict]
  media: dict  # relative path -> spec


def split_of(rng, n: int) -> str:
  if n < 2:
    return ("test", "val")[n]
  u = rng.random()
  return "test" if u < 0.05 else "val" if u < 0.10 else "train"


def _jsonable(objects):
  return [{**o, "cell": list(o["cell"])} for o in objects]


class _Planner:
  def __init__(self):
    self.plan = Plan({s: [] for s in SPLITS}, {})
    self.counter = {}

  def media(self, kind: str, split: str, spec, ext: str) -> str:
    n = self.counter[(kind, split)] = self.counter.get((kind, split), -1) + 1
    path = f"{kind}/{split}/{kind[:-1]}_{n:05d}.{ext}"
    self.plan.media[path] = spec
    return path

  def image(self, split, objects):
    return self.media("images", split, ("image", objects), "png")

  def video(self, split, o, end):
    return self.media("videos", split, ("video", (o, end)), "npy")

  def audio(self, split, text, voice):
    return self.media("audios", split, ("audio", (text, voice)), "wav")


def _image_text(p, rng, split):
  objs = W.random_scene(rng)
  return {
    "type": "image_text",
    "image": p.image(split, objs),
    "text": W.caption(objs),
    "attributes": _jsonable(objs),
  }


def _interleaved(p, rng, split):
  steps = W.story(rng, steps=int(rng.integers(2, 5)))
  parts = [x for text, scene in steps for x in ({"text": text}, {"image": p.image(split, scene)})]
  return {"type": "interleaved", "parts": parts, "attributes": [_jsonable(s) for _, s in steps]}


def _video_text(p, rng, split):
  o, end = W.motion(rng)
  return {
    "type": "video_text",
    "video": p.video(split, o, end),
    "text": W.motion_caption(o, end),
    "attributes": {"object": _jsonable([o])[0], "end": list(end)},
  }


def _utterance(rng) -> str:
  return W.caption(W.random_scene(rng)) if rng.random() < 0.5 else W.sentence(rng)


def _speech_text(p, rng, split):
  text, voice = _utterance(rng), int(rng.integers(len(VOICES)))
  return {
    "type": "speech_text",
    "audio": p.audio(split, text, voice),
    "text": text,
    "sample_rate": SAMPLE_RATE,
    "voice": VOICES[voice][0],
  }


def _text(p, rng, split):
  return {"type": "text", "text": W.sentence(rng)}


def _sft(p, rng, split):
  kind = SFT_KINDS[int(rng.integers(len(SFT_KINDS)))]
  attrs = {"task": kind}
  if kind in ("describe", "draw"):
    objs = W.random_scene(rng)
    image, cap = p.image(split, objs), W.caption(objs)
    attrs["attributes"] = _jsonable(objs)
    if kind == "describe":
      turns = [[{"image": image}, {"text": "Describe this image."}], cap]
    else:
      turns = [f"Draw {cap}.", [{"image": image}]]
  elif kind in ("transcribe", "say"):
    text, voice = _utterance(rng), int(rng.integers(len(VOICES)))
    audio = p.audio(split, text, voice)
    attrs.update(text=text, voice=VOICES[voice][0])
    turns = (
      [[{"audio": audio}, {"text": "Transcribe this speech."}], text]
      if kind == "transcribe"
      else [f'Say this sentence: "{text}"', [{"audio": audio}]]
    )
  else:
    o, end = W.motion(rng)
    video = p.video(split, o, end)
    attrs.update(object=_jsonable([o])[0], end=list(end))
    if kind == "describe_video":
      turns = [[{"video": video}, {"text": "Describe this video."}], W.motion_caption(o, end)]
    else:
      q = int(rng.integers(3))
      answer = (
        f"It is {o['colour']}.",
        f"A {o['shape']}.",
        f"It moves from {W.PLACES[o['cell']]} to {W.PLACES[end]}.",
      )[q]
      turns = [[{"video": video}, {"text": VIDEO_QUESTIONS[q]}], answer]
  messages = [{"role": "system", "content": SYSTEM}] if rng.random() < 0.3 else []
  messages += [{"role": "user", "content": turns[0]}, {"role": "assistant", "content": turns[1]}]
  return {"type": "sft", "messages": messages, **attrs}


MAKERS = {
  "image_text": _image_text,
  "interleaved": _interleaved,
  "video_text": _video_text,
  "speech_text": _speech_text,
  "text": _text,
  "sft": _sft,
}


def make_plan(seed: int = 0, scale: float = 1.0) -> Plan:
  planner = _Planner()
  for k, (kind, count) in enumerate(COUNTS.items()):
    rng = np.random.default_rng([seed, k])
    for n in range(max(3, math.ceil(count * scale))):
      split = split_of(rng, n)
      planner.plan.examples[split].append(MAKERS[kind](planner, rng, split))
  return planner.plan
