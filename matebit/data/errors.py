"""The one error type of the data layer."""


class DataError(ValueError):
    """A data set problem; the message names the offending file and what is wrong with it."""
