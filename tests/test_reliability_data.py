"""Bad data and a full disk, as an adversarial user meets them at the command line: every case
ends in ONE line naming the file and record (or the checkpoint path and the last good one), the
documented exit code (2: fix the input; 3: fix the storage), no traceback, and nothing outside
the run's own files changed."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from mio_jax.data import format as fmt
from mio_jax.model.sizes import get_model
from mio_jax.tokens import vocab as vocab_lib
from tests.test_checkpoint import MODEL, ROOT, _env

SHARD = "shard-00000.array_record"
_, VOCAB = get_model("tiny")


def _write_text_source(root, vocab=VOCAB, n=40, name="text"):
  """One real dataset `name` of n examples (ids inside the text block), one shard."""
  rng = np.random.default_rng(0)
  with fmt.ShardWriter(os.path.join(root, name), vocab, "text", "reliability test") as w:
    for _ in range(n):
      k = int(rng.integers(20, 60))
      w.write(rng.integers(300, 600, k), np.ones(k, np.uint8))
  return os.path.join(root, name, SHARD)


def _rewrite_every_record(shard, edit):
  """Replaces every record by edit(blob): whichever record the run reads first is bad."""
  reader = ArrayRecordReader(shard)
  blobs = [reader.read([i])[0] for i in range(reader.num_records())]
  reader.close()
  writer = ArrayRecordWriter(shard, "group_size:1")
  for blob in blobs:
    writer.write(edit(blob))
  writer.close()


def _tree_digest(root) -> dict:
  """path → sha256 of every file under root (what "nothing changed" compares)."""
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      path = os.path.join(d, f)
      with open(path, "rb") as fh:
        out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
  return out


def _train(data_dir, workdir, *flags, total_steps=4, every=2):
  cmd = [sys.executable, "-m", "mio_jax.main", "--config=configs/stage1.py"]
  cmd += ["--config.seq_len=64", "--config.global_batch=4", "--config.log_every=1"]
  cmd += [f"--config.model_overrides.{k}={v}" for k, v in MODEL.items()]
  cmd += [
    f"--config.data_dir={data_dir}",
    "--config.data.build_demo_corpus=false",
    "--config.data.mixture=text:1",
    f"--config.total_steps={total_steps}",
    f"--config.checkpoint_every={every}",
    f"--workdir={workdir}",
    *flags,
  ]
  return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)


def _one_error_line(out, code: int, prog: str = "mio_jax.main") -> str:
  """The run's single error line; asserts the exit code and that nothing else reads as one."""
  assert out.returncode == code, out.stderr[-3000:]
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
  assert len(errors) == 1 and errors[0].startswith(f"{prog}: error: "), out.stderr[-3000:]
  return errors[0]


def _bad_data_run(tmp_path, edit_data, *flags):
  """Builds the data, damages it with edit_data(data_dir), trains on it; checks that the data
  is left byte for byte as it was. -> (the error line, the process result)."""
  data = tmp_path / "data"
  edit_data(str(data))
  before = _tree_digest(data)
  out = _train(data, tmp_path / "run", *flags)
  assert _tree_digest(data) == before  # the user's data is only read
  assert set(os.listdir(tmp_path)) <= {"data", "run"}  # nothing written beside the run
  return out


def test_truncated_shard_is_one_line_naming_the_file(tmp_path):
  def truncate(data):
    shard = _write_text_source(data)
    with open(shard, "r+b") as f:
      f.truncate(os.path.getsize(shard) // 2)

  line = _one_error_line(_bad_data_run(tmp_path, truncate), 2)
  assert f"{tmp_path}/data/text/{SHARD}: " in line
  assert "truncated" in line


def _flip(blob):
  blob = bytearray(blob)
  blob[20] ^= 0xFF  # inside the token ids: only our crc32 can tell
  return bytes(blob)


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "grain-workers"])
def test_flipped_bytes_are_one_line_naming_file_and_record(tmp_path, workers):
  """Also with the records read in grain worker processes (data.worker_count > 0)."""

  def flip(data):
    _rewrite_every_record(_write_text_source(data), _flip)

  out = _bad_data_run(tmp_path, flip, f"--config.data.worker_count={workers}")
  line = _one_error_line(out, 2)
  assert f"{tmp_path}/data/text/{SHARD} record " in line
  assert line.endswith(": checksum mismatch (corrupt bytes)")
  assert "For simplicity" not in out.stderr  # grain's traceback note


