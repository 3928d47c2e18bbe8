"""Evaluation: WER and caption-attribute scores on known cases, chance levels, the pixel
classifier's accuracy on ground-truth demo images, generic JSONL loading, and
`python -m mio_jax.evaluate` end to end on the demo corpus (the standard benchmarks:
test_evaluate_standard.py)."""

import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import demo_eval
from data_pipelines import shapes_classifier as shapes
from data_pipelines import shapes_world as world
from mio_jax.evaluation import data as data_lib
from mio_jax.evaluation import registry
from mio_jax.evaluation import scores as M
from mio_jax.evaluation import tasks as tasks_lib

# Every demo task's metric keys with the demo's scorers registered (importing demo_eval does that).
KEYS = {task: tasks_lib.keys(task) for task in data_lib.DEMO_TASKS}

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_generate_cli import ROOT, demo_corpus, write_checkpoint  # noqa: E402  (one corpus per session)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return demo_corpus(tmp_path_factory)


def _rows(corpus, kind):
  rows = []
  for split in ("train", "val", "test"):
    with open(corpus / "raw" / f"{split}.jsonl") as f:
      rows += [r for r in map(json.loads, f) if r["type"] == kind]
  return rows


# ---- WER --------------------------------------------------------------------------------------
def test_wer_known_cases():
  assert M.wer(["the red circle"], ["The red circle."]) == 0.0  # case and punctuation
  assert M.wer(["the blue circle"], ["the red circle"]) == pytest.approx(1 / 3)  # substitution
  assert M.wer(["the red circle is round"], ["the red circle"]) == pytest.approx(
    2 / 3
  )  # insertions
  assert M.wer(["red"], ["the red circle"]) == pytest.approx(2 / 3)  # deletions
  assert M.wer([""], ["the red circle"]) == 1.0
  # Corpus level: total edits over total reference words, not a mean of per-utterance rates.
  assert M.wer(["a b", "x"], ["a b c d", "c"]) == pytest.approx(3 / 5)


def test_caption_attributes_known_cases():
  objs = [
    {"colour": "red", "shape": "circle", "size": "small", "cell": [0, 0]},
    {"colour": "blue", "shape": "square", "size": "large", "cell": [1, 1]},
  ]
  counts = demo_eval.caption_counts
  perfect = M.summarise(
    [counts("a small red circle at the top left and a large blue square in the centre", objs)]
  )
  assert perfect == {
    "colour": 1.0,
    "shape": 1.0,
    "size": 1.0,
    "position": 1.0,
    "attribute_accuracy": 1.0,
  }
  # "at the top" is another cell than "at the top left"; "green" is not a colour of either object.
  got = M.summarise([counts("a small green circle at the top", objs)])
  assert got == {
    "colour": 0.0,
    "shape": 0.5,
    "size": 0.5,
    "position": 0.0,
    "attribute_accuracy": 0.25,
  }
  assert demo_eval.places("from the top left to the top and the bottom right") == [
    (0, 0),
    (0, 1),
    (2, 2),
  ]


def test_video_caption_known_cases():
  attrs = {
    "object": {"colour": "cyan", "shape": "circle", "size": "small", "cell": [1, 0]},
    "end": [0, 1],
  }
  counts = demo_eval.video_caption_counts
  right = M.summarise([counts("a small cyan circle moves from the left to the top", attrs)])
  assert right["attribute_accuracy"] == 1.0
  swapped = M.summarise([counts("a small cyan circle moves from the top to the left", attrs)])
  assert swapped["start"] == 0.0 and swapped["end"] == 0.0 and swapped["colour"] == 1.0


def test_demo_scorers_plug_in_through_the_registry():
  """The core knows no shapes world: its keys are the data-independent ones until a plugin
  registers scorers (the evaluate CLI imports data_pipelines.demo_eval by default)."""
  assert registry.DEFAULT_PLUGINS == ("data_pipelines.demo_eval",)
  assert KEYS["text_to_image"] == (
    "colour",
    "shape",
    "size",
    "position",
    "attribute_accuracy",
    "object",
    "complete",
    "clip_text",
    "clip_image",
  )
  assert KEYS["video_captioning"] == (
    "colour",
    "shape",
    "size",
    "start",
    "end",
    "attribute_accuracy",
    "exact_match",
    "cider",
  )
  assert KEYS["asr"] == ("wer", "wer_norm")
  saved = dict(registry.SCORERS)
  try:
    registry.SCORERS.clear()
    assert tasks_lib.keys("image_captioning") == ("exact_match", "cider")
  finally:
    registry.SCORERS.update(saved)
  assert registry.import_plugins() == ["data_pipelines.demo_eval"]
  with pytest.raises(ModuleNotFoundError):
    registry.import_plugins(["no_such_plugin_module"])


