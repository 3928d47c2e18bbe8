"""The training loop: `train(config, workdir)`.

The state comes from the workdir's newest checkpoint, else a fresh init (optionally with params
from `init_from`; see train/resume.py); the loop runs from `int(state.step)`, saves through
mio_jax/checkpoint/manager.py every `checkpoint_every` steps, at the end and on SIGTERM/preemption,
and
`on_step` hooks see every step.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import time

import jax
from clu import periodic_actions

from mio_jax.checkpoint import manager as ckpt
from mio_jax.config import model_overrides, with_mixture
from mio_jax.data.pipeline import make_train_iterator, record_counts
from mio_jax.data.synthetic_task import SyntheticIterator
from mio_jax.io import paths
from mio_jax.model.architecture import ModelConfig
from mio_jax.model.sizes import get_model
from mio_jax.model.transformer import Transformer
from mio_jax.parallel import sharding as shd
from mio_jax.parallel.preemption import PreemptionWatcher
from mio_jax.tokens.vocab import Vocab
from mio_jax.train import divergence, eval_step, resume, writers
from mio_jax.train import mfu as mfu_lib
from mio_jax.train import optimizer as opt_lib
from mio_jax.train import state as state_lib
from mio_jax.train import step as step_lib
from mio_jax.train import workdir_claim as workdir_lock


@dataclasses.dataclass
class Setup:
  """Everything derived from the config before any array exists."""

  config: object
  model_cfg: ModelConfig
  vocab: Vocab
  mesh: jax.sharding.Mesh
  rules: tuple
  tx: object
  schedule: object
  shardings: state_lib.TrainState
  batch_sharding: jax.sharding.NamedSharding
  step_fn: object


def setup(config, devices=None) -> Setup:
  """Validate the config against the devices (raises before anything compiles), build the
  mesh, optimizer, shardings and the jitted step."""
  if config.get("plan"):  # training never compiles plan candidates: the caller resolves "auto"
    raise ValueError(
      f"config.plan={config.plan!r} reached the training loop unresolved: apply it first with "
      "mio_jax.scale.plan_apply.resolve(config, devices) (the mio-train command line does)"
    )
  model_cfg, vocab = get_model(config.model, **model_overrides(config))
  return setup_model(config, model_cfg, vocab, devices)


def setup_model(config, model_cfg: ModelConfig, vocab: Vocab, devices=None) -> Setup:
  """`setup` for a model that is not in the registry (benchmarks)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = shd.resolve_mesh_shape(config.mesh, len(devices))
  shd.validate(
    shape,
    len(devices),
    global_batch=config.global_batch,
    micro_batches=config.micro_batches,
    model_cfg=model_cfg,
    process_count=jax.process_count(),
  )
  if config.loss_chunk > 0 and config.seq_len % config.loss_chunk:
    raise ValueError(f"loss_chunk {config.loss_chunk} must divide seq_len {config.seq_len}")
  mesh = shd.build_mesh(shape, devices)
  rules = shd.rules_for(model_cfg, shape)
  tx, schedule = opt_lib.make_optimizer(config, config.total_steps)
  shardings = state_lib.state_shardings(Transformer(model_cfg), tx, mesh, rules)
  step_fn = step_lib.make_train_step(
    model_cfg, vocab, tx, schedule, step_lib.step_config(config), mesh, rules, shardings
  )
  return Setup(
    config,
    model_cfg,
    vocab,
    mesh,
    rules,
    tx,
    schedule,
    shardings,
    shd.batch_sharding(mesh),
    step_fn,
  )


def _shard_iterator(config, vocab, process_index, process_count):
  if config.data.build_demo_corpus and demo_corpus_wanted(config.data_dir):
    _build_demo_corpus(config.data.corpus_builder, config.data_dir, config.seed)
  return make_train_iterator(config, vocab, process_index, process_count)


# Left in data_dir while the demo corpus is being built: an interrupted build is ours to redo.
DEMO_BUILDING_MARKER = ".mio_jax_demo_corpus_building"


