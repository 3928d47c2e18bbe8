"""Checkpoint cost of a ~100M-parameter TrainState: `python -m benchmarks.checkpoint`.

Uses mio_jax.checkpoint.manager exactly as training does (`make_manager`, `save`, `restore_latest`)
on the
`small` model (MIO vocabulary, ~102M params; params + 2 AdamW moments ≈ 1.2 GB f32) and measures:
  save     seconds until `save` returns (device→host copy; training blocks this long) and until
           the async write has finished; MB/s of the state bytes over the total
  restore  seconds for `restore_latest` onto the step's shardings (the files are in the page
           cache right after the save, so this is a hot-cache figure)
  overlap  mean train-step time while an async save is in flight vs without one (target ≤ 1.1×),
           over `--repeats` saves, and the training time lost per save (against a blocking
           save's save_total_s). `--compress` measures zstd-compressed arrays instead,
           `--writer_nice=0` a writer at the training threads' priority. On a CPU
           host the step and the writer share the cores; on accelerators the step does not.
           `--writer_core` models an accelerator host on a CPU: the step is pinned to one core
           and the writer's threads to the others, so the two share only memory bandwidth.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import jax
import numpy as np


def state_bytes(state) -> int:
  return int(sum(np.dtype(x.dtype).itemsize * x.size for x in jax.tree.leaves(state)))


def split_cores(writer_core: bool):
  """-> (cpus for the step, cpus for the writer); both empty unless `writer_core`."""
  if not writer_core:
    return set(), set()
  cpus = sorted(os.sched_getaffinity(0))
  if len(cpus) < 2:
    raise SystemExit("--writer_core needs at least 2 CPU cores")
  return {cpus[0]}, set(cpus[1:])


def pin_writer(writer_cpus: set) -> None:
  if not writer_cpus:
    return
  from mio_jax.checkpoint import writer

  for tid in writer.writer_threads():
    try:
      os.sched_setaffinity(tid, writer_cpus)
    except OSError:  # the thread ended meanwhile
      pass


def timed_steps(s, state, batch, n: int):
  """-> (state, [seconds per step]) with a host sync after every step."""
  times = []
  for _ in range(n):
    t = time.perf_counter()
    state, metrics = s.step_fn(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  return state, times


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="small")
  parser.add_argument("--seq_len", type=int, default=128)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--steps", type=int, default=3, help="baseline steps before and after")
  parser.add_argument("--repeats", type=int, default=3, help="saves measured while training")
  parser.add_argument("--compress", action="store_true", help="zstd-compressed checkpoint arrays")
  parser.add_argument("--writer_nice", type=int, default=19, help="0: writer at normal priority")
  parser.add_argument(
    "--writer_core", action="store_true", help="step on one core, writer threads on the other cores"
  )
  parser.add_argument("--workdir", default="", help="default: a fresh temporary directory")
  args = parser.parse_args()
  step_cpus, writer_cpus = split_cores(args.writer_core)
  if step_cpus:
    os.sched_setaffinity(0, step_cpus)  # before jax starts its threads: they inherit it

  from mio_jax.checkpoint import digest, writer
  from mio_jax.checkpoint import manager as ckpt
  from mio_jax.config import get_base_config
  from mio_jax.model.transformer import Transformer
  from mio_jax.parallel import sharding as shd
  from mio_jax.train import loop
  from mio_jax.train import state as state_lib

  config = get_base_config()
  config.model, config.seq_len, config.global_batch = args.model, args.seq_len, args.batch
  s = loop.setup(config, jax.devices()[:1])
  state = state_lib.init_state(Transformer(s.model_cfg), s.tx, 0, s.shardings, s.mesh, s.rules)
  data = loop.make_data_iterator(config, s.vocab)
  batch = shd.global_batch_arrays(next(data), s.batch_sharding, config.global_batch)
  state, _ = timed_steps(s, state, batch, 2)  # compile + warm up

  workdir = args.workdir or tempfile.mkdtemp(prefix="mio_ckpt_bench_")
  manager = ckpt.make_manager(workdir, save_every=1, keep=2, compress=args.compress)
  meta = {"vocab_fingerprint": s.vocab.fingerprint(), "step": 0}
  nbytes = state_bytes(state)

  # Save: blocking part (device → host) and the whole async write.
  t0 = time.perf_counter()
  ckpt.save(manager, 1, state, None, meta, force=True)
  blocking = time.perf_counter() - t0
  manager.wait_until_finished()
  save_total = time.perf_counter() - t0
  disk = subprocess.run(["du", "-sb", ckpt.checkpoint_dir(workdir)], capture_output=True, text=True)
  disk_bytes = int(disk.stdout.split()[0]) if disk.returncode == 0 else None

  # Steps while a save of the same size is in flight, between baseline steps before and after
  # (a neighbour's load that changes during the run then hits the baseline too); repeated.
  before, during, after, first_steps, blocked, in_flight = [], [], [], [], [], 0
  for r in range(args.repeats):
    state, t = timed_steps(s, state, batch, args.steps)
    before += t
    t0 = time.perf_counter()
    ckpt.save(manager, 2 + r, state, None, meta, force=True)
    blocked.append(time.perf_counter() - t0)
    steps_this_save = 0
    while not steps_this_save or (manager.is_saving_in_progress() and steps_this_save < 50):
      writer.keep_writer_in_background(manager, args.writer_nice)  # as the training loop does
      pin_writer(writer_cpus)
      state, t = timed_steps(s, state, batch, 1)
      during += t
      steps_this_save += 1
    first_steps.append(during[-steps_this_save])
    in_flight += steps_this_save
    manager.wait_until_finished()
  state, after = timed_steps(s, state, batch, args.steps)
  base = before + after
  manager.close()

  # Restore with a fresh manager, as a restarted job would.
  abstract = state_lib.abstract_state(Transformer(s.model_cfg), s.tx, s.shardings)
  manager = ckpt.make_manager(workdir, save_every=1, keep=2, compress=args.compress)
  t0 = time.perf_counter()
  restored = ckpt.restore_latest(manager, abstract, None, s.vocab.fingerprint()).state
  jax.block_until_ready(restored)
  restore_s = time.perf_counter() - t0
  manager.close()

  # Integrity: the array digest computed at every save and again at every restore (both are
  # included in the figures above); measured alone here, warm.
  digest.state_digest(restored)
  t0 = time.perf_counter()
  digest.state_digest(restored)
  digest_s = time.perf_counter() - t0
  if not args.workdir:
    shutil.rmtree(workdir, ignore_errors=True)

  mb = nbytes / 1e6
  base_mean, during_mean = float(np.mean(base)), float(np.mean(during))
  slower_steps_s = (float(np.sum(during)) - in_flight * base_mean) / args.repeats  # per save
  print(
    json.dumps(
      {
        "benchmark": "checkpoint",
        "model": args.model,
        "params": s.model_cfg.num_params(),
        "state_mb": round(mb, 1),
        "disk_mb": round(disk_bytes / 1e6, 1) if disk_bytes else None,
        "save_blocking_s": round(blocking, 3),
        "save_total_s": round(save_total, 3),
        "save_mb_per_s": round(mb / save_total, 1),
        "restore_s": round(restore_s, 3),
        "restore_mb_per_s": round(mb / restore_s, 1),
        "step_s": round(base_mean, 4),
        "step_during_save_s": round(during_mean, 4),
        "step_s_before": round(float(np.mean(before)), 4),
        "step_s_after": round(float(np.mean(after)), 4),
        "steps_during_save": in_flight,
        "step_slowdown": round(during_mean / base_mean, 3),
        # The first step after `save` waits for donated buffers the writer still reads (CPU only:
        # on accelerators the device→host copy ends inside save's blocking part).
        "first_step_after_save_s": round(float(np.mean(first_steps)), 4),
        # Training time lost per async save (blocking part + slower steps), against a blocking
        # save's save_total_s.
        "async_overhead_s": round(slower_steps_s, 3),
        "train_time_lost_per_save_s": round(float(np.mean(blocked)) + slower_steps_s, 3),
        # One pass over the state for the digests that catch flipped bits (at save and restore).
        "digest_s": round(digest_s, 3),
        "digest_mb_per_s": round(mb / digest_s, 1),
        "digest_share_of_save": round(digest_s / save_total, 3),
        "digest_share_of_restore": round(digest_s / restore_s, 3),
        "compress": args.compress,
        "writer_nice": args.writer_nice,
        "writer_core": args.writer_core,
        "saves_measured": args.repeats,
        "seq_len": args.seq_len,
        "batch": args.batch,
        "cpus": os.cpu_count(),
      }
    )
  )


if __name__ == "__main__":
  main()
