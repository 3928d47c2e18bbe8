"""Compile the real train step for a Cloud TPU topology on this (CPU) host: does it fit, how fast?
The command line is mio_jax/cli/aot.py:

    python -m mio_jax.aot --config=configs/stage1.py:mio-7b --topology=v5p-128 \
        [--num_slices=2] [--config.KEY=VALUE ...] [--model_override=remat_policy=dots] \
        [--json_out=FILE] [--noprobe] [--search [--search_grid=remat=none,full ...]]

libtpu (requirements-tpu.txt) describes the target chips without owning any; the step from
`mio_jax.train.loop.setup` (same mesh, logical-axis rules, shardings and donation as training) is
lowered on ShapeDtypeStructs and compiled by the TPU compiler. Prints per-chip memory against HBM,
analytic and XLA FLOPs, a roofline step time / MFU and a verdict; exits 1 when it does not fit.
`--search` compiles a grid of remat policies, mesh splits, micro-batches and LM-head chunks and
stores the best plan with 20 % headroom (mio_jax/scale/plan.py; exits 1 when none has it). The
command line applies a stored plan to a `plan=auto` config before `analyze` (never a search).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from mio_jax.hardware.tpu_specs import Topology
from mio_jax.model.transformer import Transformer
from mio_jax.scale import roofline
from mio_jax.train import loop
from mio_jax.train.state import abstract_state
from mio_jax.train.step import BATCH_KEYS

# Tell libtpu it is not on a TPU VM (no metadata-server queries, no warnings) and may coexist
# with other libtpu processes on this host (parallel tests, a trainer).
LIBTPU_ENV = {
  "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
  "TPU_SKIP_MDS_QUERY": "1",
  "TPU_WORKER_ID": "0",
  "TPU_WORKER_HOSTNAMES": "localhost",
  "TPU_HOST_BOUNDS": "1,1,1",
}


class DoesNotFit(RuntimeError):
  """The step needs more HBM per chip than the target has (message says how much and what to do)."""


def topology_devices(topo: Topology) -> list:
  """Abstract TPU devices of the target (no hardware needed; needs libtpu)."""
  saved = {k: os.environ.get(k) for k in LIBTPU_ENV}
  os.environ.update({k: v for k, v in LIBTPU_ENV.items() if saved[k] is None})
  try:
    from jax.experimental import topologies

    desc = topologies.get_topology_desc(
      platform="tpu",
      topology_name=topo.topology_name,
      chip_config_name=topo.chip.chip_config,
      chips_per_host_bounds=topo.chips_per_host_bounds,
      num_slices=topo.num_slices,
    )
  except Exception as e:  # missing libtpu surfaces as several different errors
    raise RuntimeError(
      f"cannot describe TPU topology {topo.topology_name} x{topo.num_slices}: {e}\n"
      "TPU AOT compilation needs libtpu: .venv/bin/pip install -r requirements-tpu.txt"
    ) from e
  finally:  # libtpu reads them once, at load; do not leak them into later subprocesses
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
  devices = list(desc.devices)
  if len(devices) != topo.num_chips:
    raise RuntimeError(
      f"libtpu gave {len(devices)} devices for {topo.name}, expected {topo.num_chips}"
    )
  return devices


def with_overrides(config, topo: Topology, model_overrides: dict):
  """A copy of the config for this target: dcn = number of slices, extra model overrides."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    if topo.num_slices > 1 and config.mesh.dcn == 1:
      config.mesh.dcn = topo.num_slices
    for key, value in model_overrides.items():
      config.model_overrides[key] = value
  return config


def abstract_batch(config, batch_sharding) -> dict:

  shape = (config.global_batch, config.seq_len)
  return {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=batch_sharding) for k in BATCH_KEYS}


# The two ways libtpu words an out-of-HBM compile ("G" = GiB).
_OOM_PATTERNS = (
  r"[Uu]sed (?P<total>[0-9.]+[KMGT]?) of (?P<hbm>[0-9.]+[KMGT]?) hbm",
  r"HLO temporaries \((?P<temp>[0-9.]+[KMGT]?)\) exceeds available HBM "
  r"\((?P<hbm>[0-9.]+[KMGT]?)\)",
)


def _oom_message(err: Exception) -> str | None:
  text = str(err)
  if "RESOURCE_EXHAUSTED" not in text and "out of memory" not in text.lower():
    return None
  return text.strip().splitlines()[0][:400]


def compile_step(config, devices, s=None):
  """-> (setup, compiled, seconds). Raises DoesNotFit when the TPU compiler runs out of HBM."""
  s = loop.setup(config, devices) if s is None else s
  state = abstract_state(Transformer(s.model_cfg), s.tx, s.shardings)
  batch = abstract_batch(config, s.batch_sharding)
  t0 = time.perf_counter()
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    lowered = s.step_fn.jitted.lower(state, batch)
  try:
    compiled = lowered.compile()
  except Exception as e:  # XlaRuntimeError; the TPU compiler checks HBM itself
    oom = _oom_message(e)
    if oom is None:
      raise
    raise DoesNotFit(f"the TPU compiler ran out of HBM ({oom})") from e
  return s, compiled, time.perf_counter() - t0


