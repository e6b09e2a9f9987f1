"""How much of each face and neck a backdrop mask would recolour, on a London-faces folder (docs/faces.md).

    python docs/measure_backdrop_masks.py --src ../shared/data/london-faces \
        --out benchmarks/results/faces-backdrop-mask-leak-cpu.json

Two masks: the flood fill from the image border (`matebit.data.augment.border_region`, what
`train.recolour_background` recolours) and the GrabCut layers of `matebit.data.portraits.portrait_layers` (backdrop
and clothes). Face: the hull of dlib's landmarks 0-26; neck: jaw points 5-11 extended down by 0.35 face widths,
outside the face. The layers seed face and neck as the person, so their share there is 0 by construction; the
figure that matters is the flood fill's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="London-faces folder (neutral/, smiling/)")
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args(argv)

    from matebit.align import find_face
    from matebit.data.augment import border_region
    from matebit.data.portraits import portrait_layers

    rows = []
    for f in sorted(Path(args.src).glob("*/*.jpg")):
        im = np.asarray(Image.open(f).convert("RGB").resize((args.size, args.size), Image.LANCZOS))
        lm = find_face(im, str(f), warn=lambda m: None).landmarks
        face = np.zeros(im.shape[:2], np.uint8)
        cv2.fillConvexPoly(face, cv2.convexHull(lm[:27].round().astype(np.int32)), 1)
        fw = np.linalg.norm(lm[16] - lm[0])
        neck = np.zeros(im.shape[:2], np.uint8)
        cv2.fillPoly(neck, [np.vstack([lm[5:12], lm[11:4:-1] + [0, 0.35 * fw]]).round().astype(np.int32)], 1)
        neck &= ~face
        fill = border_region(im)
        layers = portrait_layers(im, lm)
        recoloured = layers.backdrop | layers.clothes
        rows.append({"photo": f"{f.parent.name}/{f.name}",
                     "flood_face": float(fill[face > 0].mean()), "flood_neck": float(fill[neck > 0].mean()),
                     "layers_face": float(recoloured[face > 0].mean()),
                     "layers_neck": float(recoloured[neck > 0].mean())})
    summary = {k: {"mean": float(np.mean([r[k] for r in rows])),
                   "photos_over_5pct": sum(r[k] > 0.05 for r in rows),
                   "photos_over_25pct": sum(r[k] > 0.25 for r in rows)}
               for k in ("flood_face", "flood_neck", "layers_face", "layers_neck")}
    data = {"what": __doc__.split("\n\n")[0], "src": str(args.src), "size": args.size, "photos_n": len(rows),
            "summary": summary, "photos": rows}
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    for k, v in summary.items():
        print(f"{k:12s} mean {v['mean']:.3f}; photos over 5%: {v['photos_over_5pct']}, over 25%: "
              f"{v['photos_over_25pct']} of {len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
