"""Evaluation during training (--config.eval_every/eval_steps): validation loss per modality in
metrics.jsonl and TensorBoard at the right steps, equal to a direct computation on the same
batches, and without changing the training trajectory."""

import json
import math
import os

import jax
import numpy as np
import pytest

from mio_jax.config import get_base_config
from mio_jax.data import pipeline
from mio_jax.data import synthetic_shards as synthetic
from mio_jax.model.sizes import get_model
from mio_jax.train import eval_step, loop
from mio_jax.train import metrics as metrics_lib
from mio_jax.train import step as step_lib

SMALL = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)
SOURCES = {"image_text": 1, "speech_text": 2}  # name -> first token (a text id)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval_data")
  _, vocab = get_model("tiny")
  for name, marker in SOURCES.items():
    for suffix, n, seed in (("", 200, 0), ("_val", 12, 1)):
      synthetic.write_dataset(
        str(root / (name + suffix)),
        vocab,
        synthetic.random_examples(n, 14, vocab, seed=seed + marker, first_token=marker),
        data_type=name,
      )
  return str(root)


def _config(data_dir, **kw):
  c = get_base_config()
  c.model_overrides.update(SMALL)
  c.seq_len, c.global_batch, c.total_steps, c.lr, c.log_every = 32, 8, 6, 1e-2, 1
  c.checkpoint_every, c.async_checkpoint = 1000, False
  c.data_dir, c.data.kind = data_dir, "shards"
  c.data.sources = {n: n for n in SOURCES}
  c.data.weights = {n: 1.0 for n in SOURCES}
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def _lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_eval_every_writes_eval_metrics_without_changing_training(data_dir, tmp_path):
  params_at = {}

  def keep(step, state):
    if step in (3, 6):
      params_at[step] = jax.device_get(state.params)

  config = _config(data_dir, eval_every=3, eval_steps=2)
  loop.train(config, str(tmp_path / "on"), on_step=keep)
  loop.train(_config(data_dir), str(tmp_path / "off"))

  on, off = _lines(tmp_path / "on"), _lines(tmp_path / "off")
  train_on = [m for m in on if "loss" in m]
  assert [m["loss"] for m in train_on] == [m["loss"] for m in off]  # same trajectory, exactly
  assert [m["batch_checksum"] for m in train_on] == [m["batch_checksum"] for m in off]
  evals = [m for m in on if "eval/loss" in m]
  assert [m["step"] for m in evals] == [3, 6]
  assert not any(k.startswith("eval/") for m in train_on for k in m)
  for m in evals:
    assert all(math.isfinite(v) for v in m.values())
    assert m["eval/tokens"] > 0 and m["eval/tokens/text"] > 0 and "eval/loss/speech" in m

  # Direct computation: the first eval_steps batches of the interleaved _val splits.
  model_cfg, vocab = get_model("tiny", **SMALL)
  val = pipeline.make_eval_iterator(eval_step.eval_config(config), vocab, 0, 1, interleave=True)
  batches = [next(val) for _ in range(2)]
  starts = np.concatenate([b["tokens"][b["positions"] == 0] for b in batches])
  assert set(SOURCES.values()) <= set(starts.tolist())  # every source in the few eval batches
  cfg = step_lib.step_config(config)
  for step, m in zip((3, 6), evals):
    sums = [step_lib.loss_sums(params_at[step], b, model_cfg, vocab, cfg)[1] for b in batches]
    want = metrics_lib.finalize(jax.tree.map(lambda *x: sum(x), *sums))
    for k, v in want.items():
      assert m["eval/" + k] == pytest.approx(float(v), rel=2e-5, abs=1e-6), k

  from tests.test_train import _event_scalars  # TensorBoard: same values at the same steps

  assert _event_scalars(str(tmp_path / "on"), "eval/loss") == pytest.approx(
    {m["step"]: m["eval/loss"] for m in evals}, rel=1e-6
  )


def test_eval_off_by_default_and_bad_settings(data_dir):
  c = get_base_config()
  assert (c.eval_every, c.eval_steps, c.data.eval_suffix) == (0, 4, "_val")
  assert eval_step.make_evaluator(c, None, True) is None
  c.eval_every = c.total_steps + 1  # never due: no validation split needed
  assert eval_step.make_evaluator(c, None, True) is None
  with pytest.raises(ValueError, match="eval_steps >= 1"):
    eval_step.Evaluator(_config(data_dir, eval_every=2, eval_steps=0), None, True)
  missing = _config(data_dir, eval_every=2)
  missing.data.eval_suffix = "_nope"
  setup = type("S", (), {"vocab": get_model("tiny")[1]})
  with pytest.raises(FileNotFoundError, match="image_text_nope"):
    eval_step.Evaluator(missing, setup, True).host_batches()
  assert eval_step.make_evaluator(missing, setup, True) is None  # warned: trains without eval


def test_demo_configs_evaluate_a_few_times_per_stage():
  from configs import curriculum

  for stage in (1, 2, 3, 4):
    c = curriculum.demo(stage)
    assert 2 <= c.total_steps // c.eval_every <= 5 and 1 <= c.eval_steps <= 4
    assert c.data.eval_suffix == "_val"


def test_mixture_flag_spells_out_sources_and_eval_reads_val_splits(data_dir):
  from mio_jax.config import with_mixture
  from mio_jax.errors import UserError

  config = _config(data_dir)
  config.data.mixture = "speech_text:3"
  resolved = with_mixture(config)
  assert dict(resolved.data.sources) == {"speech_text": "speech_text"}
  assert dict(resolved.data.weights) == {"speech_text": 3.0} and resolved.data.mixture == ""
  assert dict(eval_step.eval_config(config).data.sources) == {"speech_text": "speech_text_val"}
  for bad in ("speech_text", "speech_text:0", "a:1,a:2", ":1", "x:inf"):
    config.data.mixture = bad
    with pytest.raises(UserError, match="config.data.mixture"):
      with_mixture(config)
