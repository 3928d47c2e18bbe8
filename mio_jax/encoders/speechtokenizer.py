"""SpeechTokenizer's encoder (MIO's speech tokenizer) in JAX: SEANet convs, BiLSTM, residual VQ.

Reads the directory the torch adapter (data_pipelines/tokenizers/speechtokenizer_adapter.py)
loads: `config.json` (the released one) + `model.safetensors` (the `speechtokenizer` package's
state dict), local or gs://. Weight norm (`weight_g`, `weight_v`) is folded into plain kernels
once, at load time. `encode_wave` maps 16 kHz waves float32 [B, T] to codes int32
[B, num_layers, frames]: row b is what the adapter's `encode` returns for wave b ([L, T]), i.e.
the package's `model.encode(x, n_q)` ([n_q, B, T]) with the batch axis moved first.

The network, as `speechtokenizer.modules.seanet.SEANetEncoder` builds it from the config (the
model passes only the config's keys; everything else keeps the package's defaults: non-causal,
reflect padding, 1x1-conv shortcuts, kernel 7 first and last, compress 2):

  conv(1 -> n_filters, 7)
  for each stride s in reversed(strides):          channels C doubles at each stage
    n_residual_layers x [ELU, conv(C -> C/2, 3, dilation base**j), ELU, conv(C/2 -> C, 1)]
                        + conv(C -> C, 1) shortcut
    ELU, conv(C -> 2C, kernel 2s, stride s)
  LSTM(C, C, lstm_layers, bidirectional) + skip (x tiled twice when bidirectional)
  ELU, conv(2C or C -> dimension, 7)
  residual VQ: nearest codebook row by squared L2, subtract it, next quantizer.

Every conv pads as `SConv1d` does: `padding_total = (k - 1) * dilation - (stride - 1)` split
left/right (or all left when causal), plus the extra right padding that makes the last window
full, in reflect mode with `pad1d`'s zero pre-padding for inputs shorter than the padding.
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mio_jax.errors import UserError
from mio_jax.io import paths

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ENCODER_PREFIX = "encoder.model"
CODEBOOK_KEY = "quantizer.vq.layers.{}._codebook.embed"
# SEANetEncoder's constructor defaults that SpeechTokenizer never overrides.
FIRST_KERNEL = 7
LAST_KERNEL = 7
COMPRESS = 2
# Config keys the encoder's shape depends on (as the package's model.py reads them).
REQUIRED_KEYS = (
  "n_filters",
  "dimension",
  "strides",
  "lstm_layers",
  "bidirectional",
  "dilation_base",
  "residual_kernel_size",
  "n_residual_layers",
  "activation",
  "sample_rate",
  "n_q",
  "codebook_size",
)


class SpeechEncoderLoadError(UserError, ValueError):
  """A SpeechTokenizer directory whose config or weights do not make the encoder: names the file
  and the key or tensor at fault."""


@dataclasses.dataclass(frozen=True)
class SpeechEncoderConfig:
  """The encoder's static shape (hashable: a static argument of the jitted `encode_wave`).
  `strides` in the config's order (the decoder's); the encoder runs them reversed."""

  n_filters: int
  dimension: int
  strides: tuple[int, ...]
  lstm_layers: int
  bidirectional: bool
  dilation_base: int
  residual_kernel_size: int
  n_residual_layers: int
  sample_rate: int
  codebook_size: int
  num_layers: int
  # The package's SEANet defaults; fields so the padding code can follow SConv1d either way.
  causal: bool = False
  pad_mode: str = "reflect"

  @property
  def hop_length(self) -> int:
    return int(np.prod(self.strides))

  @property
  def frame_rate(self) -> int:
    return self.sample_rate // self.hop_length

  def num_frames(self, num_samples: int) -> int:
    """Frames for a wave of `num_samples` (each strided conv rounds its length up)."""
    for stride in reversed(self.strides):
      num_samples = -(-num_samples // stride)
    return num_samples


# ---- loading ------------------------------------------------------------------------------------
def config_from_json(cfg: dict, num_layers: int, where: str = CONFIG_FILE) -> SpeechEncoderConfig:
  """SpeechEncoderConfig from the released config.json's dict; errors name `where` and the key."""
  missing = [k for k in REQUIRED_KEYS if cfg.get(k) is None]
  if missing:
    raise SpeechEncoderLoadError(f"{where}: missing SpeechTokenizer key(s) {missing}")
  if cfg["activation"] != "ELU":
    # Snake (the package's other choice) is not used by any released SpeechTokenizer.
    raise SpeechEncoderLoadError(
      f"{where}: activation {cfg['activation']!r} not supported by the JAX encoder (only 'ELU')"
    )
  if not 1 <= num_layers <= int(cfg["n_q"]):
    raise SpeechEncoderLoadError(
      f"num_layers {num_layers} outside [1, {cfg['n_q']}] (n_q of {where})"
    )
  strides = tuple(int(s) for s in cfg["strides"])
  if not strides or min(strides) < 1:
    raise SpeechEncoderLoadError(f"{where}: strides {cfg['strides']} must be positive ints")
  return SpeechEncoderConfig(
    n_filters=int(cfg["n_filters"]),
    dimension=int(cfg["dimension"]),
    strides=strides,
    lstm_layers=int(cfg["lstm_layers"]),
    bidirectional=bool(cfg["bidirectional"]),
    dilation_base=int(cfg["dilation_base"]),
    residual_kernel_size=int(cfg["residual_kernel_size"]),
    n_residual_layers=int(cfg["n_residual_layers"]),
    sample_rate=int(cfg["sample_rate"]),
    codebook_size=int(cfg["codebook_size"]),
    num_layers=int(num_layers),
  )


