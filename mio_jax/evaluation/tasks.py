"""One function per evaluation task: examples → prompts (training layouts) → batched generation →
scores.

Every task returns {"n", "metrics", "chance", "samples", "notes"} with the same metric keys whatever
the data (None where a metric does not apply or there are no examples), so result files and
TensorBoard tags are stable. Chance levels: metrics.chance (references of other examples used as
predictions). Scores against an example's `attributes` come from the scorer registered for the
task (registry.py; the demo corpus's: data_pipelines/demo_eval.py).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from mio_jax.evaluation import metrics as M
from mio_jax.evaluation import registry
from mio_jax.evaluation.data import Example
from mio_jax.generate import io, prompting
from mio_jax.generate.api import generate
from mio_jax.generate.sampling import mio_sampling
from mio_jax.generate.segments import split_segments
from mio_jax.media import read_image, read_video, read_wav

# Metrics every task reports whatever the data; a registered scorer's keys come first.
CORE_KEYS = {
    "image_captioning": ("exact_match", "cider"),
    "text_to_image": ("complete",),
    "asr": ("wer",),
    "tts": ("wer", "complete"),
    "video_captioning": ("exact_match", "cider"),
    "video_qa": ("exact_match",),
}
N_SAMPLES = 3


@dataclasses.dataclass(frozen=True)
class Options:
  batch_size: int = 8
  max_text_tokens: int = 48
  max_speech_frames: int = 300   # TTS budget: 6 s at 50 Hz (demo utterances last at most ~5 s)
  cfg_scale: float = 1.0
  seed: int = 0
  chat: bool = False             # SFT layout for the tasks that have one (video QA always uses it)
  beam_size: int = 1             # text outputs (MIO decodes text with beam 5)


def generate_batched(model: io.Loaded, prompts, output_modality: str, max_new_tokens: int,
                     opts: Options, max_speech_tokens: int = 1500):
  """Segments per prompt, `batch_size` prompts per call. Every batch has the same size (the last
  is filled with copies) and prompts are padded to a multiple of 128: tasks share compiled programs."""
  bs = max(1, min(opts.batch_size, len(prompts)))
  image_tokens = model.tokenizers.image.tokens_per_image if model.tokenizers.image else 32
  out = []
  for start in range(0, len(prompts), bs):
    chunk = list(prompts[start:start + bs])
    batch = chunk + [chunk[-1]] * (bs - len(chunk))
    ids = generate(model.params, model.model_cfg, model.vocab, batch, max_new_tokens=max_new_tokens,
                   sampling=mio_sampling(), output_modality=output_modality,
                   cfg_scale=opts.cfg_scale if output_modality == "image" else 1.0,
                   rng=jax.random.PRNGKey(opts.seed + start), image_tokens=image_tokens,
                   max_speech_tokens=max_speech_tokens, stop_ids=prompting.stop_ids(model.builder),
                   bos_id=model.builder.text.bos_id, pad_multiple=128,
                   beam_size=opts.beam_size if output_modality == "text" else 1)
    out += [split_segments(x, model.vocab) for x in ids[:len(chunk)]]
  return out


def _texts(model, prompts, opts) -> list[str]:
  segs = generate_batched(model, prompts, "text", opts.max_text_tokens, opts)
  return [io.decode_text(model.tokenizers, s).strip() for s in segs]


def keys(task: str) -> tuple[str, ...]:
  """The metric keys of `task`'s results: its registered scorer's, then CORE_KEYS."""
  scorer = registry.scorer(task)
  return (scorer.keys if scorer else ()) + CORE_KEYS[task]


def _result(task, n, scores, chance, samples, notes=()):
  names = keys(task)
  return {"n": n, "metrics": {k: (scores or {}).get(k) for k in names},
          "chance": {k: (chance or {}).get(k) for k in names}, "samples": samples[:N_SAMPLES],
          "notes": list(notes)}


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
  scores["cider"] = M.cider(preds, [e.references or (e.text,) for e in exs]) if exs else None
  if exs and scores["cider"] is None:
    notes.append("CIDEr skipped: pip install pycocoevalcap")
  return _result(task, len(exs), scores, chance, _samples(exs, preds), notes)


# ---- tasks ------------------------------------------------------------------------------------
def image_captioning(model, exs: list[Example], opts: Options) -> dict:
  prompts = [prompting.build_prompt(model.builder, "caption", prompting.Media(
      image=model.tokenizers.image.encode(read_image(e.media))), chat=opts.chat) for e in exs]
  return _captions("image_captioning", exs, _texts(model, prompts, opts) if exs else [])


def video_captioning(model, exs: list[Example], opts: Options) -> dict:
  prompts = [prompting.build_prompt(model.builder, "video_caption", prompting.Media(
      video=_video_codes(model, e.media)), chat=opts.chat) for e in exs]
  return _captions("video_captioning", exs, _texts(model, prompts, opts) if exs else [])


def video_qa(model, exs: list[Example], opts: Options) -> dict:
  prompts = [prompting.chat_prompt(model.builder, prompting.Media(video=_video_codes(model, e.media)),
                                   e.text) for e in exs]
  preds = _texts(model, prompts, opts) if exs else []
  scores = M.summarise([M.exact_counts(p, e.answer) for p, e in zip(preds, exs)])
  chance = M.chance(M.exact_counts, [e.answer for e in exs], [e.answer for e in exs],
                    groups=[e.text for e in exs])  # another answer to the same question
  notes = ["SFT task (ChatML prompt): expect chance level before stage 4"]
  return _result("video_qa", len(exs), scores, chance, _samples(exs, preds, lambda e: e.answer), notes)


def asr(model, exs: list[Example], opts: Options) -> dict:
  prompts = [prompting.build_prompt(model.builder, "asr", prompting.Media(
      speech=_speech_codes(model, e.media)), chat=opts.chat) for e in exs]
  preds = _texts(model, prompts, opts) if exs else []
  scores = M.summarise([M.wer_counts(p, e.text) for p, e in zip(preds, exs)])
  chance = M.chance(M.wer_counts, [e.text for e in exs], [e.text for e in exs])
  return _result("asr", len(exs), scores, chance, _samples(exs, preds))


def tts(model, exs: list[Example], opts: Options) -> dict:
  """Round trip: text → speech codes → this model's ASR prompt → text, scored by WER."""
  frames, layers = opts.max_speech_frames, model.vocab.speech_layers
  prompts = [prompting.build_prompt(model.builder, "tts", prompting.Media(), e.text, chat=opts.chat)
             for e in exs]
  segs = generate_batched(model, prompts, "speech", layers * frames + 2, opts, frames) if exs else []
  speech = [next((s.codes for s in ss if s.modality == "speech" and s.complete and s.codes.size), None)
            for ss in segs]
  spoken = [i for i, c in enumerate(speech) if c is not None]
  asr_prompts = [prompting.build_prompt(model.builder, "asr", prompting.Media(speech=speech[i]),
                                        chat=opts.chat) for i in spoken]
  heard = dict(zip(spoken, _texts(model, asr_prompts, opts) if spoken else []))
  preds = [heard.get(i, "") for i in range(len(exs))]  # no speech: every word is deleted
  scores = M.summarise([M.wer_counts(p, e.text) for p, e in zip(preds, exs)])
  scores["complete"] = len(spoken) / len(exs) if exs else None
  chance = M.chance(M.wer_counts, [e.text for e in exs], [e.text for e in exs])
  seconds = [c.shape[1] / model.tokenizers.speech.frame_rate for c in speech if c is not None]
  notes = [f"mean generated speech {np.mean(seconds):.2f} s"] if seconds else []
  return _result("tts", len(exs), scores, chance, _samples(exs, preds), notes)


