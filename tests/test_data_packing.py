"""Packing as pure functions and as restartable streams (no files involved)."""

import sys

import numpy as np

from mio_jax.data import packing, sources, streams
from mio_jax.data import synthetic_shards as synthetic


def test_split_overlong_keeps_every_target_once():
  tokens = np.arange(23, dtype=np.int32)
  mask = (np.arange(23) % 3 > 0).astype(np.uint8)
  pieces = packing.split_overlong(tokens, mask, max_tokens=8)
  assert all(len(t) <= 8 for t, _ in pieces)
  np.testing.assert_array_equal(np.concatenate([t[1:] for t, _ in pieces]), tokens[1:])
  np.testing.assert_array_equal(np.concatenate([m[1:] for _, m in pieces]), mask[1:])
  assert packing.split_overlong(tokens, mask, 23)[0][0] is tokens


def test_first_fit_and_order():
  assert packing.first_fit([5, 4, 3, 2, 1], n_bins=2, capacity=6) == [0, 1, -1, 1, 0]
  assert packing.pack_order([1, 3], [2, 5, 4]) == [1, 0, 3, 4, 2]


def test_write_row_layout():
  batch = packing.empty_batch(1, 8, pad_id=99)
  used = packing.write_row(
    batch,
    0,
    [
      (np.array([1, 2, 3]), np.array([0, 1, 1], np.uint8)),
      (np.array([7, 8]), np.array([0, 0], np.uint8)),
    ],
  )
  assert used == 3
  np.testing.assert_array_equal(batch["tokens"][0], [1, 2, 7, 99, 99, 99, 99, 99])
  np.testing.assert_array_equal(batch["targets"][0], [2, 3, 8, 99, 99, 99, 99, 99])
  np.testing.assert_array_equal(batch["loss_mask"][0], [1, 1, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(batch["segment_ids"][0], [1, 1, 2, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(batch["positions"][0], [0, 1, 0, 0, 0, 0, 0, 0])


class _Mixed:
  """Infinite in-memory stand-in for the mixed MapDataset: MIO-like lengths / `scale`."""

  def __init__(self, seq_len, scale):
    self.seq_len, self.scale = seq_len, scale
    means, ratios = zip(*synthetic.MIO_LIKE.values())
    self.means, self.p = np.array(means) / scale, np.array(ratios) / sum(ratios)

  def __len__(self):
    return sys.maxsize

  def __getitem__(self, index):
    rng = np.random.default_rng(index)
    mean = self.means[rng.choice(len(self.p), p=self.p)]
    n = max(2, int(rng.normal(mean, 0.3 * mean)))
    tokens = np.full(n, index % 1000, np.int32)
    return sources.Parsed(
      tuple(packing.split_overlong(tokens, np.ones(n, np.uint8), self.seq_len + 1)), 0
    )


def _stream(mixed, seq_len):
  return streams.PackStream(
    3, 8, mixed, seq_len=seq_len, rows_per_window=8, lookahead_rows=1.0, chunk=32
  )


def test_stream_packs_mio_like_mixture_densely():
  seq_len = 2800
  stream = _stream(_Mixed(seq_len, scale=1), seq_len)
  used = sum(sum(len(t) - 1 for t, _ in stream.next_row()) for _ in range(160))
  assert used / (160 * seq_len) >= 0.97


def test_stream_restores_exactly_from_any_row():
  seq_len = 280
  mixed = _Mixed(seq_len, scale=10)
  stream = _stream(mixed, seq_len)
  states, rows = [], []
  for _ in range(40):
    states.append(stream.get_state())
    rows.append(stream.next_row())
  assert any(s["carry"] for s in states), "the test should cover carried-over examples"
  for step in range(0, 40, 3):
    fresh = _stream(mixed, seq_len)
    fresh.set_state(states[step])
    for want in rows[step : step + 6]:
      got = fresh.next_row()
      assert [t.tolist() for t, _ in got] == [t.tolist() for t, _ in want]


def test_epoch_shuffle_is_a_new_permutation_each_epoch():
  import grain

  from mio_jax.data import shuffle

  ds = shuffle.shuffle(grain.MapDataset.range(50), seed=3).repeat()
  epochs = [[ds[e * 50 + i] % 50 for i in range(50)] for e in range(3)]
  assert all(sorted(e) == list(range(50)) for e in epochs)
  assert epochs[0] != list(range(50))
  # Every pair differs, epoch 0 vs 2 included, and not by a few swaps: random permutations of 50
  # agree in ~1 position on average.
  for a, b in ((0, 1), (1, 2), (0, 2)):
    same = sum(x == y for x, y in zip(epochs[a], epochs[b]))
    assert same < 10, (a, b, same)
  again = shuffle.shuffle(grain.MapDataset.range(50), seed=3).repeat()
  assert [[again[e * 50 + i] % 50 for i in range(50)] for e in (2, 1, 0)] == epochs[::-1]
