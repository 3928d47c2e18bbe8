"""The standard metrics against hand-computed values (or a second implementation written here),
the external judges (Whisper, CLIP) on tiny random checkpoints, and data-parallel generation:
8 devices give the 1-device outputs."""

import math
import os
import shutil
import sys
import types
from collections import Counter

import numpy as np
import pytest

from mio_jax.evaluation import standard_metrics as S
from mio_jax.evaluation import text_normalize as T

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_judges  # noqa: E402


# ---- normalisers ------------------------------------------------------------------------------
def test_english_normaliser_rules():
  assert T.english("Hello, World! [noise] (laughs) <unk> Um, I  have") == "hello world i have"
  assert (
    T.english("Twenty-one cats, 1,000 dogs and 2.5% of seven")
    == "21 cats 1000 dogs and 2.5 percent of 7"
  )
  assert T.english("forty two, ninety") == "42 90"
  assert T.english("It\u2019s DON'T 'quoted'") == "it's don't quoted"
  assert T.english("e-mail end.") == "e mail end"


def test_vqa_answer_normalisation():
  assert T.vqa_answer("Two.") == "2"
  assert T.vqa_answer("The dog") == "dog"
  assert T.vqa_answer("dont") == "don't"
  assert T.vqa_answer("Yes!") == "yes"
  assert T.vqa_answer("1,000") == "1000"
  assert T.vqa_answer("red, blue") == "red blue"
  assert T.vqa_answer("3.5") == "3.5"
  assert T.vqa_answer("none") == "0"


# ---- WER --------------------------------------------------------------------------------------
def test_wer_by_hand():
  # One deletion ("the") out of 6 reference words; the bracketed noise tag is not a word.
  assert S.wer(["the cat sat on mat [noise]"], ["The cat sat on the mat."]) == pytest.approx(1 / 6)
  assert S.wer(["21 cats"], ["twenty-one cats"]) == 0.0
  # Substitution + insertion, and an empty hypothesis (all deleted): corpus (1+1+3)/(3+3).
  assert S.wer(["a x c d", ""], ["a b c", "e f g"]) == pytest.approx(5 / 6)
  assert S.wer_counts("uh the end", "the end") == {"wer": (0, 2)}
  with pytest.raises(ValueError, match="empty"):
    S.wer_counts("x", "[noise]")


# ---- captions ---------------------------------------------------------------------------------
GTS = [
  ["A dog runs on the grass.", "A brown dog running."],
  ["A cat sits on a mat.", "The cat is sitting."],
]
PREDS = ["a dog runs on grass", "a cat on a mat"]
GTS_TOK = [
  ["a dog runs on the grass", "a brown dog running"],
  ["a cat sits on a mat", "the cat is sitting"],
]


def _ngrams(words, n):
  return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _cider_d(preds, refs, sigma=6.0):
  """CIDEr-D (Vedantam et al. 2015, the COCO server's variant), written from the paper: tf-idf
  n-gram vectors (idf over the images' reference sets), candidate counts clipped to the
  reference's, a Gaussian length penalty, mean over n = 1..4 and references, times 10."""
  n_images = len(refs)
  df = Counter()
  for rs in refs:
    df.update({g for r in rs for n in range(1, 5) for g in _ngrams(r.split(), n)})

  def vec(words):
    v = [
      {
        g: c * (math.log(n_images) - math.log(max(1.0, df[g])))
        for g, c in _ngrams(words, n).items()
      }
      for n in range(1, 5)
    ]
    # pycocoevalcap's length: the bigram count (= words - 1), the same for both sides.
    return v, [math.sqrt(sum(x * x for x in d.values())) for d in v], len(words) - 1

  total = 0.0
  for p, rs in zip(preds, refs):
    vp, normp, lp = vec(p.split())
    score = 0.0
    for r in rs:
      vr, normr, lr = vec(r.split())
      sims = []
      for n in range(4):
        dot = sum(min(x, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, x in vp[n].items())
        sim = dot / (normp[n] * normr[n]) if normp[n] and normr[n] else 0.0
        sims.append(sim * math.exp(-((lp - lr) ** 2) / (2 * sigma**2)))
      score += sum(sims) / 4
    total += 10 * score / len(rs)
  return total / len(preds)


def test_bleu4_and_cider_d():
  got = S.caption_scores(PREDS, GTS)
  # CoreNLP through java (launch/setup.sh --test installs it); the Python stand-in otherwise.
  assert got["tokenizer"] == ("ptb_java" if shutil.which("java") else "ptb_python")
  # BLEU-4 by hand: matched/total n-grams 10/10, 6/8, 3/6, 1/4; the candidates (10 words) are
  # longer than the closest references (4 + 4), so no brevity penalty.
  assert got["bleu4"] == pytest.approx((1 * 6 / 8 * 3 / 6 * 1 / 4) ** 0.25, rel=1e-6)
  assert got["cider"] == pytest.approx(_cider_d(PREDS, GTS_TOK), rel=1e-9)
  assert got["cider"] == pytest.approx(3.1891427552, rel=1e-8)  # the value both give
  untok = S.caption_scores(PREDS, GTS_TOK, tokenize=False)
  assert untok["bleu4"] == pytest.approx(got["bleu4"]) and untok["cider"] == pytest.approx(
    got["cider"]
  )


def test_python_ptb_tokenizer_matches_java_on_the_fixture(monkeypatch):
  # CoreNLP's output for this sentence (checked with the Java tokenizer).
  assert (
    S.python_ptb_tokenize("A dog's toy, \"red\" -- isn't it? (big) 3.5 well-known")
    == "a dog 's toy red is n't it -lrb- big -rrb- 3.5 well-known"
  )
  monkeypatch.setattr(S.shutil, "which", lambda name: None)  # no java
  got = S.caption_scores(PREDS, GTS)
  assert got["tokenizer"] == "ptb_python"
  assert got["cider"] == pytest.approx(_cider_d(PREDS, GTS_TOK), rel=1e-9)


# ---- VQA and video QA -------------------------------------------------------------------------
def test_vqa_accuracy_ten_annotators_by_hand():
  answers = ["yes"] * 2 + ["no"] * 8
  # "yes": each "yes" annotator's 9 others hold 1 yes (1/3), each "no" annotator's hold 2 (2/3).
  assert S.vqa_accuracy("yes", answers) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)  # 0.6
  assert S.vqa_accuracy("No.", answers) == 1.0
  # "Two." normalises to "2": three "2" annotators see 2 others (2/3), seven see 3 (1).
  assert S.vqa_accuracy("Two.", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9)
  assert S.vqa_accuracy("a cat", ["cat"] * 10) == 1.0
  assert S.vqa_accuracy("dog", ["cat"] * 10) == 0.0
  assert S.vqa_accuracy("the dog", ["dog"]) == 1.0  # one answer: normalised equality
  with pytest.raises(ValueError):
    S.vqa_accuracy("x", [])


