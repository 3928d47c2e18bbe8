"""One function per evaluation task: examples → prompts (training layouts) → batched generation →
scores.

Every task returns {"n", "metrics", "chance", "samples", "notes"} with the same metric keys whatever
the data (None where a metric does not apply or there are no examples), so result files and
TensorBoard tags are stable. Chance levels: metrics.chance (references of other examples used as
predictions). Scores against an example's `attributes` come from the scorer registered for the
task (registry.py; the demo corpus's: data_pipelines/demo_eval.py).

Standard metrics (standard_metrics.py) sit beside the demo's: `wer_norm` (jiwer, English
normaliser), video QA `accuracy`, and the benchmark tasks `coco_captions` (BLEU-4, CIDEr-D) and
`vqa` (VQAv2 accuracy). External judges (external.py) load from local folders when given:
`tts_asr_model` (Whisper) → tts `wer_external`; `clip_model` → text_to_image `clip_text` and
`clip_image`.

Generation is batched and data parallel (generation.py).
"""

from __future__ import annotations

import functools

import numpy as np

from mio_jax.evaluation import external, registry
from mio_jax.evaluation import scores as M
from mio_jax.evaluation import standard_metrics as S
from mio_jax.evaluation.data import Example
from mio_jax.evaluation.generation import Options, generate_batched
from mio_jax.generate import io, prompting
from mio_jax.io.media import read_image, read_video, read_wav

# Metrics every task reports whatever the data; a registered scorer's keys come first.
CORE_KEYS = {
  "image_captioning": ("exact_match", "cider"),
  "text_to_image": ("complete", "clip_text", "clip_image"),
  "asr": ("wer", "wer_norm"),
  "tts": ("wer", "wer_norm", "wer_external", "complete"),
  "video_captioning": ("exact_match", "cider"),
  "video_qa": ("exact_match", "accuracy"),
  "coco_captions": ("bleu4", "cider"),
  "vqa": ("vqa_accuracy",),
}
N_SAMPLES = 3


@functools.lru_cache(maxsize=2)
def transcriber(model_dir: str) -> external.Transcriber:
  return external.Transcriber(model_dir)


@functools.lru_cache(maxsize=2)
def clip_scorer(model_dir: str) -> external.ClipScorer:
  return external.ClipScorer(model_dir)


def _texts(model, prompts, opts) -> list[str]:
  segs = generate_batched(model, prompts, "text", opts.max_text_tokens, opts)
  return [io.decode_text(model.tokenizers, s).strip() for s in segs]


def keys(task: str) -> tuple[str, ...]:
  """The metric keys of `task`'s results: its registered scorer's, then CORE_KEYS."""
  scorer = registry.scorer(task)
  return (scorer.keys if scorer else ()) + CORE_KEYS[task]


def _result(task, n, scores, chance, samples, notes=()):
  names = keys(task)
  return {
    "n": n,
    "metrics": {k: (scores or {}).get(k) for k in names},
    "chance": {k: (chance or {}).get(k) for k in names},
    "samples": samples[:N_SAMPLES],
    "notes": list(notes),
  }


def _samples(exs, preds, ref=lambda e: e.text):
  return [{"key": e.key, "reference": ref(e), "prediction": p} for e, p in zip(exs, preds)]


def _speech_codes(model, path):
  wave, rate = read_wav(path)
  return model.tokenizers.speech.encode(wave, rate)


def _video_codes(model, path):
  return model.tokenizers.video.encode(read_video(path))


def _captions(task, exs, preds):
  """Shared scoring of image and video captions."""
  scores, chance, notes = {}, {}, []
  scorer = registry.scorer(task)
  if exs and scorer and all(e.attributes for e in exs):
    fn = lambda p, a: scorer.counts(scorer.read(p), a)
    scores.update(M.summarise([fn(p, e.attributes) for p, e in zip(preds, exs)]))
    chance.update(M.chance(fn, [e.text for e in exs], [e.attributes for e in exs]) or {})
  elif exs and scorer:
    notes.append("no attributes in the manifest: attribute scores skipped")
  elif any(e.attributes for e in exs):
    notes.append(f"no {task} scorer registered (evaluate --plugins): attribute scores skipped")
  scores.update(M.summarise([M.exact_counts(p, e.text) for p, e in zip(preds, exs)]))
  chance.update(M.chance(M.exact_counts, [e.text for e in exs], [e.text for e in exs]) or {})
  scores["cider"] = M.cider(preds, [e.references or (e.text,) for e in exs])
  return _result(task, len(exs), scores, chance, _samples(exs, preds), notes)


# ---- tasks ------------------------------------------------------------------------------------
def image_captioning(model, exs: list[Example], opts: Options) -> dict:
  prompts = [
    prompting.build_prompt(
      model.builder,
      "caption",
      prompting.Media(image=model.tokenizers.image.encode(read_image(e.media))),
      chat=opts.chat,
    )
    for e in exs
  ]
  return _captions("image_captioning", exs, _texts(model, prompts, opts) if exs else [])


