"""The package's layers, enforced: each module imports only from its own layer or the layers below it, the core
imports neither pyspark nor mlflow, the Spark layer never imports the MLflow layer, and no module is in an import
cycle. Function-level imports count too (a lazy import is still a dependency), and each function-level import of
a manymodels module says in a comment why it is lazy.

Layers, lowest first (docs/architecture.md draws them):
    errors, settings, locations -> core -> storage -> spark -> tracking -> databricks -> studies -> api -> jobs
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "manymodels"
LAYERS = [("errors", "settings", "locations"), ("core",), ("storage",), ("spark",), ("tracking",), ("databricks",),
          ("studies",), ("api",), ("jobs",)]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
OUTSIDE = {"manymodels", "manymodels._compat"}  # the package's front door and the old-name aliases: above every layer
# The one upward import, deliberate: a fold ensemble's fit() accepts a Spark DataFrame and hands it to the Spark
# layer, imported only then, so an ensemble unpickles where pyspark is not installed (a serving endpoint).
ALLOWED_UPWARD = {("manymodels.core.ensemble", "manymodels.spark.ensembles")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(imported module, line, is function-level, the line's text and the one above) for every import."""
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    top = {id(node) for node in tree.body}
    me = _module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = me.split(".")
                pkg = parts[: -node.level] if path.name != "__init__.py" else parts[: len(parts) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        first = node.lineno - 1  # the comment may stand above a block of imports
        while first > 0 and lines[first - 1].strip().startswith(("from ", "import ")):
            first -= 1
        context = " ".join(lines[max(first - 1, 0): node.end_lineno])
        for name in names:
            yield name, node.lineno, id(node) not in top, context


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _internal(name: str) -> str | None:
    """The package module an imported name refers to (``manymodels.core.keys.key_text`` -> its module)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _layer(module: str) -> int | None:
    if module in OUTSIDE:
        return None
    return RANK[module.split(".")[1]]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, *_ in _imports(path):
            target = _internal(name) if name.startswith("manymodels") else None
            if target and target != module and not module.startswith(target + "."):  # a package's own __init__
                graph[module].add(target)
    return graph


def test_every_module_belongs_to_a_layer():
    unplaced = [m for m in MODULES if m not in OUTSIDE and m.split(".")[1] not in RANK]
    assert not unplaced, f"modules outside the layers: {unplaced}; put them in a layer's folder"


def test_each_layer_imports_only_from_itself_and_below():
    bad = []
    for module, targets in _graph().items():
        if module in OUTSIDE:
            continue
        for target in targets:
            if target in OUTSIDE:
                bad.append(f"{module} -> {target} (the package's front door is for users, not for layers)")
            elif _layer(target) > _layer(module) and (module, target) not in ALLOWED_UPWARD:
                bad.append(f"{module} -> {target}")
    assert not bad, "imports reaching up a layer:\n" + "\n".join(sorted(bad))


@pytest.mark.parametrize("layer, forbidden", [
    ("core", ("pyspark", "mlflow", "databricks")),
    ("storage", ("pyspark", "mlflow", "databricks")),
    ("spark", ("mlflow", "manymodels.tracking", "databricks.sdk")),
    ("errors", ("pyspark", "mlflow")),
    ("settings", ("pyspark", "mlflow")),
    ("locations", ("pyspark", "mlflow")),
])
def test_layer_never_imports(layer, forbidden):
    found = [f"{m}:{line} imports {name}" for m, p in MODULES.items() if m.split(".")[1:2] == [layer]
             for name, line, _, _ in _imports(p) if name.split(".")[0] in forbidden or name.startswith(forbidden)]
    assert not found, "\n".join(found)


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"modules in import cycles: {cycles}"


def test_function_level_imports_of_the_package_say_why():
    """A lazy import keeps ``import manymodels`` (or a CLI command) cheap, or mlflow/pyspark out of a process that
    does not need it; anything else belongs at the top of the module."""
    silent = [f"{m}:{line}" for m, p in MODULES.items() for name, line, lazy, context in _imports(p)
              if lazy and name.startswith("manymodels") and "#" not in context]
    assert not silent, "function-level imports without a comment saying why:\n" + "\n".join(sorted(set(silent)))


def test_private_helpers_stay_in_their_module():
    """A name starting with ``_`` is its module's business: other modules use public names."""
    used = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("manymodels."):
                used += [f"{module} imports {node.module}.{a.name}" for a in node.names
                         if a.name.startswith("_") and not a.name.startswith("__")]
    assert not used, "\n".join(used)


def test_the_version_is_declared_once_for_the_package_and_the_wheel():
    import tomllib

    from manymodels.settings import VERSION

    project = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())["project"]
    assert project["version"] == VERSION
