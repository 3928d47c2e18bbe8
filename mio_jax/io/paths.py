"""One path layer for every file mio_jax reads or writes: local paths and `gs://` URLs alike.

Everything goes through `etils.epath` (Orbax and Grain use it too). For URLs epath is told to use
fsspec (gcsfs) rather than TensorFlow's gfile: one client for every `gs://` access, which honours
`STORAGE_EMULATOR_HOST` (the tests run against a real fake-gcs-server) and needs no TensorFlow.
TensorStore (the checkpoint arrays) talks to GCS itself.

Paths stay strings at module boundaries; `path()` turns one into an `epath.Path`. Never call
`os.path.abspath` on a URL: `absolute()` leaves URLs alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile

# Before etils picks a backend (it reads this on every call): gs:// through fsspec, not TF gfile.
os.environ.setdefault("EPATH_USE_TF", "false")

import fsspec.config  # noqa: E402
from etils import epath  # noqa: E402  (after the backend switch above)

# gcsfs caches directory listings by default. Several hosts and jobs write one bucket, and the
# checkpoint manager looks up directories right after creating them: always list the bucket.
fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)

log = logging.getLogger(__name__)

URL_SCHEMES = ("gs",)  # what the project tests; epath also knows s3:// (with s3fs installed)
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
_MALFORMED_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/*")


class PathError(ValueError):
  """A path that cannot be used: malformed URL, missing bucket, no permission. Names the path."""


def is_url(p) -> bool:
  return bool(_URL.match(os.fspath(p)))


def check(p) -> str:
  """`p` as a string, or PathError for a URL with an unknown or malformed scheme ('gs:/b',
  'gcs://b', 'GS://b') that would otherwise be taken for a local directory named 'gs:'."""
  p = os.fspath(p)
  if not p:
    raise PathError("empty path")
  match = _URL.match(p)
  if match:
    if match.group(1) not in URL_SCHEMES:
      raise PathError(
        f"{p}: unknown URL scheme {match.group(1)!r}; use a local path or "
        f"{', '.join(s + '://' for s in URL_SCHEMES)}"
      )
    if not match.group(2).split("/")[0]:
      raise PathError(f"{p}: the URL names no bucket")
    return p
  bad = _MALFORMED_URL.match(p)
  if bad and len(bad.group(1)) > 1:  # 'C:/x' on Windows is a drive, not a URL
    raise PathError(
      f"{p}: looks like a URL with a malformed scheme; did you mean "
      f"{bad.group(1).lower()}://{p[bad.end() :]}?"
    )
  return p


def path(p) -> epath.Path:
  return epath.Path(check(p))


def join(base, *parts) -> str:
  """`os.path.join` that keeps `gs://` intact."""
  return os.fspath(path(base).joinpath(*parts))


def absolute(p) -> str:
  """Local paths made absolute (so a later chdir does not move them); URLs unchanged."""
  p = check(p)
  return p if is_url(p) else os.path.abspath(os.path.expanduser(p))


def parent(p) -> str:
  return os.fspath(path(p).parent)


def basename(p) -> str:
  return path(p).name


def exists(p) -> bool:
  return path(p).exists()


def isdir(p) -> bool:
  return path(p).is_dir()


def listdir(p) -> list[str]:
  """Names (not paths) in directory `p`, sorted."""
  return sorted(child.name for child in path(p).iterdir())


def glob(directory, pattern: str) -> list[str]:
  return sorted(os.fspath(x) for x in path(directory).glob(pattern))


def makedirs(p) -> None:
  path(p).mkdir(parents=True, exist_ok=True)


def read_text(p) -> str:
  return path(p).read_text()


def read_bytes(p) -> bytes:
  return path(p).read_bytes()


def write_text(p, text: str) -> None:
  """Atomic: readers see the old or the new file, never half of one (an object upload is
  atomic on GCS; locally we write a temp file and rename it)."""
  write_bytes(p, text.encode())


def write_bytes(p, data: bytes) -> None:
  p = check(p)
  if is_url(p):
    path(p).write_bytes(data)
    return
  os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(p)), prefix=".tmp-")
  os.fchmod(fd, default_file_mode())  # mkstemp creates 0600
  with os.fdopen(fd, "wb") as f:
    f.write(data)
  os.replace(tmp, p)


def default_file_mode() -> int:
  """0666 less the umask: what open() gives a new file. Writers that go through a temp file
  (mkstemp, safetensors) create 0600 instead; exports and outputs must stay readable by a
  cluster's other users and by serving containers, so they chmod to this."""
  return 0o666 & ~_umask()


