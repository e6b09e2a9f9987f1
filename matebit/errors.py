"""matebit's errors: one hierarchy under `MatebitError`.

The command line maps errors by class: a `UserError` is input the user can fix (a file, a folder, a value, a
config), so it prints its one-line message and exits 2; anything else is a bug and exits 1. A bare `ValueError` or
`OSError` from inside the library is therefore a bug: code that reads or writes a user's path raises one of the
classes below at that point, naming the path and the problem.

Where a class also derives from a built-in (`ValueError`, `FileNotFoundError`, ...), that is for callers of the
Python API who caught the built-in before the hierarchy existed.
"""


class MatebitError(Exception):
    """Base class of every error matebit raises on purpose."""


class UserError(MatebitError):
    """Input the user gave cannot be used; the message names it and the problem (the CLI exits 2)."""


# -- bad values and file contents -------------------------------------------------------------------------------


class InputError(UserError, ValueError):
    """A file or value given by the user cannot be used; the message names the file and the problem."""


class ConfigError(UserError, ValueError):
    """A configuration is malformed: unknown key, wrong type or impossible value."""


class InputSizeError(UserError, ValueError):
    """An input's height or width does not fit the network (not a multiple of its stride)."""


class ImageInputError(InputError):
    """An input image cannot be used; the message names it (path or 'structure[i]') and the reason."""


class UploadRefused(InputError):
    """An upload the web demo will not use; the message is meant for the page, as is."""


class CheckpointError(InputError):
    """A model folder or tensor file cannot be used; the message names the file and the problem."""


class ConvertError(InputError):
    """Bad input for a structure-map converter (unreadable file, no face found, malformed JSON, ...)."""


class DataError(InputError):
    """A data set problem; the message names the offending file and what is wrong with it."""


class MetricError(InputError):
    """A metric cannot be computed from the inputs it was given."""


class TrainingError(UserError):
    """Training cannot go on (a non-finite loss, a checkpoint that does not fit the run, a full disk, ...)."""


# -- paths, files that are not there, packages that are not installed -------------------------------------------


class PathError(UserError, OSError):
    """A path the user gave cannot be read or written (see the subclasses for the usual reasons)."""


class MissingPathError(PathError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class NotAFolderError(PathError, NotADirectoryError):
    """A path that must be a folder (or lie in one) is a file."""


class NotWritableError(PathError, PermissionError):
    """A folder the user named cannot be written."""


class MissingWeightsError(UserError, FileNotFoundError):
    """A pretrained weight file is not where it was looked for; the message says where to put it."""


class MissingDependencyError(UserError, ImportError):
    """An optional extra is not installed; the message carries the pip command."""


# -- stopping ---------------------------------------------------------------------------------------------------


class Terminated(BaseException):
    """SIGTERM arrived (`matebit train` raises it from its signal handler); the CLI ends like Ctrl-C (exit 130).

    A BaseException, so `except Exception` cleanup passes it on; not a KeyboardInterrupt, because CPython 3.11
    remembers a KeyboardInterrupt that leaves code run through `exec` (a dataclass being created during a lazy
    import, e.g. torch._dynamo) as unhandled and then ends the process by SIGINT (-2) even after the CLI caught it
    and returned 130 (test_item03_sigterm_ends_a_run_and_releases_its_lock sends SIGTERMs early in a run).
    """


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), for one-line error reports."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
