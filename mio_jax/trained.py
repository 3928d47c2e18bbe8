"""A finished training run's checkpoint → (config, model config, vocab, params).

Shared by export, generate and evaluate. The model is rebuilt from the training config stored in
the checkpoint's `meta` (model name + overrides), its vocab fingerprint is checked, and only the
params are restored, onto `jax.eval_shape` of the init (no random init runs).
"""

from __future__ import annotations

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp

from mio_jax import checkpoint, paths
from mio_jax.model import ModelConfig, Transformer
from mio_jax.models import get_model
from mio_jax.vocab import Vocab


@dataclasses.dataclass
class Trained:
  params: dict
  model_cfg: ModelConfig
  vocab: Vocab
  config: dict  # the training config as a plain dict
  step: int
  step_dir: str


def read_meta(step_dir: str) -> dict:
  meta = checkpoint.read_meta(step_dir)
  for key in ("config", "vocab_fingerprint"):
    if key not in meta:
      raise ValueError(f"{step_dir}/meta has no {key!r}; was it written by mio_jax training?")
  return meta


def config_of(meta: dict) -> dict:
  """The training config as a dict (meta stores `config.to_json_best_effort()`)."""
  config = meta["config"]
  return json.loads(config) if isinstance(config, str) else dict(config)


def model_of(config: dict) -> tuple[ModelConfig, Vocab]:
  overrides = {k: v for k, v in (config.get("model_overrides") or {}).items() if v is not None}
  return get_model(config["model"], **overrides)


def abstract_params(model_cfg: ModelConfig):
  """ShapeDtypeStructs of the params: the restore target, without running an init."""
  boxed = jax.eval_shape(lambda rng: Transformer(model_cfg).init(rng, jnp.zeros((1, 2), jnp.int32)),
                         jax.random.key(0))["params"]
  return nn.unbox(boxed)


def step_dir_of(workdir: str, step: int | None) -> str:
  """`step`'s checkpoint dir, or the newest finished one (Orbax renames a dir only once complete)."""
  if step is None:
    return checkpoint.latest_step_dir(workdir)
  path = paths.join(checkpoint.checkpoint_dir(workdir), str(step))
  if not paths.isdir(path):
    raise FileNotFoundError(f"no checkpoint for step {step} in {checkpoint.checkpoint_dir(workdir)}")
  return path


def load_trained(workdir: str, step: int | None = None) -> Trained:
  step_dir = step_dir_of(workdir, step)
  meta = read_meta(step_dir)
  config = config_of(meta)
  model_cfg, vocab = model_of(config)
  vocab.check_fingerprint(meta["vocab_fingerprint"], f"{step_dir}/meta")
  # Given no step, restore from the workdir so an unreadable newest checkpoint falls back.
  params, restored_dir = checkpoint.restore_params(step_dir if step is not None else workdir,
                                                   abstract_params(model_cfg))
  if paths.absolute(restored_dir) != paths.absolute(step_dir):
    meta = read_meta(restored_dir)
    config = config_of(meta)
    if model_of(config) != (model_cfg, vocab):
      raise ValueError(f"{step_dir} is unreadable and the previous checkpoint {restored_dir} is "
                       "another model; pass a step")
  step_value = int(meta.get("step", paths.basename(restored_dir)))
  return Trained(params, model_cfg, vocab, config, step_value, restored_dir)
