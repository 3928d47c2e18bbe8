"""One training run per workdir at a time: an atomic claim, taken before anything is written.

The claim is `<workdir>/.mio_jax_claim.json`, created create-only: on local disk a hard link of
a fully written private file (fails when the name exists, like `O_CREAT|O_EXCL`, and is never
seen half written; `O_EXCL` itself where links are not supported), on `gs://` an upload with
the generation precondition `ifGenerationMatch=0` on `gs://` (gcsfs's
`mode="create"`). Exactly one of two jobs started at the same instant gets it; the other stops
with `WorkdirBusyError` naming the holder (host, pid, since when). The claim records host, pid,
run id, start time and a heartbeat that the owner refreshes every `HEARTBEAT_S` seconds.

Stale claims need no human: a claim is stale when its heartbeat is older than
`STALE_AFTER_BEATS` × `HEARTBEAT_S` (the owner died or hung on any host), or, on the same host,
as soon as its pid is no longer alive (kill -9). A stale claim is taken over by one job only:
takers first create, create-only, a token named after the version of the claim they judged
stale (its text locally, its generation on GCS); the one that gets it removes the claim if it is
still that version, then claims as above. An owner that finds at a heartbeat that its claim is no
longer its own stops at the next step (`WorkdirClaimLostError`) rather than write beside
another run. Only create-only writes are relied on (not generation-matched deletes), so the
same code holds on local disk, on GCS and on the GCS emulator the tests run.

Multi-process jobs: process 0 claims; every process learns the outcome by a broadcast, so all
proceed or all stop with the same line. Only process 0 beats and releases.
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import socket
import threading
import time
import uuid

from mio_jax.errors import UserError
from mio_jax.io import paths

log = logging.getLogger(__name__)

CLAIM_NAME = ".mio_jax_claim.json"
HEARTBEAT_S = 30.0
STALE_AFTER_BEATS = 4  # a claim whose heartbeat is 2 minutes old is abandoned


class WorkdirBusyError(UserError):
  """Another job holds this workdir's claim (names host, pid and since when)."""


class WorkdirClaimLostError(UserError):
  """This run's claim was taken over (its heartbeat had stopped for too long)."""


def claim_path(workdir: str) -> str:
  return paths.join(workdir, CLAIM_NAME)


def _now() -> float:
  return time.time()


def _iso(t: float) -> str:
  return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, owned by another user
    return True
  return True


def is_stale(record: dict, now: float, heartbeat_s: float, host: str) -> bool:
  """The stale-claim rule (pure): an old heartbeat anywhere, or a dead pid on this host."""
  if now - float(record.get("heartbeat", 0.0)) > STALE_AFTER_BEATS * heartbeat_s:
    return True
  return record.get("host") == host and not _pid_alive(int(record.get("pid", -1)))


def describe(record: dict) -> str:
  return (
    f"host {record.get('host')}, pid {record.get('pid')}, since "
    f"{_iso(float(record.get('started', 0)))}, last heartbeat "
    f"{_iso(float(record.get('heartbeat', 0)))}, run {record.get('run_id')}"
  )


class _LocalStore:
  """Files on local disk: create-only is a hard link (fails when the name exists); a file's
  version is its text."""

  def create(self, path: str, text: str) -> bool:
    """The text goes to a private file (O_CREAT|O_EXCL) that is then hard-linked to `path`: the
    link is atomic and fails when `path` exists, so no reader ever sees a claim half written."""
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
      with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
      os.link(tmp, path)
    except FileExistsError:
      return False
    except OSError as e:
      if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV):
        raise
      return self._create_exclusive(path, text)  # a file system without hard links (FUSE)
    finally:
      os.unlink(tmp)
    return True

  def _create_exclusive(self, path: str, text: str) -> bool:
    try:
      fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(text)
    return True

  def read(self, path: str) -> tuple[str, object] | None:
    """(text, version) or None when there is no such file."""
    try:
      with open(path) as f:
        text = f.read()
    except FileNotFoundError:
      return None
    return text, text

  def delete(self, path: str) -> None:
    try:
      os.unlink(path)
    except FileNotFoundError:
      pass

  def overwrite(self, path: str, text: str) -> None:
    paths.write_text(path, text)  # temp file + rename: readers never see half a claim


class _GcsStore:
  """Objects in a bucket: create-only is an upload with `ifGenerationMatch=0` (HTTP 412, which
  gcsfs raises as FileExistsError, when the object exists); versions are generations."""

  def __init__(self, url: str):
    import fsspec

    self.fs, _ = fsspec.core.url_to_fs(url)

  def create(self, path: str, text: str) -> bool:
    try:
      self.fs.pipe_file(path, text.encode(), mode="create")
    except FileExistsError:
      return False
    return True

  def read(self, path: str):
    try:
      info = self.fs.info(path)
      text = self.fs.cat_file(path).decode()
    except FileNotFoundError:
      return None
    return text, info.get("generation")

  def delete(self, path: str) -> None:
    try:
      self.fs.rm_file(path)
    except FileNotFoundError:
      pass

  def overwrite(self, path: str, text: str) -> None:
    self.fs.pipe_file(path, text.encode())


def _store(path: str):
  return _GcsStore(path) if paths.is_url(path) else _LocalStore()


def take_over(store, claim: str, version, stale_after_s: float) -> bool:
  """Removes the claim `claim` if it is still at `version` (judged stale), as the only taker:
  takers first create, create-only, a token named after that version, so of several jobs
  taking over one stale claim exactly one removes it (the others find the new claim after). A
  token left by a taker that died is itself stale after `stale_after_s`. True when removed."""
  token = f"{claim}.takeover-{_version_tag(version)}"
  if not store.create(
    token, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "t": _now()})
  ):
    found = store.read(token)
    # A token that does not parse is being written (O_EXCL without links): fresh.
    token_time = float((_parse(found[0]) or {}).get("t", _now())) if found else _now()
    if _now() - token_time > stale_after_s:
      store.delete(token)
    return False
  try:
    found = store.read(claim)
    if found is None or found[1] != version:  # released or replaced meanwhile: not stale
      return False
    store.delete(claim)
    return True
  finally:
    store.delete(token)