def text_to_image(model, exs: list[Example], opts: Options) -> dict:
  """Generated image → the registered scorer's reader (the demo's: a pixel classifier) → the
  prompted attributes. The reader's own accuracy on the ground-truth images (and their tokenizer
  reconstructions) is reported too. Without a scorer only completion is scored."""
  prompts = [prompting.build_prompt(model.builder, "draw", prompting.Media(), e.text, chat=opts.chat)
             for e in exs]
  image = model.tokenizers.image
  segs = generate_batched(model, prompts, "image", image.tokens_per_image + 2, opts) if exs else []
  codes = [next((s.codes for s in ss if s.modality == "image" and s.complete), None) for ss in segs]
  complete = {"complete": float(np.mean([c is not None for c in codes])) if exs else None}
  scorer = registry.scorer("text_to_image")
  if scorer is None:
    samples = [{"key": e.key, "reference": e.text, "prediction": ""} for e in exs]
    return _result("text_to_image", len(exs), complete, None, samples,
                   ["no text_to_image scorer registered (evaluate --plugins): only completion"])
  found = [scorer.read(image.decode(c)) if c is not None else None for c in codes]
  attrs = [e.attributes for e in exs]
  scores = {**M.summarise([scorer.counts(d, a) for d, a in zip(found, attrs)]), **complete}
  truth = [read_image(e.media) for e in exs]
  gt = [scorer.read(im) for im in truth]
  rec = [scorer.read(image.decode(image.encode(im))) for im in truth]
  chance = M.chance(scorer.counts, gt, attrs)  # a true image of another prompt
  out = _result("text_to_image", len(exs), scores, chance,
                [{"key": e.key, "reference": e.text, "prediction": scorer.describe(d)}
                 for e, d in zip(exs, found)])
  for name, reads in (("classifier_on_ground_truth", gt), ("classifier_on_reconstructions", rec)):
    summary = M.summarise([scorer.counts(d, a) for d, a in zip(reads, attrs)])
    out[name] = {k: summary.get(k) for k in scorer.keys}
  return out


TASK_FNS = {"image_captioning": image_captioning, "text_to_image": text_to_image, "asr": asr, "tts": tts,
            "video_captioning": video_captioning, "video_qa": video_qa}
