"""CLI: `python -m mio_jax.main --config=configs/stage1.py[:demo|:mio-7b] --workdir=DIR
[--config.KEY=VALUE ...]`.

Multi-process: pass `--coordinator_address=HOST:PORT --num_processes=N --process_id=I`, or
`--distributed` to let `jax.distributed.initialize()` discover them (Cloud TPU, SLURM, GKE).
"""

from __future__ import annotations

import json
import sys

import jax
from absl import app, flags, logging

from mio_jax.cli import entry
from mio_jax.hardware import host_memory, platforms
from mio_jax.parallel import preemption

FLAGS = flags.FLAGS
# config_flags applies `--config.KEY=VALUE` overrides here, while the flag is defined: an unknown
# KEY is one line, exit 2 (entry.define_config_file)
entry.define_config_file(
  "config", entry.default_config("stage1.py"), "Training config file[:variant].", lock_config=True
)
flags.DEFINE_string(
  "workdir",
  None,
  "Where TensorBoard events and checkpoints go; rerunning with "
  "the same workdir resumes. Default: workdir/stage<N> of the config's stage.",
)
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detection.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")


def initialize_distributed(
  coordinator_address=None, num_processes=None, process_id=None, auto=False
) -> None:
  """Join a multi-process job (must run before anything touches a JAX backend)."""
  if coordinator_address:
    # Cross-process collectives on CPU need gloo; the option does not affect TPU/GPU backends.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
      coordinator_address, num_processes=num_processes, process_id=process_id
    )
  elif auto:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cpu_only = platforms.cpu_only_without_accelerators()  # no TPU probe noise on CPU hosts
  multi_process = bool(FLAGS.coordinator_address or FLAGS.distributed)
  if not multi_process:  # as early as possible: a SIGTERM from here on saves and exits 0
    preemption.install_sigterm_handler()
  initialize_distributed(
    FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed
  )
  logging.info(
    "process %d/%d, %d devices (%s)",
    jax.process_index(),
    jax.process_count(),
    jax.device_count(),
    jax.devices()[0].device_kind,
  )
  if cpu_only:
    logging.info("no accelerator device files: running on the CPU (JAX_PLATFORMS overrides)")
  logging.info("%s", host_memory.status())
  # Imported after jax.distributed.initialize, which must come before anything touches a backend.
  from mio_jax.scale import plan_apply
  from mio_jax.train.divergence import NonFiniteError
  from mio_jax.train.loop import train

  workdir = FLAGS.workdir or f"workdir/stage{FLAGS.config.stage}"
  # plan=auto: the stored (or searched) plan for these devices, applied before the loop starts;
  # the loop itself takes a resolved config.
  config = plan_apply.resolve(FLAGS.config)
  try:  # user errors (bad paths, a checkpoint that does not fit): one line, exit 2 (entry.py)
    run = train(config, workdir)
  except NonFiniteError as e:
    print(f"mio_jax.main: training diverged: {e}", file=sys.stderr)
    sys.exit(1)
  logging.info("final metrics: %s", json.dumps(run.metrics, sort_keys=True))


def cli():
  """Console-script entry point (pyproject.toml); same flags as `python -m`."""
  host_memory.reexec_with_huge_pages()
  entry.run(main)
