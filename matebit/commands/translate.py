"""`matebit translate`: structure map(s) + exemplar(s) -> image(s), with a model folder from save_pretrained.

One pair:     matebit translate --model M --structure sketch.png --exemplar face.jpg --out out.png
A folder:     matebit translate --model M --structure maps/ --exemplar photos/ --out results/
              (each map gets the exemplar with the same stem; or give one exemplar file for all)
A pairs list: matebit translate --model M --pairs list.txt --out results/
              (lines "<structure file> <exemplar file>", paths relative to the list; quote paths with spaces;
              # comments. Not the training pairs.txt of stems, which `matebit train` reads.)

Before the model is loaded: every path is checked, no output may resolve to an input or to another output (real
paths, through symlinks; an output folder may not be or contain an input folder), output folders are made, and
temp files a killed run left there are removed. Each output is written atomically, so an error never leaves a
partial file; a full disk stops the run naming the file, and `--skip-existing` resumes it. Inputs are read at most
`--max-size` px on their longer side (before `--from-photo` conversion) and outputs are resized back to the
structure's size.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from matebit.config import COMPILE_MODES
from matebit.errors import InputError, NotWritableError, PathError, UserError, first_line
from matebit.io import (IMAGE_EXTENSIONS, FolderLock, atomic_write, check_outputs, clean_temp_files, list_images,
                        missing_reason, read_text)

DEFAULT_MAX_SIZE = 1024


@dataclass
class Job:
    structure: Path
    exemplar: Path
    out: Path
    warped: Path | None = None
    uncor: Path | None = None

    def outputs(self) -> list[Path]:
        return [p for p in (self.out, self.warped, self.uncor) if p is not None]


@dataclass
class Plan:
    jobs: list[Job]
    batched: bool
    folders: list[Path] = field(default_factory=list)  # batch output folders


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from matebit.convert import PHOTO_CONVERTERS

    parser.add_argument("--model", required=True, metavar="NAME|DIR",
                        help="a shipped model's name (`matebit models`), or a model folder written by training or "
                             "save_pretrained")
    parser.add_argument("--structure", metavar="FILE|DIR", help="structure map, or a folder of them")
    parser.add_argument("--exemplar", metavar="FILE|DIR",
                        help="exemplar image; with a structure folder, a folder (same stems) or one file for all")
    parser.add_argument("--pairs", metavar="FILE",
                        help="a pairs list: '<structure file> <exemplar file>' a line, relative to the list "
                             "(not the training pairs.txt of stems)")
    parser.add_argument("--out", required=True, metavar="FILE|DIR",
                        help="output image (its extension picks the format), or a folder in batch mode (PNG)")
    parser.add_argument("--from-photo", metavar="METHOD",
                        help=f"the structure inputs are photos: convert them first ({', '.join(PHOTO_CONVERTERS)})")
    parser.add_argument("--no-align", action="store_true",
                        help="face models: use the photos as they are, without aligning their faces to the model's "
                             "template")
    parser.add_argument("--paste-back", action="store_true",
                        help="face models with --from-photo: blend the translated face into the structure photo's "
                             "own frame (default: the aligned portrait at the model's size)")
    parser.add_argument("--save-warped", nargs="?", const="", metavar="PATH",
                        help="also save the exemplar warped by the last MAT block (default: <out>_warped.png, "
                             "or <out>/warped/ in batch mode)")
    parser.add_argument("--save-uncor", nargs="?", const="", metavar="PATH",
                        help="also save the unreliable-match weight map, white = no reliable match (default: "
                             "<out>_uncor.png, or <out>/uncor/ in batch mode)")
    parser.add_argument("--size-policy", choices=("trained", "pad", "resize"), default=None,
                        help="trained (default): run at the size the model was trained at, resized there and "
                             "back; pad: at the input's own size, padded to a multiple of 16 and cropped back; "
                             "resize: at --size, or the input's size rounded to a multiple of 16")
    parser.add_argument("--size", type=int, metavar="N", help="run at NxN (a multiple of 16, at least 32)")
    parser.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE, metavar="PX",
                        help=f"read inputs at most PX on their longer side, before any --from-photo conversion; "
                             f"outputs are resized back to the input's size (default {DEFAULT_MAX_SIZE}; 0: no cap)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: bf16 on CUDA and on CPUs with native bf16 (AMX), else fp32")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N")
    parser.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, metavar="MODE",
                        help="torch.compile the model (mode: default, reduce-overhead, max-autotune); the first "
                             "batch of each size compiles (tens of seconds on a CPU), later ones run faster: for large "
                             "folders")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads (default: the cores other processes leave free, re-chosen between batches)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="leave pairs whose outputs exist (resumes an interrupted batch)")
    parser.add_argument("--skip-errors", action="store_true",
                        help="continue past pairs that cannot be read; list them at the end (exit code 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr (batches)")


# --------------------------------------------------------------------------------------------------------------
# Planning: every path decided and checked before the model is loaded


def _image_format(path: Path) -> str:
    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise InputError(f"{path}: unknown image extension {path.suffix!r}; use .png or .jpg")
    return fmt


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():  # a FIFO or a device is named here too, before the model is loaded
        raise InputError(f"{path}: {missing_reason(path)} ({what})")
    return path


def _single_extra(arg: str | None, out: Path, suffix: str) -> Path | None:
    if arg is None:
        return None
    path = Path(arg) if arg else out.with_name(f"{out.stem}_{suffix}.png")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for --save-{suffix}")
    _image_format(path)
    return path


def _training_format(tokens: list[str]) -> bool:
    """A line of the training pairs.txt: stems (no file suffix), the first followed by one or more exemplars."""
    return len(tokens) >= 2 and all(not Path(t).suffix for t in tokens)


def _read_pairs(path: Path) -> list[tuple[Path, Path]]:
    text = read_text(path)
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            parts = shlex.split(line, comments=True)
        except ValueError as exc:
            raise InputError(f"{path}:{n}: {exc}") from None
        if not parts:
            continue
        s, e = ((path.parent / p) for p in parts[:2]) if len(parts) == 2 else (None, None)
        if _training_format(parts) and not (len(parts) == 2 and s.is_file() and e.is_file()):
            raise InputError(f"{path}: this is a training pairs.txt ('<stem> <exemplar stem> ...', read by "
                             f"`matebit train`); translate --pairs takes a pairs list: '<structure file> "
                             f"<exemplar file>' a line")
        if len(parts) != 2:
            raise InputError(f"{path}:{n}: expected '<structure file> <exemplar file>', got {line.strip()!r}")
        for p, what in ((s, "structure"), (e, "exemplar")):
            if not p.is_file():
                reason = missing_reason(p)
                raise InputError(f"{path}:{n}: {what} {p}: {reason}")
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
        raise InputError(f"{exemplar}: {missing_reason(exemplar)} (--exemplar, a file or folder)")
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
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only file system, a full disk, no permission
        raise PathError(f"{folder}: cannot make the output folder ({exc.strerror or first_line(exc)})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise NotWritableError(f"{folder}: folder is not writable")
    return folder


def _model_folder(args: argparse.Namespace) -> dict[Path, str]:
    model = Path(args.model)
    return {model: "--model"} if model.is_dir() else {}


def plan(args: argparse.Namespace, locks: contextlib.ExitStack | None = None) -> Plan:
    """Checked jobs and whether this is a batch run. Makes the output folders, locks them (into `locks`, which the
    caller holds while writing) and removes the temp files a killed run left in them; writes nothing else."""
    out = Path(args.out)
    if args.pairs:
        if args.structure or args.exemplar:
            raise InputError("--pairs replaces --structure and --exemplar; give one or the other")
        pairs = _read_pairs(Path(args.pairs))
        in_folders = _model_folder(args)
        inputs = {Path(args.pairs): "--pairs"}
    else:
        if not args.structure or not args.exemplar:
            raise InputError("give --structure and --exemplar (or --pairs FILE)")
        structure, exemplar = Path(args.structure), Path(args.exemplar)
        in_folders = _model_folder(args)
        if not structure.is_dir():
            _need_file(structure, "--structure")
            _need_file(exemplar, "--exemplar")
            if out.is_dir():
                raise InputError(f"{out}: is a folder; give an output file name for a single pair")
            _image_format(out)
            warped = _single_extra(args.save_warped, out, "warped")
            uncor = _single_extra(args.save_uncor, out, "uncor")
            outputs = {"--out": out, "--save-warped": warped, "--save-uncor": uncor}
            outputs = {k: v for k, v in outputs.items() if v is not None}
            check_outputs(outputs, {structure: "--structure", exemplar: "--exemplar"}, in_folders=in_folders)
            for p in outputs.values():
                _writable_folder(p.parent)
                clean_temp_files(p.parent, p.name)
            return Plan([Job(structure, exemplar, out, warped, uncor)], False)
        pairs = _batch_pairs(structure, exemplar)
        in_folders[structure] = "--structure"
        if exemplar.is_dir():
            in_folders[exemplar] = "--exemplar"
        inputs = {}

    if out.suffix.lower() in IMAGE_EXTENSIONS and not out.is_dir():
        raise InputError(f"{out}: a batch writes a folder of images, but --out names an image file; give a folder")
    # Outputs are named after the structure; when a stem repeats (one map, several exemplars) both stems are used.
    stems = [s.stem for s, _ in pairs]
    names = stems if len(set(stems)) == len(stems) else [f"{s.stem}__{e.stem}" for s, e in pairs]
    first: dict[str, tuple[Path, Path]] = {}
    for pair, n in zip(pairs, names):
        if n in first:
            raise InputError(f"{out / n}.png: two pairs would write this file ({first[n][0]} with {first[n][1]}, and "
                             f"{pair[0]} with {pair[1]}); list each pair once")
        first[n] = pair
    folders = {"--out": out}
    if args.save_warped is not None:
        folders["--save-warped"] = Path(args.save_warped) if args.save_warped else out / "warped"
    if args.save_uncor is not None:
        folders["--save-uncor"] = Path(args.save_uncor) if args.save_uncor else out / "uncor"
    for s, e in pairs:
        inputs.setdefault(s, "a structure map")
        inputs.setdefault(e, "an exemplar")
    # Every file the batch writes, apart from every input (e.g. a pairs list naming files in the output folder).
    check_outputs([(flag, folder / f"{n}.png") for flag, folder in folders.items() for n in names], inputs,
                  out_folders=folders, in_folders=in_folders)
    for flag, folder in folders.items():
        _writable_folder(folder)
        if locks is not None:  # held until the batch ends: a second batch here would take the first one's files
            locks.enter_context(FolderLock(folder, flag))
        removed = clean_temp_files(folder)
        if removed:
            print(f"matebit translate: removed {len(removed)} temp file(s) an interrupted run left in {folder}",
                  file=sys.stderr)
    jobs = [Job(s, e, out / f"{n}.png",
                folders["--save-warped"] / f"{n}.png" if "--save-warped" in folders else None,
                folders["--save-uncor"] / f"{n}.png" if "--save-uncor" in folders else None)
            for (s, e), n in zip(pairs, names)]
    return Plan(jobs, True, list(folders.values()))


# --------------------------------------------------------------------------------------------------------------
# Running


def _check_arguments(args: argparse.Namespace) -> str:
    """Refuse conflicting flags before anything is read (ranges: matebit/bounds.py); returns the size policy."""
    if args.size is not None:
        if args.size_policy == "pad":
            raise InputError("--size runs at NxN, --size-policy pad at the input's own size; give one of them")
        return "resize"
    return args.size_policy or "trained"


def _read_photos(job: Job, translator, args: argparse.Namespace):
    """A pair of photos made ready by the model's image processor (conversion, face alignment); and the size its
    output is restored to: the structure photo's own with --paste-back or without alignment, else None (the aligned
    portrait keeps the model's size)."""
    if job.structure.suffix.lower() == ".npy" and args.from_photo:
        raise InputError(f"{job.structure}: --from-photo converts photos; this is a .npy structure map already")
    pair = translator.processor.photos(job.structure, job.exemplar, args.from_photo, False if args.no_align else None,
                                       args.max_size or None)
    restored = None if pair.structure_align is not None and not args.paste_back else pair.structure_size
    if pair.structure_align is None and pair.exemplar_align is not None:
        restored = None  # a ready map with an aligned exemplar: the output has the map's frame
    return pair, restored