def demo_corpus_wanted(data_dir: str) -> bool:
  """Whether a demo config may build its corpus into `data_dir`: only where the directory is
  missing or empty (or holds our own interrupted build), never beside datasets the user owns. A
  directory with other contents is read as it is (a missing dataset is then MissingDatasetError
  naming it)."""
  if paths.exists(paths.join(data_dir, "corpus.json")):
    return False
  if not paths.exists(data_dir):
    return True
  names = paths.listdir(data_dir) if paths.isdir(data_dir) else [paths.basename(data_dir)]
  if not names or DEMO_BUILDING_MARKER in names:
    return True
  logging.info(
    "data_dir %s holds %d entries and no demo corpus.json: reading it as it is (the demo corpus "
    "is built only into a missing or empty directory)",
    data_dir,
    len(names),
  )
  return False


def _build_demo_corpus(builder: str, data_dir: str, seed: int) -> None:
  """First use of a demo config: build the corpus (≈ 1 minute), once, on process 0, with the
  module the config names (data.corpus_builder): the core never imports data_pipelines itself."""
  if not builder:
    raise ValueError(
      "config.data.build_demo_corpus is set but config.data.corpus_builder names "
      "no module (e.g. data_pipelines.demo_corpus)"
    )
  if jax.process_index() == 0:
    logging.info("demo corpus missing at %s: building it with %s", data_dir, builder)
    marker = paths.join(data_dir, DEMO_BUILDING_MARKER)
    paths.write_text(marker, "")
    importlib.import_module(builder).build(data_dir, seed=seed)
    paths.path(marker).unlink()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("demo_corpus_built")


def init_state(s: Setup) -> state_lib.TrainState:
  """A fresh random state in its sharded layout (train() resumes or hands off first)."""
  return state_lib.init_state(
    Transformer(s.model_cfg), s.tx, s.config.seed, s.shardings, s.mesh, s.rules
  )


def _synthetic_iterator(config, vocab, process_index, process_count):
  return SyntheticIterator(
    config.seed, config.global_batch, config.seq_len, vocab, process_index, process_count
  )


DATA_SOURCES = {"synthetic": _synthetic_iterator, "shards": _shard_iterator}


def make_data_iterator(config, vocab: Vocab, process_index=None, process_count=None):
  """Per-process numpy batches [global_batch / process_count, seq_len]. (Checkpoint seam.)"""
  kind = config.data.kind
  if kind not in DATA_SOURCES:
    raise ValueError(f"unknown data.kind {kind!r}; choose one of {sorted(DATA_SOURCES)}")
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  return DATA_SOURCES[kind](config, vocab, pi, pc)


def _parse_profile(spec) -> tuple[int, int] | None:
  """ "a,b" (or "a") -> (a, b): trace steps a..b, counted from 1."""
  if not spec:
    return None
  parts = [int(x) for x in str(spec).split(",")]
  if len(parts) not in (1, 2) or parts[0] < 1 or parts[-1] < parts[0]:
    raise ValueError(f"profile_steps must be 'a,b' with 1 <= a <= b, got {spec!r}")
  return parts[0], parts[-1]


@dataclasses.dataclass
class TrainRun:
  state: state_lib.TrainState
  metrics: dict  # last logged metrics (host floats)
  history: list  # every logged metrics dict, with 'step'
  preempted: bool = False  # stopped early on SIGTERM/preemption, after saving


def _log_line(step: int, total: int, m: dict) -> str:
  mods = " ".join(
    f"{k.split('/')[1]}={m[k]:.3f}"
    for k in sorted(m)
    if k.startswith("loss/") and m.get("tokens/" + k.split("/")[1], 0) > 0
  )
  eta = (total - step) * m["perf/step_time_s"]
  return (
    f"{progress_bar(step, total)} loss {m['loss']:.4f} [{mods}] acc {m['accuracy']:.3f} "
    f"gnorm {m['grad_norm']:.3f} lr {m['lr']:.2e} tok/s {m['perf/tokens_per_s']:.0f} "
    f"mfu {m['perf/mfu']:.3f} data_wait {m['perf/data_wait_s']:.3f}s eta {_hms(eta)}"
  )


