"""The vocabulary side of HF checkpoints: MIO's config.json keys, the tokenizer's added tokens,
and the padding rows between an HF embedding and ours.

MIO's release (`m-a-p/MIO-7B-*`) names its layout in config.json (`text_vocab_size`,
`num_new_special_tokens`, `visual_vocab_size`, `speech_vocab_size` and one `*_id` key per
special) and spells media tokens `<img{c}>` / `<spch{i}>` in its tokenizer's added tokens. Those
ids are read from the files and compared with the `mio` layout, never assumed.
"""

from __future__ import annotations

import json

import numpy as np

from mio_jax.io import paths
from mio_jax.tokens.vocab import MIO_SPECIALS, Vocab

MIO_SIZE_KEYS = (
  "text_vocab_size",
  "num_new_special_tokens",
  "visual_vocab_size",
  "speech_vocab_size",
)
MIO_ID_KEYS = {
  "speech_placeholder_id": "<speech_placeholder>",
  "speech_eos_id": "</spch>",
  "image_placeholder_id": "<image_placeholder>",
  "speech_bos_id": "<spch>",
  "image_eos_id": "</image>",
  "image_bos_id": "<image>",
}
VOCAB_FILE = "mio_vocab.json"  # our exports' layout, next to config.json
# Where `convert_weights --from_mio=DIR` writes the tokenizers of a released directory (DIR/text,
# image, speech in mio_jax's layout), and where `--model=DIR` looks for them.
TOKENIZERS_DIR = "mio_jax_tokenizers"
MIO_SPEECH_LAYERS = 4  # SpeechTokenizer RVQ layers: content + 3 timbre
# Yi's token ids that MIO's config also names (LlamaConfig keys).
MIO_TEXT_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
# Files that list added tokens, and every tokenizer file an export copies from its source.
ADDED_TOKEN_FILES = ("tokenizer.json", "added_tokens.json", "tokenizer_config.json")
TOKENIZER_FILES = ADDED_TOKEN_FILES + ("tokenizer.model", "special_tokens_map.json")
# Placeholders are replaced by media before tokenising, so their strings are MIO's business: a
# tokenizer may spell them differently; only their ids are checked (via config.json).
_UNCHECKED_STRINGS = ("<speech_placeholder>", "<image_placeholder>")


class TokenizerMismatchError(ValueError):
  """An added token's id disagrees with the vocab layout; names the file, token and both ids."""


def is_mio_config(hf_config: dict) -> bool:
  return any(k in hf_config for k in (*MIO_SIZE_KEYS, *MIO_ID_KEYS))


def mio_vocab_from_config(hf_config: dict, where: str) -> Vocab:
  """The `mio` layout a config.json with MIO's keys describes; every key is checked."""
  missing = [k for k in (*MIO_SIZE_KEYS, *MIO_ID_KEYS) if k not in hf_config]
  if missing:
    raise ValueError(f"{where}: has some of MIO's vocab keys but not {missing}")
  if hf_config["num_new_special_tokens"] != len(MIO_SPECIALS):
    raise ValueError(
      f"{where}: num_new_special_tokens is {hf_config['num_new_special_tokens']}, "
      f"the mio layout has {len(MIO_SPECIALS)} ({', '.join(MIO_SPECIALS)})"
    )
  speech = hf_config["speech_vocab_size"]
  if not isinstance(speech, int) or speech % MIO_SPEECH_LAYERS:
    raise ValueError(
      f"{where}: speech_vocab_size {speech!r} is not {MIO_SPEECH_LAYERS} equal RVQ layers"
    )
  try:
    vocab = Vocab.mio(
      text_size=hf_config["text_vocab_size"],
      image_codes=hf_config["visual_vocab_size"],
      speech_codes=speech // MIO_SPEECH_LAYERS,
      speech_layers=MIO_SPEECH_LAYERS,
    )
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from e
  if hf_config.get("vocab_size") != vocab.size:
    raise ValueError(
      f"{where}: vocab_size is {hf_config.get('vocab_size')} but MIO's keys add up to {vocab.size}"
    )
  for key, name in MIO_ID_KEYS.items():
    if hf_config[key] != vocab.special_id(name):
      raise ValueError(
        f"{where}: {key} is {hf_config[key]}, the mio layout puts {name} at "
        f"{vocab.special_id(name)}"
      )
  return vocab


def mio_config_keys(vocab: Vocab) -> dict:
  """config.json keys that describe `vocab` the way MIO's release does."""
  return {
    "text_vocab_size": vocab.text_size,
    "num_new_special_tokens": len(vocab.specials),
    "visual_vocab_size": vocab.image_codes,
    "speech_vocab_size": vocab.speech_layers * vocab.speech_codes,
    **{key: vocab.special_id(name) for key, name in MIO_ID_KEYS.items()},
    **MIO_TEXT_IDS,
  }


def load_vocab(path: str) -> Vocab | None:
  """The vocab layout of an HF checkpoint dir: `mio` when config.json carries MIO's keys (checked
  against the tokenizer's added tokens when those files are present), else the one saved next
  to an exported checkpoint, else None for a plain text model."""
  vocab, config_file = None, paths.join(path, "config.json")
  if paths.exists(config_file):
    try:
      hf_config = json.loads(paths.read_text(config_file))
    except json.JSONDecodeError as e:
      raise ValueError(f"{config_file}: not valid JSON ({e})") from e
    if is_mio_config(hf_config):
      vocab = mio_vocab_from_config(hf_config, config_file)
      check_tokenizer(vocab, path)
  file = paths.join(path, VOCAB_FILE)
  if paths.exists(file):
    saved = Vocab.from_json(paths.read_text(file))
    if vocab is not None and saved != vocab:
      raise ValueError(
        f"{file}: vocab layout {saved.layout_name} ({saved.fingerprint()}) "
        f"disagrees with {config_file}'s MIO keys ({vocab.fingerprint()})"
      )
    vocab = saved
  return vocab


