"""Data, HF export and tokenization on gs:// URLs, against a real GCS emulator (fake-gcs-server).

Every test ends by checking that no local directory named 'gs:' appeared (the sign of a URL taken
for a relative local path) under its tmp_path or the working directory.
"""

import json
import logging
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from mio_jax.config import get_base_config
from mio_jax.data import format as fmt
from mio_jax.data import synthetic_shards as synthetic
from mio_jax.data.pipeline import make_train_iterator
from mio_jax.hf import config_json, release_vocab
from mio_jax.hf import weights as hf
from mio_jax.io import paths
from mio_jax.model.sizes import DEMO_VOCAB as VOCAB

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)


@pytest.fixture(autouse=True)
def no_gs_directories(tmp_path):
  yield
  for root in (str(tmp_path), os.getcwd()):
    for dirpath, dirnames, filenames in os.walk(root):
      bad = [n for n in dirnames + filenames if n == "gs:"]
      assert not bad, f"a URL was used as a local path: {os.path.join(dirpath, bad[0])}"


def _batches(config, n=4):
  it = make_train_iterator(config, VOCAB, 0, 1)
  out = [next(it) for _ in range(n)]
  it.close()
  return out


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _write_both(url, local, seed):
  """The same two small multi-shard datasets under a URL and a local dir."""
  for name, first in (("a", 5), ("b", 7)):
    examples = synthetic.random_examples(40, 30, VOCAB, seed=seed, first_token=first)
    for root in (url, local):
      synthetic.write_dataset(paths.join(root, name), VOCAB, examples, max_shard_bytes=1500)


def _data_config(data_dir, cache_dir):
  return synthetic.data_config(
    data_dir,
    {"a": "a", "b": "b"},
    {"a": 1.0, "b": 2.0},
    seq_len=32,
    global_batch=4,
    cache_dir=cache_dir,
  )


def test_gs_dataset_reads_like_a_local_one(gcs, tmp_path, caplog):
  bucket = gcs.new_bucket()
  url, local, cache = f"gs://{bucket}/data", str(tmp_path / "data"), str(tmp_path / "cache")
  _write_both(url, local, seed=0)
  # Exactly the local files, uploaded (no staging leftovers); several shards per dataset.
  local_files = sorted(
    f"data/{name}/{f}" for name in ("a", "b") for f in os.listdir(os.path.join(local, name))
  )
  assert sorted(gcs.object_names(bucket)) == local_files
  assert sum(f.startswith("data/a/shard-") for f in local_files) > 2, local_files
  assert json.loads(paths.read_text(f"{url}/a/manifest.json")) == json.loads(
    open(os.path.join(local, "a", "manifest.json")).read()
  )

  caplog.set_level(logging.INFO)
  from_gcs = _batches(_data_config(url, cache))
  staged = [r.getMessage() for r in caplog.records if "staged" in r.getMessage()]
  assert len(staged) == 2 and f"from {url}/a to {cache}" in staged[0], staged
  _assert_same_batches(from_gcs, _batches(_data_config(local, "")))

  # A rewritten dataset at the same URL is read anew, never from the stale local copies.
  for name in ("a", "b"):
    paths.remove_tree(f"{url}/{name}")
    paths.remove_tree(os.path.join(local, name))
  _write_both(url, local, seed=1)
  _assert_same_batches(_batches(_data_config(url, cache)), _batches(_data_config(local, "")))


def _small_config(**kw):
  c = get_base_config()
  c.model_overrides.update(SMALL)
  c.seq_len, c.global_batch, c.total_steps, c.lr, c.log_every = 32, 8, 2, 1e-2, 1
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def test_gs_data_dir_without_manifest_fails_before_compiling(gcs, tmp_path, caplog):
  from mio_jax.train import loop

  bucket = gcs.new_bucket()
  data_dir = f"gs://{bucket}/data"
  paths.write_bytes(f"{data_dir}/ds/shard-00000.array_record", b"orphan shard, no manifest")
  for source, message in (
    ("ds", f"{data_dir}/ds/manifest.json is missing"),
    ("nowhere", f"dataset directory {data_dir}/nowhere does not exist"),
  ):
    config = _small_config(data_dir=data_dir)
    config.data.kind = "shards"
    config.data.sources = {"ds": source}
    caplog.clear()
    with jax.log_compiles(True), pytest.raises(FileNotFoundError, match=message):
      loop.train(config, str(tmp_path / "workdir"))
    # Setup may compile scalar helpers (PRNG seeds); the model's init and train step must not.
    compiled = re.findall(r"Compiling jit\(([^)]*)\)", caplog.text)
    assert not [name for name in compiled if "step" in name or "init" in name], compiled


def test_save_hf_and_load_hf_round_trip_on_gs(gcs):
  import flax.linen as nn
  import jax.numpy as jnp

  from mio_jax.model.sizes import get_model
  from mio_jax.model.transformer import Transformer

  cfg, vocab = get_model("tiny", **SMALL)
  params = jax.jit(lambda k: nn.unbox(Transformer(cfg).init(k, jnp.zeros((1, 2), jnp.int32))))(
    jax.random.key(0)
  )["params"]
  out = f"gs://{gcs.new_bucket()}/hf"
  # Small shards: the index file and several safetensors files go through the bucket too.
  hf.save_hf(cfg, params, out, dtype="float32", vocab=vocab, max_shard_bytes=200_000)
  assert paths.exists(f"{out}/{hf.INDEX_FILE}") and paths.exists(f"{out}/config.json")
  loaded_cfg, loaded = hf.load_hf(out)
  assert (loaded_cfg.d_model, loaded_cfg.n_layers, loaded_cfg.vocab_size) == (
    cfg.d_model,
    cfg.n_layers,
    cfg.vocab_size,
  )
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.tree.map(np.asarray, params))
  assert release_vocab.load_vocab(out).fingerprint() == vocab.fingerprint()


