"""benchmarks/encoder_aot.py: SEED's JAX encoder compiled for a TPU topology on this CPU host
(libtpu), its loop-corrected cost and the analytic images/s/chip it predicts; the speech
encoder's BiLSTM counted in full by libtpu. Tiny configs, v5e-4.
FAILS (never skips) without libtpu, as tests/test_aot.py."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import encoder_aot
from mio_jax.encoders import speechtokenizer as st
from mio_jax.encoders.seed import SEEDEncoderConfig
from mio_jax.hardware.tpu_specs import parse_topology
from mio_jax.scale.aot import cost_stats, topology_devices
from tests.test_encoder_speechtokenizer_jax import TINY_CONFIG as TINY_SPEECH
from tests.test_seed_tokenizer import TINY

VISION_LAYERS = 4


def eva_block_matmul_flops(c: SEEDEncoderConfig) -> float:
  """Multiply-adds x 2 of one pre-norm ViT block on one image, counted from the architecture
  (qkv, attention scores and values, output projection, two MLP matmuls)."""
  t, d, m = c.grid * c.grid + 1, c.vision_width, c.vision_mlp
  return 2 * t * (3 * d * d + d * d + 2 * d * m) + 2 * 2 * t * t * d


@pytest.fixture(scope="module")
def report():
  # Wider than the tiny checkpoint so that matmuls, not LayerNorm/GELU, make a block's flops.
  wide = dict(TINY, vision_layers=VISION_LAYERS, vision_width=128, vision_mlp=512)
  config = SEEDEncoderConfig.from_dict(wide)
  topo = parse_topology("v5e-4")
  return encoder_aot.analyze("v5e-4", config, None, None, 4, 1, 1.0, jnp.bfloat16), config, topo


def test_seed_prediction_is_positive_and_follows_the_compiled_cost(report):
  r, config, topo = report
  seed = r["seed"]
  assert r["chips"] == 4 and r["compute_dtype"] == "bfloat16"
  flops, bytes_accessed = seed["cost_per_chip"]["flops"], seed["cost_per_chip"]["bytes accessed"]
  assert flops > 0 and bytes_accessed > 0
  # The roofline is the compiled cost over the chip's peak and bandwidth, nothing else.
  seconds = max(flops / topo.chip.peak_bf16_flops, bytes_accessed / topo.chip.hbm_bytes_per_s)
  rate = seed["images_per_s_per_chip_analytic"]
  assert rate > 0 and rate == pytest.approx(seed["images_per_chip"] / seconds, rel=1e-9)
  assert seed["flops_per_image"] * rate <= topo.chip.peak_bf16_flops * (1 + 1e-9)


def test_scanned_blocks_are_added_back(report):
  r, config, _ = report
  seed = r["seed"]
  block = seed["vision_block_cost_per_chip"]["flops"]
  # One block, as compiled, does at least the architecture's matmul work and little more
  # (LayerNorm, softmax and GELU are elementwise); images are split evenly over the 4 chips.
  matmul = eva_block_matmul_flops(config) * seed["images_per_chip"]
  assert matmul <= block < 1.25 * matmul
  # XLA's own count sees the scanned body once: the correction adds the other 3 blocks.
  raw = seed["xla_cost_raw_per_chip"]["flops"]
  assert seed["cost_per_chip"]["flops"] - raw == pytest.approx(
    (VISION_LAYERS - 1) * block, rel=0.05
  )


def test_memory_per_chip_from_the_compiled_program(report):
  r, _, topo = report
  memory = r["seed"]["memory_per_chip"]
  assert memory["argument_bytes"] > 0 and memory["temp_bytes"] > 0
  assert memory["argument_bytes"] < memory["total_bytes"] < topo.chip.hbm_bytes


def test_speech_lstm_frames_are_all_counted():
  """encoder_aot takes the speech encoder's compiled cost as is: libtpu must count every frame
  of the BiLSTM's scan (it does not for SEED's scanned blocks). Flops linear in the frames."""
  params, _ = encoder_aot.random_speech_params(TINY_SPEECH)
  devices = topology_devices(parse_topology("v5e-4"))
  width = TINY_SPEECH["n_filters"] * 2 ** len(TINY_SPEECH["strides"])

  def lstm_flops(frames: int) -> float:
    x = jax.ShapeDtypeStruct((8, frames, width), jnp.float32)
    compiled = encoder_aot.compile_on(devices, lambda p, x_: st.slstm(x_, p), params["lstm"], x)
    return cost_stats(compiled)["flops"]

  one, two, twelve = lstm_flops(1), lstm_flops(2), lstm_flops(12)
  per_frame = two - one
  # Per frame at least the recurrent matmuls: 2 directions x 2 layers x 2 B H 4H.
  hidden = width
  assert per_frame >= 2 * 2 * 2 * (8 // 4) * hidden * 4 * hidden
  assert twelve - one == pytest.approx(11 * per_frame, rel=0.05)
