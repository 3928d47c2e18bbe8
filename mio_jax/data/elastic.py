"""Resume the data iterator on a different number of processes.

The global batch never depends on the process count (see streams.py), and iterator state is keyed
by global stream id, so the union of every old process's state restores any new process: each one
picks its own streams out of it. Grain's Orbax handler writes one file per process,
`process_{i}-of-{n}.json`, and on restore reads only the file for the current (i, n); when n
changed, call `restore_from_dir` on the checkpoint's data directory instead.

Works for worker_count 0 (the state of a multi-worker iterator nests per-worker states).
"""

from __future__ import annotations

import json
import re

from mio_jax import paths


def merge_states(states: list[dict]) -> dict:
  """Union of per-process iterator states saved at the same step."""
  if not states:
    raise ValueError("merge_states needs at least one state")
  steps = {s["n"] for s in states}
  versions = {s.get("version") for s in states}
  if len(steps) != 1 or len(versions) != 1:
    raise ValueError(f"states come from different steps {sorted(steps)} or versions {versions}")
  streams = {}
  for state in states:
    if "streams" not in state:
      raise ValueError("merge_states handles states of worker_count=0 iterators only")
    streams.update(state["streams"])
  return {
    "version": versions.pop(),
    "n": steps.pop(),
    "streams": streams,
    "skipped_records": sum(s.get("skipped_records", 0) for s in states),
    "dropped_records": sum(s.get("dropped_records", 0) for s in states),
  }


def load_states(directory: str) -> list[dict]:
  """Every `process_{i}-of-{n}.json` grain wrote in `directory` (one checkpoint's data item;
  a local path or a URL)."""
  files = paths.glob(directory, "process_*-of-*.json")
  counts = {re.search(r"-of-(\d+)\.json$", f).group(1) for f in files}
  if not files or len(counts) != 1 or len(files) != int(counts.pop()):
    raise FileNotFoundError(
      f"{directory}: expected process_i-of-n.json for every i < n, found "
      f"{[paths.basename(f) for f in files]}"
    )
  states = []
  for path in files:
    try:
      states.append(json.loads(paths.read_text(path)))
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e
  return states


def restore_from_dir(iterator, directory: str):
  """Restores `iterator` (any process count) from the data files of a checkpoint."""
  iterator.set_state(merge_states(load_states(directory)))
  return iterator
