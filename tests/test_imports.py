"""The directions of dependence that keep the package easy to change (architecture in docs/code-map.md).

Every `import` in a module counts, also those inside functions: a lazy import still ties two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import matebit

PACKAGE = Path(matebit.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _exists(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel.with_suffix(".py")).is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """matebit modules that `path` imports (a name imported from a package resolves to its submodule if any)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "matebit"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "matebit":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _exists(sub) else node.module)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_models_import_only_config_and_models():
    for name, deps in _graph().items():
        if name == "matebit.models" or name.startswith("matebit.models."):
            outside = {d for d in deps if d != "matebit.config" and not d.startswith("matebit.models")}
            assert not outside, f"{name} imports {sorted(outside)}"


def test_inference_never_imports_training_code():
    graph = _graph()
    seen, stack = set(), ["matebit.inference"]
    while stack:  # everything inference reaches, transitively
        for dep in graph.get(stack.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    bad = {d for d in seen if d == "matebit.train" or d.startswith(("matebit.losses", "matebit.commands"))}
    assert not bad, f"matebit.inference reaches {sorted(bad)}"


def test_no_import_cycles():
    graph = _graph()
    # A package's __init__ re-exporting its own submodules is not a cycle of meaning; drop parent -> child edges.
    edges = {m: {d for d in deps if d != m and not d.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycle = path[path.index(d):] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d in edges and not state.get(d):
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(edges):
        if not state.get(m):
            visit(m)
