"""Packing variable-length examples into rows of `seq_len` slots. Pure functions, numpy only.

Slot layout: an example (piece) of n tokens fills n - 1 slots of a row:

    tokens[o:o+n-1]  = example[:-1]          inputs
    targets[o:o+n-1] = example[1:]           the next token of the same example
    loss_mask        = example_mask[1:]      the mask of the token being predicted
    segment_ids      = s (1, 2, .. per example in the row; 0 = padding)
    positions        = 0 .. n-2              restart per example

So no slot ever predicts across examples, and an example of up to seq_len + 1 tokens fits one row.
Longer examples are split into pieces of seq_len + 1 tokens that overlap by one token, so every
target of the example is still predicted exactly once (`split_overlong`).
"""

from __future__ import annotations

import numpy as np

FEATURES = ("tokens", "targets", "loss_mask", "segment_ids", "positions")


def num_slots(piece) -> int:
  """Row slots one (tokens, loss_mask) piece occupies."""
  return len(piece[0]) - 1


def split_overlong(tokens, loss_mask, max_tokens: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """Cuts an example into pieces of at most `max_tokens` tokens, consecutive pieces sharing one
  token (the last input of one piece is the first input of the next): no target lost or doubled."""
  n = len(tokens)
  if n <= max_tokens:
    return [(tokens, loss_mask)]
  step = max_tokens - 1
  return [
    (tokens[s : s + max_tokens], loss_mask[s : s + max_tokens]) for s in range(0, n - 1, step)
  ]


def first_fit(sizes, n_bins: int, capacity: int) -> list[int]:
  """Places items, in the given order, into the first of `n_bins` bins with room; -1 = no room.

  Plain Python on purpose: with a handful of bins it beats numpy's per-call overhead."""
  remaining = [capacity] * n_bins
  out = []
  for size in sizes:
    placed = -1
    for b in range(n_bins):
      if size <= remaining[b]:
        remaining[b] -= size
        placed = b
        break
    out.append(placed)
  return out


def pack_order(carry_sizes, fresh_sizes) -> list[int]:
  """Order to offer items to `first_fit`: items carried over from the previous window first (so
  none waits for long), then fresh ones; each group largest first (first-fit decreasing)."""
  n_carry = len(carry_sizes)
  carry = sorted(range(n_carry), key=lambda i: -carry_sizes[i])
  fresh = sorted(range(len(fresh_sizes)), key=lambda i: -fresh_sizes[i])
  return carry + [n_carry + i for i in fresh]


def empty_batch(rows: int, seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
  """All-padding batch: segment 0, loss 0, pad token as input and target."""
  batch = {k: np.zeros((rows, seq_len), np.int32) for k in FEATURES}
  batch["tokens"].fill(pad_id)
  batch["targets"].fill(pad_id)
  return batch


def write_row(batch: dict[str, np.ndarray], row: int, pieces) -> int:
  """Writes pieces one after another into `row` of an `empty_batch`; returns slots used."""
  positions_L = batch["positions"][row]
  need = sum(len(t) - 1 for t, _ in pieces)
  if need > positions_L.size:
    raise ValueError(f"row {row}: pieces need {need} slots, the row has {positions_L.size}")
  offset = 0
  for segment, (tokens, mask) in enumerate(pieces, start=1):
    n = len(tokens) - 1
    end = offset + n
    batch["tokens"][row, offset:end] = tokens[:-1]
    batch["targets"][row, offset:end] = tokens[1:]
    batch["loss_mask"][row, offset:end] = mask[1:]
    batch["segment_ids"][row, offset:end] = segment
    positions_L[offset:end] = _ARANGE[:n] if n <= _ARANGE.size else np.arange(n)
    offset = end
  return offset


_ARANGE = np.arange(1 << 16, dtype=np.int32)
