"""Plan search: the remat policy, mesh split, micro-batches and `loss_chunk` with the highest
predicted MFU that leaves >= 20 % HBM headroom on a topology, compiled ahead of time.

    python -m mio_jax.aot --config=configs/stage1.py:mio-7b --topology=v5p-128 --search

Candidates are visited best bound first; a candidate is not compiled when
- the analytic memory lower bound (`memory_lower_bound`: f32 state + the activations every
  policy must keep) already leaves less than the headroom target ("pruned"),
- its compute-bound MFU (an upper bound on the probed prediction) cannot beat the best plan
  found so far ("bound"), or
- the same remat policy and mesh already fit with fewer micro-batches or a larger LM-head chunk:
  those knobs only trade step time for memory ("dominated").
Explicit settings are never searched: a tunable whose value differs from `get_base_config()`
(see `fixed_tunables`) stays as given, in the search and when a plan is applied.

The result is stored as JSON under `plan_dir(config)` (mio_jax/scale/plan_store.py), one file per
config + topology + versions; a later search with another grid adds its candidates to that file.
`--config.plan=auto` applies it (`plan_apply.resolve`, called by the training command line before
the loop starts).
"""

from __future__ import annotations

import dataclasses
import logging
import time

from mio_jax.config import model_overrides
from mio_jax.hardware.tpu_specs import GIB, Topology
from mio_jax.model.sizes import get_model
from mio_jax.parallel import sharding as shd
from mio_jax.scale import aot, plan_store, roofline
from mio_jax.scale.plan_store import fixed_tunables, plan_key

# Mesh splits by name: (data, fsdp, tensor); fsdp=-1 fills the devices left.
MESHES = {"fsdp": (1, -1, 1), "tensor2": (1, -1, 2), "tensor4": (1, -1, 4), "data2": (2, -1, 1)}
# Default grid, least memory-saving first within each knob (tests narrow it).
GRID = {
  "remat": ("none", "dots_attn_out", "dots_no_batch", "full"),
  "mesh": tuple(MESHES),
  "micro": (1, 2, 4),
  "chunk": None,
}  # chunk None: see chunk_grid