def _umask() -> int:
  """The process umask, read without changing it (os.umask can only set it: a set-and-restore
  would race with other threads creating files)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass  # not Linux: fall back to the set-and-restore below
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def append_text(p, text: str) -> None:
  """Appends locally; objects in a bucket cannot grow, so a URL is read and rewritten whole
  (fine for logs written every few steps)."""
  p = check(p)
  if not is_url(p):
    os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    with open(p, "a") as f:
      f.write(text)
    return
  old = read_text(p) if exists(p) else ""
  write_text(p, old + text)


def open_file(p, mode: str = "r"):
  return path(p).open(mode)


def remove_tree(p) -> None:
  target = path(p)
  if target.is_dir():
    target.rmtree()
  elif target.exists():
    target.unlink()


def rename(src, dst) -> None:
  """A directory rename: atomic locally; on GCS (no directories, no rename) every object is
  copied, then the originals deleted."""
  if not is_url(src) and not is_url(dst):
    path(src).rename(path(dst))
    return
  copy_tree(src, dst)
  remove_tree(src)


def copy_file(src, dst) -> None:
  src_p, dst_p = path(src), path(dst)
  if not is_url(src) and not is_url(dst):
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    shutil.copyfile(src, dst)
    return
  dst_p.parent.mkdir(parents=True, exist_ok=True)
  with src_p.open("rb") as fin, dst_p.open("wb") as fout:
    shutil.copyfileobj(fin, fout, length=16 << 20)


def copy_tree(src, dst) -> list[str]:
  """Copies every file under `src` into `dst` (either may be a URL) → the relative names."""
  names = []
  top = _without_scheme(os.fspath(path(src)))
  for root, _, files in path(src).walk():
    # fsspec walks a URL with scheme-less roots ('bucket/dir'): compare without the scheme.
    rel = os.path.relpath(_without_scheme(os.fspath(root)), top)
    for name in files:
      rel_name = name if rel == "." else os.path.join(rel, name)
      copy_file(join(src, rel_name), join(dst, rel_name))
      names.append(rel_name)
  return sorted(names)


def _without_scheme(p: str) -> str:
  match = _URL.match(p)
  return match.group(2) if match else p


def local_cache_dir(url: str, root: str | None = None) -> str:
  """A per-URL directory on local disk (for readers that only take local files)."""
  root = root or os.path.join(tempfile.gettempdir(), "mio_jax_cache")
  digest = hashlib.sha256(url.encode()).hexdigest()[:16]
  return os.path.join(root, f"{basename(url) or 'root'}-{digest}")


def local_copy(p, cache_root: str | None = None) -> str:
  """`p` itself when local; a URL's file copied once into the local cache (same size = done)."""
  p = check(p)
  if not is_url(p):
    return p
  local = os.path.join(local_cache_dir(parent(p), cache_root), basename(p))
  size = path(p).stat().length
  if os.path.exists(local) and os.path.getsize(local) == size:
    return local
  os.makedirs(os.path.dirname(local), exist_ok=True)
  tmp = f"{local}.part-{os.getpid()}"
  copy_file(p, tmp)
  os.replace(tmp, local)
  return local


def check_writable(directory) -> None:
  """PathError naming `directory` when it cannot be created or written (missing bucket, no
  permission, read-only disk): checked before anything compiles."""
  directory = check(directory)
  probe = join(directory, f".mio_jax_write_probe-{os.getpid()}")
  try:
    makedirs(directory)
    write_bytes(probe, b"")
    path(probe).unlink()
  except (OSError, ValueError) as e:  # gcsfs: FileNotFoundError (no bucket), PermissionError (403)
    raise PathError(
      f"{directory}: cannot write there ({type(e).__name__}: "
      f"{str(e).splitlines()[0] if str(e) else 'no detail'})"
    ) from e


def check_readable_dir(directory, what: str) -> None:
  """PathError when `directory` does not exist or cannot be listed."""
  directory = check(directory)
  try:
    ok = isdir(directory)
  except (OSError, ValueError) as e:
    raise PathError(f"{what} {directory}: cannot read it ({type(e).__name__}: {e})") from e
  if not ok:
    raise PathError(f"{what} {directory} does not exist")
