"""Builders shared by the issue-14 robustness tests: small image folders."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# A two-step run of the tiny preset at 32 px: what the training tests run.
TRAIN_SETTINGS = ["train.image_size=32", "train.batch_size=2", "train.steps=2", "train.checkpoint_every=2",
                  "train.log_every=1", "train.image_every=100000", "loss.early_steps=10", "train.num_workers=0"]


def sets(*items: str) -> list[str]:
    """--set arguments for `matebit train`."""
    return [x for s in items for x in ("--set", s)]


def edges(w: int, h: int) -> np.ndarray:
    arr = np.zeros((h, w), np.uint8)
    arr[h // 2, :] = 255
    arr[:, w // 3] = 255
    return arr


def gradient(w: int, h: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 128)], -1).astype(np.uint8)


def image_folder(folder: Path, names: list[str], size: tuple[int, int] = (48, 40), kind: str = "edges") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        arr = edges(*size) if kind == "edges" else gradient(*size)
        Image.fromarray(arr).save(folder / name)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def command_help(name: str) -> str:
    """`matebit NAME --help`, as text."""
    from matebit.cli import build_parser

    parser = build_parser(name)
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name].format_help()


def read_only_under(monkeypatch, part: str) -> None:
    """Make Path.mkdir fail as on a read-only file system for every path with a component named `part`."""
    import errno
    import os

    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if part in self.parts:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, host: str, origin: str | None = None, path: str = "/") -> int:
    """The status of GET `path` on 127.0.0.1:`port` with these Host (and Origin) headers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Host": host} | ({"Origin": origin} if origin else {})
    conn.request("GET", path, headers=headers)
    status = conn.getresponse().status
    conn.close()
    return status


def start_server(args: list, folder: Path, port: int, env: dict | None = None) -> subprocess.Popen:
    """`python -m matebit serve ARGS --port PORT` run in `folder` (its output in folder/serve.log), returned once it
    answers; a server that exits or takes more than 3 minutes fails the test with its log."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(folder / "serve.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "matebit", "serve", *map(str, args), "--port", str(port)],
                                cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while True:
        try:
            if http_get(port, f"127.0.0.1:{port}") == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"server did not start:\n{(folder / 'serve.log').read_text()}")
        time.sleep(0.5)
