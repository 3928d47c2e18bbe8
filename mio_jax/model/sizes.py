"""Named model sizes: a registry, not an if-chain. Each entry fixes the architecture and the vocab.

`get_model(name, **overrides)` returns `(ModelConfig, Vocab)`; the model's embedding has exactly
`vocab.padded_size` rows.
"""

from __future__ import annotations

import difflib

from mio_jax.errors import UserError
from mio_jax.model.architecture import ModelConfig
from mio_jax.tokens.vocab import Vocab

# The demo corpus trains its own tokenizers at these sizes (data_pipelines/demo_corpus.py).
DEMO_VOCAB = Vocab(text_size=1000, image_codes=512, speech_codes=256, speech_layers=4)
# MIO-7B: Yi's 64,000 text ids + 8 specials + 8,192 image + 4 x 1,024 speech = 76,296 → 76,416 rows.
MIO_VOCAB = Vocab(text_size=64_000)
# MIO's released checkpoints: 6 specials in MIO's order, ChatML as Yi text ids; 76,294 ids.
MIO_RELEASED_VOCAB = Vocab.mio()

MODELS = {
  # Runs a training step on a laptop CPU in a fraction of a second.
  "tiny": dict(vocab=DEMO_VOCAB, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=352),
  # Benchmarks: ~100M and ~1.2B parameters with the MIO vocabulary.
  "small": dict(vocab=MIO_VOCAB, d_model=512, n_layers=8, n_heads=8, n_kv_heads=4, ffn_dim=1408),
  "1b": dict(
    vocab=MIO_VOCAB,
    d_model=2048,
    n_layers=16,
    n_heads=32,
    n_kv_heads=8,
    ffn_dim=8192,
    rope_theta=500_000.0,
  ),
  # Yi-6B dims (docs/architecture.md §7) with MIO's extended vocabulary.
  "mio-7b": dict(
    vocab=MIO_VOCAB,
    d_model=4096,
    n_layers=32,
    n_heads=32,
    n_kv_heads=4,
    ffn_dim=11008,
    rope_theta=5_000_000.0,
    dtype="bfloat16",
    remat_policy="full",
    attention_impl="auto",
  ),  # splash on TPU, cuDNN on GPU, XLA on CPU
  # MIO-7B-Base/-Instruct as released: `--config.init_from=HF_DIR` continues training them.
  "mio-7b-released": dict(
    vocab=MIO_RELEASED_VOCAB,
    d_model=4096,
    n_layers=32,
    n_heads=32,
    n_kv_heads=4,
    ffn_dim=11008,
    rope_theta=5_000_000.0,
    dtype="bfloat16",
    remat_policy="full",
    attention_impl="auto",
  ),
  # The released layout on a toy body (tests: a tiny random MIO-shaped HF checkpoint).
  "mio-tiny": dict(
    vocab=MIO_RELEASED_VOCAB, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64
  ),
}


class UnknownModelError(UserError, KeyError):
  """A model name that is not in the registry."""

  def __str__(self) -> str:  # KeyError would quote the whole message
    return str(self.args[0])


def get_model(name: str, **overrides) -> tuple[ModelConfig, Vocab]:
  if name not in MODELS:
    close = difflib.get_close_matches(name, list(MODELS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownModelError(f"unknown model {name!r}{hint}; known: {sorted(MODELS)}")
  spec = dict(MODELS[name])
  vocab = spec.pop("vocab")
  spec.update(overrides)
  return ModelConfig(vocab_size=vocab.padded_size, **spec), vocab
