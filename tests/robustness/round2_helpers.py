"""Helpers of the issue-35 tests (the second hostile run): running a command, its one error line, FIFOs that must
not be waited on."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from pathlib import Path

from matebit.cli import run


def cli(capsys, *argv) -> tuple[int, str, str]:
    """`matebit ARGV` in this process: (exit code, stdout, stderr)."""
    code = run([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str, command: str) -> str:
    """The one error line of `matebit COMMAND` (a progress bar or notes may stand above it): no traceback, no
    internal error."""
    assert "Traceback" not in err, err
    lines = [x for x in err.strip().splitlines() if x.startswith(f"matebit {command}:")]
    errors = [x for x in lines if ": error:" in x or "internal error" in x]
    assert len(errors) == 1 and errors[0].startswith(f"matebit {command}: error:"), err
    return errors[0]


def refused(capsys, command: str, *argv) -> str:
    """Run `matebit COMMAND ARGV`, which must fail in one line with exit code 2; the line."""
    code, _, err = cli(capsys, command, *argv)
    line = error_line(err, command)
    assert code == 2, (code, err)
    return line


@contextlib.contextmanager
def fifo(path: Path, wait: float = 5.0):
    """A FIFO at `path`. A reader that opens it is released after `wait` seconds (it then reads an empty file) so
    that code which waits on FIFOs fails a test instead of hanging it; yields a list that holds True once that
    happened."""
    os.mkfifo(path)
    released: list[bool] = []
    stop = threading.Event()

    def release() -> None:
        deadline = time.monotonic() + wait
        while not stop.is_set():
            if time.monotonic() > deadline:
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as exc:  # ENXIO: nobody reads it
                    if exc.errno != errno.ENXIO:
                        return
                else:
                    os.close(fd)
                    released.append(True)
                    return
            stop.wait(0.05)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield released
    finally:
        stop.set()
        thread.join()


def dead_pid() -> int:
    """The pid of a process that has exited."""
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
