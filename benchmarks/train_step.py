"""Train-step throughput of mio_jax at a fixed shape: `python -m benchmarks.train_step --shape=S0`.

Runs the real jitted step (fused chunked cross-entropy, AdamW, per-modality metrics) on one
device and prints one JSON line: tokens_per_s, step_time_s, peak memory, MFU (analytic FLOPs /
the CPU's hardware FMA peak at the dtype, mio_jax/hardware/cpu_peak.py, or the accelerator's spec
peak), the CPU model and the malloc setting. Run directly, it turns on malloc huge pages as the
training command line does (mio_jax/hardware/host_memory.py).
"""

from __future__ import annotations

import json
import os
import resource
import time

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():  # not at import: benchmarks.torch_baseline imports this module
  flags.DEFINE_string("shape", "S0", "Benchmark shape (see SHAPES).")
  flags.DEFINE_integer("steps", 5, "Timed steps (after 2 warm-up steps).")
  flags.DEFINE_string("dtype", None, "Override the compute dtype (e.g. bfloat16).")
  flags.DEFINE_integer("loss_chunk", 128, "Sequence positions per LM-head chunk (0 = all).")
  flags.DEFINE_string(
    "attention_impl", "xla", "ModelConfig.attention_impl (GPU: dot_product_attention)."
  )
  flags.DEFINE_string("remat", "none", "ModelConfig.remat_policy.")
  flags.DEFINE_bool("one_core", False, "Pin the process to one CPU core (before jax starts).")
  flags.DEFINE_integer("devices", 1, "Local devices the step is sharded over (default mesh).")


# S0-S2 share one body: 4 layers, d 256, 4 heads (4 KV heads), FFN 688, f32.
_BODY = dict(n_layers=4, d_model=256, n_heads=4, n_kv_heads=4, ffn_dim=688, dtype="float32")
SHAPES = {
  "S0": dict(_BODY, vocab=32_000, seq_len=512, batch=8),
  "S1": dict(_BODY, vocab=1_024, seq_len=512, batch=8),
  # MIO-like vocabulary (76,416 rows) at seq 2,048: the LM head dominates. Batch 1 keeps a
  # 2-core CPU step to seconds.
  "S2": dict(_BODY, vocab=76_416, seq_len=2048, batch=1),
  # mio_jax/model/sizes.py '1b' (MIO vocabulary) at seq 2,048 in bf16: the GPU benchmark (gpu.sh).
  "1B": dict(
    n_layers=16,
    d_model=2048,
    n_heads=32,
    n_kv_heads=8,
    ffn_dim=8192,
    vocab=76_416,
    seq_len=2048,
    batch=8,
    dtype="bfloat16",
  ),
}


def flops_per_token(shape: dict) -> float:
  """PaLM convention, as `ModelConfig.flops_per_token` (jax-free so the torch baseline shares
  it)."""
  d, h, f, v, n, t = (
    shape[k] for k in ("d_model", "n_heads", "ffn_dim", "vocab", "n_layers", "seq_len")
  )
  hd, g = d // h, shape["n_kv_heads"]
  matmul = n * (d * hd * (h + 2 * g) + h * hd * d + 3 * d * f) + d * v
  return 6.0 * matmul + 12.0 * n * h * hd * t


def bench_vocab(size: int):
  """A Vocab whose padded size is exactly `size`, with every modality present (for metrics)."""
  from mio_jax.tokens.vocab import Vocab

  image, speech = size // 32, size // 64
  vocab = Vocab(text_size=size - 8 - image - 4 * speech, image_codes=image, speech_codes=speech)
  assert vocab.padded_size == size, (size, vocab.padded_size)
  return vocab


def pin_one_core():
  """Run on one core: XLA:CPU has no thread-count flag and runs independent ops concurrently
  even with --xla_cpu_multi_thread_eigen=false, so '1 thread' needs an affinity mask."""
  if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})


def host_fields() -> dict:
  """The CPU model (targets hold per host kind) and the malloc setting the process ran with."""
  from mio_jax.hardware.cpu_peak import cpu_model

  return {"cpu": cpu_model(), "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}


def current_rss_mb():
  """Resident memory now (peak RSS minus this = what the run itself added); None off Linux."""
  try:
    with open("/proc/self/status") as f:
      return round(next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024, 1)
  except (OSError, StopIteration):
    return None


def random_batch(seed: int, batch: int, seq_len: int, vocab_size: int) -> dict:
  import numpy as np

  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab_size, (batch, seq_len + 1), dtype=np.int32)
  ones = np.ones((batch, seq_len), np.int32)
  return {
    "tokens": ids[:, :-1],
    "targets": ids[:, 1:],
    "loss_mask": ones,
    "segment_ids": ones,
    "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch, seq_len)).copy(),
  }


