"""The package's import graph: no cycles (imports inside functions count) and no module
taking another module's private names."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sde_gen"


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: pathlib.Path, modules: dict) -> list[tuple[str, list[str]]]:
    """`(imported module, names taken)` for every import in the file, at any depth
    (`if TYPE_CHECKING:` blocks excepted: they never run)."""
    tree = ast.parse(path.read_text())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("sde_gen")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("sde_gen"):
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            out.append((target, [n for n in names if f"{target}.{n}" not in modules]))
            out += [(m, []) for m in submodules]
    return out


def _graph():
    modules = _modules()
    edges = {m: set() for m in modules}
    private = []
    for name, path in modules.items():
        for target, names in _imports(name, path, modules):
            if target not in modules or target == name:
                continue
            # a submodule importing its own package's __init__ is how Python loads it
            if name.startswith(target + ".") and modules[target].name == "__init__.py":
                continue
            edges[name].add(target)
            private += [f"{name} takes {target}.{n}" for n in names if n.startswith("_")]
    return edges, private


def _cycles(edges) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_import_graph_has_no_cycles():
    edges, _ = _graph()
    assert len(edges) > 40  # the walk found the package
    assert _cycles(edges) == []


def test_no_module_imports_another_modules_private_names():
    _, private = _graph()
    assert private == []


def test_cycle_finder_finds_a_planted_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_only_config_reads_ml_collections():
    readers = sorted(
        name
        for name, path in _modules().items()
        if "ml_collections" in path.read_text() and "import ml_collections" in path.read_text()
    )
    assert readers == ["sde_gen.experiments.config"]
