"""The package's layers, read from its imports (``ast``: module-level, function-level and
``TYPE_CHECKING`` imports alike): no import cycle and no import from a lower layer to a higher one,
between modules and between packages (``wsolctl.data`` stands for every module in it; a top-level
module stands for itself). Layers, low to high (README, "Layout")."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wsolctl"
PACKAGE_NAME = "wsolctl"  # in LAYERS: the package's own __init__ only (as a prefix it would match every module)
LAYERS = [  # module prefixes, low to high
    (PACKAGE_NAME, "wsolctl.errors", "wsolctl.io", "wsolctl.progress", "wsolctl._lazy", "wsolctl.executors", "wsolctl.plugins",
     "wsolctl.selection", "wsolctl.metrics"),
    ("wsolctl.recipe",),
    ("wsolctl.wsi",),
    ("wsolctl.data",),
    ("wsolctl.backbones", "wsolctl.models"),
    ("wsolctl.methods", "wsolctl.explain", "wsolctl.annotators"),
    ("wsolctl.engine",),
    ("wsolctl.results", "wsolctl.predict", "wsolctl.tracking"),
    ("wsolctl.pipeline",),
    ("wsolctl.cli", "wsolctl.catalog", "wsolctl.__main__"),
]


def module_name(path: Path, root: Path = PACKAGE.parent) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str], root: Path = PACKAGE.parent) -> set[str]:
    """The package modules ``path`` imports anywhere in its body (``from x import y`` counts ``x.y``
    when ``x.y`` is a module)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
    return {m for m in out if m in known and m != name}


def layer(module: str) -> int:
    best = (-1, -1)
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            below = prefix != PACKAGE_NAME and module.startswith(prefix + ".")
            if (module == prefix or below) and len(prefix) > best[0]:
                best = (len(prefix), index)
    assert best[1] >= 0, f"{module} belongs to no layer; add it to LAYERS"
    return best[1]


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) for name, path in found.items()}


def package(module: str) -> str:
    """The package a module belongs to: ``wsolctl.<folder>``, or the module itself at the top."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else module


def packages(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph folded onto packages (imports inside one package dropped)."""
    out: dict[str, set[str]] = {}
    for a, targets in edges.items():
        out.setdefault(package(a), set()).update(package(b) for b in targets if package(b) != package(a))
    return out


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for child in sorted(edges.get(node, ())):
            if state.get(child) == 1:
                return stack[stack.index(child):] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[node] = 2
        stack.pop()
        return []

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in edges.items() for b in targets if layer(b) > layer(a))


def test_every_module_has_a_layer():
    for name in modules():
        layer(name)


def test_a_module_outside_every_layer_has_none():
    with pytest.raises(AssertionError, match="wsolctl.nowhere belongs to no layer"):
        layer("wsolctl.nowhere")
    assert layer("wsolctl") == 0 and layer("wsolctl.data.folds") == LAYERS.index(("wsolctl.data",))


def test_no_import_cycles_between_modules_or_packages():
    for edges in (graph(), packages(graph())):
        cycle = find_cycle(edges)
        assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_no_import_back_up_the_layers():
    for edges in (graph(), packages(graph())):
        found = upward(edges)
        assert not found, "imports from a lower layer to a higher one: " + ", ".join(f"{a} -> {b}" for a, b in found)


def test_the_analysis_sees_function_level_and_relative_imports(tmp_path):
    (tmp_path / "wsolctl" / "data").mkdir(parents=True)
    source = tmp_path / "wsolctl" / "data" / "m.py"
    source.write_text("import os\nfrom . import folds\n\ndef f():\n    from wsolctl import pipeline\n")
    known = {"wsolctl.data.m", "wsolctl.data.folds", "wsolctl.engine", "wsolctl.pipeline"}
    found = imports(source, known, tmp_path)
    assert found == {"wsolctl.data.folds", "wsolctl.pipeline"}
    assert upward({"wsolctl.data.m": found}) == [("wsolctl.data.m", "wsolctl.pipeline")]
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_packages_fold_modules_and_find_a_circle_no_module_cycle_shows():
    # data.a -> wsi.b and wsi.c -> data.d: no cycle between modules, a circle between packages
    edges = {"wsolctl.data.a": {"wsolctl.wsi.b"}, "wsolctl.wsi.c": {"wsolctl.data.d", "wsolctl.errors"}}
    assert not find_cycle(edges)
    folded = packages(edges)
    assert folded == {"wsolctl.data": {"wsolctl.wsi"}, "wsolctl.wsi": {"wsolctl.data", "wsolctl.errors"}}
    assert find_cycle(folded) == ["wsolctl.data", "wsolctl.wsi", "wsolctl.data"]
    assert upward(folded) == [("wsolctl.wsi", "wsolctl.data")]

