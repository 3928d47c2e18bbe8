"""Plan search (`mio_jax.aot --search`) and `--config.plan=auto` (mio_jax/scale/plan.py,
mio_jax/scale/plan_apply.py). Compiles stay few: narrow grids, short sequences, no probes in the
CLI.
Needs libtpu for the v5e-4 tests, as tests/test_aot.py does.
"""

import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import pytest

from configs import stage1
from mio_jax.hardware.tpu_specs import parse_topology
from mio_jax.scale import aot, plan, plan_apply, plan_store, roofline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(seq_len=64, global_batch=8)  # quick compiles


def demo_config(plan_dir, **changes):
  config = stage1.get_config("demo")
  with config.unlocked():
    for key, value in {**SMALL, "plan_dir": str(plan_dir), **changes}.items():
      config[key] = value
  return config


def search_cmd(plan_dir, *grid: str) -> list:
  cmd = [
    sys.executable,
    "-m",
    "mio_jax.aot",
    "--config=configs/stage1.py:demo",
    "--topology=v5e-4",
    "--search",
    *[f"--search_grid={g}" for g in grid],
    "--noprobe",
    f"--plan_dir={plan_dir}",
  ]
  return cmd + [f"--config.{k}={v}" for k, v in SMALL.items()]


def run_search(plan_dir, *grid: str):
  return subprocess.run(
    search_cmd(plan_dir, *grid), cwd=ROOT, capture_output=True, text=True, timeout=600
  )


@pytest.fixture(scope="module")
def v5e_search(tmp_path_factory):
  """One CLI search on v5e-4: none vs full remat, tensor=2, 2 micro-batches (non-defaults, so that
  applying the plan shows), then the same command again."""
  plan_dir = tmp_path_factory.mktemp("plans")
  runs = [run_search(plan_dir, *V5E_GRID) for _ in range(2)]
  files = list(plan_dir.glob("*.json"))
  return plan_dir, runs, files


V5E_GRID = ("remat=none,full", "mesh=tensor2", "micro=2")


def test_search_cli_chooses_best_with_headroom_and_stores_it(v5e_search):
  plan_dir, (first, second), files = v5e_search
  assert first.returncode == 0, first.stderr[-2000:]
  assert len(files) == 1 and "plan stored in" in first.stdout
  result = json.loads(files[0].read_text())
  chosen, rows = result["chosen"], result["rows"]
  assert chosen["headroom"] >= roofline.HEADROOM_TARGET
  # Highest predicted MFU among the rows with headroom; rows never compiled could not beat it.
  assert all(chosen["mfu"] >= r["mfu"] for r in rows if r["status"] == "ok")
  assert all(chosen["mfu"] >= r["bound_mfu"] for r in rows if r["status"] == "bound")
  assert chosen["cand"] == {
    "remat_policy": "none",
    "mesh": [1, -1, 2],
    "micro_batches": 2,
    "loss_chunk": 0,
  }
  assert "| none d1·f-1·t2 mb2 lc0 | 1·1·2·2 | ok |" in first.stdout
  assert "chosen: none d1·f-1·t2 mb2 lc0" in first.stdout
  assert result["key"]["versions"]["jax"] == jax.__version__
  # The second call reads the stored plan: nothing compiles.
  assert second.returncode == 0, second.stderr[-2000:]
  assert "plan read from" in second.stdout and "compiling" not in second.stdout
  assert "chosen: none d1·f-1·t2 mb2 lc0" in second.stdout


def test_a_search_with_another_grid_adds_to_the_stored_plan(v5e_search, tmp_path):
  """Only the candidates the stored plan lacks compile; the stored rows are kept and the chosen
  plan is the best over both searches. Asking again for either grid reads the file."""
  plan_dir = tmp_path / "plans"
  shutil.copytree(v5e_search[0], plan_dir)
  before = json.loads(v5e_search[2][0].read_text())
  more = run_search(plan_dir, "remat=none", "mesh=fsdp", "micro=2")
  assert more.returncode == 0, more.stderr[-2000:]
  assert more.stdout.count("compiling") == 1 and "compiling none d1·f-1·t1 mb2 lc0" in more.stdout
  assert "1 candidates searched" in more.stdout
  assert f"{len(before['rows'])} kept from earlier searches" in more.stdout
  (path,) = plan_dir.glob("*.json")
  merged = json.loads(path.read_text())
  labels = [r["label"] for r in merged["rows"]]
  assert labels == [r["label"] for r in before["rows"]] + ["none d1·f-1·t1 mb2 lc0"]
  assert merged["chosen"] == plan_store.choose_stored(merged["rows"])
  assert [s["grid"]["mesh"] for s in merged["searches"]] == [["tensor2"], ["fsdp"]]
  for grid in (V5E_GRID, ("remat=none", "mesh=fsdp", "micro=2")):
    again = run_search(plan_dir, *grid)
    assert "plan read from" in again.stdout and "compiling" not in again.stdout


def test_plan_auto_on_v5e_applies_the_stored_plan(v5e_search, caplog):
  from mio_jax.train import loop

  plan_dir = v5e_search[0]
  devices = aot.topology_devices(parse_topology("v5e-4"))
  caplog.set_level(logging.INFO)
  config = plan_apply.resolve(demo_config(plan_dir, plan="auto"), devices)  # stored: no search
  s = loop.setup(config, devices)
  assert dict(s.mesh.shape) == {"dcn": 1, "data": 1, "fsdp": 2, "tensor": 2}
  assert s.config.micro_batches == 2 and s.config.plan == ""
  assert "plan: running none d1·f-1·t2 mb2 lc0" in caplog.text


