"""LLaVA-style visual instruction data: a JSON list of
`{"id", "image" (optional), "conversations": [{"from": "human"|"gpt"|"system", "value"}]}`,
where a human turn holds `<image>` where the image goes (llava_v1_5_mix665k.json, LLaVA-Instruct).
Image paths resolve against `--media_root` (default: the JSON's folder).

One "sft" row per conversation (task "vqa" with an image, "chat" without): the image part
takes the place of `<image>` (before the first human turn's text when no turn names it); loss
on the gpt turns only (builders' chat layout).
"""

from __future__ import annotations

import json
import os

from data_pipelines.converters.common import ConvertOptions, SourceError, bad, rel, require

ROLES = {
  "human": "user",
  "user": "user",
  "gpt": "assistant",
  "assistant": "assistant",
  "system": "system",
}
IMAGE_TOKEN = "<image>"


def _content(value: str, image_part: dict | None) -> list:
  pieces = value.split(IMAGE_TOKEN)
  parts = []
  for i, text in enumerate(pieces):
    if i > 0 and image_part is not None:
      parts.append(image_part)
    if text.strip():
      parts.append({"text": text.strip()})
  return parts


def _messages(item: dict, image_part: dict | None, where: str) -> list:
  turns = item.get("conversations")
  if not isinstance(turns, list) or not turns:
    raise ValueError(f"{where}: no conversations")
  text = " ".join(str(t.get("value", "")) for t in turns if isinstance(t, dict))
  if image_part is None and IMAGE_TOKEN in text:
    raise ValueError(f"{where}: a turn holds {IMAGE_TOKEN} but the item names no image")
  need_image = image_part is not None and IMAGE_TOKEN not in text
  messages = []
  for t in turns:
    role = ROLES.get(t.get("from")) if isinstance(t, dict) else None
    if role is None or not isinstance(t.get("value"), str):
      raise ValueError(f"{where}: bad turn {t!r} (from must be one of {sorted(ROLES)})")
    parts = _content(t["value"], image_part)
    if need_image and role == "user":  # no <image> marker: the image opens the first question
      parts, need_image = [image_part, *parts], False
    if not parts:
      raise ValueError(f"{where}: empty {t.get('from')} turn")
    messages.append({"role": role, "content": parts})
  if not any(m["role"] == "assistant" for m in messages):
    raise ValueError(f"{where}: no gpt turn")
  return messages


def convert(opts: ConvertOptions):
  path = require(opts.src, "LLaVA conversation JSON")
  media_root = opts.media_root or os.path.dirname(os.path.abspath(path))
  with open(path, encoding="utf-8") as f:
    try:
      items = json.load(f)
    except json.JSONDecodeError as e:
      raise SourceError(f"{path}: not JSON: {e}") from None
  if not isinstance(items, list):
    raise SourceError(f"{path}: expected a JSON list of conversations")
  for i, item in enumerate(items):
    where = f"{path}: item {i} (id {item.get('id') if isinstance(item, dict) else None})"
    if not isinstance(item, dict):
      yield bad("bad_item", f"{where}: not an object")
      continue
    image_part = None
    if item.get("image"):
      image = os.path.join(media_root, str(item["image"]))
      if not os.path.isfile(image):
        yield bad("missing_image", f"{where}: image file not found: {image}")
        continue
      image_part = {"image": rel(image, opts.out_dir)}
    try:
      messages = _messages(item, image_part, where)
    except ValueError as e:
      yield bad("bad_conversation", str(e))
      continue
    # task -> the SFT source sft_<task> (builders/raw.py): image questions vs text-only chat.
    yield {
      "type": "sft",
      "id": f"llava_{item.get('id', i)}",
      "messages": messages,
      "task": "vqa" if image_part else "chat",
    }
