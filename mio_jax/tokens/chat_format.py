"""MIO's prompt format: the exact string MIO's `MIOTokenizer` builds, and the ids its Hugging Face
tokenizer gives that string, without transformers.

MIO (tokenization_mio.py, infer.py) builds every input as ONE string and tokenizes it with the
model directory's `LlamaTokenizer` (Yi's sentencepiece model plus added tokens):

    chat    <s><|im_start|>system\\n{SYSTEM}<|im_end|>\\n<|im_start|>user\\n{query}<|im_end|>\\n
            <|im_start|>assistant\\n{response}<|im_end|>\\n ... <|im_start|>assistant\\n
            SYSTEM: "std" (`STD_SYSTEM`), "voice" (`VOICE_SYSTEM`), or "custom" (the conversation's
            first turn, which must be a system turn). The system turn always comes first.
    base    <s>{prompt}                 e.g. "<image_placeholder_0> The caption of this image is"

then replaces `<image_placeholder_j>` by `<image><img{c}>..</image>` and `<speech_placeholder_j>`
by `<spch><spch{c}>..</spch>` (input speech: content codes; output speech: content codes, then
timbre layer k as `<spch{k * codes + c}>`, k = 1..3). A video is its frames, one image each.

`encode` turns such a string into ids as transformers 5's `LlamaTokenizer` does on MIO's files
(checked in tests/test_mio_format.py against `AutoTokenizer.from_pretrained`): the string is cut at
every added/special token (bos/eos/unk, ChatML, the layout's specials, `<img{c}>`, `<spch{i}>`),
which map straight to their ids through our `Vocab` (so the same code serves the `mio` layout and
the demo `mio_jax` layout); the text between them is encoded by sentencepiece chunk by chunk, with
no dummy prefix except on a chunk at the very start of the string (Metaspace `prepend_scheme=
"first"`: MIO's strings start with `<s>`, so in practice never). Spaces and newlines around added
tokens stay in the text chunks (the added tokens neither lstrip nor rstrip).

A sentencepiece model that adds a dummy prefix itself (the demo tokenizers trained here) would
prefix every chunk; for those a chunk's single leading space is left to the dummy prefix, so
" The caption" encodes as "▁The caption", not "▁▁The caption". Yi's model adds none.

SFT records (`Builder.chat`) are this same string without the final `<|im_start|>assistant\\n`
and without the last separator (MIO's `add_generation_prompt=False`): no `</s>` follows the last
`<|im_end|>`. MIO released no training code, so the loss mask is our choice: assistant content and
its `<|im_end|>` are targets; the "\\n" separator after an assistant's `<|im_end|>` is not (at
inference generation stops at `<|im_end|>`, so the separator is never predicted; it belongs to the
template, like the role headers).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from mio_jax.tokens.vocab import Vocab

# tokenization_mio.py's MIO_STD_MODE_SYSTEM / MIO_VOICE_MODE_SYSTEM, word for word.
STD_SYSTEM = (
  "You are MIO, an AI assistant capable of understanding and generating images, "
  "text, videos, and speech, selecting the appropriate modality according to the "
  "context."
)
VOICE_SYSTEM = (
  "You are MIO, an AI assistant capable of understanding images, text, videos, and "
  "speech, and generating speech. Please respond to the user with speech only, "
  "starting with <spch> and ending with </spch>."
)
SYSTEM_MODES = ("std", "voice", "custom")
ROLES = ("system", "user", "assistant")
SEPARATOR = "\n"
ASSISTANT_STARTER = "<|im_start|>assistant\n"
IMAGE_PLACEHOLDER = "<image_placeholder_{j}>"
SPEECH_PLACEHOLDER = "<speech_placeholder_{j}>"
DEFAULT_BOS = "<s>"  # Yi's / MIO's bos string when the text tokenizer does not name its own

_PLACEHOLDER = re.compile(r"<(image|speech)_placeholder_(\d+)>")
_MEDIA_TOKEN = re.compile(r"<(img|spch)(\d+)>")
SPIECE_SPACE = "\u2581"


class FormatError(ValueError):
  """A prompt that cannot be rendered or encoded in MIO's format; says what and where."""


def turn(role: str, content: str) -> str:
  """`<|im_start|>{role}\\n{content}<|im_end|>` (MIO's format_system/user/assistant)."""
  if role not in ROLES:
    raise FormatError(f"unknown chat role {role!r}; known: {ROLES}")
  return f"<|im_start|>{role}\n{content}<|im_end|>"


