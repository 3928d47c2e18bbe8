"""Huge pages for the host's large allocations: a command line re-executes itself once with
glibc's `glibc.malloc.hugetlb=1` tunable, before JAX starts.

Why: XLA:CPU allocates a step's temporaries (0.3–0.7 GB at the benchmark shapes) afresh at every
execution. glibc serves every allocation above 32 MiB with a new `mmap`, and the kernel maps it
4 KiB at a time on first write: 7–23 % of a CPU training step goes to page faults. With the
tunable glibc asks for transparent huge pages on those mappings (2 MiB per fault): +6–15 %
tokens/s at S0/S1 on a 2-core host (docs/performance.md). glibc reads tunables only when a
process starts, hence the re-exec. On a TPU or GPU host it concerns host-side buffers only
(input pipeline, checkpoint staging); device memory is not malloc's.

`MIO_JAX_HUGE_PAGES=0` keeps the default malloc. Results are bit-identical either way: only
where the kernel puts the pages changes.
"""

from __future__ import annotations

import os
import sys

OPT_OUT = "MIO_JAX_HUGE_PAGES"
TUNABLE = "glibc.malloc.hugetlb"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"
MIN_GLIBC = (2, 35)  # the release that added glibc.malloc.hugetlb
_status = "malloc huge pages: not set up (the process did not start as a command line)"


def kernel_thp_mode(path: str = THP_SETTING) -> str | None:
  """'always', 'madvise' or 'never' (the bracketed word of the sysfs file); None without one."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1 : end] if 0 <= start < end else None


def glibc_version() -> tuple[int, int] | None:
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # 'glibc 2.36'
  except (AttributeError, ValueError, OSError):  # not glibc (musl, macOS, Windows)
    return None
  major, minor = version.split(".")[:2]
  return (int(major), int(minor)) if name == "glibc" else None


def huge_page_plan(
  environ, thp_mode: str | None, glibc: tuple[int, int] | None
) -> tuple[bool, str]:
  """(re-exec?, what the log says). Pure: the caller reads the host."""
  tunables = environ.get("GLIBC_TUNABLES", "")
  if f"{TUNABLE}=" in tunables:
    return False, f"malloc huge pages: GLIBC_TUNABLES={tunables}"
  if environ.get(OPT_OUT) == "0":
    return False, f"malloc huge pages off ({OPT_OUT}=0)"
  if glibc is None:
    return False, "malloc huge pages off: the C library is not glibc"
  if glibc < MIN_GLIBC:
    return False, f"malloc huge pages off: glibc {glibc[0]}.{glibc[1]} lacks {TUNABLE} (>= 2.35)"
  if thp_mode == "always":
    return False, "malloc huge pages: the kernel gives every mapping huge pages (THP 'always')"
  if thp_mode != "madvise":
    return False, f"malloc huge pages off: the kernel's transparent huge pages are {thp_mode!r}"
  return True, f"malloc huge pages: GLIBC_TUNABLES={with_tunable(tunables)}"


def with_tunable(tunables: str) -> str:
  return ":".join(t for t in (tunables, f"{TUNABLE}=1") if t)


def reexec_with_huge_pages() -> str:
  """Call first thing in a command line's `__main__`. Replaces the process (same pid, argv,
  stdio) when the tunable would help and is not set; otherwise returns the line to log."""
  global _status
  reexec, message = huge_page_plan(os.environ, kernel_thp_mode(), glibc_version())
  if not reexec:
    _status = message
    return message
  env = dict(os.environ, GLIBC_TUNABLES=with_tunable(os.environ.get("GLIBC_TUNABLES", "")))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)
  raise AssertionError("unreachable: execve returns only by raising")


def status() -> str:
  """What `reexec_with_huge_pages` found, for the run's log."""
  return _status