def progress_bar(step: int, total: int, width: int = 20) -> str:
  """'step 30/200 [###.................]  15%' — one line per log step, never redrawn (logs
  stay readable in files and on pods)."""
  done = int(width * step / max(total, 1))
  return (
    f"step {step}/{total} [{'#' * done}{'.' * (width - done)}] {100 * step // max(total, 1):3d}%"
  )


def _hms(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train(config, workdir: str, devices=None, on_step=None) -> TrainRun:
  """Train from the current state to `config.total_steps`; log every `log_every` steps.

  `workdir` may be a gs:// URL. It is checked for writing before anything compiles.
  """
  config = with_mixture(config)
  profile = _parse_profile(config.profile_steps)
  workdir = paths.absolute(workdir)
  paths.check_writable(workdir)
  # One run per workdir: claimed before anything is written there, released however it ends.
  claim = workdir_lock.acquire(workdir)
  try:
    # The config against the saved run before anything is built: a changed model or dataset
    # stops here in one line rather than deep in the data pipeline.
    resume.check_workdir_config(workdir, config)
    s = setup(config, devices)
    data = make_data_iterator(config, s.vocab)
    manager = ckpt.make_manager(
      workdir,
      config.checkpoint_every,
      config.keep_checkpoints,
      config.keep_period,
      config.async_checkpoint,
      config.checkpoint_compression,
    )
    watch = ckpt.SaveWatch(manager)  # a failed save stops the run in one line (exit 3)
    try:
      return _run(config, workdir, s, data, manager, profile, on_step, claim, watch)
    finally:
      # Async writes must land before the process may exit, also when the run stops on an
      # error: the last good checkpoint is then complete.
      watch.close()
  finally:
    claim.release()


def _run(config, workdir, s: Setup, data, manager, profile, on_step, claim, watch) -> TrainRun:
  state, how, lineage, restored = resume.restore_or_init(s, manager, data, init_state, config)
  changes = list((restored or {}).get("changes", []))
  if restored is not None:
    new_changes = resume.changed_settings(restored, config)
    resume.log_changes(new_changes)
    changes += new_changes
  meta = {
    "config": config.to_json_best_effort(),
    "vocab_fingerprint": s.vocab.fingerprint(),
    "model": config.model,
    "stage": config.stage,
    "lineage": lineage,
    "resume": resume.resume_signature(config),
    "settings": resume.changeable_settings(config),
    "changes": changes,  # may-change keys changed at a resume: [{step, key, from, to}]
  }
  preemption = PreemptionWatcher()
  rows = shd.process_rows(s.batch_sharding, config.global_batch, config.seq_len)
  logging.info("mesh %s; this process feeds batch rows %s", dict(s.mesh.shape), rows)

  is_lead = jax.process_index() == 0
  writer = writers.make_writer(workdir, is_lead)
  writer.write_hparams({k: v for k, v in config.to_dict().items() if not isinstance(v, dict)})
  progress = periodic_actions.ReportProgress(num_train_steps=config.total_steps, writer=writer)
  flops_per_token = s.model_cfg.flops_per_token(config.seq_len)
  peak = mfu_lib.total_peak_flops(s.model_cfg.dtype)
  tokens_per_step = config.global_batch * config.seq_len
  metrics_path = paths.join(workdir, "metrics.jsonl")

  first = int(state.step)  # the one host sync before the loop (resume starts here)
  logging.info("%s state at step %d (lineage %s)", how, first, lineage)
  saved_at = first if how == "resumed" else None
  watch.last_good = saved_at
  # The allowance is per run: updates skipped before a restart count against it.
  guard = divergence.DivergenceGuard(
    config.skip_nonfinite_updates, saved_at, int((restored or {}).get("skipped_updates", 0))
  )
  stopped = preemption.should_stop(first)  # a SIGTERM before the loop started
  history, last, data_wait, trace_dir = [], {}, 0.0, None
  t_log, steps_since_log = time.perf_counter(), 0
  evaluator = eval_step.make_evaluator(config, s, is_lead)  # None: eval_every=0
  for step in range(first, config.total_steps):
    if stopped:
      break
    if profile and step + 1 == profile[0] and is_lead:  # steps count from 1, as logged
      trace_dir = _start_trace(workdir)
    t0 = time.perf_counter()
    local = next(data)
    data_wait += time.perf_counter() - t0
    batch = shd.global_batch_arrays(local, s.batch_sharding, config.global_batch)
    state, metrics = s.step_fn(state, batch)
    guard.record(step + 1, metrics)
    claim.check()  # a run whose claim was taken over stops before it writes again
    steps_since_log += 1
    stopped = preemption.should_stop(step + 1)  # every step, on every process
    log_due = (step + 1) % config.log_every == 0 or step + 1 == config.total_steps
    if log_due or stopped or manager.should_save(step + 1):
      guard.check()  # never save a run that diverged
    if ckpt.save(
      manager,
      step + 1,
      state,
      data,
      {**meta, "step": step + 1, "skipped_updates": guard.skipped},
      force=stopped,
      writer_nice=config.checkpoint_writer_nice,
      watch=watch,
    ):
      saved_at = step + 1
      guard.saved(step + 1)
    if on_step is not None:
      on_step(step + 1, state)
    if trace_dir and (step + 1 == profile[1] or step + 1 == config.total_steps):
      _stop_trace(state, trace_dir, workdir)
      trace_dir = None
    progress(step + 1)
    if log_due:
      m = {k: float(v) for k, v in jax.device_get(metrics).items()}  # host sync, by design
      dt = time.perf_counter() - t_log
      m["perf/tokens_per_s"] = tokens_per_step * steps_since_log / dt
      m["perf/step_time_s"] = dt / steps_since_log
      m["perf/data_wait_s"] = data_wait / steps_since_log
      m["perf/mfu"] = mfu_lib.mfu(flops_per_token, m["perf/tokens_per_s"], peak)
      m["skipped_updates"] = float(guard.skipped)
      m.update(_data_counters(config, data))
      writer.write_scalars(step + 1, m)
      logging.info(_log_line(step + 1, config.total_steps, m))
      history.append({"step": step + 1, **m})
      if is_lead:  # exact floats, one JSON line per logged step (a resumed run appends again)
        paths.append_text(metrics_path, json.dumps({"step": step + 1, **m}) + "\n")
      last = m
      t_log, steps_since_log, data_wait = time.perf_counter(), 0, 0.0
    if evaluator is not None and not stopped:  # validation loss (eval/ keys); not in perf/
      t_log += evaluator.maybe_run(step + 1, state, writer, metrics_path)
  if stopped:
    logging.warning(
      "stopping at step %d on a preemption request (checkpoint saved)", int(state.step)
    )
  end = int(state.step)
  if saved_at != end and end > 0:
    guard.check()
    ckpt.save(
      manager,
      end,
      state,
      data,
      {**meta, "step": end, "skipped_updates": guard.skipped},
      force=True,
      watch=watch,
    )
  watch.check(end, wait=True)  # the last save's failure is this run's error, in one line
  writer.close()
  return TrainRun(state=state, metrics=last, history=history, preempted=stopped)


def _data_counters(config, data) -> dict:
  """What became of the records read so far, cumulative: skipped as corrupt (data.skip_corrupt),
  dropped as overlong (data.overlong='drop'), split (data.overlong='split'), and too short to
  train on (under 2 tokens). They live in the data iterator's saved state, so they carry on
  across restarts."""
  if config.data.kind != "shards":
    return {}

  return {f"data/{name}": float(n) for name, n in record_counts(data).items()}


def _start_trace(workdir: str) -> str:
  """jax.profiler writes local files: a URL workdir gets them uploaded at the end."""
  target = paths.join(workdir, "profile")
  local = writers.staging_dir(target) if paths.is_url(workdir) else target
  jax.profiler.start_trace(local)
  return local


def _stop_trace(state, local: str, workdir: str) -> None:
  jax.block_until_ready(state)
  jax.profiler.stop_trace()
  if paths.is_url(workdir):
    paths.copy_tree(local, paths.join(workdir, "profile"))
