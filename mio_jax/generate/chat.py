"""Multi-turn chat: history files, MIO's system prompts, and the prompt for the next reply.

A history is a JSON list of turns, the same shape the CLI writes back after each reply:

    [{"role": "system", "content": "..."},
     {"role": "user", "content": "What is in this picture?", "media": {"image": "cat.png"}},
     {"role": "assistant", "content": "A cat.", "media": {"speech": "turn0/answer_speech0.wav"}}]

`media` maps image / speech / video to files (paths relative to the history file). Turns are laid
out as `Builder.chat` lays out SFT records (media first, then text, inside `<|im_start|>role\\n ..
<|im_end|>`), then `<|im_start|>assistant\\n` opens the reply. Speech in assistant turns is output
speech (all layers), elsewhere content-only input speech, as in training.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from mio_jax import layouts, paths
from mio_jax.errors import UserError
from mio_jax.generate import prompting

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


def chat_prompt(
  builder: layouts.Builder,
  turns: list[Turn],
  media: list[prompting.Media],
  system: str | None = None,
) -> np.ndarray:
  """`<bos>` + each turn + `<|im_start|>assistant\\n`; `system` goes first unless a turn is one."""
  rows = [np.asarray([builder.text.bos_id])]
  if system and not any(t.role == "system" for t in turns):
    turns, media = [Turn("system", system)] + list(turns), [prompting.Media()] + list(media)
  if not any(t.role == "user" for t in turns):
    raise UserError("a chat needs at least one user turn")
  for turn, m in zip(turns, media):
    pieces = _turn_media(builder, m, output=turn.role == "assistant")
    if turn.content:
      pieces.append(builder.words(turn.content))
    if not pieces:
      raise UserError(f"empty {turn.role} turn")
    rows += [
      builder.special("<|im_start|>"),
      builder.words(turn.role + "\n"),
      *pieces,
      builder.special("<|im_end|>"),
    ]
  rows += [builder.special("<|im_start|>"), builder.words("assistant\n")]
  return np.concatenate([np.asarray(r, np.int32).ravel() for r in rows])


def _turn_media(builder, m: prompting.Media, output: bool) -> list[np.ndarray]:
  pieces = []
  if m.video is not None:
    pieces.append(builder.video(m.video))
  if m.image is not None:
    pieces.append(builder.image(m.image))
  if m.speech is not None:
    pieces.append(builder.speech_out(m.speech) if output else builder.speech_in(m.speech))
  return pieces
