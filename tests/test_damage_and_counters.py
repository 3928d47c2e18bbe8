"""Only named damage moves a checkpoint aside; the data states a real run saves restore on any
process count; what became of every record read reaches the training metrics, exactly."""

import json
import os
import re
import shutil

import jax
import numpy as np
import pytest

from mio_jax.checkpoint import data_state as elastic
from mio_jax.checkpoint import digest
from mio_jax.checkpoint import manager as ckpt
from mio_jax.checkpoint import params as checkpoint_params
from mio_jax.checkpoint.trained import abstract_params
from mio_jax.data import pipeline
from mio_jax.data import synthetic_shards as synthetic
from mio_jax.model.sizes import get_model
from tests.test_checkpoint import MODEL, _config
from tests.test_reliability_data import _train_in_process, _write_text_source

_, VOCAB = get_model("tiny")


def _run_config(data_dir, total_steps=6, **data):
  """The config `_train_in_process` trains with (so iterators built here match the run's)."""
  c = _config(str(data_dir), total_steps, (1, 1, 1))
  c.global_batch, c.log_every, c.checkpoint_every, c.keep_checkpoints = 4, 1, 3, 5
  c.data.mixture = "text:1"
  for k, v in data.items():
    setattr(c.data, k, v)
  return c


def _steps(workdir) -> list[int]:
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A real 6-step run with checkpoints at steps 3 and 6 (copied by each test that changes it)."""
  root = tmp_path_factory.mktemp("trained")
  _write_text_source(str(root / "data"))
  _train_in_process(root / "data", root / "run", 6)
  assert _steps(root / "run") == [3, 6]
  return root


def _copy(trained, tmp_path):
  shutil.copytree(trained / "run", tmp_path / "run")
  return tmp_path / "run"


def _batches(iterator, n):
  return [next(iterator) for _ in range(n)]


# -- elastic restore on the states a training run saved --------------------------------------


def test_restore_from_dir_reads_the_states_a_training_run_saved(trained):
  config = _run_config(trained / "data")
  data_dir = str(trained / "run" / "checkpoints" / "6" / "data")
  assert json.loads(open(os.path.join(data_dir, "process_0-of-1.json")).read()).keys() == {
    "state",
    "sha256",
  }  # the wrapped, sealed form every run writes
  normal = pipeline.make_train_iterator(config, VOCAB, 0, 1)
  ckpt.restore_data(normal, data_dir)
  elastic_one = elastic.restore_from_dir(
    pipeline.make_train_iterator(config, VOCAB, 0, 1), data_dir
  )
  halves = [
    elastic.restore_from_dir(pipeline.make_train_iterator(config, VOCAB, p, 2), data_dir)
    for p in (0, 1)
  ]
  try:
    want = _batches(normal, 3)
    got_one = _batches(elastic_one, 3)
    got_halves = [_batches(h, 3) for h in halves]
    for i, full in enumerate(want):
      for k in full:
        np.testing.assert_array_equal(full[k], got_one[i][k])
        np.testing.assert_array_equal(
          full[k], np.concatenate([got_halves[0][i][k], got_halves[1][i][k]])
        )
  finally:
    for it in [normal, elastic_one, *halves]:
      it.close()


def test_restore_from_dir_names_a_state_that_differs_from_its_digest(trained, tmp_path):
  data_dir = tmp_path / "data"
  shutil.copytree(trained / "run" / "checkpoints" / "6" / "data", data_dir)
  state_file = data_dir / "process_0-of-1.json"
  text = state_file.read_text()
  damaged = re.sub(r'"emitted": (\d)', lambda m: f'"emitted": {int(m.group(1)) ^ 1}', text, count=1)
  assert damaged != text
  state_file.write_text(damaged)
  config = _run_config(trained / "data")
  it = pipeline.make_train_iterator(config, VOCAB, 0, 2)
  try:
    with pytest.raises(digest.ChecksumError, match=r"process_0-of-1\.json: content does not match"):
      elastic.restore_from_dir(it, str(data_dir))
  finally:
    it.close()
  assert issubclass(digest.ChecksumError, digest.CheckpointDamage)


def test_a_data_state_saved_before_sealing_restores_with_a_warning(trained, tmp_path, caplog):
  data_dir = tmp_path / "data"
  shutil.copytree(trained / "run" / "checkpoints" / "6" / "data", data_dir)
  state_file = data_dir / "process_0-of-1.json"
  sealed = json.loads(state_file.read_text())
  state_file.write_text(json.dumps(sealed["state"]))  # the bare state older versions wrote
  config = _run_config(trained / "data")
  old = pipeline.make_train_iterator(config, VOCAB, 0, 1)
  new = pipeline.make_train_iterator(config, VOCAB, 0, 1)
  try:
    with caplog.at_level("WARNING", logger="mio_jax.checkpoint.data_state"):
      elastic.restore_from_dir(old, str(data_dir))
    assert f"{state_file}: a data state saved without a digest" in caplog.text
    elastic.restore_from_dir(new, str(trained / "run" / "checkpoints" / "6" / "data"))
    for a, b in zip(_batches(old, 2), _batches(new, 2)):
      for k in a:
        np.testing.assert_array_equal(a[k], b[k])
  finally:
    old.close()
    new.close()


# -- only named damage moves checkpoints aside --------------------------------------------------


@pytest.mark.parametrize("bug", [KeyError("n"), ValueError("a bug in the restore path")])
def test_a_bug_in_the_restore_path_stops_the_run_and_moves_nothing(
  trained, tmp_path, monkeypatch, bug
):
  workdir = _copy(trained, tmp_path)
  verify = ckpt.verify_digest

  def buggy_verify(tree, meta, where, prefix=""):  # fault injection: our own code raises
    if where.endswith("/6"):
      raise bug
    return verify(tree, meta, where, prefix)

  monkeypatch.setattr(ckpt, "verify_digest", buggy_verify)
  with pytest.raises(type(bug)) as error:
    _train_in_process(trained / "data", workdir, 9)
  assert error.value is bug
  assert not os.path.exists(tmp_path / "run" / "checkpoints.damaged")
  assert _steps(workdir) == [3, 6]


def _strip_digests(step_dir):
  """The meta an older mio_jax wrote: no array digests, no seal of its own."""
  meta_file = step_dir / "meta" / "metadata"
  record = json.loads(meta_file.read_text())
  for key in ("state_digest", "digest_algorithm", "meta_sha256"):
    del record[key]
  meta_file.write_text(json.dumps(record))


def test_checkpoint_without_digests_resumes_with_a_warning(trained, tmp_path, caplog):
  workdir = _copy(trained, tmp_path)
  _strip_digests(workdir / "checkpoints" / "6")
  with caplog.at_level("WARNING", logger="mio_jax.checkpoint"):
    run = _train_in_process(trained / "data", workdir, 9)
  assert [h["step"] for h in run.history] == [7, 8, 9]  # resumed from step 6, not 3
  warned = [r.getMessage() for r in caplog.records if "cannot be verified" in r.getMessage()]
  assert len(warned) == 1 and warned[0].startswith(f"{workdir}/checkpoints/6: meta has no state")
  assert "is unusable" not in caplog.text
  assert not os.path.exists(tmp_path / "run" / "checkpoints.damaged")


def test_restore_params_warns_when_it_cannot_verify_a_digest(trained, tmp_path, caplog):
  workdir = _copy(trained, tmp_path)
  cfg, _ = get_model("tiny", **MODEL)
  with caplog.at_level("WARNING", logger="mio_jax.checkpoint"):
    verified, _ = checkpoint_params.restore_params(str(workdir), abstract_params(cfg))
  assert "cannot be verified" not in caplog.text
  _strip_digests(workdir / "checkpoints" / "6")
  caplog.clear()
  with caplog.at_level("WARNING", logger="mio_jax.checkpoint"):
    params, step_dir = checkpoint_params.restore_params(str(workdir), abstract_params(cfg))
  assert step_dir == f"{workdir}/checkpoints/6"
  assert f"{workdir}/checkpoints/6: meta has no state digest" in caplog.text
  assert "cannot be verified" in caplog.text
  for x, y in zip(jax.tree.leaves(verified), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# -- record counters in the metrics --------------------------------------------------------------

N_RECORDS, SHORT_EVERY = 60, 5


def _odd_dataset(root):
  """Every 5th record has one token (nothing to predict), every 5th + 1 has 150 (> seq_len + 1
  = 65: split into pieces or dropped); the rest 30."""
  rng = np.random.default_rng(0)
  lengths = [(1, 150, 30, 30, 30)[i % SHORT_EVERY] for i in range(N_RECORDS)]
  examples = [(rng.integers(300, 600, n), np.ones(n, np.uint8)) for n in lengths]
  synthetic.write_dataset(str(root / "text"), VOCAB, examples)


def test_one_pass_counts_every_short_split_and_dropped_record_exactly(tmp_path):
  _odd_dataset(tmp_path / "data")
  expected = N_RECORDS // SHORT_EVERY
  for policy, counts in [
    ("split", dict(short_records=expected, split_records=expected, dropped_records=0)),
    ("drop", dict(short_records=expected, split_records=0, dropped_records=expected)),
  ]:
    config = _run_config(tmp_path / "data", overlong=policy)
    it = pipeline.make_eval_iterator(config, VOCAB, 0, 1)
    try:
      for _ in it:
        pass
      assert pipeline.record_counts(it) == dict(skipped_records=0, **counts), policy
    finally:
      it.close()


@pytest.mark.parametrize("policy", ["split", "drop"])
def test_record_counts_reach_the_metrics_and_survive_a_restart(tmp_path, policy):
  _odd_dataset(tmp_path / "data")
  run = tmp_path / "run"
  _train_in_process(tmp_path / "data", run, 3, overlong=policy)
  _train_in_process(tmp_path / "data", run, 6, overlong=policy)  # resumes at step 3
  with open(run / "metrics.jsonl") as f:
    logged = {
      m["step"]: {k: m[f"data/{k}_records"] for k in ("skipped", "dropped", "short", "split")}
      for m in map(json.loads, f)
    }
  assert sorted(logged) == [1, 2, 3, 4, 5, 6]
  # What a straight pass over the same batches read, counted from the records themselves.
  it = pipeline.make_train_iterator(_run_config(tmp_path / "data", overlong=policy), VOCAB, 0, 1)
  try:
    for step in range(1, 7):
      next(it)
      want = pipeline.record_counts(it)
      assert logged[step] == {k: float(want[f"{k}_records"]) for k in logged[step]}, step
  finally:
    it.close()
  assert logged[1]["short"] > 0 and logged[6]["short"] > logged[1]["short"]
  overlong = "split" if policy == "split" else "dropped"
  other = "dropped" if policy == "split" else "split"
  assert logged[1][overlong] > 0 and logged[6][other] == 0
