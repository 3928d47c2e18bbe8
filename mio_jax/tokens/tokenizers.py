"""Tokenizer interfaces and loading: what generate and evaluate need to turn media into codes and
codes back into media.

Every tokenizer maps raw media to int32 codes in its *own* range ([0, vocab_size) for text,
[0, codebook_size) for image/speech); `mio_jax.tokens.vocab.Vocab` then offsets codes into the
unified id
space. Built-in tokenizers save to a directory with JSON + numpy `.npz` only (never pickle).

Directory layout read by `load_tokenizers(dir)` (each part optional):

    dir/text/tokenizer.model         sentencepiece model (the way Yi ships it)
    dir/image/tokenizer.json         {"kind": "kmeans_vq" | "hf_vqvae", ...} + that kind's files
    dir/speech/tokenizer.json        {"kind": "mel_rvq" | "mimi" | "speechtokenizer", ...} + files
    dir/video/tokenizer.json         optional {"num_keyframes": K, "method": ...}; needs image/

Shapes: images are HxWx3 uint8; waves are float32 [n] in [-1, 1]; speech codes are [num_layers, T]
with layer 0 = content (semantic) and layers 1.. = timbre/residual, T at `frame_rate` per second.

Implementations live with the offline jobs (data_pipelines/tokenizers/), which `register` each
kind here. `load_tokenizers` first imports the modules named in `PLUGINS` with importlib, by name:
the core never imports data_pipelines statically, and a new tokenizer plugs in by registering
its kind from a module added to `PLUGINS`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from typing import Protocol, runtime_checkable

import numpy as np

from mio_jax.io import paths

TOKENIZER_JSON = "tokenizer.json"  # per-part config file; its "kind" picks the class to load
PARTS = ("text", "image", "speech", "video")
# Text and video directories name no kind: each has one implementation, registered under these.
TEXT_KIND, VIDEO_KIND = "sentencepiece", "keyframes"
# Modules that register tokenizer kinds, imported by name before loading (see module doc).
PLUGINS = ["data_pipelines.tokenizers"]


@runtime_checkable
class TextTokenizer(Protocol):
  vocab_size: int
  bos_id: int | None  # None or -1 when the model has none
  eos_id: int | None
  pad_id: int | None

  def encode(self, text: str) -> np.ndarray:
    """int32 [n] ids, no BOS/EOS added. Raises ValueError on empty text."""

  def decode(self, ids) -> str: ...


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
  sample_rate: int  # of decoded waves, and the rate encode works at internally
  frame_rate: float  # code frames per second (50 in MIO; Mimi 12.5)
  codebook_size: int  # codes per layer
  num_layers: int  # layer 0 = content, 1.. = timbre/residual

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

  text: TextTokenizer | None = None
  image: ImageTokenizer | None = None
  speech: SpeechTokenizer | None = None
  video: VideoTokenizer | None = None


# ---- registry ----------------------------------------------------------------------------------
_KINDS: dict[str, dict[str, object]] = {part: {} for part in PARTS}


def register(part: str, kind: str, target) -> None:
  """`target`: a class with `load(dir)` (video: `load(dir, image)`, and `cls(image)` for default
  settings), or "module:Class", imported on first use (adapters import torch only if used)."""
  if part not in _KINDS:
    raise ValueError(f"unknown tokenizer part {part!r}; known: {PARTS}")
  _KINDS[part][kind] = target


def import_plugins(names=None) -> None:
  """Imports the modules that register tokenizer kinds; one whose package is not installed is
  skipped (its kinds then show up as unknown when a directory needs them)."""
  for name in PLUGINS if names is None else names:
    try:
      importlib.import_module(name)
    except ModuleNotFoundError as e:
      if not (e.name and name.startswith(e.name)):
        raise


def tokenizer_class(part: str, kind: str, where: str):
  if kind not in _KINDS[part]:
    raise ValueError(
      f"{where}: unknown {part} tokenizer kind {kind!r}; known: {sorted(_KINDS[part])}"
    )
  target = _KINDS[part][kind]
  if isinstance(target, str):
    module, _, attr = target.partition(":")
    target = getattr(importlib.import_module(module), attr)
  return target


def _kind_of(part_dir: str) -> str:
  path = paths.join(part_dir, TOKENIZER_JSON)
  try:
    return json.loads(paths.read_text(path))["kind"]
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f"cannot read tokenizer kind from {path}: {e}") from e


def load_part(part: str, part_dir: str):
  """Loads one image/speech tokenizer directory by the "kind" its tokenizer.json names."""
  import_plugins()
  return tokenizer_class(part, _kind_of(part_dir), part_dir).load(part_dir)


def load_tokenizers(directory: str) -> Tokenizers:
  """Loads whichever of dir/text, dir/image, dir/speech, dir/video exist (layout: module doc)."""
  import_plugins()
  if not paths.isdir(directory):
    raise ValueError(f"tokenizer directory not found: {directory}")
  out = Tokenizers()
  present = set(paths.listdir(directory))  # one listing: each isdir is a request on GCS
  if "text" in present:
    text_dir = paths.join(directory, "text")
    out.text = tokenizer_class("text", TEXT_KIND, text_dir).load(text_dir)
  for part in ("image", "speech"):
    if part in present:
      setattr(out, part, load_part(part, paths.join(directory, part)))
  video_dir = paths.join(directory, "video")
  if out.image is not None:
    video = tokenizer_class("video", VIDEO_KIND, video_dir)
    out.video = video.load(video_dir, out.image) if "video" in present else video(out.image)
  elif "video" in present:
    raise ValueError(
      f"{video_dir} exists but {directory}/image does not: video needs an image tokenizer"
    )
  return out
