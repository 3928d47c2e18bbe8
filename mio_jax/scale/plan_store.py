"""Stored plans (mio_jax/scale/plan.py): one JSON file per config + topology + versions under
`plan_dir(config)`, local or gs://. A search with another grid adds its candidates to the file
(`merge`); the chosen plan is the best over every candidate ever compiled for that key."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os

import jax

import mio_jax
from mio_jax.config import get_base_config, model_overrides
from mio_jax.hardware.tpu_specs import Topology
from mio_jax.io import paths
from mio_jax.scale import roofline


def fixed_tunables(config) -> dict:
  """The tunables the user set: those whose value differs from `get_base_config()`. Setting a
  tunable to its default value is indistinguishable from not setting it (the plan decides);
  any differing mesh axis fixes the whole (data, fsdp, tensor) split."""
  base, fixed = get_base_config(), {}
  if config.model_overrides.get("remat_policy") is not None:
    fixed["remat_policy"] = config.model_overrides.remat_policy
  axes = ("data", "fsdp", "tensor")
  if any(config.mesh[a] != base.mesh[a] for a in axes):
    fixed["mesh"] = tuple(int(config.mesh[a]) for a in axes)
  for key in ("micro_batches", "loss_chunk"):
    if config[key] != base[key]:
      fixed[key] = int(config[key])
  return fixed


def versions() -> dict:
  out = {"jax": jax.__version__, "mio_jax": mio_jax.__version__}
  try:
    out["libtpu"] = importlib.metadata.version("libtpu")
  except importlib.metadata.PackageNotFoundError:
    out["libtpu"] = None
  return out


def plan_key(config, topo: Topology) -> dict:
  """What a stored plan depends on: the step's shapes, the fixed tunables, target, versions."""
  overrides = {k: v for k, v in model_overrides(config).items() if k != "remat_policy"}
  step = {
    "model": config.model,
    "model_overrides": overrides,
    "seq_len": config.seq_len,
    "global_batch": config.global_batch,
    "dcn": config.mesh.dcn,
    "z_loss": config.z_loss,
    "fixed": fixed_tunables(config),
  }
  return {
    "config": step,
    "topology": topo.topology_name,
    "num_slices": topo.num_slices,
    "chips": topo.num_chips,
    "versions": versions(),
  }


def plan_dir(config) -> str:
  """`config.plan_dir`, else $MIO_JAX_PLAN_DIR, else ~/.cache/mio_jax/plans."""
  return (
    config.get("plan_dir")
    or os.environ.get("MIO_JAX_PLAN_DIR")
    or os.path.join(os.path.expanduser("~"), ".cache", "mio_jax", "plans")
  )


def plan_path(config, topo: Topology) -> str:
  key = json.dumps(plan_key(config, topo), sort_keys=True, default=list)
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  name = f"{config.model}_{topo.topology_name.replace(':', '-')}x{topo.num_slices}_{digest}.json"
  return paths.join(plan_dir(config), name)


def load(config, topo: Topology) -> dict | None:
  path = plan_path(config, topo)
  if not paths.exists(path):
    return None
  stored = json.loads(paths.read_text(path))
  stored["path"] = path
  return stored


def save(config, topo: Topology, result: dict) -> str:
  path = plan_path(config, topo)
  paths.makedirs(plan_dir(config))
  paths.write_text(path, json.dumps(result, indent=1, sort_keys=True, default=str) + "\n")
  return path


def choose_stored(rows: list[dict]) -> dict | None:
  """`plan.choose` over stored rows: the highest predicted MFU with headroom >= the target."""
  ok = [r for r in rows if r["status"] == "ok" and r["headroom"] >= roofline.HEADROOM_TARGET]
  return max(ok, key=lambda r: r["mfu"], default=None)


def merge(stored: dict, new: dict) -> dict:
  """`new`'s rows replace stored rows of the same candidate; the others are kept (same key:
  same shapes, topology and versions, so their predictions still hold)."""
  rows = {r["label"]: r for r in stored["rows"]}
  rows.update({r["label"]: r for r in new["rows"]})
  searches = stored.get("searches") or [_search_entry(stored)]
  return {
    **new,
    "rows": list(rows.values()),
    "chosen": choose_stored(list(rows.values())),
    "searches": searches + [_search_entry(new)],
  }


def _search_entry(result: dict) -> dict:
  return {
    "created": result["created"],
    "grid": result["grid"],
    "candidates": len(result["rows"]),
    "search_s": result["search_s"],
  }