def memory_stats(compiled) -> dict:
  m = compiled.memory_analysis()
  return {
    "argument_bytes": m.argument_size_in_bytes,
    "output_bytes": m.output_size_in_bytes,
    "alias_bytes": m.alias_size_in_bytes,
    "temp_bytes": m.temp_size_in_bytes,
    "code_bytes": m.generated_code_size_in_bytes,
  }


def cost_stats(compiled) -> dict:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  out = {k: float(cost[k]) for k in ("flops", "bytes accessed", "optimal_seconds") if k in cost}
  if out.get("optimal_seconds", 1.0) <= 0:  # libtpu 0.0.42 reports negative times for v5e
    del out["optimal_seconds"]
  return out


def probe_cost(config, devices, n_layers: int) -> dict | None:
  """XLA cost of the whole step, extrapolated from 1- and 2-layer unrolled probes (see
  roofline.py: loop bodies are counted once). None when a probe cannot compile."""
  costs = []
  micro = config.micro_batches
  for layers in (1, 2):
    probe = config.copy_and_resolve_references()
    with probe.unlocked():
      probe.model_overrides["n_layers"] = layers
      probe.model_overrides["scan_layers"] = False
      probe.loss_chunk = 0
      probe.micro_batches = 1
      probe.global_batch = config.global_batch // micro
    try:
      costs.append(cost_stats(compile_step(probe, devices)[1]))
    except DoesNotFit:
      return None
  return roofline.extrapolate_cost(costs[0], costs[1], n_layers, micro)


def _unit_bytes(text: str) -> float:
  scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
  return float(text[:-1]) * scale[text[-1]] if text[-1] in scale else float(text)


def _oom_memory(message: str, hbm: int, state_bytes: float) -> dict:
  """Memory figures when the compiler refused the program: its temporaries (or total) from the
  message, with the analytic state (f32 params + Adam moments) standing in for arguments."""
  temp = float("nan")
  for pattern in _OOM_PATTERNS:
    m = re.search(pattern, message)
    if m and "temp" in m.groupdict():
      temp = _unit_bytes(m.group("temp"))
    elif m:
      temp = _unit_bytes(m.group("total")) - state_bytes
    if m:
      break
  stats = {
    "argument_bytes": state_bytes,
    "output_bytes": state_bytes,
    "alias_bytes": state_bytes,
    "temp_bytes": temp,
    "code_bytes": 0,
  }
  return roofline.memory_report(stats, hbm)


def analyze(config, topo: Topology, probe: bool = True) -> dict:
  """Compile for the topology and return the report; `report['fits']` says whether it fits."""
  devices = topology_devices(topo)
  t0 = time.perf_counter()
  s = loop.setup(config, devices)  # validates mesh/batch/model first, with clear errors
  cfg, mesh_sizes = s.model_cfg, dict(s.mesh.shape)
  compiled, compile_s, error = None, 0.0, None
  try:
    _, compiled, compile_s = compile_step(config, devices, s)
  except DoesNotFit as e:
    error = str(e)
  if compiled is not None:
    memory = roofline.memory_report(memory_stats(compiled), topo.chip.hbm_bytes)
    fits, line = roofline.verdict(memory)
    xla_raw = cost_stats(compiled)
  else:
    state = 12.0 * cfg.num_params() / (mesh_sizes["fsdp"] * mesh_sizes["tensor"])  # f32 p, mu, nu
    memory = _oom_memory(error, topo.chip.hbm_bytes, state)
    fits, line, xla_raw = False, f"DOES NOT FIT: {error}", {}
  xla_full = probe_cost(config, devices, cfg.n_layers) if (probe and fits) else None
  perf = roofline.roofline(
    cfg, topo, config.seq_len, config.global_batch, mesh_sizes, config.micro_batches, xla_full
  )
  report = {
    "topology": topo.name,
    "num_slices": topo.num_slices,
    "chips": topo.num_chips,
    "hosts": topo.num_hosts,
    "chip": topo.chip.generation,
    "device_kind": topo.chip.device_kind,
    "topology_name": topo.topology_name,
    "model": config.model,
    "params": cfg.num_params(),
    "remat_policy": cfg.remat_policy,
    "attention_impl": cfg.attention_impl,
    "seq_len": config.seq_len,
    "global_batch": config.global_batch,
    "micro_batches": config.micro_batches,
    "loss_chunk": config.loss_chunk,
    "mesh": mesh_sizes,
    "compile_s": compile_s,
    "memory": memory,
    "xla_cost_raw": xla_raw,
    "xla_cost_extrapolated": xla_full,
    "perf": perf,
    "fits": fits,
    "verdict": line,
    "total_s": time.perf_counter() - t0,
    "model_config": dataclasses.asdict(cfg),
  }
  if not fits:
    report["suggestions"] = roofline.suggestions(
      memory,
      cfg,
      mesh_sizes,
      config.micro_batches,
      config.global_batch,
      config.seq_len,
      config.loss_chunk,
      topo.num_chips,
    )
  return report


def check(config, topo: Topology, probe: bool = False) -> dict:
  """`analyze`, raising DoesNotFit (verdict + suggestions) when the step does not fit."""
  report = analyze(config, topo, probe)
  if not report["fits"]:
    raise DoesNotFit("\n".join([report["verdict"]] + [f"try: {t}" for t in report["suggestions"]]))
  return report