class StateDict:
  """The state dict of one safetensors file; `take` checks presence and shape, naming both."""

  def __init__(self, tensors: dict[str, np.ndarray], where: str):
    self.tensors = tensors
    self.where = where

  def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in self.tensors:
      raise SpeechEncoderLoadError(f"{self.where}: tensor {name} missing")
    value = self.tensors[name]
    if tuple(value.shape) != tuple(shape):
      raise SpeechEncoderLoadError(
        f"{self.where}: tensor {name} has shape {tuple(value.shape)}, expected {tuple(shape)}"
      )
    return np.asarray(value, np.float32)

  def conv(self, name: str, out_ch: int, in_ch: int, kernel: int) -> dict[str, np.ndarray]:
    """`{kernel_KxIxO, bias_O}` of the Conv1d at `name` (e.g. encoder.model.0.conv.conv), its
    weight norm folded: weight = g * v / ||v||, the norm over all axes but the output channel
    (torch's weight_norm with dim=0). Accepts the old `weight_g/_v` spelling (what the package
    writes with torch.nn.utils.weight_norm), the parametrizations one, or a plain `weight`."""
    shape = (out_ch, in_ch, kernel)
    if f"{name}.weight_v" in self.tensors or f"{name}.weight_g" in self.tensors:
      g_key, v_key = f"{name}.weight_g", f"{name}.weight_v"
    elif f"{name}.parametrizations.weight.original1" in self.tensors:
      g_key = f"{name}.parametrizations.weight.original0"
      v_key = f"{name}.parametrizations.weight.original1"
    else:
      g_key = v_key = None
    if v_key is None:
      weight_OxIxK = self.take(f"{name}.weight", shape)
    else:
      v = self.take(v_key, shape).astype(np.float64)
      g = self.take(g_key, (out_ch, 1, 1)).astype(np.float64)
      norm = np.sqrt(np.sum(v * v, axis=(1, 2), keepdims=True))
      weight_OxIxK = (g * v / norm).astype(np.float32)
    return {
      "kernel_KxIxO": np.transpose(weight_OxIxK, (2, 1, 0)),  # lax conv: spatial, in, out
      "bias_O": self.take(f"{name}.bias", (out_ch,)),
    }

  def lstm_layer(self, name: str, layer: int, directions: int, in_dim: int, hidden: int) -> dict:
    """Layer `layer` of the nn.LSTM at `name`, its directions stacked (0: forward, 1: the
    `_reverse` one): weights transposed for `x @ w`, the two biases summed (torch adds both to
    every gate)."""
    gates = 4 * hidden
    stacked = {"w_ih_NxDxG": [], "w_hh_NxHxG": [], "bias_NxG": []}
    for suffix in ("", "_reverse")[:directions]:
      key = f"{name}.{{}}_l{layer}{suffix}"
      stacked["w_ih_NxDxG"].append(self.take(key.format("weight_ih"), (gates, in_dim)).T)
      stacked["w_hh_NxHxG"].append(self.take(key.format("weight_hh"), (gates, hidden)).T)
      stacked["bias_NxG"].append(
        self.take(key.format("bias_ih"), (gates,)) + self.take(key.format("bias_hh"), (gates,))
      )
    return {k: np.stack(v) for k, v in stacked.items()}


