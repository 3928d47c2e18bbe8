"""Device mesh and the ONE table that maps logical axis names to mesh axes.

Mesh axes (outer → inner):
    dcn     data parallel across slices (DCN); 1 on a single slice / host
    data    pure data parallel inside a slice (params replicated)
    fsdp    data parallel with params and optimizer state sharded over `embed` (ZeRO-3 style)
    tensor  Megatron-style model parallel over heads / mlp / vocab

The model names axes (`mio_jax/model/*`); only this file decides where they live. Rules are tried
in order and a mesh axis is used at most once per array, so for activations `batch` takes
('dcn', 'data', 'fsdp') first and `embed` stays unsharded, while for params (no `batch` axis)
`embed` is sharded over 'fsdp'.

What must divide what (checked by `validate`, before anything is compiled):
    devices          == dcn * data * fsdp * tensor
    global_batch      % (micro_batches * dcn * data * fsdp) == 0, and % process_count == 0
    n_heads, ffn_dim, vocab_size % tensor == 0        (jit needs even shards of params)
    d_model           % fsdp == 0
    n_kv_heads        % tensor: if it does not divide, K/V weights are replicated over `tensor`
                      instead (GQA models often have fewer KV heads than tensor shards; costs
                      memory, not correctness).
"""

from __future__ import annotations

import dataclasses
import logging

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("dcn", "data", "fsdp", "tensor")
BATCH_AXES = ("dcn", "data", "fsdp")  # every axis that splits the batch

# logical name → mesh axis (or tuple, or None). Order matters: earlier rules claim axes first.
LOGICAL_AXIS_RULES = (
  ("batch", BATCH_AXES),
  ("length", None),
  ("vocab", "tensor"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),
  ("mlp", "tensor"),
  ("embed", "fsdp"),
  ("head_dim", None),
  ("layers", None),
)


class ShardingConfigError(ValueError):
  """A mesh/batch/model combination that cannot run; raised before any compilation."""


@dataclasses.dataclass(frozen=True)
class MeshShape:
  dcn: int
  data: int
  fsdp: int
  tensor: int

  @property
  def sizes(self) -> tuple[int, int, int, int]:
    return (self.dcn, self.data, self.fsdp, self.tensor)

  @property
  def data_parallel(self) -> int:
    return self.dcn * self.data * self.fsdp


def resolve_mesh_shape(mesh_cfg, n_devices: int) -> MeshShape:
  """Config sizes with at most one `-1`, which takes whatever devices remain. Every axis is a
  declared config key (mio_jax/config.py holds the defaults)."""
  sizes = {a: int(getattr(mesh_cfg, a)) for a in MESH_AXES}
  fill = [a for a, s in sizes.items() if s == -1]
  bad = [f"mesh.{a}={s}" for a, s in sizes.items() if s == 0 or s < -1]
  if bad:
    raise ShardingConfigError(f"mesh sizes must be positive or -1, got {', '.join(bad)}")
  if len(fill) > 1:
    raise ShardingConfigError(f"only one mesh axis may be -1 (fill), got {fill}")
  known = int(np.prod([s for s in sizes.values() if s != -1]))
  if fill:
    if n_devices % known:
      raise ShardingConfigError(
        f"mesh.{fill[0]}=-1 cannot fill {n_devices} devices: the other axes multiply to "
        f"{known}, which does not divide {n_devices}"
      )
    sizes[fill[0]] = n_devices // known
  return MeshShape(**sizes)


def validate(
  shape: MeshShape,
  n_devices: int,
  *,
  global_batch: int,
  micro_batches: int,
  model_cfg,
  process_count: int = 1,
) -> None:
  """Raise one ShardingConfigError listing every problem (one sentence each)."""
  problems = []
  if int(np.prod(shape.sizes)) != n_devices:
    problems.append(
      f"mesh dcn*data*fsdp*tensor = {'*'.join(map(str, shape.sizes))} = "
      f"{int(np.prod(shape.sizes))} but there are {n_devices} devices"
    )
  if micro_batches < 1:
    problems.append(f"micro_batches must be >= 1, got {micro_batches}")
  elif global_batch % (micro_batches * shape.data_parallel):
    problems.append(
      f"global_batch {global_batch} is not divisible by micro_batches {micro_batches} "
      f"x data-parallel size {shape.data_parallel} (dcn*data*fsdp)"
    )
  if global_batch % process_count:
    problems.append(
      f"global_batch {global_batch} is not divisible by the {process_count} processes"
    )
  t = shape.tensor
  for name in ("n_heads", "ffn_dim", "vocab_size"):
    value = getattr(model_cfg, name)
    if value % t:
      problems.append(f"model {name} {value} is not divisible by mesh.tensor {t}")
  if model_cfg.d_model % shape.fsdp:
    problems.append(f"model d_model {model_cfg.d_model} is not divisible by mesh.fsdp {shape.fsdp}")
  if problems:
    raise ShardingConfigError("cannot shard this run: " + "; ".join(problems))


