"""`matebit eval`: compute metrics on saved samples or on a model's translations of a data set, append them to
JSON lines and lay them out as the paper's Table 1 / Table 2 in Markdown.

  matebit eval --items DIR --out DIR                      an EvalSet folder (outputs/, exemplars/, targets/ ...)
  matebit eval --model NAME|DIR --data DIR --out DIR       translate the val pairs, save PNG samples, evaluate
  matebit eval report A.jsonl B.jsonl [--out table.md]    Markdown table from result files
  matebit eval moved --model NAME|DIR --data DIR --out DIR [--pairs N] [--seed S]
                                                          the moved-exemplar protocol (matebit/metrics/moved/):
                                                          validation pairs of different people, the exemplar moved
                                                          by a known similarity transform, exact landmark truth
  matebit eval moved --model NAME --photos DIR --out DIR [--held-out DATA] [--seeds 0,1,2]
                                                          the same on photos as a user gives them (landmark files
                                                          beside them): the face model's whole pipeline, alignment
                                                          included, scored in the photos' own pixels

Every run appends to OUT/metrics.jsonl and rewrites OUT/report.md from it. Weight files are checked before any
work starts, so a missing FID or VGG19 file fails at once with the file's name (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from matebit.errors import InputError, MissingPathError, MissingWeightsError, NotAFolderError

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="*", metavar="report FILE.jsonl | moved",
                        help="`report A.jsonl B.jsonl ...`: write the Markdown table of these result files "
                             "(to --out FILE, else stdout) instead of evaluating; `moved`: the moved-exemplar "
                             "protocol on --model and --data (needs landmarks)")
    src = parser.add_argument_group("what to evaluate (one of --items, or --model with --data)")
    src.add_argument("--items", metavar="DIR",
                     help="evaluation folder: outputs/ (PNG) plus any of exemplars/, structures/, targets/, "
                          "labels/, exemplar_labels/, landmarks/, exemplar_landmarks/, predicted_points/")
    src.add_argument("--model", metavar="NAME|DIR", help="a shipped model's name (`matebit models`), or a model "
                                                          "folder written by training or save_pretrained")
    src.add_argument("--data", metavar="DIR", help="paired-folder data set (images/, structure/, ...)")
    src.add_argument("--split", choices=("train", "val"), default="val")
    src.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N pairs of the split")
    src.add_argument("--size", type=int, metavar="N",
                     help="translate at NxN (default: the size of the split's first image)")
    src.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="model precision (bf16: autocast)")
    src.add_argument("--allow-jpeg", action="store_true",
                     help="with --items: accept JPEG outputs (noted in every result; JPEG shifts FID)")
    mv = parser.add_argument_group("moved-exemplar protocol (`matebit eval moved`)")
    mv.add_argument("--pairs", type=int, default=64, metavar="N",
                    help="ordered pairs of different people (default %(default)s; 0 = all)")
    mv.add_argument("--seed", type=int, default=0, help="fixes the pairs and the transforms (default %(default)s)")
    mv.add_argument("--photos", metavar="DIR",
                    help="instead of --data: photos with landmark files beside them (NAME.json or webmorph NAME.tem), "
                         "scored through the model's whole photo pipeline (conversion, face alignment)")
    mv.add_argument("--held-out", metavar="DATA",
                    help="with --photos: only the people a prepared face folder holds out for validation "
                         "(its meta.json split)")
    mv.add_argument("--seeds", metavar="LIST",
                    help="with --photos: comma-separated pair draws, reported as mean and sd over them "
                         "(default: --seed)")
    mv.add_argument("--from-photo", default="hed", metavar="METHOD",
                    help="with --photos: how structure maps are made from the photos (default %(default)s)")
    mv.add_argument("--no-align", action="store_true", help="with --photos: skip the face alignment")
    m = parser.add_argument_group("metrics")
    m.add_argument("--metrics", metavar="LIST",
                   help="comma-separated names (fid, kid, swd, texture, color, semantic, lpips, psnr, ssim, pck, "
                        "timing); default: the paper's fid,swd,texture,color,semantic, plus psnr,ssim with ground "
                        "truth, pck with landmarks and timing with --model")
    m.add_argument("--feature-network", choices=("hed-vgg16",),
                   help="use this named substitute for InceptionV3 (fid, kid) and VGG19 (texture, color, semantic); "
                        "results are then named e.g. fid[hed-vgg16]")
    m.add_argument("--fid-weights", metavar="FILE", help="pytorch-fid Inception weights (default: torch hub cache)")
    m.add_argument("--vgg19-weights", metavar="FILE", help="torchvision VGG19 weights (default: torch hub cache)")
    m.add_argument("--pck-rows", choices=("used", "masked", "full"), default="used",
                   help="which attention rows of the last MAT block PCK scores: used (default: the rows the block "
                        "aggregates with), masked (softmax of the ReLU-masked cosine) or full (unmasked)")
    m.add_argument("--timing-runs", type=int, default=10, metavar="N", help="timed batches (median is reported)")
    m.add_argument("--timing-warmup", type=int, default=3, metavar="N", help="untimed batches first")
    out = parser.add_argument_group("output")
    out.add_argument("--out", metavar="DIR|FILE",
                     help="evaluation: folder for metrics.jsonl (appended), report.md and samples/; "
                          "report: the Markdown file")
    out.add_argument("--run", metavar="NAME",
                     help="row label in the table (default: the items folder's name, a shipped model's name, or the "
                          "model folder's name; a folder called model by its parent's: runs/faces/model -> faces)")
    out.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    out.add_argument("--batch-size", type=int, default=8, metavar="N")
    out.add_argument("--digits", type=int, default=3, metavar="N", help="significant digits in the table")


# --------------------------------------------------------------------------------------------------------------
# Metric selection and the weight check


def _parse_metrics(text: str) -> list[str]:
    from matebit.metrics.registry import get_metric

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InputError("--metrics is empty")
    for n in names:
        try:
            get_metric(n)
        except KeyError as e:
            raise InputError(str(e).strip("'\"")) from None
    if len(set(names)) != len(names):
        raise InputError(f"--metrics names a metric twice: {text}")
    return names


def _select(args: argparse.Namespace, has: dict[str, bool]) -> tuple[list[str], list[str]]:
    from matebit.metrics.evaluate import select_metrics

    requested = _parse_metrics(args.metrics) if args.metrics else None
    return select_metrics(requested, has, args.feature_network)


def _check_weights(names: list[str], args: argparse.Namespace) -> None:
    """Raise MissingWeightsError now, rather than after minutes of translating, for any absent weight file."""
    from matebit.metrics.features import find_fid_weights

    bases = {n for n in names if "[" not in n}  # a suffix means a substitute network
    if bases & {"fid", "kid"}:
        try:
            find_fid_weights(args.fid_weights)
        except MissingWeightsError as e:  # same message, in this command's flag names
            raise MissingWeightsError(str(e).replace("fid_weights=PATH", "--fid-weights FILE").replace(
                "feature_network='hed-vgg16'", "--feature-network hed-vgg16")) from None
    if bases & {"texture", "color", "semantic"}:
        from matebit.third_party import hub_checkpoint_path

        p = Path(args.vgg19_weights) if args.vgg19_weights else hub_checkpoint_path("vgg19")
        if not p.is_file():
            raise MissingWeightsError(
                f"{p}: VGG19 weights not found (needed by texture/color/semantic); put {p.name} there, pass "
                f"--vgg19-weights FILE, or use --feature-network hed-vgg16 for a labelled substitute")
    if any(n.endswith("[hed-vgg16]") for n in names):
        from matebit.third_party import find_hed_weights

        find_hed_weights()


def _metric_opts(names: list[str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    opts: dict[str, dict[str, Any]] = {}
    for n in names:
        if n in ("fid", "kid") and args.fid_weights:
            opts[n] = {"fid_weights": args.fid_weights}
        elif n in ("texture", "color", "semantic") and args.vgg19_weights:
            opts[n] = {"vgg19_weights": args.vgg19_weights}
    return opts


def _pck_lines(values: dict[str, float]) -> str:
    """PCK at every threshold beside the identity guess and the grid ceiling, indented under the pck line."""
    from matebit.metrics.registry import pck_table

    return "\n".join("    " + line for line in pck_table({"model": values}).splitlines())


# --------------------------------------------------------------------------------------------------------------
# Entry points


def _report(args: argparse.Namespace) -> int:
    from matebit.io import atomic_write_bytes, check_outputs, missing_reason
    from matebit.metrics.registry import report_markdown

    if args.action[0] != "report":
        raise InputError(f"unknown action {args.action[0]!r}; use `matebit eval report FILE.jsonl ...` or "
                         f"`matebit eval moved ...`")
    files = [Path(p) for p in args.action[1:]]
    if not files:
        raise InputError("`matebit eval report` needs at least one JSON lines file")
    for f in files:
        if not f.is_file():
            raise MissingPathError(f"{f}: {missing_reason(f)} (a results file)")
    if args.out:
        check_outputs({"--out": args.out}, {f: "a results file" for f in files})
    text = report_markdown(files, digits=args.digits)
    if args.out:
        atomic_write_bytes(Path(args.out), text.encode("utf-8"))
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def run_label(model: str, folder: Path) -> str:
    """The table's row label for a model when --run is not given: a shipped model's name; a folder called `model`
    (what `matebit train` writes, runs/faces/model) by its parent's name (faces); another folder by its name."""
    if not Path(model).expanduser().exists():  # a shipped model's name (resolve_model found no such path)
        return str(model)
    folder = folder.resolve()
    return folder.parent.name if folder.name == "model" and folder.parent.name else folder.name