def system_prompt(mode: str, turns: Sequence[dict] = ()) -> str:
  """The system text of a conversation in `mode` (MIO's apply_chat_template `mode`)."""
  if mode == "std":
    return STD_SYSTEM
  if mode == "voice":
    return VOICE_SYSTEM
  if mode == "custom":
    if not turns or turns[0].get("role") != "system":
      raise FormatError(
        "mode 'custom' takes the system prompt from the first turn, which must be a system turn"
      )
    return turns[0]["content"]
  raise FormatError(f"unknown system mode {mode!r}; choose one of {SYSTEM_MODES}")


def render_chat(
  turns: Sequence[dict],
  mode: str = "std",
  add_generation_prompt: bool = True,
  bos: str | None = DEFAULT_BOS,
) -> str:
  """MIO's `apply_chat_template(..., tokenize=False)`: `turns` are {"role", "content"} with
  content already a string (placeholders expanded or not). System turns other than the custom
  one are dropped, as MIO drops them."""
  out = [turn("system", system_prompt(mode, turns)) + SEPARATOR]
  for t in turns:
    role = t.get("role")
    if role == "system":
      continue
    if role not in ROLES:
      raise FormatError(f"unknown chat role {role!r}; known: {ROLES}")
    out.append(turn(role, t["content"]) + SEPARATOR)
  text = "".join(out)
  text = text + ASSISTANT_STARTER if add_generation_prompt else text[: -len(SEPARATOR)]
  return (bos or "") + text


# ---- media strings ------------------------------------------------------------------------------
def image_string(codes) -> str:
  """`<image><img{c}>..</image>` for one image's codes."""
  return "<image>" + "".join(f"<img{int(c)}>" for c in np.ravel(codes)) + "</image>"


def video_string(codes_KxT) -> str:
  """A video is its keyframes, one image span each, in time order (MIO's frame placeholders)."""
  codes_KxT = np.asarray(codes_KxT)
  if codes_KxT.ndim != 2 or len(codes_KxT) == 0:
    raise FormatError(f"video codes must be [keyframes, tokens], got shape {codes_KxT.shape}")
  return "".join(image_string(c) for c in codes_KxT)


def speech_string(codes_LxT, output: bool, codes_per_layer: int) -> str:
  """`<spch>` content `</spch>` for input speech; with `output`, every layer in turn, layer k's
  codes offset by `k * codes_per_layer` (MIO's `tokenize_speeches(add_timbre=True)`)."""
  codes_LxT = np.atleast_2d(np.asarray(codes_LxT))
  layers = codes_LxT if output else codes_LxT[:1]
  body = "".join(
    f"<spch{k * codes_per_layer + int(c)}>" for k, row in enumerate(layers) for c in row
  )
  return "<spch>" + body + "</spch>"


def expand_placeholders(text: str, images: Sequence[str] = (), speeches: Sequence[str] = ()) -> str:
  """MIO's `__call__`: every `<image_placeholder_j>` becomes `images[j]`, then every
  `<speech_placeholder_j>` becomes `speeches[j]`. A placeholder without media is an error here
  (MIO would tokenize the placeholder text itself)."""
  for j, s in enumerate(images):
    text = text.replace(IMAGE_PLACEHOLDER.format(j=j), s)
  for j, s in enumerate(speeches):
    text = text.replace(SPEECH_PLACEHOLDER.format(j=j), s)
  left = _PLACEHOLDER.search(text)
  if left:
    given = len(images) if left.group(1) == "image" else len(speeches)
    raise FormatError(f"{left.group(0)} has no media: the prompt came with {given} {left.group(1)}")
  return text


def has_placeholders(text: str) -> bool:
  return bool(_PLACEHOLDER.search(text or ""))


# ---- string -> ids ------------------------------------------------------------------------------
def _piece(text_tokenizer, tid) -> str | None:
  piece = getattr(text_tokenizer, "id_to_piece", None)
  if tid is None or tid < 0:
    return None
  return piece(int(tid)) if piece else None


def bos_string(text_tokenizer) -> str:
  """The bos token's string (`<s>` in MIO's release): MIO prepends it to every prompt."""
  return _piece(text_tokenizer, getattr(text_tokenizer, "bos_id", None)) or DEFAULT_BOS


