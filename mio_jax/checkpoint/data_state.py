"""The data iterator's saved state: its file format, and resuming on another process count.

A checkpoint's `data` item holds one file per process, `process_{i}-of-{n}.json` (grain's Orbax
handler), each `{"state": <iterator state>, "sha256": <its digest>}` (`seal_state`), so damage to
the file is detected on restore (`read_state`, the one reader of these files). Files written
before the states were sealed hold the bare state: read with a warning that it cannot be checked.

The global batch never depends on the process count (see streams.py), and iterator state is keyed
by global stream id, so the union of every old process's state restores any new process: each one
picks its own streams out of it. Grain reads only the file for the current (i, n); when n changed,
`restore_from_dir` (or mio_jax.checkpoint.manager.restore_data, which training uses) merges them.

Works for worker_count 0 (the state of a multi-worker iterator nests per-worker states).
"""

from __future__ import annotations

import json
import logging
import re

from mio_jax.checkpoint import digest
from mio_jax.io import paths

log = logging.getLogger(__name__)

_STATE_FILE = re.compile(r"^process_(\d+)-of-(\d+)\.json$")
# What each process's state sums (streams.COUNTED as `<kind>_records`, and older names).
_COUNTERS = ("skipped_records", "dropped_records", "short_records", "split_records")


def seal_state(state: dict) -> bytes:
  """The bytes of one process's state file: the state with its digest."""
  return json.dumps(digest.seal({"state": state}), indent=1).encode()


def read_state(path: str) -> dict:
  """One process's saved iterator state, checked against its digest. Named damage
  (digest.CheckpointDamage) when the file is unreadable, not JSON, or differs from its digest."""
  try:
    text = paths.read_text(path)
  except OSError as e:
    raise digest.CheckpointReadError(f"{path}: unreadable ({e})") from e
  try:
    record = json.loads(text)
  except json.JSONDecodeError as e:
    raise digest.CheckpointReadError(f"{path}: not valid JSON, truncated? ({e})") from e
  if not isinstance(record, dict):
    raise digest.CheckpointReadError(f"{path}: holds {type(record).__name__}, not a state")
  if "sha256" not in record and "state" not in record:
    log.warning("%s: a data state saved without a digest (an older mio_jax): not verified", path)
    return record
  return digest.unseal(record, path)["state"]


def state_files(directory: str) -> dict[tuple[int, int], str]:
  """{(i, n): path} of every `process_{i}-of-{n}.json` in one checkpoint's data directory (a
  local path or a URL); digest.CheckpointDamaged unless there is exactly one for every i < n."""
  files = {}
  for name in paths.listdir(directory):
    match = _STATE_FILE.match(name)
    if match:
      files[(int(match.group(1)), int(match.group(2)))] = paths.join(directory, name)
  counts = {n for _, n in files}
  if len(counts) != 1 or sorted(i for i, _ in files) != list(range(next(iter(counts)))):
    raise digest.CheckpointDamaged(
      f"{directory}: expected process_i-of-n.json for every i < n, found "
      f"{sorted(paths.basename(f) for f in files.values())}"
    )
  return files


def load_states(directory: str) -> list[dict]:
  """Every process's state in `directory` (one checkpoint's data item), in process order."""
  files = state_files(directory)
  return [read_state(files[key]) for key in sorted(files)]


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
    **{key: sum(s.get(key, 0) for s in states) for key in _COUNTERS},
  }


def merged_state(states: list[dict]) -> dict:
  """The state that restores any process from every old process's state: their union, or the
  one state when it does not depend on the process (the synthetic iterator)."""
  if all("streams" not in s for s in states) and all(s == states[0] for s in states):
    return states[0]
  return merge_states(states)


def restore_from_dir(iterator, directory: str):
  """Restores `iterator` (any process count) from the data directory of a checkpoint, e.g.
  `<workdir>/checkpoints/<step>/data`."""
  iterator.set_state(merged_state(load_states(directory)))
  return iterator
