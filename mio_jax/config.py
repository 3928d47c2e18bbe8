"""Every training config key, with its default: the one home of each setting. Stage configs
(configs/) start here and override.

Override any key on the command line: `--config.total_steps=3 --config.mesh.fsdp=-1`.
"""

from __future__ import annotations

import dataclasses
import types
import typing

import ml_collections
from ml_collections.config_dict import placeholder

from mio_jax.errors import UserError
from mio_jax.model.architecture import ModelConfig


def _override_types() -> dict[str, type]:
  """ModelConfig field -> its type, from the dataclass itself (`int | None` -> int). vocab_size is
  not overridable: the model name's vocab fixes it."""
  hints = typing.get_type_hints(ModelConfig)
  out = {}
  for field in dataclasses.fields(ModelConfig):
    if field.name == "vocab_size":
      continue
    hint = hints[field.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
      hint = next(a for a in typing.get_args(hint) if a is not type(None))
    out[field.name] = hint
  return out


MODEL_OVERRIDE_TYPES = _override_types()


def model_overrides(config) -> dict:
  """The overrides that are set (not None), as a plain dict for `get_model(name, **overrides)`."""
  return {k: v for k, v in config.model_overrides.to_dict().items() if v is not None}


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Model: a name from mio_jax/model/sizes.py plus ModelConfig field overrides; None = the
  # registry's
  # value. Typed placeholders so `--config.model_overrides.remat_policy=full` works.
  c.model = "tiny"
  c.model_overrides = ml_collections.ConfigDict(
    {k: placeholder(t) for k, t in MODEL_OVERRIDE_TYPES.items()}
  )
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

  # Mesh (see mio_jax/parallel/sharding.py); -1 fills the remaining devices.
  c.mesh = ml_collections.ConfigDict(dict(dcn=1, data=1, fsdp=-1, tensor=1))
  # "auto": run the plan `python -m mio_jax.aot --search` stored for this topology (searching
  # first when none is; mio_jax/scale/plan.py). Tunables that differ from these defaults still win.
  c.plan = ""
  c.plan_dir = ""  # where plans are stored; "" = $MIO_JAX_PLAN_DIR or ~/.cache/mio_jax/plans

  # Checkpoints (mio_jax/checkpoint/manager.py) and initialisation.
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
  # Validation loss every eval_every steps (0 = off) on eval_steps batches of the sources'
  # validation splits (data.sources names + data.eval_suffix); `eval/` keys in the metrics.
  c.eval_every = 0
  c.eval_steps = 4

  # Data.
  c.data_dir = ""
  c.data = ml_collections.ConfigDict()
  c.data.kind = (
    "synthetic"  # 'synthetic' (mio_jax/data/synthetic_task.py) or 'shards' (mio_jax/data)
  )
  c.data.sources = ml_collections.ConfigDict()  # name -> dataset dir relative to data_dir
  c.data.weights = ml_collections.ConfigDict()  # name -> mixture weight
  # "name:weight,name:weight": replaces sources and weights (each name a dataset dir under
  # data_dir), for a mixture the stage config does not name, from the command line.
  c.data.mixture = ""
  # Examples longer than seq_len + 1: 'split' into pieces, 'drop' (counted, logged), 'reject'
  # (error), or 'auto': drop in SFT sources (a piece must not train on an answer whose prompt it
  # lost), split elsewhere.
  c.data.overlong = "auto"
  c.data.skip_corrupt = False
  c.data.worker_count = 0
  c.data.shuffle = True
  c.data.pack_rows = 8  # rows packed per window: more = denser rows, more memory
  c.data.prefetch = 2  # batches prefetched by a thread when worker_count is 0; 0 = none
  # Demo configs: build the corpus with `corpus_builder`, a module name imported on first use (its
  # `build(data_dir, seed=)`), only into a missing or empty data_dir (never beside the user's
  # datasets; train/loop.py `demo_corpus_wanted`); the core never imports data_pipelines itself.
  c.data.build_demo_corpus = False
  c.data.corpus_builder = ""  # e.g. "data_pipelines.demo_corpus" (configs/curriculum.py)
  c.data.eval_suffix = "_val"  # validation split of source dir D: D + eval_suffix
  c.data.cache_dir = ""  # local copies of gs:// shards (ArrayRecord reads local files); "" = tmp
  return c


def with_mixture(config) -> ml_collections.ConfigDict:
  """`config` with `data.mixture` (if set) spelled out as data.sources and data.weights, and
  cleared: what follows (evaluation's `_val` sources, checkpoints) sees sources and weights only."""
  text = config.data.get("mixture", "")
  if not text:
    return config
  weights = parse_mixture(text)
  out = ml_collections.ConfigDict(config.to_dict())
  out.data.sources = {name: name for name in weights}
  out.data.weights = weights
  out.data.mixture = ""
  return out


def parse_mixture(text: str) -> dict[str, float]:
  """'image_text:12,speech_text:2' -> {'image_text': 12.0, 'speech_text': 2.0}."""
  out: dict[str, float] = {}
  for item in text.split(","):
    name, sep, weight = item.strip().partition(":")
    name = name.strip()
    try:
      value = float(weight) if sep else float("nan")
    except ValueError:
      value = float("nan")
    if not name or not value > 0 or value == float("inf"):
      raise UserError(
        f"config.data.mixture={text!r}: {item.strip()!r} is not NAME:WEIGHT with a weight > 0 "
        "(e.g. image_text:12,speech_text:2)"
      )
    if name in out:
      raise UserError(f"config.data.mixture={text!r} names {name!r} twice")
    out[name] = value
  return out
