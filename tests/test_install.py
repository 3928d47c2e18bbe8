"""The installable package (pyproject.toml): a wheel built from a copy of the sources, installed
with --no-deps into a folder outside the repository and used from a directory whose sys.path does
not hold the repository root (the .venv supplies the dependencies). Nothing is written into the
repository: setuptools builds in the copy."""

import ast
import configparser
import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("mio_jax", "data_pipelines", "configs")
SCRIPTS = {
  "mio-train": "mio_jax.cli.train:cli",
  "mio-generate": "mio_jax.cli.generate:cli",
  "mio-evaluate": "mio_jax.cli.evaluate:cli",
  "mio-export": "mio_jax.cli.export:cli",
  "mio-aot": "mio_jax.cli.aot:cli",
  "mio-tokenize": "data_pipelines.tokenize_jsonl:cli",
  "mio-demo-corpus": "data_pipelines.demo_corpus:cli",
}
# A flag each script's --help must list.
HELP_FLAG = {
  "mio-train": "--workdir",
  "mio-generate": "--prompt",
  "mio-evaluate": "--tasks",
  "mio-export": "--out",
  "mio-aot": "--topology",
  "mio-tokenize": "--manifest",
  "mio-demo-corpus": "--out",
}


def _run(cmd, **kw):
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
  assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-3000:])
  return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """-> (wheel path, install folder, working directory outside the repository)."""
  base = tmp_path_factory.mktemp("install")
  src = base / "src"
  src.mkdir()
  for name in ("pyproject.toml", "README.md", "LICENSE"):
    shutil.copy2(os.path.join(ROOT, name), src)
  for pkg in PACKAGES:
    shutil.copytree(
      os.path.join(ROOT, pkg), src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
  # Offline: the .venv's setuptools builds it (--no-build-isolation), nothing is downloaded.
  pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
  _run(
    pip
    + [
      "wheel",
      "--no-deps",
      "--no-build-isolation",
      "--no-index",
      "-w",
      str(base / "dist"),
      str(src),
    ]
  )
  (wheel,) = glob.glob(str(base / "dist" / "mio_jax-*.whl"))
  site = base / "site"
  _run(pip + ["install", "--no-deps", "--no-index", f"--target={site}", wheel])
  elsewhere = base / "elsewhere"
  elsewhere.mkdir()
  return wheel, str(site), str(elsewhere)


def _env(site):
  return {**os.environ, "PYTHONPATH": site}


def test_wheel_holds_every_module_and_the_console_scripts(installed):
  wheel = installed[0]
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = configparser.ConfigParser()
    entry_points.read_string(z.read(info).decode())
    metadata = z.read(info.replace("entry_points.txt", "METADATA")).decode()
  want = {
    os.path.relpath(p, ROOT)
    for pkg in PACKAGES
    for p in glob.glob(os.path.join(ROOT, pkg, "**", "*.py"), recursive=True)
  }
  assert want <= names, sorted(want - names)
  assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]
  assert dict(entry_points["console_scripts"]) == SCRIPTS
  import mio_jax

  assert f"\nVersion: {mio_jax.__version__}\n" in metadata
  assert "License-Expression: Apache-2.0" in metadata


# Two processes: the evaluate and export CLIs both define absl's --workdir at import.
@pytest.mark.parametrize(
  "modules",
  [
    "mio_jax.train.loop, mio_jax.generate, mio_jax.cli.evaluate",
    "mio_jax.cli.export, mio_jax.cli.aot, data_pipelines.tokenize_jsonl",
  ],
)
def test_import_from_outside_the_repository(installed, modules):
  _, site, elsewhere = installed
  code = (
    "import sys, os\n"
    f"import mio_jax, {modules}\n"
    f"root = {ROOT!r}\n"
    "assert all(os.path.realpath(p or '.') != root for p in sys.path), sys.path\n"
    "mods = [m for m in list(sys.modules.values())\n"
    "        if m.__name__.split('.')[0] in ('mio_jax', 'data_pipelines', 'configs')]\n"
    f"bad = [m.__name__ for m in mods if not (m.__file__ or '').startswith({site!r})]\n"
    "assert not bad, bad\n"
    "print(mio_jax.__version__, len(mods))\n"
  )
  proc = _run([sys.executable, "-c", code], cwd=elsewhere, env=_env(site))
  import mio_jax

  assert proc.stdout.split()[0] == mio_jax.__version__


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_script_help(installed, script):
  _, site, elsewhere = installed
  proc = _run([os.path.join(site, "bin", script), "--help"], cwd=elsewhere, env=_env(site))
  assert HELP_FLAG[script] in proc.stdout, proc.stdout[-2000:]


# The `python -m` entry point of each mio_jax console script.
PYTHON_M = {
  "mio-train": "mio_jax/main.py",
  "mio-generate": "mio_jax/generate/__main__.py",
  "mio-evaluate": "mio_jax/evaluate.py",
  "mio-export": "mio_jax/export.py",
  "mio-aot": "mio_jax/aot.py",
}


@pytest.mark.parametrize("script", sorted(PYTHON_M))
def test_python_m_and_script_run_the_same_cli(script):
  """`python -m mio_jax.X` and the console script run the same `cli()` with the same flags: the
  entry point only imports the script's CLI module and calls it."""
  module = SCRIPTS[script].split(":")[0]
  with open(os.path.join(ROOT, *module.split(".")) + ".py") as f:
    tree = ast.parse(f.read())
  assert any(
    isinstance(n, ast.FunctionDef) and n.name == "cli" and not n.args.args for n in tree.body
  ), module
  with open(os.path.join(ROOT, PYTHON_M[script])) as f:
    entry = ast.unparse(ast.parse(f.read()))
  package, name = module.rsplit(".", 1)
  assert f"from {package} import {name}" in entry and f"{name}.cli()" in entry, entry