def test_chance_uses_other_examples_references():
  refs = ["a b", "a c", "d e"]
  # Pairs (i, j != i), WER of ref j against ref i: "a b"/"a c" 1 edit, "a b"/"d e" and "a c"/"d e"
  # 2 each; both directions: 10 edits over 6 pairs x 2 reference words.
  assert M.chance(M.wer_counts, refs, refs)["wer"] == pytest.approx(10 / 12)
  assert (
    M.chance(M.exact_counts, ["x", "x", "y"], ["x", "x", "y"], groups=[0, 0, 1])["exact_match"]
    == 1.0
  )
  assert M.chance(M.wer_counts, ["a"], ["a"]) is None


# ---- pixel classifier ---------------------------------------------------------------------------
def test_classifier_on_ground_truth_demo_images(corpus):
  from data_pipelines.tokenizers import load_tokenizers, read_image

  rows = _rows(corpus, "image_text")
  assert len(rows) >= 40
  images = [read_image(str(corpus / "raw" / r["image"])) for r in rows]
  gt = M.summarise(
    [shapes.image_counts(shapes.detect(im), r["attributes"]) for im, r in zip(images, rows)]
  )
  # 100 % on all 2,500 images of the full-scale corpus; leave a little room for other seeds.
  assert gt["colour"] == 1.0 and gt["size"] == 1.0 and gt["position"] == 1.0
  assert gt["shape"] >= 0.98 and gt["object"] >= 0.98
  tok = load_tokenizers(str(corpus / "tokenizers")).image
  rec = M.summarise(
    [
      shapes.image_counts(shapes.detect(tok.decode(tok.encode(im))), r["attributes"])
      for im, r in zip(images, rows)
    ]
  )
  # One code per object in its cell: still scenes reconstruct exactly, so a perfect generator
  # scores 1.
  assert rec == gt
  print("classifier on ground truth", gt, "on tokenizer reconstructions", rec)


def test_classifier_rejects_wrong_images():
  obj = {"colour": "red", "shape": "triangle", "size": "large", "cell": [2, 1]}
  assert shapes.image_counts(shapes.detect(world.draw([obj])), [obj])["object"] == (1.0, 1.0)
  blank = np.full((world.SIZE_PX, world.SIZE_PX, 3), world.BACKGROUND, np.uint8)
  assert shapes.detect(blank) == []
  assert all(h == 0 for h, _ in shapes.image_counts([], [obj]).values())
  moved = dict(obj, colour="blue", shape="cross", cell=[0, 0])
  got = shapes.image_counts(shapes.detect(world.draw([moved])), [obj])
  assert got["colour"][0] == got["shape"][0] == got["position"][0] == 0 and got["size"][0] == 1
  assert got["attribute_accuracy"] == (1.0, 4.0)


# ---- data ----------------------------------------------------------------------------------------
def test_loaders_read_any_jsonl_of_the_same_shape(tmp_path):
  rows = [
    {
      "type": "image_text",
      "image": "/abs/coco_1.jpg",
      "text": "a dog",
      "texts": ["a dog", "a pet"],
    },
    {"type": "speech_text", "audio": "libri/1.wav", "text": "hello world", "direction": "asr"},
    {"type": "text", "text": "ignored"},
  ]
  path = tmp_path / "bench.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  ex = data_lib.load_examples(str(path))
  assert [e.references for e in ex["image_captioning"]] == [("a dog", "a pet")]
  assert ex["image_captioning"][0].media == "/abs/coco_1.jpg"
  assert ex["text_to_image"] == [] and ex["tts"] == []  # no attributes to score; ASR only
  assert ex["asr"][0].media == str(tmp_path / "libri" / "1.wav")
  assert len(data_lib.load_examples(str(path), limit=0)["asr"]) == 0


# ---- end to end ----------------------------------------------------------------------------------
def _words(text):
  """WER's words, written out independently: lower case, runs of letters, digits and apostrophes."""
  return re.findall(r"[\w']+", text.lower())


def _levenshtein(a, b):
  row = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    prev, row[0] = row[0], i
    for j, y in enumerate(b, 1):
      prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
  return row[-1]


def _corpus_wer(preds, refs):
  edits = sum(_levenshtein(_words(r), _words(p)) for p, r in zip(preds, refs))
  return edits / sum(len(_words(r)) for r in refs)


def _exact(preds, refs):
  return float(np.mean([_words(p) == _words(r) for p, r in zip(preds, refs)]))


def _detections(description):
  """Parse text_to_image's sample prediction ("large red circle at (0, 1) and ...") back."""
  found = re.findall(r"(\w+) (\w+) (\w+) at \((\d+), (\d+)\)", description)
  return [{"size": s, "colour": c, "shape": h, "cell": (int(r), int(k))} for s, c, h, r, k in found]


