"""CLI: `python -m mio_jax.main --config=configs/stage1.py[:demo|:mio-7b] --workdir=DIR
[--config.KEY=VALUE ...]`.

Multi-process: pass `--coordinator_address=HOST:PORT --num_processes=N --process_id=I`, or
`--distributed` to let `jax.distributed.initialize()` discover them (Cloud TPU, SLURM, GKE).
"""

from __future__ import annotations

import json
import logging as py_logging

import jax
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/stage1.py", "Training config file[:variant].",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where TensorBoard events and checkpoints go; rerunning with "
                    "the same workdir resumes. Default: workdir/stage<N> of the config's stage.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detection.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None,
                           auto=False) -> None:
  """Join a multi-process job (must run before anything touches a JAX backend)."""
  if coordinator_address:
    # Cross-process collectives on CPU need gloo; the option does not affect TPU/GPU backends.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  elif auto:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                         FLAGS.distributed)
  py_logging.getLogger("absl").setLevel(py_logging.INFO)
  logging.info("process %d/%d, %d devices (%s)", jax.process_index(), jax.process_count(),
               jax.device_count(), jax.devices()[0].device_kind)
  from mio_jax.train.loop import train  # after distributed init: imports may touch backends
  workdir = FLAGS.workdir or f"workdir/stage{FLAGS.config.get('stage', 1)}"
  run = train(FLAGS.config, workdir)
  logging.info("final metrics: %s", json.dumps(run.metrics, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
