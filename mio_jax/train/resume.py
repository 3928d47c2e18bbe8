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

from mio_jax.checkpoint import manager as ckpt
from mio_jax.checkpoint import params as checkpoint_params
from mio_jax.config import get_base_config
from mio_jax.hf import config_json, release_vocab
from mio_jax.hf import release_vocab as hf_vocab
from mio_jax.hf import weights as hf
from mio_jax.io import paths
from mio_jax.model.transformer import Transformer
from mio_jax.train import state as state_lib

log = logging.getLogger(__name__)

# Every config key is in exactly one of these two families (tests/test_reliability_resume.py
# walks mio_jax/config.py's keys). A rule names a key or a key prefix ('mesh' = mesh.*).
# Keys that change the model, the batches or their order: a resumed run with another value
# would not continue the saved run, so a difference stops it (CheckpointMismatchError).
MUST_MATCH = (
  "model",
  "model_overrides",  # every ModelConfig field: shapes, numerics (rope_theta, dtype), layout
  "seed",
  "stage",
  "seq_len",
  "global_batch",
  "data_dir",
  "data.kind",
  "data.sources",
  "data.weights",
  "data.mixture",
  "data.overlong",
  "data.skip_corrupt",
  "data.worker_count",
  "data.shuffle",
  "data.pack_rows",
)
# Keys a resumed run may change: the optimizer schedule, the run length, the layout on the
# devices, cadences, logging and evaluation. A change is logged ("changed since step N: lr
# 0.003 → 0.0005") and recorded in the checkpoints written after it (meta "changes").
MAY_CHANGE = (
  "lr",
  "warmup_frac",
  "end_lr_frac",
  "weight_decay",
  "b1",
  "b2",
  "eps",
  "clip_norm",
  "z_loss",
  "loss_chunk",  # memory only: the same loss, chunked
  "modality_loss_weights",
  "total_steps",
  "micro_batches",  # the same global batch, accumulated in more or fewer pieces
  "mesh",
  "plan",
  "plan_dir",
  "checkpoint_every",
  "keep_checkpoints",
  "keep_period",
  "async_checkpoint",
  "checkpoint_compression",
  "checkpoint_writer_nice",
  "skip_nonfinite_updates",  # the allowance; the count of skipped updates is saved state
  "init_from",  # read only by a fresh run
  "log_every",
  "profile_steps",
  "eval_every",
  "eval_steps",
  "data.prefetch",  # a prefetch thread: same batches, same order
  "data.build_demo_corpus",  # where a missing demo corpus comes from, not what is read
  "data.corpus_builder",
  "data.eval_suffix",  # validation data only
  "data.cache_dir",  # local copies of the same gs:// shards
)


def rule_for(key: str, rules) -> str | None:
  """The rule of `rules` that covers `key` (itself or a prefix of it), else None."""
  for rule in rules:
    if key == rule or key.startswith(rule + "."):
      return rule
  return None


def must_match(key: str) -> bool:
  """A key no rule names counts as must-match: an unclassified key can only stop a resume."""
  return rule_for(key, MAY_CHANGE) is None


def config_keys(config, prefix: str = "") -> list[str]:
  """Dotted leaf keys; a mapping with free-form names (data.sources, modality_loss_weights) is
  one key, told by its being empty in mio_jax/config.py's base config."""
  return _leaf_keys(config, get_base_config(), prefix)


def _leaf_keys(config, schema, prefix: str) -> list[str]:
  out = []
  for key, value in config.items():
    sub = schema.get(key) if hasattr(schema, "get") else None
    if hasattr(value, "items") and hasattr(sub, "items") and len(sub):
      out += _leaf_keys(value, sub, f"{prefix}{key}.")
    else:
      out.append(prefix + key)
  return out


def _value(config, key: str):
  value = config
  for part in key.split("."):
    value = value.get(part) if hasattr(value, "get") else None
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  return json.loads(json.dumps(value, sort_keys=True))


def resume_signature(config) -> dict:
  """Every must-match key's value, JSON-normalised (stored in every checkpoint's meta)."""
  return {k: _value(config, k) for k in config_keys(config) if must_match(k)}


def changeable_settings(config) -> dict:
  """Every may-change key's value (stored in meta, to log what a resumed run changed)."""
  return {k: _value(config, k) for k in config_keys(config) if not must_match(k)}


