"""Synthetic shard datasets for tests and benchmarks: random ids with realistic length mixes."""

from __future__ import annotations

import numpy as np

from mio_jax.data import format as fmt
from mio_jax.tokens import vocab as vocab_lib

# Mean tokens per example of MIO's data types and their example ratio in stage 3 (2:1:1:12).
MIO_LIKE = {
  "image_text": (60, 2),
  "speech_text": (300, 1),
  "interleaved": (1500, 1),
  "text": (800, 12),
}


def random_examples(
  n: int,
  mean_len: float,
  vocab: vocab_lib.Vocab,
  seed: int,
  spread: float = 0.3,
  first_token: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
  """`n` examples, lengths ~ Normal(mean, spread * mean) clipped to >= 2, ids in [0, vocab.size).
  `first_token` marks every example's first id (tests use it to tell sources apart)."""
  rng = np.random.default_rng(seed)
  lengths_N = np.maximum(2, rng.normal(mean_len, spread * mean_len, n)).astype(np.int64)
  out = []
  for length in lengths_N:
    tokens = rng.integers(0, vocab.size, length, dtype=np.int32)
    if first_token is not None:
      tokens[0] = first_token
    out.append((tokens, (rng.random(length) > 0.1).astype(np.uint8)))
  return out


def write_dataset(
  out_dir: str,
  vocab: vocab_lib.Vocab,
  examples,
  data_type: str = "text",
  max_shard_bytes: int = 64 << 20,
) -> dict:
  """Writes `examples` [(tokens, loss_mask)] as a shard dataset; returns the manifest."""
  with fmt.ShardWriter(
    out_dir,
    vocab,
    data_type=data_type,
    source="synthetic (random ids)",
    license="none: generated",
    max_shard_bytes=max_shard_bytes,
  ) as writer:
    for tokens, loss_mask in examples:
      writer.write(tokens, loss_mask)
  return fmt.read_manifest(out_dir, vocab)


def data_config(
  data_dir: str,
  sources: dict,
  weights: dict | None = None,
  *,
  seq_len: int = 64,
  global_batch: int = 4,
  seed: int = 0,
  **data,
):
  """A ConfigDict with the keys the pipeline reads (tests, benchmarks, examples); data keys not
  given take mio_jax/config.py's defaults (filled in by pipeline.data_options)."""
  import ml_collections

  data = {"sources": dict(sources), "weights": dict(weights) if weights else None, **data}
  return ml_collections.ConfigDict(
    {
      "seed": seed,
      "seq_len": seq_len,
      "global_batch": global_batch,
      "data_dir": data_dir,
      "data": data,
    }
  )
