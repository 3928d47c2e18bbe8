"""MIO's tokenizer encoders compiled ahead of time for Cloud TPU on a CPU host: how fast, how big?

    python -m benchmarks.encoder_aot [--topologies=v5p-8,v5e-8] [--images_per_chip=32] \
        [--clips_per_chip=32] [--clip_s=1] [--skip_speech] \
        [--out=benchmarks/results/encoder_aot.json]

For each topology, `encode_pixels` (SEED-Tokenizer: EVA ViT-g + Q-Former, released sizes) and
`encode_wave` (SpeechTokenizer's encoder, released config, 4 RVQ layers) are lowered on abstract
parameters (jax.ShapeDtypeStruct: no weights are made) with bf16 compute, the batch sharded over
every chip (data-parallel) and the parameters replicated, then compiled by libtpu's compiler
(mio_jax/scale/aot.py `topology_devices`). From each compiled program:

  memory per chip  from `memory_analysis()` (arguments + outputs + temporaries - aliases);
  flops, bytes     from `cost_analysis()`, per chip. XLA counts a scanned loop's body once,
                   whatever its trip count, so SEED's 39 scanned ViT blocks are added back as
                   cost(0 blocks) + 39 x [cost(1 block) - cost(0 blocks)]. SpeechTokenizer's
                   BiLSTM needs no correction: libtpu's cost grows linearly with its frames.
  rate, analytic   a roofline: seconds per batch = max(flops / peak bf16 FLOP/s, bytes / HBM
                   bandwidth) with the chip's figures from mio_jax/hardware/tpu_specs.py ->
                   images/s/chip and seconds of speech/s/chip. It ignores the LSTM's serial
                   latency (250 dependent steps per 5 s clip), so speech is the optimistic side.

Prints one JSON line and writes it (indented) to --out. Needs libtpu (requirements-tpu.txt) and
torch + speechtokenizer (requirements-test.txt) to lay out SpeechTokenizer's parameter tree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from benchmarks.tokenize_throughput import SPEECHTOKENIZER_RELEASED
from mio_jax.encoders import seed as seed_encoder
from mio_jax.encoders import speechtokenizer as speech_encoder
from mio_jax.hardware.cpu_peak import cpu_model
from mio_jax.hardware.tpu_specs import Topology, parse_topology
from mio_jax.scale.aot import cost_stats, memory_stats, topology_devices


# ---- parameters without a checkpoint -------------------------------------------------------------
def seed_params_with_layers(config: seed_encoder.SEEDEncoderConfig, make) -> dict:
  """SEED's params pytree with `make(name, shape)` as every tensor of seed_modules' state dict,
  laid out by the encoder's own `params_from_tensors`. Built with one ViT block and then
  re-stacked to `config.vision_layers` by `make`, so that abstract params never allocate the
  39 blocks' 4 GB."""
  one_block = dataclasses.replace(config, vision_layers=1)
  shapes = seed_encoder.expected_shapes(one_block)
  tensors = {name: make(name, shape) for name, shape in shapes.items()}
  params = seed_encoder.params_from_tensors(tensors, one_block)
  params["vision_blocks"] = jax.tree.map(
    lambda x: make("vision_blocks", (config.vision_layers,) + x.shape[1:]), params["vision_blocks"]
  )
  return params


def abstract_seed_params(config: seed_encoder.SEEDEncoderConfig) -> dict:
  """ShapeDtypeStruct float32 params (what `load_seed_encoder` returns) at `config`'s sizes."""
  params = seed_params_with_layers(
    config, lambda name, shape: np.broadcast_to(np.float32(0), shape)
  )
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), params)


def random_seed_params(config: seed_encoder.SEEDEncoderConfig, seed: int = 0) -> dict:
  """Random float32 params at `config`'s sizes, made without torch (timing only: N(0, 0.02)
  matrices, unit LayerNorm scales)."""
  rng = np.random.default_rng(seed)

  def make(name, shape):
    if name.endswith("weight") and len(shape) == 1 and "norm" in name.lower():
      return np.ones(shape, np.float32)
    return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)

  blocks = seed_params_with_layers(dataclasses.replace(config, vision_layers=1), make)
  params = dict(blocks)
  params["vision_blocks"] = jax.tree.map(
    lambda x: np.repeat(x, config.vision_layers, axis=0), blocks["vision_blocks"]
  )
  return jax.tree.map(jnp.asarray, params)


def speech_torch_directory(directory: str, config: dict = SPEECHTOKENIZER_RELEASED) -> str:
  """A SpeechTokenizer directory (config.json + model.safetensors) with the package's own random
  initialisation at `config`'s sizes, written by the torch adapter: the JAX loader's input."""
  from data_pipelines.tokenizers.speechtokenizer_adapter import SpeechTokenizerAdapter

  SpeechTokenizerAdapter.from_config(config, num_layers=4).save(directory)
  return directory


