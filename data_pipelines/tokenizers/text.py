"""Text tokenizer: sentencepiece, trained here for the demo or loaded from a `tokenizer.model` (Yi)."""

from __future__ import annotations

import os
from typing import Iterable, Optional

import numpy as np

MODEL_FILE = "tokenizer.model"


class SentencePieceTokenizer:
  """`TextTokenizer` over a sentencepiece model file. encode adds no BOS/EOS."""

  def __init__(self, model_path: str):
    import sentencepiece as spm
    if not os.path.isfile(model_path):
      raise ValueError(f"sentencepiece model not found: {model_path}")
    self.model_path = model_path
    self._sp = spm.SentencePieceProcessor()
    try:
      self._sp.Load(model_path)
    except (OSError, RuntimeError) as e:
      raise ValueError(f"cannot read sentencepiece model {model_path}: {e}") from e
    self.vocab_size = int(self._sp.GetPieceSize())
    # sentencepiece reports -1 for a disabled special; keep -1 (documented in base.py).
    self.bos_id = int(self._sp.bos_id())
    self.eos_id = int(self._sp.eos_id())
    self.pad_id = int(self._sp.pad_id())

  @classmethod
  def load(cls, directory: str) -> "SentencePieceTokenizer":
    return cls(os.path.join(directory, MODEL_FILE))

  def save(self, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(self.model_path, "rb") as f:
      blob = f.read()
    with open(os.path.join(directory, MODEL_FILE), "wb") as f:
      f.write(blob)

  def encode(self, text: str) -> np.ndarray:
    if not isinstance(text, str):
      raise ValueError(f"text must be str, got {type(text).__name__}")
    if not text:
      raise ValueError("cannot tokenize empty text")
    return np.asarray(self._sp.EncodeAsIds(text), dtype=np.int32)

  def decode(self, ids) -> str:
    ids = np.asarray(ids).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
      raise ValueError(f"text ids must lie in [0, {self.vocab_size}), got [{ids.min()}, {ids.max()}]")
    return self._sp.DecodeIds(ids.tolist())


def train_sentencepiece(texts: Iterable[str], out_dir: str, vocab_size: int,
                        model_type: str = "bpe", seed: int = 0,
                        character_coverage: float = 1.0) -> SentencePieceTokenizer:
  """Trains `out_dir/tokenizer.model` on `texts` and returns it loaded.

  Deterministic: one thread, no sentence sampling/shuffling, fixed seed. byte_fallback so any text
  (any script, emoji) encodes and decodes exactly. Ids: 0 unk, 1 bos, 2 eos, then 3..258 bytes.
  """
  import sentencepiece as spm
  texts = [t for t in texts if t]
  if not texts:
    raise ValueError("train_sentencepiece got no non-empty texts")
  if vocab_size < 259 + 8:  # 3 specials + 256 byte pieces + some merges
    raise ValueError(f"vocab_size {vocab_size} too small for byte fallback (need >= 267)")
  os.makedirs(out_dir, exist_ok=True)
  prefix = os.path.join(out_dir, "tokenizer")
  spm.set_random_generator_seed(seed)
  spm.SentencePieceTrainer.Train(
      sentence_iterator=iter(texts), model_prefix=prefix, vocab_size=vocab_size,
      model_type=model_type, byte_fallback=True, character_coverage=character_coverage,
      num_threads=1, input_sentence_size=0, shuffle_input_sentence=False,
      unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True,
      normalization_rule_name="identity",  # exact round trip: no NFKC rewriting
      remove_extra_whitespaces=False, hard_vocab_limit=False, minloglevel=2)
  os.remove(prefix + ".vocab")  # the .model holds everything; keep the directory minimal
  return SentencePieceTokenizer(prefix + ".model")


def load_text_tokenizer(directory: str) -> Optional[SentencePieceTokenizer]:
  path = os.path.join(directory, MODEL_FILE)
  return SentencePieceTokenizer(path) if os.path.isfile(path) else None
