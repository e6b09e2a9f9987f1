"""The `matebit` subcommands, one module each: `add_arguments(parser)` and `main(args) -> int`.

Each is a thin layer of argument handling over the library; `matebit/cli.py` imports only the one that runs.
"""