def video_captioning(model, exs: list[Example], opts: Options) -> dict:
  prompts = [
    prompting.build_prompt(
      model.builder,
      "video_caption",
      prompting.Media(video=_video_codes(model, e.media)),
      chat=opts.chat,
    )
    for e in exs
  ]
  return _captions("video_captioning", exs, _texts(model, prompts, opts) if exs else [])


def video_qa(model, exs: list[Example], opts: Options) -> dict:
  prompts = [
    prompting.chat_prompt(
      model.builder, prompting.Media(video=_video_codes(model, e.media)), e.text
    )
    for e in exs
  ]
  preds = _texts(model, prompts, opts) if exs else []
  scores = M.summarise([S.qa_counts(p, e.answer) for p, e in zip(preds, exs)])
  chance = M.chance(
    S.qa_counts, [e.answer for e in exs], [e.answer for e in exs], groups=[e.text for e in exs]
  )  # another answer to the same question
  notes = ["SFT task (ChatML prompt): expect chance level before stage 4"]
  return _result(
    "video_qa", len(exs), scores, chance, _samples(exs, preds, lambda e: e.answer), notes
  )


def asr(model, exs: list[Example], opts: Options) -> dict:
  prompts = [
    prompting.build_prompt(
      model.builder, "asr", prompting.Media(speech=_speech_codes(model, e.media)), chat=opts.chat
    )
    for e in exs
  ]
  preds = _texts(model, prompts, opts) if exs else []
  scores, chance = _wers(preds, exs)
  return _result("asr", len(exs), scores, chance, _samples(exs, preds))


def _wers(preds, exs, external_preds=None):
  """wer (the demo's normaliser), wer_norm (jiwer + English normaliser), wer_external."""
  for e in exs:
    if not S.text_normalize.english(e.text):
      raise ValueError(f"{e.key}: transcript {e.text!r} has no words after normalisation")
  both = lambda p, r: {**M.wer_counts(p, r), "wer_norm": S.wer_counts(p, r)["wer"]}
  scores = M.summarise([both(p, e.text) for p, e in zip(preds, exs)])
  if external_preds is not None:
    scores["wer_external"] = M.summarise(
      [S.wer_counts(p, e.text) for p, e in zip(external_preds, exs)]
    ).get("wer")
  refs = [e.text for e in exs]
  chance = M.chance(both, refs, refs) or {}
  chance["wer_external"] = chance.get("wer_norm")
  return scores, chance


def tts(model, exs: list[Example], opts: Options) -> dict:
  """Round trip: text → speech codes → this model's ASR prompt → text, scored by WER."""
  frames, layers = opts.max_speech_frames, model.vocab.speech_layers
  prompts = [
    prompting.build_prompt(model.builder, "tts", prompting.Media(), e.text, chat=opts.chat)
    for e in exs
  ]
  segs = (
    generate_batched(model, prompts, "speech", layers * frames + 2, opts, frames) if exs else []
  )
  speech = [
    next((s.codes for s in ss if s.modality == "speech" and s.complete and s.codes.size), None)
    for ss in segs
  ]
  spoken = [i for i, c in enumerate(speech) if c is not None]
  asr_prompts = [
    prompting.build_prompt(model.builder, "asr", prompting.Media(speech=speech[i]), chat=opts.chat)
    for i in spoken
  ]
  heard = dict(zip(spoken, _texts(model, asr_prompts, opts) if spoken else []))
  preds = [heard.get(i, "") for i in range(len(exs))]  # no speech: every word is deleted
  external_preds = None
  if opts.tts_asr_model and exs:
    speech_tok = model.tokenizers.speech
    waves = [speech_tok.decode(speech[i]) for i in spoken]
    said = dict(
      zip(spoken, transcriber(opts.tts_asr_model)(waves, speech_tok.sample_rate) if spoken else [])
    )
    external_preds = [said.get(i, "") for i in range(len(exs))]
  scores, chance = _wers(preds, exs, external_preds)
  scores["complete"] = len(spoken) / len(exs) if exs else None
  seconds = [c.shape[1] / model.tokenizers.speech.frame_rate for c in speech if c is not None]
  notes = [f"mean generated speech {np.mean(seconds):.2f} s"] if seconds else []
  if not opts.tts_asr_model:
    notes.append("wer_external needs --tts_asr_model=DIR (a local Whisper checkpoint)")
  samples = _samples(exs, preds)
  for sample, heard_ext in zip(samples, external_preds or []):
    sample["external_asr"] = heard_ext
  return _result("tts", len(exs), scores, chance, samples, notes)