class _RandomTensors(speech_encoder.StateDict):
  """Every tensor the speech loader asks for, random (fan-in scaled; vectors zero)."""

  def __init__(self, seed: int):
    super().__init__({}, "random SpeechTokenizer weights")
    self.rng = np.random.default_rng(seed)

  def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if len(shape) == 1:
      return np.zeros(shape, np.float32)
    scale = 1.0 / np.sqrt(np.prod(shape[1:]))
    return (scale * self.rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def random_speech_params(
  config: dict = SPEECHTOKENIZER_RELEASED, seed: int = 0
) -> tuple[dict, speech_encoder.SpeechEncoderConfig]:
  """Random float32 speech-encoder params at `config`'s sizes without torch (timing only, e.g.
  on a GPU host without the torch packages), laid out by the loader's own walk of the state dict
  (`_encoder_params`: the module has no public shape list)."""
  encoder_config = speech_encoder.config_from_json(config, num_layers=4, where="random")
  tensors = _RandomTensors(seed)
  params = speech_encoder._encoder_params(tensors, encoder_config)
  params["codebooks_LxKxD"] = tensors.take(
    "codebooks", (4, encoder_config.codebook_size, encoder_config.dimension)
  )
  return jax.tree.map(jnp.asarray, params), encoder_config


def abstract_speech_params(directory: str) -> tuple[dict, speech_encoder.SpeechEncoderConfig]:
  """ShapeDtypeStruct params + config from a SpeechTokenizer directory (its encoder is small:
  loading it is cheap)."""
  params, config = speech_encoder.load_speech_encoder(directory, num_layers=4)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params), config


# ---- compiling -----------------------------------------------------------------------------------
def _sharded(tree, sharding):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def compile_on(devices, fn, params, batch):
  """`fn(params, batch)` compiled for `devices`: batch axis 0 split over every chip,
  params replicated. -> compiled executable."""
  mesh = Mesh(np.asarray(devices), ("data",))
  replicated = NamedSharding(mesh, PartitionSpec())
  split = NamedSharding(mesh, PartitionSpec("data"))
  args = (_sharded(params, replicated), _sharded(batch, split))
  return jax.jit(fn).lower(*args).compile()


def per_chip(cost: dict) -> dict:
  """libtpu's cost_analysis of an SPMD program is already one device's (checked: a matmul split
  over 4 chips reports a quarter of its flops)."""
  return {k: cost[k] for k in ("flops", "bytes accessed") if k in cost}


def roofline_rate(flops: float, bytes_accessed: float, topo: Topology, units: float) -> dict:
  """Analytic rate: units per second per chip when one chip's batch takes max(compute, memory)."""
  compute_s = flops / topo.chip.peak_bf16_flops
  memory_s = bytes_accessed / topo.chip.hbm_bytes_per_s
  seconds = max(compute_s, memory_s)
  return {
    "compute_s_per_batch": compute_s,
    "memory_s_per_batch": memory_s,
    "bound": "compute" if compute_s >= memory_s else "memory",
    "per_s_per_chip": units / seconds,
  }


def memory_per_chip(compiled, hbm_bytes: int) -> dict:
  m = memory_stats(compiled)
  total = m["argument_bytes"] + m["output_bytes"] + m["temp_bytes"] - m["alias_bytes"]
  return {**m, "total_bytes": total, "total_gib": total / 2**30, "hbm_fraction": total / hbm_bytes}


def seed_report(devices, topo: Topology, config, images_per_chip: int, compute_dtype) -> dict:
  """SEED encoder on `topo`: compiled memory, loop-corrected cost, analytic images/s/chip."""
  chips = topo.num_chips
  pixels = jax.ShapeDtypeStruct(
    (images_per_chip * chips, 3, config.image_size, config.image_size), jnp.float32
  )

  def encoder(c):
    return lambda p, x: seed_encoder.encode_pixels(p, c, x, compute_dtype)

  t0 = time.perf_counter()
  full = compile_on(devices, encoder(config), abstract_seed_params(config), pixels)
  compile_s = time.perf_counter() - t0
  probes = []
  for layers in (0, 1):  # no loop left to undercount: 0 blocks, and 1 block (a length-1 scan)
    probe = dataclasses.replace(config, vision_layers=layers)
    compiled = compile_on(devices, encoder(probe), abstract_seed_params(probe), pixels)
    probes.append(per_chip(cost_stats(compiled)))
  raw = per_chip(cost_stats(full))
  cost = {k: probes[0][k] + config.vision_layers * (probes[1][k] - probes[0][k]) for k in probes[0]}
  perf = roofline_rate(cost["flops"], cost["bytes accessed"], topo, images_per_chip)
  return {
    "images_per_chip": images_per_chip,
    "compile_s": round(compile_s, 1),
    "memory_per_chip": memory_per_chip(full, topo.chip.hbm_bytes),
    "xla_cost_raw_per_chip": raw,
    "cost_per_chip": cost,
    "vision_block_cost_per_chip": {k: probes[1][k] - probes[0][k] for k in probes[0]},
    "flops_per_image": cost["flops"] / images_per_chip,
    "roofline": perf,
    "images_per_s_per_chip_analytic": perf["per_s_per_chip"],
  }


