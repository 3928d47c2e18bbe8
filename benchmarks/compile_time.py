"""Compile time against depth: `python -m benchmarks.compile_time`.

Lowers and compiles the real train step (AdamW, fused chunked cross-entropy, metrics) for small
dims at 2 and 32 layers. With `nn.scan` over layers the layer body is compiled once, so 32
layers should cost ≤ 1.5× 2 layers; the unrolled 32-layer step (`scan_layers=False`) is timed
too, for contrast. Each figure is the best of `--repeats` fresh lowerings (alternating, so
machine load hits all alike). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import flax.linen as nn
import jax


def compile_seconds(layers: int, scan: bool, args) -> float:
  from benchmarks.train_step import bench_vocab
  from mio_jax.config import get_base_config
  from mio_jax.model.architecture import ModelConfig
  from mio_jax.model.transformer import Transformer
  from mio_jax.train import loop
  from mio_jax.train import state as state_lib
  from mio_jax.train import step as step_lib

  cfg = ModelConfig(
    vocab_size=args.vocab,
    d_model=args.d_model,
    n_layers=layers,
    n_heads=4,
    n_kv_heads=2,
    ffn_dim=4 * args.d_model,
    scan_layers=scan,
  )
  config = get_base_config()
  config.seq_len, config.global_batch = args.seq_len, args.batch
  s = loop.setup_model(config, cfg, bench_vocab(args.vocab), jax.devices()[:1])
  state = state_lib.abstract_state(Transformer(cfg), s.tx, s.shardings)
  batch = {
    k: jax.ShapeDtypeStruct((args.batch, args.seq_len), jax.numpy.int32, sharding=s.batch_sharding)
    for k in step_lib.BATCH_KEYS
  }
  t = time.perf_counter()
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    s.step_fn.jitted.lower(state, batch).compile()
  return time.perf_counter() - t


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--layers", default="2,32")
  parser.add_argument("--d_model", type=int, default=128)
  parser.add_argument("--vocab", type=int, default=1024)
  parser.add_argument("--seq_len", type=int, default=128)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--skip_unrolled", action="store_true")
  args = parser.parse_args()
  few, many = (int(x) for x in args.layers.split(","))
  runs = [("scan", few, True), ("scan", many, True)]
  if not args.skip_unrolled:
    runs.append(("unrolled", many, False))
  best = {}
  compile_seconds(few, True, args)  # first-use costs (imports, backend init) off the clock
  for _ in range(args.repeats):
    for kind, layers, scan in runs:
      key = f"{kind}_{layers}_layers_s"
      best[key] = min(best.get(key, float("inf")), compile_seconds(layers, scan, args))
  result = {
    "benchmark": "compile_time",
    "d_model": args.d_model,
    "vocab": args.vocab,
    "seq_len": args.seq_len,
    "cpus": os.cpu_count(),
    **{k: round(v, 2) for k, v in best.items()},
  }
  result["ratio"] = round(best[f"scan_{many}_layers_s"] / best[f"scan_{few}_layers_s"], 3)
  if not args.skip_unrolled:
    result["unrolled_ratio"] = round(
      best[f"unrolled_{many}_layers_s"] / best[f"scan_{few}_layers_s"], 3
    )
  print(json.dumps(result))


if __name__ == "__main__":
  main()
