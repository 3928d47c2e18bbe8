"""This CPU's hardware numbers for the roofline, measured in the calling process: the ISA's FMA
peak (lscpu), XLA's matmul rate on given shapes in their three training forms, streaming bandwidth,
the rate fresh pages are mapped, and the cost of one XLA:CPU op (benchmarks/roofline_check.py)."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time

from mio_jax.hardware.cpu_peak import cpu_mhz, fma_flops_per_cycle, lscpu

# ---------------------------------------------------------------------------------------------
# The host: what the ISA allows (mio_jax/hardware/cpu_peak.py), and what XLA reaches.


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