def test_explicit_settings_win_over_the_plan(v5e_search):
  stored = json.loads(v5e_search[2][0].read_text())
  config = demo_config(v5e_search[0], plan="auto", micro_batches=4)
  with config.unlocked():
    config.model_overrides.remat_policy = "full"
  assert plan.fixed_tunables(config) == {"remat_policy": "full", "micro_batches": 4}
  out = plan_apply.apply(config, stored["chosen"])
  assert out.model_overrides.remat_policy == "full" and out.micro_batches == 4
  assert (out.mesh.data, out.mesh.fsdp, out.mesh.tensor) == (1, -1, 2)  # from the plan
  # An explicit setting is part of the key: the plan searched without it is not reused.
  topo = parse_topology("v5e-4")
  searched = demo_config(v5e_search[0])
  assert plan_store.plan_path(config, topo) != plan_store.plan_path(searched, topo)


def test_memory_bound_prunes_before_compiling():
  # mio-7b on 4 v5e chips: f32 state alone is 17 GiB/chip of 15.75: nothing may compile.
  config = stage1.get_config("mio-7b")
  result = plan.search(config, parse_topology("v5e-4"), [None] * 4, grid={"remat": ("full",)})
  assert result["chosen"] is None
  assert {r["status"] for r in result["rows"]} <= {"pruned", "invalid"}
  assert any(r["status"] == "pruned" for r in result["rows"])


def test_choose_takes_highest_mfu_with_headroom():
  def row(mfu, headroom):
    return plan.Row(
      plan.Candidate("none", (1, -1, 1), 1, 0), status="ok", mfu=mfu, headroom=headroom
    )

  rows = [row(0.72, 0.19), row(0.66, 0.35), row(0.58, 0.88)]
  assert plan.choose(rows).mfu == 0.66


def test_plan_auto_on_cpu_searches_once_then_reuses(tmp_path, monkeypatch, caplog):
  from mio_jax.train import loop

  monkeypatch.setattr(
    plan, "GRID", {"remat": ("full",), "mesh": ("tensor2",), "micro": (1,), "chunk": (0,)}
  )
  caplog.set_level(logging.INFO)
  config = demo_config(tmp_path, plan="auto")
  # no plan stored: searched on the 8 local CPU devices
  s = loop.setup(plan_apply.resolve(config, jax.devices()), jax.devices())
  assert dict(s.mesh.shape) == {"dcn": 1, "data": 1, "fsdp": 4, "tensor": 2}
  assert s.model_cfg.remat_policy == "full"
  assert len(list(tmp_path.glob("tiny_cpu-8x1_*.json"))) == 1
  assert "plan search: compiling full d1·f-1·t2 mb1 lc0" in caplog.text

  def no_search(*args, **kwargs):
    raise AssertionError("searched although a plan is stored")

  monkeypatch.setattr(plan, "search", no_search)
  caplog.clear()
  s = loop.setup(plan_apply.resolve(config, jax.devices()), jax.devices())
  assert dict(s.mesh.shape)["tensor"] == 2 and s.model_cfg.remat_policy == "full"
  assert "plan: running full d1·f-1·t2 mb1 lc0" in caplog.text


def test_roofline_charges_tensor_and_data_parallel_traffic():
  from mio_jax.model.sizes import get_model

  cfg, _ = get_model("mio-7b", remat_policy="none", attention_impl="xla")
  topo = parse_topology("v5p-128")

  def perf(data, fsdp, tensor):
    mesh = {"dcn": 1, "data": data, "fsdp": fsdp, "tensor": tensor}
    return roofline.roofline(cfg, topo, 2800, 256, mesh, 1, None)

  base, t2, d2 = perf(1, 64, 1), perf(1, 32, 2), perf(2, 32, 1)
  # Tensor-parallel all-reduces are on the critical path; the data all-reduce overlaps.
  assert base["ici_tensor_s"] == 0 < t2["ici_tensor_s"] and t2["mfu"] < base["mfu"]
  # data=2 x fsdp=32 gathers over 32 chips, then all-reduces f32 grads over 2: same bytes here.
  assert roofline.data_comm_bytes(cfg, {"data": 2, "fsdp": 32}) > 0 == d2["ici_tensor_s"]
  assert d2["ici_fsdp_s"] == pytest.approx(base["ici_fsdp_s"])


def test_plan_auto_without_a_search_target_runs_the_config(tmp_path, caplog):
  # GPUs have no plan search yet: the mio-7b configs (plan=auto) must still train there.
  class Gpu:
    platform, device_kind = "gpu", "NVIDIA H100 80GB HBM3"

  config = demo_config(tmp_path, plan="auto", micro_batches=2)
  out = plan_apply.resolve(config, [Gpu()] * 8)
  assert out.plan == "" and out.micro_batches == 2 and "no plan search for gpu" in caplog.text


def test_the_loop_takes_a_resolved_config_only(tmp_path):
  # Training never compiles plan candidates itself: the command line resolves plan=auto first.
  from mio_jax.train import loop

  with pytest.raises(ValueError, match=r"config.plan='auto' reached the training loop unresolved"):
    loop.setup(demo_config(tmp_path, plan="auto"), jax.devices())
