"""Error types the command line turns into one-line messages (exit code 2 for bad input)."""


class MatebitError(Exception):
    """Base class for errors that are the user's input, not a bug: the CLI prints the message and exits 2."""


class InputError(MatebitError, ValueError):
    """A file or value given by the user cannot be used; the message names the file and the problem."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), for one-line error reports."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
