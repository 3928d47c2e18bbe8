"""`benchmarks.run` end to end on its smoke suite: subprocesses, JSON results, markdown summary."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_suite_writes_results_and_summary(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)  # one device is enough; 8 virtual devices only slow compiles down
  proc = subprocess.run(
    [sys.executable, "-m", "benchmarks.run", "--suite=smoke", f"--out_dir={tmp_path}"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.loads((tmp_path / "compile_time.json").read_text())
  assert not report["errors"]
  result = report["results"]["ours"]
  assert result["scan_2_layers_s"] > 0 and result["ratio"] > 0
  summary = (tmp_path / "summary.md").read_text()
  assert "| compile s, scan 4 layers (vs 2) |" in summary
  assert "load average" in summary and "jax " in summary


def test_unknown_benchmark_name_is_an_error(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "benchmarks.run",
      "--suite=smoke",
      "--only=nope",
      f"--out_dir={tmp_path}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode != 0 and "unknown benchmarks" in proc.stderr


def test_train_rows_compare_default_threads_and_one_core():
  """The target's row is each side at its default threads; the pinned runs get their own row."""
  from benchmarks.rows import train_rows

  def run(tokens, **extra):
    return {"shape": "S1", "tokens_per_s": tokens, "step_cpu_s": 1.0, "peak_rss_mb": 100, **extra}

  rows = train_rows(
    {
      "ours": run(4800.0),
      "torch": run(4000.0, threads=2),
      "ours_t1": run(2300.0, one_core=True),
      "torch_t1": run(2000.0, threads=1, one_core=True),
    }
  )
  assert rows[0] == (
    "train S1 tokens/s, default threads (ours all thr, torch 2 thr)",
    4800.0,
    4000.0,
    1.2,
    "≥ 1.0",
  )
  assert rows[1] == ("train S1 tokens/s, both on 1 core", 2300.0, 2000.0, 1.15, "")
  assert [r[0] for r in rows[2:]] == [
    "train S1 CPU s/step, default threads (lower is better)",
    "train S1 peak RSS MB, default threads (lower is better)",
  ]