def test_export_cli_writes_to_gs(gcs, tmp_path):
  from mio_jax.train import loop

  workdir = str(tmp_path / "workdir")
  run = loop.train(_small_config(), workdir, devices=jax.devices()[:1])
  out = f"gs://{gcs.new_bucket()}/export"
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "mio_jax.export",
      f"--workdir={workdir}",
      f"--out={out}",
      "--dtype=float32",
    ],
    cwd=ROOT,
    env={**os.environ, **gcs.env, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"to {out}" in proc.stdout
  _, exported = hf.load_hf(out)
  trained = jax.tree.map(np.asarray, config_json.unbox(run.state.params))
  jax.tree.map(np.testing.assert_array_equal, exported, trained)
  assert release_vocab.load_vocab(out).fingerprint() == VOCAB.fingerprint()


def test_tokenize_jsonl_reads_and_writes_gs(gcs, tmp_path):
  from data_pipelines import tokenize_jsonl
  from tests.test_beam import make_tokenizers, write_raw

  base = f"gs://{gcs.new_bucket()}"
  make_tokenizers(f"{base}/tok")  # trains and saves every tokenizer straight into the bucket
  raw = str(tmp_path / "raw")
  write_raw(raw)
  paths.copy_tree(raw, f"{base}/raw")
  tok = str(tmp_path / "tok")
  paths.copy_tree(f"{base}/tok", tok)

  assert (
    tokenize_jsonl.main(
      [
        f"--manifest={base}/raw/manifest.jsonl",
        f"--tokenizers={base}/tok",
        f"--out={base}/out",
        "--workers=1",
      ]
    )
    == 0
  )
  assert (
    tokenize_jsonl.main(
      [
        f"--manifest={raw}/manifest.jsonl",
        f"--tokenizers={tok}",
        f"--out={tmp_path}/out",
        "--workers=1",
      ]
    )
    == 0
  )
  report = json.loads(paths.read_text(f"{base}/out/tokenize_report.json"))
  assert report["skipped_total"] > 0 and report["processed"] > 0
  assert any(f"{base}/raw/" in m for m in report["messages"])  # errors name the URL
  names = sorted(n for n in paths.listdir(f"{base}/out") if n != "tokenize_report.json")
  assert names == sorted(n for n in os.listdir(tmp_path / "out") if n != "tokenize_report.json")
  for name in names:
    for shard in fmt.read_manifest(f"{base}/out/{name}", VOCAB)["shards"]:
      assert (
        paths.read_bytes(f"{base}/out/{name}/{shard['file']}")
        == (tmp_path / "out" / name / shard["file"]).read_bytes()
      ), (name, shard)

  sources = {n: n for n in names}
  weights = {n: 1.0 for n in names}
  gs_config = synthetic.data_config(
    f"{base}/out", sources, weights, seq_len=64, global_batch=4, cache_dir=str(tmp_path / "cache")
  )
  local_config = synthetic.data_config(
    str(tmp_path / "out"), sources, weights, seq_len=64, global_batch=4
  )
  _assert_same_batches(_batches(gs_config), _batches(local_config))


def test_media_and_eval_manifest_on_gs(gcs):
  """What `generate --image=gs://… --out=gs://…` and `evaluate --manifest=gs://…` read and write."""
  from data_pipelines.builders import read_video
  from data_pipelines.tokenizers import read_image, read_wav, write_image, write_wav
  from mio_jax.evaluation import data as eval_data

  base = f"gs://{gcs.new_bucket()}/media"
  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
  write_image(f"{base}/a.png", image)
  np.testing.assert_array_equal(read_image(f"{base}/a.png"), image)
  wave = np.sin(np.arange(1600) / 10).astype(np.float32) * 0.5
  write_wav(f"{base}/a.wav", wave, 16000)
  back, rate = read_wav(f"{base}/a.wav")
  assert rate == 16000 and np.abs(back - wave).max() < 1e-4
  for k in range(3):
    write_image(f"{base}/frames/{k}.png", image // (k + 1))
  assert read_video(f"{base}/frames").shape == (3, 12, 16, 3)
  with pytest.raises(ValueError, match=f"image file not found: {base}/missing.png"):
    read_image(f"{base}/missing.png")

  rows = [
    {"type": "image_text", "image": "a.png", "text": "a caption"},
    {"type": "speech_text", "audio": "a.wav", "text": "hello", "direction": "asr"},
  ]
  paths.write_text(f"{base}/test.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
  examples = eval_data.load_examples(f"{base}/test.jsonl")
  assert examples["image_captioning"][0].media == f"{base}/a.png"
  assert examples["asr"][0].media == f"{base}/a.wav"
  with pytest.raises(FileNotFoundError, match=f"{base}/nope.jsonl"):
    eval_data.load_examples(f"{base}/nope.jsonl")


def test_shard_writer_to_a_missing_bucket_fails_at_once(gcs):
  with pytest.raises(paths.PathError, match="gs://no-such-bucket-mio/ds: cannot write there"):
    fmt.ShardWriter("gs://no-such-bucket-mio/ds", VOCAB, data_type="text", source="test")
