"""Import/export Hugging Face Llama-family checkpoints and grow the vocabulary.

HF `Linear` weights are [out, in]; ours are [in, out] with the head axes split out:

    model.embed_tokens.weight [V, D]                  → embedding [V, D]
    model.layers.i.self_attn.q_proj.weight [H*K, D]   → layers/attention/q [D, H, K]
    model.layers.i.self_attn.{k,v}_proj [G*K, D]      → layers/attention/{k,v} [D, G, K]
    model.layers.i.self_attn.o_proj [D, H*K]          → layers/attention/o [H, K, D]
    model.layers.i.mlp.{gate,up}_proj [F, D]          → layers/mlp/{gate,up} [D, F]
    model.layers.i.mlp.down_proj [D, F]               → layers/mlp/down [F, D]
    model.layers.i.input_layernorm / post_attention_layernorm → layers/{attention,mlp}_norm/scale
    model.norm.weight [D] → final_norm/scale          lm_head.weight [V, D] → lm_head [D, V]

Our RoPE uses HF's rotate-half convention, so q/k import without a permutation. Accepted:
`LlamaForCausalLM` and the original Yi release (`YiForCausalLM`, norms named `ln1`/`ln2`).
`tie_word_embeddings=true` is imported by copying the embedding into `lm_head` (our model is
untied); export always writes untied weights. Biases, RoPE scaling and non-SiLU activations are
rejected with an error naming config.json.

Weights are read from `model.safetensors`, `model.safetensors.index.json` + shards, or (as MIO's
release ships them) `pytorch_model.bin` / `pytorch_model.bin.index.json` + `pytorch_model-*.bin`
shards. A `.bin` shard is read with `torch.load(f, weights_only=True, map_location="cpu")` only,
which refuses anything but tensors and plain containers (never a general unpickle), one shard at a
time: tensors are consumed shard by shard and a shard is dropped before the next loads. torch is a
test extra; without it a `.bin` directory is one error saying how to install it.
Checkpoint directories may be local or URLs (gs://): their weight files are read from a temporary
local copy (safetensors memory-mapped, one tensor at a time) that is removed after loading.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping

import jax
import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from mio_jax.hf import release_vocab as hf_vocab
from mio_jax.hf.config_json import (
  HFCheckpointError,
  config_from_hf,
  config_to_hf,
  unbox,
)
from mio_jax.hf.release_vocab import VOCAB_FILE
from mio_jax.io import paths
from mio_jax.model.architecture import ModelConfig
from mio_jax.tokens.vocab import Vocab

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# torch's pickled weights, as MIO's release (and older HF uploads) ship them.
BIN_FILE = "pytorch_model.bin"
BIN_INDEX_FILE = "pytorch_model.bin.index.json"
TORCH_INSTALL = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
# Old Yi checkpoints name the two per-layer norms differently; everything else matches Llama.
_ALIASES = (
  (re.compile(r"\.ln1\.weight$"), ".input_layernorm.weight"),
  (re.compile(r"\.ln2\.weight$"), ".post_attention_layernorm.weight"),
)
# Buffers some old exports contain; recomputed from the config, so safe to skip.
_IGNORED = re.compile(r"\.rotary_emb\.inv_freq$")


# ---- name/shape table ----------------------------------------------------------------------------
def _layer_specs(cfg: ModelConfig):
  """(HF suffix, our (module, name), HF shape, our shape, transposed) for one decoder layer."""
  d, h, g, k, f = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn_dim
  return (
    ("self_attn.q_proj.weight", ("attention", "q"), (h * k, d), (d, h, k), True),
    ("self_attn.k_proj.weight", ("attention", "k"), (g * k, d), (d, g, k), True),
    ("self_attn.v_proj.weight", ("attention", "v"), (g * k, d), (d, g, k), True),
    ("self_attn.o_proj.weight", ("attention", "o"), (d, h * k), (h, k, d), True),
    ("mlp.gate_proj.weight", ("mlp", "gate"), (f, d), (d, f), True),
    ("mlp.up_proj.weight", ("mlp", "up"), (f, d), (d, f), True),
    ("mlp.down_proj.weight", ("mlp", "down"), (d, f), (f, d), True),
    ("input_layernorm.weight", ("attention_norm", "scale"), (d,), (d,), False),
    ("post_attention_layernorm.weight", ("mlp_norm", "scale"), (d,), (d,), False),
  )


def _specs(cfg: ModelConfig):
  """(HF name, our path as a tuple with layer index or None, HF shape, our shape, transposed)."""
  v, d = cfg.vocab_size, cfg.d_model
  out = [("model.embed_tokens.weight", (None, "embedding"), (v, d), (v, d), False)]
  for i in range(cfg.n_layers):
    out += [
      (f"model.layers.{i}.{suffix}", (i, *path), hf_shape, shape, t)
      for suffix, path, hf_shape, shape, t in _layer_specs(cfg)
    ]
  out += [
    ("model.norm.weight", (None, "final_norm", "scale"), (d,), (d,), False),
    ("lm_head.weight", (None, "lm_head"), (v, d), (d, v), True),
  ]
  return out


def _to_ours(w, shape, transposed):
  return w.T.reshape(shape) if transposed else w.reshape(shape)


def _to_hf(p, hf_shape, transposed):
  return p.reshape(hf_shape[::-1]).T if transposed else p.reshape(hf_shape)


# ---- reading -------------------------------------------------------------------------------------
class _Tensors:
  """Tensor name → array across one file or an index of shards (safetensors or torch `.bin`);
  errors name the file. `close()` removes the local copies of a URL checkpoint's files."""

  def __init__(self, path: str):
    self._tmp, self._open, self._bin = None, {}, None
    present = set(paths.listdir(path)) if paths.isdir(path) else set()
    # Safetensors first, as transformers prefers them; then torch's .bin.
    for single, index in ((SINGLE_FILE, INDEX_FILE), (BIN_FILE, BIN_INDEX_FILE)):
      if single in present:
        file = paths.join(path, single)
        if single == SINGLE_FILE:
          with safe_open(self._local(file), framework="numpy") as f:
            self.where = {name: file for name in f.keys()}
        else:
          self.where = {name: file for name in self._bin_tensors(file)}
        break
      if index in present:
        self.where = self._weight_map(path, paths.join(path, index), present)
        break
    else:
      names = (SINGLE_FILE, INDEX_FILE, BIN_FILE, BIN_INDEX_FILE)
      raise HFCheckpointError(f"{path}: none of {', '.join(names)} found")
    # Shard order as the index lists them: tensors are read one shard after another.
    self.files = list(dict.fromkeys(self.where.values()))
    # Canonical (Llama) name → name stored in the file.
    self.stored = {}
    for name in self.where:
      canonical = name
      for pattern, repl in _ALIASES:
        canonical = pattern.sub(repl, canonical)
      self.stored[canonical] = name

  @staticmethod
  def _weight_map(path: str, index: str, present: set) -> dict:
    """{tensor name: shard file} from an index, every shard it names checked to exist."""
    try:
      weight_map = json.loads(paths.read_text(index)).get("weight_map")
    except json.JSONDecodeError as e:
      raise HFCheckpointError(f"{index}: not valid JSON ({e})") from e
    if not isinstance(weight_map, dict):
      raise HFCheckpointError(f"{index}: no 'weight_map' object")
    where = {name: paths.join(path, file) for name, file in weight_map.items()}
    absent = sorted({paths.basename(f) for f in where.values() if paths.basename(f) not in present})
    if absent:
      raise HFCheckpointError(f"{index}: shard file(s) missing: {absent}")
    return where

  def _local(self, file: str) -> str:
    """`file` itself when local; else its copy in this reader's temp dir (safe_open needs one)."""
    if not paths.is_url(file):
      return file
    self._tmp = self._tmp or tempfile.mkdtemp(prefix="mio_jax_hf-")
    local = os.path.join(self._tmp, paths.basename(file))
    if not os.path.exists(local):
      paths.copy_file(file, local)
    return local

  def _bin_tensors(self, file: str) -> dict:
    """One `.bin` shard's {name: tensor}; the previous shard (and its local copy) is dropped
    first, so only one shard is ever in memory."""
    if self._bin is not None and self._bin[0] == file:
      return self._bin[1]
    if self._bin is not None:
      old, self._bin = self._bin[0], None
      if paths.is_url(old) and self._tmp:
        os.remove(os.path.join(self._tmp, paths.basename(old)))
    try:
      import torch
    except ModuleNotFoundError:
      raise HFCheckpointError(
        f"{file}: reading torch .bin weights needs torch: {TORCH_INSTALL}"
      ) from None
    try:
      with open(self._local(file), "rb") as f:
        state = torch.load(f, weights_only=True, map_location="cpu")
    except (_unpickling_error(torch), RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as e:
      # weights_only refuses any object but tensors and plain containers (UnpicklingError);
      # a truncated file fails in torch's zip reader (RuntimeError) or the unpickler (EOFError).
      first = (str(e).strip().splitlines() or [type(e).__name__])[0]
      raise HFCheckpointError(
        f"{file}: not a readable torch state dict (truncated, or not plain tensors): {first}"
      ) from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
      what = type(state).__name__
      if isinstance(state, dict):
        what = "a dict holding " + ", ".join(
          sorted({type(v).__name__ for v in state.values() if not torch.is_tensor(v)})
        )
      raise HFCheckpointError(f"{file}: expected a flat {{name: tensor}} state dict, got {what}")
    self._bin = (file, state)
    return state

  def close(self) -> None:
    self._open.clear()
    self._bin = None
    if self._tmp is not None:
      shutil.rmtree(self._tmp, ignore_errors=True)

  def __enter__(self):
    return self

  def __exit__(self, *_):
    self.close()

  def file_of(self, name: str) -> str | None:
    stored = self.stored.get(name)
    return None if stored is None else self.where[stored]

  def get(self, name: str) -> tuple[np.ndarray, str]:
    if name not in self.stored:
      files = sorted(set(self.where.values())) or ["(no tensors)"]
      raise HFCheckpointError(f"{', '.join(files)}: tensor {name} not found")
    stored = self.stored[name]
    file = self.where[stored]
    index = BIN_INDEX_FILE if file.endswith(".bin") else INDEX_FILE
    if file.endswith(".bin"):
      state = self._bin_tensors(file)
      if stored not in state:
        raise HFCheckpointError(f"{file}: tensor {stored} listed in {index} but not in the file")
      return _torch_to_numpy(state[stored]), file
    if file not in self._open:
      handle = safe_open(self._local(file), framework="numpy")
      self._open[file] = handle, set(handle.keys())
    handle, names = self._open[file]
    if stored not in names:
      raise HFCheckpointError(f"{file}: tensor {stored} listed in {index} but not in the file")
    return handle.get_tensor(stored), file

  def unused(self, used: set) -> list:
    return sorted(s for c, s in self.stored.items() if c not in used and not _IGNORED.search(s))


def _unpickling_error(torch) -> type:
  """The error torch's weights_only loader raises for an object it refuses (pickle's own class,
  reached through torch so that nothing here imports pickle: this module never unpickles)."""
  return torch.serialization.pickle.UnpicklingError


def _torch_to_numpy(t) -> np.ndarray:
  """A CPU tensor as numpy in its own dtype (bf16 via its bits: numpy has no bf16 of its own)."""
  import torch

  t = t.detach().contiguous()
  if t.dtype == torch.bfloat16:
    return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.numpy()


def load_hf(
  path: str,
  scan_layers: bool = True,
  dtype: str = "float32",
  param_dtype: str = "float32",
  **overrides,
) -> tuple[ModelConfig, dict]:
  """Reads an HF Llama-family checkpoint dir → (ModelConfig, params as numpy arrays).

  `scan_layers` picks the param layout (layers stacked on axis 0 under `layers`, or `layers_i`);
  `dtype` is the compute dtype recorded in the config; arrays are cast to `param_dtype`.
  Extra keyword arguments override ModelConfig fields (e.g. remat_policy).
  """
  cfg, tied = load_hf_config(
    path, scan_layers=scan_layers, dtype=dtype, param_dtype=param_dtype, **overrides
  )
  return cfg, load_hf_params(path, cfg, tied, param_dtype)


def load_hf_config(path: str, **overrides) -> tuple[ModelConfig, bool]:
  """(ModelConfig, tied embeddings) from `path`/config.json, before any weight is read (so a
  caller can pick the dtype and placement first). Keyword arguments override ModelConfig fields."""
  config_file = paths.join(path, "config.json")
  if not paths.exists(config_file):
    raise HFCheckpointError(f"{config_file}: not found")
  param_dtype = overrides.get("param_dtype", "float32")
  if param_dtype not in DTYPES:
    raise ValueError(f"load_hf param_dtype {param_dtype!r} not in {sorted(DTYPES)}")
  try:
    hf_config = json.loads(paths.read_text(config_file))
  except json.JSONDecodeError as e:
    raise HFCheckpointError(f"{config_file}: not valid JSON ({e})") from e
  return config_from_hf(hf_config, config_file, **overrides)


def load_hf_params(path: str, cfg: ModelConfig, tied: bool, param_dtype: str = "float32") -> dict:
  """`path`'s weights as our params (numpy, layout per cfg.scan_layers, cast to `param_dtype`)."""
  if param_dtype not in DTYPES:
    raise ValueError(f"load_hf param_dtype {param_dtype!r} not in {sorted(DTYPES)}")
  with _Tensors(path) as tensors:
    return _read_params(cfg, tensors, tied, param_dtype, path, paths.join(path, "config.json"))


def _read_params(
  cfg: ModelConfig, tensors: _Tensors, tied: bool, param_dtype: str, path: str, config_file: str
) -> dict:
  """Our params (layout per cfg.scan_layers) from the checkpoint's tensors, shape-checked."""
  scan_layers = cfg.scan_layers
  out_dtype = np.dtype(DTYPES[param_dtype])
  # Tied checkpoints may still store a (redundant) lm_head copy; HF ignores it, and so do we.
  params, used = {}, {"lm_head.weight"} if tied else set()

  def source_of(hf_name):
    return "model.embed_tokens.weight" if tied and hf_name == "lm_head.weight" else hf_name

  # Shard by shard (a .bin shard is loaded whole, and only once); missing names first, so they
  # fail before any shard is read.
  order = {file: i for i, file in enumerate(tensors.files)}
  specs = sorted(_specs(cfg), key=lambda s: order.get(tensors.file_of(source_of(s[0])), -1))
  for hf_name, (layer, *keys), hf_shape, shape, transposed in specs:
    source = source_of(hf_name)
    w, file = tensors.get(source)
    used.add(source)
    if w.shape != hf_shape:
      raise HFCheckpointError(
        f"{file}: tensor {source} has shape {list(w.shape)}, expected "
        f"{list(hf_shape)} from {config_file}"
      )
    p = _to_ours(w, shape, transposed).astype(out_dtype)
    if layer is None:
      _put(params, keys, p)
    elif scan_layers:
      stacked = _get(params, ["layers", *keys], default=None)
      if stacked is None:  # preallocate, so peak memory stays ~1x the model
        stacked = _put(params, ["layers", *keys], np.empty((cfg.n_layers, *shape), out_dtype))
      stacked[layer] = p
    else:
      _put(params, [f"layers_{layer}", *keys], p)
  unused = tensors.unused(used)
  if unused:
    raise HFCheckpointError(
      f"{path}: tensors not part of a Llama model (unsupported feature?): "
      f"{unused[:8]}{' ...' if len(unused) > 8 else ''}"
    )
  return params


# ---- writing -------------------------------------------------------------------------------------
def save_hf(
  config: ModelConfig,
  params,
  path: str,
  dtype: str = "bfloat16",
  vocab: Vocab | None = None,
  max_shard_bytes: int = 5 * 2**30,
  max_position_embeddings: int = 4096,
  tokenizer_from: str | None = None,
) -> None:
  """Writes config.json + safetensors (sharded above `max_shard_bytes`) loadable by
  `transformers.AutoModelForCausalLM.from_pretrained(path)`, plus mio_vocab.json when `vocab` is
  given.
  The `mio` layout is written as MIO's release: exactly `vocab.size` rows, MIO's config keys, and
  the tokenizer files of `tokenizer_from` (checked against the layout) when given.

  `params`: scanned or unscanned layout, plain arrays or Flax boxed values. Old model*.safetensors
  files in `path` are removed first so a stale shard can never be mixed in.
  """
  if dtype not in DTYPES:
    raise ValueError(f"save_hf dtype {dtype!r} not in {sorted(DTYPES)}")
  if vocab is not None and vocab.padded_size != config.vocab_size:
    raise ValueError(
      f"vocab has {vocab.padded_size} padded rows but config.vocab_size is {config.vocab_size}"
    )
  if tokenizer_from:  # before any file is written
    if vocab is None:
      raise ValueError("save_hf: tokenizer_from needs the vocab to check its added tokens")
    hf_vocab.check_tokenizer(vocab, tokenizer_from)
  params = unbox(params)
  if vocab is not None and vocab.hf_rows < config.vocab_size:
    params, config = hf_vocab.strip_rows(params, config, vocab.hf_rows)
  scanned = _layout(config, params)
  np_dtype = np.dtype(DTYPES[dtype])
  specs = _specs(config)

  def tensor(spec):
    p = _lookup(params, scanned, config.n_layers, spec)
    if scanned and spec[1][0] is not None:
      p = p[spec[1][0]]
    return np.ascontiguousarray(_to_hf(np.asarray(p), spec[2], spec[4]).astype(np_dtype))

  # Group tensors into shards by size; each shard is materialised only while it is written.
  shards, size = [[]], 0
  for spec in specs:
    nbytes = int(np.prod(spec[2])) * np_dtype.itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(spec)
    size += nbytes
  for spec in specs:  # validate everything before touching the directory
    _lookup(params, scanned, config.n_layers, spec)

  paths.makedirs(path)
  for f in paths.listdir(path) if paths.isdir(path) else []:  # a bucket has no empty dirs
    if f in (SINGLE_FILE, INDEX_FILE) or re.fullmatch(r"model-\d+-of-\d+\.safetensors", f):
      paths.remove_tree(paths.join(path, f))
  n = len(shards)
  names = (
    [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
  )
  weight_map, total = {}, 0
  for name, shard in zip(names, shards):
    arrays = {spec[0]: tensor(spec) for spec in shard}
    _save_safetensors(arrays, paths.join(path, name))
    total += sum(a.nbytes for a in arrays.values())
    weight_map.update({k: name for k in arrays})
  if n > 1:
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    paths.write_text(paths.join(path, INDEX_FILE), json.dumps(index, indent=2))
  hf_config = config_to_hf(config, dtype, max_position_embeddings)
  if vocab is not None and vocab.layout_name == "mio":
    hf_config.update(hf_vocab.mio_config_keys(vocab))
  paths.write_text(paths.join(path, "config.json"), json.dumps(hf_config, indent=2))
  if vocab is not None:
    paths.write_text(paths.join(path, VOCAB_FILE), vocab.to_json())
  if tokenizer_from:
    hf_vocab.copy_tokenizer(vocab, tokenizer_from, path)


def _save_safetensors(arrays: dict, file: str) -> None:
  """Streams to disk, then (for a URL) uploads: a shard never has to exist twice in memory."""
  if not paths.is_url(file):
    save_file(arrays, file, metadata={"format": "pt"})
    os.chmod(file, paths.default_file_mode())  # safetensors writes 0600
    return
  tmp = tempfile.mkdtemp(prefix="mio_jax_hf-")
  try:
    local = os.path.join(tmp, paths.basename(file))
    save_file(arrays, local, metadata={"format": "pt"})
    paths.copy_file(local, file)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _lookup(params, scanned, n_layers, spec):
  """Our array for one HF tensor (the whole [L, ...] stack when scanned), shape-checked."""
  hf_name, (layer, *keys), _, shape, _ = spec
  if layer is not None and scanned:
    keys, shape = ["layers", *keys], (n_layers, *shape)
  elif layer is not None:
    keys = [f"layers_{layer}", *keys]
  where = "/".join(keys)
  p = _get(params, keys)
  if p is None:
    raise ValueError(f"params: {where} missing (needed for {hf_name})")
  if tuple(p.shape) != tuple(shape):
    raise ValueError(
      f"params: {where} has shape {list(p.shape)}, expected {list(shape)} from the config"
    )
  return p


def _layout(config: ModelConfig, params: dict) -> bool:
  """True for the scanned layout; checks the layer count either way."""
  if "layers" in params:
    leaves = jax.tree.leaves(params["layers"])
    counts = {leaf.shape[0] for leaf in leaves}
    if counts != {config.n_layers}:
      raise ValueError(
        f"params: scanned layers have leading sizes {sorted(counts)}, config.n_layers is "
        f"{config.n_layers}"
      )
    return True
  found = sorted(int(k.split("_")[1]) for k in params if re.fullmatch(r"layers_\d+", k))
  if found != list(range(config.n_layers)):
    raise ValueError(
      f"params: expected layers_0..layers_{config.n_layers - 1}, found "
      f"{[f'layers_{i}' for i in found]}"
    )
  return False


# ---- small tree helpers --------------------------------------------------------------------------
def _get(tree, keys, default=None):
  for k in keys:
    if not isinstance(tree, Mapping) or k not in tree:
      return default
    tree = tree[k]
  return tree


def _put(tree, keys, value):
  for k in keys[:-1]:
    tree = tree.setdefault(k, {})
  tree[keys[-1]] = value
  return value
