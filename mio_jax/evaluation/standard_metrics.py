"""The published benchmarks' metrics, computed the way their papers compute them.

  wer              jiwer word error rate after text_normalize.english (Whisper-style), corpus
                   level: all edits / all reference words (LibriSpeech, TTS WER)
  bleu4, cider     pycocoevalcap's Bleu(4) and Cider (CIDEr-D) on PTB-tokenised captions (COCO);
                   the PTB tokenizer is Stanford CoreNLP's, run with `java` (shipped in the
                   package: no download). Without `java` a Python tokenizer of the same rules
                   (lower case, the PTB punctuation removed) stands in; results say which
  vqa_accuracy     VQAv2: answers normalised (text_normalize.vqa_answer); for each of the 10
                   annotators, min(#other annotators who gave the prediction / 3, 1), averaged
                   over the 10 leave-one-out subsets of 9, as the official script does
  exact_match      video QA: lower-cased, stripped prediction == answer
  accuracy         video QA (MSVD/MSRVTT-QA open-ended): VQA-normalised prediction == answer

Scores are (num, den) counts where that makes sense, so they share metrics.summarise/chance.
pycocoevalcap and jiwer are the `eval` extra (requirements-eval.txt).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence

from mio_jax.evaluation import text_normalize

Counts = dict


# ---- WER --------------------------------------------------------------------------------------
def wer_counts(prediction: str, reference: str, normalize=text_normalize.english) -> Counts:
  """{"wer": (edits, reference words)} with jiwer's alignment, after normalising both."""
  import jiwer

  ref, hyp = normalize(reference), normalize(prediction)
  if not ref:
    raise ValueError(f"WER: reference {reference!r} is empty after normalisation")
  if not hyp:  # jiwer rejects an empty hypothesis: every reference word is deleted
    return {"wer": (len(ref.split()), len(ref.split()))}
  o = jiwer.process_words(ref, hyp)
  return {"wer": (o.substitutions + o.deletions + o.insertions, len(ref.split()))}


def wer(predictions: Sequence[str], references: Sequence[str]) -> float:
  edits = words = 0
  for p, r in zip(predictions, references, strict=True):
    e, n = wer_counts(p, r)["wer"]
    edits, words = edits + e, words + n
  return edits / words


# ---- captions ---------------------------------------------------------------------------------
# What PTBTokenizer drops after tokenising (pycocoevalcap's list; it compares before lower-casing,
# so brackets survive as -lrb- / -rrb-).
_PTB_PUNCT = {'"', "''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_PTB_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-"}


def python_ptb_tokenize(text: str) -> str:
  """PTB-style tokenisation without Java: lower case; clitics split off (`dog's` → `dog 's`,
  `don't` → `do n't`); punctuation split off and dropped as PTBTokenizer drops it; brackets
  written as PTB writes them. Abbreviations (`e.g.`) may split differently from CoreNLP."""
  text = text.lower().replace("\n", " ")
  text = re.sub(r"(\w)(n't)\b", r"\1 \2", text)
  text = re.sub(r"(\w)('s|'re|'ve|'ll|'d|'m)\b", r"\1 \2", text)
  tokens = re.findall(r"n't|'\w+|\w+(?:[.-]\w+)*|\.\.\.|--|``|''|[^\w\s]", text)
  return " ".join(_PTB_BRACKETS.get(t, t) for t in tokens if t not in _PTB_PUNCT)


def ptb_tokenize(captions: dict[int, list[str]]) -> tuple[dict[int, list[str]], str]:
  """({id: [tokenised captions]}, which tokenizer ran)."""
  if shutil.which("java"):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    data = {k: [{"caption": c} for c in v] for k, v in captions.items()}
    return PTBTokenizer().tokenize(data), "ptb_java"
  return {k: [python_ptb_tokenize(c) for c in v] for k, v in captions.items()}, "ptb_python"


def caption_scores(
  predictions: Sequence[str], references: Sequence[Sequence[str]], tokenize: bool = True
) -> dict:
  """{"bleu4", "cider", "tokenizer"}: corpus BLEU-4 and CIDEr-D (pycocoevalcap), one prediction
  and any number of references per item. An empty prediction scores as the word "empty"
  (CIDEr-D divides by the candidate's n-gram counts)."""
  from pycocoevalcap.bleu.bleu import Bleu
  from pycocoevalcap.cider.cider import Cider

  if len(predictions) != len(references) or not predictions:
    raise ValueError(f"{len(predictions)} predictions for {len(references)} reference sets")
  if any(not refs for refs in references):
    raise ValueError("every prediction needs at least one reference caption")
  gts = {i: list(r) for i, r in enumerate(references)}
  res = {i: [p] for i, p in enumerate(predictions)}
  how = "none"
  if tokenize:
    (gts, how), (res, _) = ptb_tokenize(gts), ptb_tokenize(res)
  res = {i: [c if c.strip() else "empty" for c in v] for i, v in res.items()}
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  cider, _ = Cider().compute_score(gts, res)
  return {"bleu4": float(bleu[3]), "cider": float(cider), "tokenizer": how}


# ---- VQA and video QA -------------------------------------------------------------------------
def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
  """VQAv2 accuracy of one prediction against its annotators' answers (10 in VQAv2)."""
  if not answers:
    raise ValueError("VQA accuracy needs at least one annotator answer")
  pred = text_normalize.vqa_answer(prediction)
  gts = [text_normalize.vqa_answer(a) for a in answers]
  if len(gts) == 1:
    return float(pred == gts[0])
  scores = []
  for i in range(len(gts)):
    others = gts[:i] + gts[i + 1 :]
    scores.append(min(sum(a == pred for a in others) / 3.0, 1.0))
  return sum(scores) / len(scores)


def vqa_counts(prediction: str, answers: Sequence[str]) -> Counts:
  return {"vqa_accuracy": (vqa_accuracy(prediction, answers), 1.0)}


def qa_counts(prediction: str, answer: str) -> Counts:
  """Video QA: exact match (stripped, lower case) and accuracy (VQA-normalised equality)."""
  exact = prediction.strip().lower() == answer.strip().lower()
  same = text_normalize.vqa_answer(prediction) == text_normalize.vqa_answer(answer)
  return {"exact_match": (float(exact), 1.0), "accuracy": (float(same), 1.0)}
