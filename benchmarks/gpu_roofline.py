"""Analytic plan for GPUs: the roofline (mio_jax/scale/roofline.py) with a GPU's numbers from
mio_jax/hardware/tpu_specs.py, fed by a TPU AOT report of the same step as a proxy.

    python -m benchmarks.gpu_roofline --topology=h100-8 \
        --out=benchmarks/results/topology_h100-8_1b.json \
        benchmarks/results/aot_1b_v5p-16_none.json benchmarks/results/aot_1b_v5p-16_full.json

XLA's GPU compiler cannot run ahead of time without a GPU, so nothing here is compiled for the
GPU. Each input is `python -m mio_jax.aot --json_out` for the same model, batch, mesh and remat
policy on a TPU slice with as many chips (e.g. v5p-16 = 8 chips): its per-chip FLOPs, HBM bytes
(XLA's, extrapolated from the 1-/2-layer probes, plus the splash kernel's analytic cost, standing
in for cuDNN flash attention) and memory are taken as the GPU's, and the time comes from the
GPU's peak, HBM bandwidth and NVLink. Labelled "analytic" wherever it is reported.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

FLAGS = flags.FLAGS


def evaluate(report: dict, topo) -> dict:
  """One proxy report -> the GPU's predicted step, MFU and memory headroom."""
  from mio_jax.model.architecture import ModelConfig
  from mio_jax.scale import roofline

  cfg = ModelConfig(**report["model_config"])
  cost = dict(report["xla_cost_extrapolated"] or {})
  cost.pop("optimal_seconds", None)  # the TPU compiler's own cost model: not the GPU's
  perf = roofline.roofline(
    cfg,
    topo,
    report["seq_len"],
    report["global_batch"],
    report["mesh"],
    report["micro_batches"],
    cost or None,
  )
  m = report["memory"]
  total = m["total_bytes"]
  return {
    "estimate": "analytic (GPU numbers; FLOPs/bytes/memory of the "
    f"{report['topology']} AOT compile as proxy)",
    "proxy": report["topology"],
    "remat_policy": report["remat_policy"],
    "mesh": report["mesh"],
    "micro_batches": report["micro_batches"],
    "loss_chunk": report["loss_chunk"],
    "seq_len": report["seq_len"],
    "global_batch": report["global_batch"],
    "step_s": perf["step_s"],
    "mfu": perf["mfu"],
    "tokens_per_s": perf["tokens_per_s"],
    "compute_s": perf["compute_s"],
    "hbm_s": perf.get("hbm_s"),
    "ici_fsdp_s": perf["ici_fsdp_s"],
    "total_gib": total / 2**30,
    "hbm_gib": topo.chip.hbm_bytes / 2**30,
    "headroom": 1.0 - total / topo.chip.hbm_bytes,
  }


def main(argv):
  from mio_jax.hardware.tpu_specs import parse_topology
  from mio_jax.scale import roofline

  topo = parse_topology(FLAGS.topology)
  rows = []
  for path in argv[1:]:
    with open(path) as f:
      rows.append(evaluate(json.load(f), topo))
  ok = [r for r in rows if r["headroom"] >= roofline.HEADROOM_TARGET]
  chosen = max(ok, key=lambda r: r["mfu"], default=None)
  print(f"{topo.name} ({topo.num_chips} x {topo.chip.device_kind}), analytic:")
  print("| remat | mesh (dcn·data·fsdp·tensor) | step | MFU | memory/GPU | headroom |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    mesh = "·".join(str(r["mesh"].get(a, 1)) for a in ("dcn", "data", "fsdp", "tensor"))
    print(
      f"| {r['remat_policy']} | {mesh} | {r['step_s']:.3f} s | {r['mfu']:.1%} | "
      f"{r['total_gib']:.1f} / {r['hbm_gib']:.1f} GiB | {r['headroom']:.0%} |"
    )
  print("chosen:", chosen and f"{chosen['remat_policy']} ({chosen['mfu']:.1%} MFU)")
  if FLAGS.out:
    os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
    with open(FLAGS.out, "w") as f:
      json.dump(
        {"topology": topo.name, "chip": topo.chip.generation, "rows": rows, "chosen": chosen},
        f,
        indent=1,
        sort_keys=True,
      )
      f.write("\n")


if __name__ == "__main__":
  flags.DEFINE_string(
    "topology", "h100-8", "GPU 'topology' as mio_jax/hardware/tpu_specs.py names it."
  )
  flags.DEFINE_string("out", None, "Write the rows and the chosen plan as JSON here.")
  app.run(main)