def _expected(task, exs, preds):
  """(metrics, chance) recomputed from the predictions the result file reports. With two examples
  chance scores each reference against the other one's. Attribute scores use the scorers checked
  on known cases above."""
  refs = [e.answer if task == "video_qa" else e.text for e in exs]
  if task in ("asr", "tts"):
    return {"wer": _corpus_wer(preds, refs)}, {"wer": _corpus_wer(refs[::-1], refs)}
  if task == "video_qa":
    same_question = exs[0].text == exs[1].text
    return {"exact_match": _exact(preds, refs)}, {
      "exact_match": _exact(refs[::-1], refs) if same_question else None
    }
  if task == "text_to_image":
    counts = [shapes.image_counts(_detections(p), e.attributes) for p, e in zip(preds, exs)]
    return M.summarise(counts), None
  fn = demo_eval.caption_counts if task == "image_captioning" else demo_eval.video_caption_counts
  attrs = [e.attributes for e in exs]
  metrics = M.summarise([fn(p, a) for p, a in zip(preds, attrs)])
  chance = M.summarise([fn(r, a) for r, a in zip(refs[::-1], attrs)])
  metrics["exact_match"], chance["exact_match"] = _exact(preds, refs), _exact(refs[::-1], refs)
  return metrics, chance


def _image(path):
  from data_pipelines.tokenizers import read_image

  return read_image(path)


def test_evaluate_end_to_end(tmp_path, corpus):
  workdir = write_checkpoint(tmp_path / "wd", corpus)
  out = tmp_path / "results.json"
  # The train split has every task (the reduced test split may lack video QA); untrained model.
  # CFG applies to the image outputs only, beam search to the text outputs.
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "mio_jax.evaluate",
      f"--workdir={workdir}",
      "--split=train",
      "--limit=2",
      f"--out={out}",
      "--max-text-tokens=8",
      "--max_speech_frames=10",
      "--cfg_scale=2",
      "--beam_size=2",
    ],
    cwd=ROOT,
    env={**os.environ, "PYTHONPATH": ROOT},
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["step"] == 3 and result["chat"] is False
  assert result["tasks"]["vqa"]["skipped"]
  examples = data_lib.load_examples(str(corpus / "raw" / "train.jsonl"), limit=2)
  for task, keys in KEYS.items():
    r, exs = result["tasks"][task], examples[task]
    assert r["n"] == 2 == len(exs), task
    assert set(r["metrics"]) == set(keys) and set(r["chance"]) == set(keys), task
    # Every example is in the samples (limit 2 <= 3 samples), in manifest order.
    assert [s["key"] for s in r["samples"]] == [e.key for e in exs], task
    metrics, chance = _expected(task, exs, [s["prediction"] for s in r["samples"]])
    for name, want in metrics.items():
      assert r["metrics"][name] == pytest.approx(want), (task, name, r["metrics"][name], want)
    for name, want in (chance or {}).items():
      assert r["chance"][name] == (None if want is None else pytest.approx(want)), (task, name)
  t2i = result["tasks"]["text_to_image"]
  assert t2i["metrics"]["complete"] in (0.0, 0.5, 1.0)
  # The classifier reads every ground-truth image right; chance = another prompt's true image.
  core = tasks_lib.CORE_KEYS["text_to_image"]  # completion and CLIP (no --clip_model: None)
  assert all(t2i["metrics"][k] is None for k in core if k != "complete")
  perfect = {k: 1.0 for k in KEYS["text_to_image"] if k not in core}
  assert t2i["classifier_on_ground_truth"] == perfect
  gt = [shapes.detect(_image(e.media)) for e in examples["text_to_image"]]
  want = M.summarise(
    [shapes.image_counts(d, e.attributes) for d, e in zip(gt[::-1], examples["text_to_image"])]
  )
  assert {k: v for k, v in t2i["chance"].items() if k not in core} == pytest.approx(want)
  tts = result["tasks"]["tts"]
  assert tts["metrics"]["complete"] in (0.0, 0.5, 1.0)
  assert glob.glob(str(workdir / "eval" / "train" / "events.out.tfevents.*"))


# ---- the standard-benchmark runner (test_evaluate_standard.py, test_byod_chain.py) ----------
STANDARD = ("coco_captions", "vqa", "asr", "tts", "video_qa", "text_to_image")


def run_evaluate(workdir, manifest, out, judges, *flags, tasks=STANDARD, limit=2):
  """`python -m mio_jax.evaluate` with the tiny Whisper and CLIP judges -> (results, stdout)."""
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "mio_jax.evaluate",
      f"--workdir={workdir}",
      f"--manifest={manifest}",
      f"--tasks={','.join(tasks)}",
      f"--limit={limit}",
      f"--out={out}",
      "--max-text-tokens=8",
      "--max_speech_frames=10",
      "--greedy",
      f"--clip_model={judges / 'clip'}",
      f"--tts_asr_model={judges / 'whisper'}",
      *flags,
    ],
    cwd=ROOT,
    env={**os.environ, "PYTHONPATH": ROOT},
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(out.read_text()), proc.stdout
