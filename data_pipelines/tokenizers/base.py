"""Tokenizer interfaces shared by the offline pipeline (`data_pipelines/`) and `generate`.

Every tokenizer maps raw media to int32 codes in its *own* range ([0, vocab_size) for text,
[0, codebook_size) for image/speech); `mio_jax.vocab.Vocab` then offsets codes into the unified id
space. Built-in tokenizers save to a directory with JSON + numpy `.npz` only (never pickle).

Directory layout read by `load_tokenizers(dir)` (each part optional):

    dir/text/tokenizer.model         sentencepiece model (the way Yi ships it)
    dir/image/tokenizer.json         {"kind": "kmeans_vq" | "hf_vqvae", ...} + that kind's files
    dir/speech/tokenizer.json        {"kind": "mel_rvq" | "mimi" | "speechtokenizer", ...} + files
    dir/video/tokenizer.json         optional {"num_keyframes": K, "method": ...}; video needs image/

Shapes: images are HxWx3 uint8; waves are float32 [n] in [-1, 1]; speech codes are [num_layers, T]
with layer 0 = content (semantic) and layers 1.. = timbre/residual, T at `frame_rate` per second.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol, runtime_checkable

import numpy as np

TOKENIZER_JSON = "tokenizer.json"  # per-part config file; its "kind" picks the class to load


@runtime_checkable
class TextTokenizer(Protocol):
  vocab_size: int
  bos_id: Optional[int]  # None or -1 when the model has none
  eos_id: Optional[int]
  pad_id: Optional[int]

  def encode(self, text: str) -> np.ndarray:
    """int32 [n] ids, no BOS/EOS added. Raises ValueError on empty text."""

  def decode(self, ids) -> str:
    ...


@runtime_checkable
class ImageTokenizer(Protocol):
  codebook_size: int
  tokens_per_image: int
  image_size: int  # square side in pixels; inputs of any size are resized to it

  def encode(self, image_HxWx3: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 (any H, W) -> int32 [tokens_per_image] codes in [0, codebook_size)."""

  def decode(self, codes) -> np.ndarray:
    """int32 [tokens_per_image] -> uint8 [image_size, image_size, 3]."""


@runtime_checkable
class SpeechTokenizer(Protocol):
  sample_rate: int   # of decoded waves, and the rate encode works at internally
  frame_rate: float  # code frames per second (50 in MIO; Mimi 12.5)
  codebook_size: int  # codes per layer
  num_layers: int    # layer 0 = content, 1.. = timbre/residual

  def encode(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 [n] mono at `sample_rate` -> int32 [num_layers, T]. Other rates are resampled."""

  def decode(self, codes) -> np.ndarray:
    """int32 [num_layers, T] (or content-only [1, T]) -> float32 [n] at `self.sample_rate`."""


@runtime_checkable
class VideoTokenizer(Protocol):
  image: ImageTokenizer

  def keyframes(self, frames_NxHxWx3: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 [K, H, W, 3] keyframes (K <= N)."""

  def encode(self, frames_NxHxWx3: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> int32 [K, tokens_per_image] (keyframes, each tokenized as an image)."""

  def decode(self, codes_KxT) -> np.ndarray:
    """int32 [K, tokens_per_image] -> uint8 [K, image_size, image_size, 3]."""


@dataclasses.dataclass
class Tokenizers:
  """What `load_tokenizers(dir)` returns; parts missing from the directory are None."""

  text: Optional[TextTokenizer] = None
  image: Optional[ImageTokenizer] = None
  speech: Optional[SpeechTokenizer] = None
  video: Optional[VideoTokenizer] = None
