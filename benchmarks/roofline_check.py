"""The roofline (mio_jax/roofline.py) checked against a measured step on this CPU.

    python -m benchmarks.roofline_check [--shapes=tiny,S0,S1,S2] [--steps=5] \
        [--out=benchmarks/results/roofline_check.json]

For each shape (benchmarks/train_step.py SHAPES, plus the demo's `tiny` model) it measures, in
this process and right before the step (so that the host's load hits both):
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
import platform
import re
import resource
import statistics
import subprocess
import time

from absl import app, flags

from benchmarks import train_step as ts

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # libtpu is installed for AOT: keep jax off it

# The demo's model (configs/stage1.py:demo): mio_jax/models.py 'tiny' at seq 512, batch 8, one
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
# The host: what the ISA allows, and what XLA reaches.


def lscpu() -> dict:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
  except (OSError, subprocess.SubprocessError):
    return {}
  return dict(
    (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in out.splitlines())
  )


def cpu_mhz(info: dict) -> float | None:
  """Max clock if lscpu knows it (bare metal), else the clock /proc/cpuinfo reports (VMs)."""
  for key in ("CPU max MHz", "CPU MHz"):
    if info.get(key):
      return float(info[key])
  try:
    with open("/proc/cpuinfo") as f:
      return float(re.search(r"cpu MHz\s*:\s*([0-9.]+)", f.read()).group(1))
  except (OSError, AttributeError):
    return None


def fma_flops_per_cycle(info: dict) -> tuple[int, int, str]:
  """(f32, bf16) FLOP per cycle per core from the ISA flags, and how it was derived.

  FMA = 2 FLOPs per lane; two FMA pipes on every core listed here. AVX-512 on AMD Zen 4
  (family 25) runs as two 256-bit halves, so it has the AVX2 width; Zen 5 (26) and Intel run
  512 bits. bf16: AMX tiles (Intel Sapphire Rapids+) 1,024 bf16 FMAs per cycle; avx512_bf16's
  VDPBF16PS does twice the f32 lanes."""
  flags_ = set(info.get("Flags", "").split())
  amd = "AMD" in info.get("Vendor ID", "") + info.get("Model name", "")
  family = int(info.get("CPU family", "0") or 0)
  if "avx512f" in flags_ and not (amd and family < 26):
    f32, how = 2 * 2 * 16, "avx512f: 2 FMA pipes x 16 f32 lanes"
  elif "avx512f" in flags_ or ("avx2" in flags_ and "fma" in flags_):
    f32, how = (
      2 * 2 * 8,
      "2 FMA pipes x 8 f32 lanes (AVX2 width"
      + ("; AVX-512 double-pumped on Zen 4)" if "avx512f" in flags_ else ")"),
    )
  else:
    f32, how = 2 * 4, "SSE: 1 pipe x 4 lanes x 2 (mul+add)"
  if "amx_bf16" in flags_:
    bf16 = 2 * 1024
    how += "; bf16: AMX 1,024 FMAs/cycle"
  elif "avx512_bf16" in flags_:
    bf16 = 2 * f32
    how += "; bf16: avx512_bf16 (2x f32)"
  else:
    bf16 = f32
  return f32, bf16, how


def host_info() -> dict:
  import jax

  info = lscpu()
  threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  mhz = cpu_mhz(info)
  f32, bf16, how = fma_flops_per_cycle(info)
  peak = threads * (mhz or 0) * 1e6
  return {
    "cpu_model": info.get("Model name", platform.processor()),
    "vendor": info.get("Vendor ID"),
    "cpu_family": info.get("CPU family"),
    "cpu_model_number": info.get("Model"),
    "threads": threads,
    "cpu_mhz": mhz,
    "isa": how,
    "isa_peak_f32_flops": peak * f32,
    "isa_peak_bf16_flops": peak * bf16,
    "jax": jax.__version__,
    "jaxlib": getattr(jax.lib, "__version__", None) or _version("jaxlib"),
    "python": platform.python_version(),
  }


def _version(pkg: str):
  import importlib.metadata

  try:
    return importlib.metadata.version(pkg)
  except importlib.metadata.PackageNotFoundError:
    return None


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _faults() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _median_time(fn, *args, repeats: int = 7) -> tuple[float, float]:
  """(median seconds per call after one warm-up, page faults per call). The median, as for the
  step: on a shared host a best-of would pair the luckiest kernel run with a typical step."""
  fn(*args).block_until_ready()
  times, f0 = [], _faults()
  for _ in range(repeats):
    t = time.perf_counter()
    fn(*args).block_until_ready()
    times.append(time.perf_counter() - t)
  return statistics.median(times), (_faults() - f0) / repeats


def measure_bandwidth(mib: int = 256, repeats: int = 7) -> tuple[float, float]:
  """(streaming, first-touch) bytes/s of an XLA elementwise pass over a large array.

  Streaming: in place (the input donated), read + write. First touch: the same pass into a
  fresh output, whose pages the kernel maps on first write (XLA:CPU allocates large outputs and
  temporaries per execution): the extra time per faulted byte."""
  import jax
  import jax.numpy as jnp

  x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
  fresh, faults = _median_time(jax.jit(lambda a: a * 1.0001), x, repeats=repeats)
  f = jax.jit(lambda a: a * 1.0001, donate_argnums=0)
  x = f(x).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    x = f(x).block_until_ready()
    times.append(time.perf_counter() - t)
  inplace = statistics.median(times)
  touched = max(faults, 1.0) * PAGE
  return 2.0 * x.nbytes / inplace, touched / max(fresh - inplace, 1e-9)


# A matmul's three forms in a train step: forward x·W, input gradient dy·Wᵀ (contracts n),
# weight gradient xᵀ·dy (contracts m), as einsums over ([m, k], [k, n]) operands.
FORMS = {
  "fwd": ("mk,kn->mn", ("m", "k"), ("k", "n")),
  "dgrad": ("mn,kn->mk", ("m", "n"), ("k", "n")),
  "wgrad": ("mk,mn->kn", ("m", "k"), ("m", "n")),
}


def measure_matmul(
  m: int = 2048, k: int = 2048, n: int = 2048, b: int = 1, form: str = "fwd", loop: int = 4
) -> float:
  """f32 FLOP/s of one form (`FORMS`) of a [b, m, k] x [b, k, n] matmul (b = 1: plain 2-D).

  Timed as (t(`loop` chained matmuls) - t(1)) / (loop - 1), medians of 7 calls: a call maps its
  output and temporaries afresh (see `measure_bandwidth`), once per call however many matmuls
  it runs, so the difference is the kernel alone, as inside the step (whose temporaries are
  mapped once per step and charged there)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  eq, sa, sb = FORMS[form]
  size = {"m": m, "k": k, "n": n}
  lead, pre = ((b,), "b") if b > 1 else ((), "")
  rng = np.random.default_rng(0)
  # resident arrays: no host copy per call
  x = jnp.asarray(rng.standard_normal(lead + tuple(size[a] for a in sa), np.float32))
  w = jnp.asarray(rng.standard_normal(lead + tuple(size[a] for a in sb), np.float32))
  ins, out = eq.split("->")
  eq = ",".join(pre + i for i in ins.split(",")) + "->" + pre + out
  out_shape = lead + tuple(size[a] for a in out)

  def chain(a, c, times):
    def body(_, acc):  # the carry feeds the smaller operand: no loop-invariant hoisting
      s = acc.reshape(-1)[0] * 0.0  # not folded: XLA keeps IEEE semantics (NaN * 0)
      aa, cc = (a + s, c) if a.size <= c.size else (a, c + s)
      return jnp.einsum(eq, aa, cc)

    return jax.lax.fori_loop(0, times, body, jnp.zeros(out_shape, jnp.float32))

  one = _median_time(jax.jit(lambda a, c: chain(a, c, 1)), x, w)[0]
  many = _median_time(jax.jit(lambda a, c: chain(a, c, loop)), x, w)[0]
  secs = (many - one) / (loop - 1) if many > one else many / loop
  return 2.0 * b * m * k * n / secs


