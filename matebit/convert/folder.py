"""Converter registry and the folder driver (progress bar, atomic PNGs, per-file errors)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import cv2

from matebit.errors import ConvertError, first_line
from matebit.io import IMAGE_EXTENSIONS, check_outputs

from matebit.io import save_png
from .canny import canny
from .hed import hed
from .landmarks import landmarks
from .pose import output_stem as _pose_stem
from .pose import pose

CONVERTERS: dict[str, Callable] = {
    "canny": canny,
    "hed": hed,
    "landmarks": landmarks,
    "pose": pose,
}

# What each converter reads from a folder; anything else there is ignored.
_INPUT_EXTENSIONS = {"pose": (".json",)}
_STEM = {"pose": _pose_stem}


@dataclass
class FolderReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # existing outputs kept (overwrite=False)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input, one-line reason)


def list_inputs(name: str, src_dir: Union[str, os.PathLike], recursive: bool = False) -> list[Path]:
    if name not in CONVERTERS:
        raise ValueError(f"unknown converter {name!r}; choose from {', '.join(sorted(CONVERTERS))}")
    src = Path(src_dir)
    if not src.exists():
        raise ConvertError(f"{src}: no such file or folder")
    if not src.is_dir():
        raise ConvertError(f"{src}: not a folder")
    exts = _INPUT_EXTENSIONS.get(name, IMAGE_EXTENSIONS)
    it = src.rglob("*") if recursive else src.iterdir()
    # Anything so named but a folder is listed (a FIFO too), so that reading it names it instead of skipping it.
    files = sorted(p for p in it if p.suffix.lower() in exts and not p.name.startswith(".") and not p.is_dir())
    return files


def output_path(name: str, src_file: Path, src_dir: Path, dst_dir: Path) -> Path:
    stem = _STEM.get(name, lambda p: Path(p).stem)(src_file)
    return Path(dst_dir) / src_file.parent.relative_to(src_dir) / f"{stem}.png"


def convert_path(
    name: str,
    src: Union[str, os.PathLike],
    dst: Union[str, os.PathLike],
    *,
    overwrite: bool = True,
    skip_errors: bool = False,
    progress: bool = True,
    recursive: bool = False,
    **opts,
) -> FolderReport:
    """`convert_folder` for a folder; for a single file, convert it to `dst` (a .png path, or a folder that gets
    <stem>.png). Errors of a single file raise ConvertError naming it, whatever `skip_errors` says."""
    src, dst = Path(src), Path(dst)
    if src.is_dir() or not src.exists():
        return convert_folder(name, src, dst, recursive=recursive, overwrite=overwrite, skip_errors=skip_errors,
                              progress=progress, **opts)
    fn = CONVERTERS.get(name)
    if fn is None:
        raise ValueError(f"unknown converter {name!r}; choose from {', '.join(sorted(CONVERTERS))}")
    if dst.suffix.lower() == ".png":
        target = dst
    elif dst.suffix and not dst.is_dir():
        raise ConvertError(f"{dst}: maps are written as PNG; give a .png file name or a folder")
    else:
        target = output_path(name, src, src.parent, dst)
    check_outputs({"DST": target}, {src: "SRC"}, error=ConvertError)
    report = FolderReport()
    if not overwrite and target.exists():
        report.skipped.append(target)
        return report
    report.written.append(save_png(_convert_one(fn, src, opts), target))
    return report


def _convert_one(fn: Callable, src: Path, opts: dict) -> object:
    try:
        return fn(src, **opts)
    except ConvertError:
        raise
    except (ValueError, OSError, cv2.error) as exc:  # OpenCV's own errors are per-file failures too
        raise ConvertError(f"{src}: {first_line(exc)}") from exc


def convert_folder(
    name: str,
    src_dir: Union[str, os.PathLike],
    dst_dir: Union[str, os.PathLike],
    *,
    recursive: bool = False,
    overwrite: bool = True,
    skip_errors: bool = False,
    progress: bool = True,
    **opts,
) -> FolderReport:
    """Convert every input in src_dir with CONVERTERS[name] into dst_dir/<stem>.png.

    Sub-folders are mirrored when recursive. overwrite=False keeps existing outputs (resume).
    skip_errors: record failures in the report and go on; otherwise the first bad file raises
    ConvertError naming it. Extra keyword options go to the converter (pose needs size=(W, H)).
    """
    from matebit.progress import track

    fn = CONVERTERS.get(name)
    if fn is None:
        raise ValueError(f"unknown converter {name!r}; choose from {', '.join(sorted(CONVERTERS))}")
    src, dst = Path(src_dir), Path(dst_dir)
    files = list_inputs(name, src, recursive)
    if not files:
        exts = " ".join(_INPUT_EXTENSIONS.get(name, IMAGE_EXTENSIONS))
        raise ConvertError(f"{src}: no input files ({exts})")
    targets = [output_path(name, f, src, dst) for f in files]
    seen: dict[Path, Path] = {}
    for f, t in zip(files, targets):
        if t in seen:
            raise ConvertError(f"{f}: same output name as {seen[t]} ({t.name}); rename one of them")
        seen[t] = f
    # Pose maps (.png) may go beside their keypoint files (.json); other maps need a folder of their own, outside the
    # source when it is read recursively (a second run would convert its own outputs).
    check_outputs([("DST", t) for t in targets], {f: "SRC" for f in files}, error=ConvertError,
                  out_folders=None if name == "pose" else {"DST": dst},
                  in_folders=None if name == "pose" else {src: "SRC"}, nested=not recursive)

    report = FolderReport()
    for f, t in track(list(zip(files, targets)), f"prepare {name}", "images", quiet=not progress):
        if not overwrite and t.exists():
            report.skipped.append(t)
            continue
        try:
            out = _convert_one(fn, f, opts)
        except ConvertError as exc:
            if not skip_errors:
                raise
            report.failed.append((f, str(exc)))
            continue
        report.written.append(save_png(out, t))
    return report
