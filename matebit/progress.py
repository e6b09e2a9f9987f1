"""Progress on stderr for the commands that work through many files (translate, data verification).

On a terminal it is a tqdm bar; when stderr is a file or a pipe (a log, CI, `2> log.txt`) it is a few compact lines
instead of carriage-return redraws: one at every tenth of the work and one at the end, e.g.
``translate: 40/400 images``. `quiet=True` prints nothing.
"""

from __future__ import annotations

import sys
import time


class _Lines:
    """The non-terminal form: `desc: n/total unit` lines at each tenth (and at least 30 s apart until the end)."""

    def __init__(self, total: int, desc: str, unit: str):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self._next = max(1, total // 10)
        self._last_time = time.monotonic()

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n >= self.total:
            return  # close() prints the last line
        if self.n >= self._next or time.monotonic() - self._last_time > 30:
            self._print()
            while self._next <= self.n:
                self._next += max(1, self.total // 10)

    def _print(self) -> None:
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}", file=sys.stderr, flush=True)
        self._last_time = time.monotonic()

    def close(self) -> None:
        if self.n:
            self._print()
        self.n = 0


class _Silent:
    def update(self, k: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, desc: str, unit: str = "files", quiet: bool = False):
    """An object with `update(k)` and `close()`; see the module docstring for what it prints."""
    if quiet or total <= 0:
        return _Silent()
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit.rstrip("s") or unit, file=sys.stderr, dynamic_ncols=True)
    return _Lines(total, desc, unit)