def test_token_id_outside_the_vocab_is_one_line(tmp_path):
  bad = fmt.encode_record(np.array([301, 302, VOCAB.size + 7, 303]), np.ones(4, np.uint8))

  def out_of_vocab(data):
    _rewrite_every_record(_write_text_source(data), lambda _: bad)

  line = _one_error_line(_bad_data_run(tmp_path, out_of_vocab), 2)
  assert f"{tmp_path}/data/text/{SHARD} record " in line
  assert f": token id {VOCAB.size + 7} outside the vocab [0, {VOCAB.size})" in line


def test_vocab_fingerprint_mismatch_is_one_line(tmp_path):
  other = vocab_lib.Vocab(text_size=VOCAB.text_size + 1)

  def other_vocab(data):
    _write_text_source(data, vocab=other)

  line = _one_error_line(_bad_data_run(tmp_path, other_vocab), 2)
  assert f"{tmp_path}/data/text/manifest.json: vocab fingerprint {other.fingerprint()}" in line
  assert "does not match this model's vocab" in line


def test_missing_data_dir_says_it_does_not_exist(tmp_path):
  out = _train(tmp_path / "nowhere", tmp_path / "run")
  line = _one_error_line(out, 2)
  assert f"config.data_dir {tmp_path}/nowhere itself does not exist" in line
  assert not (tmp_path / "nowhere").exists()


def _text_tokenizers(directory):
  """A real sentencepiece text tokenizer, the only part tokenize_jsonl needs for text lines."""
  from data_pipelines.builders.prompt_pools import POOL_TEXTS
  from data_pipelines.tokenizers import Tokenizers, save_tokenizers, train_sentencepiece
  from tests.convert_fixtures import TEXTS

  texts = (TEXTS + list(POOL_TEXTS)) * 5  # as tests/convert_fixtures.py trains it
  text = train_sentencepiece(texts, os.path.join(directory, "text"), vocab_size=400)
  save_tokenizers(Tokenizers(text, None, None, None), directory)
  return directory


def test_tokenize_strict_bad_line_is_one_line_and_leaves_no_shard(tmp_path):
  tok = _text_tokenizers(str(tmp_path / "tok"))
  manifest = tmp_path / "raw.jsonl"
  good = json.dumps({"type": "text", "text": "a red circle and a blue square"})
  manifest.write_text(f"{good}\n{good}\n{{not json\n{good}\n")
  before = _tree_digest(tmp_path)
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "data_pipelines.tokenize_jsonl",
      f"--manifest={manifest}",
      f"--tokenizers={tok}",
      f"--out={tmp_path / 'shards'}",
      "--strict",
      "--workers=1",
    ],
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  line = _one_error_line(out, 2, prog="data_pipelines.tokenize_jsonl")
  assert line.endswith(f"{manifest}:3: not a JSON object")
  # The first two lines had opened text/shard-00000: it is gone with its folder, no manifest-less
  # shard is left; nothing else changed.
  assert not (tmp_path / "shards" / "text").exists()
  assert {k: v for k, v in _tree_digest(tmp_path).items() if not k.startswith("shards")} == before


@pytest.fixture
def small_disk(tmp_path):
  """A 7 MiB tmpfs: one checkpoint of the test model (~4.6 MiB) fits, a second does not."""
  disk = tmp_path / "disk"
  disk.mkdir()
  mounted = subprocess.run(
    ["mount", "-t", "tmpfs", "-o", "size=7m", "tmpfs", str(disk)], capture_output=True, text=True
  )
  if mounted.returncode:
    pytest.skip(f"a full disk needs a small tmpfs, and mount is not permitted: {mounted.stderr}")
  try:
    yield disk
  finally:
    subprocess.run(["umount", "--lazy", str(disk)], check=True)  # lazy: a failed run's open files


def test_full_disk_stops_at_the_failing_save_in_one_line(tmp_path, small_disk):
  data = tmp_path / "data"
  _write_text_source(str(data))
  before = _tree_digest(data)
  workdir = small_disk / "run"
  out = _train(data, workdir, total_steps=8, every=2)
  line = _one_error_line(out, 3)
  ckpts = workdir / "checkpoints"
  assert f"saving checkpoint {ckpts}/4 failed (No space left on device" in line
  assert "the run stopped at step 4" in line
  assert f"the last good checkpoint is {ckpts}/2" in line
  assert "sys.meta_path is None" not in out.stderr
  # It stopped at that step: nothing trained or logged past it, no later save, the earlier
  # checkpoint finished and whole.
  with open(workdir / "metrics.jsonl") as f:
    assert [json.loads(m)["step"] for m in f] == [1, 2, 3]  # step 4 stops before its log
  assert sorted(os.listdir(ckpts)) == ["2"]
  assert os.path.exists(ckpts / "2" / "state" / "_METADATA")
  assert _tree_digest(data) == before


