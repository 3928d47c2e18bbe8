"""Run a benchmark suite, each benchmark in its own process: `python -m benchmarks.run --suite=cpu`.

    python -m benchmarks.run --suite=cpu [--only=train_S0,decode] [--out_dir=benchmarks/results]
    python -m benchmarks.run --suite=smoke --out_dir=/tmp/bench   # seconds; used by the tests

Every benchmark prints one JSON line; this collects them into `<out_dir>/<name>.json` and writes
`<out_dir>/summary.md`: one row per figure with ours, its baseline (measured in the same run) and
the ratio, plus the date, the machine (cores, load average before/after) and library versions.
Separate processes keep jax's and torch's thread pools from competing and give each its own peak
memory.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable

from benchmarks.rows import (
  checkpoint_rows,
  compile_rows,
  data_rows,
  decode_rows,
  tokenize_rows,
  train_rows,
)
from mio_jax.cli import entry
from mio_jax.io import paths

PY = [sys.executable, "-m"]
# XLA:CPU on one thread (as torch --threads=1): on a loaded 2-core host often the faster side.
# The train runs also pin both sides to one core (--one_core): these flags alone still let
# XLA:CPU run independent ops on a second thread.
SINGLE_THREAD_XLA = {
  "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
}


@dataclasses.dataclass(frozen=True)
class Bench:
  name: str
  runs: dict  # key -> argv after `python -m`, or (extra env, argv)
  rows: Callable[[dict], list]  # results by key -> [(figure, ours, baseline, ratio, target)]


def train(shape: str, steps: int) -> Bench:
  """Each side as a user runs it: ours through its command line (which turns on malloc huge
  pages, mio_jax/hardware/host_memory.py), torch with its own defaults (threads = cores)."""
  argv = ["benchmarks.train_step", f"--shape={shape}", f"--steps={steps}"]
  torch_argv = ["benchmarks.torch_baseline", f"--shape={shape}", f"--steps={steps}"]
  runs = {
    "ours": argv,
    "torch": torch_argv,
    "ours_t1": (SINGLE_THREAD_XLA, argv + ["--one_core"]),
    "torch_t1": torch_argv + ["--threads=1", "--one_core"],
  }
  return Bench(f"train_{shape}", runs, train_rows)


def one(name, argv, rows) -> Bench:
  return Bench(name, {"ours": argv}, rows)


SUITES = {
  "cpu": [
    train("S0", 5),
    train("S1", 5),
    train("S2", 2),
    one("data", ["benchmarks.data_throughput", "--seconds=5", "--scale=100"], data_rows),
    # --out= : benchmarks.run stores the result itself (results/tokenize_throughput.json).
    one("tokenize_throughput", ["benchmarks.tokenize_throughput", "--out="], tokenize_rows),
    # --writer_core models an accelerator host: the step does not run on the writer's cores.
    Bench(
      "checkpoint",
      {
        "ours": ["benchmarks.checkpoint"],
        "ours_writer_core": ["benchmarks.checkpoint", "--writer_core"],
      },
      checkpoint_rows,
    ),
    one("compile_time", ["benchmarks.compile_time"], compile_rows),
    # Both sides on one thread: torch's default pool collapses on a loaded 2-core host.
    one(
      "decode",
      (SINGLE_THREAD_XLA, ["benchmarks.decode", "--repeats=3", "--torch_threads=1"]),
      decode_rows,
    ),
  ],
  "smoke": [
    one(
      "compile_time",
      [
        "benchmarks.compile_time",
        "--layers=2,4",
        "--d_model=64",
        "--vocab=256",
        "--seq_len=32",
        "--repeats=1",
        "--skip_unrolled",
      ],
      compile_rows,
    ),
  ],
}


def last_json(text: str) -> dict:
  for line in reversed(text.strip().splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  raise ValueError("no JSON line in the output")


def run_bench(bench: Bench, timeout: float) -> dict:
  env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
  results, errors = {}, {}
  for key, argv in bench.runs.items():
    extra, argv = argv if isinstance(argv, tuple) else ({}, argv)
    t = time.perf_counter()
    try:
      proc = subprocess.run(
        PY + argv, capture_output=True, text=True, timeout=timeout, env={**env, **extra}
      )
      if proc.returncode:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}")
      results[key] = {**last_json(proc.stdout), "wall_s": round(time.perf_counter() - t, 1)}
    except Exception as e:  # noqa: BLE001 - one failed benchmark must not lose the others
      errors[key] = f"{type(e).__name__}: {e}"
    print(
      f"[{bench.name}/{key}] {time.perf_counter() - t:.0f}s "
      f"{'FAILED ' + errors[key] if key in errors else 'ok'}",
      file=sys.stderr,
      flush=True,
    )
  rows = []
  if results and not errors:
    rows = bench.rows(results)
  commands = {
    k: " ".join([f"{e}='{x}'" for e, x in v[0].items()] + ["python -m"] + v[1])
    if isinstance(v, tuple)
    else " ".join(["python -m"] + v)
    for k, v in bench.runs.items()
  }
  return {
    "name": bench.name,
    "commands": commands,
    "results": results,
    "errors": errors,
    "rows": rows,
  }


def machine() -> dict:
  cpu = ""
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
  except OSError:
    pass
  versions = {}
  for pkg in ("jax", "jaxlib", "flax", "torch", "transformers", "orbax-checkpoint"):
    try:
      versions[pkg] = importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      versions[pkg] = None
  return {
    "cores": os.cpu_count(),
    "cpu": cpu,
    "python": platform.python_version(),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "versions": versions,
  }


def _fmt(x):
  return (
    "—"
    if x is None
    else (
      f"{x:,.3f}"
      if isinstance(x, float) and abs(x) < 10
      else f"{x:,.0f}"
      if isinstance(x, (int, float))
      else str(x)
    )
  )


def _fmt_ratio(x):
  return "—" if x is None else f"{x:.2f}×"


def summary_md(info: dict, reports: list) -> str:
  v = info["versions"]
  lines = [
    f"Last run {info['date']} · {info['cores']} cores ({info['cpu']}) · load average (1/5/15 min) "
    f"before {info['load_before']}, after {info['load_after']} · jax {v['jax']}, "
    f"flax {v['flax']}, torch {v['torch']}, transformers {v['transformers']}"
    f"{' · XLA_FLAGS=' + info['xla_flags'] if info['xla_flags'] else ''}",
    "",
    "| figure | ours | baseline | ratio | target | run at (load 1 min) |",
    "|---|---|---|---|---|---|",
  ]
  for rep in reports:
    m = rep.get("machine", {})
    when = f"{m.get('finished', m.get('date', '?'))} ({m.get('load_after', ['?'])[0]})"
    # A result a benchmark wrote on its own (run outside this runner) has no table rows.
    for fig, ours, base, ratio, target in rep.get("rows", []):
      lines.append(
        f"| {fig} | {_fmt(ours)} | {_fmt(base)} | {_fmt_ratio(ratio)} | {target} | {when} |"
      )
    for key, err in rep.get("errors", {}).items():
      lines.append(f"| {rep['name']}/{key} | FAILED: {err.splitlines()[0][:120]} | | | | {when} |")
  return "\n".join(lines) + "\n"


def main():
  parser = entry.ArgumentParser(prog="benchmarks.run", description=__doc__.splitlines()[0])
  parser.add_argument("--suite", default="cpu", choices=sorted(SUITES))
  parser.add_argument("--only", default="", help="comma-separated benchmark names (default all)")
  parser.add_argument("--out_dir", default=os.path.join(os.path.dirname(__file__), "results"))
  parser.add_argument("--timeout", type=float, default=600.0, help="seconds per process")
  args = parser.parse_args()
  try:  # an --out_dir that cannot be created (a file in its path, no permission): one line now
    paths.check_writable(args.out_dir)
  except paths.PathError as e:
    parser.error(f"--out_dir: {e}")
  benches = SUITES[args.suite]
  if args.only:
    wanted = set(args.only.split(","))
    unknown = wanted - {b.name for b in benches}
    if unknown:
      parser.error(
        f"unknown benchmarks {sorted(unknown)}; suite {args.suite} has {[b.name for b in benches]}"
      )
    benches = [b for b in benches if b.name in wanted]
  os.makedirs(args.out_dir, exist_ok=True)
  info = {
    **machine(),
    "suite": args.suite,
    "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    "load_before": [round(x, 2) for x in os.getloadavg()],
  }
  reports = []
  for bench in benches:
    rep = run_bench(bench, args.timeout)
    rep["machine"] = {
      **info,
      "load_after": [round(x, 2) for x in os.getloadavg()],
      "finished": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    with open(os.path.join(args.out_dir, f"{bench.name}.json"), "w") as f:
      json.dump(rep, f, indent=1)
    reports.append(rep)
  info["load_after"] = [round(x, 2) for x in os.getloadavg()]
  # The table covers the whole suite: benchmarks not run now keep their last stored result.
  ran = {r["name"]: r for r in reports}
  table = []
  for bench in SUITES[args.suite]:
    path = os.path.join(args.out_dir, f"{bench.name}.json")
    if bench.name in ran:
      table.append(ran[bench.name])
    elif os.path.exists(path):
      with open(path) as f:
        table.append(json.load(f))
  md = summary_md(info, table)
  with open(os.path.join(args.out_dir, "summary.md"), "w") as f:
    f.write(md)
  print(md)
  return 1 if any(r["errors"] for r in reports) else 0


if __name__ == "__main__":
  sys.exit(main())
