"""Multi-turn chat: history files, MIO's system prompts, and the prompt for the next reply.

A history is a JSON list of turns, the same shape the CLI writes back after each reply:

    [{"role": "system", "content": "..."},
     {"role": "user", "content": "What is in this picture?", "media": {"image": "cat.png"}},
     {"role": "assistant", "content": "A cat.", "media": {"speech": "turn0/answer_speech0.wav"}}]

`media` maps image / speech / video to files (paths relative to the history file). The prompt is
MIO's chat template (mio_jax/tokens/chat_format.py), as `Builder.chat` lays out SFT records: the
system
turn first (`mode` "std" / "voice", or "custom": the history's own first system turn), turns
separated by "\\n", then `<|im_start|>assistant\\n` opens the reply. A turn's media goes where its
text puts MIO's placeholders (`<image_placeholder_0>`: the image, then the video's keyframes;
`<speech_placeholder_0>`), else where the model's training corpus puts it
(prompting.Wordings.media_first). Speech in assistant turns is output speech (all layers),
elsewhere content-only input speech, as in training.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from mio_jax.errors import UserError
from mio_jax.generate import prompting
from mio_jax.io import paths
from mio_jax.tokens import chat_format, layouts

STANDARD_SYSTEM, VOICE_SYSTEM = prompting.STANDARD_SYSTEM, prompting.VOICE_SYSTEM
MEDIA_KINDS = ("image", "speech", "video")


@dataclasses.dataclass
class Turn:
  role: str
  content: str = ""
  media: dict = dataclasses.field(default_factory=dict)  # kind → file path

  def to_json(self) -> dict:
    out = {"role": self.role, "content": self.content}
    if self.media:
      out["media"] = dict(self.media)
    return out


def parse_history(data, where: str, base_dir: str = "") -> list[Turn]:
  """JSON turns → Turns; media paths made absolute against `base_dir`. UserError on bad shapes."""
  if not isinstance(data, list):
    raise UserError(f"{where}: a history is a JSON list of turns")
  turns = []
  for i, t in enumerate(data):
    if not isinstance(t, dict) or t.get("role") not in layouts.ROLES:
      raise UserError(f"{where}: turn {i} needs a role in {layouts.ROLES}")
    media = t.get("media") or {}
    if not isinstance(media, dict) or set(media) - set(MEDIA_KINDS):
      raise UserError(f"{where}: turn {i} media must map {MEDIA_KINDS} to files")
    media = {
      k: v if paths.is_url(v) or os.path.isabs(v) else paths.join(base_dir, v)
      for k, v in media.items()
    }
    if not isinstance(t.get("content", ""), str):
      raise UserError(f"{where}: turn {i} content must be a string")
    turns.append(Turn(t["role"], t.get("content", ""), media))
  return turns


def load_history(path: str) -> list[Turn]:
  try:
    data = json.loads(paths.read_text(path))
  except (OSError, ValueError) as e:
    raise UserError(f"--history={path}: cannot read it ({type(e).__name__}: {e})") from e
  return parse_history(data, f"--history={path}", paths.parent(paths.absolute(path)))


def _relative_below(media: str, base: str) -> str:
  if paths.is_url(media) or paths.is_url(base):
    return media
  local = paths.absolute(media)
  return os.path.relpath(local, base) if local.startswith(base + os.sep) else media


def save_history(turns: list[Turn], path: str) -> str:
  """Media paths are written relative to the history file when they sit below it (a URL
  history keeps absolute media paths: relpath is only defined on local ones)."""
  base = paths.parent(paths.absolute(path))
  rows = []
  for t in turns:
    row = t.to_json()
    if t.media:
      row["media"] = {k: _relative_below(v, base) for k, v in t.media.items()}
    rows.append(row)
  paths.write_text(path, json.dumps(rows, indent=1) + "\n")
  return path


def encode_turn_media(tokenizers, turn: Turn, read_media) -> prompting.Media:
  """A turn's files → codes (`read_media(image=, speech=, video=)` → decoded arrays)."""
  raw = read_media(**{k: turn.media.get(k) for k in MEDIA_KINDS})
  return prompting.encode_media(tokenizers, **raw)


def system_mode(turns: list[Turn], system: str | None = None, mode: str | None = None) -> tuple:
  """(turns, mode) for MIO's template: an explicit `mode` wins; a history that opens with a
  system turn is "custom"; a `system` string is MIO's std / voice prompt or a custom one."""
  if mode is None:
    if turns and turns[0].role == "system":
      mode = "custom"
    elif system in (None, "", prompting.STANDARD_SYSTEM):
      mode = "std"
    elif system == prompting.VOICE_SYSTEM:
      mode = "voice"
    else:
      turns, mode = [Turn("system", system)] + list(turns), "custom"
  if mode == "custom" and not (turns and turns[0].role == "system"):
    raise UserError(
      "--mode=custom takes the system prompt from the history's first turn, which must be "
      "a system turn"
    )
  return list(turns), mode


def chat_string(
  builder: layouts.Builder,
  turns: list[Turn],
  media: list[prompting.Media],
  system: str | None = None,
  mode: str | None = None,
) -> str:
  """MIO's string for the next reply: system turn, each turn, `<|im_start|>assistant\\n`."""
  if len(media) != len(turns):
    raise ValueError(f"{len(turns)} turns but media for {len(media)}")
  if not any(t.role == "user" for t in turns):
    raise UserError("a chat needs at least one user turn")
  pairs = dict(zip(map(id, turns), media))
  turns, mode = system_mode(turns, system, mode)
  media_first = prompting.wordings(builder).media_first
  rendered = []
  for i, turn in enumerate(turns):
    m = pairs.get(id(turn), prompting.Media())
    output = turn.role == "assistant"
    try:
      content = prompting.fill_media(builder, turn.content, m, media_first, "\n", output)
    except ValueError as e:
      raise UserError(f"turn {i}: {e}") from None
    if not content and not (turn.role == "system" and i == 0):
      raise UserError(f"empty {turn.role} turn")
    rendered.append({"role": turn.role, "content": content})
  try:
    return chat_format.render_chat(rendered, mode, bos=chat_format.bos_string(builder.text))
  except chat_format.FormatError as e:
    raise UserError(str(e)) from None


def chat_prompt(
  builder: layouts.Builder,
  turns: list[Turn],
  media: list[prompting.Media],
  system: str | None = None,
  mode: str | None = None,
) -> np.ndarray:
  """The ids of `chat_string`, as MIO's tokenizer encodes it."""
  return prompting.encode_string(builder, chat_string(builder, turns, media, system, mode))