def special_strings(vocab: Vocab, text_tokenizer) -> dict[str, int]:
  """Every string `encode` cuts out as one id: the text model's bos/eos/unk pieces, ChatML and
  the layout's special block. `<img{c}>` / `<spch{i}>` are matched by pattern (see `encode`)."""
  out = {bos_string(text_tokenizer): int(text_tokenizer.bos_id)}
  eos = _piece(text_tokenizer, getattr(text_tokenizer, "eos_id", None))
  if eos:
    out[eos] = int(text_tokenizer.eos_id)
  if _piece(text_tokenizer, 0) == "<unk>":
    out["<unk>"] = 0
  for name in (*vocab.specials, "<|im_start|>", "<|im_end|>"):
    out[name] = vocab.special_id(name)
  return out


def _splitter(specials: dict[str, int]) -> re.Pattern:
  names = sorted(specials, key=len, reverse=True)
  return re.compile("|".join([*(re.escape(n) for n in names), _MEDIA_TOKEN.pattern]))


def _media_id(vocab: Vocab, kind: str, n: int, token: str) -> int:
  if kind == "img":
    if n >= vocab.image_codes:
      raise FormatError(f"{token}: image codes are <img0>..<img{vocab.image_codes - 1}>")
    return vocab.image_start + n
  total = vocab.speech_layers * vocab.speech_codes
  if n >= total:
    raise FormatError(f"{token}: speech codes are <spch0>..<spch{total - 1}>")
  return vocab.image_start + vocab.image_codes + n


def adds_dummy_prefix(text_tokenizer) -> bool:
  """Whether the sentencepiece model puts "▁" before every text it encodes (demo models) or not
  (Yi's, whose LlamaTokenizer adds it only at the start of a string)."""
  flag = getattr(text_tokenizer, "adds_dummy_prefix", None)
  return True if flag is None else bool(flag)


def encode_text_chunk(text_tokenizer, chunk: str, at_start: bool) -> list[int]:
  """One run of text between added tokens, as transformers' LlamaTokenizer encodes it."""
  if not chunk:
    return []
  if adds_dummy_prefix(text_tokenizer):
    if chunk.startswith(" ") and len(chunk) > 1:
      chunk = chunk[1:]  # the dummy prefix stands for this space
  elif at_start and not chunk.startswith(" "):
    chunk = " " + chunk  # Metaspace(prepend_scheme="first"): one "▁" unless one is there
  return [int(i) for i in text_tokenizer.encode(chunk)]


def encode(
  text: str,
  vocab: Vocab,
  text_tokenizer,
  specials: dict[str, int] | None = None,
  string_start: bool = True,
) -> np.ndarray:
  """MIO's string → int32 ids (see the module docstring). `specials`: `special_strings(...)`,
  passed in when encoding many strings; `string_start=False` for a piece that continues one."""
  specials = specials or special_strings(vocab, text_tokenizer)
  ids: list[int] = []
  pos = 0
  for m in _splitter(specials).finditer(text):
    ids += encode_text_chunk(text_tokenizer, text[pos : m.start()], string_start and pos == 0)
    token = m.group(0)
    if token in specials:
      ids.append(specials[token])
    else:
      kind, n = _MEDIA_TOKEN.fullmatch(token).groups()
      ids.append(_media_id(vocab, kind, int(n), token))
    pos = m.end()
  ids += encode_text_chunk(text_tokenizer, text[pos:], string_start and pos == 0)
  return np.asarray(ids, np.int32)


def encode_with_mask(
  segments: Sequence[tuple[str, int]], vocab: Vocab, text_tokenizer
) -> tuple[np.ndarray, np.ndarray]:
  """(string, loss flag) pieces → (ids of the joined string, uint8 mask). The ids are exactly
  `encode("".join(strings))`; each id takes the flag of the piece it starts in, found by encoding
  each prefix (a sentencepiece merge across a boundary goes to the earlier piece)."""
  specials = special_strings(vocab, text_tokenizer)
  ids = encode("".join(t for t, _ in segments), vocab, text_tokenizer, specials)
  mask = np.zeros(ids.size, np.uint8)
  prefix, start = "", 0
  for text, flag in segments:
    prefix += text
    head = encode(prefix, vocab, text_tokenizer, specials)
    n = min(head.size, ids.size)
    end = int(np.argmin(head[:n] == ids[:n])) if not np.array_equal(head[:n], ids[:n]) else n
    mask[start:end] = flag
    start = max(start, end)
  return ids, mask
