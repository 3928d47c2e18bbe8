"""A finished training run's checkpoint (or a released HF model directory) → (config, model
config, vocab, params).

Shared by export, generate and evaluate. The model is rebuilt from the training config stored in
the checkpoint's `meta` (model name + overrides), its vocab fingerprint is checked, and only the
params are restored, onto `jax.eval_shape` of the init (no random init runs). With `tensor` or
`dtype` the params land sharded over a mesh and cast (mio_jax/parallel/placement.py): how a 7B
model samples.
`load_hf_model(dir)` does the same for an HF directory as MIO releases it (config.json with MIO's
vocab keys, safetensors or `pytorch_model*.bin` shards; mio_jax/hf/weights.py reads them): the
weights are
read in the placement's dtype, gain the layout's padding rows and are put on the same mesh.
"""

from __future__ import annotations

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mio_jax.checkpoint import manager as checkpoint
from mio_jax.checkpoint import params as checkpoint_params
from mio_jax.errors import NoCheckpointError, UserError
from mio_jax.hf import release_vocab
from mio_jax.hf import release_vocab as hf_vocab
from mio_jax.hf import weights as hf
from mio_jax.io import paths
from mio_jax.model.architecture import ModelConfig
from mio_jax.model.sizes import get_model
from mio_jax.model.transformer import Transformer
from mio_jax.parallel import placement as placement_lib
from mio_jax.tokens.vocab import Vocab


@dataclasses.dataclass
class Trained:
  params: dict
  model_cfg: ModelConfig
  vocab: Vocab
  config: dict  # the training config as a plain dict
  step: int
  step_dir: str
  placement: placement_lib.Placement | None = None  # set when params are sharded / cast


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


def boxed_abstract_params(model_cfg: ModelConfig):
  """eval_shape of the init, still boxed with the logical axis names the sharding rules read."""
  return jax.eval_shape(
    lambda rng: Transformer(model_cfg).init(rng, jnp.zeros((1, 2), jnp.int32)), jax.random.key(0)
  )["params"]


def abstract_params(model_cfg: ModelConfig):
  """ShapeDtypeStructs of the params: the restore target, without running an init."""
  return nn.unbox(boxed_abstract_params(model_cfg))


def step_dir_of(workdir: str, step: int | None) -> str:
  """`step`'s checkpoint dir, or the newest finished one (Orbax renames a dir only once
  complete)."""
  if step is None:
    return checkpoint_params.latest_step_dir(workdir)
  path = paths.join(checkpoint.checkpoint_dir(workdir), str(step))
  if not paths.isdir(path):
    raise NoCheckpointError(
      f"no checkpoint for step {step} in {checkpoint.checkpoint_dir(workdir)}"
    )
  return path


def placement_for(model_cfg, boxed, tensor, dtype, devices, shard_big):
  """The Placement for these flags, or None (f32 on the default device, exactly as stored):
  sharded when `tensor` or `dtype` is given, or with `shard_big` for a model over ~1B params."""
  n_params = placement_lib.count_params(nn.unbox(boxed))
  big = shard_big and n_params > placement_lib.BF16_ABOVE_PARAMS
  if tensor is None and dtype is None and not big:
    return None
  return placement_lib.Placement.build(
    model_cfg, tensor=tensor or 1, devices=devices, dtype=dtype, n_params=n_params
  )


def load_trained(
  workdir: str,
  step: int | None = None,
  *,
  tensor: int | None = None,
  dtype: str | None = None,
  devices=None,
  shard_big: bool = False,
) -> Trained:
  """`tensor`/`dtype` None: f32 params on the default device, exactly as stored (export). Else,
  or with `shard_big` (generate, evaluate) for a model over ~1B params: sharded over `devices`
  (default all) as fsdp x tensor and cast to `dtype` (default bf16 above ~1B params, else f32)."""
  step_dir = step_dir_of(workdir, step)
  meta = read_meta(step_dir)
  config = config_of(meta)
  model_cfg, vocab = model_of(config)
  vocab.check_fingerprint(meta["vocab_fingerprint"], f"{step_dir}/meta")
  # Given no step, restore from the workdir so an unreadable newest checkpoint falls back.
  boxed = boxed_abstract_params(model_cfg)
  placement = placement_for(model_cfg, boxed, tensor, dtype, devices, shard_big)
  target = placement.abstract_params(boxed) if placement else nn.unbox(boxed)
  params, restored_dir = checkpoint_params.restore_params(
    step_dir if step is not None else workdir, target
  )
  if paths.absolute(restored_dir) != paths.absolute(step_dir):
    meta = read_meta(restored_dir)
    config = config_of(meta)
    if model_of(config) != (model_cfg, vocab):
      raise ValueError(
        f"{step_dir} is unreadable and the previous checkpoint {restored_dir} is "
        "another model; pass a step"
      )
  step_value = int(meta.get("step", paths.basename(restored_dir)))
  if placement is None:
    return Trained(params, model_cfg, vocab, config, step_value, restored_dir)
  # Restored as stored (f32, so the digest check holds), cast on device shard by shard.
  return Trained(
    placement.cast(params), placement.model_cfg, vocab, config, step_value, restored_dir, placement
  )


def load_hf_model(
  model_dir: str,
  *,
  tensor: int | None = None,
  dtype: str | None = None,
  devices=None,
  shard_big: bool = True,
) -> Trained:
  """A released HF model directory (local or gs://) → Trained, step 0, `step_dir` = the directory.
  Its vocab layout comes from config.json's MIO keys (or an export's mio_vocab.json), checked
  against the tokenizer files beside it; a plain text Llama has none and is refused."""
  try:
    vocab = release_vocab.load_vocab(model_dir)
  except ValueError as e:  # bad MIO keys or added tokens: the message names the file and key
    raise UserError(str(e)) from None
  if vocab is None:
    raise UserError(
      f"{paths.join(model_dir, 'config.json')}: no MIO vocab keys (text_vocab_size, ...) and no "
      f"{hf_vocab.VOCAB_FILE}: a text-only model has no multimodal vocab to generate with"
    )
  hf_cfg, tied = hf.load_hf_config(model_dir)
  if hf_cfg.vocab_size not in (vocab.size, vocab.padded_size):
    raise UserError(
      f"{paths.join(model_dir, 'config.json')}: vocab_size {hf_cfg.vocab_size} is neither the "
      f"{vocab.layout_name} layout's {vocab.size} ids nor its {vocab.padded_size} padded rows"
    )
  model_cfg = hf_cfg.replace(vocab_size=vocab.padded_size)
  boxed = boxed_abstract_params(model_cfg)
  placement = placement_for(model_cfg, boxed, tensor, dtype, devices, shard_big)
  # Read straight into the inference dtype: a 7B model never exists in f32 on the host.
  read_dtype = placement.model_cfg.param_dtype if placement else "float32"
  params = hf.load_hf_params(model_dir, hf_cfg, tied, read_dtype)
  params = hf_vocab.pad_rows(params, vocab.padded_size)
  config = {"model": None, "hf_model": model_dir, "stage": None}
  if placement is None:
    return Trained(params, model_cfg, vocab, config, 0, model_dir)
  target = placement.abstract_params(boxed)
  params = jax.tree.map(lambda a, t: jax.device_put(np.asarray(a), t.sharding), params, target)
  return Trained(
    placement.cast(params), placement.model_cfg, vocab, config, 0, model_dir, placement
  )
