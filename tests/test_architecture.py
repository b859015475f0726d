"""The tree shows the architecture: dependencies point inward and no module imports itself back."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "faceledger"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module's faceledger imports at module level (those for type checking only included:
    they are dependencies too)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        body = ast.parse(path.read_text()).body
        for node in body + [n for b in body if isinstance(b, ast.If) for n in b.body]:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("faceledger"):
                candidates = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
                found.add(next(c for c in candidates if c in modules))
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in modules)
        graph[name] = found - {name}
    return graph


def test_no_module_imports_itself_back() -> None:
    graph = _imports()
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for imported in graph[module]:
            if imported in path:
                cycles.append(path[path.index(imported) :] + [imported])
            elif imported not in done:
                visit(imported, path + [imported])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    # a package's __init__ re-exporting its own modules is no cycle of meaning
    cycles = [c for c in cycles if not all(m.startswith(c[0] + ".") or m == c[0] for m in c)]
    assert cycles == []


def test_nothing_inward_imports_the_wire_or_the_command_line() -> None:
    inner = (
        "faceledger.vision",
        "faceledger.store",
        "faceledger.index",
        "faceledger.keys",
        "faceledger.ledger",
        "faceledger.service",
        "faceledger.eval",
    )
    for module, imported in _imports().items():
        if module.startswith(inner):
            assert not {i for i in imported if i.startswith(("faceledger.api", "faceledger.cli"))}, module


def test_the_store_knows_no_service_key_or_model() -> None:
    for module, imported in _imports().items():
        if module.startswith("faceledger.store"):
            outward = {
                i
                for i in imported
                if i.startswith(("faceledger.service", "faceledger.vision", "faceledger.index", "faceledger.ledger"))
            }
            assert outward == set(), module