def speech_report(devices, topo, params, config, clips_per_chip, clip_s, compute_dtype) -> dict:
  """SpeechTokenizer's encoder on `topo`: compiled memory and cost, analytic seconds of speech
  per second per chip."""
  chips = topo.num_chips
  samples = int(round(clip_s * config.sample_rate))
  frames = config.num_frames(samples)
  batch = clips_per_chip * chips
  wave = jax.ShapeDtypeStruct((batch, samples), jnp.float32)
  t0 = time.perf_counter()
  full = compile_on(
    devices, lambda p, x: speech_encoder.encode_wave(p, config, x, compute_dtype), params, wave
  )
  compile_s = time.perf_counter() - t0
  # libtpu counts the BiLSTM's frames in full (its flops grow linearly with the frames: checked
  # at 1, 2 and 250 frames), so the compiled cost needs no loop correction here.
  cost = per_chip(cost_stats(full))
  speech_s = clips_per_chip * clip_s
  perf = roofline_rate(cost["flops"], cost["bytes accessed"], topo, speech_s)
  return {
    "clips_per_chip": clips_per_chip,
    "clip_s": clip_s,
    "frames_per_clip": frames,
    "compile_s": round(compile_s, 1),
    "memory_per_chip": memory_per_chip(full, topo.chip.hbm_bytes),
    "cost_per_chip": cost,
    "flops_per_speech_s": cost["flops"] / speech_s,
    "roofline": perf,
    "speech_s_per_s_per_chip_analytic": perf["per_s_per_chip"],
  }


def topology_header(topology: str, compute_dtype=jnp.bfloat16) -> dict:
  topo = parse_topology(topology)
  return {
    "topology": topology,
    "chips": topo.num_chips,
    "chip": topo.chip.generation,
    "peak_bf16_flops": topo.chip.peak_bf16_flops,
    "hbm_bytes_per_s": topo.chip.hbm_bytes_per_s,
    "hbm_bytes": topo.chip.hbm_bytes,
    "compute_dtype": jnp.dtype(compute_dtype).name,
    "method": "analytic roofline from libtpu's compiled cost (loops added back); not measured",
  }


def analyze(
  topology: str,
  seed_config,
  speech_params,
  speech_config,
  images_per_chip: int,
  clips_per_chip: int,
  clip_s: float,
  compute_dtype=jnp.bfloat16,
) -> dict:
  """Both encoders (either skipped when its config is None) on one topology."""
  topo = parse_topology(topology)
  devices = topology_devices(topo)
  report = topology_header(topology, compute_dtype)
  if seed_config is not None:
    report["seed"] = seed_report(devices, topo, seed_config, images_per_chip, compute_dtype)
  if speech_config is not None:
    report["speech"] = speech_report(
      devices, topo, speech_params, speech_config, clips_per_chip, clip_s, compute_dtype
    )
  return report


def save(result: dict, out: str | None) -> None:
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
      f.write(json.dumps(result, indent=2) + "\n")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--topologies", default="v5p-8,v5e-8")
  p.add_argument("--images_per_chip", type=int, default=32)
  p.add_argument("--clips_per_chip", type=int, default=32)
  # 1 s clips: libtpu compiles the speech encoder for 32 x 1 s per chip in 45-75 s on 2 CPU
  # cores, much longer for 5 s clips (the BiLSTM is unrolled); the per-second cost barely
  # depends on the clip length.
  p.add_argument("--clip_s", type=float, default=1.0)
  p.add_argument("--skip_speech", action="store_true")
  p.add_argument("--out", default="benchmarks/results/encoder_aot.json")
  a = p.parse_args(argv)
  start = time.perf_counter()
  speech_params = speech_config = None
  if not a.skip_speech:
    with tempfile.TemporaryDirectory(prefix="speech_aot_") as tmp:
      speech_params, speech_config = abstract_speech_params(speech_torch_directory(tmp))
  result = {
    "benchmark": "encoder_aot",
    "cpu": cpu_model(),
    "jax": jax.__version__,
    "seed_config": "SEED-Tokenizer released (EVA ViT-g/14 224 px, 39 blocks; Q-Former 12 layers)",
    "speech_config": "SpeechTokenizer released (speechtokenizer_hubert_avg), 4 RVQ layers",
    "topologies": {name: topology_header(name) for name in a.topologies.split(",")},
  }
  # SEED on every topology first, then speech (slow to compile): partial results are saved.
  for name, report in result["topologies"].items():
    part = analyze(name, seed_encoder.SEEDEncoderConfig(), None, None, a.images_per_chip, 0, 0.0)
    report["seed"] = part["seed"]
    save(result, a.out)
  if speech_config is not None:
    for name, report in result["topologies"].items():
      part = analyze(name, None, speech_params, speech_config, 0, a.clips_per_chip, a.clip_s)
      report["speech"] = part["speech"]
      save(result, a.out)
  result["wall_s"] = round(time.perf_counter() - start, 1)
  save(result, a.out)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