def _encoder_params(t: StateDict, config: SpeechEncoderConfig) -> dict:
  """The encoder's weights, walking `encoder.model.<i>` in the order SEANetEncoder appends its
  modules (ELUs take an index but hold no weights)."""
  index = 0

  def conv_at(path: str, out_ch: int, in_ch: int, kernel: int) -> dict:
    return t.conv(f"{ENCODER_PREFIX}.{path}", out_ch, in_ch, kernel)

  params = {"input_conv": conv_at(f"{index}.conv.conv", config.n_filters, 1, FIRST_KERNEL)}
  index += 1
  channels = config.n_filters
  stages = []
  for stride in reversed(config.strides):
    blocks = []
    for _ in range(config.n_residual_layers):
      hidden = channels // COMPRESS
      k = config.residual_kernel_size
      blocks.append(
        {
          "conv_in": conv_at(f"{index}.block.1.conv.conv", hidden, channels, k),
          "conv_out": conv_at(f"{index}.block.3.conv.conv", channels, hidden, 1),
          "shortcut": conv_at(f"{index}.shortcut.conv.conv", channels, channels, 1),
        }
      )
      index += 1
    index += 1  # the ELU before the downsampling conv
    downsample = conv_at(f"{index}.conv.conv", 2 * channels, channels, 2 * stride)
    index += 1
    stages.append({"residual_blocks": blocks, "downsample": downsample})
    channels *= 2
  params["stages"] = stages
  lstm = []
  if config.lstm_layers:
    name = f"{ENCODER_PREFIX}.{index}.lstm"
    directions = 2 if config.bidirectional else 1
    for layer in range(config.lstm_layers):
      in_dim = channels if layer == 0 else directions * channels
      lstm.append(t.lstm_layer(name, layer, directions, in_dim, channels))
    index += 1
  params["lstm"] = lstm
  index += 1  # the final ELU
  out_in = 2 * channels if config.bidirectional else channels
  params["output_conv"] = conv_at(f"{index}.conv.conv", config.dimension, out_in, LAST_KERNEL)
  return params


def load_speech_encoder(directory: str, num_layers: int = 4) -> tuple[dict, SpeechEncoderConfig]:
  """(params: a pytree of jnp float32 arrays, config) from a SpeechTokenizer directory (local or
  gs://) holding config.json and model.safetensors; keeps the first `num_layers` RVQ codebooks
  (MIO: 4). SpeechEncoderLoadError names the file and the key or tensor when one is missing or
  has the wrong shape."""
  from safetensors.numpy import load as load_safetensors

  config_path = paths.join(directory, CONFIG_FILE)
  weights_path = paths.join(directory, WEIGHTS_FILE)
  for p in (config_path, weights_path):
    if not paths.exists(p):
      raise SpeechEncoderLoadError(
        f"SpeechTokenizer directory {directory} lacks {paths.basename(p)}"
      )
  try:
    cfg = json.loads(paths.read_text(config_path))
  except json.JSONDecodeError as e:
    raise SpeechEncoderLoadError(f"{config_path}: not valid JSON ({e})") from None
  if not isinstance(cfg, dict):
    raise SpeechEncoderLoadError(f"{config_path}: expected a JSON object")
  config = config_from_json(cfg, num_layers, config_path)
  tensors = StateDict(load_safetensors(paths.read_bytes(weights_path)), weights_path)
  params = _encoder_params(tensors, config)
  params["codebooks_LxKxD"] = np.stack(
    [
      tensors.take(CODEBOOK_KEY.format(i), (config.codebook_size, config.dimension))
      for i in range(num_layers)
    ]
  )
  return jax.tree_util.tree_map(jnp.asarray, params), config


