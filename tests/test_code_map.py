"""README's code map stays true: every file it names exists and defines every function / class named beside it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def code_map_rows() -> list[tuple[str, list[str]]]:
    """(file, names) of every table row in README's "Code map" section whose file column is a .py path."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Code map\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[\w/.]+\.py`", cells[1]):
            rows.append((cells[1].strip("`"), re.findall(r"`([\w.]+)`", cells[2])))
    return rows


def defined_names(tree: ast.Module) -> dict[str, ast.AST]:
    """Top-level functions, classes and assigned names of a module."""
    names: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            names.update({t.id: node for t in node.targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return names


def test_the_map_lists_the_equations_and_every_command():
    rows = code_map_rows()
    files = [f for f, _ in rows]
    assert len(rows) >= 20 and all(names for _, names in rows)
    assert {f"matebit/commands/{c}.py" for c in ("info", "demo", "train", "translate", "prepare", "eval", "bench",
                                                  "serve")} <= set(files)


def test_every_named_file_and_name_exists():
    missing = []
    for file, names in code_map_rows():
        path = ROOT / file
        if not path.is_file():
            missing.append(file)
            continue
        top = defined_names(ast.parse(path.read_text(encoding="utf-8")))
        for name in names:
            owner, _, member = name.partition(".")
            node = top.get(owner)
            if node is None or (member and not (isinstance(node, ast.ClassDef) and any(
                    getattr(n, "name", None) == member for n in node.body))):
                missing.append(f"{file}: {name}")
    assert not missing, missing
