"""Pure arithmetic behind the AOT report: per-chip memory, FLOPs, a roofline step time, a verdict.

Inputs are plain numbers (XLA's memory/cost analyses as dicts, a ModelConfig, a Topology), so
everything here is testable without libtpu. Conventions:

- Model FLOPs (for MFU) are `ModelConfig.flops_per_token` (PaLM: 6 x matmul params + attention,
  no causal saving, no rematerialisation), as MaxText and the trainer report MFU.
- Hardware FLOPs add what the remat policy recomputes in the backward pass.
- With the splash attention kernel (TPU) the probes see none of its work (a Mosaic custom call):
  `splash_kernel_cost` adds its FLOPs and HBM bytes analytically.
- XLA's cost analysis counts the body of a loop (our `nn.scan` over layers, the micro-batch scan,
  the LM-head chunk scan) ONCE. `aot.py` therefore compiles two small probes (1 and 2 unscanned
  layers, one micro-batch, one LM-head chunk) and extrapolates: cost = M x (c1 + (L-1)(c2 - c1)).
"""

from __future__ import annotations

import math

from mio_jax.hardware.tpu_specs import GIB, Topology
from mio_jax.model.splash import padded_length  # the block choice lives with the kernel

HEADROOM_TARGET = 0.20  # below this the step may OOM on real hardware (fragmentation, XLA updates)
DCN_BYTES_PER_S_PER_HOST = 12.5e9  # 100 Gb/s; a conservative assumption, not a spec


def memory_report(stats: dict, hbm_bytes: int) -> dict:
  """Per-chip bytes from `compiled.memory_analysis()`. Donated state aliases its output, so the
  resident total is arguments + outputs - aliased + temporaries + program code."""
  total = (
    stats["argument_bytes"]
    + stats["output_bytes"]
    - stats["alias_bytes"]
    + stats["temp_bytes"]
    + stats.get("code_bytes", 0)
  )
  out = dict(stats)
  out.update(
    total_bytes=total,
    hbm_bytes=hbm_bytes,
    headroom=1.0 - total / hbm_bytes,
    **{k.replace("_bytes", "_gib"): v / GIB for k, v in stats.items()},
    total_gib=total / GIB,
    hbm_gib=hbm_bytes / GIB,
  )
  return out


def layer_forward_flops_per_token(cfg, seq_len: int) -> tuple[float, float]:
  """(matmul FLOPs, attention-score FLOPs) of one layer's forward pass per token."""
  d, h, k, hd, f = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn_dim
  matmul = 2.0 * (d * hd * (h + 2 * k) + h * hd * d + 3 * d * f)
  attention = 4.0 * h * hd * seq_len  # QK^T and PV
  return matmul, attention


def recompute_flops_per_token(cfg, seq_len: int, splash: bool = False) -> float:
  """Forward FLOPs the remat policy recomputes during the backward pass (per token, all layers).
  With `splash` only the weight matmuls: the kernel's recompute is in `splash_kernel_cost`."""
  matmul, attention = layer_forward_flops_per_token(cfg, seq_len)
  attention = 0.0 if splash else attention
  per_layer = {
    "none": 0.0,
    "dots": 0.0,
    "dots_no_batch": attention,
    "attn_out": matmul - 2.0 * cfg.n_heads * cfg.head_dim * cfg.d_model,
    "dots_attn_out": attention / 2,  # the scores again, for the softmax backward
    "full": matmul + attention,
  }[cfg.remat_policy]
  return cfg.n_layers * per_layer


def attention_impl(cfg) -> str:
  """The attention path of a TPU program ('auto' and AOT always target TPU)."""
  return "splash" if cfg.attention_impl in ("splash", "auto") else "xla"


# Policies under which the backward pass re-runs the splash forward kernel (its output and
# log-sum-exp are named "attn_out"; only policies that keep that name avoid the re-run).
SPLASH_FORWARD_RECOMPUTED = {
  "none": False,
  "attn_out": False,
  "dots_attn_out": False,
  "dots": True,
  "dots_no_batch": True,
  "full": True,
}


