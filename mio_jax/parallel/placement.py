"""Where and in what dtype inference params live: sharded over a mesh with the training rules.

A 7B model does not fit one accelerator in f32, so generation and evaluation restore the params
straight onto an fsdp x tensor mesh (`sharding.rules_for`, the table training uses), then cast them
to bf16 on device. Only the batch rule differs from training: decode batches are small (often 1), so
they stay replicated instead of being split over the data axes.

    run = trained.load_trained(workdir, tensor=2, dtype="bfloat16")  # fsdp = devices / 2
    generate(run.params, run.model_cfg, ..., placement=run.placement)  # runs in placement.context()
"""

from __future__ import annotations

import contextlib
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mio_jax.errors import UserError
from mio_jax.model.architecture import ModelConfig
from mio_jax.parallel import sharding

DTYPES = ("bfloat16", "float32")
BF16_ABOVE_PARAMS = 1_000_000_000  # "big" models default to bf16; tiny ones keep exact f32


def default_dtype(n_params: int) -> str:
  return "bfloat16" if n_params > BF16_ABOVE_PARAMS else "float32"


def count_params(abstract_params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract_params)))


def with_dtype(model_cfg: ModelConfig, dtype: str) -> ModelConfig:
  if dtype not in DTYPES:
    raise UserError(f"--dtype={dtype}: choose one of {DTYPES}")
  return dataclasses.replace(model_cfg, dtype=dtype, param_dtype=dtype)


@dataclasses.dataclass(frozen=True)
class Placement:
  mesh: jax.sharding.Mesh
  rules: tuple
  model_cfg: ModelConfig  # with the inference dtype

  @classmethod
  def build(
    cls,
    model_cfg: ModelConfig,
    *,
    tensor: int = 1,
    devices=None,
    dtype: str | None = None,
    n_params: int | None = None,
  ) -> Placement:
    devices = list(jax.devices() if devices is None else devices)
    if tensor < 1 or len(devices) % tensor:
      raise UserError(f"--tensor={tensor} does not divide the {len(devices)} devices")
    shape = sharding.MeshShape(1, 1, len(devices) // tensor, tensor)
    problems = [
      f"{name} {getattr(model_cfg, name)} % tensor {tensor}"
      for name in ("n_heads", "ffn_dim", "vocab_size")
      if getattr(model_cfg, name) % tensor
    ]
    if model_cfg.d_model % shape.fsdp:
      problems.append(f"d_model {model_cfg.d_model} % fsdp {shape.fsdp}")
    if problems:
      raise UserError("cannot shard the model for generation: " + "; ".join(problems))
    rules = tuple((k, None if k == "batch" else v) for k, v in sharding.rules_for(model_cfg, shape))
    dtype = dtype or default_dtype(n_params or 0)
    return cls(sharding.build_mesh(shape, devices), rules, with_dtype(model_cfg, dtype))

  def abstract_params(self, boxed_abstract):
    """ShapeDtypeStructs (stored f32) carrying each param's NamedSharding: the restore target."""
    shardings = sharding.param_shardings(boxed_abstract, self.mesh, self.rules)
    return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      nn.unbox(boxed_abstract),
      shardings,
    )

  def cast(self, params):
    """Restored params → the inference dtype, keeping every shard where it is."""
    dtype = jnp.dtype(self.model_cfg.param_dtype)
    out = jax.tree.map(lambda x: x.sharding, params)
    return jax.jit(lambda p: jax.tree.map(lambda x: x.astype(dtype), p), out_shardings=out)(params)

  @contextlib.contextmanager
  def context(self):
    """The mesh and logical rules the model's sharding constraints resolve against."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield
