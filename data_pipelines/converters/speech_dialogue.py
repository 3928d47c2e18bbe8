"""Speech-to-speech dialogues (a layout of this project; convert other corpora into it).

SRC is a JSONL file, one dialogue per line, audio paths relative to the file's folder:

    {"id": "d0", "system": "optional system text",
     "turns": [{"user_audio": "d0_u0.flac", "assistant_audio": "d0_a0.flac",
                "assistant_text": "optional text of the answer", "user_text": "optional"}]}

One "sft" row per dialogue: each user turn is its speech (input: content codes); each assistant
turn is its text (when given) then its speech (output: all layers), as MIO's speech SFT answers
in text and speech. `user_text` is kept for evaluation only and never enters the row.
"""

from __future__ import annotations

import json
import os

from data_pipelines.converters.common import ConvertOptions, bad, rel, require, text_or_none


def _audio(base: str, name, out_dir: str, what: str, where: str) -> dict:
  if not isinstance(name, str) or not name:
    raise ValueError(f"{where}: no {what}")
  path = name if os.path.isabs(name) else os.path.join(base, name)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{where}: {what} file not found: {path}")
  return {"audio": rel(path, out_dir)}


def _messages(dialogue: dict, base: str, out_dir: str, where: str) -> list:
  turns = dialogue.get("turns")
  if not isinstance(turns, list) or not turns:
    raise ValueError(f"{where}: no turns")
  messages = []
  if text_or_none(dialogue.get("system")):
    messages.append({"role": "system", "content": dialogue["system"].strip()})
  for k, turn in enumerate(turns):
    at = f"{where} turn {k}"
    if not isinstance(turn, dict):
      raise ValueError(f"{at}: not an object")
    answer = text_or_none(turn.get("assistant_text"))
    messages.append(
      {"role": "user", "content": [_audio(base, turn.get("user_audio"), out_dir, "user_audio", at)]}
    )
    speech = _audio(base, turn.get("assistant_audio"), out_dir, "assistant_audio", at)
    messages.append(
      {"role": "assistant", "content": ([{"text": answer}] if answer else []) + [speech]}
    )
  return messages


def convert(opts: ConvertOptions):
  path = require(opts.src, "speech dialogue JSONL")
  base = opts.media_root or os.path.dirname(os.path.abspath(path))
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  for n, line in enumerate(lines, 1):
    if not line.strip():
      continue
    where = f"{path}:{n}"
    try:
      dialogue = json.loads(line)
      if not isinstance(dialogue, dict):
        raise ValueError(f"{where}: not a JSON object")
      messages = _messages(dialogue, base, opts.out_dir, where)
    except json.JSONDecodeError:
      yield bad("bad_json", f"{where}: not JSON")
    except FileNotFoundError as e:
      yield bad("missing_audio", str(e))
    except ValueError as e:
      yield bad("bad_dialogue", str(e))
    else:
      yield {
        "type": "sft",
        "id": f"s2s_{dialogue.get('id', n)}",
        "messages": messages,
        "task": "s2s",
      }  # -> the SFT source sft_s2s (builders/raw.py)
