"""Does a face model paint the exemplar's skin on the face, or its clothes? (README, Face model)

Translates every validation structure of a prepared face folder (`matebit prepare faces` / `recipe faces`) with one
exemplar, framed as `matebit demo --faces` frames it (grace_hopper.jpg by default: a navy uniform and cap before a
flag, far from the studio set's grey backdrop and white shirts), and scores the face box of each output: its mean
brightness, and whether its mean colour is nearer the exemplar's skin than its clothes (boxes in the framed exemplar).

    python benchmarks/bench_face_exemplar.py --data runs/faces-hed-128/data --model faces-hed-128 \
        [--model OTHER_DIR ...] [--out results/faces-hopper-exemplar-cpu.json]

The boxes hold faces and clothes at 128x128 for the aligned London portraits and the default exemplar; pass
--skin-box and --clothes-box (top bottom left right, in the 128x128 exemplar) for another exemplar.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, header  # noqa: E402

FACE_BOX = (44, 76, 48, 80)  # top, bottom, left, right: the face of an aligned London portrait at 128x128
SKIN_BOX = (40, 72, 48, 80)  # Grace Hopper's face in the demo's 128x128 framing
CLOTHES_BOX = (105, 128, 20, 108)  # her uniform


def _box_mean(image: np.ndarray, box) -> np.ndarray:
    t, b, l, r = box
    return image[t:b, l:r].reshape(-1, 3).mean(0)


def main(argv=None) -> int:
    from matebit.inference import Translator
    from matebit.io import open_image
    from matebit.recipes.faces import default_exemplar, frame_exemplar

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="prepared face folder (val.txt, structure/)")
    p.add_argument("--model", action="append", required=True, help="model folder or shipped name (repeatable)")
    p.add_argument("--exemplar", default=None, help="exemplar image (default: the package's grace_hopper.jpg)")
    p.add_argument("--skin-box", type=int, nargs=4, default=SKIN_BOX)
    p.add_argument("--clothes-box", type=int, nargs=4, default=CLOTHES_BOX)
    p.add_argument("--out", default=str(RESULTS / "faces-hopper-exemplar-cpu.json"))
    args = p.parse_args(argv)

    exemplar_path = Path(args.exemplar) if args.exemplar else default_exemplar()
    if exemplar_path is None or not exemplar_path.is_file():
        print(f"bench_face_exemplar: {exemplar_path}: no exemplar image", file=sys.stderr)
        return 2
    data = Path(args.data)
    if not (data / "val.txt").is_file():
        print(f"bench_face_exemplar: {data / 'val.txt'}: missing (a folder from `matebit prepare faces`)",
              file=sys.stderr)
        return 2
    stems = (data / "val.txt").read_text().split()
    ex = frame_exemplar(open_image(exemplar_path), 128)
    ex_arr = np.asarray(ex, np.float64)
    skin, clothes = _box_mean(ex_arr, args.skin_box), _box_mean(ex_arr, args.clothes_box)

    record = {"exemplar": str(exemplar_path.name), "data": str(data), "validation_structures": len(stems),
              "skin_rgb": skin.round(1).tolist(), "clothes_rgb": clothes.round(1).tolist(), "face_box": FACE_BOX,
              **header(torch.device("cpu")), "models": {}}
    print(f"{len(stems)} validation structures x exemplar {exemplar_path.name} (skin {skin.round()}, "
          f"clothes {clothes.round()})")
    print(f"{'model':50s} {'face brightness':>18s} {'nearer skin than clothes':>26s}")
    for model in args.model:
        translator = Translator.from_pretrained(model, device="cpu")
        faces = []
        for stem in stems:
            structure = Image.open(data / "structure" / f"{stem}.png")
            out = np.asarray(translator(structure, ex).convert("RGB").resize((128, 128)), np.float64)
            faces.append(_box_mean(out, FACE_BOX))
        luma = [float(f @ [0.299, 0.587, 0.114]) for f in faces]
        nearer = int(sum(np.linalg.norm(f - skin) < np.linalg.norm(f - clothes) for f in faces))
        record["models"][model] = {"face_luma_mean": float(np.mean(luma)),
                                   "face_luma_sd": float(np.std(luma, ddof=1)), "nearer_skin": nearer,
                                   "faces_rgb": [f.round(1).tolist() for f in faces]}
        print(f"{model[-50:]:50s} {np.mean(luma):8.1f} ± {np.std(luma, ddof=1):5.1f} {nearer:>17d} of {len(faces)}")
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
