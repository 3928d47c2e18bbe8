"""CLI: `python -m mio_jax.main --config=configs/stage1.py[:demo|:mio-7b] --workdir=DIR
[--config.KEY=VALUE ...]`.

Multi-process: pass `--coordinator_address=HOST:PORT --num_processes=N --process_id=I`, or
`--distributed` to let `jax.distributed.initialize()` discover them (Cloud TPU, SLURM, GKE).
"""

from __future__ import annotations

import json
import sys

if __name__ == "__main__":  # before JAX loads its allocator (mio_jax/host_memory.py)
  from mio_jax import host_memory

  host_memory.reexec_with_huge_pages()

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from mio_jax import entry, host_memory  # noqa: E402

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
  from mio_jax import platforms

  cpu_only = platforms.cpu_only_without_accelerators()  # no TPU probe noise on CPU hosts
  multi_process = bool(FLAGS.coordinator_address or FLAGS.distributed)
  if not multi_process:  # as early as possible: a SIGTERM from here on saves and exits 0
    from mio_jax import preemption

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
  # After distributed init: these imports may touch backends.
  from mio_jax.train.divergence import NonFiniteError
  from mio_jax.train.loop import train

  workdir = FLAGS.workdir or f"workdir/stage{FLAGS.config.stage}"
  try:  # user errors (bad paths, a checkpoint that does not fit): one line, exit 2 (entry.py)
    run = train(FLAGS.config, workdir)
  except NonFiniteError as e:
    print(f"mio_jax.main: training diverged: {e}", file=sys.stderr)
    sys.exit(1)
  logging.info("final metrics: %s", json.dumps(run.metrics, sort_keys=True))


def cli():
  """Console-script entry point (pyproject.toml); same flags as `python -m`."""
  host_memory.reexec_with_huge_pages()
  entry.run(main)


if __name__ == "__main__":
  cli()
