"""Per-step cost of the multi-host preemption check (`PreemptionWatcher.should_stop`).

Starts a real 2-process JAX job on this host (gloo CPU collectives), calls the check N times on
each process, and compares it with one tiny cross-process all-gather (what an agreement by
collective would cost per step). Prints one JSON line.

  python -m benchmarks.preemption_check [--calls=200000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

from mio_jax.hardware.cpu_peak import cpu_model


def _worker(process_id: int, port: int, calls: int) -> dict:
  import jax
  import numpy as np

  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
  from jax.experimental import multihost_utils

  from mio_jax.parallel.preemption import PreemptionWatcher

  watcher = PreemptionWatcher()
  multihost_utils.sync_global_devices("start")
  t0 = time.perf_counter()
  for step in range(1, calls + 1):
    assert not watcher.should_stop(step)
  check_us = (time.perf_counter() - t0) / calls * 1e6
  gathers = 200
  t0 = time.perf_counter()
  for _ in range(gathers):
    multihost_utils.process_allgather(np.zeros((1,), np.int32))
  gather_us = (time.perf_counter() - t0) / gathers * 1e6
  return {"process": process_id, "check_us": check_us, "allgather_us": gather_us}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--calls", type=int, default=200_000)
  parser.add_argument("--worker", type=int, default=-1, help=argparse.SUPPRESS)
  parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker >= 0:
    print(json.dumps(_worker(args.worker, args.port, args.calls)))
    return
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "benchmarks.preemption_check",
        f"--worker={i}",
        f"--port={port}",
        f"--calls={args.calls}",
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL,
      text=True,
    )
    for i in range(2)
  ]
  results = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
  print(
    json.dumps(
      {
        "benchmark": "preemption_check",
        "processes": 2,
        "calls": args.calls,
        "check_us_per_step": round(max(r["check_us"] for r in results), 3),
        "allgather_us_per_step": round(max(r["allgather_us"] for r in results), 1),
        "cpu": cpu_model(),
      }
    )
  )


if __name__ == "__main__":
  main()
