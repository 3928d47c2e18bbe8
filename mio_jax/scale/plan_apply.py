"""`--config.plan=auto`: run the stored plan (mio_jax/scale/plan.py) for the devices at hand.

`resolve(config, devices)` (called by `train.loop.setup`) finds the plan stored for the config
and the current topology, searches first when none is stored (process 0 only; the others get
the choice by broadcast), and returns the config with the plan's tunables set and `plan=""`.
Explicit settings win: a tunable that differs from its `get_base_config()` default is kept
(`plan.fixed_tunables`). The topology is the TPU slice the devices form (searched on abstract
devices of that slice, as `mio_jax.aot` does) or, on CPU, the local devices themselves.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import numpy as np

from mio_jax.hardware.tpu_specs import CHIPS, ChipSpec, Topology, parse_topology
from mio_jax.scale import aot, plan_store
from mio_jax.scale import plan as plan_lib
from mio_jax.train import mfu

PLAN_MODES = ("", "auto")
# Nominal per-host bandwidths for the CPU "topology": the roofline needs some; the plan ranks
# candidates on the same host, so their scale matters little.
CPU_MEMORY_BYTES_PER_S = 20e9


def cpu_topology(devices) -> Topology:
  """The local CPU devices as a one-axis 'slice': memory = host RAM / devices, peak = the
  measured matmul rate / devices (they share the cores)."""
  n = len(devices)
  ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  chip = ChipSpec(
    "cpu",
    devices[0].device_kind,
    ram // n,
    mfu.measured_cpu_peak_flops() / n,
    CPU_MEMORY_BYTES_PER_S / n,
    CPU_MEMORY_BYTES_PER_S / n,
    1,
    1,
    n,
    "",
  )
  return Topology(name=f"cpu-{n}", chip=chip, grid=(n,))


def device_topology(devices) -> Topology | None:
  """The slice the devices form; None where no search exists (GPU: no AOT target yet; TPU
  kinds or slice shapes mio_jax/hardware/tpu_specs.py does not know)."""
  d0 = devices[0]
  if d0.platform == "cpu":
    return cpu_topology(devices)
  if d0.platform == "tpu":
    gen = next((g for g, c in CHIPS.items() if c.device_kind == d0.device_kind), None)
    if gen is None:
      return None
    slices = len({getattr(d, "slice_index", 0) for d in devices})
    cores = len(devices) // slices * CHIPS[gen].cores_per_chip
    try:
      return parse_topology(f"{gen}-{cores}", slices)
    except ValueError:  # not a standard slice shape: nothing to key a plan on
      return None
  return None


def _search_devices(devices, topo: Topology) -> list:
  """One process compiles for all: abstract devices of the slice when the job spans processes."""
  if jax.process_count() == 1 or topo.chip.generation == "cpu":
    return list(devices)
  return aot.topology_devices(topo)


def _broadcast(chosen: dict | None) -> dict | None:
  """Process 0's choice to every process (their plan caches may differ or be empty)."""
  from jax.experimental import multihost_utils

  buf = np.zeros(1 << 16, np.uint8)
  if jax.process_index() == 0:
    data = json.dumps(chosen).encode()
    buf[: len(data)] = np.frombuffer(data, np.uint8)
  buf = np.asarray(multihost_utils.broadcast_one_to_all(buf))
  return json.loads(bytes(buf[buf != 0]).decode())


def apply(config, chosen: dict, source: str = ""):
  """The config with the chosen candidate's tunables, except the fixed (explicit) ones."""
  fixed = plan_lib.fixed_tunables(config)
  c = chosen["cand"]
  cand = plan_lib.Candidate(
    fixed.get("remat_policy", c["remat_policy"]),
    tuple(fixed.get("mesh", c["mesh"])),
    fixed.get("micro_batches", c["micro_batches"]),
    fixed.get("loss_chunk", c["loss_chunk"]),
  )
  out = cand.apply(config)
  kept = "" if not fixed else f"; explicit, kept: {fixed}"
  logging.info(
    "plan: running %s (predicted MFU %.1f%%, %.2f GiB/chip, %.0f%% headroom%s)%s",
    cand.label(),
    100 * chosen["mfu"],
    chosen["total_gib"],
    100 * chosen["headroom"],
    f", {source}" if source else "",
    kept,
  )
  return out


def resolve(
  config, devices=None, *, topo: Topology | None = None, search_missing: bool = True, **search_kw
):
  """`config.plan`: "" -> the config as is; "auto" -> the stored (or searched) plan applied."""
  mode = config.get("plan", "")
  if mode not in PLAN_MODES:
    raise ValueError(f"config.plan must be one of {PLAN_MODES}, got {mode!r}")
  if not mode:
    return config
  devices = list(jax.devices() if devices is None else devices)
  topo = topo or device_topology(devices)
  chosen, source = None, ""
  if topo is None:
    logging.warning(
      "plan=auto: no plan search for %s devices; running the config as given", devices[0].platform
    )
    return _plan_off(config)
  if jax.process_index() == 0:
    stored = plan_store.load(config, topo)
    if stored is None and search_missing:
      logging.info("plan=auto: no stored plan for %s on %s; searching", config.model, topo.name)
      stored = plan_lib.search(config, topo, _search_devices(devices, topo), **search_kw)
      stored["path"] = plan_store.save(config, topo, stored)
      logging.info("plan search:\n%s", plan_lib.format_table(stored))
    if stored is not None:
      chosen, source = stored["chosen"], stored["path"]
  if jax.process_count() > 1:
    chosen = _broadcast(chosen)
  if chosen is None:
    logging.warning(
      "plan=auto: no plan for %s on %s%s; running the config as given",
      config.model,
      topo.name,
      "" if search_missing else " stored",
    )
    return _plan_off(config)
  return apply(config, chosen, source)


def _plan_off(config):
  out = config.copy_and_resolve_references()
  with out.unlocked():
    out.plan = ""
  return out
