"""Stage 1 (alignment): `--config=configs/stage1.py[:demo|:mio-7b]`.

demo    the tiny model on synthetic data; a few hundred steps, ~1-2 minutes on a laptop CPU.
mio-7b  MIO paper settings (DESIGN §11): Yi-6B dims, seq 2800, batch 256, peak LR 3e-5,
        warmup 3 %, clip 1.0, 24,800 steps, FSDP over all devices.
"""

from __future__ import annotations

from configs.base import get_base_config


def _demo(c):
  c.model = "tiny"
  c.seq_len = 256
  c.global_batch = 8
  c.total_steps = 200
  c.lr = 3e-3
  c.log_every = 25
  c.checkpoint_every = 100
  return c


def _mio_7b(c):
  c.model = "mio-7b"
  c.seq_len = 2800
  c.global_batch = 256
  c.total_steps = 24_800
  c.lr = 3e-5
  c.warmup_frac = 0.03
  c.end_lr_frac = 0.0
  c.clip_norm = 1.0
  c.weight_decay = 0.1
  c.mesh.fsdp = -1
  c.loss_chunk = 700
  c.log_every = 10
  c.checkpoint_every = 500
  c.data.kind = "shards"
  # Batch ratio image-text : text : speech-text = 12 : 2 : 2 (DESIGN §11).
  c.data.sources.update({"image_text": "image_text", "text": "text", "speech_text": "speech_text"})
  c.data.weights.update({"image_text": 12.0, "text": 2.0, "speech_text": 2.0})
  return c


VARIANTS = {"demo": _demo, "mio-7b": _mio_7b}


def get_config(arg: str = "demo"):
  arg = arg or "demo"
  if arg not in VARIANTS:
    raise ValueError(f"unknown stage1 variant {arg!r}; choose one of {sorted(VARIANTS)}")
  return VARIANTS[arg](get_base_config())
