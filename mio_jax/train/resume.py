"""Where a run's state comes from: its own newest checkpoint, else a fresh init, optionally with
params handed over from a previous stage (`init_from`) or an imported HF text model.

Order matters: a workdir that already has checkpoints always resumes, or stops with a named
error; it never re-initialises (a restarted stage must not start over, and Orbax would then
garbage-collect the good checkpoints). A checkpoint that does not fit the config is an error
naming the key and both values.
"""

from __future__ import annotations

import json
import logging
import uuid

import jax
import numpy as np

from mio_jax import checkpoint as ckpt
from mio_jax import paths
from mio_jax.model import Transformer
from mio_jax.train import state as state_lib

log = logging.getLogger(__name__)

# Config keys whose change would silently change what the resumed run trains on: the data order
# (seed, batch, sequence length, sources, mixture, workers, packing policy) or the model.
# Array shapes (model size, vocab) are checked tensor by tensor as well.
RESUME_KEYS = (
  "model",
  "seed",
  "global_batch",
  "seq_len",
  "data.kind",
  "data.sources",
  "data.weights",
  "data.worker_count",
  "data.overlong",
  "data.shuffle",
)


def resume_signature(config) -> dict:
  """The values of RESUME_KEYS, JSON-normalised (stored in every checkpoint's meta)."""
  out = {}
  for key in RESUME_KEYS:
    value = config
    for part in key.split("."):
      value = value.get(part) if hasattr(value, "get") else None
    if hasattr(value, "to_dict"):
      value = value.to_dict()
    out[key] = json.loads(json.dumps(value, sort_keys=True))
  return out


def check_resumable(meta: dict, where: str, config) -> None:
  """CheckpointMismatchError naming the first key whose value differs from the saved run's."""
  saved = meta.get("resume")
  if saved is None:
    raise ckpt.CheckpointMismatchError(
      f"{where}: meta has no resume signature (written by an "
      "older mio_jax); start a new workdir with "
      f"--config.init_from={paths.parent(paths.parent(where))}"
    )
  mine = resume_signature(config)
  for key in RESUME_KEYS:
    if key in saved and saved[key] != mine[key]:
      raise ckpt.CheckpointMismatchError(
        f"{where} was saved with {key}={saved[key]!r} but this run has {key}={mine[key]!r}: "
        "resuming would change the data order or the model mid-run. Rerun with "
        f"--config.{key}={json.dumps(saved[key])}, or start a new --workdir with "
        f"--config.init_from={paths.parent(paths.parent(where))} to carry the params over."
      )


def restore_or_init(s, manager, data_iterator, init_fn) -> tuple[state_lib.TrainState, str, str]:
  """→ (state, how, lineage), how ∈ {'resumed', 'init_from', 'random'}; `init_fn(s)` makes a
  fresh state. Raises (never initialises) when checkpoints exist but cannot be resumed."""
  abstract = state_lib.abstract_state(Transformer(s.model_cfg), s.tx, s.shardings)
  restored = ckpt.restore_latest(
    manager,
    abstract,
    data_iterator,
    s.vocab.fingerprint(),
    check_meta=lambda meta, where: check_resumable(meta, where, s.config),
  )
  if restored is not None:
    saved_processes = restored.meta.get("process_count", jax.process_count())
    if saved_processes != jax.process_count():
      log.info(
        "checkpoint saved by %d processes, resuming on %d", saved_processes, jax.process_count()
      )
    log.info("resumed from step %d of %s", restored.meta["step"], manager.directory)
    return restored.state, "resumed", restored.meta.get("lineage") or _new_lineage()
  state = init_fn(s)
  if not s.config.init_from:
    return state, "random", _new_lineage()
  params = load_init_params(s.config.init_from, s, abstract.params)
  # Fresh optimizer: AdamW moments start at zero whatever the params, so only params change.
  return state.replace(params=params), "init_from", _new_lineage()


def _new_lineage() -> str:
  """Same on every process (they must agree on what they write): process 0 draws it."""
  lineage = np.frombuffer(uuid.uuid4().bytes, np.uint8)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    lineage = np.asarray(multihost_utils.broadcast_one_to_all(lineage))
  return bytes(lineage.astype(np.uint8)).hex()


def load_init_params(path: str, s, abstract_params):
  """Params from a previous stage's workdir/checkpoint, or from a Hugging Face model directory."""
  if paths.exists(paths.join(path, "config.json")):
    return _params_from_hf(path, s, abstract_params)
  params, step_dir = ckpt.restore_params(path, abstract_params)
  fingerprint = ckpt.read_meta(step_dir).get("vocab_fingerprint")
  s.vocab.check_fingerprint(fingerprint, f"init_from {step_dir}")
  log.info("initialised params from %s", step_dir)
  return params


def _params_from_hf(path: str, s, abstract_params):
  """An HF checkpoint: a multimodal one (MIO's release, or a mio_jax export) keeps its ids and
  only gains padding rows; a Llama/Yi text model is grown by the multimodal rows (stage-1 start)."""
  from mio_jax import hf, hf_vocab

  source_vocab = hf.load_vocab(path)  # checked before the (slow) weight read
  if source_vocab is not None and source_vocab.fingerprint() != s.vocab.fingerprint():
    raise ValueError(
      f"init_from {path}: its vocab layout {source_vocab.layout_name!r} (size "
      f"{source_vocab.size}, fingerprint {source_vocab.fingerprint()}) is not model "
      f"'{s.config.model}''s ({s.vocab.layout_name!r}, size {s.vocab.size}, "
      f"{s.vocab.fingerprint()}); pick a model with that layout, e.g. "
      f"{'mio-7b-released' if source_vocab.layout_name == 'mio' else 'the exported one'}"
    )
  hf_cfg, params = hf.load_hf(path, scan_layers=s.model_cfg.scan_layers)
  mine = s.model_cfg
  for field in ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "head_dim"):
    if getattr(hf_cfg, field) != getattr(mine, field):
      raise ValueError(
        f"init_from {path}: {field} is {getattr(hf_cfg, field)} in the HF model "
        f"but {getattr(mine, field)} in model '{s.config.model}'"
      )
  if source_vocab is not None:
    if hf_cfg.vocab_size not in (source_vocab.size, source_vocab.padded_size):
      raise ValueError(
        f"init_from {path}: HF vocab {hf_cfg.vocab_size} is neither the layout's "
        f"{source_vocab.size} ids nor its {source_vocab.padded_size} padded rows"
      )
    params = hf_vocab.pad_rows(params, mine.vocab_size)
    log.info(
      "initialised params from HF model %s (vocab layout %s, %d rows → %d)",
      path,
      source_vocab.layout_name,
      hf_cfg.vocab_size,
      mine.vocab_size,
    )
  else:
    if hf_cfg.vocab_size > mine.vocab_size:
      raise ValueError(
        f"init_from {path}: HF vocab {hf_cfg.vocab_size} is larger than this "
        f"model's {mine.vocab_size}"
      )
    if hf_cfg.vocab_size != s.vocab.text_size:
      raise ValueError(
        f"init_from {path}: HF vocab {hf_cfg.vocab_size} != vocab.text_size "
        f"{s.vocab.text_size}; the text ids must come first in the unified vocab"
      )
    params = hf.extend_vocab(params, mine.vocab_size, jax.random.key(s.config.seed))
    log.info(
      "initialised params from HF model %s (vocab %d → %d)",
      path,
      hf_cfg.vocab_size,
      mine.vocab_size,
    )
  return jax.tree.map(
    lambda a, t: jax.device_put(np.asarray(a, t.dtype), t.sharding), params, abstract_params
  )
