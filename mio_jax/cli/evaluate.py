"""Held-out evaluation of a checkpoint: every metric next to its chance level, to JSON and
TensorBoard.

    python -m mio_jax.evaluate (--workdir=DIR | --model=HF_DIR) [--split=test] [--limit=50]
        [--out=RESULTS.json]
        [--manifest=ANY.jsonl] [--tasks=asr,tts,...] [--tokenizers=DIR] [--step=N] [--chat]
        [--plugins=MODULE,..] [--tts_asr_model=WHISPER_DIR] [--clip_model=CLIP_DIR] [--greedy]

Data: `<data_dir>/raw/<split>.jsonl` of the checkpoint's config (the demo corpus), or `--manifest`:
any JSONL of the same shape (format: mio_jax/evaluation/data.py; COCO captions and LibriSpeech fit).
Tasks (mio_jax/evaluation/tasks.py), at most `--limit` examples each, `--batch_size` prompts per
generate call:

    image_captioning  colour/shape/size/position words of the ground truth in the caption; exact
                      match; CIDEr-D (pycocoevalcap, PTB-tokenised)
    vqa               not in the demo corpus (no image QA): skipped unless --tasks names it
    video_qa          SFT video questions, exact match (ChatML prompt)
    asr               word error rate (jiwer; wer: light normaliser, wer_norm: Whisper-style)
    text_to_image     pixel classifier on the decoded image vs the prompt's colour/shape/size/cell
    tts               round trip: generated speech codes → this model's ASR prompt → WER
    video_captioning  object words, start and end place

Standard benchmarks (`--tasks=coco_captions,vqa,asr,tts,video_qa,text_to_image` over a manifest
data_pipelines/convert.py wrote; metrics in mio_jax/evaluation/standard_metrics.py):

    coco_captions     BLEU-4 and CIDEr-D (pycocoevalcap, PTB tokenizer), an image's rows its refs
    vqa               VQAv2 accuracy (official answer normalisation, 10-annotator rule); sft rows
                      with an image and a question (ChatML prompt)
    asr / tts         also wer_norm: jiwer after a Whisper-style English normaliser; tts
                      wer_external transcribes the generated speech with --tts_asr_model (Whisper)
    video_qa          exact_match and accuracy (VQA-normalised answer)
    text_to_image     clip_text / clip_image with --clip_model: CLIP cosine to the prompt and to the
                      reference image; every image_text row counts then, attributes or not

`--model=DIR` evaluates an HF directory as released (MIO-7B-Base/-Instruct; safetensors or
`pytorch_model*.bin` shards) instead of a training `--workdir`: tokenizers from
DIR/mio_jax_tokenizers (`python -m data_pipelines.convert_weights --from_mio=DIR`) or
`--tokenizers`; it needs `--manifest` (no demo split) and `--out` (results JSON; TensorBoard
scalars go beside it, under `<out's folder>/<manifest name>`); step 0.

Model folders (--tts_asr_model, --clip_model) are local save_pretrained folders: nothing downloads.
Generation is data parallel over all devices (--devices=N: the first N), batches split over a
1-D mesh; outputs do not depend on the device count.

The shapes-world scores (colour/shape/size/position words, the pixel classifier) are the demo
corpus's: they plug in through mio_jax/evaluation/registry.py from the modules `--plugins` names,
imported by name with importlib (default: data_pipelines.demo_eval when it is installed; the core
never imports data_pipelines statically). Without a scorer a task reports its core metrics only.

Dashes work in flag names too (`--max-text-tokens`).
Chance: the score of another example's reference used as the prediction
(mio_jax/evaluation/scores.py).
Output: JSON (default `<workdir>/eval/<split>_step<N>.json`) and scalars `<task>/<metric>` and
`<task>/chance/<metric>` in TensorBoard under `<workdir>/eval/<split>` at the checkpoint's step.
`--out`, `--manifest`, `--tokenizers` (and the media they name) may be gs:// URLs.
"""

from __future__ import annotations

import json
import os
import time

from absl import flags, logging

from mio_jax.cli import entry
from mio_jax.errors import UserError
from mio_jax.evaluation import data as data_lib
from mio_jax.evaluation import generation, registry
from mio_jax.evaluation import tasks as tasks_lib
from mio_jax.generate import io
from mio_jax.io import paths

