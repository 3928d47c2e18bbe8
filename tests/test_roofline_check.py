"""`benchmarks.roofline_check`: the CPU roofline vs a measured step (structure, not timings: the
0.67-1.5x band is the benchmark's report, not a unit-test assertion)."""

import json
import math
import os
import subprocess
import sys

from benchmarks import roofline_check as rc
from mio_jax.hardware import cpu_peak
from mio_jax.hardware.tpu_specs import Topology, cpu_chip
from mio_jax.model.architecture import ModelConfig
from mio_jax.scale import roofline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _finite_positive(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_tiny_shape_end_to_end_writes_the_json(tmp_path):
  out = tmp_path / "roofline_check.json"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)  # one device: the benchmark's setting
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "benchmarks.roofline_check",
      "--shapes=tiny",
      "--steps=1",
      f"--out={out}",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| tiny |" in proc.stdout
  report = json.loads(out.read_text())
  host = report["host"]
  assert host["cpu_model"] and host["threads"] >= 1 and host["jax"]
  assert _finite_positive(host["isa_peak_f32_flops"]) and host["isa"]
  assert report["date"] and report["band"] == [0.67, 1.5]
  r = report["shapes"]["tiny"]
  hw = r["hardware"]
  for key in (
    "matmul_2048_f32_flops",
    "matmul_shape_f32_flops",
    "kernel_efficiency",
    "stream_bytes_per_s",
    "first_touch_bytes_per_s",
  ):
    assert _finite_positive(hw[key]), key
  assert len(hw["load_avg"]) == 3
  assert _finite_positive(r["predicted_s"]) and _finite_positive(r["measured_s"])
  assert _finite_positive(r["ratio"]) and isinstance(r["in_band"], bool)
  p = r["predicted"]
  for key in ("compute_s", "hbm_s", "first_touch_s", "op_overhead_s"):
    assert p[key] >= 0, key
  assert _finite_positive(r["xla_cost"]["flops"]) and r["xla_cost"]["ops"] > 10


def test_isa_peak_per_cycle_from_flags():
  intel = {"Vendor ID": "GenuineIntel", "Flags": "avx2 fma avx512f amx_bf16 amx_tile"}
  assert cpu_peak.fma_flops_per_cycle(intel)[:2] == (64, 2048)
  zen4 = {"Vendor ID": "AuthenticAMD", "CPU family": "25", "Flags": "avx2 fma avx512f avx512_bf16"}
  assert cpu_peak.fma_flops_per_cycle(zen4)[:2] == (32, 64)
  zen5 = {"Vendor ID": "AuthenticAMD", "CPU family": "26", "Flags": "avx2 fma avx512f"}
  assert cpu_peak.fma_flops_per_cycle(zen5)[:2] == (64, 64)
  assert cpu_peak.fma_flops_per_cycle({"Flags": "avx2 fma"})[:2] == (32, 32)


def test_count_ops_skips_fusion_bodies_and_free_instructions():
  hlo = """HloModule m

%fused_computation (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %e = f32[4]{0} exponential(%p)
}

ENTRY %main (a: f32[4], b: f32[4,4]) -> (f32[4], f32[4]) {
  %a = f32[4]{0} parameter(0)
  %b = f32[4,4]{1,0} parameter(1)
  %f = f32[4]{0} fusion(%a), kind=kLoop, calls=%fused_computation
  %d = f32[4]{0} dot(%b, %f), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %c = f32[4]{0} copy(%d)
  ROOT %t = (f32[4]{0}, f32[4]{0}) tuple(%d, %c)
}
"""
  assert rc.count_ops(hlo) == 3  # fusion, dot, copy


def test_cpu_terms_add_to_the_step_and_default_to_none():
  cfg = ModelConfig(vocab_size=1024, d_model=64, n_layers=2, n_heads=2, n_kv_heads=2, ffn_dim=128)
  topo = Topology("cpu-1", cpu_chip("cpu", 1e11, 1e10), (1,))
  mesh = {"dcn": 1, "data": 1, "fsdp": 1, "tensor": 1}
  cost = {"flops": 1e9, "bytes accessed": 1e9, "ops": 1000.0, "fresh bytes": 1e8}
  base = roofline.roofline(cfg, topo, 128, 4, mesh, 1, cost)
  assert base["op_overhead_s"] == 0 and base["first_touch_s"] == 0
  full = roofline.roofline(
    cfg, topo, 128, 4, mesh, 1, cost, kernel_efficiency=0.5, op_s=1e-6, first_touch_bytes_per_s=1e9
  )
  assert math.isclose(full["compute_s"], 2 * base["compute_s"])
  assert math.isclose(full["op_overhead_s"], 1e-3) and math.isclose(full["first_touch_s"], 0.1)
  assert math.isclose(full["step_s"], 2 * base["compute_s"] + base["hbm_s"] + 1e-3 + 0.1)


def test_h100_analytic_plan_from_a_tpu_proxy_report():
  """benchmarks.gpu_roofline prices a stored TPU AOT report with the H100's numbers."""
  from benchmarks import gpu_roofline
  from mio_jax.hardware.tpu_specs import parse_topology

  topo = parse_topology("h100-8")
  assert topo.num_chips == 8 and topo.num_hosts == 1 and topo.chip.peak_bf16_flops == 989e12
  path = os.path.join(ROOT, "benchmarks", "results", "aot_1b_v5p-16_none.json")
  with open(path) as f:
    row = gpu_roofline.evaluate(json.load(f), topo)
  assert row["estimate"].startswith("analytic")
  assert 0 < row["mfu"] < 1 and 0 < row["headroom"] < 1 and _finite_positive(row["step_s"])
