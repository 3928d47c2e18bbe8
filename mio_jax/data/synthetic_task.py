"""A learnable synthetic task that yields batches in the training interface (until/besides Grain).

Every row is packed with several segments, each an arithmetic progression inside one modality:

    text    a, a+k, a+2k, ...                           (ids in the text block, mod its size)
    image   <image> c, c+k, ... (16 codes) </image>      (image block)
    speech  <spch> c, c+k, ... </spch>                   (speech content block, layer 0)

After two tokens the rest of a segment is predictable, so a tiny model's loss falls fast, and
targets cover text, special, image and speech ids. Rows are a pure function of (seed, step, row),
so any process's slice matches the same rows of a single-process run.

Batch interface (numpy, int32, each [rows, seq_len]):
    tokens, targets (next token inside the segment), loss_mask (0 on a segment's last token and
    on padding), segment_ids (1.. per segment, 0 = padding), positions (restart at 0 per segment).
"""

from __future__ import annotations

import grain
import numpy as np

from mio_jax.tokens.vocab import Vocab

IMAGE_LEN = 16
MIN_SEGMENT = 4


def _segment(rng: np.random.Generator, vocab: Vocab) -> np.ndarray:
  kind = rng.choice(3, p=(0.4, 0.3, 0.3))
  stride = int(rng.integers(1, 4))
  if kind == 0:
    n = int(rng.integers(16, 65))
    return ((int(rng.integers(vocab.text_size)) + stride * np.arange(n)) % vocab.text_size).astype(
      np.int32
    )
  if kind == 1:
    codes = (
      int(rng.integers(vocab.image_codes)) + stride * np.arange(IMAGE_LEN)
    ) % vocab.image_codes
    return vocab.image_span(codes)
  n = int(rng.integers(8, 33))
  return vocab.speech_span(
    (int(rng.integers(vocab.speech_codes)) + stride * np.arange(n)) % vocab.speech_codes
  )


def make_row(seed: int, step: int, row: int, seq_len: int, vocab: Vocab) -> dict:
  rng = np.random.default_rng([seed, step, row])
  out = {
    k: np.zeros(seq_len, np.int32)
    for k in ("tokens", "targets", "loss_mask", "segment_ids", "positions")
  }
  pos, seg = 0, 0
  while seq_len - pos >= MIN_SEGMENT:
    ids = _segment(rng, vocab)[: seq_len - pos]  # the last segment is cut at the row end
    n, seg = len(ids), seg + 1
    sl = slice(pos, pos + n)
    out["tokens"][sl] = ids
    out["targets"][pos : pos + n - 1] = ids[1:]
    out["loss_mask"][pos : pos + n - 1] = 1
    out["segment_ids"][sl] = seg
    out["positions"][sl] = np.arange(n)
    pos += n
  return out


def make_batch(seed: int, step: int, rows: range, seq_len: int, vocab: Vocab) -> dict:
  per_row = [make_row(seed, step, r, seq_len, vocab) for r in rows]
  return {k: np.stack([r[k] for r in per_row]) for k in per_row[0]}


class SyntheticIterator(grain.DatasetIterator):
  """Yields this process's rows of global batch `step`, for step = 0, 1, ...

  A Grain `DatasetIterator`, so Grain's Orbax handler checkpoints it like the shard pipeline."""

  def __init__(
    self,
    seed: int,
    global_batch: int,
    seq_len: int,
    vocab: Vocab,
    process_index: int = 0,
    process_count: int = 1,
  ):
    super().__init__()
    if global_batch % process_count:
      raise ValueError(f"global_batch {global_batch} not divisible by {process_count} processes")
    per = global_batch // process_count
    self.rows = range(process_index * per, (process_index + 1) * per)
    self.seed, self.seq_len, self.vocab = seed, seq_len, vocab
    self.step = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = make_batch(self.seed, self.step, self.rows, self.seq_len, self.vocab)
    self.step += 1
    return batch

  def get_state(self) -> dict:
    return {"step": self.step}

  def set_state(self, state: dict) -> None:
    self.step = int(state["step"])
