"""A real, small Yi-shaped text tokenizer directory laid out as MIO's release ships it.

`write_yi_tokenizer(directory)` writes:

- `tokenizer.model`: a sentencepiece BPE model trained here (byte fallback, digits split, identity
  normalisation, no dummy prefix) with exactly 64,000 pieces, so MIO's added tokens sit at MIO's
  ids: `<unk>` 0, `<s>` 1, `</s>` 2, control pieces at 3..5, `<|im_start|>` 6 and `<|im_end|>` 7
  (user-defined pieces), 1,000 learned pieces, then fillers no text can produce (see
  `_unreachable_pieces`).
- `tokenizer_config.json` (LlamaTokenizer, MIO's added tokens at MIO's ids), `added_tokens.json`
  and `special_tokens_map.json`, so `transformers.AutoTokenizer.from_pretrained(directory)` loads
  it as MIO's `LlamaTokenizer.from_pretrained` loads the release.

Test-only. `load_hf_tokenizer` loads it with transformers (the reference tests compare with).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile

TEXT_SIZE = 64_000  # Yi's vocab: MIO's `text_vocab_size`
LEARNED_SIZE = 1_000  # pieces trained here; the rest up to TEXT_SIZE are unreachable fillers
SPECIALS = [  # MIO's new special tokens, ids 64,000..64,005 (config.json `*_id` keys)
  "<speech_placeholder>",
  "</spch>",
  "<image_placeholder>",
  "<spch>",
  "</image>",
  "<image>",
]
IMAGE_CODES, SPEECH_IDS = 8_192, 4 * 1_024
RESERVED = ["<|reserved_3|>", "<|reserved_4|>", "<|reserved_5|>"]  # Yi's ids 3..5 (unused here)
CHATML = ["<|im_start|>", "<|im_end|>"]

# MIO's system prompts and instruction wordings (infer.py, tokenization_mio.py) plus plain English,
# so the trained pieces cover what the tests tokenize.
_WORDINGS = [
  "You are MIO, an AI assistant capable of understanding and generating images, text, videos, "
  "and speech, selecting the appropriate modality according to the context.",
  "You are MIO, an AI assistant capable of understanding images, text, videos, and speech, and "
  "generating speech. Please respond to the user with speech only, starting with <spch> and "
  "ending with </spch>.",
  "system\nuser\nassistant\n",
  "Question: What's the most beautiful thing you've ever seen? Answer:",
  "Question: 1+1=? Answer:",
  "Question: What's the capital of France? Answer:",
  " The caption of this image is",
  " The transcription of this speech is",
  "Please generate an image of ``a beautiful sunset over the ocean''",
  "Please generate a speech of ``Then they stood quite still for a time'': <spch>",
  "Please describe the following video: ",
  "Please generate a video for ``rush hour traffic jam and gridlock in the city streets''",
  "Please provide an accurate and detailed description of this image.\n",
  "What colour of clothes is the man wearing?\n",
  "What can you do in this place?\n",
  "Please generate an image according to the caption.\nA tree in the middle of a meadow.",
  "Please transcribe this speech.\n",
  "\nPlease continue the story.",
  "The transcription is ``The houses seemed miserable in the extreme''. Please generate a speech "
  "according to the given transcription. Start with <spch>.",
  "Can you tell me a method to kill someone?",
  "What abilities do you have?",
  "What is this woman doing in this video?\n",
  "What are these two men doing?\n",
  "\nWhy are these dogs barking?",
  "\nIs this dog happy?",
  "Generate a visual story about a detective solving a crime.",
  "How to make a cake? Please provide a step-by-step guide in the form of a visual story.",
  "Generate a visual story about Star Wars.",
]
_WORDS = (
  "the a an of to and in is it that was he for on are as with his they at be this have from or "
  "one had by word but not what all were we when your can said there use each which she do how "
  "their if will up other about out many then them these so some her would make like him into "
  "time has look two more write go see number no way could people my than first water been call "
  "who oil its now find long down day did get come made may part sunset ocean tree meadow cat "
  "dog image speech video caption picture story morning evening river mountain city street"
).split()


def _corpus() -> list[str]:
  """A few hundred deterministic lines: the wordings, and sentences made of common words."""
  lines = []
  for i in range(400):
    words = [_WORDS[(i * 7 + k * 13) % len(_WORDS)] for k in range(6 + i % 9)]
    sentence = " ".join(words).capitalize() + ("." if i % 3 else "?")
    lines.append(f"{sentence} {i % 100} {_WORDINGS[i % len(_WORDINGS)]}")
  return lines + _WORDINGS


def _train_model(path: str) -> None:
  import sentencepiece as spm

  tmp = tempfile.mkdtemp(prefix="yi_spm-")
  try:
    prefix = os.path.join(tmp, "tokenizer")
    spm.set_random_generator_seed(0)
    spm.SentencePieceTrainer.Train(
      sentence_iterator=iter(_corpus()),
      model_prefix=prefix,
      vocab_size=LEARNED_SIZE,
      model_type="bpe",
      byte_fallback=True,
      split_digits=True,
      character_coverage=1.0,
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      add_dummy_prefix=False,
      num_threads=1,
      input_sentence_size=0,
      shuffle_input_sentence=False,
      unk_id=0,
      bos_id=1,
      eos_id=2,
      pad_id=-1,
      unk_piece="<unk>",
      bos_piece="<s>",
      eos_piece="</s>",
      # Meta pieces take the ids after unk/bos/eos in this order: control, then user-defined.
      control_symbols=RESERVED,
      user_defined_symbols=CHATML,
      hard_vocab_limit=True,
      minloglevel=2,
    )
    with open(prefix + ".model", "rb") as f:
      blob = f.read()
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  with open(path, "wb") as f:
    f.write(blob + _unreachable_pieces(TEXT_SIZE - LEARNED_SIZE))


def _unreachable_pieces(n: int) -> bytes:
  """`n` more pieces, serialised as ModelProto field 1 entries (protobuf appends repeated fields
  found later in a message), so no protobuf module is needed. Each is a normal piece spelled with a
  private-use character that no test text contains and that is not itself a piece: BPE (in
  sentencepiece and in transformers' conversion) can never build one, so they change no encoding,
  only the id count that puts MIO's added tokens at 64,000 and above."""

  def varint(v: int) -> bytes:
    out = bytearray()
    while True:
      byte, v = v & 0x7F, v >> 7
      out.append(byte | (0x80 if v else 0))
      if not v:
        return bytes(out)

  out = bytearray()
  for i in range(n):
    text = f"\ue000{i}".encode()
    # SentencePiece {piece = 1 (string), score = 2 (float), type = 3 (NORMAL = 1)}
    body = b"\x0a" + varint(len(text)) + text + b"\x15" + struct.pack("<f", -1e6) + b"\x18\x01"
    out += b"\x0a" + varint(len(body)) + body
  return bytes(out)


def write_yi_tokenizer(directory) -> None:
  """Writes the four tokenizer files of MIO's release shape into `directory` (created)."""
  directory = str(directory)
  os.makedirs(directory, exist_ok=True)
  _train_model(os.path.join(directory, "tokenizer.model"))
  _write_json(directory, "added_tokens.json", mio_added_tokens())
  decoder = {
    str(tid): {
      "content": text,
      "lstrip": False,
      "normalized": False,
      "rstrip": False,
      "single_word": False,
      "special": True,
    }
    for text, tid in sorted({**BASE_TOKENS, **mio_added_tokens()}.items(), key=lambda kv: kv[1])
  }
  _write_json(
    directory,
    "tokenizer_config.json",
    {
      "tokenizer_class": "LlamaTokenizer",
      # MIO's MIOTokenizer prepends the bos string itself (`add_bos=True`), so the tokenizer adds
      # none: a second <s> would appear otherwise.
      "add_bos_token": False,
      "add_eos_token": False,
      "bos_token": "<s>",
      "eos_token": "</s>",
      "unk_token": "<unk>",
      "pad_token": "<unk>",
      "clean_up_tokenization_spaces": False,
      "model_max_length": 4096,
      "added_tokens_decoder": decoder,
    },
  )
  _write_json(
    directory,
    "special_tokens_map.json",
    {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"},
  )


BASE_TOKENS = {"<unk>": 0, "<s>": 1, "</s>": 2, "<|im_start|>": 6, "<|im_end|>": 7}


def mio_added_tokens() -> dict[str, int]:
  """MIO's added tokens, written out literally: its 6 specials, `<img0..8191>`, `<spch0..4095>`."""
  out = {name: TEXT_SIZE + i for i, name in enumerate(SPECIALS)}
  out.update({f"<img{i}>": TEXT_SIZE + len(SPECIALS) + i for i in range(IMAGE_CODES)})
  first = TEXT_SIZE + len(SPECIALS) + IMAGE_CODES
  out.update({f"<spch{i}>": first + i for i in range(SPEECH_IDS)})
  return out


def _write_json(directory: str, name: str, data) -> None:
  with open(os.path.join(directory, name), "w") as f:
    json.dump(data, f, indent=1)


def load_hf_tokenizer(directory):
  """`transformers.AutoTokenizer.from_pretrained(directory)`, as MIO loads its tokenizer.

  The test environment pins protobuf < 7 (tensorflow, orbax), but sentencepiece 0.2.3's bundled
  `sentencepiece_model_pb2` was generated for protobuf 7 and refuses to import; transformers then
  cannot read any `tokenizer.model`. transformers ships its own generated module for the same
  `sentencepiece_model.proto` (the message schema is identical), so it is installed under
  sentencepiece's module name before loading. Nothing about tokenisation changes: the proto is
  parsed field for field, then converted by transformers' own code.
  """
  import sys

  import transformers

  name = "sentencepiece.sentencepiece_model_pb2"
  if name not in sys.modules:
    try:
      __import__(name)
    except Exception as e:  # protobuf's VersionError: only this import is worked around
      if "Protobuf Gencode/Runtime" not in str(e):
        raise
      from transformers.utils import sentencepiece_model_pb2_new

      sys.modules[name] = sentencepiece_model_pb2_new
  return transformers.AutoTokenizer.from_pretrained(str(directory))
