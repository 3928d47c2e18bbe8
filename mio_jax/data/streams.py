"""Packed batches from independent packing streams: a grain IterDataset with small, exact state.

Why streams: the global batch must not depend on how many processes (or grain workers) build it.
Row j of global step s comes from stream q = (s mod W) * G + j, where G = global_batch and
W = max(1, worker_count) interleaved step groups. Stream q reads its own slice of the mixed example
sequence (chunks q, q + N, q + 2N, .. of `chunk` consecutive examples, N = W * G streams) and packs
it `rows_per_window` rows at a time (`PackStream`). A process owns rows [p * B, (p + 1) * B) of
every batch, B = G / process_count; a grain worker w owns the steps s = w mod W. So one process
or many, with or without workers, the global batch at step s is the same function of
(seed, s, config).

State per stream (JSON, a few ints): the stream position at the start of the current window, the
examples carried over into it (by mixed index and piece number), rows already emitted from it,
and the records skipped as corrupt / dropped as overlong / split / too short (under 2 tokens) so
far. Restoring re-reads and re-packs that one window, which is exact because packing is a pure
function of the window's examples.
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from mio_jax.data import packing

STATE_VERSION = 1
_MAX_USELESS = 10_000
# What became of the records read (sources.Parsed fields), counted per stream in the state.
COUNTED = ("skipped", "dropped", "short", "split")


class PackStream:
  """Rows packed from one stream's examples; `mixed[index]` gives a sources.Parsed example."""

  def __init__(
    self,
    q: int,
    n_streams: int,
    mixed,
    *,
    seq_len: int,
    rows_per_window: int,
    lookahead_rows: float,
    chunk: int,
  ):
    self.q, self.n_streams, self.mixed, self.seq_len = q, n_streams, mixed, seq_len
    self.rows_per_window, self.chunk = rows_per_window, chunk
    self.lookahead_rows = lookahead_rows
    self.length = len(mixed)
    self.set_state({"k": 0, "carry": [], "emitted": 0, "skipped": 0})

  # ---- state ----------------------------------------------------------------------------------
  def get_state(self) -> dict:
    return {
      "k": self.k,
      "carry": [list(c) for c in self.carry],
      "emitted": self.emitted,
      "skipped": self.skipped,
      "dropped": self.dropped,
      "short": self.short,
      "split": self.split,
    }

  def set_state(self, state: dict) -> None:
    self.k, self.emitted, self.skipped = (
      int(state["k"]),
      int(state["emitted"]),
      int(state["skipped"]),
    )
    # Absent in states saved before these were counted: counting starts there.
    self.dropped = int(state.get("dropped", 0))
    self.short, self.split = int(state.get("short", 0)), int(state.get("split", 0))
    self.carry = [tuple(map(int, c)) for c in state["carry"]]
    self._carry_pieces = None  # re-read lazily
    self._rows = None

  def total(self, kind: str) -> int:
    """Records of `kind` ('skipped', 'dropped', 'short', 'split') read so far, the current
    window's included."""
    window = self._window_counts[kind] if self._rows is not None else 0
    return getattr(self, kind) + window

  # ---- reading --------------------------------------------------------------------------------
  def _index(self, k: int) -> int:
    """Mixed index of this stream's k-th example: chunks q, q + N, .. of `chunk` examples."""
    return ((k // self.chunk) * self.n_streams + self.q) * self.chunk + k % self.chunk

  def _build_window(self) -> None:
    if self._carry_pieces is None:
      self._carry_pieces = [self.mixed[i].pieces[p] for i, p in self.carry]
    carry = list(zip(self.carry, self._carry_pieces))
    fresh, k = [], self.k
    counts = dict.fromkeys(COUNTED, 0)
    # A shorter first window staggers the streams' window boundaries, so each step re-packs
    # about 1/rows_per_window of the streams instead of all of them every rows_per_window steps.
    n_rows = self.rows_per_window if self.k else 1 + self.q % self.rows_per_window
    pool_slots = int((n_rows + self.lookahead_rows) * self.seq_len)
    total = sum(packing.num_slots(piece) for _, piece in carry)
    useless = 0  # examples in a row with nothing to pack: all corrupt and skipped, or 1 token
    while total < pool_slots:
      index = self._index(k)
      if index >= self.length:
        break  # only a finite (eval) pass ends
      parsed = self.mixed[index]
      k += 1
      for kind in COUNTED:
        counts[kind] += getattr(parsed, kind)
      useless = 0 if parsed.pieces else useless + 1
      if useless > _MAX_USELESS:
        raise ValueError(
          f"packing stream {self.q} read {useless} examples in a row with nothing to "
          f"train on (up to mixed index {index}): a source is all corrupt, 1-token "
          "or overlong under data.overlong='drop'"
        )
      for p, piece in enumerate(parsed.pieces):
        fresh.append(((index, p), piece))
        total += packing.num_slots(piece)
    items = carry + fresh
    sizes = [packing.num_slots(piece) for _, piece in items]
    order = packing.pack_order(sizes[: len(carry)], sizes[len(carry) :])
    bins = packing.first_fit([sizes[i] for i in order], n_rows, self.seq_len)
    rows, left = [[] for _ in range(n_rows)], []
    for i, b in zip(order, bins):
      (rows[b] if b >= 0 else left).append(items[i])
    self._rows = [[piece for _, piece in row] for row in rows if row]
    self._next_k, self._next_carry, self._window_counts = k, left, counts

  def next_row(self):
    """Pieces for this stream's next row; None once a finite stream is exhausted."""
    if self._rows is None:
      self._build_window()
    while self.emitted >= len(self._rows):
      if not self._rows:
        return None
      self.k, self.emitted = self._next_k, 0
      for kind in COUNTED:
        setattr(self, kind, getattr(self, kind) + self._window_counts[kind])
      self.carry = [ref for ref, _ in self._next_carry]
      self._carry_pieces = [piece for _, piece in self._next_carry]
      self._build_window()
    row = self._rows[self.emitted]
    self.emitted += 1
    return row


class PackedBatchDataset(grain.IterDataset):
  """Local batches [rows, seq_len] of packed examples read by index from `mixed` (a MapDataset)."""

  def __init__(
    self,
    mixed: grain.MapDataset,
    *,
    global_batch: int,
    rows: tuple[int, int],
    seq_len: int,
    pad_id: int,
    step_groups: int = 1,
    rows_per_window: int = 8,
    lookahead_rows: float = 1.0,
    chunk: int = 32,
  ):
    super().__init__(mixed)
    self.kw = dict(
      global_batch=global_batch,
      rows=tuple(rows),
      seq_len=seq_len,
      pad_id=pad_id,
      step_groups=step_groups,
      rows_per_window=rows_per_window,
      lookahead_rows=lookahead_rows,
      chunk=chunk,
    )
    self.groups = tuple(range(step_groups))  # which step groups this copy builds

  def set_slice(self, sl: slice, sequential_slice: bool = False) -> None:
    """Called by grain's mp_prefetch in worker w with slice(w, None, workers): keep only the steps
    s = w mod W, so interleaving the workers' outputs reproduces the single-process order."""
    del sequential_slice
    groups = self.groups[sl]
    if len(self.groups) != self.kw["step_groups"] or len(groups) != 1:
      raise ValueError(
        f"{len(self.groups)} step groups sliced by {sl}: config.data.worker_count "
        "must equal the number of grain workers"
      )
    self.groups = groups

  def __iter__(self) -> PackedBatchIterator:
    return PackedBatchIterator(self._parent, self.groups, **self.kw)

  def __str__(self) -> str:
    return f"PackedBatchDataset(rows={self.kw['rows']}, seq_len={self.kw['seq_len']})"


class PackedBatchIterator(grain.DatasetIterator):
  """Yields dicts of int32 [rows, seq_len] arrays: tokens, targets, loss_mask, segment_ids,
  positions."""

  def __init__(
    self,
    mixed,
    groups,
    *,
    global_batch,
    rows,
    seq_len,
    pad_id,
    step_groups,
    rows_per_window,
    lookahead_rows,
    chunk,
  ):
    super().__init__()
    self.groups, self.seq_len, self.pad_id = groups, seq_len, pad_id
    n_streams = step_groups * global_batch
    self.streams = {
      g: [
        PackStream(
          g * global_batch + j,
          n_streams,
          mixed,
          seq_len=seq_len,
          rows_per_window=rows_per_window,
          lookahead_rows=lookahead_rows,
          chunk=chunk,
        )
        for j in range(*rows)
      ]
      for g in groups
    }
    self.n = 0  # batches produced by this iterator

  def __next__(self) -> dict[str, np.ndarray]:
    streams = self.streams[self.groups[self.n % len(self.groups)]]
    rows = [s.next_row() for s in streams]
    if all(r is None for r in rows):
      raise StopIteration
    batch = packing.empty_batch(len(rows), self.seq_len, self.pad_id)
    for r, pieces in enumerate(rows):
      if pieces:
        packing.write_row(batch, r, pieces)
    self.n += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    streams = {str(s.q): s.get_state() for g in self.groups for s in self.streams[g]}
    return {
      "version": STATE_VERSION,
      "n": self.n,
      "streams": streams,
      **{f"{kind}_records": self.records(kind) for kind in COUNTED},
    }

  def set_state(self, state: dict[str, Any]) -> None:
    if state.get("version") != STATE_VERSION:
      raise ValueError(
        f"data iterator state version {state.get('version')}, expected {STATE_VERSION}"
      )
    missing = [
      s.q for g in self.groups for s in self.streams[g] if str(s.q) not in state["streams"]
    ]
    if missing:
      raise ValueError(
        f"data iterator state lacks streams {missing[:8]}.. (saved with another "
        "global_batch or worker_count?)"
      )
    self.n = int(state["n"])
    for g in self.groups:
      for s in self.streams[g]:
        s.set_state(state["streams"][str(s.q)])

  def records(self, kind: str) -> int:
    """Records of `kind` (one of COUNTED) read so far by this iterator's streams."""
    return sum(s.total(kind) for g in self.groups for s in self.streams[g])

  def __str__(self) -> str:
    return f"PackedBatchIterator(groups={self.groups}, n={self.n})"
