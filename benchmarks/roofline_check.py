"""The roofline (mio_jax/scale/roofline.py) checked against a measured step on this CPU.

    python -m benchmarks.roofline_check [--shapes=tiny,S0,S1,S2] [--steps=5] \
        [--out=benchmarks/results/roofline_check.json]

For each shape (benchmarks/train_step.py SHAPES, plus the demo's `tiny` model) it measures, in
this process and right before the step (benchmarks/host_rates.py; so that the load hits both):
- the ISA's peak f32 FLOP/s (threads x clock x FMA width, from lscpu) and XLA's rate on a
  2,048² matmul and on the step's own matmul shapes in their three forms (forward, input
  gradient, weight gradient): the kernel efficiency the prediction uses is the latter / peak,
- the streaming bandwidth of an in-place elementwise pass over 256 MiB and the rate at which
  fresh pages are mapped (XLA:CPU maps a step's temporaries anew at every execution),
- the cost of dispatching one XLA:CPU op (a chain of dependent 8 x 8 matmuls),
then predicts the step with `roofline.roofline`:
  FLOPs / (ISA peak x kernel efficiency) + XLA's bytes / streaming bandwidth
  + (temporaries + fresh outputs) / first-touch rate + XLA's op count x op cost,
and times the real jitted step (AdamW, fused chunked CE). Target: predicted / measured within
0.67-1.5x. Prints one table and writes the JSON (host, versions, load averages, every term).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import resource
import statistics
import time

from absl import app, flags

from benchmarks import train_step as ts
from benchmarks.host_rates import hardware, host_info

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # libtpu is installed for AOT: keep jax off it

# The demo's model (configs/stage1.py:demo): mio_jax/model/sizes.py 'tiny' at seq 512, batch 8, one
# LM-head chunk (the demo leaves loss_chunk at 0).
SHAPES = {
  **{k: dict(v, loss_chunk=128) for k, v in ts.SHAPES.items() if k != "1B"},
  "tiny": dict(
    n_layers=4,
    d_model=128,
    n_heads=4,
    n_kv_heads=2,
    ffn_dim=352,
    vocab=2_560,
    seq_len=512,
    batch=8,
    dtype="float32",
    loss_chunk=0,
  ),
}
BAND = (0.67, 1.5)


# ---------------------------------------------------------------------------------------------
# The step: built as benchmarks/train_step.py builds it.


def model_and_config(shape: dict, **model_kw):
  from mio_jax.config import get_base_config
  from mio_jax.model.architecture import ModelConfig

  model_cfg = ModelConfig(
    vocab_size=shape["vocab"],
    d_model=shape["d_model"],
    n_layers=shape["n_layers"],
    n_heads=shape["n_heads"],
    n_kv_heads=shape["n_kv_heads"],
    ffn_dim=shape["ffn_dim"],
    dtype=shape["dtype"],
    attention_impl="xla",
    remat_policy="none",
    **model_kw,
  )
  config = get_base_config()
  config.seq_len, config.global_batch, config.total_steps = shape["seq_len"], shape["batch"], 1000
  config.lr, config.loss_chunk = 1e-3, shape["loss_chunk"]
  return model_cfg, config


def _abstract_step(shape: dict, loss_chunk: int):
  """The step compiled for an unscanned copy of the model: XLA's cost analysis counts a loop
  body once, so only the LM-head chunk loop is left to extrapolate."""
  import jax

  from mio_jax.model.transformer import Transformer
  from mio_jax.train.state import abstract_state

  model_cfg, config = model_and_config(shape, scan_layers=False)
  config.loss_chunk = loss_chunk
  vocab = ts.bench_vocab(shape["vocab"])
  s = ts.setup_step(config, model_cfg, vocab, jax.devices()[:1])
  state = abstract_state(Transformer(model_cfg), s.tx, s.shardings)
  batch = {
    k: jax.ShapeDtypeStruct((shape["batch"], shape["seq_len"]), "int32", sharding=s.batch_sharding)
    for k in ("tokens", "targets", "loss_mask", "segment_ids", "positions")
  }
  with jax.set_mesh(s.mesh):
    compiled = s.step_fn.jitted.lower(state, batch).compile()
  return compiled


# HLO instructions that are no work at run time (views, tuples, parameters) or are a loop's
# bookkeeping; every other top-level instruction is one op the XLA:CPU runtime dispatches.
_FREE_OPS = {
  "parameter",
  "constant",
  "get-tuple-element",
  "tuple",
  "bitcast",
  "after-all",
  "partition-id",
  "replica-id",
  "opt-barrier",
}


def count_ops(hlo_text: str) -> int:
  """Ops the runtime dispatches: instructions of the non-fused computations (ENTRY, loop and
  branch bodies; a loop body once, like the cost analysis) that are not free."""
  n, in_fused = 0, False
  for line in hlo_text.splitlines():
    if line and not line.startswith(" "):  # a computation header, or its closing brace
      in_fused = bool(re.match(r"\s*%?[\w.\-]*fus", line)) or "fused_computation" in line
      continue
    if in_fused:
      continue
    m = re.match(r"\s+(?:ROOT )?%?[\w.\-]+ = [^=]*? ([a-z][a-z\-]*)\(", line)
    if m and m.group(1) not in _FREE_OPS:
      n += 1
  return n


def xla_cost(shape: dict) -> dict:
  """FLOPs, bytes accessed and op count of the whole step: the step with LM-head chunks of c and
  of 2c gives one chunk's cost, added for the chunks the loop counted once."""
  from mio_jax.scale import aot

  def cost(chunk):
    compiled = _abstract_step(shape, chunk)
    out = aot.cost_stats(compiled)
    out["ops"] = float(count_ops(compiled.as_text()))
    return out

  c, t = shape["loss_chunk"], shape["seq_len"]
  one = cost(c)
  if not c or c >= t:
    return dict(one, chunks=1)
  two = cost(2 * c)  # one more chunk's worth (the loop body is counted once either way)
  n = t // c
  return dict({k: one[k] + (n - 1) * (two[k] - one[k]) for k in one}, chunks=n)


