"""The documentation stays true: the code map (docs/code-map.md) names files and functions that exist, and every
command, flag, make target, extra and preset that README.md shows exists."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def code_map_rows() -> list[tuple[str, list[str]]]:
    """(file, names) of every table row of docs/code-map.md whose file column is a .py path."""
    section = (ROOT / "docs" / "code-map.md").read_text(encoding="utf-8")
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


# --------------------------------------------------------------------------------------------------------------
# README's commands and flags


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def shell_lines(text: str) -> list[str]:
    """The commands of every ```bash block, continuation lines joined and comments dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                lines.append(line)
    return lines


def matebit_argv(line: str) -> list[str] | None:
    """The arguments after `matebit` (also `.venv/bin/matebit ...` and `torchrun ... -m matebit ...`), else None."""
    words = shlex.split(line)
    for i, w in enumerate(words):
        if w.endswith("bin/matebit") or w == "matebit" and (i == 0 or words[i - 1] == "-m"):
            return words[i + 1:]
    return None


def test_readme_shows_commands():
    argvs = [a for a in map(matebit_argv, shell_lines(readme())) if a is not None]
    shown = {a[0] for a in argvs}
    assert {"demo", "translate", "train", "eval", "serve", "models", "info"} <= shown, shown


def test_every_command_line_in_readme_parses():
    """Each `matebit ...` line of README's code blocks is accepted by the real parser: the command, its
    sub-command, every flag and every choice exist."""
    from matebit.cli import parse

    bad = []
    for line in shell_lines(readme()):
        argv = matebit_argv(line)
        if argv is None:
            continue
        try:
            parse(argv)
        except SystemExit as exc:
            bad.append((line, exc.code))
    assert not bad, bad


def all_option_strings() -> set[str]:
    """Every option string of every command and sub-command (hidden aliases included)."""
    import argparse

    from matebit.cli import COMMANDS, build_parser

    found: set[str] = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        found.update(parser._option_string_actions)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    for name in COMMANDS:
        walk(build_parser(name))
    return found


def test_every_flag_readme_names_exists():
    """Flags named in README's prose (`--flag ...` in backquotes) belong to some command."""
    named = set(re.findall(r"`[^`]*?(--[a-z][a-z0-9-]*)", readme()))
    assert named, "README names no flags"
    missing = sorted(named - all_option_strings() - {"--no-deps"})  # pip's own, in the install steps
    assert not missing, missing


def test_readme_make_targets_extras_and_presets_exist():
    text = readme()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for line in shell_lines(text):
        if line.startswith("make "):
            target = line.split()[1]
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"Makefile has no target {target}"
    import tomllib

    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"])
    for group in re.findall(r"'\.\[([a-z,]+)\]'", text):
        assert set(group.split(",")) <= extras, group
    # the preset table lists exactly the presets `matebit info` shows (the face presets included)
    import contextlib
    import io

    from matebit.cli import run

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run(["info"]) == 0
    listed = {line.split()[0] for line in out.getvalue().split("presets:\n", 1)[1].splitlines()
              if line.startswith("  ")}
    table = text.split("| preset |", 1)[1].split("\n\n", 1)[0]
    cells = [row.split("|")[1] for row in table.splitlines()[2:]]
    shown = set()
    for cell in cells:
        for name in re.findall(r"`([a-z0-9-]+)`", cell):
            shown.add(name)
        for lo, hi in re.findall(r"`mat(\d)`…`mat(\d)`", cell):
            shown |= {f"mat{n}" for n in range(int(lo), int(hi) + 1)}
    assert shown == listed, (sorted(shown - listed), sorted(listed - shown))