# ---- the tokenizer's added tokens ---------------------------------------------------------------
def _read_json(file: str, key: str, kind: type):
  try:
    data = json.loads(paths.read_text(file))
  except json.JSONDecodeError as e:
    raise ValueError(f"{file}: not valid JSON ({e})") from e
  value = data if key == "" else (data.get(key, kind()) if isinstance(data, dict) else None)
  if not isinstance(value, kind):
    raise ValueError(f"{file}: {key or 'the file'} must be a JSON {kind.__name__}")
  return value


def _pairs(file: str) -> list[tuple[str, int]]:
  """(string, id) of every added token one tokenizer file lists."""
  name = paths.basename(file)
  if name == "tokenizer.json":
    entries = _read_json(file, "added_tokens", list)
    pairs = [(e.get("content"), e.get("id")) for e in entries if isinstance(e, dict)]
  elif name == "added_tokens.json":
    pairs = list(_read_json(file, "", dict).items())
  else:
    decoder = _read_json(file, "added_tokens_decoder", dict)
    pairs = [(e.get("content") if isinstance(e, dict) else None, k) for k, e in decoder.items()]
  out = []
  for text, tid in pairs:
    try:
      out.append((text, int(tid)))
    except (TypeError, ValueError):
      raise ValueError(f"{file}: added token {text!r} has a non-integer id {tid!r}") from None
    if not isinstance(text, str):
      raise ValueError(f"{file}: added token id {tid} has no string content")
  return out


def tokenizer_files(path: str) -> list[str]:
  return [paths.join(path, f) for f in TOKENIZER_FILES if paths.exists(paths.join(path, f))]


def check_tokenizer(vocab: Vocab, path: str) -> list[str]:
  """Compares the added tokens of every tokenizer file in `path` with `vocab`'s ids (in both
  directions) → the files checked. A file that lists any of the layout's added tokens must list
  them all: a tokenizer without `<img5>` could not write the ids this model emits."""
  want = dict(vocab.added_tokens())
  for role in ("<|im_start|>", "<|im_end|>"):
    want[role] = vocab.special_id(role)
  owner = {tid: text for text, tid in want.items()}
  checked = []
  for file in tokenizer_files(path):
    if paths.basename(file) not in ADDED_TOKEN_FILES:
      continue
    pairs = _pairs(file)
    for text, tid in pairs:
      if text in want and text not in _UNCHECKED_STRINGS and want[text] != tid:
        raise TokenizerMismatchError(
          f"{file}: added token {text!r} has id {tid}, but the {vocab.layout_name} vocab "
          f"layout gives it id {want[text]}"
        )
      other = owner.get(tid)
      if (
        other is not None and other != text and text not in want and other not in _UNCHECKED_STRINGS
      ):
        raise TokenizerMismatchError(
          f"{file}: id {tid} is added token {text!r}, but the {vocab.layout_name} vocab layout "
          f"gives id {tid} to {other!r}"
        )
    present, added = {text for text, _ in pairs}, vocab.added_tokens()
    if present & set(added):  # ChatML alone does not count: Yi's own files list it
      absent = [t for t in added if t not in present and t not in _UNCHECKED_STRINGS]
      if absent:
        raise TokenizerMismatchError(
          f"{file}: lacks {len(absent)} added token(s) of the {vocab.layout_name} vocab "
          f"layout, e.g. {absent[:4]}"
        )
    checked.append(file)
  return checked


def copy_tokenizer(vocab: Vocab, source: str, out: str) -> list[str]:
  """Checks `source`'s tokenizer against `vocab`, then copies its files to `out` unchanged (so
  the export keeps the released token strings) → the names copied."""
  check_tokenizer(vocab, source)
  copied = []
  for file in tokenizer_files(source):
    paths.copy_file(file, paths.join(out, paths.basename(file)))
    copied.append(paths.basename(file))
  return copied


# ---- padding rows -------------------------------------------------------------------------------
def pad_rows(params: dict, rows: int) -> dict:
  """Grows `embedding`/`lm_head` from an HF vocab (e.g. MIO's 76,294) to our `rows` (a multiple
  of 128, so the vocab axis shards). Padding ids are never fed nor targets, but their logits join
  the softmax: the mean column puts them at an average token's logit, as for new tokens."""
  params = dict(params)
  emb_VxD, head_DxV = np.asarray(params["embedding"]), np.asarray(params["lm_head"])
  n = rows - emb_VxD.shape[0]
  if n < 0:
    raise ValueError(f"pad_rows: {emb_VxD.shape[0]} rows already exceed {rows}")
  mean_D = emb_VxD.mean(axis=0, dtype=np.float32).astype(emb_VxD.dtype)
  params["embedding"] = np.concatenate([emb_VxD, np.broadcast_to(mean_D, (n, mean_D.size))])
  mean_D = head_DxV.mean(axis=1, dtype=np.float32).astype(head_DxV.dtype)
  params["lm_head"] = np.concatenate(
    [head_DxV, np.broadcast_to(mean_D[:, None], (mean_D.size, n))], axis=1
  )
  return params


def strip_rows(params: dict, config, rows: int):
  """(params, config) with only the first `rows` vocab rows: an export in MIO's exact size."""
  params = dict(params)
  params["embedding"] = params["embedding"][:rows]
  params["lm_head"] = params["lm_head"][:, :rows]
  return params, config.replace(vocab_size=rows)