def measure_step(shape: dict, steps: int) -> dict:
  """Median wall time of the real (scanned) jitted step over `steps` steps after 2 warm-ups."""
  import jax

  from mio_jax.model.transformer import Transformer
  from mio_jax.parallel import sharding as shd
  from mio_jax.scale import aot
  from mio_jax.train import state as state_lib

  model_cfg, config = model_and_config(shape)
  vocab = ts.bench_vocab(shape["vocab"])
  s = ts.setup_step(config, model_cfg, vocab, jax.devices()[:1])
  state = state_lib.init_state(
    Transformer(model_cfg), s.tx, config.seed, s.shardings, s.mesh, s.rules
  )
  batches = [
    shd.global_batch_arrays(
      ts.random_batch(i, shape["batch"], shape["seq_len"], vocab.size),
      s.batch_sharding,
      shape["batch"],
    )
    for i in range(2)
  ]
  with jax.set_mesh(s.mesh):  # the real step's buffers: what each execution allocates afresh
    memory = aot.memory_stats(s.step_fn.jitted.lower(state, batches[0]).compile())
  for i in range(2):
    state, metrics = s.step_fn(state, batches[i % 2])
  jax.block_until_ready(metrics)
  times, faults = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  cpu0 = time.process_time()
  for i in range(steps):
    t = time.perf_counter()
    state, metrics = s.step_fn(state, batches[i % 2])
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  return {
    "step_s": statistics.median(times),
    "step_s_min": min(times),
    "step_s_all": times,
    "step_cpu_s": (time.process_time() - cpu0) / steps,  # all threads
    "memory": memory,
    # first touches of freshly mapped memory: on some VMs a large share of the step
    "page_faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps,
    "model_cfg": model_cfg,
    "config": config,
  }


def predict(model_cfg, config, host: dict, hw: dict, cost: dict, memory: dict) -> dict:
  from mio_jax.hardware.tpu_specs import Topology, cpu_chip
  from mio_jax.scale import roofline

  chip = cpu_chip(host["cpu_model"], host["isa_peak_f32_flops"], hw["stream_bytes_per_s"])
  topo = Topology(name="cpu-1", chip=chip, grid=(1,))
  # Each execution maps its temporaries and non-donated outputs afresh (XLA:CPU allocates them
  # per run); the pages cost a fault on first write.
  fresh = memory["temp_bytes"] + memory["output_bytes"] - memory["alias_bytes"]
  return roofline.roofline(
    model_cfg,
    topo,
    config.seq_len,
    config.global_batch,
    {"dcn": 1, "data": 1, "fsdp": 1, "tensor": 1},
    1,
    dict(cost, **{"fresh bytes": fresh}),
    kernel_efficiency=hw["kernel_efficiency"],
    op_s=hw["op_s"],
    first_touch_bytes_per_s=hw["first_touch_bytes_per_s"],
  )


