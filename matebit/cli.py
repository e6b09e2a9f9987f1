"""The `matebit` command: a table of subcommands, each in its own module under `matebit.commands`.

Only the module of the command that runs is imported (help for `matebit --help` comes from the table), so one
command's heavy or optional dependencies never slow down or break another. A command module provides
`add_arguments(parser)` and `main(args) -> int`.

Errors are mapped by class (`matebit.errors`): a `UserError` is bad input, printed as one line, exit 2; anything
else is a bug: one line, exit 1, and the traceback only with MATEBIT_DEBUG=1.

CPU threads: the `matebit` process sets MATEBIT_THREADS=auto unless the user set it: the thread count is
chosen from the load at start (`matebit.speed.choose_threads`) and re-chosen while training or translating folders
(`matebit.speed.ThreadGovernor`); --threads N or OMP_NUM_THREADS fixes it. `run()` called in-process (tests,
notebooks) leaves the environment alone, so library runs keep the thread count their caller set.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from matebit import __version__
from matebit.errors import Terminated, UserError, first_line

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("matebit.commands.info", "print versions, the device found and the presets"),
    "demo": ("matebit.commands.demo",
             "generate synthetic data, train a small model, benchmark it, write an HTML report"),
    "train": ("matebit.commands.train", "train a model on a paired folder data set"),
    "translate": ("matebit.commands.translate", "translate structure maps with exemplars using a trained model"),
    "prepare": ("matebit.commands.prepare", "convert photos or keypoints into structure maps; build pairs files"),
    "eval": ("matebit.commands.eval", "compute metrics and write JSON lines and Markdown tables"),
    "bench": ("matebit.commands.bench", "benchmarks: synthetic quality"),
    "serve": ("matebit.commands.serve", "start the web demo"),
    "models": ("matebit.commands.models", "list the models shipped in the package"),
    "export": ("matebit.commands.export", "write a trained model folder as a shipped model (fp16/bf16, <= 25 MB)"),
    "recipe": ("matebit.commands.recipe", "recipes: `recipe faces` prepares data, trains, evaluates, writes the card"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; with `command`, that command's module is imported and its arguments added."""
    parser = argparse.ArgumentParser(
        prog="matebit", description="Exemplar-based image translation with MATEBIT (CVPR 2023).")
    parser.add_argument("--version", action="version", version=f"matebit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, add_help=name == command)
        if name == command:
            importlib.import_module(module).add_arguments(p)
            _quiet_everywhere(p)
    return parser


def _quiet_everywhere(parser: argparse.ArgumentParser) -> None:
    """One name for "no progress bar": every (sub)command with --no-progress also takes --quiet."""
    options = parser._option_string_actions
    if "--no-progress" in options and "--quiet" not in options:
        parser.add_argument("--quiet", dest=options["--no-progress"].dest, action="store_true",
                            help="no progress bar (the same as --no-progress)")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _quiet_everywhere(sub)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    # First pass: the command's name only. Its subparser has no arguments and no -h yet, so whatever follows the
    # name (including --help) is left for the second pass, which builds that one command's arguments.
    known, _ = build_parser().parse_known_args(argv)
    return build_parser(known.command).parse_args(argv)


def _chosen_actions(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, list[argparse.Action]]:
    """The command's scope ("prepare hed") and the arguments of the (sub)parsers that parsed `args`."""
    words, actions = [], []
    while True:
        sub = None
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                sub = action
            else:
                actions.append(action)
        chosen = getattr(args, sub.dest, None) if sub is not None else None
        if chosen is None or chosen not in sub.choices:
            return " ".join(words), actions
        words.append(chosen)
        parser = sub.choices[chosen]


def check_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Before the command runs: every numeric option within its range (`matebit.bounds`), and no empty value given
    (`--model ""` would otherwise mean the current folder); options whose default or flag alone means "" are left
    alone."""
    from matebit.bounds import check_args
    from matebit.errors import InputError

    scope, actions = _chosen_actions(parser, args)
    check_args(scope, args)
    for action in actions:
        if getattr(args, action.dest, None) == "" and "" not in (action.const, action.default):
            name = max(action.option_strings, key=len) if action.option_strings else action.metavar or action.dest
            raise InputError(f"{name}: empty; give a value")


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text))


def _warning_line(command: str):
    """Python's warning display as one line of the command's own, without the source file and line it came from."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"matebit {command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    return show


def run(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not args.command:
        build_parser().print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        check_values(build_parser(args.command), args)
        with warnings.catch_warnings():  # restores Python's own display after the command
            warnings.showwarning = _warning_line(args.command)
            return int(module.main(args) or 0)
    except (KeyboardInterrupt, Terminated):
        print(f"matebit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, never a bare traceback
        if os.environ.get("MATEBIT_DEBUG"):
            raise
        msg = first_line(exc)
        if isinstance(exc, UserError):
            print(f"matebit {args.command}: error: {msg}", file=sys.stderr)
            return 2
        if _out_of_memory(exc):  # a size the machine cannot hold: the user's to change, not a bug
            print(f"matebit {args.command}: error: not enough memory ({msg}); use a smaller --size or --batch-size",
                  file=sys.stderr)
            return 2
        print(f"matebit {args.command}: internal error ({type(exc).__name__}): {msg} "
              f"(set MATEBIT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def entry() -> None:
    os.environ.setdefault("MATEBIT_THREADS", "auto")  # this process's threads are matebit's to choose
    sys.exit(run())


if __name__ == "__main__":
    entry()
