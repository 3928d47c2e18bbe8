"""`python -m mio_jax.aot` / `mio-aot`: compile the train step for a Cloud TPU topology on this
host and print whether it fits and how fast it would run (mio_jax/scale/aot.py), or search and
store a plan (`--search`, mio_jax/scale/plan.py). Exits 1 when it does not fit."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys

# The AOT compile needs no device: keep JAX itself on the CPU (before anything imports jax).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags  # noqa: E402

from mio_jax.cli import entry  # noqa: E402
from mio_jax.hardware.tpu_specs import parse_topology  # noqa: E402
from mio_jax.model.architecture import ModelConfig  # noqa: E402
from mio_jax.scale import plan, plan_apply  # noqa: E402
from mio_jax.scale.aot import analyze, topology_devices, with_overrides  # noqa: E402
from mio_jax.scale.aot_report import format_report  # noqa: E402


def _model_overrides(items) -> dict:
  """['remat_policy=full', 'n_layers=4'] → typed dict (types from ModelConfig's fields)."""
  types = {f.name: f.type for f in dataclasses.fields(ModelConfig)}
  out = {}
  for item in items or ():
    key, sep, value = item.partition("=")
    if not sep or key not in types:
      raise ValueError(
        f"--model_override wants KEY=VALUE with KEY in {sorted(types)}, got {item!r}"
      )
    kind = str(types[key])
    if "bool" in kind:
      out[key] = value.lower() in ("1", "true", "yes")
    elif "int" in kind:
      out[key] = int(value)
    elif "float" in kind:
      out[key] = float(value)
    else:
      out[key] = value
  return out


def cli() -> None:
  entry.define_config_file("config", "configs/stage1.py:mio-7b", "Training config[:variant].")
  flags.DEFINE_string(
    "topology", None, "e.g. v5p-128, v5e-256, v6e-64, v4-32 or v5p:4x4x4.", required=True
  )
  flags.DEFINE_integer("num_slices", 1, "Slices joined over DCN (sets mesh.dcn when it is 1).")
  flags.DEFINE_multi_string(
    "model_override",
    [],
    "KEY=VALUE on the ModelConfig, e.g. remat_policy=dots_no_batch (repeatable).",
  )
  flags.DEFINE_string("json_out", None, "Also write the report as JSON here.")
  flags.DEFINE_bool("probe", True, "Compile 1- and 2-layer probes to extrapolate XLA's cost.")
  flags.DEFINE_bool(
    "search",
    False,
    "Search remat x mesh x micro-batches x loss_chunk for the "
    "highest predicted MFU with >= 20 % headroom; store it (mio_jax/scale/plan.py).",
  )
  flags.DEFINE_multi_string(
    "search_grid",
    [],
    "Narrow the search: remat=none,full | "
    "mesh=fsdp,tensor2,tensor4,data2 | micro=1,2 | chunk=0,700.",
  )
  flags.DEFINE_bool("search_fresh", False, "Search again even when a plan is stored.")
  flags.DEFINE_bool(
    "search_all",
    False,
    "Compile every candidate that may fit (no pruning by "
    "bound or dominance; implies --search_fresh).",
  )
  flags.DEFINE_string(
    "plan_dir",
    None,
    "Plan store (default: config.plan_dir, $MIO_JAX_PLAN_DIR, ~/.cache/mio_jax/plans).",
  )
  FLAGS = flags.FLAGS

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
      topo = parse_topology(FLAGS.topology, FLAGS.num_slices)
      if not topo.chip.chip_config:  # a GPU entry of tpu_specs.CHIPS: priced, never compiled here
        raise ValueError(
          f"--topology={FLAGS.topology}: XLA cannot compile for GPUs from a CPU host; price the "
          "step analytically with python -m benchmarks.gpu_roofline (docs/scaling.md)"
        )
      config = with_overrides(FLAGS.config, topo, _model_overrides(FLAGS.model_override))
      if FLAGS.plan_dir:
        config.plan_dir = FLAGS.plan_dir
      if FLAGS.search:
        sys.exit(
          plan.cli_search(
            config,
            topo,
            topology_devices(topo),
            grid=plan.parse_grid(FLAGS.search_grid),
            probe=FLAGS.probe,
            fresh=FLAGS.search_fresh,
            exhaustive=FLAGS.search_all,
          )
        )
      # plan=auto: the stored plan, if any (aot never searches unasked)
      config = plan_apply.resolve(config, topology_devices(topo), topo=topo, search_missing=False)
      report = analyze(config, topo, FLAGS.probe)
    except (ValueError, RuntimeError) as e:  # bad topology/mesh/config, missing libtpu
      entry.fail("mio_jax.aot", str(e))
    print(format_report(report))
    if FLAGS.json_out:
      with open(FLAGS.json_out, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True, default=str)
    if not report["fits"]:
      print(f"error: {report['verdict']}", file=sys.stderr)
      sys.exit(1)

  # Accept the dashed spellings too (--num-slices, --json-out, --model-override).
  argv = [re.sub(r"^--(num|json|model)-(slices|out|override)", r"--\1_\2", a) for a in sys.argv]

  entry.run(main, argv=argv)  # --help exits 0, not 1 (= does not fit)
