"""Bring your own data, end to end: a fixture of every public layout (COCO, LibriSpeech, webdataset
tars, WebVid, MMC4, LLaVA, speech dialogues, VQAv2, MSRVTT-QA) → data_pipelines.convert →
tokenize_jsonl → shards → a few training steps on all of them (`--config.data.mixture`, validation
loss during training) → `mio_jax.evaluate` with the standard metrics on the converted manifest.

MMC4 (interleaved) and the speech dialogues (sft_s2s) are trained on but have no standard
benchmark; every other converter's rows are evaluated."""

import io
import json
import math

import numpy as np
import pytest

from configs import stage1
from data_pipelines import convert
from data_pipelines.tokenize_jsonl import run as tokenize
from mio_jax.checkpoint import manager as checkpoint
from mio_jax.data.format import read_manifest
from mio_jax.evaluation import standard_metrics as S
from mio_jax.model.sizes import DEMO_VOCAB as V
from mio_jax.train import loop
from tests import convert_fixtures as fx
from tests.test_evaluate import run_evaluate

TINY = dict(n_layers=2, d_model=64, n_heads=2, n_kv_heads=1, ffn_dim=128)
# What the seven converters' rows become (tests/test_convert.py checks the per-format counts).
SOURCES = {
  "image_text": 2,
  "speech_text": 2,
  "video_text": 1,
  "interleaved": 1,
  "sft_vqa": 1,
  "sft_chat": 1,
  "sft_s2s": 1,
  "sft_video": 1,
}
TASKS = ("coco_captions", "vqa", "asr", "tts", "text_to_image", "video_captioning", "video_qa")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """raw/all.jsonl of every fixture, the tokenizers, and train + _val shards of it."""
  root = tmp_path_factory.mktemp("byod")
  raw = root / "raw"
  lines = []
  for fmt, (write, src, split) in sorted(fx.FIXTURES.items()):
    write(str(root / "src" / fmt))
    path = raw / f"{fmt}.jsonl"
    src_path = str(root / "src" / fmt / src) if src else str(root / "src" / fmt)
    report = convert.convert(fmt, src_path, str(path), split=split, stream=io.StringIO())
    assert report.processed > 0, fmt
    lines += path.read_text().splitlines()
  (raw / "all.jsonl").write_text("\n".join(lines) + "\n")
  tok = fx.make_tokenizers(str(root / "tok"))
  for suffix in ("", "_val"):
    rep = tokenize(
      str(raw / "all.jsonl"),
      tok,
      str(root / "shards"),
      V,
      suffix=suffix,
      strict=True,
      stream=io.StringIO(),
    )
    assert not rep.skipped
  for name in SOURCES:
    assert read_manifest(str(root / "shards" / name))["records"] > 0, name
  return root, tok


def _config(shards):
  c = stage1.get_config("demo")
  c.model_overrides.update(TINY)
  c.data_dir, c.data.build_demo_corpus = str(shards), False
  c.data.mixture = ",".join(f"{k}:{v}" for k, v in SOURCES.items())
  c.seq_len, c.global_batch, c.total_steps, c.lr, c.warmup_frac = 256, 8, 8, 1e-2, 0.0
  c.log_every, c.checkpoint_every, c.async_checkpoint = 1, 8, False
  c.eval_every, c.eval_steps = 4, 1
  return c


def test_every_format_converts_trains_and_evaluates(converted, tmp_path):
  import tiny_judges

  root, tok = converted
  workdir = tmp_path / "wd"
  loop.train(_config(root / "shards"), str(workdir))
  logged = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  losses = [m["loss"] for m in logged if "loss" in m]
  assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
  assert np.mean(losses[-2:]) < losses[0]  # it learns from the converted data
  evals = [m for m in logged if "eval/loss" in m]
  assert [m["step"] for m in evals] == [4, 8]
  assert all(m["eval/tokens/image"] > 0 and m["eval/tokens/speech"] > 0 for m in evals)
  meta = checkpoint.read_meta(str(workdir / "checkpoints" / "8"))
  assert meta["resume"]["data.sources"] == {k: k for k in SOURCES}

  judges = tmp_path / "judges"
  tiny_judges.whisper(str(judges / "whisper"), emit="h")
  tiny_judges.clip(str(judges / "clip"))
  # --limit=3: every evaluated example is then in the samples (at most 3 are kept).
  result, stdout = run_evaluate(
    workdir,
    root / "raw" / "all.jsonl",
    tmp_path / "eval.json",
    judges,
    f"--tokenizers={tok}",
    tasks=TASKS,
    limit=3,
  )
  assert result["step"] == 8
  tasks = result["tasks"]
  # COCO: 3 of the 4 images (coco's 2, webdataset's 2); VQA: the LLaVA image question and the
  # 2 VQAv2 ones; ASR/TTS: the 2 LibriSpeech utterances; text-to-image: 3 of the 5 image_text
  # rows; WebVid: 2 captioned clips; MSRVTT-QA: 2 questions.
  n = {t: tasks[t]["n"] for t in TASKS}
  assert n == {
    "coco_captions": 3,
    "vqa": 3,
    "asr": 2,
    "tts": 2,
    "text_to_image": 3,
    "video_captioning": 2,
    "video_qa": 2,
  }, n
  coco = tasks["coco_captions"]
  want = S.caption_scores(
    [s["prediction"] for s in coco["samples"]], [s["reference"] for s in coco["samples"]]
  )
  assert coco["metrics"]["cider"] == pytest.approx(want["cider"])
  assert coco["metrics"]["bleu4"] == pytest.approx(want["bleu4"])
  refs = [s["reference"] for s in tasks["asr"]["samples"]]
  assert refs == ["A RED CIRCLE", "A BLUE SQUARE"]  # as LibriSpeech writes them; WER normalises
  assert tasks["asr"]["metrics"]["wer_norm"] == pytest.approx(
    S.wer([s["prediction"] for s in tasks["asr"]["samples"]], refs)
  )
  heard = [s["external_asr"] for s in tasks["tts"]["samples"]]
  assert tasks["tts"]["metrics"]["wer_external"] == pytest.approx(S.wer(heard, refs))
  vqa = tasks["vqa"]["samples"]
  assert vqa[1]["reference"] == ["red"] * 7 + ["pink"] * 3  # VQAv2's 10 annotators
  assert tasks["vqa"]["metrics"]["vqa_accuracy"] == pytest.approx(
    np.mean([S.vqa_accuracy(s["prediction"], s["reference"]) for s in vqa])
  )
  qa = tasks["video_qa"]["samples"]
  assert [s["reference"] for s in qa] == ["screen", "light"]
  assert tasks["video_qa"]["metrics"]["accuracy"] == pytest.approx(
    np.mean([S.qa_counts(s["prediction"], s["reference"])["accuracy"][0] for s in qa])
  )
  t2i = tasks["text_to_image"]["metrics"]
  assert t2i["complete"] is not None
  if t2i["complete"]:
    assert -1 <= t2i["clip_text"] <= 1 and -1 <= t2i["clip_image"] <= 1
  assert "| coco_captions | cider |" in stdout
