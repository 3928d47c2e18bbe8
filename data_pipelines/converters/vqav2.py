"""VQAv2: `SRC/v2_OpenEnded_mscoco_{split}2014_questions.json`,
`SRC/v2_mscoco_{split}2014_annotations.json` and the images
`SRC/{split}2014/COCO_{split}2014_{image_id:012d}.jpg`.

One "sft" row (task "vqa") per question: the image and the question, answered with the
annotators' most common answer (`multiple_choice_answer`); `answers` keeps all ten, which
`mio_jax.evaluate --tasks=vqa` scores with the official 10-annotator rule. `--media_root`
overrides the image folder. (test-dev has no annotations: it is scored on the EvalAI server.)
"""

from __future__ import annotations

import json
import os

from data_pipelines.converters.common import (
  ConvertOptions,
  SourceError,
  bad,
  rel,
  require,
  text_or_none,
)


def _load(path: str, key: str) -> list:
  with open(path) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise SourceError(f"{path}: not JSON: {e}") from None
  if not isinstance(data.get(key), list):
    raise SourceError(f"{path}: no {key!r} list")
  return data[key]


def convert(opts: ConvertOptions):
  split = opts.split or "val"
  q_path = require(
    os.path.join(opts.src, f"v2_OpenEnded_mscoco_{split}2014_questions.json"), "VQAv2 questions"
  )
  a_path = require(
    os.path.join(opts.src, f"v2_mscoco_{split}2014_annotations.json"), "VQAv2 annotations"
  )
  image_dir = opts.media_root or os.path.join(opts.src, f"{split}2014")
  annotations = {a.get("question_id"): a for a in _load(a_path, "annotations")}
  for i, q in enumerate(_load(q_path, "questions")):
    where = f"{q_path}: question {i} (id {q.get('question_id')})"
    ann, question = annotations.get(q.get("question_id")), text_or_none(q.get("question"))
    answers = [text_or_none(a.get("answer")) for a in (ann or {}).get("answers", [])]
    image = os.path.join(image_dir, f"COCO_{split}2014_{q.get('image_id', 0):012d}.jpg")
    if question is None:
      yield bad("empty_text", f"{where}: empty question")
    elif ann is None:
      yield bad("no_annotation", f"{where}: no annotation in {a_path}")
    elif not answers or None in answers or not text_or_none(ann.get("multiple_choice_answer")):
      yield bad("empty_text", f"{where}: empty answer in {a_path}")
    elif not os.path.isfile(image):
      yield bad("missing_image", f"{where}: image file not found: {image}")
    else:
      yield {
        "type": "sft",
        "task": "vqa",
        "id": f"vqav2_{q['question_id']}",
        "answers": answers,
        "messages": [
          {"role": "user", "content": [{"image": rel(image, opts.out_dir)}, {"text": question}]},
          {"role": "assistant", "content": ann["multiple_choice_answer"].strip()},
        ],
      }
