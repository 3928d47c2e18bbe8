"""The human-readable summary of one `mio_jax.aot` analysis report (what `mio-aot` prints)."""

from __future__ import annotations

from mio_jax.hardware.tpu_specs import GIB


def _secs(s) -> str:
  if s is None:
    return "n/a"
  return f"{s:.3f} s" if s >= 0.1 else f"{s * 1e3:.2f} ms"


def format_report(r: dict) -> str:
  m, p = r["memory"], r["perf"]
  mesh = " ".join(f"{k}={v}" for k, v in r["mesh"].items())
  lines = [
    f"{r['model']} ({r['params'] / 1e6:,.0f}M params) on {r['topology']} x{r['num_slices']} "
    f"= {r['chips']} {r['device_kind']} chips, {r['hosts']} hosts",
    f"  mesh {mesh}; remat {r['remat_policy']}; attention {p['attention']}; seq {r['seq_len']} "
    f"x global batch {r['global_batch']} ({r['micro_batches']} micro-batches, loss_chunk "
    f"{r['loss_chunk']})",
    f"  memory/chip: arguments {m['argument_gib']:.2f} GiB, outputs {m['output_gib']:.2f} "
    f"(aliased {m['alias_gib']:.2f}), temporaries {m['temp_gib']:.2f}, code {m['code_gib']:.2f}"
    f" -> total {m['total_gib']:.2f} of {m['hbm_gib']:.2f} GiB HBM",
    f"  FLOPs/step: model {p['model_flops_per_step']:.3e} ({p['flops_per_token'] / 1e9:.2f} "
    f"GFLOP/token); per chip model {p['model_flops_per_chip']:.3e}, with remat "
    f"{p['hardware_flops_per_chip']:.3e}; XLA raw (loop bodies once) "
    f"{r['xla_cost_raw'].get('flops', float('nan')):.3e}",
  ]
  if "xla_flops_per_chip" in p:
    lines.append(
      f"  XLA extrapolated/chip: {p['xla_flops_per_chip']:.3e} FLOPs "
      f"({p['xla_vs_analytic_flops']:.2f}x analytic), {p['xla_bytes_per_chip'] / GIB:.1f} GiB "
      f"HBM traffic, cost-model time {_secs(p['xla_optimal_s'])}"
    )
  if "splash_kernel" in p:
    k = p["splash_kernel"]
    lines.append(
      f"  splash kernels (analytic, invisible to XLA; included above): {k['flops']:.3e} FLOPs, "
      f"{k['bytes'] / GIB:.1f} GiB HBM, T padded to {k['padded_len']}, blocks {k['block']}, "
      f"forward run {k['forward_runs']}x"
    )
  if r["fits"]:
    lines.append(
      f"  roofline: compute {_secs(p['compute_s'])}"
      + (f", HBM {_secs(p['hbm_s'])}" if "hbm_s" in p else "")
      + f", FSDP ICI {_secs(p['ici_fsdp_s'])}, tensor ICI {_secs(p['ici_tensor_s'])}, "
      f"DCN {_secs(p['dcn_s'])}"
      f" -> step ~{_secs(p['step_s'])}, {p['tokens_per_s']:,.0f} tokens/s, predicted MFU "
      f"{p['mfu']:.1%} (remat ceiling {p['mfu_ceiling_remat']:.1%}; {p['estimate']})"
    )
  lines.append(f"  verdict: {r['verdict']}  [compiled in {r['compile_s']:.0f} s]")
  for tip in r.get("suggestions", []):
    lines.append(f"  try: {tip}")
  return "\n".join(lines)
