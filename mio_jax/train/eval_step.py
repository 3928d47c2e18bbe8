"""Evaluation during training: validation loss (per modality) every `eval_every` steps.

The loss is the train step's own (`step.loss_sums`, same metrics code) without gradients, jitted
once, over the first `eval_steps` batches of every source's validation split (source dir +
`data.eval_suffix`, e.g. demo_data/image_text_val), read in one interleaved pass so that each
batch holds every source. The batches are the same at every evaluation (read once, kept on the
host), so successive values are comparable; training state and data order are untouched.
"""

from __future__ import annotations

import json
import logging
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from mio_jax.config import with_mixture
from mio_jax.data.pipeline import make_eval_iterator
from mio_jax.io import paths
from mio_jax.parallel import sharding as shd
from mio_jax.train import metrics as metrics_lib
from mio_jax.train import step as step_lib

PREFIX = "eval/"


def eval_config(config):
  """`config` with every data source (data.mixture's too) replaced by its validation split."""
  c = with_mixture(config).copy_and_resolve_references()
  suffix = str(c.data.get("eval_suffix", "_val"))
  with c.unlocked():
    c.data.sources = {k: str(v) + suffix for k, v in dict(c.data.sources).items()}
  return c


def make_eval_fn(s):
  """-> eval(params, global batch) -> metric sums (replicated, on device). `s` is loop.Setup."""
  cfg = step_lib.step_config(s.config)

  def sums_fn(params, batch):
    if cfg.micro_batches == 1:
      return step_lib.loss_sums(params, batch, s.model_cfg, s.vocab, cfg)[1]
    # The train step's micro-batch split bounds activation memory here too.
    micro = step_lib._split_micro(batch, cfg.micro_batches, s.mesh)  # pylint: disable=protected-access

    def body(acc, b):
      out = step_lib.loss_sums(params, b, s.model_cfg, s.vocab, cfg)[1]
      return jax.tree.map(jnp.add, acc, out), None

    first = jax.tree.map(lambda x: x[0], micro)
    shape = jax.eval_shape(lambda: step_lib.loss_sums(params, first, s.model_cfg, s.vocab, cfg)[1])
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shape)
    return jax.lax.scan(body, zeros, micro)[0]

  batch_sharding = {k: s.batch_sharding for k in step_lib.BATCH_KEYS}
  jitted = jax.jit(
    sums_fn, in_shardings=(s.shardings.params, batch_sharding), out_shardings=shd.replicated(s.mesh)
  )

  def run(params, batch):
    with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
      return jitted(params, batch)

  return run


class Evaluator:
  """`maybe_run(step, state, writer, metrics_path)` after the train step `step` (1-based);
  `history` holds every evaluation's metrics with its 'step'."""

  def __init__(self, config, s, is_lead: bool, iterator_fn=None):
    if int(config.eval_every) < 0 or int(config.eval_steps) < 1:
      raise ValueError(
        f"eval_every must be >= 0 and eval_steps >= 1, got {config.eval_every} "
        f"and {config.eval_steps}"
      )
    self.every, self.steps = int(config.eval_every), int(config.eval_steps)
    self.config, self.s, self.is_lead = config, s, is_lead
    self.iterator_fn = iterator_fn or _validation_iterator
    self.fn, self.batches, self.history = None, None, []

  def due(self, step: int) -> bool:
    return self.every > 0 and step % self.every == 0

  def host_batches(self) -> list:
    """This process's rows of the first `eval_steps` validation batches (read once)."""
    if self.batches is None:
      it = self.iterator_fn(eval_config(self.config), self.s.vocab)
      self.batches = [b for _, b in zip(range(self.steps), it)]
      if not self.batches:
        raise ValueError(
          f"validation sources {dict(eval_config(self.config).data.sources)} hold no batch"
        )
    return self.batches

  def evaluate(self, params) -> dict:
    """-> {'eval/loss', 'eval/loss/<modality>', ...}: host floats over all eval batches."""
    if self.fn is None:
      self.fn = make_eval_fn(self.s)
    total = None
    for local in self.host_batches():
      batch = shd.global_batch_arrays(local, self.s.batch_sharding, self.config.global_batch)
      sums = self.fn(params, batch)
      total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    out = jax.device_get(metrics_lib.finalize(total))
    return {PREFIX + k: float(v) for k, v in out.items()}

  def maybe_run(self, step: int, state, writer, metrics_path: str) -> float:
    """Evaluates when due; -> seconds spent (the loop keeps them out of its step timings)."""
    if not self.due(step):
      return 0.0
    t0 = time.perf_counter()
    m = self.evaluate(state.params)
    writer.write_scalars(step, m)
    mods = " ".join(
      f"{n}={m[f'{PREFIX}loss/{n}']:.3f}"
      for n in metrics_lib.MODALITIES
      if m[f"{PREFIX}tokens/{n}"] > 0
    )
    logging.info(
      "eval at step %d: loss %.4f [%s] acc %.3f",
      step,
      m[PREFIX + "loss"],
      mods,
      m[PREFIX + "accuracy"],
    )
    if self.is_lead:  # its own line: training lines keep their keys
      paths.append_text(metrics_path, json.dumps({"step": step, **m}) + "\n")
    self.history.append({"step": step, **m})
    return time.perf_counter() - t0


def _validation_iterator(config, vocab):
  return make_eval_iterator(config, vocab, interleave=True)


def make_evaluator(config, s, is_lead: bool) -> Evaluator | None:
  """None when config.eval_every is 0 (off), no evaluation falls within total_steps (short runs
  of a demo config on other data need no validation split), or the data is synthetic."""
  every = int(config.get("eval_every", 0) or 0)
  if not every or every > int(config.total_steps):
    return None
  if config.data.kind != "shards":
    logging.warning(
      "eval_every=%s ignored: data.kind=%r has no validation split",
      config.eval_every,
      config.data.kind,
    )
    return None
  evaluator = Evaluator(config, s, is_lead)
  try:  # read now: corrupt validation data fails at the start, not hours into the run
    evaluator.host_batches()
  except FileNotFoundError as e:  # e.g. a demo config on data without _val splits: train anyway
    logging.warning(
      "evaluation during training is off (eval_every=%d): no validation split: %s", every, e
    )
    return None
  return evaluator
