"""Tokenizers for text, image, speech and video, and `load_tokenizers(dir)` / `save_tokenizers`.

Interfaces: `base.py`. Built-ins (numpy only, trainable in seconds, used by the demo):
`text.SentencePieceTokenizer`, `image_vq.KMeansImageTokenizer`, `speech_rvq.MelRVQSpeechTokenizer`,
`video.KeyframeVideoTokenizer`. Adapters for pretrained tokenizers (lazy heavy imports):
`hf_vqvae.HFVQVAEImageTokenizer` (Chameleon, Janus), `mimi.MimiSpeechTokenizer`,
`speechtokenizer_adapter.SpeechTokenizerAdapter`. See docs/tokenizers.md. Tokenizer directories may
be local or gs:// URLs.
"""

from __future__ import annotations

import importlib

from data_pipelines.tokenizers.base import (TOKENIZER_JSON, ImageTokenizer, SpeechTokenizer,
                                            TextTokenizer, Tokenizers, VideoTokenizer)
from data_pipelines.tokenizers.media_io import read_image, read_wav, write_image, write_wav
from data_pipelines.tokenizers.text import SentencePieceTokenizer, train_sentencepiece
from mio_jax import paths

# "kind" in <part>/tokenizer.json -> (module, class). Modules import lazily: torch only if used.
KINDS = {
    "image": {"kmeans_vq": ("image_vq", "KMeansImageTokenizer"),
              "hf_vqvae": ("hf_vqvae", "HFVQVAEImageTokenizer")},
    "speech": {"mel_rvq": ("speech_rvq", "MelRVQSpeechTokenizer"),
               "mimi": ("mimi", "MimiSpeechTokenizer"),
               "speechtokenizer": ("speechtokenizer_adapter", "SpeechTokenizerAdapter")},
}
PARTS = ("text", "image", "speech", "video")


def _kind_of(part_dir: str) -> str:
  from data_pipelines.tokenizers import files
  path = paths.join(part_dir, TOKENIZER_JSON)
  try:
    return files.read_json(path)["kind"]
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f"cannot read tokenizer kind from {path}: {e}") from e


def load_part(part: str, part_dir: str):
  """Loads one image/speech tokenizer directory by the "kind" its tokenizer.json names."""
  kind = _kind_of(part_dir)
  if kind not in KINDS[part]:
    raise ValueError(f"{part_dir}: unknown {part} tokenizer kind {kind!r}; known: {sorted(KINDS[part])}")
  module, cls = KINDS[part][kind]
  return getattr(importlib.import_module(f"data_pipelines.tokenizers.{module}"), cls).load(part_dir)


def load_tokenizers(directory: str) -> Tokenizers:
  """Loads whichever of dir/text, dir/image, dir/speech, dir/video exist (layout: base.py)."""
  if not paths.isdir(directory):
    raise ValueError(f"tokenizer directory not found: {directory}")
  out = Tokenizers()
  present = set(paths.listdir(directory))  # one listing: each isdir is a request on GCS
  if "text" in present:
    out.text = SentencePieceTokenizer.load(paths.join(directory, "text"))
  for part in ("image", "speech"):
    if part in present:
      setattr(out, part, load_part(part, paths.join(directory, part)))
  video_dir = paths.join(directory, "video")
  if out.image is not None:
    from data_pipelines.tokenizers.video import KeyframeVideoTokenizer
    out.video = (KeyframeVideoTokenizer.load(video_dir, out.image) if "video" in present
                 else KeyframeVideoTokenizer(out.image))
  elif "video" in present:
    raise ValueError(f"{video_dir} exists but {directory}/image does not: video needs an image tokenizer")
  return out


def save_tokenizers(tokenizers: Tokenizers, directory: str) -> None:
  """Writes each present part to dir/<part>/ via its own `save` (JSON + npz/safetensors only)."""
  for part in PARTS:
    tok = getattr(tokenizers, part)
    if tok is not None:
      tok.save(paths.join(directory, part))


__all__ = ["TextTokenizer", "ImageTokenizer", "SpeechTokenizer", "VideoTokenizer", "Tokenizers",
           "load_tokenizers", "save_tokenizers", "load_part", "train_sentencepiece",
           "SentencePieceTokenizer", "read_image", "read_wav", "write_image", "write_wav"]
