"""`matebit models`: the models shipped inside the package (name, parameters, trained size, structure, licence).

    matebit models            # a table
    matebit models --json     # the same as JSON

Each is a folder under matebit/weights/ that `Translator.from_pretrained(NAME)` and `matebit translate --model NAME`
load by name, offline; its README.md is the model card.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _params(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def main(args: argparse.Namespace) -> int:
    from matebit.io import format_table
    from matebit.weights import shipped_models, weights_root

    models = shipped_models()
    if args.json:
        print(json.dumps([{"name": m.name, "params": m.params, "dtype": m.dtype, "file_mb": round(m.file_mb, 2),
                           "trained_size": m.trained_size, "structure": m.structure, "licence": m.licence,
                           "description": m.description, "folder": str(m.folder)} for m in models], indent=1))
        return 0
    if not models:
        print(f"no model ships with this installation yet ({weights_root()} holds none); train one with "
              f"`matebit recipe faces` and write it there with `matebit export`")
        return 0
    head = ["name", "params", "weights", "trained at", "structure", "licence", "description"]
    body = [[m.name, _params(m.params), f"{m.file_mb:.1f} MB {m.dtype}",
             f"{m.trained_size}x{m.trained_size}" if m.trained_size else "?", m.structure, m.licence, m.description]
            for m in models]
    print(format_table(head, body, right=[False, True, True, True, False, False, False]))
    print()
    for m in models:
        print(f"{m.name}: {m.folder} (model card: {m.folder / 'README.md'})")
    return 0
