"""`matebit translate`: structure map(s) + exemplar(s) -> image(s), with a model folder from save_pretrained.

One pair:   matebit translate --model M --structure sketch.png --exemplar face.jpg --out out.png
A folder:   matebit translate --model M --structure maps/ --exemplar photos/ --out results/
            (each map gets the exemplar with the same stem; or give one exemplar file for all)
A list:     matebit translate --model M --pairs pairs.txt --out results/
            (lines "<structure> <exemplar>", paths relative to the list; quote paths with spaces; # comments)

Every input is checked and every output folder made before the model is loaded; each output is written
atomically, so an error never leaves a partial file.
"""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from matebit.errors import InputError, NotWritableError
from matebit.io import IMAGE_EXTENSIONS, atomic_write, list_images, open_image


@dataclass
class Job:
    structure: Path
    exemplar: Path
    out: Path
    warped: Path | None = None
    uncor: Path | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="model folder written by save_pretrained")
    parser.add_argument("--structure", metavar="FILE|DIR", help="structure map, or a folder of them")
    parser.add_argument("--exemplar", metavar="FILE|DIR",
                        help="exemplar image; with a structure folder, a folder (same stems) or one file for all")
    parser.add_argument("--pairs", metavar="FILE", help="list of '<structure> <exemplar>' lines (batch)")
    parser.add_argument("--out", required=True, metavar="FILE|DIR",
                        help="output image (its extension picks the format), or a folder in batch mode (PNG)")
    parser.add_argument("--from-photo", metavar="METHOD",
                        help="the structure inputs are photos: convert them first (canny, hed, landmarks)")
    parser.add_argument("--save-warped", nargs="?", const="", metavar="PATH",
                        help="also save the exemplar warped by the last MAT block (default: <out>_warped.png, "
                             "or <out>/warped/ in batch mode)")
    parser.add_argument("--save-uncor", nargs="?", const="", metavar="PATH",
                        help="also save the unreliable-match weight map, white = no reliable match (default: "
                             "<out>_uncor.png, or <out>/uncor/ in batch mode)")
    parser.add_argument("--size-policy", choices=("pad", "resize"), default="pad",
                        help="pad to a multiple of 16 and crop back (default), or resize there and back")
    parser.add_argument("--size", type=int, metavar="N", help="with --size-policy resize: run at NxN")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: bf16 on CUDA and on CPUs with native bf16 (AMX), else fp32")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N")


# --------------------------------------------------------------------------------------------------------------
# Planning: every path decided and checked before the model is loaded


def _image_format(path: Path) -> str:
    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise InputError(f"{path}: unknown image extension {path.suffix!r}; use .png or .jpg")
    return fmt


def _need_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{path}: no such file ({what})")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a file ({what})")
    return path


def _single_extra(arg: str | None, out: Path, suffix: str) -> Path | None:
    if arg is None:
        return None
    path = Path(arg) if arg else out.with_name(f"{out.stem}_{suffix}.png")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for --save-{suffix}")
    _image_format(path)
    return path


def _read_pairs(path: Path) -> list[tuple[Path, Path]]:
    _need_file(path, "--pairs")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read pairs file ({exc})") from None
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            parts = shlex.split(line, comments=True)
        except ValueError as exc:
            raise InputError(f"{path}:{n}: {exc}") from None
        if not parts:
            continue
        if len(parts) != 2:
            raise InputError(f"{path}:{n}: expected '<structure> <exemplar>', got {line.strip()!r}")
        s, e = (path.parent / p for p in parts)  # an absolute path stays absolute
        for p, what in ((s, "structure"), (e, "exemplar")):
            if not p.is_file():
                raise InputError(f"{path}:{n}: {what} {p} is not a file")
        pairs.append((s, e))
    if not pairs:
        raise InputError(f"{path}: no pairs listed")
    return pairs


def _batch_pairs(structure: Path, exemplar: Path) -> list[tuple[Path, Path]]:
    maps = list_images(structure)
    if not maps:
        raise InputError(f"{structure}: no images ({' '.join(IMAGE_EXTENSIONS)})")
    if exemplar.is_file():
        return [(s, exemplar) for s in maps]
    if not exemplar.is_dir():
        raise InputError(f"{exemplar}: no such file or folder (--exemplar)")
    by_stem: dict[str, Path] = {}
    for p in list_images(exemplar):
        if p.stem in by_stem:
            raise InputError(f"{exemplar}: two exemplars with the stem {p.stem!r} ({by_stem[p.stem].name}, {p.name})")
        by_stem[p.stem] = p
    missing = [s.name for s in maps if s.stem not in by_stem]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise InputError(f"{exemplar}: no exemplar with the same stem for {len(missing)} structure map(s) ({shown}); "
                         f"give one exemplar file to use it for all")
    return [(s, by_stem[s.stem]) for s in maps]


