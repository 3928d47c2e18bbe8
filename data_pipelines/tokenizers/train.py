"""Trains all built-in tokenizers for a `Vocab` in one call and saves them in the
`load_tokenizers` layout."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from data_pipelines.tokenizers.image_vq import train_image_vq
from data_pipelines.tokenizers.speech_rvq import train_speech_rvq
from data_pipelines.tokenizers.text import train_sentencepiece
from data_pipelines.tokenizers.video import KeyframeVideoTokenizer
from mio_jax.io import paths
from mio_jax.tokens.tokenizers import Tokenizers


def train_builtin(
  out_dir: str,
  vocab,
  texts: Sequence[str],
  images: Sequence[np.ndarray] = (),
  waves: Sequence[np.ndarray] = (),
  wave_rate: int = 16_000,
  seed: int = 0,
  image_size: int = 32,
  patch_size: int = 8,
  image_depth: int = 2,
  num_keyframes: int = 4,
  timings: dict | None = None,
) -> Tokenizers:
  """Sizes come from `vocab` (a mio_jax.tokens.vocab.Vocab): text_size, image_codes, speech_codes x
  layers.

  The text model may end up with fewer than `vocab.text_size` pieces on a small corpus; ids then
  simply leave the top of the text block unused. `timings` (if given) receives seconds per part.
  """
  timings = {} if timings is None else timings
  out = Tokenizers()
  t = time.perf_counter()
  out.text = train_sentencepiece(texts, paths.join(out_dir, "text"), vocab.text_size, seed=seed)
  timings["text"] = time.perf_counter() - t
  if len(images):
    t = time.perf_counter()
    out.image = train_image_vq(
      images, vocab.image_codes, image_size, patch_size, image_depth, seed=seed
    )
    out.image.save(paths.join(out_dir, "image"))
    out.video = KeyframeVideoTokenizer(out.image, num_keyframes)
    out.video.save(paths.join(out_dir, "video"))
    timings["image"] = time.perf_counter() - t
  if len(waves):
    t = time.perf_counter()
    out.speech = train_speech_rvq(
      waves, wave_rate, vocab.speech_codes, vocab.speech_layers, seed=seed
    )
    out.speech.save(paths.join(out_dir, "speech"))
    timings["speech"] = time.perf_counter() - t
  return out
