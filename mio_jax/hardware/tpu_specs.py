"""Per-chip facts of Cloud TPU generations and the slice names users type (`v5p-128`, `v5e-256`);
also the one GPU the analytic plans price (H100, `h100-8`) and this host's CPU (`cpu_chip`).

Numbers are the public per-chip figures from the Cloud TPU system-architecture pages (dense bf16
peak, HBM bandwidth, ICI bandwidth), except `hbm_bytes`: the HBM the TPU compiler lets a program
use (libtpu 0.0.42 reports it when a program does not fit), a little under the marketed size.
They feed the AOT fit check and its roofline estimate (mio_jax/scale/aot.py) and nothing else;
measured
MFU comes from the trainer.

Naming: v4 and v5p slices are named by TensorCores (2 per chip, fused as one "megacore" device),
so `v5p-128` is 64 chips; v5e and v6e slices are named by chips (1 core each), `v5e-256` = 256.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class ChipSpec:
  generation: str  # 'v5p'
  device_kind: str  # what jax reports as Device.device_kind
  hbm_bytes: int  # usable by one program, per libtpu (marketed: 32, 16, 95, 32 GiB)
  peak_bf16_flops: float  # dense, per chip
  hbm_bytes_per_s: float
  ici_bytes_per_s: float  # per chip, all links, one direction
  cores_per_chip: int  # TensorCores a slice name counts per chip
  torus_dims: int  # 3 (v4, v5p) or 2 (v5e, v6e); 1 for GPUs (NVLink, no torus)
  chips_per_host: int  # on multi-host slices
  chip_config: str  # `chip_config_name` for get_topology_desc: one device per chip


# Sources (dense bf16 peak, HBM size and bandwidth, ICI per chip):
#   v4:  https://cloud.google.com/tpu/docs/v4   (275 TFLOP/s, 32 GiB, 1,228 GB/s)
#   v5e: https://cloud.google.com/tpu/docs/v5e  (197 TFLOP/s, 16 GB, 819 GB/s, ICI 1,600 Gbit/s)
#   v5p: https://cloud.google.com/tpu/docs/v5p  (459 TFLOP/s, 95 GB, 2,765 GB/s, ICI 4,800 Gbit/s)
#   v6e: https://cloud.google.com/tpu/docs/v6e  (918 TFLOP/s, 32 GB, 1,640 GB/s, ICI 3,584 Gbit/s)
#   H100 SXM5: https://www.nvidia.com/en-us/data-center/h100/ (datasheet: bf16 1,979 TFLOP/s
#   with 2:4 sparsity = 989 dense, 80 GB HBM3 at 3.35 TB/s, NVLink 900 GB/s both directions =
#   450 GB/s each way). GPU entries feed the analytic roofline only (no AOT target from a CPU
#   host); hbm_bytes = 92 % of 80 GB, the memory fraction benchmarks/gpu.sh gives XLA.
CHIPS = {
  "v4": ChipSpec("v4", "TPU v4", int(30.75 * GIB), 275e12, 1228e9, 300e9, 2, 3, 4, "megacore"),
  "v5e": ChipSpec("v5e", "TPU v5 lite", int(15.75 * GIB), 197e12, 819e9, 200e9, 1, 2, 4, "default"),
  "v5p": ChipSpec("v5p", "TPU v5", int(95.74 * GIB), 459e12, 2765e9, 600e9, 2, 3, 4, "default"),
  "v6e": ChipSpec(
    "v6e", "TPU v6 lite", int(31.25 * GIB), 918e12, 1640e9, 448e9, 1, 2, 4, "default"
  ),
  "h100": ChipSpec("h100", "H100", int(0.92 * 80e9), 989e12, 3350e9, 450e9, 1, 1, 8, ""),
}
ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6litepod": "v6e", "trillium": "v6e"}

# Chip grids of the standard slice shapes (chips → topology), as Cloud TPU lists them.
GRIDS_2D = {
  1: (1, 1),
  4: (2, 2),
  8: (2, 4),
  16: (4, 4),
  32: (4, 8),
  64: (8, 8),
  128: (8, 16),
  256: (16, 16),
}
GRIDS_3D = {
  4: (2, 2, 1),
  8: (2, 2, 2),
  16: (2, 2, 4),
  32: (2, 4, 4),
  64: (4, 4, 4),
  128: (4, 4, 8),
  256: (4, 8, 8),
  512: (8, 8, 8),
  1024: (8, 8, 16),
  2048: (8, 16, 16),
  3072: (8, 16, 24),
  4096: (16, 16, 16),
  6144: (16, 16, 24),
  8960: (16, 20, 28),
}


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str  # as typed, e.g. 'v5p-128'
  chip: ChipSpec
  grid: tuple  # chips along each torus axis, e.g. (4, 4, 4)
  num_slices: int = 1

  @property
  def chips_per_slice(self) -> int:
    return math.prod(self.grid)

  @property
  def num_chips(self) -> int:
    return self.chips_per_slice * self.num_slices

  @property
  def topology_name(self) -> str:
    """The string libtpu's topology API takes, e.g. 'v5p:4x4x4'."""
    return f"{self.chip.generation}:{'x'.join(map(str, self.grid))}"

  @property
  def chips_per_host_bounds(self) -> tuple:
    """Chips per host along each axis: single-host slices hold all their chips (up to 8 on
    v5e/v6e), multi-host slices 4 chips (2x2x1) per host."""
    n = self.chips_per_slice
    if len(self.grid) == 1:  # GPUs: chips_per_host of them per host
      return (min(n, self.chip.chips_per_host), 1, 1)
    if len(self.grid) == 2 and n <= 8:
      return self.grid + (1,)
    if len(self.grid) == 2:
      return (2, 2, 1)
    return (min(2, self.grid[0]), min(2, self.grid[1]), 1)

  @property
  def num_hosts(self) -> int:
    return self.num_chips // math.prod(self.chips_per_host_bounds)

  @property
  def accelerator_type(self) -> str:
    """The `--accelerator-type` gcloud takes (v5e is spelled v5litepod there)."""
    gen = {"v5e": "v5litepod"}.get(self.chip.generation, self.chip.generation)
    return f"{gen}-{self.chips_per_slice * self.chip.cores_per_chip}"


