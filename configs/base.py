"""Every training config key, with defaults. Stage configs start here and override.

Override any key on the command line: `--config.total_steps=3 --config.mesh.fsdp=-1`.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

MODEL_OVERRIDE_TYPES = dict(
    d_model=int, n_layers=int, n_heads=int, n_kv_heads=int, ffn_dim=int, head_dim=int,
    rope_theta=float, norm_eps=float, init_std=float, dtype=str, param_dtype=str,
    scan_layers=bool, remat_policy=str, attention_impl=str)


def model_overrides(config) -> dict:
  """The overrides that are set (not None), as a plain dict for `get_model(name, **overrides)`."""
  return {k: v for k, v in config.model_overrides.to_dict().items() if v is not None}


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Model: a name from configs/models.py plus ModelConfig field overrides; None = the registry's
  # value. Typed placeholders so `--config.model_overrides.remat_policy=full` works.
  c.model = "tiny"
  c.model_overrides = ml_collections.ConfigDict(
      {k: placeholder(t) for k, t in MODEL_OVERRIDE_TYPES.items()})
  c.seed = 0
  c.stage = 1  # curriculum stage 1..4 (4 = SFT: generation uses the chat template)

  # Schedule and batch. global_batch is in sequences of seq_len tokens (all processes).
  c.total_steps = 200
  c.seq_len = 256
  c.global_batch = 16
  c.micro_batches = 1  # gradient accumulation: global_batch is split into this many scan steps

  # Optimizer: AdamW, linear warmup then cosine to lr * end_lr_frac, global-norm clipping.
  c.lr = 3e-3
  c.warmup_frac = 0.03
  c.end_lr_frac = 0.1
  c.weight_decay = 0.1
  c.b1 = 0.9
  c.b2 = 0.95
  c.eps = 1e-8
  c.clip_norm = 1.0

  # Loss.
  c.z_loss = 0.0
  c.loss_chunk = 0  # sequence positions per LM-head chunk (bounds f32 logits memory); 0 = all
  c.modality_loss_weights = ml_collections.ConfigDict()  # e.g. {'speech': 0.5}; empty = none

  # Mesh (see mio_jax/sharding.py); -1 fills the remaining devices.
  c.mesh = ml_collections.ConfigDict(dict(dcn=1, data=1, fsdp=-1, tensor=1))

  # Checkpoints (mio_jax/checkpoint.py) and initialisation.
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.keep_period = 0  # also keep every checkpoint whose step is a multiple of this; 0 = none
  c.async_checkpoint = True  # write checkpoints in the background while training continues
  # zstd on checkpoint arrays: 10-30 % less disk for f32 state, ~4x the writer's CPU time (which
  # competes with the step on CPU hosts); worth it for slow remote storage.
  c.checkpoint_compression = False
  # CPU priority (Linux nice) of the async writer's threads: they use the cycles the step leaves
  # idle instead of taking cores from it; 0 = same priority as training.
  c.checkpoint_writer_nice = 19
  # Non-finite loss/grad-norm steps apply no update; the run stops at the first one, or skips up to
  # this many in the whole run (counted in metrics as `skipped_updates`).
  c.skip_nonfinite_updates = 0
  c.init_from = ""  # a checkpoint dir or HF model dir for stage hand-off; empty = random init

  # Logging / profiling.
  c.log_every = 10
  c.profile_steps = ""  # "a,b": jax.profiler trace of steps a..b (1-based) into workdir/profile

  # Data.
  c.data_dir = ""
  c.data = ml_collections.ConfigDict()
  c.data.kind = "synthetic"  # 'synthetic' (mio_jax/train/synthetic.py) or 'shards' (mio_jax/data)
  c.data.sources = ml_collections.ConfigDict()  # name -> dataset dir relative to data_dir
  c.data.weights = ml_collections.ConfigDict()  # name -> mixture weight
  c.data.overlong = "split"  # 'split' | 'reject' examples longer than seq_len
  c.data.skip_corrupt = False
  c.data.worker_count = 0
  c.data.shuffle = True
  c.data.build_demo_corpus = False  # demo configs: build the demo corpus in data_dir if missing
  c.data.cache_dir = ""  # local copies of gs:// shards (ArrayRecord reads local files); "" = tmp
  return c
