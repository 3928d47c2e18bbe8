"""The model-shape side of HF checkpoints: config.json ↔ ModelConfig, and growing a vocabulary
(new embedding rows and lm_head columns) so an imported model fits our layout."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mio_jax.errors import UserError
from mio_jax.model.architecture import ModelConfig

ARCHITECTURES = ("LlamaForCausalLM", "YiForCausalLM")


class HFCheckpointError(UserError, ValueError):
  """A checkpoint or config that cannot be converted; the message names the file and tensor.
  A user error: the command lines print it as one line and exit 2."""


# ---- config.json ---------------------------------------------------------------------------------
def config_from_hf(hf: dict, where: str = "config.json", **overrides) -> tuple[ModelConfig, bool]:
  """ModelConfig from an HF config dict, and whether its embeddings are tied."""
  archs = hf.get("architectures") or []
  known = (
    any(a in ARCHITECTURES for a in archs) if archs else hf.get("model_type") in ("llama", "Yi")
  )
  if not known:
    raise HFCheckpointError(
      f"{where}: architecture {archs or hf.get('model_type')} is not supported; "
      f"expected one of {ARCHITECTURES}"
    )
  problems = []
  if hf.get("hidden_act", "silu") not in ("silu", "swish"):
    problems.append(f"hidden_act={hf['hidden_act']!r} (only silu)")
  for key in ("attention_bias", "mlp_bias"):
    if hf.get(key):
      problems.append(f"{key}=true (our model has no biases)")
  rope = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling")
  if scaling or rope.get("rope_type", "default") != "default":
    problems.append(f"RoPE scaling {scaling or rope} (only plain RoPE)")
  missing = [
    k
    for k in (
      "vocab_size",
      "hidden_size",
      "intermediate_size",
      "num_hidden_layers",
      "num_attention_heads",
    )
    if k not in hf
  ]
  if missing:
    problems.append(f"missing keys {missing}")
  if problems:
    raise HFCheckpointError(f"{where}: unsupported checkpoint: " + "; ".join(problems))
  fields = dict(
    vocab_size=hf["vocab_size"],
    d_model=hf["hidden_size"],
    n_layers=hf["num_hidden_layers"],
    n_heads=hf["num_attention_heads"],
    n_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
    ffn_dim=hf["intermediate_size"],
    head_dim=hf.get("head_dim"),
    rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0))),
    norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
  )  # 1e-6 = LlamaConfig's default
  fields.update(overrides)
  try:
    cfg = ModelConfig(**fields)
  except (ValueError, TypeError) as e:
    raise HFCheckpointError(f"{where}: {e}") from e
  return cfg, bool(hf.get("tie_word_embeddings", False))


def config_to_hf(cfg: ModelConfig, dtype: str, max_position_embeddings: int) -> dict:
  return {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": cfg.vocab_size,
    "hidden_size": cfg.d_model,
    "intermediate_size": cfg.ffn_dim,
    "num_hidden_layers": cfg.n_layers,
    "num_attention_heads": cfg.n_heads,
    "num_key_value_heads": cfg.n_kv_heads,
    "head_dim": cfg.head_dim,
    "hidden_act": "silu",
    "max_position_embeddings": max_position_embeddings,
    "rms_norm_eps": cfg.norm_eps,
    # Older transformers read rope_theta, 5.x reads rope_parameters.
    "rope_theta": cfg.rope_theta,
    "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "torch_dtype": dtype,
    "dtype": dtype,
  }


# ---- vocabulary extension ------------------------------------------------------------------------
def extend_vocab(params, vocab_size: int, rng, noise_std: float = 1e-3) -> dict:
  """Grows `embedding` rows and `lm_head` columns to `vocab_size` (e.g. Vocab.padded_size).

  New rows/columns are the mean of the existing ones plus N(0, noise_std²) noise, so new tokens
  start close to an average token. Existing rows and columns are untouched, so text logits keep
  their values.
  """
  params = dict(unbox(params))
  emb_VxD, head_DxV = params["embedding"], params["lm_head"]
  v, d = emb_VxD.shape
  if vocab_size < v:
    raise ValueError(f"extend_vocab: target {vocab_size} is smaller than the current {v} rows")
  n = vocab_size - v
  k_emb, k_head = jax.random.split(rng)
  mean_D = jnp.mean(jnp.asarray(emb_VxD, jnp.float32), axis=0)
  new_NxD = mean_D + noise_std * jax.random.normal(k_emb, (n, d), jnp.float32)
  head_mean_D = jnp.mean(jnp.asarray(head_DxV, jnp.float32), axis=1)
  new_DxN = head_mean_D[:, None] + noise_std * jax.random.normal(k_head, (d, n), jnp.float32)
  params["embedding"] = jnp.concatenate(
    [jnp.asarray(emb_VxD), new_NxD.astype(emb_VxD.dtype)], axis=0
  )
  params["lm_head"] = jnp.concatenate(
    [jnp.asarray(head_DxV), new_DxN.astype(head_DxV.dtype)], axis=1
  )
  return params


# ---- small tree helpers --------------------------------------------------------------------------
def unbox(params) -> dict:
  """Plain arrays from Flax `nn.Partitioned` boxes; also strips a top-level {'params': ...}."""
  params = nn.unbox(params)
  if set(params) == {"params"}:
    params = params["params"]
  return params
