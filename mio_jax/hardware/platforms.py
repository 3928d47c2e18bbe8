"""Which JAX backends a command line starts.

With libtpu installed (the `tpu` and `test` extras) JAX probes for a TPU on every start, and on a
machine without one libtpu prints a screen of warnings first. A host with no accelerator device
files runs on the CPU without the probe; JAX_PLATFORMS, when set, always decides.
"""

from __future__ import annotations

import glob
import os

import jax

# TPU VMs (v4/v5e: /dev/accel*, v5p/v6e: /dev/vfio/N), NVIDIA and ROCm GPUs.
ACCELERATOR_DEVICE_FILES = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*", "/dev/kfd")


def cpu_only_without_accelerators() -> bool:
  """Restrict JAX to the CPU when nothing else can be there → whether it did. Call before
  anything touches a backend."""
  if os.environ.get("JAX_PLATFORMS") or any(glob.glob(p) for p in ACCELERATOR_DEVICE_FILES):
    return False
  jax.config.update("jax_platforms", "cpu")
  return True