def measure_op_seconds(chain: int = 256, repeats: int = 7) -> float:
  """Seconds per XLA:CPU op: a chain of dependent 8 x 8 matmuls (no fusion across dots, no
  arithmetic to speak of), so each link costs what dispatching one op costs."""
  import jax
  import jax.numpy as jnp

  def f(x):
    for _ in range(chain):
      x = jnp.tanh(x @ x)  # the tanh keeps values bounded; XLA fuses it into the dot's output
    return x

  x = jnp.full((8, 8), 0.1, jnp.float32)
  one = _median_time(jax.jit(lambda a: jnp.tanh(a @ a)), x, repeats=repeats)[0]
  return max(_median_time(jax.jit(f), x, repeats=repeats)[0] - one, 0.0) / (chain - 1)


def matmul_classes(shape: dict) -> dict:
  """The step's matmuls by shape: name -> ([m, k] x [k, n] with a leading batch dim b, FLOPs per
  step of each of the three forms in `FORMS`: forward, input and weight gradient)."""
  d, h, g, f, v = (shape[k] for k in ("d_model", "n_heads", "n_kv_heads", "ffn_dim", "vocab"))
  b, t, layers = shape["batch"], shape["seq_len"], shape["n_layers"]
  hd, n = d // h, b * t
  chunk = shape["loss_chunk"] or t
  blocks = max(t // 128, 1)  # attention runs in query blocks of ~128 rows (model/attention.py)
  dims = {  # (batch, m, k, n) of one call, calls per step
    "qkv": ((1, n, d, (h + 2 * g) * hd), layers),
    "attn_out": ((1, n, h * hd, d), layers),
    "mlp_gate_up": ((1, n, d, 2 * f), layers),
    "mlp_down": ((1, n, f, d), layers),
    # one query block against half the keys (the causal average), per head; QK^T and PV
    "attention": ((b * h, t // blocks, hd, t // 2), 2 * layers * blocks),
    "lm_head": ((1, b * chunk, d, v), t // chunk),
  }
  out = {}
  for name, ((bb, m, k, nn), calls) in dims.items():
    out[name] = {"dims": (bb, m, k, nn), "flops": 2.0 * bb * m * k * nn * calls}
  return out


def hardware(host: dict, shape: dict) -> dict:
  """The rates measured now (call right before a step measurement: same load).

  Kernel efficiency: the step's own matmul shapes (`matmul_classes`) each timed, their rates
  combined by FLOPs (total FLOPs / sum of per-class times) and divided by the ISA peak. The
  rate of a 2,048² matmul is reported beside it."""
  stream, touch = measure_bandwidth()
  big = measure_matmul()
  classes = matmul_classes(shape)
  for c in classes.values():
    bb, m, k, n = c["dims"]
    c["flops_per_s"] = {form: measure_matmul(m, k, n, bb, form) for form in FORMS}
  flops = sum(c["flops"] * len(FORMS) for c in classes.values())
  secs = sum(c["flops"] / r for c in classes.values() for r in c["flops_per_s"].values())
  own = flops / secs
  peak = host["isa_peak_f32_flops"]
  return {
    "matmul_2048_f32_flops": big,
    "matmul_shape_f32_flops": own,
    "matmul_classes": classes,
    "kernel_efficiency": own / peak if peak else None,
    "kernel_efficiency_2048": big / peak if peak else None,
    "stream_bytes_per_s": stream,
    "first_touch_bytes_per_s": touch,
    "op_s": measure_op_seconds(),
    "load_avg": list(os.getloadavg()),
  }


# ---------------------------------------------------------------------------------------------
# The step: built as benchmarks/train_step.py builds it.


def model_and_config(shape: dict, **model_kw):
  from configs.base import get_base_config
  from mio_jax.model import ModelConfig

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

  from mio_jax.model import Transformer
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
  from mio_jax import aot

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

  from mio_jax import aot
  from mio_jax import sharding as shd
  from mio_jax.model import Transformer
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
  from mio_jax import roofline
  from mio_jax.tpu_specs import Topology, cpu_chip

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
    "XLA ops x op cost (mio_jax/roofline.py; rates measured in this run)",
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
