"""What the absl command lines (mio-train, mio-generate, mio-evaluate, mio-export, mio-aot) share
around `absl.app.run`: the console scripts in pyproject.toml and `python -m` both end up here."""

from __future__ import annotations

import sys

from absl import app, flags

HELP_FLAGS = ("--help", "-?", "--helpshort", "--helpfull", "--helpxml")


def asked_for_help(argv) -> bool:
  return any(a.split("=", 1)[0] in HELP_FLAGS for a in argv[1:])


def _help_for_console_scripts(module: str) -> None:
  """absl's --help lists the flags of the module `sys.argv[0]` names and prints `__main__`'s
  docstring. Under a console script both are the generated wrapper, which has neither: give it
  the CLI module's. (Under `python -m` the CLI module is `__main__` already.)"""
  if module == "__main__":
    return
  for flag in flags.FLAGS.get_key_flags_for_module(module):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  wrapper = sys.modules.get("__main__")
  if wrapper is not None and not getattr(wrapper, "__doc__", None):
    wrapper.__doc__ = sys.modules[module].__doc__


def run(main, argv=None, flags_parser=None) -> None:
  """`app.run(main)`, except that help the user asked for exits 0: absl exits 1 after printing
  it, which reads as a failure in scripts (and as "does not fit" for mio-aot)."""
  _help_for_console_scripts(main.__module__)
  kw = {"argv": argv}
  if flags_parser is not None:
    kw["flags_parser"] = flags_parser
  try:
    app.run(main, **kw)
  except SystemExit as e:
    if e.code == 1 and asked_for_help(sys.argv if argv is None else argv):
      raise SystemExit(0) from None
    raise
