"""The `matebit` subcommands, one module each: `add_arguments(parser)` and `main(args) -> int`.

Each is a thin layer of argument handling over the library; `matebit/cli.py` imports only the one that runs.
"""


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """A comma-separated list of integer seeds from the command line (at least one), or a one-line InputError."""
    from matebit.errors import InputError

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise InputError(f"{flag}: give at least one seed")
    return seeds