def _save(image, path: Path, size: tuple[int, int] | None = None) -> None:
    from matebit.image_processor import to_size

    image = to_size(image, size)  # read under --max-size: back to the input's size
    fmt = _image_format(path)
    if fmt == "JPEG":
        atomic_write(path, lambda tmp: image.save(tmp, format=fmt, quality=95))
    else:
        atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


def main(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as locks:  # the batch's output folders, locked until it ends
        return _run(args, locks)


def _run(args: argparse.Namespace, locks: contextlib.ExitStack) -> int:
    from matebit.image_processor import read_capped
    from matebit.inference import Translator
    from matebit.progress import progress

    policy = _check_arguments(args)
    if args.from_photo == "pose":
        raise InputError("--from-photo pose: pose maps are drawn from OpenPose JSON keypoints, not from photos; "
                         "make them with `matebit prepare pose` and pass them as --structure")
    from matebit.convert import PHOTO_CONVERTERS

    if args.from_photo is not None and args.from_photo not in PHOTO_CONVERTERS:
        raise InputError(f"--from-photo: unknown method {args.from_photo!r}; choose from {', '.join(PHOTO_CONVERTERS)}")
    work = plan(args, locks)
    jobs = work.jobs
    if args.skip_existing:
        jobs = [j for j in jobs if not all(p.exists() for p in j.outputs())]
        if len(jobs) < len(work.jobs):
            print(f"skipped {len(work.jobs) - len(jobs)} existing output(s) (--skip-existing)")
        if not jobs:
            print(f"nothing to do: every output exists in {args.out}")
            return 0
    from matebit import speed

    speed.configure_cpu_threads(args.threads)  # the Translator keeps a count given here
    translator = Translator.from_pretrained(args.model, device=args.device, dtype=args.dtype, compile=args.compile)
    governor = speed.thread_governor(translator.device) if work.batched else None
    aligned = translator.processor.is_face_model and not args.no_align
    if args.paste_back and not (aligned and args.from_photo):
        raise InputError("--paste-back needs --from-photo and a face model (one whose folder records a face "
                         "template), without --no-align")
    photo_mode = bool(args.from_photo) or aligned
    need_aux = any(j.warped or j.uncor for j in jobs)
    if need_aux and translator.config.n_mat_blocks == 0:
        raise InputError(f"{args.model}: this model has no MAT blocks, so no warped exemplar or uncor map to save")

    bar = progress(len(jobs), "translate", "images", quiet=args.quiet or not work.batched)
    failed: list[str] = []
    written = 0
    try:
        for start in range(0, len(jobs), args.batch_size):
            chunk = []
            for job in jobs[start:start + args.batch_size]:
                try:
                    if photo_mode:
                        structure, size = _read_photos(job, translator, args)
                        exemplar = None
                    else:
                        structure, size = read_capped(job.structure, "structure", translator, args.max_size)
                        exemplar, _ = read_capped(job.exemplar, "exemplar", translator, args.max_size)
                except UserError as exc:
                    if not args.skip_errors:
                        raise
                    failed.append(first_line(exc))
                    bar.update(1)
                    continue
                chunk.append((job, structure, exemplar, size))
            if not chunk:
                continue
            result = translator([c[1] for c in chunk], [c[2] for c in chunk], size_policy=policy,
                                batch_size=args.batch_size, size=args.size,
                                paste_back=args.paste_back)
            images = result.images
            try:
                for i, (job, _, _, size) in enumerate(chunk):
                    _save(images[i], job.out, size)
                    if job.warped and result.warped[i] is not None:
                        _save(result.warped[i], job.warped, size)
                    if job.uncor and result.uncor_weight[i] is not None:
                        _save(result.uncor_weight[i], job.uncor, size)
                    written += 1
            except PathError as exc:  # a full disk or a read-only folder: no use going on
                if not work.batched:
                    raise
                raise PathError(f"{first_line(exc)}; the {written} finished output(s) are kept; fix it and rerun "
                                f"with --skip-existing") from None
            bar.update(len(chunk))
            if governor is not None:
                governor.tick()
    finally:
        bar.close()
    if failed:
        for line in failed:
            print(f"matebit translate: skipped: {line}", file=sys.stderr)
        raise InputError(f"{len(failed)} of {len(jobs)} pair(s) could not be read and were skipped (listed "
                         f"above); {written} output(s) written to {args.out}")
    if not work.batched:
        print(jobs[0].out)
    else:
        print(f"wrote {written} image(s) to {args.out}")
    return 0
