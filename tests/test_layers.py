"""The package's layers, read from its imports (``ast``: module-level, function-level and
``TYPE_CHECKING`` imports alike): no import cycle between modules, and at most two imports from a
lower layer to a higher one. Layers, low to high (README, "Layout")."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "wsolctl"
LAYERS = [  # module prefixes, low to high
    ("wsolctl", "wsolctl.errors", "wsolctl.io", "wsolctl.progress", "wsolctl._lazy", "wsolctl.plugins",
     "wsolctl.metrics"),
    ("wsolctl.recipe",),
    ("wsolctl.data", "wsolctl.wsi"),
    ("wsolctl.models",),
    ("wsolctl.methods", "wsolctl.topdown"),
    ("wsolctl.engine",),
    ("wsolctl.results", "wsolctl.predict"),
    ("wsolctl.cli", "wsolctl.catalog", "wsolctl.__main__"),
]
MAX_UPWARD = 2


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
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), index)
    assert best[1] >= 0, f"{module} belongs to no layer; add it to LAYERS"
    return best[1]


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) for name, path in found.items()}


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


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_at_most_two_upward_imports():
    found = upward(graph())
    assert len(found) <= MAX_UPWARD, "imports from a lower layer to a higher one: " + ", ".join(
        f"{a} -> {b}" for a, b in found)


def test_the_analysis_sees_function_level_and_relative_imports(tmp_path):
    (tmp_path / "wsolctl" / "data").mkdir(parents=True)
    source = tmp_path / "wsolctl" / "data" / "m.py"
    source.write_text("import os\nfrom . import folds\n\ndef f():\n    from wsolctl.engine import pipeline\n")
    known = {"wsolctl.data.m", "wsolctl.data.folds", "wsolctl.engine", "wsolctl.engine.pipeline"}
    found = imports(source, known, tmp_path)
    assert found == {"wsolctl.data.folds", "wsolctl.engine.pipeline"}
    assert upward({"wsolctl.data.m": found}) == [("wsolctl.data.m", "wsolctl.engine.pipeline")]
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]

