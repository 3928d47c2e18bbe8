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


def closest_config_keys(message: str) -> str:
  """' (did you mean: a.b, a.c?)' for an unknown `--config.KEY` named in `message`."""
  import difflib
  import re

  match = re.search(r"[Kk]ey ['\"]?([\w.]+)['\"]? does not exist", message)
  try:
    config = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
  except (AttributeError, KeyError):
    config = None
  if not match or config is None:
    return ""
  keys = _flat_keys(config)
  close = difflib.get_close_matches(match.group(1), keys, n=3, cutoff=0.5)
  return f" (did you mean: {', '.join(close)}?)" if close else ""


def _flat_keys(config, prefix: str = "") -> list[str]:
  out = []
  for key, value in config.items():
    out.append(prefix + key)
    if hasattr(value, "items"):
      out += _flat_keys(value, f"{prefix}{key}.")
  return out


def _prog_name(module: str, argv) -> str:
  """'mio_jax.main' under both `python -m mio_jax.main` and the `mio-train` script."""
  if module != "__main__":
    return module
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  return spec.name.removesuffix(".__main__") if spec else str(argv[0]).rsplit("/", 1)[-1]


def default_config(name: str) -> str:
  """`configs/<name>` relative to the working directory (a checkout), else the copy installed
  with the package (`pip install mio-jax` ships the configs package)."""
  import importlib.util
  import os

  local = os.path.join("configs", name)
  if os.path.exists(local):
    return local
  spec = importlib.util.find_spec("configs")
  if spec is not None and spec.submodule_search_locations:
    return os.path.join(list(spec.submodule_search_locations)[0], name)
  return local


def unknown_config_key_message(error: Exception) -> str:
  """ml_collections' KeyError/AttributeError text → 'unknown config key 'x' (did you mean …)'."""
  import re

  text = str(error).replace("\\n", "\n").replace("\\'", "'")
  key = re.search(r"'([\w.]+)'", text)
  hint = re.search(r'Did you mean "([\w.]+)"', text)
  name = key.group(1) if key else text.strip()
  return f"unknown config key {name!r}" + (
    f" (did you mean {hint.group(1)!r}?)"
    if hint
    else "; every key with its default: mio_jax/config.py"
  )


def fail(prog: str, message: str) -> None:
  _fail(prog, message)


def _fail(prog: str, message: str) -> None:
  print(f"{prog}: error: {message}", file=sys.stderr)
  raise SystemExit(2)


def run(main, argv=None, flags_parser=None) -> None:
  """`app.run(main)` for every CLI, plus:
  - help the user asked for exits 0 (absl exits 1, which reads as a failure in scripts and as
    "does not fit" for mio-aot);
  - a bad flag or an unknown `--config.KEY` (with the closest valid keys), and every user error
    raised by `main` (mio_jax/errors.py) print one line and exit 2, without a traceback;
  - a storage failure mid-run (errors.StorageError: a checkpoint that could not be written)
    prints one line and exits 3;
  - a quiet console (mio_jax/console.py; `--verbosity=1` for every library's INFO lines).
  """
  from mio_jax import console, errors

  console.quiet_native_logs()
  _help_for_console_scripts(main.__module__)
  args = sys.argv if argv is None else argv
  prog = _prog_name(main.__module__, args)
  parse = flags_parser or flags.FLAGS

  def parse_or_fail(argv):
    try:
      return parse(argv)
    except flags.Error as e:
      if asked_for_help(argv):
        raise
      _fail(prog, f"{e}{closest_config_keys(str(e))}")
    except (KeyError, AttributeError, ValueError, TypeError) as e:  # ml_collections overrides
      _fail(prog, f"{str(e).strip(chr(34) + chr(39))}{closest_config_keys(str(e))}")

  def main_or_fail(argv):
    console.configure(flags.FLAGS.verbosity)
    try:
      return main(argv)
    except errors.user_errors() as e:
      _fail(prog, str(e))
    except errors.StorageError as e:  # not the user's mistake: a code of its own (3)
      print(f"{prog}: error: {e}", file=sys.stderr)
      raise SystemExit(errors.STORAGE_EXIT_CODE) from None

  try:
    app.run(main_or_fail, argv=argv, flags_parser=parse_or_fail)
  except SystemExit as e:
    if e.code == 1 and asked_for_help(args):
      raise SystemExit(0) from None
    raise
