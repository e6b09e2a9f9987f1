"""Builders shared by the issue-14 robustness tests: small image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


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