@dataclasses.dataclass(frozen=True)
class Candidate:
  remat_policy: str
  mesh: tuple  # (data, fsdp, tensor) as configured; fsdp may be -1
  micro_batches: int
  loss_chunk: int

  def label(self) -> str:
    d, f, t = self.mesh
    return f"{self.remat_policy} d{d}·f{f}·t{t} mb{self.micro_batches} lc{self.loss_chunk}"

  def apply(self, config):
    """A copy of the config running this candidate (plan off: it is resolved)."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.plan = ""
      config.model_overrides.remat_policy = self.remat_policy
      config.mesh.data, config.mesh.fsdp, config.mesh.tensor = self.mesh
      config.micro_batches = self.micro_batches
      config.loss_chunk = self.loss_chunk
    return config


def chunk_grid(seq_len: int) -> tuple:
  """0 (the whole sequence) and the largest divisor of seq_len up to 1,024 positions."""
  chunk = max(d for d in range(1, min(seq_len, 1024) + 1) if seq_len % d == 0)
  return (0,) if chunk == seq_len else (0, chunk)


def candidates(config, grid: dict | None = None) -> list[Candidate]:
  grid = {**GRID, **(grid or {})}
  fixed = fixed_tunables(config)
  remats = [fixed["remat_policy"]] if "remat_policy" in fixed else list(grid["remat"])
  meshes = [fixed["mesh"]] if "mesh" in fixed else [MESHES[m] for m in grid["mesh"]]
  micros = [fixed["micro_batches"]] if "micro_batches" in fixed else list(grid["micro"])
  chunks = grid["chunk"] if grid["chunk"] is not None else chunk_grid(config.seq_len)
  chunks = [fixed["loss_chunk"]] if "loss_chunk" in fixed else list(chunks)
  return [
    Candidate(r, tuple(m), mb, lc) for r in remats for m in meshes for mb in micros for lc in chunks
  ]


# Policies that save the MLP gate/up matmul outputs (2 x ffn_dim per token and layer).
_SAVES_MLP = {"none", "dots", "dots_no_batch", "dots_attn_out"}


def memory_lower_bound(
  cfg, mesh: shd.MeshShape, seq_len: int, global_batch: int, micro_batches: int
) -> float:
  """Bytes per chip the step needs at least: f32 params + Adam moments, plus what every layer
  keeps for the backward pass under the policy (the residual stream; the MLP gate/up outputs
  when the policy saves dots). Compiled totals run 2-4x higher (mio-7b: 11.1 vs 3.8 GiB full
  remat, 40.7 vs 18.5 GiB none), so this only rules out what cannot fit."""
  state = 12.0 * cfg.num_params() / (mesh.fsdp * mesh.tensor)
  tokens = global_batch * seq_len / (mesh.data_parallel * micro_batches)
  per_token = cfg.d_model / mesh.tensor
  if cfg.remat_policy in _SAVES_MLP:
    per_token += 2.0 * cfg.ffn_dim / mesh.tensor
  itemsize = 2 if cfg.dtype in ("bfloat16", "float16") else 4
  return state + cfg.n_layers * tokens * per_token * itemsize


@dataclasses.dataclass
class Row:
  cand: Candidate
  status: str = "pending"  # ok | tight | oom | pruned | bound | dominated | invalid
  note: str = ""
  bound_mfu: float = 0.0  # compute-bound MFU: an upper bound on the probed prediction
  lower_bytes: float = 0.0
  mesh: dict | None = None
  step_s: float | None = None
  mfu: float | None = None
  total_gib: float | None = None
  headroom: float | None = None
  compile_s: float = 0.0
  estimate: str = ""

  def to_json(self) -> dict:
    out = dataclasses.asdict(self)
    out["cand"] = dataclasses.asdict(self.cand)
    out["label"] = self.cand.label()
    return out


def _prepare(row: Row, config, topo: Topology, n_devices: int) -> tuple:
  """(candidate config, model config) with bound and lower bound, or None when it cannot run."""
  cfg_c = row.cand.apply(config)
  try:
    model_cfg, _ = get_model(cfg_c.model, **model_overrides(cfg_c))
    shape = shd.resolve_mesh_shape(cfg_c.mesh, n_devices)
    shd.validate(
      shape,
      n_devices,
      global_batch=cfg_c.global_batch,
      micro_batches=cfg_c.micro_batches,
      model_cfg=model_cfg,
    )
    if cfg_c.loss_chunk and cfg_c.seq_len % cfg_c.loss_chunk:
      raise ValueError(f"loss_chunk {cfg_c.loss_chunk} does not divide seq_len")
  except ValueError as e:  # ShardingConfigError is one
    row.status, row.note = "invalid", str(e).replace("cannot shard this run: ", "")
    return None
  row.mesh = dict(zip(("dcn", "data", "fsdp", "tensor"), shape.sizes))
  row.lower_bytes = memory_lower_bound(
    model_cfg, shape, cfg_c.seq_len, cfg_c.global_batch, cfg_c.micro_batches
  )
  perf = _roofline(model_cfg, topo, cfg_c, row.mesh, None)
  row.bound_mfu, row.step_s = perf["mfu"], perf["step_s"]
  return cfg_c, model_cfg


def _roofline(model_cfg, topo: Topology, cfg_c, mesh: dict, xla_cost) -> dict:
  if topo.chip.generation == "cpu":  # attention 'auto' is the XLA path there, not splash
    model_cfg = dataclasses.replace(model_cfg, attention_impl="xla")
  return roofline.roofline(
    model_cfg, topo, cfg_c.seq_len, cfg_c.global_batch, mesh, cfg_c.micro_batches, xla_cost
  )


def _dominated(row: Row, fitted: list[Row]) -> bool:
  """Another fitting row with this policy and mesh and fewer memory savers (see top)."""

  def chunk_saves(c):  # 0 = no chunking = the least saving
    return 1 / c if c else 0.0

  return any(
    f.cand.remat_policy == row.cand.remat_policy
    and f.cand.mesh == row.cand.mesh
    and f.cand.micro_batches <= row.cand.micro_batches
    and chunk_saves(f.cand.loss_chunk) <= chunk_saves(row.cand.loss_chunk)
    for f in fitted
  )


def _evaluate(row: Row, cfg_c, model_cfg, topo: Topology, devices, probe: bool) -> None:
  """Compile the step (memory), then the cost probes of a row with headroom (time)."""
  try:
    _, compiled, row.compile_s = aot.compile_step(cfg_c, devices)
  except aot.DoesNotFit as e:
    row.status, row.note = "oom", str(e)[:200]
    return
  memory = roofline.memory_report(aot.memory_stats(compiled), topo.chip.hbm_bytes)
  row.total_gib, row.headroom = memory["total_gib"], memory["headroom"]
  if row.headroom < roofline.HEADROOM_TARGET:
    row.status = "tight"
    return
  xla = None
  if probe:
    t0 = time.perf_counter()
    xla = aot.probe_cost(cfg_c, devices, model_cfg.n_layers)
    row.compile_s += time.perf_counter() - t0
  perf = _roofline(model_cfg, topo, cfg_c, row.mesh, xla)
  row.status, row.step_s, row.mfu = "ok", perf["step_s"], perf["mfu"]
  row.estimate = perf["estimate"]


def choose(rows: list[Row]) -> Row | None:
  """The highest predicted MFU among rows with headroom >= the target."""
  ok = [r for r in rows if r.status == "ok" and r.headroom >= roofline.HEADROOM_TARGET]
  return max(ok, key=lambda r: r.mfu, default=None)


def search(
  config,
  topo: Topology,
  devices,
  *,
  grid: dict | None = None,
  probe: bool = True,
  exhaustive: bool = False,
  skip: frozenset = frozenset(),
  log=logging.info,
) -> dict:
  """Search the grid on `devices` (abstract TPU devices or local ones); -> the result dict
  (rows, chosen, key) that `plan_store.save` stores. `exhaustive` compiles every candidate that
  may fit; candidates labelled in `skip` (already stored) are left out."""
  t0 = time.perf_counter()
  rows = [Row(c) for c in candidates(config, grid) if c.label() not in skip]
  prepared = {}
  limit = (1 - roofline.HEADROOM_TARGET) * topo.chip.hbm_bytes
  for row in rows:
    prep = _prepare(row, config, topo, len(devices))
    if prep is None:
      continue
    if row.lower_bytes > limit:
      row.status = "pruned"
      row.note = f">= {row.lower_bytes / GIB:.1f} GiB/chip (analytic) > {limit / GIB:.1f}"
      continue
    prepared[id(row)] = prep
  order = sorted((r for r in rows if id(r) in prepared), key=lambda r: -r.bound_mfu)
  best = None
  for row in order:
    if not exhaustive and best is not None and row.bound_mfu <= best.mfu:
      row.status = "bound"
      continue
    if not exhaustive and _dominated(row, [r for r in order if r.status == "ok"]):
      row.status = "dominated"
      continue
    log(f"plan search: compiling {row.cand.label()}")
    _evaluate(row, *prepared[id(row)], topo, devices, probe)
    if row.status == "ok" and (best is None or row.mfu > best.mfu):
      best = row
  chosen = choose(rows)
  return {
    "key": plan_key(config, topo),
    "grid": {**GRID, **(grid or {})},
    "probe": probe,
    "rows": [r.to_json() for r in rows],
    "search_s": time.perf_counter() - t0,
    "chosen": chosen.to_json() if chosen else None,
    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
  }


def _secs(s: float) -> str:
  return f"{s:.3f} s" if s >= 0.1 else f"{s * 1e3:.3g} ms"


def format_table(result: dict) -> str:
  """The search as a markdown table plus the chosen plan."""
  lines = [
    "| candidate | mesh (dcn·data·fsdp·tensor) | status | step | MFU | HBM/chip | "
    "headroom | compile |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for r in result["rows"]:
    mesh = "·".join(str(v) for v in r["mesh"].values()) if r["mesh"] else "—"
    ok = r["status"] == "ok"
    step = _secs(r["step_s"]) if ok else (f"≥ {_secs(r['step_s'])}" if r["step_s"] else "—")
    mfu = f"{r['mfu']:.1%}" if ok else (f"≤ {r['bound_mfu']:.1%}" if r["bound_mfu"] else "—")
    hbm = (
      f"{r['total_gib']:.2f} GiB"
      if r["total_gib"] is not None
      else f"≥ {r['lower_bytes'] / GIB:.2f} GiB"
      if r["lower_bytes"]
      else "—"
    )
    room = f"{r['headroom']:.0%}" if r["headroom"] is not None else "—"
    comp = f"{r['compile_s']:.0f} s" if r["compile_s"] else "—"
    status = r["status"] + (f": {r['note']}" if r["note"] else "")
    lines.append(f"| {r['label']} | {mesh} | {status} | {step} | {mfu} | {hbm} | {room} | {comp} |")
  c = result["chosen"]
  lines.append(
    "chosen: "
    + (
      f"{c['label']} — predicted MFU {c['mfu']:.1%}, step {_secs(c['step_s'])}, "
      f"{c['total_gib']:.2f} GiB/chip ({c['headroom']:.0%} headroom)"
      if c
      else "none: no candidate leaves 20 % HBM headroom"
    )
  )
  return "\n".join(lines)


def parse_grid(items) -> dict:
  """['remat=none,full', 'micro=1,2'] -> {'remat': ('none', 'full'), 'micro': (1, 2)}."""
  out = {}
  for item in items or ():
    key, sep, value = item.partition("=")
    if not sep or key not in GRID:
      raise ValueError(f"--search_grid wants KEY=V1,V2 with KEY in {sorted(GRID)}, got {item!r}")
    values = tuple(v.strip() for v in value.split(",") if v.strip())
    if key in ("micro", "chunk"):
      values = tuple(int(v) for v in values)
    bad = [v for v in values if key == "mesh" and v not in MESHES]
    if bad or not values:
      raise ValueError(f"--search_grid {item!r}: mesh names are {sorted(MESHES)}")
    out[key] = values
  return out


def cli_search(
  config,
  topo: Topology,
  devices,
  *,
  grid: dict,
  probe: bool = True,
  fresh: bool = False,
  exhaustive: bool = False,
) -> int:
  """`mio_jax.aot --search`: print the table and the chosen plan. A stored plan for the key is
  read when it holds every candidate of the grid; otherwise the missing ones (all of them with
  `fresh`/`exhaustive`) are compiled and added to it. Exit code 0 when a plan was chosen, 1
  when no candidate leaves the headroom."""
  stored = plan_store.load(config, topo)
  known = frozenset(r["label"] for r in stored["rows"]) if stored else frozenset()
  wanted = {c.label() for c in candidates(config, grid)}
  if stored and wanted <= known and not (fresh or exhaustive):
    print(
      f"plan read from {stored['path']} (searched {stored['created']}; --search_fresh "
      "searches again)"
    )
  else:
    new = search(
      config,
      topo,
      devices,
      grid=grid,
      probe=probe,
      exhaustive=exhaustive,
      skip=frozenset() if fresh or exhaustive else known,
      log=lambda m: print(m, flush=True),
    )
    kept = len(known - {r["label"] for r in new["rows"]})
    stored = plan_store.merge(stored, new) if stored else new
    stored["path"] = plan_store.save(config, topo, stored)
    print(
      f"plan stored in {stored['path']} ({len(new['rows'])} candidates searched in "
      f"{new['search_s']:.0f} s" + (f", {kept} kept from earlier searches)" if kept else ")")
    )
  print(format_table(stored))
  return 0 if stored["chosen"] else 1
