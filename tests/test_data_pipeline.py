"""The grain pipeline end to end on small synthetic shard datasets."""

import collections
import copy

import numpy as np
import pytest

from mio_jax.data import packing, pipeline
from mio_jax.data import synthetic_shards as synthetic
from mio_jax.model.sizes import DEMO_VOCAB as VOCAB

SEQ = 64


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Two sources: 'short' (~12 tokens, first id 1) and 'long' (~40 tokens incl. overlong, first
  id 2)."""
  root = tmp_path_factory.mktemp("corpus")
  examples = {
    "short": synthetic.random_examples(300, 12, VOCAB, seed=1, first_token=1),
    "long": synthetic.random_examples(120, 40, VOCAB, seed=2, spread=0.6, first_token=2),
  }
  for name, exs in examples.items():
    synthetic.write_dataset(str(root / name), VOCAB, exs, max_shard_bytes=3000)  # several shards
  return str(root), examples


def _config(root, sources=("short", "long"), weights=None, **kw):
  weights = weights or ({"short": 3.0, "long": 1.0} if len(sources) > 1 else None)
  return synthetic.data_config(root, {s: s for s in sources}, weights, seq_len=SEQ, **kw)


def _pieces(examples):
  """Pieces as the pipeline cuts them: (Counter of token bytes, token bytes → loss_mask)."""
  counts, masks = collections.Counter(), {}
  for tokens, mask in examples:
    for t, m in packing.split_overlong(tokens, mask, SEQ + 1):
      counts[t.tobytes()] += 1
      masks[t.tobytes()] = m
  return counts, masks


def _segments(batch):
  """Unpack rows → list of (tokens, loss_mask) pieces, checking the layout on the way."""
  out = []
  for r in range(batch["tokens"].shape[0]):
    seg_L = batch["segment_ids"][r]
    used = int((seg_L > 0).sum())
    assert (seg_L[used:] == 0).all(), "padding only at the end of a row"
    assert (batch["loss_mask"][r, used:] == 0).all()
    starts = np.flatnonzero(np.diff(np.concatenate([[0], seg_L[:used]])))
    assert (seg_L[starts] == np.arange(1, len(starts) + 1)).all(), "segments number 1, 2, .."
    for s, e in zip(starts, list(starts[1:]) + [used]):
      assert (batch["positions"][r, s:e] == np.arange(e - s)).all(), "positions restart per example"
      tokens = np.concatenate([batch["tokens"][r, s:e], batch["targets"][r, e - 1 : e]])
      assert (batch["targets"][r, s : e - 1] == batch["tokens"][r, s + 1 : e]).all(), (
        "targets = next input"
      )
      mask = np.concatenate([[0], batch["loss_mask"][r, s:e]]).astype(np.uint8)
      out.append((tokens, mask))
  return out


def test_batch_interface_and_packing_never_mixes_segments(corpus):
  root, examples = corpus
  it = pipeline.make_train_iterator(_config(root), VOCAB, 0, 1)
  _, masks = _pieces(examples["short"] + examples["long"])
  for _ in range(20):
    batch = next(it)
    assert sorted(batch) == sorted(packing.FEATURES)
    for v in batch.values():
      assert v.shape == (4, SEQ) and v.dtype == np.int32
    for tokens, mask in _segments(batch):
      assert tokens.tobytes() in masks  # a real example piece, intact
      # the first token's mask belongs to no target; the rest moved with the targets
      assert (masks[tokens.tobytes()][1:] == mask[1:]).all()


def test_eval_pass_sees_every_token_exactly_once(corpus):
  root, examples = corpus
  cfg = _config(root)
  seen = collections.Counter()
  for batch in pipeline.make_eval_iterator(cfg, VOCAB, 0, 1):
    for tokens, _ in _segments(batch):
      seen[tokens.tobytes()] += 1
  expected, _ = _pieces(examples["short"] + examples["long"])
  assert seen == expected


def test_train_epoch_has_no_duplicates_and_no_loss(tmp_path):
  # Streams read chunks of 32 examples (4 streams here): epochs blur over ~128 examples, so the
  # dataset is much larger than that, as real ones are.
  examples = synthetic.random_examples(800, 12, VOCAB, seed=3, spread=1.5)  # some split
  synthetic.write_dataset(str(tmp_path / "one"), VOCAB, examples)
  it = pipeline.make_train_iterator(_config(str(tmp_path), sources=("one",)), VOCAB, 0, 1)
  expected, _ = _pieces(examples)
  seen = collections.Counter()
  while sum(seen.values()) < 0.6 * sum(expected.values()):  # well inside epoch 1
    for tokens, _ in _segments(next(it)):
      seen[tokens.tobytes()] += 1
  assert all(n <= expected[k] for k, n in seen.items()), "no piece twice within an epoch"
  while sum(seen.values()) < 2.5 * sum(expected.values()):
    for tokens, _ in _segments(next(it)):
      seen[tokens.tobytes()] += 1
  assert set(seen) == set(expected), "every piece shows up"
  assert all(2 * expected[k] <= n <= 3 * expected[k] for k, n in seen.items()), (
    "epochs stay in step"
  )


def test_mixture_proportions(tmp_path):
  for name, mark in (("a", 1), ("b", 2), ("c", 3)):
    synthetic.write_dataset(
      str(tmp_path / name),
      VOCAB,
      synthetic.random_examples(200, 5, VOCAB, seed=mark, first_token=mark),
    )
  weights = {"a": 6.0, "b": 3.0, "c": 1.0}
  cfg = synthetic.data_config(
    str(tmp_path), {k: k for k in weights}, weights, seq_len=SEQ, global_batch=8
  )
  it = pipeline.make_train_iterator(cfg, VOCAB, 0, 1)
  counts = collections.Counter()
  while sum(counts.values()) < 10_000:
    batch = next(it)
    first = (batch["positions"] == 0) & (batch["segment_ids"] > 0)
    counts.update(batch["tokens"][first].tolist())
  total = sum(counts.values())
  for mark, name in ((1, "a"), (2, "b"), (3, "c")):
    assert abs(counts[mark] / total - weights[name] / 10) < 0.01, (counts, total)


def test_deterministic_and_seeded(corpus):
  root, _ = corpus
  a = pipeline.make_train_iterator(_config(root), VOCAB, 0, 1)
  b = pipeline.make_train_iterator(_config(root), VOCAB, 0, 1)
  c = pipeline.make_train_iterator(_config(root, seed=1), VOCAB, 0, 1)
  for _ in range(5):
    x, y, z = next(a), next(b), next(c)
    assert all((x[k] == y[k]).all() for k in x)
  assert not (x["tokens"] == z["tokens"]).all()


def test_two_processes_see_the_global_batch_of_one(corpus):
  root, _ = corpus
  one = pipeline.make_train_iterator(_config(root), VOCAB, 0, 1)
  halves = [pipeline.make_train_iterator(_config(root), VOCAB, p, 2) for p in (0, 1)]
  for _ in range(6):
    full = next(one)
    parts = [next(h) for h in halves]
    for k in full:
      assert parts[0][k].shape == (2, SEQ)
      np.testing.assert_array_equal(full[k], np.concatenate([p[k] for p in parts]))


def test_checkpoint_restore_with_orbax_continues_exactly(corpus, tmp_path):
  import grain
  import orbax.checkpoint as ocp

  root, _ = corpus
  it = pipeline.make_train_iterator(_config(root), VOCAB, 0, 1)
  for _ in range(7):  # mid-window, mid-epoch
    next(it)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(7, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = [next(it) for _ in range(12)]
    fresh = pipeline.make_train_iterator(_config(root), VOCAB, 0, 1)
    mngr.restore(7, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  for want in expected:
    got = next(fresh)
    assert all((got[k] == want[k]).all() for k in want)


def test_worker_processes_match_in_process_order(corpus):
  root, _ = corpus
  cfg = _config(root, worker_count=2)
  in_process = iter(
    pipeline.streams.PackedBatchDataset(
      pipeline.mixed_dataset(pipeline.open_sources(cfg, VOCAB), cfg.data.weights, 0, True),
      global_batch=4,
      rows=(0, 4),
      seq_len=SEQ,
      pad_id=VOCAB.special_id("<pad>"),
      step_groups=2,
    )
  )
  workers = pipeline.make_train_iterator(cfg, VOCAB, 0, 1)
  try:
    for _ in range(5):
      want, got = next(in_process), next(workers)
      assert all((got[k] == want[k]).all() for k in want)
    state = copy.deepcopy(workers.get_state())  # grain updates its dict in place
    resumed = pipeline.make_train_iterator(cfg, VOCAB, 0, 1)
    resumed.set_state(state)
    try:
      want, got = next(in_process), next(resumed)
      assert all((got[k] == want[k]).all() for k in want)
    finally:
      resumed.close()
  finally:
    workers.close()


def test_resume_on_a_different_process_count(corpus, tmp_path):
  from mio_jax.checkpoint import data_state as elastic

  root, _ = corpus
  one = pipeline.make_train_iterator(_config(root), VOCAB, 0, 1)
  halves = [pipeline.make_train_iterator(_config(root), VOCAB, p, 2) for p in (0, 1)]
  for _ in range(5):
    next(one)
    for h in halves:
      next(h)
  # The files a checkpoint holds: each state sealed with its digest by the writer every run uses
  # (mio_jax.checkpoint.manager.SealedDataState); tests/test_damage_and_counters.py restores a real
  # run's.
  (tmp_path / "from1").mkdir()
  (tmp_path / "from1" / "process_0-of-1.json").write_bytes(elastic.seal_state(one.get_state()))
  (tmp_path / "from2").mkdir()
  for p, h in enumerate(halves):
    (tmp_path / "from2" / f"process_{p}-of-2.json").write_bytes(elastic.seal_state(h.get_state()))
  want = [next(one) for _ in range(4)]
  as_two = [
    elastic.restore_from_dir(
      pipeline.make_train_iterator(_config(root), VOCAB, p, 2), str(tmp_path / "from1")
    )
    for p in (0, 1)
  ]
  as_one = elastic.restore_from_dir(
    pipeline.make_train_iterator(_config(root), VOCAB, 0, 1), str(tmp_path / "from2")
  )
  for full in want:
    parts = [next(h) for h in as_two]
    merged = next(as_one)
    for k in full:
      np.testing.assert_array_equal(full[k], np.concatenate([p[k] for p in parts]))
      np.testing.assert_array_equal(full[k], merged[k])
