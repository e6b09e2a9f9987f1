"""Shared plumbing for the structure-map converters: optional dependencies and sizes (reading and writing images is
`matebit.io`'s)."""

from __future__ import annotations

import numpy as np

from matebit.errors import MissingDependencyError

def require(module: str, what: str, extra: str):
    """Import an optional dependency or fail with the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what} need {module}: pip install 'matebit[{extra}]'"
        ) from exc


def parse_size(size) -> tuple[int, int]:
    """(W, H) from an int, a (W, H) pair or a 'WxH' / 'N' string."""
    if isinstance(size, str):
        parts = size.lower().replace(",", "x").split("x")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"bad size {size!r}: use WxH, e.g. 176x256") from None
        size = vals[0] if len(vals) == 1 else tuple(vals)
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"bad size {size!r}: use (W, H)") from None
    if w < 1 or h < 1:
        raise ValueError(f"bad size {size!r}: both sides must be positive")
    return w, h
