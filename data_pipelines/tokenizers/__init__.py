"""Tokenizers for text, image, speech and video, and `save_tokenizers`.

Interfaces and `load_tokenizers(dir)`: `mio_jax/tokens/tokenizers.py`, where this package registers
its
kinds (KINDS) on import. Built-ins (numpy only, trainable in seconds, used by the demo):
`text.SentencePieceTokenizer`, `image_vq.KMeansImageTokenizer`, `speech_rvq.MelRVQSpeechTokenizer`,
`video.KeyframeVideoTokenizer`. Adapters for pretrained tokenizers (lazy heavy imports):
`hf_vqvae.HFVQVAEImageTokenizer` (Chameleon, Janus), `seed_tokenizer.SEEDImageTokenizer` (MIO's
SEED-Tokenizer), `mimi.MimiSpeechTokenizer`, `speechtokenizer_adapter.SpeechTokenizerAdapter`.
See docs/tokenizers.md. Tokenizer directories may be local or gs:// URLs.
"""

from __future__ import annotations

from data_pipelines.tokenizers.text import SentencePieceTokenizer, train_sentencepiece
from mio_jax.io import paths
from mio_jax.io.media import read_image, read_wav, write_image, write_wav
from mio_jax.tokens import tokenizers as core
from mio_jax.tokens.tokenizers import (
  TOKENIZER_JSON,
  ImageTokenizer,
  SpeechTokenizer,
  TextTokenizer,
  Tokenizers,
  VideoTokenizer,
  load_part,
  load_tokenizers,
)

# "kind" in <part>/tokenizer.json -> (module, class), registered with mio_jax.tokens.tokenizers
# (which
# loads them for generate and evaluate). Modules import lazily: torch only if used.
KINDS = {
  "text": {core.TEXT_KIND: ("text", "SentencePieceTokenizer")},
  "image": {
    "kmeans_vq": ("image_vq", "KMeansImageTokenizer"),
    "hf_vqvae": ("hf_vqvae", "HFVQVAEImageTokenizer"),
    "seed": ("seed_tokenizer", "SEEDImageTokenizer"),
  },
  "speech": {
    "mel_rvq": ("speech_rvq", "MelRVQSpeechTokenizer"),
    "mimi": ("mimi", "MimiSpeechTokenizer"),
    "speechtokenizer": ("speechtokenizer_adapter", "SpeechTokenizerAdapter"),
  },
  "video": {core.VIDEO_KIND: ("video", "KeyframeVideoTokenizer")},
}
PARTS = core.PARTS
for _part, _kinds in KINDS.items():
  for _kind, (_module, _cls) in _kinds.items():
    core.register(_part, _kind, f"{__name__}.{_module}:{_cls}")


def save_tokenizers(tokenizers: Tokenizers, directory: str) -> None:
  """Writes each present part to dir/<part>/ via its own `save` (JSON + npz/safetensors only)."""
  for part in PARTS:
    tok = getattr(tokenizers, part)
    if tok is not None:
      tok.save(paths.join(directory, part))


__all__ = [
  "TextTokenizer",
  "ImageTokenizer",
  "SpeechTokenizer",
  "VideoTokenizer",
  "Tokenizers",
  "load_tokenizers",
  "save_tokenizers",
  "load_part",
  "train_sentencepiece",
  "SentencePieceTokenizer",
  "read_image",
  "read_wav",
  "write_image",
  "write_wav",
  "TOKENIZER_JSON",
  "KINDS",
]
