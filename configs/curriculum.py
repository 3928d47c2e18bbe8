"""The four MIO stages in one table: data mixture and length per stage, for each variant.

`stage_config(stage, variant)` is what `configs/stageN.py:get_config(variant)` returns.
Stage N+1 starts from stage N's final params (`--config.init_from=<stage N workdir>`) with a
fresh optimizer and its own mixture; `launch/demo.sh` chains the four demo stages that way.
"""

from __future__ import annotations

from mio_jax.config import get_base_config

# Batch ratios image-text : text : (interleaved + video) : speech-text from the paper
# (docs/architecture.md §7); the interleaved+video share is split evenly between the two sources.
MIXTURES = {
  1: {"image_text": 12, "text": 2, "speech_text": 2},
  2: {"image_text": 2, "text": 2, "interleaved": 3, "video_text": 3, "speech_text": 6},
  3: {"image_text": 2, "text": 1, "interleaved": 0.5, "video_text": 0.5, "speech_text": 12},
  # SFT per task (data_pipelines/builders/raw.py SFT_TASKS; tokenize_jsonl writes sft_<task>).
  # The paper gives no SFT ratios: a starting point, chat and VQA (the most varied) doubled.
  4: {
    "sft_chat": 2,
    "sft_caption": 1,
    "sft_vqa": 2,
    "sft_video": 1,
    "sft_asr": 1,
    "sft_tts": 1,
    "sft_s2s": 1,
    "sft_t2i": 1,
  },
}
# The demo weighs image-text up: a demo speech example is ~5× as long as an image-text one (162 vs
# 32 tokens), so with the paper's example ratios speech took 2/3 of stage 1's tokens, the tiny
# model never learned text → image in the budget, and stages 2-3 then wore it down
# (docs/training.md).
DEMO_MIXTURES = {
  1: {"image_text": 48, "text": 1, "speech_text": 1},
  2: {**MIXTURES[2], "image_text": 8},
  3: {**MIXTURES[3], "image_text": 8},
  # SFT alone wore ASR down (val WER 0.31 after stage 3, 0.36 after SFT); 1 in 9 replayed.
  4: {"sft": 8, "speech_text": 1},
}
STAGE_NAMES = {1: "alignment", 2: "interleaved", 3: "speech-enhanced", 4: "sft"}
MIO_STEPS = {1: 24_800, 2: 12_800, 3: 32_200, 4: 6_000}  # stage 4: not given in the paper
# The demo: ~2-6.5 minutes per stage on a 2-core laptop CPU (~4 steps/s idle); SFT is short.
# Replaying image_text / speech_text / video_text beside the SFT set (6:1:1:1) scored lower on
# all but one evaluated task; speech_text alone (8:1) helped ASR (docs/training.md).
DEMO_STEPS = {1: 1500, 2: 400, 3: 900, 4: 400}
# Validation loss 4 times per stage on 2 batches of every source's _val split: < 5 % of a stage.
DEMO_EVALS, DEMO_EVAL_STEPS = 4, 2


def _mixture(c, weights: dict):
  c.data.kind = "shards"
  c.data.sources = {name: name for name in weights}
  c.data.weights = {name: float(w) for name, w in weights.items()}


def demo(stage: int):
  c = get_base_config()
  c.stage = stage
  c.model = "tiny"
  c.seq_len = 512
  c.global_batch = 8
  c.total_steps = DEMO_STEPS[stage]
  c.lr = 1e-3
  c.warmup_frac = 0.05
  c.log_every = 50
  c.checkpoint_every = 200
  c.eval_every = DEMO_STEPS[stage] // DEMO_EVALS
  c.eval_steps = DEMO_EVAL_STEPS
  # The demo SFT set (one `sft` source) has ~10 % of examples over 513 tokens; its published
  # results (docs/training.md) were trained with them split, so the demo keeps 'split'.
  c.data.overlong = "split"
  c.data_dir = "demo_data"
  c.data.build_demo_corpus = True  # build it on first use into a missing or empty data_dir
  c.data.corpus_builder = "data_pipelines.demo_corpus"  # its build(data_dir, seed=)
  _mixture(c, DEMO_MIXTURES[stage])
  return c


def mio_7b(stage: int):
  c = get_base_config()
  c.stage = stage
  c.model = "mio-7b"
  c.seq_len = 2800
  c.global_batch = 256
  c.total_steps = MIO_STEPS[stage]
  c.lr = 3e-5
  c.warmup_frac = 0.03
  c.end_lr_frac = 0.0
  c.clip_norm = 1.0
  c.weight_decay = 0.1
  c.mesh.fsdp = -1
  c.loss_chunk = 700
  c.plan = (
    "auto"  # the searched remat/mesh/micro-batch plan for the topology (mio_jax/scale/plan.py)
  )
  c.log_every = 10
  c.checkpoint_every = 500
  c.data_dir = "/gcs/mio_shards"  # a GCS FUSE mount of the shards; set with --config.data_dir
  _mixture(c, MIXTURES[stage])
  return c


VARIANTS = {"demo": demo, "mio-7b": mio_7b}


def stage_config(stage: int, variant: str):
  variant = variant or "demo"
  if variant not in VARIANTS:
    raise ValueError(
      f"unknown variant {variant!r} for stage {stage}; choose one of {sorted(VARIANTS)}"
    )
  return VARIANTS[variant](stage)
