"""TrainState and its sharded initialisation.

The state is a plain pytree (step, params, opt_state) of unboxed arrays. Shardings come from the
model's logical annotations: `eval_shape` of `model.init` keeps the `nn.LogicallyPartitioned`
boxes, `sharding.param_shardings` maps them through the rules table, and optimizer moments inherit
the sharding of the param they track (`optax.tree_map_params`).

Checkpoint seam: a restore replaces `init_state` with "restore onto `state_shardings(...)`".
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mio_jax.parallel import sharding as shd

_INIT_SHAPE = (1, 2)  # params do not depend on sequence length; keep the init forward tiny


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def _boxed_params(model: nn.Module, rng):
  tokens = jnp.zeros(_INIT_SHAPE, jnp.int32)
  return model.init(rng, tokens)["params"]


def _init(model: nn.Module, tx: optax.GradientTransformation, rng) -> TrainState:
  params = nn.unbox(_boxed_params(model, rng))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def state_shardings(model: nn.Module, tx: optax.GradientTransformation, mesh, rules) -> TrainState:
  """A TrainState whose leaves are NamedShardings (no arrays are created)."""
  boxed = jax.eval_shape(functools.partial(_boxed_params, model), jax.random.key(0))
  params = shd.param_shardings(boxed, mesh, rules)
  abstract_opt = jax.eval_shape(tx.init, nn.unbox(boxed))
  rep = shd.replicated(mesh)
  opt = optax.tree_map_params(
    tx, lambda _, s: s, abstract_opt, params, transform_non_params=lambda _: rep
  )
  return TrainState(step=rep, params=params, opt_state=opt)


def abstract_state(model: nn.Module, tx: optax.GradientTransformation, shardings: TrainState):
  """ShapeDtypeStructs carrying shardings (for checkpoint restore / AOT compile)."""
  shapes = jax.eval_shape(functools.partial(_init, model, tx), jax.random.key(0))
  return jax.tree.map(
    lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
  )


def init_state(
  model: nn.Module, tx: optax.GradientTransformation, seed: int, shardings: TrainState, mesh, rules
) -> TrainState:
  """Fresh state, created directly in its sharded layout (never materialised on one device)."""
  init = jax.jit(functools.partial(_init, model, tx), out_shardings=shardings)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    return init(jax.random.key(seed))
