"""Train-step throughput of mio_jax at a fixed shape: `python -m benchmarks.train_step --shape=S0`.

Runs the real jitted step (fused chunked cross-entropy, AdamW, per-modality metrics) on one
device and prints one JSON line: tokens_per_s, step_time_s, peak memory, MFU (analytic FLOPs /
measured CPU matmul peak, or the accelerator's spec peak).
"""

from __future__ import annotations

import json
import resource
import time

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():  # not at import: benchmarks.torch_baseline imports this module
  flags.DEFINE_string("shape", "S0", "Benchmark shape (see SHAPES).")
  flags.DEFINE_integer("steps", 5, "Timed steps (after 2 warm-up steps).")
  flags.DEFINE_string("dtype", None, "Override the compute dtype (e.g. bfloat16).")
  flags.DEFINE_integer("loss_chunk", 128, "Sequence positions per LM-head chunk (0 = all).")

SHAPES = {
    # 4 layers, d 256, 4 heads (4 KV heads), FFN 688, seq 512, batch 8, f32.
    "S0": dict(n_layers=4, d_model=256, n_heads=4, n_kv_heads=4, ffn_dim=688, vocab=32_000,
               seq_len=512, batch=8, dtype="float32"),
    "S1": dict(n_layers=4, d_model=256, n_heads=4, n_kv_heads=4, ffn_dim=688, vocab=1_024,
               seq_len=512, batch=8, dtype="float32"),
}


def flops_per_token(shape: dict) -> float:
  """PaLM convention, as `ModelConfig.flops_per_token` (jax-free so the torch baseline shares it)."""
  d, h, f, v, n, t = (shape[k] for k in ("d_model", "n_heads", "ffn_dim", "vocab", "n_layers", "seq_len"))
  hd, g = d // h, shape["n_kv_heads"]
  matmul = n * (d * hd * (h + 2 * g) + h * hd * d + 3 * d * f) + d * v
  return 6.0 * matmul + 12.0 * n * h * hd * t


def bench_vocab(size: int):
  """A Vocab whose padded size is exactly `size`, with every modality present (for metrics)."""
  from mio_jax.vocab import Vocab
  image, speech = size // 32, size // 64
  vocab = Vocab(text_size=size - 8 - image - 4 * speech, image_codes=image, speech_codes=speech)
  assert vocab.padded_size == size, (size, vocab.padded_size)
  return vocab


def random_batch(seed: int, batch: int, seq_len: int, vocab_size: int) -> dict:
  import numpy as np
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab_size, (batch, seq_len + 1), dtype=np.int32)
  ones = np.ones((batch, seq_len), np.int32)
  return {"tokens": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": ones, "segment_ids": ones,
          "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch, seq_len)).copy()}


def main(argv):
  del argv
  import jax
  from configs.base import get_base_config
  from mio_jax import sharding as shd
  from mio_jax.model import ModelConfig
  from mio_jax.train import loop, mfu

  shape = SHAPES[FLAGS.shape]
  dtype = FLAGS.dtype or shape["dtype"]
  vocab = bench_vocab(shape["vocab"])
  model_cfg = ModelConfig(vocab_size=shape["vocab"], d_model=shape["d_model"], n_layers=shape["n_layers"],
                          n_heads=shape["n_heads"], n_kv_heads=shape["n_kv_heads"], ffn_dim=shape["ffn_dim"],
                          dtype=dtype)
  config = get_base_config()
  config.seq_len, config.global_batch, config.total_steps = shape["seq_len"], shape["batch"], 1000
  config.lr, config.loss_chunk = 1e-3, FLAGS.loss_chunk
  s = loop.setup_model(config, model_cfg, vocab, jax.devices()[:1])
  state = loop.init_state(s)
  batches = [shd.global_batch_arrays(random_batch(i, shape["batch"], shape["seq_len"], vocab.size),
                                     s.batch_sharding, shape["batch"]) for i in range(2)]
  for i in range(2):  # compile + warm up
    state, metrics = s.step_fn(state, batches[i % 2])
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for i in range(FLAGS.steps):
    state, metrics = s.step_fn(state, batches[i % 2])
  jax.block_until_ready(metrics)
  step_time = (time.perf_counter() - t0) / FLAGS.steps

  tokens_per_s = shape["batch"] * shape["seq_len"] / step_time
  fpt = flops_per_token(shape)
  peak = mfu.total_peak_flops(dtype)
  print(json.dumps({
      "impl": "mio_jax", "shape": FLAGS.shape, "dtype": dtype, "device": jax.devices()[0].device_kind,
      "tokens_per_s": round(tokens_per_s, 1), "step_time_s": round(step_time, 4),
      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "mfu": round(mfu.mfu(fpt, tokens_per_s, peak), 4), "flops_per_token": fpt,
      "peak_flops": peak, "loss": round(float(metrics["loss"]), 4), "loss_chunk": FLAGS.loss_chunk,
  }))


if __name__ == "__main__":
  define_flags()
  app.run(main)
