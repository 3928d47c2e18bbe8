"""What the command lines share. The absl ones (mio-train, mio-generate, mio-evaluate,
mio-export, mio-aot) run through `run` around `absl.app.run`: the console scripts in
pyproject.toml and `python -m` both end up here. The argparse ones (data_pipelines, benchmarks.run)
parse with `ArgumentParser`. Either way a user's mistake is one line `PROG: error: …`, exit 2."""

from __future__ import annotations

import argparse
import re
import sys

from absl import app, flags

from mio_jax import errors
from mio_jax.cli import console
from mio_jax.io import paths

HELP_FLAGS = ("--help", "-?", "--helpshort", "--helpfull", "--helpxml")


def asked_for_help(argv) -> bool:
  return any(a.split("=", 1)[0] in HELP_FLAGS for a in argv[1:])


# The command each CLI module serves (`python -m NAME`; the console scripts name the same modules).
COMMANDS = {
  "mio_jax.cli.train": "mio_jax.main",
  "mio_jax.cli.generate": "mio_jax.generate",
  "mio_jax.cli.evaluate": "mio_jax.evaluate",
  "mio_jax.cli.export": "mio_jax.export",
  "mio_jax.cli.aot": "mio_jax.aot",
}


def _help_for_console_scripts(module: str) -> None:
  """absl's --help lists the flags of the module `sys.argv[0]` names and prints `__main__`'s
  docstring. Under a console script or a `python -m` entry point (mio_jax/main.py, ...) that is
  a few-line wrapper: give it the CLI module's flags and docstring. (A CLI run as `python -m`
  itself is `__main__` already.)"""
  if module == "__main__":
    return
  for flag in flags.FLAGS.get_key_flags_for_module(module):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  wrapper = sys.modules.get("__main__")
  if wrapper is not None:
    wrapper.__doc__ = sys.modules[module].__doc__


def _prog_name(module: str, argv) -> str:
  """'mio_jax.main' under both `python -m mio_jax.main` and the `mio-train` script."""
  if module != "__main__":
    return COMMANDS.get(module, module)
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


def define_config_file(name: str, default: str, help_string: str, **kwargs) -> None:
  """`config_flags.DEFINE_config_file` with mio's answer to an unknown `--NAME.KEY`: without
  `--NAME=PATH` on the command line, ml_collections loads the default and applies the overrides
  here, at definition time, before `run` can catch anything."""
  from ml_collections import config_flags

  try:
    config_flags.DEFINE_config_file(name, default, help_string, **kwargs)
  except (KeyError, AttributeError):  # ml_collections' lookup of an override's path
    message = unknown_config_key(default, _config_overrides(name, sys.argv), name)
    if message is None:  # every key exists: not the user's mistake, keep the traceback
      raise
    _fail(_prog_name("__main__", sys.argv), message)


def _config_overrides(name: str, argv) -> list[str]:
  """The KEYs of `--NAME.KEY=VALUE` (and `--noNAME.KEY`) in argv, in order."""
  pattern = re.compile(rf"^--?(?:no)?{re.escape(name)}\.([^=]+)")
  return [m.group(1) for a in argv[1:] if (m := pattern.match(a))]


def _config_file_arg(name: str, argv) -> str | None:
  """PATH[:variant] of the last `--NAME=PATH` / `--NAME PATH` in argv, None if absent."""
  found = None
  for i, a in enumerate(argv[1:], 1):
    if a.startswith((f"--{name}=", f"-{name}=")):
      found = a.split("=", 1)[1]
    elif a in (f"--{name}", f"-{name}") and i + 1 < len(argv):
      found = argv[i + 1]
  return found


def unknown_config_key(path: str, overrides, name: str = "config") -> str | None:
  """'unknown config key 'a.b' (did you mean 'a.c'?)' for the first override whose path the
  config at `path` lacks; None when every path exists."""
  import difflib

  from ml_collections.config_flags import config_flags

  # What `--NAME=PATH[:variant]` gives, loaded again to name the key an override lacks.
  config = config_flags.ConfigFileFlagParser(name, lock_config=False).parse(path)
  for override in overrides:
    node, walked = config, ""
    for part in override.split("."):
      if not hasattr(node, "keys") or part not in node.keys():
        siblings = [walked + k for k in node.keys()] if hasattr(node, "keys") else []
        close = difflib.get_close_matches(walked + part, siblings, n=3, cutoff=0.6)
        hint = " or ".join(repr(k) for k in close)
        return f"unknown config key {override!r}" + (
          f" (did you mean {hint}?)" if close else f"; the keys here: {', '.join(siblings)}"
        )
      node, walked = node[part], f"{walked}{part}."
  return None