def text_to_image(model, exs: list[Example], opts: Options) -> dict:
  """Generated image → the registered scorer's reader (the demo's: a pixel classifier) → the
  prompted attributes. The reader's own accuracy on the ground-truth images (and their tokenizer
  reconstructions) is reported too. Without a scorer only completion is scored."""
  prompts = [
    prompting.build_prompt(model.builder, "draw", prompting.Media(), e.text, chat=opts.chat)
    for e in exs
  ]
  image = model.tokenizers.image
  segs = generate_batched(model, prompts, "image", image.tokens_per_image + 2, opts) if exs else []
  codes = [next((s.codes for s in ss if s.modality == "image" and s.complete), None) for ss in segs]
  complete = {"complete": float(np.mean([c is not None for c in codes])) if exs else None}
  if opts.clip_model and exs:
    complete.update(_clip_scores(clip_scorer(opts.clip_model), image, codes, exs))
  scorer = registry.scorer("text_to_image")
  if scorer is None or not all(e.attributes for e in exs):
    samples = [{"key": e.key, "reference": e.text, "prediction": ""} for e in exs]
    return _result(
      "text_to_image",
      len(exs),
      complete,
      None,
      samples,
      ["no shapes-world scorer or attributes: completion (and CLIP with --clip_model) only"],
    )
  found = [scorer.read(image.decode(c)) if c is not None else None for c in codes]
  attrs = [e.attributes for e in exs]
  scores = {**M.summarise([scorer.counts(d, a) for d, a in zip(found, attrs)]), **complete}
  truth = [read_image(e.media) for e in exs]
  gt = [scorer.read(im) for im in truth]
  rec = [scorer.read(image.decode(image.encode(im))) for im in truth]
  chance = M.chance(scorer.counts, gt, attrs)  # a true image of another prompt
  out = _result(
    "text_to_image",
    len(exs),
    scores,
    chance,
    [
      {"key": e.key, "reference": e.text, "prediction": scorer.describe(d)}
      for e, d in zip(exs, found)
    ],
  )
  for name, reads in (("classifier_on_ground_truth", gt), ("classifier_on_reconstructions", rec)):
    summary = M.summarise([scorer.counts(d, a) for d, a in zip(reads, attrs)])
    out[name] = {k: summary.get(k) for k in scorer.keys}
  return out


def _clip_scores(clip, image_tok, codes, exs) -> dict:
  """Mean CLIP cosine of each generated image to its prompt and to the reference image; an
  example that produced no image scores 0 (as if orthogonal)."""
  done = [i for i, c in enumerate(codes) if c is not None]
  text_sim, image_sim = np.zeros(len(exs)), np.zeros(len(exs))
  if done:
    images = [image_tok.decode(codes[i]) for i in done]
    text_sim[done] = clip.image_text(images, [exs[i].text for i in done])
    refs = [i for i in done if exs[i].media]
    if refs:
      image_sim[refs] = clip.image_image(
        [images[done.index(i)] for i in refs], [read_image(exs[i].media) for i in refs]
      )
  with_ref = [i for i, e in enumerate(exs) if e.media]
  return {
    "clip_text": float(text_sim.mean()),
    "clip_image": float(image_sim[with_ref].mean()) if with_ref else None,
  }


def coco_captions(model, exs: list[Example], opts: Options) -> dict:
  """COCO Captions: BLEU-4 and CIDEr-D (pycocoevalcap, PTB-tokenised) over each image's
  references. Chance: another image's first reference as the caption."""
  prompts = [
    prompting.build_prompt(
      model.builder,
      "caption",
      prompting.Media(image=model.tokenizers.image.encode(read_image(e.media))),
      chat=opts.chat,
    )
    for e in exs
  ]
  preds = _texts(model, prompts, opts) if exs else []
  scores = chance = None
  notes = []
  if exs:
    refs = [list(e.references) for e in exs]
    scores = S.caption_scores(preds, refs)
    notes.append(f"tokenizer: {scores.pop('tokenizer')}")
    if len(exs) > 1:
      chance = S.caption_scores([r[0] for r in refs[1:] + refs[:1]], refs)
  ref = lambda e: list(e.references)
  return _result("coco_captions", len(exs), scores, chance, _samples(exs, preds, ref), notes)


def vqa(model, exs: list[Example], opts: Options) -> dict:
  """VQAv2-style accuracy of a ChatML answer to (image, question). Chance: another example's
  answer to the same question."""
  prompts = [
    prompting.chat_prompt(
      model.builder,
      prompting.Media(image=model.tokenizers.image.encode(read_image(e.media))),
      e.text,
    )
    for e in exs
  ]
  preds = _texts(model, prompts, opts) if exs else []
  scores = M.summarise([S.vqa_counts(p, e.answers) for p, e in zip(preds, exs)])
  chance = M.chance(
    S.vqa_counts, [e.answer for e in exs], [e.answers for e in exs], groups=[e.text for e in exs]
  )
  return _result(
    "vqa",
    len(exs),
    scores,
    chance,
    _samples(exs, preds, lambda e: list(e.answers)),
    ["SFT task (ChatML prompt): expect chance level before stage 4"],
  )


TASK_FNS = {
  "image_captioning": image_captioning,
  "text_to_image": text_to_image,
  "asr": asr,
  "tts": tts,
  "video_captioning": video_captioning,
  "video_qa": video_qa,
  "coco_captions": coco_captions,
  "vqa": vqa,
}
