"""Progress on stderr for every long loop of the package: training steps, data verification, conversion, translation.

    bar = progress(total, "translate", "images", quiet=args.quiet)
    for ...:
        bar.update(1)
        bar.set_postfix({"g_total": "0.53"})      # optional: shown on the bar, or at the end of the next line
    bar.close()

    for path in track(paths, "prepare canny", "images"):     # the same around an iterable
        ...

On a terminal it is a tqdm bar. When the stream is a file or a pipe (a log, CI, `2> log.txt`) it is a few compact
lines instead of tqdm's carriage-return redraw for every step: one at every 5 % of the work and at least every
30 s, never two within 5 s, and one at the end, e.g.
``train: 260/1300 steps (20%), 3.52 steps/s, ETA 4m55s; g_total 0.53 l1 0.12``. `quiet=True` prints nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")

EVERY_FRACTION = 0.05  # a line at every 5 % of the work ...
MAX_GAP_S = 30.0  # ... and at least every 30 s ...
MIN_GAP_S = 5.0  # ... but never two within 5 s (the last line excepted)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Lines:
    """The non-terminal form: ``desc: n/total unit (p%), rate unit/s, ETA t; postfix`` lines (module docstring)."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, file: TextIO | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file
        self.n = self._initial = initial
        self.postfix = ""
        self._step = max(1, int(total * EVERY_FRACTION))
        self._next = initial + self._step
        self._last_time = self._start_time = time.monotonic()
        self._last_n = initial
        self.lines = 0  # how many were printed (tests)

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n >= self.total:
            return  # close() prints the last line
        gap = time.monotonic() - self._last_time
        if (self.n >= self._next and gap >= MIN_GAP_S) or gap >= MAX_GAP_S:
            self._print()
            while self._next <= self.n:
                self._next += self._step

    def set_postfix(self, values: dict | None = None, refresh: bool = False, **kwargs) -> None:
        values = {**(values or {}), **kwargs}
        self.postfix = " ".join(f"{k} {v}" for k, v in values.items())

    def _print(self) -> None:
        now = time.monotonic()
        done, elapsed = self.n - self._last_n, now - self._last_time
        text = f"{self.desc}: {self.n}/{self.total} {self.unit} ({100 * self.n // max(1, self.total)}%)"
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            text += f", {rate:.{2 if rate < 10 else 1 if rate < 1000 else 0}f} {self.unit}/s"
            if self.n < self.total:
                text += f", ETA {_duration((self.total - self.n) / rate)}"
            else:
                text += f", {_duration(now - self._start_time)} in all"
        if self.postfix:
            text += f"; {self.postfix}"
        print(text, file=self.file or sys.stderr, flush=True)
        self._last_time, self._last_n = now, self.n
        self.lines += 1

    def close(self) -> None:
        if self.n > self._last_n:
            if self.n >= self.total:  # the closing line's rate is the whole run's
                self._last_time, self._last_n = self._start_time, self._initial
            self._print()
        self.n = self._last_n = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Silent:
    """`quiet=True`: the same methods, nothing printed."""

    n = 0

    def update(self, k: int = 1) -> None:
        pass

    def set_postfix(self, values: dict | None = None, refresh: bool = False, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress(total: int, desc: str, unit: str = "files", quiet: bool = False, initial: int = 0,
             file: TextIO | None = None):
    """An object with `update(k)`, `set_postfix(dict)` and `close()` (also a context manager) that shows progress
    on `file` (default stderr): a tqdm bar on a terminal, compact lines otherwise, nothing when `quiet`."""
    if quiet or total <= 0:
        return Silent()
    stream = file or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit.rstrip("s") or unit, file=stream,
                    dynamic_ncols=True)
    return Lines(total, desc, unit, initial, file)


def track(items: Iterable[T], desc: str, unit: str = "files", quiet: bool = False, total: int | None = None,
          file: TextIO | None = None) -> Iterator[T]:
    """Iterate `items` with a `progress` bar that advances by one per item and is closed at the end."""
    items = list(items) if total is None and not hasattr(items, "__len__") else items
    bar = progress(len(items) if total is None else total, desc, unit, quiet, file=file)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