def _check_args(args: argparse.Namespace) -> None:
    if args.items and (args.model or args.data):
        raise InputError("give either --items or --model with --data, not both")
    if not args.items and not (args.model and args.data):
        raise InputError("give --items DIR, or --model NAME|DIR with --data DIR (or use `matebit eval report ...`)")
    if not args.out:
        raise InputError("--out DIR is required (metrics.jsonl, report.md and samples go there)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotAFolderError(f"{out}: --out must be a folder for evaluation runs")
    _check_out_folder(args)


def _check_out_folder(args: argparse.Namespace) -> None:
    """--out (metrics.jsonl, report.md, samples/) apart from every folder evaluation reads."""
    from matebit.io import check_outputs

    reads = {args.items: "--items", args.data: "--data", args.model: "--model"}
    check_outputs(out_folders={"--out": args.out},
                  in_folders={p: what for p, what in reads.items() if p and Path(p).is_dir()})


def _held_out(data: str) -> list[str]:
    import json

    path = Path(data) / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        return [str(i) for i in meta["split"]["val"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a prepared face folder's meta.json with a validation split ({exc})") from None


def _moved_photos(args: argparse.Namespace) -> int:
    from matebit.inference import Translator, resolve_device
    from matebit.metrics.moved import format_photo_draws, landmarked_photos, run_photo_draws

    if not (args.model and args.out):
        raise InputError("`matebit eval moved --photos DIR` needs --model DIR|NAME and --out DIR")
    if args.pairs < 1:
        raise InputError("--pairs must be >= 1 with --photos")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotAFolderError(f"{out}: --out must be a folder")
    from matebit.commands import parse_seeds

    seeds = parse_seeds(args.seeds) if args.seeds else [args.seed]
    photos = landmarked_photos(args.photos, _held_out(args.held_out) if args.held_out else None)
    translator = Translator.from_pretrained(args.model, device=str(resolve_device(args.device)), dtype="fp32")
    info = {"model": str(args.model), "photos": str(args.photos), "held_out": args.held_out,
            "from_photo": args.from_photo, "align": not args.no_align}
    data = run_photo_draws(translator, photos, seeds, args.pairs, out, info, from_photo=args.from_photo,
                           align=False if args.no_align else None)
    summary = data["summary"]
    print(format_photo_draws(summary))
    print(f"wrote {out / 'moved-photos.json'}, {out / 'moved-photos.md'} and {out / 'pairs.png'}")
    return 0


def _moved(args: argparse.Namespace) -> int:
    from matebit.inference import resolve_device
    from matebit.io import atomic_write_bytes
    from matebit.metrics.moved import IMAGE_METRICS, MovedSettings, evaluate_moved, format_moved

    if len(args.action) != 1:
        raise InputError("`matebit eval moved` takes no file arguments; give --model, --data and --out")
    if args.photos:
        if args.data:
            raise InputError("give --data (a prepared folder) or --photos (photos with landmark files), not both")
        return _moved_photos(args)
    if not (args.model and args.data and args.out):
        raise InputError("`matebit eval moved` needs --model NAME|DIR, --data DIR and --out DIR")
    if args.pairs < 0:
        raise InputError("--pairs must be >= 0 (0 = every pair)")
    if not Path(args.data).is_dir():
        raise MissingPathError(f"{args.data}: data folder not found")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotAFolderError(f"{out}: --out must be a folder")
    _check_out_folder(args)
    names = list(IMAGE_METRICS)
    if args.metrics:
        names = [] if args.metrics.strip() == "none" else [n.strip() for n in args.metrics.split(",") if n.strip()]
        bad = [n for n in names if n not in IMAGE_METRICS]
        if bad:
            raise InputError(f"`eval moved` computes {', '.join(IMAGE_METRICS)} (or --metrics none), not {bad[0]!r}")
    network = args.feature_network or "hed-vgg16"  # VGG19 is not obtainable offline; the result names the network
    settings = MovedSettings(pairs=args.pairs or None, seed=args.seed, split=args.split)
    out.mkdir(parents=True, exist_ok=True)
    report = evaluate_moved(args.model, args.data, settings, size=args.size, feature_network=network,
                            image_metrics=names, device=str(resolve_device(args.device)), batch_size=args.batch_size,
                            figure=out / "pairs.png")
    atomic_write_bytes(out / "moved.json", (report.to_json() + "\n").encode())
    atomic_write_bytes(out / "moved.md", ("# Moved-exemplar evaluation\n\n" + format_moved(report, markdown=True)
                                          + "\n").encode())
    print(format_moved(report))
    print(f"wrote {out / 'moved.json'}, {out / 'moved.md'} and {out / 'pairs.png'}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.action and args.action[0] == "moved":
        return _moved(args)
    if args.action:
        return _report(args)
    _check_args(args)
    if args.metrics:
        _parse_metrics(args.metrics)  # a misspelt name fails before any file is read

    from matebit.inference import resolve_device
    from matebit.io import atomic_write_bytes
    from matebit.metrics.evalset import EvalSet
    from matebit.metrics.evaluate import evaluate
    from matebit.metrics.registry import report_markdown

    out = Path(args.out)
    jsonl = out / "metrics.jsonl"
    device = str(resolve_device(args.device))

    if args.items:
        items = EvalSet.from_folder(args.items, allow_jpeg_outputs=args.allow_jpeg)
        has = {"targets": bool(items.targets), "exemplars": bool(items.exemplars), "timing": False,
               "pck": bool(items.exemplar_landmarks) and bool(items.predicted_points)}
        names, skipped = _select(args, has)
        _check_weights(names, args)
        run = args.run or Path(args.items).resolve().name
        sets = {n: items for n in names}
        opts = _metric_opts(names, args)
        print(f"evaluating {len(items)} samples from {args.items}: {', '.join(names)}")
    else:
        from matebit.inference import Translator
        from matebit.metrics.samples import translate_split

        from matebit.weights import resolve_model

        model_dir, data = resolve_model(args.model), Path(args.data)  # a folder, or a shipped model's name
        for p, what in ((model_dir, "model"), (data, "data")):
            if not p.is_dir():
                raise MissingPathError(f"{p}: {what} folder not found")
        from matebit import speed

        speed.configure_cpu_threads()  # the command's choice; a Translator leaves threads to its caller
        translator = Translator.from_pretrained(model_dir, device=device, dtype=args.dtype)
        can_pck = translator.config.n_mat_blocks > 0 and any((data / d).is_dir() for d in ("keypoints", "landmarks"))
        has = {"targets": True, "exemplars": True, "timing": True, "pck": can_pck}
        names, skipped = _select(args, has)
        _check_weights(names, args)  # before translating anything
        run = args.run or run_label(args.model, model_dir)
        samples = out / "samples"
        split = translate_split(translator, args.data, samples, args.split, args.size, args.limit, args.batch_size,
                                want_pck="pck" in names, pck_rows=args.pck_rows)
        items, pck_set = split.items, split.pck_items
        print(f"translated {len(items)} {args.split} pairs at {split.size[0]}x{split.size[1]} -> {samples} (PNG)")
        if "pck" in names and pck_set is None:
            if args.metrics:
                raise InputError("pck: no translated pair has landmarks for both its structure and its exemplar "
                                 "(self-reference exemplars have none)")
            names.remove("pck")
            skipped.append("pck")
        sets = {n: (pck_set if n == "pck" else items) for n in names}
        opts = _metric_opts(names, args)
        if "pck" in names:
            opts["pck"] = {"rows": f"{args.pck_rows} (last MAT block)"}
        if "timing" in names:
            # The whole Translator call on one batch: input checks, padding, forward pass, PIL conversion.
            opts["timing"] = {"fn": split.timed, "batch_size": split.timing_batch_size, "precision": args.dtype,
                              "warmup": args.timing_warmup, "runs": args.timing_runs, "device": str(translator.device)}
    if skipped:
        print(f"skipped (inputs missing): {', '.join(skipped)}")

    results = []
    for n in names:  # one call per metric: PCK runs on the pairs that have landmarks
        results += evaluate(sets[n], [n], jsonl, run=run, device=device, batch_size=args.batch_size,
                            metric_opts={n: opts[n]} if n in opts else None)
    for r in results:
        extra = "; ".join(r.notes)
        print(f"  {r.name:22s} {r.value:.5g}  (n={r.num_samples}{'; ' + extra if extra else ''})")
        if r.metric == "pck":
            print(_pck_lines(r.values))
    table = report_markdown([jsonl], digits=args.digits)
    atomic_write_bytes(out / "report.md", table.encode("utf-8"))
    print(f"appended {len(results)} results to {jsonl}; wrote {out / 'report.md'}")
    return 0
