"""The lock of a training run folder: `<out>/.lock` while a run uses it (no torch here, so `matebit train` can check
it before its heavy imports).

The lock holds {"pid", "host", "start", "since"} of the run. It is created with its whole content at once (a hard
link of a complete temp file), so a reader never sees half a lock. A lock whose PID no longer runs on this host (or
runs as another process: the start time in /proc differs) is stale: a killed run's; it is reported and taken over.
A live lock, or one from another host, stops the second run naming the PID.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from matebit.errors import PathError, TrainingError

LOCK_NAME = ".lock"


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux /proc, in clock ticks since boot), to tell a reused PID apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_running(pid: int) -> bool:
    """Whether a process `pid` exists on this machine (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OSError, OverflowError):
        return False
    return True


def _running(pid: int, start: str | None) -> bool:
    if not pid_running(pid):
        return False
    now = _process_start(pid)
    return start is None or now is None or now == start


class RunLock:
    """`<out>/.lock` holding {"pid", "host", "start", "since"} while a run uses the folder (see the module doc)."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_NAME
        self.held = False

    def _write_new(self, record: dict) -> bool:
        """Create the lock with its whole content at once (a link of a complete temp file); False if it exists."""
        tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.{time.monotonic_ns()}")
        tmp.write_text(json.dumps(record))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create, then write
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(record))
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _holder(self) -> tuple[dict | None, str | None]:
        """(the holder if the lock is a live run's, else None; the lock's text, None if there is no lock)."""
        try:
            text = self.path.read_text()
            holder = json.loads(text)
            pid, host = int(holder["pid"]), str(holder["host"])
        except FileNotFoundError:
            return None, None  # released meanwhile
        except (OSError, ValueError, KeyError, TypeError):
            raise TrainingError(f"{self.path}: a run lock that cannot be read; if no `matebit train` uses "
                                f"{self.path.parent}, delete it") from None
        if host == socket.gethostname() and not _running(pid, holder.get("start")):
            return None, text  # stale: a killed run's
        return {**holder, "pid": pid, "host": host}, text

    def _refuse(self, holder: dict) -> TrainingError:
        since = f", since {holder['since']}" if holder.get("since") else ""
        other = "" if holder["host"] == socket.gethostname() else f"; if that run is gone, delete {self.path}"
        return TrainingError(f"{self.path}: the run folder is in use by PID {holder['pid']} on {holder['host']}"
                             f"{since} (another `matebit train`); wait for it or choose another --out{other}")

    def check(self) -> None:
        """Refuse at once if a live run holds the folder (takes nothing: `acquire` does, and reports stale locks)."""
        holder, _ = self._holder() if self.path.exists() else (None, None)
        if holder is not None:
            raise self._refuse(holder)

    def acquire(self) -> None:
        """Take the lock: the run's first write, so an unwritable run folder is said here, naming it."""
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                created = self._write_new(me)
            except OSError as exc:  # a read-only file system, a full disk, no permission
                raise PathError(f"{self.path.parent}: cannot write the run folder "
                                f"({exc.strerror or exc})") from None
            if created:
                self.held = True
                return
            holder, text = self._holder()
            if holder is not None:
                raise self._refuse(holder)
            try:
                if text is None or self.path.read_text() != text:
                    continue  # released, or taken by another run meanwhile: look again
            except FileNotFoundError:
                continue
            stale = json.loads(text)
            print(f"matebit train: note: {self.path}: a stale lock of PID {stale['pid']} on {stale['host']}, "
                  f"which no longer runs (a killed run); taking it over", file=sys.stderr)
            self.path.unlink(missing_ok=True)
        raise TrainingError(f"{self.path}: could not take the run lock; another run keeps taking it")

    def release(self) -> None:
        if not self.held:
            return
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass
        self.held = False
