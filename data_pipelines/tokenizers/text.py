"""Text tokenizer: sentencepiece, trained here for the demo or loaded from a `tokenizer.model` (Yi).

Model files may be local or URLs (gs://): the model is read as bytes and loaded from memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable

import numpy as np

from mio_jax.io import paths

MODEL_FILE = "tokenizer.model"


class SentencePieceTokenizer:
  """`TextTokenizer` over a sentencepiece model file. encode adds no BOS/EOS."""

  def __init__(self, model_path: str):
    try:
      blob = paths.read_bytes(model_path)
    except (FileNotFoundError, IsADirectoryError):
      raise ValueError(f"sentencepiece model not found: {model_path}") from None
    self.model_path = model_path
    self._blob = blob
    self._sp = _processor(blob, model_path)
    self.vocab_size = int(self._sp.GetPieceSize())
    # sentencepiece reports -1 for a disabled special; keep -1 (documented in base.py).
    self.bos_id = int(self._sp.bos_id())
    self.eos_id = int(self._sp.eos_id())
    self.pad_id = int(self._sp.pad_id())
    # Whether every encoded text gets a leading "▁" (sentencepiece's add_dummy_prefix; Yi: no).
    self.adds_dummy_prefix = self._sp.EncodeAsPieces("a")[0].startswith("\u2581")

  @classmethod
  def load(cls, directory: str) -> SentencePieceTokenizer:
    return cls(paths.join(directory, MODEL_FILE))

  def save(self, directory: str) -> None:
    paths.makedirs(directory)
    paths.write_bytes(paths.join(directory, MODEL_FILE), self._blob)

  def encode(self, text: str) -> np.ndarray:
    if not isinstance(text, str):
      raise ValueError(f"text must be str, got {type(text).__name__}")
    if not text:
      raise ValueError("cannot tokenize empty text")
    return np.asarray(self._sp.EncodeAsIds(text), dtype=np.int32)

  def id_to_piece(self, tid: int) -> str:
    """The piece string of one id (e.g. "<s>" for BOS: MIO writes it into its prompt strings)."""
    return self._sp.IdToPiece(int(tid))

  def decode(self, ids) -> str:
    ids = np.asarray(ids).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
      raise ValueError(
        f"text ids must lie in [0, {self.vocab_size}), got [{ids.min()}, {ids.max()}]"
      )
    return self._sp.DecodeIds(ids.tolist())


def train_sentencepiece(
  texts: Iterable[str],
  out_dir: str,
  vocab_size: int,
  model_type: str = "bpe",
  seed: int = 0,
  character_coverage: float = 1.0,
) -> SentencePieceTokenizer:
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
  tmp = tempfile.mkdtemp(prefix="mio_jax_spm-")  # the trainer writes local files only
  try:
    prefix = os.path.join(tmp, "tokenizer")
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.Train(
      sentence_iterator=iter(texts),
      model_prefix=prefix,
      vocab_size=vocab_size,
      model_type=model_type,
      byte_fallback=True,
      character_coverage=character_coverage,
      num_threads=1,
      input_sentence_size=0,
      shuffle_input_sentence=False,
      unk_id=0,
      bos_id=1,
      eos_id=2,
      pad_id=-1,
      split_digits=True,
      normalization_rule_name="identity",  # exact round trip: no NFKC rewriting
      remove_extra_whitespaces=False,
      hard_vocab_limit=False,
      minloglevel=2,
    )
    # Only the .model: it holds everything, so the directory stays minimal.
    paths.makedirs(out_dir)
    model = paths.join(out_dir, MODEL_FILE)
    paths.copy_file(prefix + ".model", model)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return SentencePieceTokenizer(model)


def _processor(blob: bytes, where: str):
  import sentencepiece as spm

  sp = spm.SentencePieceProcessor()
  try:
    sp.LoadFromSerializedProto(blob)
  except (OSError, RuntimeError) as e:
    raise ValueError(f"cannot read sentencepiece model {where}: {e}") from e
  return sp


def load_text_tokenizer(directory: str) -> SentencePieceTokenizer | None:
  path = paths.join(directory, MODEL_FILE)
  return SentencePieceTokenizer(path) if paths.exists(path) else None
