"""SEED-Tokenizer's encoder (MIO's image tokenizer) in pure JAX: pixels -> 32 codes per image.

The network is the one data_pipelines/tokenizers/seed_modules.py builds from transformers parts,
read from the same converted directory (config.json, model.safetensors) the torch adapter loads:
  EVA ViT-g/14 (conv patch embedding, [CLS], learned positions; pre-norm blocks with q/v bias and
  exact GELU; no final norm of its own) -> SEED's `ln_vision` (transformers' post_layernorm)
  -> BLIP-2 Q-Former: LayerNorm'd learned queries, post-norm BERT layers whose self-attention is
  causal among the queries (query i sees 0..i) and which cross-attend to the image every
  `cross_attention_freq` layers (layers 0, f, 2f, ...), then a GELU feed-forward
  -> `encode_task_layer` (Linear, Tanh, Linear) -> the nearest codebook row by squared L2
  distance (SEED does not l2-normalise).

Everything is a pure function of (params, config, pixels): `encode_pixels` runs under `jax.jit`
with the config static, and the params are a plain dict of arrays (easy to shard or cast).
Precision: matmul inputs are cast to `compute_dtype` and accumulate in float32; the residual
stream, LayerNorm statistics, softmax and the codebook distances stay float32 whatever
`compute_dtype` is. With float32 the matmuls ask for full precision, so a TPU or GPU does not
drop to bf16/TF32 passes behind our back.

Pixels are NxCxHxW float32, CLIP-normalised, at `config.image_size`: exactly what the adapter's
`SEEDImageTokenizer.pixels()` returns (as numpy), stacked along N.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load as load_safetensors

from mio_jax.errors import UserError
from mio_jax.io import paths

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_JSON = "tokenizer.json"
KIND = "seed"
# config.json fields that only the codes -> image decoder uses: accepted and ignored here.
DECODER_FIELDS = frozenset(
  {"decoder_depth", "decoder_heads", "decoder_mlp", "decoder_eps", "image_down", "image_embed_dim"}
)


class SEEDWeightsError(UserError, ValueError):
  """A SEED tokenizer directory whose model.safetensors lacks a tensor the encoder needs or holds
  one of another shape than config.json implies."""


@dataclasses.dataclass(frozen=True)
class SEEDEncoderConfig:
  """The encoder's part of SEED's config.json. Defaults are SEED-LLaMA's released tokenizer.
  Frozen and hashable: it is a static argument of the jitted functions."""

  image_size: int = 224
  patch_size: int = 14
  vision_width: int = 1408
  vision_layers: int = 39
  vision_heads: int = 16
  vision_mlp: int = 6144
  vision_eps: float = 1e-6
  ln_vision_eps: float = 1e-5
  qformer_width: int = 768
  qformer_layers: int = 12
  qformer_heads: int = 12
  qformer_mlp: int = 3072
  qformer_eps: float = 1e-12
  cross_attention_freq: int = 2
  num_queries: int = 32
  codebook_size: int = 8192
  codebook_dim: int = 32

  @property
  def grid(self) -> int:
    """Patches per side (a strided conv drops any remainder of image_size)."""
    return self.image_size // self.patch_size

  def has_cross_attention(self, layer: int) -> bool:
    return layer % self.cross_attention_freq == 0

  @classmethod
  def from_dict(cls, d: dict, where: str = CONFIG_FILE) -> SEEDEncoderConfig:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known - DECODER_FIELDS)
    if unknown:
      raise UserError(f"{where}: unknown SEED config keys {unknown}; known: {sorted(known)}")
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    # `from __future__ import annotations` makes the field types strings: "int" or "float".
    cast = {"int": int, "float": float}
    return cls(**{k: cast[types[k]](v) for k, v in d.items() if k in known})


# ---- loading -------------------------------------------------------------------------------------
def expected_shapes(c: SEEDEncoderConfig) -> dict[str, tuple[int, ...]]:
  """Every tensor the encoder reads from model.safetensors (seed_modules' state_dict names)."""
  d, h, m = c.vision_width, c.qformer_width, c.vision_mlp
  shapes = {
    "vision.embeddings.class_embedding": (1, 1, d),
    "vision.embeddings.position_embedding": (1, c.grid * c.grid + 1, d),
    "vision.embeddings.patch_embedding.weight": (d, 3, c.patch_size, c.patch_size),
    "vision.embeddings.patch_embedding.bias": (d,),
    "vision.post_layernorm.weight": (d,),
    "vision.post_layernorm.bias": (d,),
    "query_tokens": (1, c.num_queries, h),
    "qformer.layernorm.weight": (h,),
    "qformer.layernorm.bias": (h,),
    "encode_task_layer.0.weight": (h, h),
    "encode_task_layer.0.bias": (h,),
    "encode_task_layer.2.weight": (c.codebook_dim, h),
    "encode_task_layer.2.bias": (c.codebook_dim,),
    "codebook.weight": (c.codebook_size, c.codebook_dim),
  }
  for i in range(c.vision_layers):
    p = f"vision.encoder.layers.{i}."
    shapes |= {
      p + "layer_norm1.weight": (d,),
      p + "layer_norm1.bias": (d,),
      p + "self_attn.qkv.weight": (3 * d, d),
      p + "self_attn.qkv.bias": (3 * d,),  # q and v biases; the k third is zero
      p + "self_attn.projection.weight": (d, d),
      p + "self_attn.projection.bias": (d,),
      p + "layer_norm2.weight": (d,),
      p + "layer_norm2.bias": (d,),
      p + "mlp.fc1.weight": (m, d),
      p + "mlp.fc1.bias": (m,),
      p + "mlp.fc2.weight": (d, m),
      p + "mlp.fc2.bias": (d,),
    }
  for i in range(c.qformer_layers):
    p = f"qformer.encoder.layer.{i}."
    kinds = ["attention"] + (["crossattention"] if c.has_cross_attention(i) else [])
    for kind in kinds:
      source_width = d if kind == "crossattention" else h
      a = f"{p}{kind}."
      shapes |= {
        a + "attention.query.weight": (h, h),
        a + "attention.query.bias": (h,),
        a + "attention.key.weight": (h, source_width),
        a + "attention.key.bias": (h,),
        a + "attention.value.weight": (h, source_width),
        a + "attention.value.bias": (h,),
        a + "output.dense.weight": (h, h),
        a + "output.dense.bias": (h,),
        a + "output.LayerNorm.weight": (h,),
        a + "output.LayerNorm.bias": (h,),
      }
    shapes |= {
      p + "intermediate_query.dense.weight": (c.qformer_mlp, h),
      p + "intermediate_query.dense.bias": (c.qformer_mlp,),
      p + "output_query.dense.weight": (h, c.qformer_mlp),
      p + "output_query.dense.bias": (h,),
      p + "output_query.LayerNorm.weight": (h,),
      p + "output_query.LayerNorm.bias": (h,),
    }
  return shapes


def read_config(directory: str) -> SEEDEncoderConfig:
  """config.json of a SEED tokenizer directory (local or gs://); tokenizer.json, when present,
  must name kind "seed"."""
  meta_path = paths.join(directory, TOKENIZER_JSON)
  if paths.exists(meta_path):
    kind = json.loads(paths.read_text(meta_path)).get("kind")
    if kind != KIND:
      raise UserError(f"{meta_path}: kind {kind!r} is not a SEED image tokenizer ({KIND!r})")
  config_path = paths.join(directory, CONFIG_FILE)
  if not paths.exists(config_path):
    raise UserError(f"SEED tokenizer directory {directory} lacks {CONFIG_FILE}")
  return SEEDEncoderConfig.from_dict(json.loads(paths.read_text(config_path)), config_path)


def check_tensors(tensors: dict[str, np.ndarray], c: SEEDEncoderConfig, where: str) -> None:
  """SEEDWeightsError listing every missing or misshapen tensor (the first few named)."""
  problems = []
  for name, shape in expected_shapes(c).items():
    if name not in tensors:
      problems.append(f"missing tensor {name!r} (expected shape {shape})")
    elif tuple(tensors[name].shape) != shape:
      problems.append(f"tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape}")
  if problems:
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    raise SEEDWeightsError(f"{where} does not fit its config.json: {'; '.join(problems[:5])}{more}")


def _linear(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """torch Linear [out, in] -> {"w": [in, out], "b": [out]} so that the forward is x @ w + b."""
  return {"w": tensors[prefix + "weight"].T, "b": tensors[prefix + "bias"]}


def _norm(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  return {"scale": tensors[prefix + "weight"], "bias": tensors[prefix + "bias"]}


def params_from_tensors(tensors: dict[str, np.ndarray], c: SEEDEncoderConfig) -> dict:
  """seed_modules' flat state_dict (checked by `check_tensors`) -> the encoder's params pytree
  (numpy, float32). Vision blocks are stacked along a leading layer axis for `lax.scan` (one
  compiled block instead of 39)."""
  t = {k: np.asarray(tensors[k], np.float32) for k in expected_shapes(c)}  # not the decoder's
  patch_w = t["vision.embeddings.patch_embedding.weight"]  # [D, C, p, p]

  def vision_block(i: int) -> dict:
    p = f"vision.encoder.layers.{i}."
    return {
      "norm1": _norm(t, p + "layer_norm1."),
      "qkv": _linear(t, p + "self_attn.qkv."),
      "proj": _linear(t, p + "self_attn.projection."),
      "norm2": _norm(t, p + "layer_norm2."),
      "fc1": _linear(t, p + "mlp.fc1."),
      "fc2": _linear(t, p + "mlp.fc2."),
    }

  def attention(prefix: str) -> dict:
    return {
      "query": _linear(t, prefix + "attention.query."),
      "key": _linear(t, prefix + "attention.key."),
      "value": _linear(t, prefix + "attention.value."),
      "out": _linear(t, prefix + "output.dense."),
      "norm": _norm(t, prefix + "output.LayerNorm."),
    }

  def qformer_layer(i: int) -> dict:
    p = f"qformer.encoder.layer.{i}."
    layer = {
      "self_attn": attention(p + "attention."),
      "ffn_in": _linear(t, p + "intermediate_query.dense."),
      "ffn_out": _linear(t, p + "output_query.dense."),
      "ffn_norm": _norm(t, p + "output_query.LayerNorm."),
    }
    if c.has_cross_attention(i):
      layer["cross_attn"] = attention(p + "crossattention.")
    return layer

  blocks = [vision_block(i) for i in range(c.vision_layers)]
  return {
    "patch_embed": {
      # Flattened in the (C, p, p) order that `patch_embed` cuts patches in.
      "w": patch_w.reshape(patch_w.shape[0], -1).T,
      "b": t["vision.embeddings.patch_embedding.bias"],
    },
    "cls_token_1x1xD": t["vision.embeddings.class_embedding"],
    "pos_embed_1xTxD": t["vision.embeddings.position_embedding"],
    "vision_blocks": jax.tree.map(lambda *xs: np.stack(xs), *blocks),
    "ln_vision": _norm(t, "vision.post_layernorm."),
    "query_tokens_1xQxH": t["query_tokens"],
    "query_norm": _norm(t, "qformer.layernorm."),
    "qformer_layers": [qformer_layer(i) for i in range(c.qformer_layers)],
    "task_in": _linear(t, "encode_task_layer.0."),
    "task_out": _linear(t, "encode_task_layer.2."),
    "codebook_KxE": t["codebook.weight"],
  }


def load_seed_encoder(directory: str) -> tuple[dict, SEEDEncoderConfig]:
  """(params pytree of float32 jnp arrays, config) from a SEED tokenizer directory, local or
  gs://, as `SEEDImageTokenizer.save` or `convert_weights --kind=seed` write it. The decoder's
  tensors in the same file are not read into params."""
  config = read_config(directory)
  weights_path = paths.join(directory, WEIGHTS_FILE)
  if not paths.exists(weights_path):
    raise UserError(f"SEED tokenizer directory {directory} lacks {WEIGHTS_FILE}")
  tensors = load_safetensors(paths.read_bytes(weights_path))
  check_tensors(tensors, config, weights_path)
  return jax.tree.map(jnp.asarray, params_from_tensors(tensors, config)), config


# ---- building blocks -----------------------------------------------------------------------------
def _precision(compute_dtype) -> jax.lax.Precision:
  # float32 asked for means float32 done: no bf16 passes on TPU, no TF32 on GPU.
  return jax.lax.Precision.HIGHEST if jnp.dtype(compute_dtype) == jnp.float32 else None


def dense(x_NxTxI, p: dict, compute_dtype) -> jax.Array:
  """x @ w + b with inputs in compute_dtype, accumulated and returned in float32."""
  y = jnp.matmul(
    x_NxTxI.astype(compute_dtype),
    p["w"].astype(compute_dtype),
    precision=_precision(compute_dtype),
    preferred_element_type=jnp.float32,
  )
  return y + p["b"].astype(jnp.float32)


def layer_norm(x_NxTxD, p: dict, eps: float) -> jax.Array:
  """Statistics in float32 whatever the input's dtype."""
  x = x_NxTxD.astype(jnp.float32)
  mean = x.mean(-1, keepdims=True)
  var = jnp.square(x - mean).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def gelu(x):
  return jax.nn.gelu(x, approximate=False)  # transformers' "gelu" is the exact erf form


def attend(q_NxTxD, k_NxSxD, v_NxSxD, heads: int, compute_dtype, mask_TxS=None) -> jax.Array:
  """Multi-head scaled dot-product attention; scores and softmax in float32. `mask_TxS`: True
  where a query may look."""
  n, t, d = q_NxTxD.shape
  head_dim = d // heads
  split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, head_dim).astype(compute_dtype)  # noqa: E731
  q_NxTxHxK, k_NxSxHxK, v_NxSxHxK = split(q_NxTxD), split(k_NxSxD), split(v_NxSxD)
  precision = _precision(compute_dtype)
  scores_NxHxTxS = jnp.einsum(
    "nthk,nshk->nhts",
    q_NxTxHxK,
    k_NxSxHxK,
    precision=precision,
    preferred_element_type=jnp.float32,
  ) / np.float32(np.sqrt(head_dim))
  if mask_TxS is not None:
    scores_NxHxTxS = jnp.where(mask_TxS, scores_NxHxTxS, jnp.finfo(jnp.float32).min)
  weights_NxHxTxS = jax.nn.softmax(scores_NxHxTxS, axis=-1)
  out_NxTxHxK = jnp.einsum(
    "nhts,nshk->nthk",
    weights_NxHxTxS.astype(compute_dtype),
    v_NxSxHxK,
    precision=precision,
    preferred_element_type=jnp.float32,
  )
  return out_NxTxHxK.reshape(n, t, d)


# ---- EVA ViT -------------------------------------------------------------------------------------
def patch_embed(params: dict, c: SEEDEncoderConfig, pixels_NxCxHxW, compute_dtype) -> jax.Array:
  """The stride-p conv as one matmul over non-overlapping patches, + [CLS] + positions."""
  n, s, p = pixels_NxCxHxW.shape[0], c.grid, c.patch_size
  x = pixels_NxCxHxW[:, :, : s * p, : s * p].reshape(n, 3, s, p, s, p)
  patches_NxPxCpp = x.transpose(0, 2, 4, 1, 3, 5).reshape(n, s * s, 3 * p * p)
  x_NxPxD = dense(patches_NxPxCpp, params["patch_embed"], compute_dtype)
  cls_Nx1xD = jnp.broadcast_to(params["cls_token_1x1xD"], (n, 1, c.vision_width))
  return jnp.concatenate([cls_Nx1xD, x_NxPxD], axis=1) + params["pos_embed_1xTxD"]


def eva_block(block: dict, c: SEEDEncoderConfig, x_NxTxD, compute_dtype) -> jax.Array:
  """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x))."""
  h = layer_norm(x_NxTxD, block["norm1"], c.vision_eps)
  q, k, v = jnp.split(dense(h, block["qkv"], compute_dtype), 3, axis=-1)
  attn = attend(q, k, v, c.vision_heads, compute_dtype)
  x_NxTxD = x_NxTxD + dense(attn, block["proj"], compute_dtype)
  h = layer_norm(x_NxTxD, block["norm2"], c.vision_eps)
  h = gelu(dense(h, block["fc1"], compute_dtype))
  return x_NxTxD + dense(h, block["fc2"], compute_dtype)


def vision_features(params: dict, c: SEEDEncoderConfig, pixels_NxCxHxW, compute_dtype):
  """CLIP-normalised pixels -> ln_vision(EVA ViT) tokens [N, 1 + grid^2, vision_width]."""
  x_NxTxD = patch_embed(params, c, pixels_NxCxHxW, compute_dtype)

  def step(x, block):
    return eva_block(block, c, x, compute_dtype), None

  x_NxTxD, _ = jax.lax.scan(step, x_NxTxD, params["vision_blocks"])
  return layer_norm(x_NxTxD, params["ln_vision"], c.ln_vision_eps)


# ---- Q-Former ------------------------------------------------------------------------------------
def qformer_attention(p: dict, c, x_NxQxH, source_NxSxD, compute_dtype, mask_QxS=None):
  """BERT attention, post-norm: LayerNorm(x + out(attend(query(x), key(src), value(src))))."""
  out = attend(
    dense(x_NxQxH, p["query"], compute_dtype),
    dense(source_NxSxD, p["key"], compute_dtype),
    dense(source_NxSxD, p["value"], compute_dtype),
    c.qformer_heads,
    compute_dtype,
    mask_QxS,
  )
  return layer_norm(x_NxQxH + dense(out, p["out"], compute_dtype), p["norm"], c.qformer_eps)


def qformer_layer(layer: dict, c: SEEDEncoderConfig, x_NxQxH, image_NxSxD, compute_dtype):
  """Causal self-attention among the queries, cross-attention to the image (when this layer has
  it), then the queries' feed-forward, each with its residual and post-LayerNorm."""
  causal_QxQ = jnp.tril(jnp.ones((c.num_queries, c.num_queries), bool))  # query i sees 0..i
  x_NxQxH = qformer_attention(layer["self_attn"], c, x_NxQxH, x_NxQxH, compute_dtype, causal_QxQ)
  if "cross_attn" in layer:
    x_NxQxH = qformer_attention(layer["cross_attn"], c, x_NxQxH, image_NxSxD, compute_dtype)
  h = gelu(dense(x_NxQxH, layer["ffn_in"], compute_dtype))
  h = dense(h, layer["ffn_out"], compute_dtype)
  return layer_norm(x_NxQxH + h, layer["ffn_norm"], c.qformer_eps)


def query_features(params: dict, c: SEEDEncoderConfig, image_NxSxD, compute_dtype):
  """ln_vision tokens -> Q-Former outputs [N, num_queries, qformer_width]."""
  n = image_NxSxD.shape[0]
  queries = jnp.broadcast_to(params["query_tokens_1xQxH"], (n, c.num_queries, c.qformer_width))
  x_NxQxH = layer_norm(queries, params["query_norm"], c.qformer_eps)
  for layer in params["qformer_layers"]:
    x_NxQxH = qformer_layer(layer, c, x_NxQxH, image_NxSxD, compute_dtype)
  return x_NxQxH


# ---- task layer and VQ ---------------------------------------------------------------------------
def task_features(params: dict, x_NxQxH, compute_dtype) -> jax.Array:
  """encode_task_layer: Linear, Tanh, Linear -> [N, num_queries, codebook_dim] (float32)."""
  h = jnp.tanh(dense(x_NxQxH, params["task_in"], compute_dtype))
  return dense(h, params["task_out"], compute_dtype)


def nearest_codes(z_NxQxE, codebook_KxE) -> jax.Array:
  """int32 index of the closest codebook row by squared L2 distance, in float32 at full
  precision (|z|^2 + |e|^2 - 2 z.e, the torch module's formula, so near-ties break alike)."""
  z = z_NxQxE.astype(jnp.float32)
  e = codebook_KxE.astype(jnp.float32)
  cross_NxQxK = jnp.einsum("nqe,ke->nqk", z, e, precision=jax.lax.Precision.HIGHEST)
  dist_NxQxK = (z * z).sum(-1, keepdims=True) + (e * e).sum(-1) - 2.0 * cross_NxQxK
  return jnp.argmin(dist_NxQxK, axis=-1).astype(jnp.int32)


# ---- the encoder ---------------------------------------------------------------------------------
def check_pixels(pixels_NxCxHxW, c: SEEDEncoderConfig) -> None:
  """Shapes are static under jit: a wrong layout fails at trace time with a clear message."""
  want = (3, c.image_size, c.image_size)
  if pixels_NxCxHxW.ndim != 4 or tuple(pixels_NxCxHxW.shape[1:]) != want:
    raise UserError(
      f"SEED encoder: pixels of shape {tuple(pixels_NxCxHxW.shape)}; expected [N, 3, "
      f"{c.image_size}, {c.image_size}] (NxCxHxW, CLIP-normalised, as the adapter's pixels())"
    )


def stages(
  params: dict, config: SEEDEncoderConfig, pixels_NxCxHxW, compute_dtype=jnp.float32
) -> dict:
  """Every stage of the encoder, to locate a disagreement: {"vision": [N, T, Dv] ln_vision
  tokens, "queries": [N, Q, H] Q-Former outputs, "z": [N, Q, E] pre-VQ features, "codes": int32
  [N, Q]}."""
  check_pixels(pixels_NxCxHxW, config)
  image_NxSxD = vision_features(params, config, pixels_NxCxHxW, compute_dtype)
  queries_NxQxH = query_features(params, config, image_NxSxD, compute_dtype)
  z_NxQxE = task_features(params, queries_NxQxH, compute_dtype)
  codes_NxQ = nearest_codes(z_NxQxE, params["codebook_KxE"])
  return {"vision": image_NxSxD, "queries": queries_NxQxH, "z": z_NxQxE, "codes": codes_NxQ}


# `stages` jitted, for tests and debugging (config and compute_dtype static).
encode_stages = jax.jit(stages, static_argnames=("config", "compute_dtype"))


@functools.partial(jax.jit, static_argnames=("config", "compute_dtype"))
def encode_pixels(
  params: dict, config: SEEDEncoderConfig, pixels_NxCxHxW, compute_dtype=jnp.float32
) -> jax.Array:
  """NxCxHxW float32 CLIP-normalised pixels (the adapter's `pixels()`, stacked along N) ->
  int32 codes [N, num_queries]. XLA drops the stages' other outputs."""
  return stages(params, config, pixels_NxCxHxW, compute_dtype)["codes"]