def _train_in_process(data_dir, workdir, total_steps, **data):
  import jax

  from mio_jax.train import loop
  from tests.test_checkpoint import _config

  c = _config(str(data_dir), total_steps, (1, 1, 1))
  c.global_batch, c.log_every, c.checkpoint_every, c.keep_checkpoints = 4, 1, 3, 5
  c.data.mixture = "text:1"
  for k, v in data.items():
    setattr(c.data, k, v)
  return loop.train(c, str(workdir), devices=jax.devices()[:1])


def test_skipped_records_are_counted_in_metrics_across_a_restart(tmp_path):
  shard = _write_text_source(str(tmp_path / "data"))
  reader = ArrayRecordReader(shard)
  n = reader.num_records()
  reader.close()
  _rewrite_every_record(shard, _flip)  # every record corrupt but the few rewritten below
  good = [fmt.encode_record(np.arange(300, 350), np.ones(50, np.uint8))] * n
  blobs = iter([g if i % 2 else None for i, g in enumerate(good)])
  _rewrite_every_record(shard, lambda blob: next(blobs) or blob)  # odd records good again
  run = tmp_path / "run"
  _train_in_process(tmp_path / "data", run, 3, skip_corrupt=True)
  _train_in_process(tmp_path / "data", run, 6, skip_corrupt=True)  # resumes at step 3
  with open(run / "metrics.jsonl") as f:
    counts = {m["step"]: m["data/skipped_records"] for m in map(json.loads, f)}
  assert sorted(counts) == [1, 2, 3, 4, 5, 6]
  assert counts[1] > 0  # ~half of what step 1 read was corrupt
  steps = sorted(counts)
  assert all(counts[a] <= counts[b] for a, b in zip(steps, steps[1:]))  # cumulative, not reset
  assert counts[4] >= counts[3]


def test_truncated_checkpoint_names_the_file(tmp_path):
  from mio_jax.checkpoint import manager as ckpt

  _write_text_source(str(tmp_path / "data"))
  run = tmp_path / "run"
  _train_in_process(tmp_path / "data", run, 3)
  state = run / "checkpoints" / "3" / "state"
  files = [os.path.join(d, f) for d, _, fs in os.walk(state) for f in fs]
  biggest = max(files, key=os.path.getsize)
  size = os.path.getsize(biggest) // 2
  with open(biggest, "r+b") as f:
    f.truncate(size)
  with pytest.raises(ckpt.NoUsableCheckpointError) as error:
    _train_in_process(tmp_path / "data", run, 6)
  name = os.path.relpath(biggest, run / "checkpoints" / "3")
  assert (
    f"step 3: CheckpointReadError: {run}/checkpoints/3: truncated file {name}: {size} bytes, "
    in (str(error.value))
  )


def test_storage_turned_read_only_mid_run_stops_at_the_next_save(tmp_path):
  """The permission case (root ignores file modes): after the step-2 checkpoint the workdir's
  checkpoint folder becomes a read-only bind mount."""
  import jax

  from mio_jax.checkpoint import manager as ckpt
  from mio_jax.train import loop
  from tests.test_checkpoint import _config

  _write_text_source(str(tmp_path / "data"))
  c = _config(str(tmp_path / "data"), 8, (1, 1, 1))
  c.global_batch, c.checkpoint_every, c.keep_checkpoints = 4, 2, 5
  c.data.mixture = "text:1"
  workdir = tmp_path / "run"
  ckpts = workdir / "checkpoints"
  mounted = []

  def read_only_after_step_3(step, _state):
    if step != 3:
      return
    bind = subprocess.run(["mount", "--bind", str(ckpts), str(ckpts)], capture_output=True)
    if bind.returncode:
      pytest.skip(f"a read-only folder needs a bind mount, not permitted: {bind.stderr}")
    mounted.append(ckpts)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(ckpts)], check=True)

  try:
    with pytest.raises(ckpt.SaveFailedError) as error:
      loop.train(c, str(workdir), devices=jax.devices()[:1], on_step=read_only_after_step_3)
  finally:
    for m in mounted:
      subprocess.run(["umount", str(m)], check=True)
  assert f"saving checkpoint {ckpts}/4 failed (Read-only file system)" in str(error.value)
  assert f"the run stopped at step 4; the last good checkpoint is {ckpts}/2." in str(error.value)
  assert sorted(os.listdir(ckpts)) == ["2"]