FLAGS = flags.FLAGS
VQA_NOTE = (
  "the demo corpus has no image question answering; video QA from the SFT data is "
  "scored instead (video_qa)"
)


def default_manifest(model: io.Loaded, split: str) -> str:
  data_dir = model.config.get("data_dir") or ""
  if not data_dir:
    raise ValueError("the checkpoint's config has no data_dir; pass --manifest=FILE.jsonl")
  return paths.join(data_dir, "raw", f"{split}.jsonl")


def evaluate(
  model: io.Loaded, manifest: str, limit: int, opts: generation.Options, tasks=data_lib.TASKS
) -> dict:
  unknown = set(tasks) - set(data_lib.TASKS)
  if unknown:
    raise ValueError(f"unknown tasks {sorted(unknown)}; known: {data_lib.TASKS}")
  examples = data_lib.load_examples(manifest, limit, attributes_for_t2i=not opts.clip_model)
  results = {} if "vqa" in tasks else {"vqa": {"n": 0, "skipped": VQA_NOTE}}
  for task in data_lib.TASKS:
    if task not in tasks:
      continue
    start = time.time()
    results[task] = tasks_lib.TASK_FNS[task](model, examples[task], opts)
    results[task]["seconds"] = round(time.time() - start, 2)
    logging.info("%s: %s (chance %s)", task, results[task]["metrics"], results[task]["chance"])
  return {
    "step": model.step,
    "checkpoint": model.step_dir,
    "manifest": paths.absolute(manifest),
    "limit": limit,
    "chat": opts.chat,
    "cfg_scale": opts.cfg_scale,
    "seed": opts.seed,
    "greedy": opts.greedy,
    "tts_asr_model": opts.tts_asr_model,
    "clip_model": opts.clip_model,
    "tasks": results,
  }


def scalars(result: dict) -> dict[str, float]:
  """`<task>/<metric>` and `<task>/chance/<metric>` for every number in the result."""
  out = {}
  for task, r in result["tasks"].items():
    for group, prefix in (
      ("metrics", ""),
      ("chance", "chance/"),
      ("classifier_on_ground_truth", "classifier_gt/"),
    ):
      for name, value in (r.get(group) or {}).items():
        if isinstance(value, (int, float)):
          out[f"{task}/{prefix}{name}"] = float(value)
  return out


def write(result: dict, path: str, logdir: str) -> None:
  from clu import metric_writers  # imports TensorFlow: only when writing

  paths.write_text(path, json.dumps(result, indent=2, sort_keys=True))
  writer = metric_writers.create_default_writer(logdir, just_logging=False, asynchronous=False)
  writer.write_scalars(result["step"], scalars(result))
  writer.flush()
  writer.close()


def table(result: dict) -> str:
  """Markdown table: one row per task and metric, the model's score beside chance."""
  rows = ["| task | metric | model | chance | n |", "|---|---|---|---|---|"]
  fmt = lambda v: "–" if v is None else f"{v:.3f}"
  for task, r in sorted(result["tasks"].items()):
    for metric, value in sorted(r.get("metrics", {}).items()):
      if value is not None:
        rows.append(
          f"| {task} | {metric} | {fmt(value)} | {fmt(r.get('chance', {}).get(metric))} "
          f"| {r.get('n', 0)} |"
        )
  return "\n".join(rows)