# ---- the network --------------------------------------------------------------------------------
def extra_padding(length: int, kernel: int, stride: int, padding_total: int) -> int:
  """Right padding that makes the last strided window full (the package's
  get_extra_padding_for_conv1d, in integers)."""
  frames = -(-(length - kernel + padding_total) // stride) + 1
  ideal_length = (frames - 1) * stride + (kernel - padding_total)
  return ideal_length - length


def pad_time(x_BxTxC: jax.Array, left: int, right: int, mode: str) -> jax.Array:
  """pad1d: reflect padding on an input shorter than the padding first pads zeros on the right
  (so there is something to reflect), then drops them again."""
  length = x_BxTxC.shape[1]
  if mode != "reflect":
    return jnp.pad(x_BxTxC, ((0, 0), (left, right), (0, 0)), mode=mode)
  extra = max(left, right) - length + 1 if length <= max(left, right) else 0
  if extra:
    x_BxTxC = jnp.pad(x_BxTxC, ((0, 0), (0, extra), (0, 0)))
  padded = jnp.pad(x_BxTxC, ((0, 0), (left, right), (0, 0)), mode="reflect")
  return padded[:, : padded.shape[1] - extra]


def sconv1d(
  x_BxTxC: jax.Array,
  conv: dict,
  config: SpeechEncoderConfig,
  stride: int = 1,
  dilation: int = 1,
  compute_dtype=jnp.float32,
) -> jax.Array:
  """SConv1d: SEANet's padding, then a VALID conv. Operands in `compute_dtype`, f32 result;
  f32 runs at full precision (accelerators would otherwise use bf16/tf32 passes)."""
  kernel = conv["kernel_KxIxO"].shape[0]
  padding_total = (kernel - 1) * dilation - (stride - 1)
  extra = extra_padding(x_BxTxC.shape[1], kernel, stride, padding_total)
  if config.causal:
    left, right = padding_total, extra
  else:
    right = padding_total // 2
    left, right = padding_total - right, right + extra
  x_BxTxC = pad_time(x_BxTxC, left, right, config.pad_mode)
  full_f32 = jnp.dtype(compute_dtype) == jnp.float32
  precision = jax.lax.Precision.HIGHEST if full_f32 else None
  y_BxTxO = jax.lax.conv_general_dilated(
    x_BxTxC.astype(compute_dtype),
    conv["kernel_KxIxO"].astype(compute_dtype),
    window_strides=(stride,),
    padding="VALID",
    rhs_dilation=(dilation,),
    dimension_numbers=("NWC", "WIO", "NWC"),
    precision=precision,
    preferred_element_type=jnp.float32,
  )
  return y_BxTxO + conv["bias_O"]


def residual_block(x_BxTxC, block, config, dilation, compute_dtype):
  """SEANetResnetBlock: 1x1-conv shortcut + [ELU, conv k (dilated), ELU, conv 1]."""
  h_BxTxH = sconv1d(
    jax.nn.elu(x_BxTxC), block["conv_in"], config, dilation=dilation, compute_dtype=compute_dtype
  )
  h_BxTxC = sconv1d(jax.nn.elu(h_BxTxH), block["conv_out"], config, compute_dtype=compute_dtype)
  return sconv1d(x_BxTxC, block["shortcut"], config, compute_dtype=compute_dtype) + h_BxTxC


def lstm_layer(x_BxTxD: jax.Array, weights: dict) -> jax.Array:
  """One layer of torch's nn.LSTM (gates i, f, g, o; zero initial state), f32, its directions
  in one scan: direction 1 (bidirectional) reads time backwards. Output [B, T, N * H], the
  directions concatenated as torch does. The input projections of every step are one matmul;
  the scan carries only the recurrence, both directions' in one batched matmul per step."""
  hi = jax.lax.Precision.HIGHEST
  directions, hidden, _ = weights["w_hh_NxHxG"].shape
  batch = x_BxTxD.shape[0]
  gates_in_NxTxBxG = jnp.einsum("btd,ndg->ntbg", x_BxTxD, weights["w_ih_NxDxG"], precision=hi)
  gates_in_NxTxBxG = gates_in_NxTxBxG + weights["bias_NxG"][:, None, None, :]
  # Step t of the scan is time t forwards and time T-1-t backwards.
  time_order = [gates_in_NxTxBxG[0]] + [gates_in_NxTxBxG[1, ::-1]] * (directions == 2)
  gates_in_TxNxBxG = jnp.stack(time_order, axis=1)

  def step(carry, gates_in_NxBxG):
    h_NxBxH, c_NxBxH = carry
    recurrent_NxBxG = jnp.einsum("nbh,nhg->nbg", h_NxBxH, weights["w_hh_NxHxG"], precision=hi)
    i, f, g, o = jnp.split(gates_in_NxBxG + recurrent_NxBxG, 4, axis=-1)
    c_NxBxH = jax.nn.sigmoid(f) * c_NxBxH + jax.nn.sigmoid(i) * jnp.tanh(g)
    h_NxBxH = jax.nn.sigmoid(o) * jnp.tanh(c_NxBxH)
    return (h_NxBxH, c_NxBxH), h_NxBxH

  zeros_NxBxH = jnp.zeros((directions, batch, hidden), jnp.float32)
  _, h_TxNxBxH = jax.lax.scan(step, (zeros_NxBxH, zeros_NxBxH), gates_in_TxNxBxG)
  outputs = [h_TxNxBxH[:, 0]] + [h_TxNxBxH[::-1, 1]] * (directions == 2)
  return jnp.transpose(jnp.concatenate(outputs, axis=-1), (1, 0, 2))


def slstm(x_BxTxC: jax.Array, layers: list) -> jax.Array:
  """SLSTM: the (Bi)LSTM stack, each layer fed the previous one's output, plus the skip: the
  input, tiled along channels once per direction (torch's `x.repeat(1, 1, 2)` when
  bidirectional), added to the last layer's output."""
  x_BxTxC = x_BxTxC.astype(jnp.float32)
  h_BxTxD = x_BxTxC
  for layer in layers:
    h_BxTxD = lstm_layer(h_BxTxD, layer)
  return h_BxTxD + jnp.tile(x_BxTxC, (1, 1, h_BxTxD.shape[-1] // x_BxTxC.shape[-1]))


def encoder_features(
  params: dict, config: SpeechEncoderConfig, wave_BxT: jax.Array, compute_dtype=jnp.float32
) -> jax.Array:
  """SEANetEncoder's output float32 [B, frames, dimension] (the package's [B, dimension, frames],
  transposed): what the residual VQ quantizes."""
  x_BxTxC = sconv1d(
    wave_BxT.astype(jnp.float32)[:, :, None],
    params["input_conv"],
    config,
    compute_dtype=compute_dtype,
  )
  for stride, stage in zip(reversed(config.strides), params["stages"]):
    for j, block in enumerate(stage["residual_blocks"]):
      x_BxTxC = residual_block(x_BxTxC, block, config, config.dilation_base**j, compute_dtype)
    x_BxTxC = sconv1d(
      jax.nn.elu(x_BxTxC), stage["downsample"], config, stride=stride, compute_dtype=compute_dtype
    )
  if config.lstm_layers:
    x_BxTxC = slstm(x_BxTxC, params["lstm"])
  return sconv1d(jax.nn.elu(x_BxTxC), params["output_conv"], config, compute_dtype=compute_dtype)


def residual_vq(features_BxTxD: jax.Array, codebooks_LxKxD: jax.Array) -> jax.Array:
  """Codes int32 [B, L, T]: per quantizer, the codebook row nearest the residual (squared L2 in
  f32, the package's `-(|x|^2 - 2 x.e + |e|^2)` argmax; ties go to the lowest index, as torch's
  max), then the residual minus that row."""
  hi = jax.lax.Precision.HIGHEST
  residual_BxTxD = features_BxTxD.astype(jnp.float32)
  codes = []
  for codebook_KxD in codebooks_LxKxD:
    dot_BxTxK = jnp.einsum("btd,kd->btk", residual_BxTxD, codebook_KxD, precision=hi)
    neg_dist_BxTxK = -(
      jnp.sum(residual_BxTxD**2, axis=-1, keepdims=True)
      - 2 * dot_BxTxK
      + jnp.sum(codebook_KxD**2, axis=-1)
    )
    codes_BxT = jnp.argmax(neg_dist_BxTxK, axis=-1).astype(jnp.int32)
    residual_BxTxD = residual_BxTxD - codebook_KxD[codes_BxT]
    codes.append(codes_BxT)
  return jnp.stack(codes, axis=1)


@partial(jax.jit, static_argnames=("config", "compute_dtype"))
def encode_wave(
  params: dict, config: SpeechEncoderConfig, wave_BxT: jax.Array, compute_dtype=jnp.float32
) -> jax.Array:
  """Codes int32 [B, num_layers, frames] of 16 kHz waves float32 [B, T] (equal lengths; frames =
  config.num_frames(T)). Row b equals the torch adapter's `encode(wave_b, 16000)` ([L, T]).
  compute_dtype=jnp.bfloat16 runs the convs on bf16 operands (f32 accumulation); the LSTM and
  the VQ distances stay f32."""
  features_BxTxD = encoder_features(params, config, wave_BxT, compute_dtype)
  return residual_vq(features_BxTxD, params["codebooks_LxKxD"])


encode_features = jax.jit(encoder_features, static_argnames=("config", "compute_dtype"))