def setup_step(config, model_cfg, vocab, devices):
  """`mio_jax.train.loop.setup_model` without importing the loop, whose metric writers import
  TensorFlow (+0.5 GB resident): peak memory then measures the step, not the logging stack."""
  import types

  from mio_jax.model.transformer import Transformer
  from mio_jax.parallel import sharding as shd
  from mio_jax.train import optimizer as opt_lib
  from mio_jax.train import state as state_lib
  from mio_jax.train import step as step_lib

  shape = shd.resolve_mesh_shape(config.mesh, len(devices))
  mesh, rules = shd.build_mesh(shape, devices), shd.rules_for(model_cfg, shape)
  tx, schedule = opt_lib.make_optimizer(config, config.total_steps)
  shardings = state_lib.state_shardings(Transformer(model_cfg), tx, mesh, rules)
  step_cfg = step_lib.StepConfig(loss_chunk=config.loss_chunk)
  step_fn = step_lib.make_train_step(
    model_cfg, vocab, tx, schedule, step_cfg, mesh, rules, shardings
  )
  return types.SimpleNamespace(
    mesh=mesh,
    rules=rules,
    tx=tx,
    shardings=shardings,
    batch_sharding=shd.batch_sharding(mesh),
    step_fn=step_fn,
  )


def main(argv):
  del argv
  if FLAGS.one_core:
    pin_one_core()
  import jax

  from mio_jax.config import get_base_config
  from mio_jax.model.architecture import ModelConfig
  from mio_jax.model.transformer import Transformer
  from mio_jax.parallel import sharding as shd
  from mio_jax.train import mfu
  from mio_jax.train import state as state_lib

  rss_imports = current_rss_mb()
  shape = SHAPES[FLAGS.shape]
  dtype = FLAGS.dtype or shape["dtype"]
  vocab = bench_vocab(shape["vocab"])
  model_cfg = ModelConfig(
    vocab_size=shape["vocab"],
    d_model=shape["d_model"],
    n_layers=shape["n_layers"],
    n_heads=shape["n_heads"],
    n_kv_heads=shape["n_kv_heads"],
    ffn_dim=shape["ffn_dim"],
    dtype=dtype,
    attention_impl=FLAGS.attention_impl,
    remat_policy=FLAGS.remat,
  )
  config = get_base_config()
  config.seq_len, config.global_batch, config.total_steps = shape["seq_len"], shape["batch"], 1000
  config.lr, config.loss_chunk = 1e-3, FLAGS.loss_chunk
  s = setup_step(config, model_cfg, vocab, jax.devices()[: FLAGS.devices])
  state = state_lib.init_state(
    Transformer(model_cfg), s.tx, config.seed, s.shardings, s.mesh, s.rules
  )
  batches = [
    shd.global_batch_arrays(
      random_batch(i, shape["batch"], shape["seq_len"], vocab.size),
      s.batch_sharding,
      shape["batch"],
    )
    for i in range(2)
  ]
  for i in range(2):  # compile + warm up
    state, metrics = s.step_fn(state, batches[i % 2])
  jax.block_until_ready(metrics)
  t0, c0 = time.perf_counter(), time.process_time()
  for i in range(FLAGS.steps):
    state, metrics = s.step_fn(state, batches[i % 2])
  jax.block_until_ready(metrics)
  step_time = (time.perf_counter() - t0) / FLAGS.steps
  cpu_time = (time.process_time() - c0) / FLAGS.steps  # all threads; steadier on a shared host

  tokens_per_s = shape["batch"] * shape["seq_len"] / step_time
  fpt = flops_per_token(shape)
  peak = mfu.total_peak_flops(dtype)
  stats = jax.devices()[0].memory_stats() or {}  # accelerators only
  print(
    json.dumps(
      {
        "impl": "mio_jax",
        "shape": FLAGS.shape,
        "dtype": dtype,
        "device": jax.devices()[0].device_kind,
        "tokens_per_s": round(tokens_per_s, 1),
        "step_time_s": round(step_time, 4),
        "step_cpu_s": round(cpu_time, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_imports_mb": rss_imports,
        "device_peak_mb": round(stats["peak_bytes_in_use"] / 2**20, 1)
        if "peak_bytes_in_use" in stats
        else None,
        "mfu": round(mfu.mfu(fpt, tokens_per_s, peak), 4),
        "flops_per_token": fpt,
        "peak_flops": peak,
        "loss": round(float(metrics["loss"]), 4),
        "loss_chunk": FLAGS.loss_chunk,
        "attention_impl": FLAGS.attention_impl,
        "remat": FLAGS.remat,
        "one_core": FLAGS.one_core,
        **host_fields(),
      }
    )
  )


if __name__ == "__main__":
  from mio_jax.hardware import host_memory  # before JAX loads, as the training command line does

  host_memory.reexec_with_huge_pages()
  define_flags()
  app.run(main)