def missing_config_file(argv) -> str | None:
  """'--config=PATH: no such config file' for a config flag whose file does not exist (a config
  file is Python run in place, so a local path). ml_collections defers that error to the first
  read of the config, deep inside the run, as a 40-line traceback."""
  import os

  from ml_collections.config_flags import config_flags

  for name in list(flags.FLAGS):
    if not config_flags.is_config_flag(flags.FLAGS[name]):
      continue
    value = _config_file_arg(name, argv)
    if value is not None and not os.path.isfile(value.split(":", 1)[0]):
      return f"--{name}={value}: no such config file {value.split(':', 1)[0]!r}"
  return None


def config_file_value_error(message: str) -> str | None:
  """The last line of a ValueError that a config's `get_config(variant)` raised (an unknown
  variant: a bad flag value), which ml_collections wraps with its whole traceback; None for
  anything else (a TypeError there is a bug in the config file: keep its traceback)."""
  if "Error whilst parsing config file" not in message:
    return None
  last = message.strip().splitlines()[-1]
  return last.removeprefix("ValueError: ") if last.startswith("ValueError: ") else None


def _unknown_key_in_argv(argv) -> str | None:
  """The unknown `--NAME.KEY` of a config flag given as `--NAME=PATH` in argv, if any."""
  from ml_collections.config_flags import config_flags

  for name in list(flags.FLAGS):
    path = _config_file_arg(name, argv)
    if path is not None and config_flags.is_config_flag(flags.FLAGS[name]):
      message = unknown_config_key(path, _config_overrides(name, argv), name)
      if message is not None:
        return message
  return None


def fail(prog: str, message: str) -> None:
  _fail(prog, message)


def _fail(prog: str, message: str) -> None:
  print(f"{prog}: error: {message}", file=sys.stderr)
  raise SystemExit(2)


def run(main, argv=None, flags_parser=None) -> None:
  """`app.run(main)` for every CLI, plus:
  - help the user asked for exits 0 (absl exits 1, which reads as a failure in scripts and as
    "does not fit" for mio-aot);
  - a bad flag, a missing `--config` file, an unknown `--config.KEY` (with the closest valid
    keys), an unknown config variant, and every user error raised by `main`
    (mio_jax/errors.py) print one line and exit 2, without a traceback;
  - a storage failure mid-run (errors.StorageError: a checkpoint that could not be written)
    prints one line and exits 3;
  - a quiet console (mio_jax/cli/console.py; `--verbosity=1` for every library's INFO lines).
  """
  console.quiet_native_logs()
  _help_for_console_scripts(main.__module__)
  args = sys.argv if argv is None else argv
  prog = _prog_name(main.__module__, args)
  parse = flags_parser or flags.FLAGS

  def parse_or_fail(argv):
    missing = missing_config_file(argv)
    if missing and not asked_for_help(argv):
      _fail(prog, missing)
    try:
      return parse(argv)
    except flags.Error as e:
      if asked_for_help(argv):
        raise
      message = str(e)
      if "Error whilst parsing config file" in message:  # get_config raised: the whole traceback
        value_error = config_file_value_error(message)
        if value_error is None:
          raise
        message = f"{message.split(': ', 1)[0].removeprefix('flag ')}: {value_error}"
      _fail(prog, message)
    except (KeyError, AttributeError):  # ml_collections' lookup of a `--config.KEY` override
      message = _unknown_key_in_argv(argv)
      if message is None:  # every key exists: not the user's mistake, keep the traceback
        raise
      _fail(prog, message)

  def main_or_fail(argv):
    console.configure(flags.FLAGS.verbosity)
    try:
      return main(argv)
    except (errors.UserError, paths.PathError) as e:
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


class ArgumentParser(argparse.ArgumentParser):
  """argparse for the data_pipelines and benchmarks command lines, with mio's answer to a
  mistake: `PROG: error: …` on one line and exit 2, like the absl CLIs (argparse prints its whole
  usage block first; `--help` still shows it). An unknown flag is named with the closest known
  ones, before argparse would report a required flag it hides (`--outt=x` for `--out=x`)."""

  def error(self, message):
    _fail(self.prog, message)

  def parse_known_args(self, args=None, namespace=None):
    args = list(sys.argv[1:] if args is None else args)
    known = [o for action in self._actions for o in action.option_strings if o.startswith("--")]
    for arg in args[: args.index("--")] if "--" in args else args:  # after "--": not our flags
      name = arg.split("=", 1)[0]
      if name.startswith("--") and len(name) > 2 and not any(o.startswith(name) for o in known):
        self.error(f"unrecognized argument {arg}{_closest_flags(name, known)}")
    return super().parse_known_args(args, namespace)


def _closest_flags(name: str, known) -> str:
  import difflib

  # Without the shared "--", which would make every short flag look alike.
  close = difflib.get_close_matches(name[2:], [o[2:] for o in known], n=3, cutoff=0.6)
  return f" (did you mean {' or '.join('--' + c for c in close)}?)" if close else ""
