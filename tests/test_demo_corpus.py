"""The demo corpus: builds (reduced scale), is deterministic, and its datasets load and make
sense."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import demo_plan
from mio_jax.data.format import decode_record, read_manifest
from mio_jax.model.sizes import DEMO_VOCAB as V

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TYPES = ("image_text", "interleaved", "video_text", "speech_text", "text", "sft")


def setup_module():
  # espeak-ng is a system package that launch/setup.sh installs; without it there is no demo speech.
  assert shutil.which("espeak-ng"), "espeak-ng is not installed (apt-get install espeak-ng)"


def _build(out, cache, seed=0):
  env = {**os.environ, "PYTHONPATH": ROOT}
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "data_pipelines.demo_corpus",
      f"--out={out}",
      "--scale=0.05",
      f"--seed={seed}",
      f"--speech_cache={cache}",
      "--strict",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def _tree(directory):
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      if name != "corpus.json":  # holds the build time
        with open(os.path.join(root, name), "rb") as f:
          out[os.path.relpath(os.path.join(root, name), directory)] = f.read()
  return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  base = tmp_path_factory.mktemp("demo")
  _build(base / "a", base / "cache")
  return base


def _records(path):
  from array_record.python.array_record_module import ArrayRecordReader

  out = []
  for shard in read_manifest(str(path), V)["shards"]:
    reader = ArrayRecordReader(os.path.join(path, shard["file"]))
    out += [decode_record(b) for b in reader.read(list(range(reader.num_records())))]
    reader.close()
  return out


def test_same_seed_gives_identical_files(corpus):
  _build(corpus / "b", corpus / "cache")
  a, b = _tree(corpus / "a"), _tree(corpus / "b")
  # sentencepiece stores its output path inside tokenizer.model; its ids are compared via the
  # shards.
  a.pop("tokenizers/text/tokenizer.model"), b.pop("tokenizers/text/tokenizer.model")
  assert sorted(a) == sorted(b)
  assert sum(name.endswith(".array_record") for name in a) == 3 * len(TYPES)
  for name in a:
    assert a[name] == b[name], name


def test_seed_changes_the_corpus():
  a, b = demo_plan.make_plan(0, 0.05), demo_plan.make_plan(1, 0.05)
  assert a.examples["train"] != b.examples["train"]
  assert a.examples == demo_plan.make_plan(0, 0.05).examples


def test_every_dataset_loads_and_summary_matches(corpus):
  summary = json.loads((corpus / "a" / "corpus.json").read_text())
  names = [t + s for t in TYPES for s in ("", "_val", "_test")]
  assert sorted(summary["datasets"]) == sorted(names)
  for name in names:
    m = read_manifest(str(corpus / "a" / name), V)
    assert m["records"] > 0 and m["records"] == summary["datasets"][name]["records"]
    assert m["data_type"] == name.split("_val")[0].split("_test")[0]
  for report in summary["reports"].values():
    assert report["skipped_total"] == 0
  tok = summary["tokenizers"]
  assert tok["text_vocab_size"] <= V.text_size and tok["image"]["codes"] <= V.image_codes
  assert tok["speech"] == {"layers": 4, "codes": 256, "frame_rate": 50}
  assert summary["build_seconds"] < 180


def test_raw_test_split_keeps_what_an_evaluator_needs(corpus):
  raw = corpus / "a" / "raw"
  rows = [json.loads(line) for line in (raw / "test.jsonl").read_text().splitlines()]
  assert {r["type"] for r in rows} == set(TYPES)
  for r in rows:
    if r["type"] == "image_text":
      assert r["text"] and r["attributes"] and (raw / r["image"]).is_file()
    if r["type"] == "speech_text":
      assert r["text"] and (raw / r["audio"]).is_file()
    if r["type"] == "video_text":
      assert np.load(raw / r["video"]).shape == (16, 48, 48, 3)


def test_image_tokenizer_codes_each_object_in_one_token(corpus):
  """A cell is one patch and every object has its own code: still scenes tokenize exactly."""
  from data_pipelines import shapes_world as W
  from data_pipelines.tokenizers import load_tokenizers

  image = load_tokenizers(str(corpus / "a" / "tokenizers")).image
  assert image.tokens_per_image == 9 and image.image_size == W.SIZE_PX
  atlas = W.atlas()
  codes = np.stack([image.encode(a) for a in atlas])
  assert len(np.unique(codes)) == 80 and (codes == codes[:, :1]).all()  # one code per object
  blank = W.draw([])
  assert len(set(image.encode(blank).tolist())) == 1
  scene = W.draw([{"colour": "red", "shape": "cross", "size": "small", "cell": (2, 1)}])
  np.testing.assert_array_equal(image.decode(image.encode(scene)), scene)


def test_sft_covers_every_chat_task_the_evaluator_asks(corpus):
  from mio_jax.generate import prompting

  rows = [
    json.loads(line)
    for s in ("train", "val", "test")
    for line in (corpus / "a" / "raw" / f"{s}.jsonl").read_text().splitlines()
  ]
  users = [
    " ".join(p["text"] for p in m["content"] if "text" in p)
    if isinstance(m["content"], list)
    else m["content"]
    for r in rows
    if r["type"] == "sft"
    for m in r["messages"]
    if m["role"] == "user"
  ]
  for instruction in (
    prompting.CHAT_DESCRIBE_IMAGE,
    prompting.CHAT_DESCRIBE_VIDEO,
    prompting.CHAT_TRANSCRIBE,
  ):
    assert instruction in users
  assert any(u.startswith(prompting.CHAT_DRAW.split("{")[0]) for u in users)
  assert any(u.startswith(prompting.CHAT_SAY.split("{")[0]) for u in users)
  assert {r["task"] for r in rows if r["type"] == "sft"} == set(demo_plan.SFT_KINDS)


def test_record_layouts(corpus):
  d = corpus / "a"
  image_records = _records(d / "image_text")
  for tokens, mask in image_records:
    assert (tokens == V.special_id("<image>")).sum() == 1
    assert mask[0] == 0 and mask[1:].all() or (tokens == V.special_id("<cfg_null>")).any()
  video = _records(d / "video_text")
  assert all((t == V.special_id("<image>")).sum() == 4 for t, _ in video)
  for tokens, _ in _records(d / "speech_text"):
    speech = tokens[V.modality_of(tokens) == 3]
    layers = set(V.speech_layer_of(speech).tolist())
    assert layers in ({0}, {0, 1, 2, 3}) and speech.size <= 4 * 15 * 50


def test_sft_loss_only_on_assistant_turns(corpus):
  from data_pipelines.tokenizers import load_tokenizers

  text = load_tokenizers(str(corpus / "a" / "tokenizers")).text
  start, end = V.special_id("<|im_start|>"), V.special_id("<|im_end|>")
  for tokens, mask in _records(corpus / "a" / "sft"):
    expect = np.zeros_like(mask)
    for s, e in zip(np.flatnonzero(tokens == start), np.flatnonzero(tokens == end)):
      header = text.decode(tokens[s + 1 : s + 3][V.modality_of(tokens[s + 1 : s + 3]) == 0])
      if header.startswith("assistant"):
        head = len(text.encode("assistant\n"))
        expect[s + 1 + head : e + 1] = 1
    expect[-1] = 1  # every demo dialogue ends with the assistant
    np.testing.assert_array_equal(mask, expect)
