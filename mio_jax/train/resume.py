"""Where a run's state comes from: its own newest checkpoint, else a fresh init, optionally with
params handed over from a previous stage (`init_from`) or an imported HF text model.

Order matters: a workdir that already has checkpoints always resumes (a restarted stage must not
re-initialise from the previous stage and lose its progress).
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np

from mio_jax import checkpoint as ckpt
from mio_jax.model import Transformer
from mio_jax.train import state as state_lib

log = logging.getLogger(__name__)


def restore_or_init(s, manager, data_iterator, init_fn) -> tuple[state_lib.TrainState, str]:
  """→ (state, how) with how ∈ {'resumed', 'init_from', 'random'}; `init_fn(s)` makes a fresh state."""
  abstract = state_lib.abstract_state(Transformer(s.model_cfg), s.tx, s.shardings)
  restored = ckpt.restore_latest(manager, abstract, data_iterator, s.vocab.fingerprint())
  if restored is not None:
    state, meta = restored
    log.info("resumed from step %d of %s", meta["step"], manager.directory)
    return state, "resumed"
  state = init_fn(s)
  if not s.config.init_from:
    return state, "random"
  params = load_init_params(s.config.init_from, s, abstract.params)
  # Fresh optimizer: AdamW moments start at zero whatever the params, so only params change.
  return state.replace(params=params), "init_from"


def load_init_params(path: str, s, abstract_params):
  """Params from a previous stage's workdir/checkpoint, or from a Hugging Face model directory."""
  if os.path.exists(os.path.join(path, "config.json")):
    return _params_from_hf(path, s, abstract_params)
  params, step_dir = ckpt.restore_params(path, abstract_params)
  fingerprint = ckpt.read_meta(step_dir).get("vocab_fingerprint")
  s.vocab.check_fingerprint(fingerprint, f"init_from {step_dir}")
  log.info("initialised params from %s", step_dir)
  return params


def _params_from_hf(path: str, s, abstract_params):
  """An HF Llama/Yi text model, its vocab grown by the multimodal rows (MIO stage-1 start)."""
  from mio_jax import hf

  hf_cfg, params = hf.load_hf(path, scan_layers=s.model_cfg.scan_layers)
  mine = s.model_cfg
  for field in ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "head_dim"):
    if getattr(hf_cfg, field) != getattr(mine, field):
      raise ValueError(f"init_from {path}: {field} is {getattr(hf_cfg, field)} in the HF model "
                       f"but {getattr(mine, field)} in model '{s.config.model}'")
  if hf_cfg.vocab_size > mine.vocab_size:
    raise ValueError(f"init_from {path}: HF vocab {hf_cfg.vocab_size} is larger than this model's "
                     f"{mine.vocab_size}")
  if hf_cfg.vocab_size != s.vocab.text_size:
    raise ValueError(f"init_from {path}: HF vocab {hf_cfg.vocab_size} != vocab.text_size "
                     f"{s.vocab.text_size}; the text ids must come first in the unified vocab")
  params = hf.extend_vocab(params, mine.vocab_size, jax.random.key(s.config.seed))
  log.info("initialised params from HF model %s (vocab %d → %d)", path, hf_cfg.vocab_size,
           mine.vocab_size)
  return jax.tree.map(lambda a, t: jax.device_put(np.asarray(a, t.dtype), t.sharding),
                      params, abstract_params)
