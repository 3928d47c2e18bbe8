"""Tokenizer interfaces. They live in `mio_jax/tokenizers.py` (generation loads tokenizers too, and
the core never imports data_pipelines); this module re-exports them for the implementations here.
"""

from mio_jax.tokenizers import (
  TOKENIZER_JSON,
  ImageTokenizer,
  SpeechTokenizer,
  TextTokenizer,
  Tokenizers,
  VideoTokenizer,
)

__all__ = [
  "TOKENIZER_JSON",
  "ImageTokenizer",
  "SpeechTokenizer",
  "TextTokenizer",
  "Tokenizers",
  "VideoTokenizer",
]
