"""Model FLOPs utilisation: analytic train FLOPs/token x tokens/s / peak FLOPs of the devices.

Accelerators use the vendor's dense bf16 peak per chip; CPUs their ISA's FMA peak at the dtype
(mio_jax/hardware/cpu_peak.py: cores x clock x AVX-512/AVX2 f32 or AMX/avx512_bf16 bf16 FLOPs per
cycle), or, where the ISA cannot be read, a measured matmul rate (logged).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from mio_jax.hardware import cpu_peak, tpu_specs

# GPUs the chip table (mio_jax/hardware/tpu_specs.py, which the roofline also uses; it holds the
# H100)
# lacks: (substring of jax `device_kind`, dense bf16 FLOP/s per device).
GPU_PEAK_BF16_FLOPS = (
  ("H200", 989e12),  # SXM dense (no sparsity)
  ("A100", 312e12),
)


def _tpu_peaks() -> tuple:
  """(device_kind, peak) per chip of the table, longest kinds first so 'TPU v5 lite' wins over
  'TPU v5'."""
  chips = sorted(tpu_specs.CHIPS.values(), key=lambda c: -len(c.device_kind))
  return tuple((c.device_kind, c.peak_bf16_flops) for c in chips)


PEAK_BF16_FLOPS = _tpu_peaks() + GPU_PEAK_BF16_FLOPS


def spec_peak_flops(device_kind: str) -> float | None:
  for key, flops in PEAK_BF16_FLOPS:
    if key.lower() in device_kind.lower():
      return flops
  return None


@functools.cache
def measured_cpu_peak_flops(dtype: str = "float32", n: int = 1024, repeats: int = 5) -> float:
  """Best-of-`repeats` FLOP/s of an n x n matmul on the first CPU device (cached).

  All virtual CPU devices share the same cores, so this is the peak of the whole host."""
  dev = jax.local_devices(backend="cpu")[0]
  a = jax.device_put(jnp.ones((n, n), dtype), dev)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2.0 * n**3 / best


def cpu_peak_flops(dtype: str = "float32") -> float:
  """This host's hardware peak at `dtype`; XLA's measured matmul rate where lscpu is missing."""
  cpu_peak.log_peak_once(dtype)
  found = cpu_peak.hardware_peak_flops(dtype)
  return found[0] if found else measured_cpu_peak_flops(dtype)


def total_peak_flops(dtype: str = "float32") -> float:
  """Peak FLOP/s of all devices in the job (for CPU: the host's per process x processes)."""
  dev = jax.devices()[0]
  if dev.platform == "cpu":
    return cpu_peak_flops(dtype) * jax.process_count()
  per_device = spec_peak_flops(dev.device_kind)
  if per_device is None:
    return float("nan")  # unknown accelerator: report MFU as NaN rather than a wrong number
  return per_device * jax.device_count()


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float) -> float:
  return flops_per_token * tokens_per_s / peak_flops
