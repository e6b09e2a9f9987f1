"""`matebit eval`: compute metrics on saved samples or on a model's translations of a data set, append them to
JSON lines and lay them out as the paper's Table 1 / Table 2 in Markdown.

  matebit eval --items DIR --out DIR                      an EvalSet folder (outputs/, exemplars/, targets/ ...)
  matebit eval --model DIR --data DIR --out DIR           translate the val pairs, save PNG samples, evaluate
  matebit eval report A.jsonl B.jsonl [--out table.md]    Markdown table from result files

Every run appends to OUT/metrics.jsonl and rewrites OUT/report.md from it. Weight files are checked before any
work starts, so a missing FID or VGG19 file fails at once with the file's name (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_arguments", "main"]

PAPER_METRICS = ("fid", "swd", "texture", "color", "semantic")
NETWORK_METRICS = {"fid", "kid", "texture", "color", "semantic"}  # those --feature-network applies to
_SAMPLE_DIRS = ("outputs", "exemplars", "structures", "targets", "labels", "exemplar_labels", "landmarks",
                "exemplar_landmarks", "predicted_points")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="*", metavar="report FILE.jsonl",
                        help="`report A.jsonl B.jsonl ...`: write the Markdown table of these result files "
                             "(to --out FILE, else stdout) instead of evaluating")
    src = parser.add_argument_group("what to evaluate (one of --items, or --model with --data)")
    src.add_argument("--items", metavar="DIR",
                     help="evaluation folder: outputs/ (PNG) plus any of exemplars/, structures/, targets/, "
                          "labels/, exemplar_labels/, landmarks/, exemplar_landmarks/, predicted_points/")
    src.add_argument("--model", metavar="DIR", help="model folder written by save_pretrained")
    src.add_argument("--data", metavar="DIR", help="paired-folder data set (images/, structure/, ...)")
    src.add_argument("--split", choices=("train", "val"), default="val")
    src.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N pairs of the split")
    src.add_argument("--size", type=int, metavar="N",
                     help="translate at NxN (default: the size of the split's first image)")
    src.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="model precision (bf16: autocast)")
    src.add_argument("--allow-jpeg", action="store_true",
                     help="with --items: accept JPEG outputs (noted in every result; JPEG shifts FID)")
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
    m.add_argument("--timing-runs", type=int, default=10, metavar="N", help="timed batches (median is reported)")
    m.add_argument("--timing-warmup", type=int, default=3, metavar="N", help="untimed batches first")
    out = parser.add_argument_group("output")
    out.add_argument("--out", metavar="DIR|FILE",
                     help="evaluation: folder for metrics.jsonl (appended), report.md and samples/; "
                          "report: the Markdown file")
    out.add_argument("--run", metavar="NAME", help="row label in the table (default: the model or items folder name)")
    out.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    out.add_argument("--batch-size", type=int, default=8, metavar="N")
    out.add_argument("--digits", type=int, default=3, metavar="N", help="significant digits in the table")


# --------------------------------------------------------------------------------------------------------------
# Metric selection and the weight check


def _parse_metrics(text: str) -> list[str]:
    from .registry import get_metric

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("--metrics is empty")
    for n in names:
        try:
            get_metric(n)
        except KeyError as e:
            raise ValueError(str(e).strip("'\"")) from None
    if len(set(names)) != len(names):
        raise ValueError(f"--metrics names a metric twice: {text}")
    return names


def _available(name: str, has: dict[str, bool]) -> bool:
    """Whether the inputs `name` needs are there (used to drop defaults that cannot be computed)."""
    base = name.split("[", 1)[0]
    if base in ("fid", "kid", "swd"):
        return has["targets"] or has["exemplars"]
    if base in ("texture", "color"):
        return has["exemplars"]
    if base in ("semantic", "psnr", "ssim", "lpips"):
        return has["targets"]
    if base == "pck":
        return has["pck"]
    if base == "timing":
        return has["timing"]
    return True


def _select_metrics(args: argparse.Namespace, has: dict[str, bool]) -> tuple[list[str], list[str]]:
    """(metric names with any network suffix, notes on defaults that were left out)."""
    if args.metrics:
        names = _parse_metrics(args.metrics)
        for n in names:  # an explicit request that cannot be met is an error, found before any work
            if not _available(n, has):
                why = {"pck": "landmarks for structure and exemplar (and a model with MAT blocks)",
                       "timing": "--model"}.get(n.split("[", 1)[0], "inputs the evaluation set lacks")
                raise ValueError(f"metric {n!r} needs {why}")
        skipped: list[str] = []
    else:
        wanted = list(PAPER_METRICS) + ["psnr", "ssim", "pck", "timing"]
        names = [n for n in wanted if _available(n, has)]
        skipped = [n for n in wanted if n not in names and n != "timing"]
    if args.feature_network:
        names = [f"{n}[{args.feature_network}]" if n in NETWORK_METRICS else n for n in names]
    return names, skipped


def _check_weights(names: list[str], args: argparse.Namespace) -> None:
    """Raise MissingWeightsError now, rather than after minutes of translating, for any absent weight file."""
    from .features import find_fid_weights

    from matebit.pretrained import MissingWeightsError

    bases = {n for n in names if "[" not in n}  # a suffix means a substitute network
    if bases & {"fid", "kid"}:
        try:
            find_fid_weights(args.fid_weights)
        except MissingWeightsError as e:  # same message, in this command's flag names
            raise MissingWeightsError(str(e).replace("fid_weights=PATH", "--fid-weights FILE").replace(
                "feature_network='hed-vgg16'", "--feature-network hed-vgg16")) from None
    if bases & {"texture", "color", "semantic"}:
        from matebit.pretrained import hub_checkpoint_path

        p = Path(args.vgg19_weights) if args.vgg19_weights else hub_checkpoint_path("vgg19")
        if not p.is_file():
            raise MissingWeightsError(
                f"{p}: VGG19 weights not found (needed by texture/color/semantic); put {p.name} there, pass "
                f"--vgg19-weights FILE, or use --feature-network hed-vgg16 for a labelled substitute")
    if any(n.endswith("[hed-vgg16]") for n in names):
        from matebit.pretrained import find_hed_weights

        find_hed_weights()


def _metric_opts(names: list[str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    opts: dict[str, dict[str, Any]] = {}
    for n in names:
        if n in ("fid", "kid") and args.fid_weights:
            opts[n] = {"fid_weights": args.fid_weights}
        elif n in ("texture", "color", "semantic") and args.vgg19_weights:
            opts[n] = {"vgg19_weights": args.vgg19_weights}
    return opts


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested, but no CUDA device is available (use 'cpu' or 'auto')")
    return name


# --------------------------------------------------------------------------------------------------------------
# Landmarks of a data set: keypoints/<stem>.json ({name: [x, y]}) or landmarks/<stem>.json (London-faces format)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def _read_points(path: Path, image: Path) -> tuple[list[str] | None, np.ndarray, tuple[int, int]]:
    """(point names or None for an ordered list, (P, 2) pixel (x, y), (W, H) the points refer to)."""
    from .evalset import load_landmarks

    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a JSON landmark file ({e})") from None
    if isinstance(d, dict) and "points" in d:
        lm = load_landmarks(path)
        return None, lm.points, lm.size
    try:
        if isinstance(d, dict):
            names = list(d)
            pts = np.asarray([d[k] for k in names], np.float64).reshape(-1, 2)
            return names, pts, _image_size(image)
        return None, np.asarray(d, np.float64).reshape(-1, 2), _image_size(image)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: expected {{name: [x, y]}}, [[x, y], ...] or {{'size', 'points'}} ({e})") from None


def _scale(pts: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    # Points use integer pixel centres (OpenCV/dlib convention), so scale about the pixel-centre offset.
    s = np.array([dst[0] / src[0], dst[1] / src[1]])
    return (pts + 0.5) * s - 0.5


class _LandmarkSource:
    def __init__(self, root: Path, images: dict[str, Path]):
        self.dirs = [root / d for d in ("keypoints", "landmarks") if (root / d).is_dir()]
        self.images = images

    def __bool__(self) -> bool:
        return bool(self.dirs)

    def _file(self, stem: str) -> Path | None:
        for d in self.dirs:
            if (d / f"{stem}.json").is_file():
                return d / f"{stem}.json"
        return None

    def pair(self, stem: str, ex_stem: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
        """Matched (structure points, exemplar points) at the translation size (W, H), or None."""
        fa, fb = self._file(stem), self._file(ex_stem)
        if fa is None or fb is None:
            return None
        na, pa, sa = _read_points(fa, self.images[stem])
        nb, pb, sb = _read_points(fb, self.images[ex_stem])
        if na is not None and nb is not None:  # named keypoints: match by name
            common = [n for n in na if n in set(nb)]
            pa = pa[[na.index(n) for n in common]]
            pb = pb[[nb.index(n) for n in common]]
        elif len(pa) != len(pb):
            raise ValueError(f"{fa} has {len(pa)} points but {fb} has {len(pb)}")
        if len(pa) == 0:
            return None
        return _scale(pa, sa, size), _scale(pb, sb, size)


def _landmark_json(pts: np.ndarray, size: tuple[int, int], path: Path) -> None:
    path.write_text(json.dumps({"template": "matebit-eval", "size": list(size),
                                "points": [[float(x), float(y)] for x, y in pts]}), encoding="utf-8")


# --------------------------------------------------------------------------------------------------------------
# Model mode: translate, save PNG samples, collect the evaluation set


def _to_uint8(t: Any, low: float) -> np.ndarray:
    """(C, H, W) tensor in [low, 1] -> uint8 (H, W) or (H, W, 3)."""
    x = ((t.float() - low) / (1 - low)).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return x[:, :, 0] if x.shape[2] == 1 else x


def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG")


def _resized_labels(path: Path, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    from .evalset import load_label_map

    lab = load_label_map(path)
    if lab.shape[::-1] != size:  # nearest keeps class ids intact
        lab = np.asarray(Image.fromarray(lab.astype(np.int32)).resize(size, Image.NEAREST))
    return lab.astype(np.uint8) if lab.max() < 256 else lab.astype(np.uint16)


def _clear_stale(samples: Path, stems: set[str]) -> None:
    """Remove sample files of an earlier run whose stems this run does not write (so the folder stays one set)."""
    for sub in _SAMPLE_DIRS:
        d = samples / sub
        if d.is_dir():
            for p in d.iterdir():
                if p.is_file() and p.suffix in (".png", ".json") and p.stem not in stems:
                    p.unlink()


def _translate_split(args: argparse.Namespace, translator: Any, samples: Path, want_pck: bool):
    """Translate the split's pairs; returns (full EvalSet, EvalSet of the pairs with landmarks, timing fn and
    its batch size)."""
    import torch

    from matebit.data.folder import DataConfig, PairedFolderDataset

    from .evalset import EvalSet, Landmarks

    data = Path(args.data)
    size = args.size
    if size is None:
        probe = PairedFolderDataset(DataConfig(root=str(data), size=64), args.split)
        w, h = _image_size(probe.images[probe.stems[0]])
        size = (h, w)
    ds = PairedFolderDataset(DataConfig(root=str(data), size=size,
                                        structure_channels=translator.config.structure_channels), args.split)
    n = len(ds) if args.limit is None else min(args.limit, len(ds))
    if n < 1:
        raise ValueError("--limit must be at least 1")
    h, w = ds.cfg.hw
    wh = (w, h)
    lm_source = _LandmarkSource(data, ds.images) if want_pck else None
    label_dir = data / "labels"
    label_files = ({p.stem: p for p in label_dir.iterdir() if p.suffix.lower() == ".png"}
                   if label_dir.is_dir() else {})

    stems = [ds.stems[i] for i in range(n)]
    _clear_stale(samples, set(stems))
    for sub in ("outputs", "exemplars", "structures", "targets"):
        (samples / sub).mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {k: [] for k in ("outputs", "exemplars", "structures", "targets")}
    labels, ex_labels, pck_rows = [], [], []  # pck_rows: (index, structure pts, exemplar pts, predicted)
    timing_batch = None
    bs = args.batch_size
    with torch.inference_mode():
        for start in range(0, n, bs):
            items = [ds.get(i) for i in range(start, min(start + bs, n))]
            structs = [it["structure"] for it in items]
            exs = [it["exemplar"] for it in items]
            if timing_batch is None:
                timing_batch = (structs, exs)
            res = translator(structs, exs, return_aux=True, batch_size=bs)
            for j, it in enumerate(items):
                stem, ex_stem, self_ref = it["stem"], it["exemplar_stem"], bool(it["self_ref"])
                paths = {k: samples / k / f"{stem}.png" for k in rows}
                res.images[j].convert("RGB").save(paths["outputs"], format="PNG")
                _save_png(_to_uint8(it["exemplar"], -1.0), paths["exemplars"])
                _save_png(_to_uint8(it["image"], -1.0), paths["targets"])
                if it["structure"].shape[0] in (1, 3):  # other channel counts have no PNG form
                    _save_png(_to_uint8(it["structure"], 0.0), paths["structures"])
                else:
                    paths.pop("structures")
                for k in rows:
                    rows[k].append(paths.get(k))
                labels.append(_resized_labels(label_files[stem], wh) if stem in label_files else None)
                # A self-reference exemplar is a warped copy: its labels and landmarks are not the file's.
                ex_labels.append(_resized_labels(label_files[ex_stem], wh)
                                 if ex_stem in label_files and not self_ref else None)
                pair = lm_source.pair(stem, ex_stem, wh) if lm_source and not self_ref else None
                if pair is not None:
                    q = np.clip(pair[0], 0, np.array([w, h]) - 1e-3)  # correspondence wants points inside
                    masked, _ = res.correspondence(q, block=-1, item=j)
                    flat = masked.reshape(len(q), -1).argmax(axis=1)
                    pred = np.stack([flat % masked.shape[2], flat // masked.shape[2]], axis=1).astype(np.float64)
                    pck_rows.append((start + j, pair[0], pair[1], pred))

    kw: dict[str, list] = {k: v for k, v in rows.items() if all(x is not None for x in v)}
    # Label maps travel only when every pair has them (EvalSet lists are all-or-nothing); also written to disk.
    for name, maps in (("labels", labels), ("exemplar_labels", ex_labels)):
        if all(m is not None for m in maps):
            (samples / name).mkdir(exist_ok=True)
            kw[name] = []
            for stem, m in zip(stems, maps):
                _save_png(m, samples / name / f"{stem}.png")
                kw[name].append(samples / name / f"{stem}.png")
    full = EvalSet(stems=stems, **kw)

    pck_set = None
    if pck_rows:
        idx = [r[0] for r in pck_rows]
        pck_set = EvalSet(stems=[stems[i] for i in idx], outputs=[kw["outputs"][i] for i in idx],
                          landmarks=[Landmarks(r[1], wh) for r in pck_rows],
                          exemplar_landmarks=[Landmarks(r[2], wh) for r in pck_rows],
                          predicted_points=[Landmarks(r[3], wh) for r in pck_rows])
        if len(pck_rows) == n:  # full coverage: write them so `--items samples/` can recompute PCK
            for sub, k in (("landmarks", 1), ("exemplar_landmarks", 2), ("predicted_points", 3)):
                (samples / sub).mkdir(exist_ok=True)
                for r in pck_rows:
                    _landmark_json(r[k], wh, samples / sub / f"{stems[r[0]]}.json")

    structs, exs = timing_batch

    def timed() -> None:
        translator(structs, exs, batch_size=len(structs))

    return full, pck_set, timed, len(structs), (w, h)


# --------------------------------------------------------------------------------------------------------------
# Entry points


def _report(args: argparse.Namespace) -> int:
    from matebit.checkpoint import atomic_write_bytes

    from .registry import report_markdown

    if args.action[0] != "report":
        raise ValueError(f"unknown action {args.action[0]!r}; the only one is `matebit eval report FILE.jsonl ...`")
    files = [Path(p) for p in args.action[1:]]
    if not files:
        raise ValueError("`matebit eval report` needs at least one JSON lines file")
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such results file")
    text = report_markdown(files, digits=args.digits)
    if args.out:
        atomic_write_bytes(Path(args.out), text.encode("utf-8"))
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _check_args(args: argparse.Namespace) -> None:
    if args.items and (args.model or args.data):
        raise ValueError("give either --items or --model with --data, not both")
    if not args.items and not (args.model and args.data):
        raise ValueError("give --items DIR, or --model DIR with --data DIR (or use `matebit eval report ...`)")
    if not args.out:
        raise ValueError("--out DIR is required (metrics.jsonl, report.md and samples go there)")
    if args.batch_size < 1 or args.timing_runs < 1 or args.timing_warmup < 0:
        raise ValueError("--batch-size and --timing-runs must be >= 1, --timing-warmup >= 0")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: --out must be a folder for evaluation runs")


def main(args: argparse.Namespace) -> int:
    if args.action:
        return _report(args)
    _check_args(args)
    if args.metrics:
        _parse_metrics(args.metrics)  # a misspelt name fails before any file is read

    from matebit.checkpoint import atomic_write_bytes

    from .evalset import EvalSet
    from .evaluate import evaluate
    from .registry import report_markdown

    out = Path(args.out)
    jsonl = out / "metrics.jsonl"
    device = _device(args.device)

    if args.items:
        items = EvalSet.from_folder(args.items, allow_jpeg_outputs=args.allow_jpeg)
        has = {"targets": bool(items.targets), "exemplars": bool(items.exemplars), "timing": False,
               "pck": bool(items.exemplar_landmarks) and bool(items.predicted_points)}
        names, skipped = _select_metrics(args, has)
        _check_weights(names, args)
        run = args.run or Path(args.items).resolve().name
        sets = {n: items for n in names}
        opts = _metric_opts(names, args)
        print(f"evaluating {len(items)} samples from {args.items}: {', '.join(names)}")
    else:
        from matebit.inference import Translator

        model_dir, data = Path(args.model), Path(args.data)
        for p, what in ((model_dir, "model"), (data, "data")):
            if not p.is_dir():
                raise FileNotFoundError(f"{p}: {what} folder not found")
        translator = Translator.from_pretrained(model_dir, device=device, dtype=args.dtype)
        can_pck = translator.config.n_mat_blocks > 0 and any((data / d).is_dir() for d in ("keypoints", "landmarks"))
        has = {"targets": True, "exemplars": True, "timing": True, "pck": can_pck}
        names, skipped = _select_metrics(args, has)
        _check_weights(names, args)  # before translating anything
        run = args.run or model_dir.resolve().name
        samples = out / "samples"
        items, pck_set, timed, timing_bs, wh = _translate_split(args, translator, samples, "pck" in names)
        print(f"translated {len(items)} {args.split} pairs at {wh[0]}x{wh[1]} -> {samples} (PNG)")
        if "pck" in names and pck_set is None:
            if args.metrics:
                raise ValueError("pck: no translated pair has landmarks for both its structure and its exemplar "
                                 "(self-reference exemplars have none)")
            names.remove("pck")
            skipped.append("pck")
        sets = {n: (pck_set if n == "pck" else items) for n in names}
        opts = _metric_opts(names, args)
        if "timing" in names:
            # The whole Translator call on one batch: input checks, padding, forward pass, PIL conversion.
            opts["timing"] = {"fn": timed, "batch_size": timing_bs, "precision": args.dtype,
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
    table = report_markdown([jsonl], digits=args.digits)
    atomic_write_bytes(out / "report.md", table.encode("utf-8"))
    print(f"appended {len(results)} results to {jsonl}; wrote {out / 'report.md'}")
    return 0
