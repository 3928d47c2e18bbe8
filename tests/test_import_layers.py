"""The package's shape, as docs/architecture.md states it: every import of mio_jax (at the top of
a module or inside a function) goes down the layer order written in its "Layers" block, no
module imports configs/, data_pipelines/, benchmarks/ or tests/, no import cycle exists between
modules, and the top level holds only config.py, errors.py and the `python -m` entry points."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mio_jax"
OUTSIDE = ("configs", "data_pipelines", "benchmarks", "tests")
ENTRY_POINTS = {"main", "evaluate", "export", "aot"}
TOP_LEVEL = {"__init__", "config", "errors"} | ENTRY_POINTS
# Imports inside functions: only where the order of events needs them (a backend must not start
# before jax.distributed.initialize).
DEFERRED_OK = {"mio_jax.cli.train"}


def layer_order() -> list[list[str]]:
  """The ```layers block of docs/architecture.md: one layer a line, lowest first; names are
  relative to mio_jax."""
  text = (ROOT / "docs" / "architecture.md").read_text()
  block = re.search(r"```layers\n(.*?)```", text, re.S)
  assert block, "docs/architecture.md has no ```layers block"
  out = []
  for line in block.group(1).splitlines():
    names = line.split("#", 1)[0].split()
    if names:
      out.append(["mio_jax." + n for n in names])
  return out


def modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(ROOT).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out[name] = path
  return out


def imports(name: str, path: pathlib.Path, known: dict) -> list[tuple[str, int, bool]]:
  """(imported module, line, inside a function) for every import statement of the module."""
  tree = ast.parse(path.read_text())
  in_function = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
      in_function.update(id(n) for n in ast.walk(node) if n is not node)
  package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        up = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(up + ([base] if base else []))
      # `from pkg import module` imports the module; `from module import name` the module
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    else:
      continue
    out.extend((t, node.lineno, id(node) in in_function) for t in targets)
  return out


def owner(module: str, known: dict) -> str:
  """The module itself when it is one of ours, else its nearest enclosing package."""
  while module not in known and "." in module:
    module = module.rsplit(".", 1)[0]
  return module


def layer_of(module: str, order: list[list[str]]) -> int | None:
  best, best_len = None, -1
  for i, names in enumerate(order):
    for n in names:
      if (module == n or module.startswith(n + ".")) and len(n) > best_len:
        best, best_len = i, len(n)
  return best


def test_docs_state_every_package_in_one_layer():
  order = layer_order()
  stated = [n for names in order for n in names]
  assert len(stated) == len(set(stated)), f"a name is in two layers: {stated}"
  missing = sorted(m for m in modules() if m != "mio_jax" and layer_of(m, order) is None)
  assert not missing, f"modules in no layer of docs/architecture.md: {missing}"


def test_imports_only_go_down_the_layers():
  order, known = layer_order(), modules()
  bad = []
  for name, path in sorted(known.items()):
    here = 0 if name == "mio_jax" else layer_of(name, order)
    for target, line, deferred in imports(name, path, known):
      top = target.split(".")[0]
      where = f"{path.relative_to(ROOT)}:{line}"
      if top in OUTSIDE:
        bad.append(f"{where} imports {target}: mio_jax never imports {top}/")
      if top != "mio_jax":
        continue
      target = owner(target, known)
      there = 0 if target == "mio_jax" else layer_of(target, order)
      if there is None or there > here:
        bad.append(f"{where}: {name} (layer {here}) imports {target} (layer {there}), a higher one")
      if deferred and name not in DEFERRED_OK:
        bad.append(f"{where}: {name} imports {target} inside a function; import it at the top")
  assert not bad, "\n".join(bad)


def test_no_import_cycle_between_modules():
  known = modules()
  graph = {
    name: {owner(t, known) for t, _, _ in imports(name, path, known) if t.startswith("mio_jax")}
    - {name}
    for name, path in known.items()
  }
  # A package's __init__ runs before any of its modules: importing `a.b` from outside package `a`
  # also imports `a` (inside it, `a` is already being imported).
  for name in known:
    parent = name.rsplit(".", 1)[0]
    if "." not in name or parent == "mio_jax":
      continue
    for importer, deps in graph.items():
      if name in deps and importer != parent and not importer.startswith(parent + "."):
        deps.add(parent)
  state, cycles = {}, []

  def visit(node, stack):
    state[node] = "open"
    stack.append(node)
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == "open":
        cycles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
      elif dep not in state:
        visit(dep, stack)
    stack.pop()
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node, [])
  assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_top_level_holds_only_config_errors_and_entry_points():
  top = {p.stem for p in PACKAGE.glob("*.py")}
  assert top == TOP_LEVEL, f"unexpected top-level modules: {sorted(top - TOP_LEVEL)}"
  for name in sorted(ENTRY_POINTS) + ["generate/__main__"]:
    lines = (PACKAGE / f"{name}.py").read_text().strip().splitlines()
    assert len(lines) <= 12, f"mio_jax/{name}.py is an entry point: a few lines, got {len(lines)}"


def test_the_checker_sees_a_violation(tmp_path):
  # The walk finds imports inside functions and resolves `from pkg import module`.
  source = "def f():\n  from mio_jax.cli import entry\n  from mio_jax import errors\n"
  path = tmp_path / "probe.py"
  path.write_text(source)
  known = modules()
  found = imports("mio_jax.model.probe", path, known)
  assert ("mio_jax.cli.entry", 2, True) in found and ("mio_jax.errors", 3, True) in found
  order = layer_order()
  assert layer_of("mio_jax.cli.entry", order) > layer_of("mio_jax.model.probe", order)