def check_metric_packages() -> None:
  """WER (jiwer) and BLEU/CIDEr (pycocoevalcap) are the `eval` extra: fail before loading."""
  import importlib.util

  missing = [m for m in ("jiwer", "pycocoevalcap") if importlib.util.find_spec(m) is None]
  if missing:
    raise UserError(
      f"the standard metrics need {missing}: pip install 'mio-jax[eval]' "
      "(or -r requirements-eval.txt)"
    )


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.tasks) - set(data_lib.TASKS))
  if unknown:  # before the checkpoint loads
    raise UserError(f"--tasks: unknown {unknown}; known: {list(data_lib.TASKS)}")
  if FLAGS.manifest and not paths.exists(FLAGS.manifest):
    raise UserError(f"--manifest={FLAGS.manifest} does not exist")
  for flag in ("tts_asr_model", "clip_model"):  # local folders only: fail before loading
    value = getattr(FLAGS, flag)
    if value and not os.path.isfile(os.path.join(value, "config.json")):
      raise UserError(f"--{flag}={value}: not a local model folder (no config.json)")
  check_metric_packages()
  io.check_model_flags(FLAGS.workdir, FLAGS.model, FLAGS.step)
  if FLAGS.model and not (FLAGS.manifest and FLAGS.out):
    raise UserError("--model needs --manifest=FILE.jsonl and --out=RESULTS.json")
  registry.import_plugins(FLAGS.plugins)
  model = io.load_requested(FLAGS.workdir, FLAGS.model, FLAGS.step, FLAGS.tokenizers)
  manifest = FLAGS.manifest or default_manifest(model, FLAGS.split)
  opts = generation.Options(
    batch_size=FLAGS.batch_size,
    max_text_tokens=FLAGS.max_text_tokens,
    max_speech_frames=FLAGS.max_speech_frames,
    cfg_scale=FLAGS.cfg_scale,
    seed=FLAGS.seed,
    beam_size=FLAGS.beam_size,
    greedy=FLAGS.greedy,
    devices=FLAGS.devices,
    tts_asr_model=FLAGS.tts_asr_model,
    clip_model=FLAGS.clip_model,
    chat=model.is_sft if FLAGS.chat is None else FLAGS.chat,
  )
  result = evaluate(model, manifest, FLAGS.limit, opts, FLAGS.tasks)
  name = FLAGS.split if not FLAGS.manifest else os.path.splitext(paths.basename(manifest))[0]
  out = FLAGS.out or paths.join(FLAGS.workdir, "eval", f"{name}_step{model.step}.json")
  logdir = paths.join(paths.parent(out), name) if FLAGS.model else None
  write(result, out, logdir or paths.join(FLAGS.workdir, "eval", name))
  print(table(result))
  print(out)


def define_flags() -> None:
  """The command line's flags: defined by `cli()` only, so importing this module as a library
  (tests, notebooks) registers no absl flags that could clash with another CLI's."""
  flags.DEFINE_string("workdir", None, "training workdir holding checkpoints/")
  flags.DEFINE_string(
    "model",
    None,
    "instead of --workdir: an HF model directory as released (safetensors or pytorch_model*.bin)",
  )
  flags.DEFINE_string(
    "split", "test", "demo corpus split: raw/<split>.jsonl under the config's data_dir"
  )
  flags.DEFINE_string("manifest", None, "evaluate this JSONL instead of the demo split")
  flags.DEFINE_integer("limit", 50, "examples per task", lower_bound=1)
  flags.DEFINE_string("out", None, "results JSON (default <workdir>/eval/<split>_step<N>.json)")
  flags.DEFINE_list(
    "tasks", list(data_lib.DEMO_TASKS), f"tasks to run (known: {','.join(data_lib.TASKS)})"
  )
  flags.DEFINE_string(
    "tokenizers", None, "tokenizer dir (default: the config's data_dir/tokenizers)"
  )
  flags.DEFINE_integer("step", None, "checkpoint step (default: the newest)")
  flags.DEFINE_bool(
    "chat", None, "ChatML prompts (default: on for SFT checkpoints, config stage 4)"
  )
  flags.DEFINE_integer("batch_size", 8, "prompts per generate call")
  flags.DEFINE_integer("max_text_tokens", 48, "budget for captions, transcripts and answers")
  flags.DEFINE_integer("max_speech_frames", 300, "TTS budget in content frames (50 per second)")
  flags.DEFINE_float("cfg_scale", 1.0, "classifier-free guidance for text-to-image (1 = off)")
  flags.DEFINE_integer("seed", 0, "sampling seed")
  flags.DEFINE_integer("beam_size", 1, "beam search for text outputs (MIO: 5)")
  flags.DEFINE_list(
    "plugins",
    None,
    "modules that register data-set scorers (default: "
    f"{','.join(registry.DEFAULT_PLUGINS)} when installed; empty: none)",
  )
  flags.DEFINE_string("tts_asr_model", None, "local Whisper folder: TTS WER by an outside ASR")
  flags.DEFINE_string("clip_model", None, "local CLIP folder: text-to-image CLIP similarity")
  flags.DEFINE_bool(
    "greedy", False, "argmax decoding everywhere (default: MIO's sampling settings)"
  )
  flags.DEFINE_integer("devices", None, "data parallel over the first N devices (default: all)")


def cli():
  """Console-script entry point (pyproject.toml); same flags as `python -m`."""
  define_flags()
  entry.run(main, flags_parser=lambda argv: FLAGS(io.underscore_flags(argv)))