def check_resumable(meta: dict, where: str, config) -> None:
  """CheckpointMismatchError naming the first must-match key whose value differs from the saved
  run's (keys an older checkpoint did not record are not compared)."""
  saved = meta.get("resume")
  if saved is None:
    raise ckpt.CheckpointMismatchError(
      f"{where}: meta has no resume signature (written by an "
      "older mio_jax); start a new workdir with "
      f"--config.init_from={paths.parent(paths.parent(where))}"
    )
  mine = resume_signature(config)
  for key in sorted(mine):
    if key in saved and saved[key] != mine[key]:
      raise ckpt.CheckpointMismatchError(
        f"{where} was saved with {key}={saved[key]!r} but this run has {key}={mine[key]!r}: "
        "resuming would change the model, the batches or their order mid-run. Rerun with "
        f"--config.{key}={_flag_value(saved[key])}, or start a new --workdir with "
        f"--config.init_from={paths.parent(paths.parent(where))} to carry the params over."
      )


def _flag_value(value) -> str:
  return value if isinstance(value, str) else json.dumps(value)


def changed_settings(meta: dict, config) -> list[dict]:
  """[{'step', 'key', 'from', 'to'}] for every may-change key this run sets differently from
  the checkpoint it resumes (`meta`); empty for checkpoints that recorded no settings."""
  saved = meta.get("settings") or {}
  mine = changeable_settings(config)
  return [
    {"step": meta["step"], "key": k, "from": saved[k], "to": mine[k]}
    for k in sorted(mine)
    if k in saved and saved[k] != mine[k]
  ]


def log_changes(changes: list[dict]) -> None:
  for c in changes:
    log.warning("changed since step %d: %s %s → %s", c["step"], c["key"], c["from"], c["to"])


def check_workdir_config(workdir: str, config) -> None:
  """The config against the newest checkpoint whose meta reads, before the model or the data
  pipeline is built: a changed model or dataset is then the one-line mismatch error, not a
  failure deep in the data pipeline. (The restore checks again, on the checkpoint it uses.)"""
  directory = ckpt.checkpoint_dir(workdir)
  if not paths.isdir(directory):
    return
  steps = sorted((int(n) for n in paths.listdir(directory) if n.isdigit()), reverse=True)
  for step in steps:
    where = paths.join(directory, str(step))
    try:
      meta = ckpt.read_meta(where)
    except ckpt.DAMAGE_ERRORS:
      continue  # damaged: the restore falls back past it and says so
    check_resumable(meta, where, config)
    return


def restore_or_init(
  s, manager, data_iterator, init_fn, config=None
) -> tuple[state_lib.TrainState, str, str, dict | None]:
  """→ (state, how, lineage, meta of the restored checkpoint or None), how ∈ {'resumed',
  'init_from', 'random'}; `init_fn(s)` makes a fresh state. `config`: what the checkpoint is
  checked against (default s.config). Raises (never initialises) when checkpoints exist but
  cannot be resumed."""
  config = s.config if config is None else config
  abstract = state_lib.abstract_state(Transformer(s.model_cfg), s.tx, s.shardings)
  restored = ckpt.restore_latest(
    manager,
    abstract,
    data_iterator,
    s.vocab.fingerprint(),
    check_meta=lambda meta, where: check_resumable(meta, where, config),
  )
  if restored is not None:
    saved_processes = restored.meta.get("process_count", jax.process_count())
    if saved_processes != jax.process_count():
      log.info(
        "checkpoint saved by %d processes, resuming on %d", saved_processes, jax.process_count()
      )
    log.info("resumed from step %d of %s", restored.meta["step"], manager.directory)
    lineage = restored.meta.get("lineage") or _new_lineage()
    return restored.state, "resumed", lineage, restored.meta
  state = init_fn(s)
  if not s.config.init_from:
    return state, "random", _new_lineage(), None
  params = load_init_params(s.config.init_from, s, abstract.params)
  # Fresh optimizer: AdamW moments start at zero whatever the params, so only params change.
  return state.replace(params=params), "init_from", _new_lineage(), None


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
  params, step_dir = checkpoint_params.restore_params(path, abstract_params)
  fingerprint = ckpt.read_meta(step_dir).get("vocab_fingerprint")
  s.vocab.check_fingerprint(fingerprint, f"init_from {step_dir}")
  log.info("initialised params from %s", step_dir)
  return params


def _params_from_hf(path: str, s, abstract_params):
  """An HF checkpoint: a multimodal one (MIO's release, or a mio_jax export) keeps its ids and
  only gains padding rows; a Llama/Yi text model is grown by the multimodal rows (stage-1 start)."""
  source_vocab = release_vocab.load_vocab(path)  # checked before the (slow) weight read
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
    params = config_json.extend_vocab(params, mine.vocab_size, jax.random.key(s.config.seed))
    log.info(
      "initialised params from HF model %s (vocab %d → %d)",
      path,
      hf_cfg.vocab_size,
      mine.vocab_size,
    )
  return jax.tree.map(
    lambda a, t: jax.device_put(np.asarray(a, t.dtype), t.sharding), params, abstract_params
  )
