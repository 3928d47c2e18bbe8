"""`python -m mio_jax.evaluate` on the standard benchmarks (COCO Captions, VQAv2, LibriSpeech ASR
and TTS, video QA, text-to-image) over a manifest data_pipelines.convert wrote from fixtures in the
published layouts, scored with the standard metrics and the tiny Whisper and CLIP judges."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_evaluate import STANDARD, _rows, run_evaluate  # noqa: E402  (the shared runner)
from test_generate_cli import demo_corpus, write_checkpoint  # noqa: E402  (one corpus per session)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return demo_corpus(tmp_path_factory)


def _standard_manifest(tmp_path, corpus):
  """COCO, LibriSpeech and LLaVA fixtures in their published layouts → data_pipelines.convert →
  one manifest, plus a VQAv2-style row (10 answers) and the demo corpus's video QA rows."""
  import convert_fixtures as fx

  from data_pipelines.convert import convert

  out = tmp_path / "manifests"
  parts = []
  for fmt, (write, src, split) in fx.FIXTURES.items():
    if fmt not in ("coco_captions", "librispeech", "llava"):
      continue
    root = tmp_path / "src" / fmt
    root.mkdir(parents=True)
    write(str(root))
    convert(fmt, str(root / src) if src else str(root), str(out / f"{fmt}.jsonl"), split)
    parts.append((out / f"{fmt}.jsonl").read_text())
  image = str(tmp_path / "src" / "coco_captions" / "val2017" / "000000000001.jpg")
  vqa_row = {
    "type": "sft",
    "task": "vqa",
    "answers": ["red"] * 4 + ["pink"] * 6,
    "messages": [
      {"role": "user", "content": [{"image": image}, {"text": "What colour is it?"}]},
      {"role": "assistant", "content": "red"},
    ],
  }
  videos = [r for r in _rows(corpus, "sft") if r.get("task") == "video_qa"][:2]
  for r in videos:
    for m in r["messages"]:
      for p in m["content"] if isinstance(m["content"], list) else []:
        if "video" in p:
          p["video"] = str(corpus / "raw" / p["video"])
  extra = "\n".join(json.dumps(r) for r in [vqa_row, *videos]) + "\n"
  (out / "all.jsonl").write_text("".join(parts) + extra)
  return out / "all.jsonl"


def test_evaluate_standard_tasks_on_converted_manifests(tmp_path, corpus):
  import tiny_judges

  from mio_jax.evaluation import standard_metrics as S

  workdir = write_checkpoint(tmp_path / "wd", corpus)
  manifest = _standard_manifest(tmp_path, corpus)
  judges = tmp_path / "judges"
  tiny_judges.whisper(str(judges / "whisper"), emit="h")
  tiny_judges.clip(str(judges / "clip"))
  result, stdout = run_evaluate(workdir, manifest, tmp_path / "all8.json", judges)
  tasks = result["tasks"]
  assert set(tasks) == set(STANDARD)
  n = {t: tasks[t]["n"] for t in STANDARD}
  # COCO: 2 images (the converter's 3 caption rows); VQA: the LLaVA row and the VQAv2 row.
  assert n == {
    "coco_captions": 2,
    "vqa": 2,
    "asr": 2,
    "tts": 2,
    "video_qa": 2,
    "text_to_image": 2,
  }, n
  coco = tasks["coco_captions"]
  assert coco["samples"][0]["reference"] == ["a red circle", "a round red thing"]
  want = S.caption_scores(
    [s["prediction"] for s in coco["samples"]], [s["reference"] for s in coco["samples"]]
  )
  assert coco["metrics"]["bleu4"] == pytest.approx(want["bleu4"])
  assert coco["metrics"]["cider"] == pytest.approx(want["cider"])
  vqa = tasks["vqa"]
  assert vqa["metrics"]["vqa_accuracy"] == pytest.approx(
    np.mean([S.vqa_accuracy(s["prediction"], s["reference"]) for s in vqa["samples"]])
  )
  asr = tasks["asr"]
  assert asr["metrics"]["wer_norm"] == pytest.approx(
    S.wer([s["prediction"] for s in asr["samples"]], [s["reference"] for s in asr["samples"]])
  )
  # The external recogniser (tiny Whisper: always "hhhh") heard each generated utterance.
  tts = tasks["tts"]
  heard = [s["external_asr"] for s in tts["samples"]]
  assert all(set(h) <= {"h"} for h in heard)
  assert tts["metrics"]["wer_external"] == pytest.approx(
    S.wer(heard, [s["reference"] for s in tts["samples"]])
  )
  qa = tasks["video_qa"]
  assert qa["metrics"]["accuracy"] == pytest.approx(
    np.mean([S.qa_counts(s["prediction"], s["reference"])["accuracy"][0] for s in qa["samples"]])
  )
  t2i = tasks["text_to_image"]["metrics"]
  if t2i["complete"]:
    assert -1 <= t2i["clip_text"] <= 1 and -1 <= t2i["clip_image"] <= 1
  assert "| coco_captions | cider |" in stdout and str(tmp_path / "all8.json") in stdout
  # Data parallel: all 8 devices give the predictions of one.
  one, _ = run_evaluate(workdir, manifest, tmp_path / "all1.json", judges, "--devices=1")
  for task in STANDARD:
    assert one["tasks"][task]["samples"] == tasks[task]["samples"], task
    assert one["tasks"][task]["metrics"] == tasks[task]["metrics"], task
