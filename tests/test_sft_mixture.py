"""SFT mixture control: per-task SFT sources, their weights, and the overlong policy 'drop'
(the default for conversations: a split piece must never train on an answer without its prompt)."""

import logging
import os

import numpy as np
import pytest

from mio_jax.data import packing, pipeline
from mio_jax.data import synthetic_shards as synthetic
from mio_jax.model.sizes import DEMO_VOCAB as VOCAB

SEQ = 32
N_LONG = 3  # overlong examples per dataset, at indices 0, 7, 14


def _examples(seed, first_token=None, n=20, mean=10, spread=0.3):
  out = synthetic.random_examples(n, mean, VOCAB, seed=seed, spread=spread, first_token=first_token)
  for i in range(N_LONG):  # longer than seq_len + 1
    tokens, mask = synthetic.random_examples(1, 3 * SEQ, VOCAB, seed=seed + 100 + i, spread=0)[0]
    out[7 * i] = (tokens, mask)
  return out


def _write(root, name, data_type, examples):
  synthetic.write_dataset(os.path.join(root, name), VOCAB, examples, data_type=data_type)
  return examples


def _loss_tokens(examples, max_tokens, drop_long):
  """Targets trained on after the overlong policy: each kept example predicts n - 1 targets."""
  total = 0
  for tokens, mask in examples:
    if tokens.size > max_tokens and drop_long:
      continue
    total += sum(int(m[1:].sum()) for _, m in packing.split_overlong(tokens, mask, max_tokens))
  return total


def _drain(config):
  it = pipeline.make_eval_iterator(config, VOCAB, 0, 1)
  batches = list(it)
  return batches, pipeline.dropped_records(it), pipeline.skipped_records(it)


def test_drop_drops_counts_and_logs(tmp_path, caplog):
  examples = _write(str(tmp_path), "ds", "text", _examples(0))
  config = synthetic.data_config(str(tmp_path), {"ds": "ds"}, seq_len=SEQ, overlong="drop")
  with caplog.at_level(logging.WARNING):
    batches, dropped, skipped = _drain(config)
  assert (dropped, skipped) == (N_LONG, 0)
  assert sum(int(b["loss_mask"].sum()) for b in batches) == _loss_tokens(examples, SEQ + 1, True)
  assert all(b["tokens"].shape[1] == SEQ for b in batches)
  names = [r.getMessage() for r in caplog.records if "dropping overlong" in r.getMessage()]
  assert len(names) == N_LONG and "record 7" in " ".join(names) and "ds" in names[0]


def test_split_unchanged(tmp_path):
  examples = _write(str(tmp_path), "ds", "text", _examples(0))
  config = synthetic.data_config(str(tmp_path), {"ds": "ds"}, seq_len=SEQ, overlong="split")
  batches, dropped, _ = _drain(config)
  assert dropped == 0
  assert sum(int(b["loss_mask"].sum()) for b in batches) == _loss_tokens(examples, SEQ + 1, False)
  # The default ('auto') splits a non-SFT source exactly as 'split' does.
  auto, _, _ = _drain(synthetic.data_config(str(tmp_path), {"ds": "ds"}, seq_len=SEQ))
  assert len(auto) == len(batches)
  for a, b in zip(auto, batches):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_sft_sources_default_to_drop(tmp_path):
  from mio_jax.config import get_base_config

  assert get_base_config().data.overlong == "auto"
  sft = _write(str(tmp_path), "sft_vqa", "sft_vqa", _examples(0))
  text = _write(str(tmp_path), "text", "text", _examples(1))
  for sources, want_dropped, want_tokens in (
    ({"sft_vqa": "sft_vqa"}, N_LONG, _loss_tokens(sft, SEQ + 1, True)),
    ({"text": "text"}, 0, _loss_tokens(text, SEQ + 1, False)),
  ):
    config = synthetic.data_config(str(tmp_path), sources, seq_len=SEQ)
    batches, dropped, _ = _drain(config)
    assert dropped == want_dropped, sources
    assert sum(int(b["loss_mask"].sum()) for b in batches) == want_tokens, sources
  # An explicit policy applies to SFT sources too.
  config = synthetic.data_config(
    str(tmp_path), {"sft_vqa": "sft_vqa"}, seq_len=SEQ, overlong="split"
  )
  assert _drain(config)[1] == 0


def test_per_task_mixture_yields_configured_ratios(tmp_path):
  weights = {"sft_caption": 1.0, "sft_vqa": 2.0, "sft_asr": 5.0}
  markers = {name: 10 + i for i, name in enumerate(weights)}
  for name, marker in markers.items():  # equal lengths: example ratio = weight ratio
    synthetic.write_dataset(
      os.path.join(tmp_path, name),
      VOCAB,
      synthetic.random_examples(50, 12, VOCAB, seed=marker, spread=0, first_token=marker),
      data_type=name,
    )
  config = synthetic.data_config(
    str(tmp_path), {n: n for n in weights}, weights, seq_len=SEQ, global_batch=8
  )
  it = pipeline.make_train_iterator(config, VOCAB, 0, 1)
  counts = dict.fromkeys(weights, 0)
  for _ in range(150):
    batch = next(it)
    starts = batch["tokens"][(batch["positions"] == 0) & (batch["segment_ids"] > 0)]
    for name, marker in markers.items():
      counts[name] += int((starts == marker).sum())
  total = sum(counts.values())
  assert total > 2000
  for name, w in weights.items():
    assert counts[name] / total == pytest.approx(w / sum(weights.values()), abs=0.02), counts


def test_sft_rows_land_in_per_task_sources():
  from data_pipelines.builders import BadExample, RawOptions
  from data_pipelines.builders.raw import SFT_TASKS, sft_source

  opts = RawOptions()
  assert sft_source({"type": "sft", "task": "vqa"}, opts, "x:1") == "sft_vqa"
  assert sft_source({"type": "sft"}, opts, "x:1") == "sft"
  assert sft_source({"task": "vqa"}, RawOptions(sft_by_task=False), "x:1") == "sft"
  with pytest.raises(BadExample, match="x:3: task 'V Q A'"):
    sft_source({"task": "V Q A"}, opts, "x:3")
  assert {"caption", "vqa", "asr", "tts", "s2s", "t2i", "video", "chat"} <= set(SFT_TASKS)


def test_stage4_mixtures():
  from configs import curriculum
  from data_pipelines.builders.raw import SFT_TASKS

  big = curriculum.mio_7b(4)
  assert set(big.data.sources) == {f"sft_{t}" for t in SFT_TASKS}
  assert big.data.overlong == "auto"
  demo = curriculum.demo(4)  # the demo corpus writes one `sft` source; its results kept
  assert dict(demo.data.weights) == {"sft": 8.0, "speech_text": 1.0}
  assert demo.data.overlong == "split"