def splash_kernel_cost(cfg, seq_len: int, examples: float) -> dict:
  """FLOPs and HBM bytes of the splash kernels (model/splash.py) for `examples` sequences.

  XLA's cost analysis does not see inside a Mosaic custom call: a forward kernel at 8 heads x
  2,048 positions reports 0 FLOPs and 0 of its operand bytes (the XLA-counted 2 MB are the
  segment-id broadcasts). So the probes miss the kernels entirely and they are added here:
  - FLOPs: the kernel visits the diagonal and lower blocks of the causal [T, T] grid
    (n(n+1)/2 of n^2 blocks, n = padded T / block); each visited block is one [b, b] x [b, K]
    matmul per head ("mm"). Forward: QK^T, PV = 2 mm; dq kernel: QK^T, dO V^T, dS K = 3 mm;
    dkv kernel: QK^T, dO V^T, P^T dO, dS^T Q = 4 mm; plus the forward again when the remat
    policy does not keep its residuals. Packed segments do not shrink the grid (their
    boundaries are data).
  - HBM: forward and dq kernel read q (and dO, write dq) once per head and re-read K and V for
    every visited block; the dkv kernel reads K/V once per group and re-reads q and dO for every
    visited block. Segment ids and log-sum-exp travel padded, as the kernels' BlockSpecs fetch
    them: [T, 128] ("vec": the forward's q ids and log-sum-exp, the dq kernel's q ids, the dkv
    kernel's kv ids) or [8, T] (vec/16: kv ids in forward/dq and q ids, lse, dO.o in dkv, per
    visited block). A block is assumed fetched once per grid step that changes its index.
  """
  t_pad, block = padded_length(seq_len)
  visited = (t_pad // block + 1) / 2  # KV blocks per q block, on average
  h, g, k = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  itemsize = 2 if cfg.dtype in ("bfloat16", "float16") else 4
  mm = 2.0 * t_pad * block * k * visited * h
  a, vec = t_pad * k * itemsize, t_pad * 128 * 4  # one head's [T, K], one lane-padded vector
  fwd_b = h * a * (2 + 2 * visited) + h * vec * (2 + visited / 16)
  dq_b = h * a * (3 + 2 * visited) + h * vec * (1 + (2 + visited) / 16)
  dkv_b = 4 * g * a + h * visited * 2 * a + h * vec * (1 + 3 * visited / 16)
  fwd_runs = 1 + SPLASH_FORWARD_RECOMPUTED[cfg.remat_policy]
  scale = cfg.n_layers * examples
  return {
    "flops": scale * mm * (2 * fwd_runs + 3 + 4),
    "bytes": scale * (fwd_b * fwd_runs + dq_b + dkv_b),
    "padded_len": t_pad,
    "block": block,
    "forward_runs": fwd_runs,
  }


def extrapolate_cost(c1: dict, c2: dict, n_layers: int, micro_batches: int) -> dict:
  """Probe costs (1 and 2 layers, one micro-batch) → the full step's cost, key by key."""
  out = {}
  for key in c1.keys() & c2.keys():
    per_layer = c2[key] - c1[key]
    out[key] = micro_batches * (c1[key] + (n_layers - 1) * per_layer)
  return out


def fsdp_comm_bytes(cfg, fsdp: int, tensor: int, micro_batches: int) -> float:
  """Bytes each chip receives over ICI per step under FSDP: bf16 weight all-gathers in the
  forward and again in the backward pass (per micro-batch), then an f32 gradient reduce-scatter.
  With tensor parallelism each chip gathers only its 1/tensor share of the weights."""
  if fsdp <= 1:
    return 0.0
  params = cfg.num_params() / tensor
  return (fsdp - 1) / fsdp * (2 * micro_batches * 2.0 * params + 4.0 * params)


def data_comm_bytes(cfg, mesh_sizes: dict) -> float:
  """Bytes each chip moves for the gradient all-reduce over the `data` axis (ring, f32 shards):
  with data > 1 the params are replicated data-ways and each replica's grads must agree."""
  data = mesh_sizes.get("data", 1)
  if data <= 1:
    return 0.0
  shard = 4.0 * cfg.num_params() / (mesh_sizes["fsdp"] * mesh_sizes.get("tensor", 1))
  return 2.0 * (data - 1) / data * shard


def tensor_comm_bytes(cfg, mesh_sizes: dict, tokens: int) -> float:
  """Bytes each chip moves for tensor-parallel activation all-reduces (ring): per layer two in
  the forward pass (attention and MLP outputs), two in the backward pass, two more when full
  remat re-runs the forward. These sit on the critical path (the next op needs the sum)."""
  t = mesh_sizes.get("tensor", 1)
  if t <= 1:
    return 0.0
  dp = mesh_sizes.get("dcn", 1) * mesh_sizes.get("data", 1) * mesh_sizes["fsdp"]
  itemsize = 2 if cfg.dtype in ("bfloat16", "float16") else 4
  per_layer = 4 + 2 * (cfg.remat_policy == "full")
  return cfg.n_layers * per_layer * 2.0 * (t - 1) / t * (tokens / dp) * cfg.d_model * itemsize


def dcn_seconds(cfg, topo: Topology, shards_per_slice: int) -> float:
  """Cross-slice gradient all-reduce time: each host sends and receives ~2x its chips' f32
  shards."""
  if topo.num_slices <= 1:
    return 0.0
  chips_per_host = topo.num_chips // topo.num_hosts
  shard_bytes = 4.0 * cfg.num_params() / shards_per_slice
  frac = (topo.num_slices - 1) / topo.num_slices
  return 2.0 * frac * shard_bytes * chips_per_host / DCN_BYTES_PER_S_PER_HOST


def roofline(
  cfg,
  topo: Topology,
  seq_len: int,
  global_batch: int,
  mesh_sizes: dict,
  micro_batches: int,
  xla_cost: dict | None,
  *,
  kernel_efficiency: float = 1.0,
  op_s: float = 0.0,
  first_touch_bytes_per_s: float | None = None,
) -> dict:
  """Step-time and MFU estimates per chip. `xla_cost` = extrapolated probe cost (or None).

  The keyword terms default to a TPU (every TPU table uses the defaults); a CPU needs them
  (benchmarks/roofline_check.py: without them the CPU steps read 0.39-0.50x measured):
  `kernel_efficiency`: the fraction of the peak the step's matmuls reach (a CPU: 45-55 % at the
  benchmark shapes, measured). `op_s`: cost of dispatching one op, per op of `xla_cost['ops']`
  (XLA:CPU runs op by op; ~1 us, a few ms per step). `first_touch_bytes_per_s`: rate at which
  the host maps fresh pages, charged for `xla_cost['fresh bytes']` (XLA:CPU maps a step's
  temporaries anew at every execution; TPU HBM is not paged)."""
  chip = topo.chip
  n = topo.num_chips
  tokens = global_batch * seq_len
  model_flops = cfg.flops_per_token(seq_len) * tokens / n
  splash = attention_impl(cfg) == "splash"
  hw_flops = model_flops + recompute_flops_per_token(cfg, seq_len, splash) * tokens / n
  kernel = splash_kernel_cost(cfg, seq_len, global_batch / n) if splash else None
  if kernel:  # the kernel's FLOPs replace the XLA attention's (model FLOPs keep the convention)
    _, attention = layer_forward_flops_per_token(cfg, seq_len)
    hw_flops += kernel["flops"] - 3 * cfg.n_layers * attention * tokens / n
  compute_s = hw_flops / (chip.peak_bf16_flops * kernel_efficiency)
  ici_s = (
    fsdp_comm_bytes(cfg, mesh_sizes["fsdp"], mesh_sizes.get("tensor", 1), micro_batches)
    + data_comm_bytes(cfg, mesh_sizes)
  ) / chip.ici_bytes_per_s
  tensor_s = tensor_comm_bytes(cfg, mesh_sizes, tokens) / chip.ici_bytes_per_s
  dcn_s = dcn_seconds(cfg, topo, n // topo.num_slices // mesh_sizes.get("tensor", 1))
  out = {
    "model_flops_per_chip": model_flops,
    "hardware_flops_per_chip": hw_flops,
    "model_flops_per_step": model_flops * n,
    "flops_per_token": cfg.flops_per_token(seq_len),
    "compute_s": compute_s,
    "ici_fsdp_s": ici_s,
    "ici_tensor_s": tensor_s,
    "dcn_s": dcn_s,
    "peak_flops_per_chip": chip.peak_bf16_flops,
    "attention": attention_impl(cfg),
    "kernel_efficiency": kernel_efficiency,
  }
  step_s, out["estimate"] = compute_s, "compute-bound only (an upper bound on MFU: no probe)"
  if xla_cost and kernel:  # add what XLA cannot see inside the custom calls
    out["splash_kernel"] = kernel
    kernel_s = kernel["flops"] / chip.peak_bf16_flops + kernel["bytes"] / chip.hbm_bytes_per_s
    xla_cost = dict(xla_cost, flops=xla_cost.get("flops", 0.0) + kernel["flops"])
    xla_cost["bytes accessed"] = xla_cost.get("bytes accessed", 0.0) + kernel["bytes"]
    if xla_cost.get("optimal_seconds"):
      xla_cost["optimal_seconds"] += kernel_s
  if xla_cost:
    flops = xla_cost.get("flops", 0.0)
    hbm_s = xla_cost.get("bytes accessed", 0.0) / chip.hbm_bytes_per_s
    optimal_s = xla_cost.get("optimal_seconds")
    out.update(
      xla_flops_per_chip=flops,
      xla_bytes_per_chip=xla_cost.get("bytes accessed"),
      xla_vs_analytic_flops=flops / hw_flops if hw_flops else math.nan,
      hbm_s=hbm_s,
      xla_optimal_s=optimal_s,
    )
    # Compute and HBM time added, not overlapped: the matmuls are compute-bound and the
    # normalisation/softmax/attention-score ops memory-bound, so each op is limited by one of them.
    # On v5p this sum matches XLA's own per-op cost model (`optimal_seconds`) within 2 %; that
    # model is used when it is larger (libtpu reports it as negative, i.e. not at all, for v5e).
    step_s = max(compute_s + hbm_s, optimal_s or 0.0)
    out["estimate"] = "XLA cost model" if step_s == optimal_s else "compute + HBM time"
  out["op_overhead_s"] = (xla_cost or {}).get("ops", 0.0) * op_s
  fresh = (xla_cost or {}).get("fresh bytes", 0.0)
  out["first_touch_s"] = fresh / first_touch_bytes_per_s if first_touch_bytes_per_s else 0.0
  step_s += out["op_overhead_s"] + out["first_touch_s"]
  # FSDP/data collectives overlap with compute when XLA schedules them asynchronously: count
  # only the excess. Tensor-parallel all-reduces do not overlap (see tensor_comm_bytes).
  out["step_s"] = max(step_s, ici_s) + tensor_s + dcn_s
  out["mfu"] = model_flops / (out["step_s"] * chip.peak_bf16_flops)
  out["mfu_ceiling_remat"] = model_flops / hw_flops
  out["tokens_per_s"] = tokens / out["step_s"]
  return out


def _divisor_at_least(n: int, k: int) -> int:
  return next((d for d in range(max(k, 1), n + 1) if n % d == 0), n)


def suggestions(
  memory: dict,
  cfg,
  mesh_sizes: dict,
  micro_batches: int,
  global_batch: int,
  seq_len: int,
  loss_chunk: int,
  n_chips: int,
) -> list[str]:
  """What to change when the step does not fit (largest lever first)."""
  tips = []
  hbm, state = memory["hbm_bytes"], memory["argument_bytes"]
  shards = mesh_sizes["fsdp"] * mesh_sizes["tensor"]
  if state > 0.4 * hbm and shards < n_chips:
    tips.append(
      f"params+optimizer state take {state / GIB:.1f} GiB/chip: shard them over all "
      f"{n_chips} chips with --config.mesh.fsdp=-1 --config.mesh.data=1"
    )
  elif state > 0.4 * hbm:
    need = math.ceil(state * shards / (0.4 * hbm))
    tips.append(
      f"params+optimizer state take {state / GIB:.1f} GiB/chip even sharded {shards} "
      f"ways: use a slice with >= {need} chips of this kind"
    )
  if cfg.remat_policy != "full":
    tips.append(
      f"recompute activations in the backward pass: --model_override=remat_policy=full "
      f"(now {cfg.remat_policy!r})"
    )
  data_parallel = mesh_sizes["dcn"] * mesh_sizes["data"] * mesh_sizes["fsdp"]
  per_shard = global_batch // max(1, micro_batches * data_parallel)
  temp = memory["temp_bytes"]
  if per_shard > 1 and temp == temp:  # not NaN
    need = math.ceil(temp / max(hbm * (1 - HEADROOM_TARGET) - state, 1))
    m = micro_batches * _divisor_at_least(per_shard, min(need, per_shard))
    tips.append(
      f"split the batch into micro-batches: --config.micro_batches={m} (now "
      f"{micro_batches}; temporaries shrink ~1/micro_batches)"
    )
  if loss_chunk <= 0 or loss_chunk > 1024:
    chunk = max(d for d in range(1, min(seq_len, 1024) + 1) if seq_len % d == 0)
    tips.append(f"compute the f32 LM-head logits in chunks: --config.loss_chunk={chunk}")
  if mesh_sizes["tensor"] == 1 and cfg.n_heads % 2 == 0 and n_chips % 2 == 0:
    tips.append("shard activations over heads/mlp too: --config.mesh.tensor=2 (or 4)")
  return tips


def verdict(memory: dict) -> tuple[bool, str]:
  """(fits, one-line verdict) against the chip's HBM and the headroom target."""
  used, hbm, room = memory["total_gib"], memory["hbm_gib"], memory["headroom"]
  if room < 0:
    return False, f"DOES NOT FIT: needs {used:.1f} GiB/chip of {hbm:.1f} GiB HBM"
  if room < HEADROOM_TARGET:
    return True, (
      f"fits, tight: {used:.1f} of {hbm:.1f} GiB/chip ({room:.0%} headroom, "
      f"target {HEADROOM_TARGET:.0%})"
    )
  return True, f"fits: {used:.1f} of {hbm:.1f} GiB/chip ({room:.0%} headroom)"
