"""Malloc huge pages (mio_jax/hardware/host_memory.py): when a command line re-executes itself with
glibc.malloc.hugetlb=1, that it does so once, keeps argv and the user's other tunables, and
says why when it does not."""

import os
import subprocess
import sys

import pytest

from mio_jax.hardware import host_memory as hm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = (2, 36)


@pytest.mark.parametrize(
  "environ, thp, glibc, reexec, says",
  [
    ({}, "madvise", GLIBC, True, "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"),
    (
      {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
      "madvise",
      GLIBC,
      True,
      "GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1",
    ),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", GLIBC, False, "hugetlb=0"),
    ({"MIO_JAX_HUGE_PAGES": "0"}, "madvise", GLIBC, False, "off (MIO_JAX_HUGE_PAGES=0)"),
    ({}, "madvise", None, False, "not glibc"),
    ({}, "madvise", (2, 31), False, "glibc 2.31 lacks glibc.malloc.hugetlb"),
    ({}, "always", GLIBC, False, "THP 'always'"),
    ({}, "never", GLIBC, False, "huge pages are 'never'"),
    ({}, None, GLIBC, False, "huge pages are None"),
  ],
)
def test_plan_says_what_it_does_and_why_not(environ, thp, glibc, reexec, says):
  got_reexec, message = hm.huge_page_plan(environ, thp, glibc)
  assert got_reexec is reexec and says in message, message


def test_kernel_thp_mode_reads_the_bracketed_word(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert hm.kernel_thp_mode(str(path)) == "madvise"
  assert hm.kernel_thp_mode(str(tmp_path / "missing")) is None


PROBE = (
  "import os, sys\n"
  "print('argv', sys.argv[1:], 'tunables', os.environ.get('GLIBC_TUNABLES'), flush=True)\n"
  "from mio_jax.hardware import host_memory\n"
  "host_memory.reexec_with_huge_pages()\n"
  "print('status', host_memory.status())\n"
)


def _probe(**env):
  environ = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hm.OPT_OUT)}
  proc = subprocess.run(
    [sys.executable, "-c", PROBE, "--flag=1"],
    cwd=ROOT,
    env={**environ, **env},
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode == 0, proc.stderr
  return proc.stdout.splitlines()


def test_reexecs_once_with_the_same_argv_on_this_host():
  """The real exec on this machine: where the plan says re-exec, the probe's first line appears
  twice (before and after), the second time with the tunable; otherwise once."""
  reexec, _ = hm.huge_page_plan({}, hm.kernel_thp_mode(), hm.glibc_version())
  lines = _probe()
  starts = [line for line in lines if line.startswith("argv")]
  if reexec:
    assert starts == [
      "argv ['--flag=1'] tunables None",
      "argv ['--flag=1'] tunables glibc.malloc.hugetlb=1",
    ]
    assert lines[-1] == "status malloc huge pages: GLIBC_TUNABLES=glibc.malloc.hugetlb=1"
  else:
    assert starts == ["argv ['--flag=1'] tunables None"] and "off" in lines[-1]


def test_opting_out_keeps_the_process():
  lines = _probe(MIO_JAX_HUGE_PAGES="0")
  assert lines == [
    "argv ['--flag=1'] tunables None",
    "status malloc huge pages off (MIO_JAX_HUGE_PAGES=0)",
  ]