def check_shape(name: str, host: dict, steps: int) -> dict:
  shape = SHAPES[name]
  cost = xla_cost(shape)
  hw = hardware(host, shape)  # right before the step: the same load
  measured = measure_step(shape, steps)
  hw_after = {"load_avg_after": list(os.getloadavg())}
  perf = predict(measured["model_cfg"], measured["config"], host, hw, cost, measured["memory"])
  ratio = perf["step_s"] / measured["step_s"]
  # The roofline as it stood (TPU terms only: compute at the ISA peak + bytes at the streaming
  # bandwidth), and with the 2,048² matmul's efficiency instead of the step's shapes'.
  eff = {"kernel_efficiency": hw["kernel_efficiency_2048"]}
  alt = {"first_touch_bytes_per_s": None, "op_s": 0.0, "kernel_efficiency": 1.0}
  return {
    "shape": dict(shape),
    "hardware": dict(hw, **hw_after),
    "xla_cost": cost,
    "predicted": {k: v for k, v in perf.items() if isinstance(v, (int, float, str))},
    "predicted_s": perf["step_s"],
    "predicted_s_2048_efficiency": predict(
      measured["model_cfg"], measured["config"], host, dict(hw, **eff), cost, measured["memory"]
    )["step_s"],
    "predicted_s_tpu_terms_only": predict(
      measured["model_cfg"], measured["config"], host, dict(hw, **alt), cost, measured["memory"]
    )["step_s"],
    "measured_s": measured["step_s"],
    "measured": {k: v for k, v in measured.items() if k not in ("model_cfg", "config")},
    "ratio": ratio,
    "in_band": BAND[0] <= ratio <= BAND[1],
  }


def run(names, steps: int) -> dict:
  host = host_info()
  load_before = list(os.getloadavg())
  results = {}
  for name in names:
    results[name] = check_shape(name, host, steps)
  return {
    "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    "host": host,
    "load_avg_before": load_before,
    "load_avg_after": list(os.getloadavg()),
    "band": list(BAND),
    "steps": steps,
    "model": "step = analytic FLOPs / (ISA peak x kernel efficiency of the step's matmul shapes) "
    "+ XLA bytes / streaming bandwidth + (temporaries + fresh outputs) / first-touch rate + "
    "XLA ops x op cost (mio_jax/scale/roofline.py; rates measured in this run)",
    "shapes": results,
  }


def format_table(report: dict) -> str:
  h = report["host"]
  lines = [
    f"{report['date']} · {h['cpu_model']} · {h['threads']} threads · ISA peak f32 "
    f"{h['isa_peak_f32_flops'] / 1e9:,.0f} GFLOP/s ({h['isa']}) · jax {h['jax']}",
    "| shape | matmul GFLOP/s 2048² / shape's (eff.) | stream GB/s | first-touch GB/s | op µs | "
    "compute ms | memory ms | page-fault ms | ops ms | predicted ms | measured ms | ratio | "
    "load |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name, r in report["shapes"].items():
    hw, p = r["hardware"], r["predicted"]
    lines.append(
      f"| {name} | {hw['matmul_2048_f32_flops'] / 1e9:,.0f} / "
      f"{hw['matmul_shape_f32_flops'] / 1e9:,.0f} ({hw['kernel_efficiency']:.0%}) | "
      f"{hw['stream_bytes_per_s'] / 1e9:.1f} | {hw['first_touch_bytes_per_s'] / 1e9:.2f} | "
      f"{hw['op_s'] * 1e6:.1f} | {p['compute_s'] * 1e3:.1f} | {p.get('hbm_s', 0) * 1e3:.1f} | "
      f"{p.get('first_touch_s', 0) * 1e3:.1f} | "
      f"{p.get('op_overhead_s', 0) * 1e3:.1f} | {r['predicted_s'] * 1e3:.1f} | "
      f"{r['measured_s'] * 1e3:.1f} | {r['ratio']:.2f}× | {hw['load_avg'][0]:.2f} |"
    )
  return "\n".join(lines)


def main(argv):
  del argv
  report = run(FLAGS.shapes, FLAGS.steps)
  print(format_table(report))
  if FLAGS.out:
    os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
    with open(FLAGS.out, "w") as f:
      json.dump(report, f, indent=1, sort_keys=True, default=str)
      f.write("\n")


FLAGS = flags.FLAGS

if __name__ == "__main__":
  flags.DEFINE_list("shapes", ["tiny", "S0", "S1", "S2"], "Shapes to check.")
  flags.DEFINE_integer("steps", 5, "Timed steps per shape (after 2 warm-ups).")
  flags.DEFINE_string("out", "benchmarks/results/roofline_check.json", "JSON output ('' = none).")
  app.run(main)
