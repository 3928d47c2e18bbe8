"""One optimizer step: micro-batch gradient accumulation, clipping, AdamW, metrics.

Accumulation is exact: each micro-batch contributes gradient and metric SUMS, and the step divides
by the global count of loss tokens once, so M x (B/M) gives the same update as 1 x B (up to float
summation order).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mio_jax.model.architecture import ModelConfig
from mio_jax.model.transformer import Transformer
from mio_jax.parallel import sharding as shd
from mio_jax.tokens.vocab import Vocab
from mio_jax.train import loss as loss_lib
from mio_jax.train import metrics as metrics_lib
from mio_jax.train.state import TrainState

BATCH_KEYS = ("tokens", "targets", "loss_mask", "segment_ids", "positions")


@dataclasses.dataclass(frozen=True)
class StepConfig:
  micro_batches: int = 1
  z_loss: float = 0.0
  loss_chunk: int = 0  # sequence positions per LM-head chunk; 0 = whole sequence
  modality_loss_weights: tuple = ()  # ((modality, weight), ...), empty = all 1


def loss_sums(params, batch: dict, model_cfg: ModelConfig, vocab: Vocab, cfg: StepConfig):
  """-> (loss_sum, metric sums) for one (micro-)batch of [b, T] arrays."""
  hidden_BxTxD = Transformer(model_cfg).apply(
    {"params": params},
    batch["tokens"],
    batch["segment_ids"],
    batch["positions"],
    return_hidden=True,
  )
  targets, mask = batch["targets"], batch["loss_mask"]
  weight = metrics_lib.token_weights(targets, mask, vocab, dict(cfg.modality_loss_weights))
  zmask = mask.astype(jnp.float32)
  lm_head = params["lm_head"].astype(model_cfg.dtype)
  loss_sum, nll, _, correct = loss_lib.fused_cross_entropy(
    hidden_BxTxD, lm_head, targets, weight, zmask, cfg.z_loss, cfg.loss_chunk
  )
  sums = metrics_lib.metric_sums(nll, correct, targets, mask, vocab)
  sums["loss_sum"] = loss_sum
  return loss_sum, sums


def _split_micro(batch: dict, m: int, mesh=None) -> dict:
  """[B, T] -> [M, B/M, T] taking every M-th row, so each micro-batch keeps rows on every
  data-parallel device (a contiguous split would put a micro-batch on a few devices only)."""

  def split(x):
    b = x.shape[0]
    x = jnp.swapaxes(x.reshape((b // m, m) + x.shape[1:]), 0, 1)
    if mesh is None:
      return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, shd.BATCH_AXES, None)))

  return jax.tree.map(split, batch)


def compute_grads(
  params, batch, model_cfg, vocab, cfg: StepConfig, mesh=None, param_shardings=None
):
  """-> (grads of the mean loss over all loss tokens of `batch`, metric sums). With
  micro_batches > 1 the batch is scanned in M slices; sums add up, then one division."""
  grad_fn = jax.grad(loss_sums, has_aux=True)
  if cfg.micro_batches == 1:
    grads, sums = grad_fn(params, batch, model_cfg, vocab, cfg)
  else:

    def body(carry, micro):
      g_acc, s_acc = carry
      g, s = grad_fn(params, micro, model_cfg, vocab, cfg)
      return (jax.tree.map(jnp.add, g_acc, g), jax.tree.map(jnp.add, s_acc, s)), None

    micro = _split_micro(batch, cfg.micro_batches, mesh)
    first = jax.tree.map(lambda x: x[0], micro)
    s_shape = jax.eval_shape(lambda: grad_fn(params, first, model_cfg, vocab, cfg)[1])
    g0 = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    if param_shardings is not None:
      g0 = jax.lax.with_sharding_constraint(g0, param_shardings)
    s0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), s_shape)
    (grads, sums), _ = jax.lax.scan(body, (g0, s0), micro)
  count = jnp.maximum(sums["tokens"], 1.0)
  grads = jax.tree.map(lambda g, p: (g / count).astype(p.dtype), grads, params)
  return grads, sums


def batch_checksum(tokens_BxT) -> jax.Array:
  """24 bits identifying the global batch's tokens and their order (exact in a f32 metric): shows
  that a resumed run, on any process count, sees the batches an uninterrupted one would."""
  b, t = tokens_BxT.shape
  index = jax.lax.broadcasted_iota(jnp.uint32, (b, t), 0) * np.uint32(t) + jax.lax.broadcasted_iota(
    jnp.uint32, (b, t), 1
  )
  words = tokens_BxT.astype(jnp.uint32) + np.uint32(1)
  h = jnp.sum(words * ((index * np.uint32(0x9E3779B1)) | np.uint32(1)), dtype=jnp.uint32)
  return ((h ^ (h >> np.uint32(16))) & np.uint32(0xFFFFFF)).astype(jnp.float32)


def make_train_step(
  model_cfg: ModelConfig,
  vocab: Vocab,
  tx: optax.GradientTransformation,
  schedule,
  cfg: StepConfig,
  mesh,
  rules,
  shardings: TrainState,
):
  """-> step(state, batch) -> (state, metrics). Jitted with explicit shardings; the state is
  donated (updated in place). Metrics stay on device until the caller fetches them."""

  def step(state: TrainState, batch: dict):
    grads, sums = compute_grads(state.params, batch, model_cfg, vocab, cfg, mesh, shardings.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = metrics_lib.finalize(sums)
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
    # A non-finite loss or gradient leaves params and optimizer state as they were (the host
    # decides whether to stop or skip: train/loop.py), so a diverged state is never saved.
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    keep_if_bad = lambda new, old: jnp.where(finite, new, old)
    params = jax.tree.map(keep_if_bad, params, state.params)
    opt_state = jax.tree.map(keep_if_bad, opt_state, state.opt_state)
    metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
    metrics["batch_checksum"] = batch_checksum(batch["tokens"])
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  batch_sharding = {k: shd.batch_sharding(mesh) for k in BATCH_KEYS}
  jitted = jax.jit(
    step,
    in_shardings=(shardings, batch_sharding),
    out_shardings=(shardings, shd.replicated(mesh)),
    donate_argnums=0,
  )

  def run(state: TrainState, batch: dict):
    # The model's logical constraints resolve against this mesh and table at trace time.
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(state, batch)

  run.jitted = jitted
  return run


def step_config(config) -> StepConfig:
  weights = tuple(sorted(dict(config.modality_loss_weights).items()))
  return StepConfig(
    micro_batches=config.micro_batches,
    z_loss=config.z_loss,
    loss_chunk=config.loss_chunk,
    modality_loss_weights=weights,
  )