def cpu_chip(device_kind: str, peak_flops: float, memory_bytes_per_s: float) -> ChipSpec:
  """This host's CPU as a "chip" for the roofline (benchmarks/roofline_check.py): peak = the ISA's
  FMA peak of the compute dtype (the field name says bf16; CPU shapes run f32), bandwidth
  measured; memory = host RAM. One device: no ICI (infinitely fast: no time)."""
  ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  return ChipSpec("cpu", device_kind, ram, peak_flops, memory_bytes_per_s, math.inf, 1, 1, 1, "")


def chip_spec(generation: str) -> ChipSpec:
  gen = ALIASES.get(generation.lower(), generation.lower())
  if gen not in CHIPS:
    raise ValueError(f"unknown TPU generation {generation!r}; known: {sorted(CHIPS)}")
  return CHIPS[gen]


def parse_topology(name: str, num_slices: int = 1) -> Topology:
  """'v5p-128' (slice name) or 'v5p:4x4x4' (explicit grid) → Topology. Clear errors otherwise."""
  if num_slices < 1:
    raise ValueError(f"num_slices must be >= 1, got {num_slices}")
  m = re.fullmatch(r"([a-z0-9]+?)[-:]([0-9x]+)", name.strip().lower())
  if not m:
    raise ValueError(f"cannot parse TPU topology {name!r}; use e.g. v5p-128, v5e-256 or v5p:4x4x4")
  chip = chip_spec(m.group(1))
  size = m.group(2)
  if "x" in size:
    grid = tuple(int(s) for s in size.split("x"))
    if len(grid) != chip.torus_dims:
      raise ValueError(f"{chip.generation} topologies have {chip.torus_dims} axes, got {name!r}")
  else:
    cores = int(size)
    if cores % chip.cores_per_chip:
      raise ValueError(
        f"{name!r}: {chip.generation} slice sizes count {chip.cores_per_chip} "
        f"cores per chip, so the size must be a multiple of {chip.cores_per_chip}"
      )
    chips = cores // chip.cores_per_chip
    if chip.torus_dims == 1:  # GPUs: 'h100-8' = 8 GPUs, NVLink-connected hosts of 8
      return Topology(name=name, chip=chip, grid=(chips,), num_slices=num_slices)
    grids = GRIDS_3D if chip.torus_dims == 3 else GRIDS_2D
    if chips not in grids:
      sizes = sorted(n * chip.cores_per_chip for n in grids)
      raise ValueError(
        f"{name!r} is not a standard {chip.generation} slice; sizes: {sizes} "
        f"(or give the grid, e.g. {chip.generation}:{'x'.join(['4'] * chip.torus_dims)})"
      )
    grid = grids[chips]
  return Topology(name=name, chip=chip, grid=grid, num_slices=num_slices)