def test_video_qa_exact_match_and_accuracy():
  assert S.qa_counts(" Dog ", "dog") == {"exact_match": (1.0, 1.0), "accuracy": (1.0, 1.0)}
  assert S.qa_counts("a dog.", "dog") == {"exact_match": (0.0, 1.0), "accuracy": (1.0, 1.0)}
  assert S.qa_counts("three", "3") == {"exact_match": (0.0, 1.0), "accuracy": (1.0, 1.0)}
  assert S.qa_counts("cat", "dog")["accuracy"] == (0.0, 1.0)


# ---- external judges --------------------------------------------------------------------------
def test_whisper_transcriber_plumbing(tmp_path):
  from mio_jax.evaluation.external import Transcriber

  folder = tiny_judges.whisper(str(tmp_path / "whisper"), emit="h")
  asr = Transcriber(folder, max_new_tokens=4, batch_size=2)
  rng = np.random.RandomState(0)
  waves = [rng.randn(8000).astype(np.float32) * 0.1 for _ in range(3)]  # 8 kHz: resampled
  first = asr(waves, 8000)
  assert first == ["hhhh"] * 3  # the processor's decode of the forced token, per wave
  assert asr(waves, 8000) == first  # deterministic
  with pytest.raises(FileNotFoundError, match="--tts_asr_model"):
    Transcriber(str(tmp_path / "missing"))


def test_clip_scorer_plumbing(tmp_path):
  import torch

  from mio_jax.evaluation.external import ClipScorer

  clip = ClipScorer(tiny_judges.clip(str(tmp_path / "clip")))
  rng = np.random.RandomState(0)
  images = [(rng.rand(40, 48, 3) * 255).astype(np.uint8) for _ in range(3)]
  texts = ["a red circle", "a dog", "blue"]
  emb = clip.image_embeds(images)
  assert emb.shape == (3, 8) and np.allclose(np.linalg.norm(emb, axis=-1), 1.0)
  assert clip.text_embeds(texts).shape == (3, 8)
  sims = clip.image_text(images, texts)
  assert sims.shape == (3,) and np.all(np.abs(sims) <= 1 + 1e-6)
  assert np.array_equal(sims, clip.image_text(images, texts))  # deterministic
  assert clip.image_image(images, images) == pytest.approx([1.0, 1.0, 1.0])
  # Against the model called directly: cosine of the projected features.
  enc = clip.processor(text=texts, images=images, return_tensors="pt", padding=True)
  with torch.no_grad():
    out = clip.model(**enc)
  want = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).numpy()
  assert sims == pytest.approx(want, abs=1e-5)


# ---- data-parallel generation -----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
  import flax.linen as nn
  import jax

  from mio_jax.model.sizes import get_model
  from mio_jax.model.transformer import Transformer

  cfg, vocab = get_model("tiny", n_layers=2, init_std=0.3)
  params = Transformer(cfg).init(jax.random.PRNGKey(0), np.ones((1, 4), np.int32))["params"]
  builder = types.SimpleNamespace(text=types.SimpleNamespace(bos_id=1, eos_id=2), vocab=vocab)
  return types.SimpleNamespace(
    params=jax.tree.map(np.asarray, nn.meta.unbox(params)),
    model_cfg=cfg,
    vocab=vocab,
    builder=builder,
    placement=None,
    tokenizers=types.SimpleNamespace(image=None),
  )


@pytest.mark.parametrize("modality,batch_size", [("text", 8), ("text", 3), ("image", 4)])
def test_generation_on_8_devices_equals_1(tiny_model, modality, batch_size):
  import jax

  from mio_jax.evaluation import generation

  assert len(jax.devices()) == 8  # tests/conftest.py
  rng = np.random.RandomState(1)
  prompts = [rng.randint(3, 500, size=rng.randint(3, 20)) for _ in range(11)]
  budget = 12 if modality == "text" else 34
  runs = {}
  for n in (1, 8):
    opts = generation.Options(batch_size=batch_size, greedy=True, devices=n)
    segs = generation.generate_batched(tiny_model, prompts, modality, budget, opts)
    runs[n] = [[(s.modality, s.ids.tolist(), s.complete) for s in ss] for ss in segs]
  assert len(runs[8]) == len(prompts) and any(ids for ss in runs[1] for _, ids, _ in ss)
  assert runs[8] == runs[1]
  # The replicated params live on all 8 devices: the batch really was split over them.
  _, placed = generation.data_parallel(tiny_model.params, 8)
  assert len(jax.tree.leaves(placed)[0].sharding.device_set) == 8