def _writable_folder(folder: Path) -> Path:
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise NotWritableError(f"{folder}: folder is not writable")
    return folder


def plan(args: argparse.Namespace) -> tuple[list[Job], bool]:
    """Checked jobs and whether this is a batch run. Makes the output folders; writes nothing else."""
    out = Path(args.out)
    if args.pairs:
        if args.structure or args.exemplar:
            raise InputError("--pairs replaces --structure and --exemplar; give one or the other")
        pairs = _read_pairs(Path(args.pairs))
    else:
        if not args.structure or not args.exemplar:
            raise InputError("give --structure and --exemplar (or --pairs FILE)")
        structure, exemplar = Path(args.structure), Path(args.exemplar)
        if not structure.is_dir():
            _need_file(structure, "--structure")
            _need_file(exemplar, "--exemplar")
            if out.is_dir():
                raise InputError(f"{out}: is a folder; give an output file name for a single pair")
            _image_format(out)
            warped = _single_extra(args.save_warped, out, "warped")
            uncor = _single_extra(args.save_uncor, out, "uncor")
            for p in (out, warped, uncor):
                if p is not None:
                    _writable_folder(p.parent)
            return [Job(structure, exemplar, out, warped, uncor)], False
        pairs = _batch_pairs(structure, exemplar)

    # Outputs are named after the structure; when a stem repeats (one map, several exemplars) both stems are used.
    stems = [s.stem for s, _ in pairs]
    names = stems if len(set(stems)) == len(stems) else [f"{s.stem}__{e.stem}" for s, e in pairs]
    if len(set(names)) != len(names):
        raise InputError("two pairs would write the same output file; list each pair once")
    _writable_folder(out)
    warped_dir = _writable_folder(Path(args.save_warped) if args.save_warped else out / "warped") \
        if args.save_warped is not None else None
    uncor_dir = _writable_folder(Path(args.save_uncor) if args.save_uncor else out / "uncor") \
        if args.save_uncor is not None else None
    jobs = [Job(s, e, out / f"{n}.png",
                warped_dir / f"{n}.png" if warped_dir else None,
                uncor_dir / f"{n}.png" if uncor_dir else None) for (s, e), n in zip(pairs, names)]
    return jobs, True


# --------------------------------------------------------------------------------------------------------------
# Running


def _converter(method: str):
    try:
        from matebit.convert import CONVERTERS
    except ImportError as exc:
        raise InputError(f"--from-photo needs matebit.convert, which cannot be imported ({exc})") from None
    if method not in CONVERTERS:
        raise InputError(f"--from-photo: unknown method {method!r}; choose from {', '.join(sorted(CONVERTERS))}")
    return CONVERTERS[method]


def _save(image, path: Path) -> None:
    fmt = _image_format(path)
    if fmt == "JPEG":
        atomic_write(path, lambda tmp: image.save(tmp, format=fmt, quality=95))
    else:
        atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


def main(args: argparse.Namespace) -> int:
    from matebit.inference import Translator

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.size is not None and args.size_policy != "resize":
        raise InputError("--size is used only with --size-policy resize")
    jobs, batched = plan(args)
    convert = _converter(args.from_photo) if args.from_photo else None
    translator = Translator.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    need_aux = any(j.warped or j.uncor for j in jobs)
    if need_aux and translator.config.n_mat_blocks == 0:
        raise InputError(f"{args.model}: this model has no MAT blocks, so no warped exemplar or uncor map to save")

    progress = None
    if batched:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(jobs), desc="translate", unit="img", disable=None)
    try:
        for start in range(0, len(jobs), args.batch_size):
            chunk = jobs[start:start + args.batch_size]
            structures = []
            for job in chunk:
                if convert is None:
                    structures.append(job.structure)
                else:
                    structures.append(convert(open_image(job.structure)))
            result = translator(structures, [j.exemplar for j in chunk], size_policy=args.size_policy,
                                return_aux=need_aux, batch_size=args.batch_size, size=args.size)
            images = result.images if need_aux else result
            for i, job in enumerate(chunk):
                _save(images[i], job.out)
                if job.warped and result.warped[i] is not None:
                    _save(result.warped[i], job.warped)
                if job.uncor and result.uncor_weight[i] is not None:
                    _save(result.uncor_weight[i], job.uncor)
            if progress is not None:
                progress.update(len(chunk))
    finally:
        if progress is not None:
            progress.close()
    if not batched:
        print(jobs[0].out)
    else:
        print(f"wrote {len(jobs)} image(s) to {args.out}")
    return 0
