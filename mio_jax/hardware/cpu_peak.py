"""The host CPU's hardware peak FLOP/s from its ISA (lscpu): what MFU on a CPU is measured
against. Cores × clock × FMA FLOPs per cycle for the dtype: AVX-512 / AVX2 FMA for f32, AMX or
avx512_bf16 for bf16 where the CPU has them. Not XLA's own matmul rate: a backend that misses
AMX must show a low MFU, not a high one."""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess

from absl import logging


def lscpu() -> dict:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
  except (OSError, subprocess.SubprocessError):
    return {}
  return dict(
    (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in out.splitlines())
  )


def cpu_model() -> str:
  """lscpu's "Model name" (recorded with every benchmark result: targets hold per host kind)."""
  return lscpu().get("Model name") or platform.processor()


def cpu_mhz(info: dict) -> float | None:
  """Max clock if lscpu knows it (bare metal), else the clock /proc/cpuinfo reports (VMs)."""
  for key in ("CPU max MHz", "CPU MHz"):
    if info.get(key):
      return float(info[key])
  try:
    with open("/proc/cpuinfo") as f:
      return float(re.search(r"cpu MHz\s*:\s*([0-9.]+)", f.read()).group(1))
  except (OSError, AttributeError):
    return None


def fma_flops_per_cycle(info: dict) -> tuple[int, int, str]:
  """(f32, bf16) FLOP per cycle per core from the ISA flags, and how it was derived.

  FMA = 2 FLOPs per lane; two FMA pipes on every core listed here. AVX-512 on AMD Zen 4
  (family 25) runs as two 256-bit halves, so it has the AVX2 width; Zen 5 (26) and Intel run
  512 bits. bf16: AMX tiles (Intel Sapphire Rapids+) 1,024 bf16 FMAs per cycle; avx512_bf16's
  VDPBF16PS does twice the f32 lanes."""
  flags_ = set(info.get("Flags", "").split())
  amd = "AMD" in info.get("Vendor ID", "") + info.get("Model name", "")
  family = int(info.get("CPU family", "0") or 0)
  if "avx512f" in flags_ and not (amd and family < 26):
    f32, how = 2 * 2 * 16, "avx512f: 2 FMA pipes x 16 f32 lanes"
  elif "avx512f" in flags_ or ("avx2" in flags_ and "fma" in flags_):
    f32, how = (
      2 * 2 * 8,
      "2 FMA pipes x 8 f32 lanes (AVX2 width"
      + ("; AVX-512 double-pumped on Zen 4)" if "avx512f" in flags_ else ")"),
    )
  else:
    f32, how = 2 * 4, "SSE: 1 pipe x 4 lanes x 2 (mul+add)"
  if "amx_bf16" in flags_:
    bf16 = 2 * 1024
    how += "; bf16: AMX 1,024 FMAs/cycle"
  elif "avx512_bf16" in flags_:
    bf16 = 2 * f32
    how += "; bf16: avx512_bf16 (2x f32)"
  else:
    bf16 = f32
  return f32, bf16, how


def usable_cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@functools.cache
def hardware_peak_flops(dtype: str = "float32") -> tuple[float, str] | None:
  """(FLOP/s of the cores this process may run on, how it was derived); None where the clock or
  the ISA cannot be read (not Linux)."""
  info = lscpu()
  mhz = cpu_mhz(info)
  if not mhz or not info.get("Flags"):
    return None
  f32, bf16, how = fma_flops_per_cycle(info)
  per_cycle = bf16 if dtype == "bfloat16" else f32
  cores = usable_cores()
  flops = cores * mhz * 1e6 * per_cycle
  return flops, f"{cores} cores x {mhz:.0f} MHz x {per_cycle} FLOP/cycle ({how})"


@functools.cache
def log_peak_once(dtype: str) -> None:
  found = hardware_peak_flops(dtype)
  if found:
    logging.info("MFU against the CPU's %s peak %.0f GFLOP/s: %s", dtype, found[0] / 1e9, found[1])
  else:
    logging.warning(
      "no CPU clock/ISA flags (lscpu, /proc/cpuinfo): MFU is against XLA's measured matmul rate"
    )
