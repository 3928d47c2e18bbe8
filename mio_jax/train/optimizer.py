"""AdamW with warmup-cosine LR, global-norm clipping and a weight-decay mask."""

from __future__ import annotations

import jax
import optax

# Leaves named like this get no weight decay: norm scales and the input embedding
# (docs/training.md).
NO_DECAY = ("scale", "embedding")


def make_schedule(opt_cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup over `warmup_frac` of training to `lr`, cosine down to `lr * end_lr_frac`."""
  warmup = max(1, int(round(opt_cfg.warmup_frac * total_steps)))
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=opt_cfg.lr,
    warmup_steps=warmup,
    decay_steps=max(total_steps, warmup + 1),
    end_value=opt_cfg.lr * opt_cfg.end_lr_frac,
  )


def decay_mask(params):
  """True where weight decay applies: every leaf except those whose path ends in NO_DECAY."""

  def keep(path, _):
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", str(last)))
    return name not in NO_DECAY

  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(
  opt_cfg, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = make_schedule(opt_cfg, total_steps)
  tx = optax.chain(
    optax.clip_by_global_norm(opt_cfg.clip_norm),
    optax.adamw(
      schedule,
      b1=opt_cfg.b1,
      b2=opt_cfg.b2,
      eps=opt_cfg.eps,
      weight_decay=opt_cfg.weight_decay,
      mask=decay_mask,
    ),
  )
  return tx, schedule
