"""Metric writers: TensorBoard event files in the workdir, local or gs://.

TensorBoard's writer goes through TensorFlow's own file layer, which would be a second GCS client
beside mio_jax/io/paths.py. For a URL workdir it writes into a local staging directory instead, and
the files are copied to the workdir through the path layer every `upload_every_s` and at close.
The console line is written by the training loop itself (no clu LoggingWriter: one line per step).
"""

from __future__ import annotations

import os
import tempfile
import time

from clu import metric_writers

from mio_jax.io import paths


class MirroredWriter(metric_writers.MultiWriter):
  """Writes event files locally; `flush`/`close` upload new or grown files to `remote_dir`."""

  def __init__(self, local_dir: str, remote_dir: str, upload_every_s: float = 60.0):
    super().__init__([metric_writers.SummaryWriter(local_dir)])
    self.local_dir, self.remote_dir = local_dir, remote_dir
    self.upload_every_s = upload_every_s
    self._uploaded: dict[str, int] = {}
    self._last_upload = time.monotonic()

  def write_scalars(self, step, scalars):
    super().write_scalars(step, scalars)
    if time.monotonic() - self._last_upload > self.upload_every_s:
      self.flush()

  def flush(self):
    super().flush()
    self.upload()

  def close(self):
    super().close()
    self.upload()

  def upload(self) -> list[str]:
    """Copies files whose size changed since the last upload → their relative names."""
    sent = []
    for root, _, files in os.walk(self.local_dir):
      for name in files:
        local = os.path.join(root, name)
        rel = os.path.relpath(local, self.local_dir)
        size = os.path.getsize(local)
        if self._uploaded.get(rel) != size:
          paths.copy_file(local, paths.join(self.remote_dir, rel))
          self._uploaded[rel] = size
          sent.append(rel)
    self._last_upload = time.monotonic()
    return sent


def make_writer(workdir: str, is_lead: bool) -> metric_writers.MetricWriter:
  """Event files on the lead process only; other processes write nothing (their console line
  comes from the loop)."""
  if not is_lead:
    return metric_writers.MultiWriter([])
  if paths.is_url(workdir):
    return MirroredWriter(tempfile.mkdtemp(prefix="mio_jax_events-"), workdir)
  return metric_writers.MultiWriter([metric_writers.SummaryWriter(workdir)])


def staging_dir(remote_dir: str) -> str:
  """Where a tool that only writes local files (the profiler) writes before an upload."""
  return tempfile.mkdtemp(prefix=f"mio_jax_{paths.basename(remote_dir)}-")
