"""A face model's whole photo pipeline, as `matebit translate --from-photo hed` runs it: time per portrait.

    python benchmarks/bench_face_pipeline.py                       # the shipped faces-hed-128, public-domain photos
    python benchmarks/bench_face_pipeline.py --model DIR --photo P.jpg --exemplar Q.jpg --runs 7

One call = find both faces (dlib), align them, HED of the aligned photo, the generator at its trained size, and
(rows "paste back") the output blended back into the photo. The default pair is scikit-image's astronaut (NASA) with
the Grace Hopper portrait that ships with matebit, so nothing outside the package is needed. Rows per precision the
translator offers (fp32, and bf16 where the CPU supports it). Writes benchmarks/results/face-pipeline-<device>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _common import header, measure, notes, print_table, write_json  # noqa: E402

COLUMNS = ["precision", "paste_back", "ms_per_portrait", "min_ms", "cpu_s", "peak_mib"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="faces-hed-128", help="a shipped face model's name or a model folder")
    p.add_argument("--photo", help="the structure photo (default: scikit-image's astronaut)")
    p.add_argument("--exemplar", help="the exemplar portrait (default: the shipped Grace Hopper portrait)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)

    from PIL import Image

    from matebit import speed
    from matebit.inference import Translator
    from matebit.recipes.faces import default_exemplar

    if args.photo:
        photo = Image.open(args.photo).convert("RGB")
    else:
        from skimage import data

        photo = Image.fromarray(data.astronaut())
    exemplar = Image.open(args.exemplar or default_exemplar()).convert("RGB")
    device = torch.device("cpu")
    speed.configure_cpu_threads(None)  # the benchmark's own process: all usable cores, as the CLI uses

    rows = []
    for precision in args.precisions:
        try:
            translator = Translator.from_pretrained(args.model, device="cpu", dtype=precision)
        except (RuntimeError, ValueError) as exc:
            rows.append({"precision": precision, "note": f"skipped: {exc}"})
            continue
        for paste in (False, True):
            def step():
                translator(photo, exemplar, from_photo="hed", paste_back=paste)

            m = measure(step, device, args.warmup, args.runs)
            rows.append({"precision": precision, "paste_back": paste, "ms_per_portrait": m["median_s"] * 1e3,
                         "min_ms": m["min_s"] * 1e3, "cpu_s": m["cpu_s"], "peak_mib": m["peak_mib"],
                         "load_average": m["load_average"], "times_s": m["times_s"]})
            print_table([rows[-1]], COLUMNS)
    print()
    print_table(rows, COLUMNS + ["note"])
    record = header(device, model=str(args.model), photo=args.photo or "skimage astronaut",
                    photo_size=list(photo.size), exemplar=args.exemplar or "matebit/assets grace_hopper",
                    exemplar_size=list(exemplar.size), **notes(device))
    record["rows"] = rows
    path = write_json("face-pipeline", device, record, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