def _version_tag(version) -> str:
  import hashlib

  return hashlib.sha256(str(version).encode()).hexdigest()[:16]


class WorkdirClaim:
  """`acquire()` → this run holds the workdir; `release()` gives it back (idempotent)."""

  def __init__(self, workdir: str, heartbeat_s: float = HEARTBEAT_S, is_lead: bool = True):
    self.workdir = workdir
    self.path = claim_path(workdir)
    self.heartbeat_s = heartbeat_s
    self.is_lead = is_lead
    self.host = socket.gethostname()
    self.run_id = uuid.uuid4().hex
    self.record: dict | None = None
    self.lost: str | None = None
    self._store = _store(self.path) if is_lead else None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def _text(self) -> str:
    return json.dumps(self.record, sort_keys=True)

  def acquire(self) -> None:
    """WorkdirBusyError when a live claim is held by another job."""
    now = _now()
    self.record = {
      "host": self.host,
      "pid": os.getpid(),
      "run_id": self.run_id,
      "started": now,
      "heartbeat": now,
      "heartbeat_s": self.heartbeat_s,
    }
    unreadable = 0
    for _ in range(50):  # each loop: create, or judge the holder (bounded: takeovers race)
      if self._store.create(self.path, self._text()):
        self._start_heartbeat()
        return
      found = self._store.read(self.path)
      if found is None:  # released between our create and read: try again
        continue
      text, version = found
      holder = _parse(text)
      if holder is None and unreadable < 20:  # being written (O_EXCL without links): look again
        unreadable += 1
        time.sleep(0.05)
        continue
      holder = holder or {"heartbeat": 0.0, "pid": -1, "host": "?"}  # damaged: no live owner
      beat = float(holder.get("heartbeat_s", self.heartbeat_s))
      if not is_stale(holder, _now(), beat, self.host):
        raise WorkdirBusyError(
          f"{self.workdir} is in use by another training run ({describe(holder)}); "
          "one run per workdir: wait for it to finish, stop it, or use another --workdir"
        )
      if take_over(self._store, self.path, version, STALE_AFTER_BEATS * beat):
        log.warning(
          "taking over the stale claim on %s: %s; its heartbeat stopped or its process is gone",
          self.workdir,
          describe(holder),
        )
      else:
        time.sleep(0.1)  # another job is taking it over: its claim will be there to judge
    raise WorkdirBusyError(
      f"{self.workdir}: could not claim it: other jobs keep claiming it at the same time"
    )

  def _start_heartbeat(self) -> None:
    self._thread = threading.Thread(target=self._beat, name="workdir-claim", daemon=True)
    self._thread.start()

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_s):
      try:
        self.refresh()
      except OSError as e:  # storage hiccup: the next beat retries; staleness takes 4 misses
        log.warning("could not refresh the claim on %s: %s", self.workdir, e)

  def refresh(self) -> None:
    """Rewrites the heartbeat, after checking that the claim is still this run's."""
    found = self._store.read(self.path)
    holder = (_parse(found[0]) or {}) if found else {}
    if holder.get("run_id") != self.run_id:
      self.lost = (
        f"{self.workdir}: this run's claim was taken over by "
        f"{describe(holder) if holder else 'nobody (it was removed)'}; stopping so that two "
        "runs never write one workdir"
      )
      log.error(self.lost)
      self._stop.set()
      return
    self.record["heartbeat"] = _now()
    self._store.overwrite(self.path, self._text())

  def check(self) -> None:
    """Called between steps: WorkdirClaimLostError once a heartbeat found the claim gone."""
    if self.lost:
      raise WorkdirClaimLostError(self.lost)

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=10)
      self._thread = None
    if self._store is None or self.record is None or self.lost:
      return
    found = self._store.read(self.path)
    if found and (_parse(found[0]) or {}).get("run_id") == self.run_id:
      self._store.delete(self.path)
    self.record = None


def _parse(text: str) -> dict | None:
  """The claim record, or None for text that is not one (half written, or damaged)."""
  try:
    record = json.loads(text)
  except json.JSONDecodeError:
    return None
  return record if isinstance(record, dict) else None


def acquire(workdir: str, heartbeat_s: float = HEARTBEAT_S) -> WorkdirClaim:
  """Process 0 claims `workdir`; in a multi-process job every process gets the same outcome."""
  import jax

  is_lead = jax.process_index() == 0
  claim = WorkdirClaim(workdir, heartbeat_s, is_lead)
  error = ""
  if is_lead:
    paths.makedirs(workdir)
    try:
      claim.acquire()
    except WorkdirBusyError as e:
      error = str(e)
  if jax.process_count() > 1:
    error = _broadcast_text(error)
  if error:
    raise WorkdirBusyError(error)
  return claim


def _broadcast_text(text: str, size: int = 2048) -> str:
  """Process 0's `text` on every process (fixed-size buffer: the collective needs one shape)."""
  import numpy as np
  from jax.experimental import multihost_utils

  buf = np.zeros(size, np.uint8)
  data = text.encode()[:size]
  buf[: len(data)] = np.frombuffer(data, np.uint8)
  out = np.asarray(multihost_utils.broadcast_one_to_all(buf)).astype(np.uint8)
  return bytes(out).rstrip(b"\0").decode(errors="replace")