def rules_for(model_cfg, shape: MeshShape) -> tuple:
  """The table, with K/V heads replicated when they cannot be split over `tensor` (see top)."""
  if model_cfg.n_kv_heads % shape.tensor == 0:
    return LOGICAL_AXIS_RULES
  logging.warning(
    "n_kv_heads %d not divisible by mesh.tensor %d: replicating K/V weights",
    model_cfg.n_kv_heads,
    shape.tensor,
  )
  return tuple((k, None if k == "kv_heads" else v) for k, v in LOGICAL_AXIS_RULES)


def _granules(devices) -> int:
  """Independent ICI domains: TPU slices, else processes (hosts)."""
  key = "slice_index" if hasattr(devices[0], "slice_index") else "process_index"
  return len({getattr(d, key) for d in devices})


def build_mesh(shape: MeshShape, devices=None) -> Mesh:
  """A Mesh over `devices` (default: all). ICI axes are laid out by `mesh_utils` for locality;
  when the devices really form `dcn` slices/hosts, `dcn` spans them (`create_hybrid_device_mesh`).
  Otherwise (one host emulating dcn > 1, as in tests) it is just the outermost axis."""
  devices = list(jax.devices() if devices is None else devices)
  if shape.dcn > 1 and _granules(devices) == shape.dcn:
    ici, dcn = (1, shape.data, shape.fsdp, shape.tensor), (shape.dcn, 1, 1, 1)
    grid = mesh_utils.create_hybrid_device_mesh(
      ici,
      dcn,
      devices,
      process_is_granule=not hasattr(devices[0], "slice_index"),
      allow_split_physical_axes=True,
    )
  else:
    try:
      # Splitting a physical torus axis across two mesh axes (e.g. fsdp x tensor on v5e) is fine.
      grid = mesh_utils.create_device_mesh(shape.sizes, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):  # odd device subsets (tests)
      grid = np.asarray(devices).reshape(shape.sizes)
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_to_sharding(logical_specs, mesh: Mesh, rules):
  """Tree of logical PartitionSpecs (e.g. from `nn.get_partition_spec`) → NamedShardings."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def param_shardings(abstract_boxed_params, mesh: Mesh, rules):
  """NamedShardings for a params tree still boxed in `nn.LogicallyPartitioned` (eval_shape of
  init)."""
  return logical_to_sharding(nn.get_partition_spec(abstract_boxed_params), mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """[batch, length] arrays: batch split over every data-parallel axis, replicated over tensor."""
  return NamedSharding(mesh, P(BATCH_AXES, None))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def process_rows(sharding: NamedSharding, global_batch: int, seq_len: int) -> tuple[int, int]:
  """The contiguous block of batch rows this process's devices hold.

  The data pipeline hands process i rows [i*B/P, (i+1)*B/P); fail loudly if the mesh disagrees
  (e.g. a `tensor` axis spanning processes) instead of silently feeding the wrong rows."""
  index_map = sharding.addressable_devices_indices_map((global_batch, seq_len))
  starts = {idx[0].start or 0 for idx in index_map.values()}
  stops = {global_batch if idx[0].stop is None else idx[0].stop for idx in index_map.values()}
  lo, hi = min(starts), max(stops)
  per_process = global_batch // jax.process_count()
  expect = (jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
  if (lo, hi) != expect:
    raise ShardingConfigError(
      f"process {jax.process_index()} holds batch rows [{lo}, {hi}) but the data pipeline "
      f"feeds rows [{expect[0]}, {expect[1]}); keep `tensor` inside a process"
    )
  return lo, hi


def global_batch_arrays(local_batch: dict, sharding: NamedSharding, global_batch: int) -> dict:
  """Per-process numpy slices → global jax Arrays (one host→device copy per local device)."""
  out = {}
  for key, value in local_batch.items():
    shape = (global_batch,) + tuple(value.shape[1:])
    out[key] = jax.make_array_from_process_local_data(sharding, value, shape)
  return out
