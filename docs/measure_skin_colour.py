"""Mean CIELAB colour of both cheeks over the photos of folders (docs/faces.md): how pale and grey one set's skin is
beside another's.

    python docs/measure_skin_colour.py --out benchmarks/results/faces-skin-colour-cpu.json \
        london=../shared/data/london-faces/neutral 3dsk=PATH/webmorphR.stim/inst/3dsk

Cheeks as the photo protocol reads them (`matebit.metrics.moved.cheek_colour`, dlib's 68 landmarks); photos read at
most 512 px long, as the protocol reads them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sets", nargs="+", metavar="NAME=DIR")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from matebit.align import find_face
    from matebit.io import IMAGE_EXTENSIONS, fit_side, open_image
    from matebit.metrics.moved import cheek_colour

    result = {}
    for item in args.sets:
        name, _, folder = item.partition("=")
        labs = []
        for f in sorted(Path(folder).rglob("*")):
            if f.suffix.lower() not in IMAGE_EXTENSIONS or f.name.startswith("."):
                continue
            with open_image(f) as im:
                a = np.asarray(fit_side(im.convert("RGB"), 512))
            labs.append(cheek_colour(a, find_face(a, str(f), warn=lambda m: None).landmarks))
        labs = np.array(labs)
        chroma = np.hypot(labs[:, 1], labs[:, 2])
        result[name] = {"folder": folder, "photos": len(labs), "L_mean": float(labs[:, 0].mean()),
                        "L_sd": float(labs[:, 0].std(ddof=1)), "chroma_mean": float(chroma.mean()),
                        "chroma_sd": float(chroma.std(ddof=1)), "a_mean": float(labs[:, 1].mean()),
                        "b_mean": float(labs[:, 2].mean())}
        r = result[name]
        print(f"{name}: {r['photos']} photos, L {r['L_mean']:.1f} ± {r['L_sd']:.1f}, chroma {r['chroma_mean']:.1f} ± "
              f"{r['chroma_sd']:.1f}")
    Path(args.out).write_text(json.dumps({"what": __doc__.split("\n\n")[0], "sets": result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
