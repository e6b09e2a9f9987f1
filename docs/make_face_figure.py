"""The README's face figure: real photos of different framing and backdrop, each with an exemplar, through the
default pipeline of `matebit translate --from-photo hed` (face alignment, HED, the shipped face model, paste-back).

    python docs/make_face_figure.py --out docs/images/faces-real.jpg \
        --pair astronaut hopper --pair PHOTO.jpg EXEMPLAR.jpg ...

`astronaut` is scikit-image's public-domain photo (NASA) and `hopper` the public-domain portrait of Grace Hopper
(US Navy) that ships with matebit; other names are files. Each row: photo | exemplar | output (the aligned portrait
at the model's size) | output pasted back into the photo. Every picture is shown 256 px high.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def _open(name: str) -> Image.Image:
    if name == "astronaut":
        from skimage import data

        return Image.fromarray(data.astronaut())
    if name == "hopper":
        from matebit.recipes.faces import default_exemplar

        return Image.open(default_exemplar()).convert("RGB")
    from matebit.io import open_image

    return open_image(name).convert("RGB")


def _tile(im: Image.Image, height: int) -> Image.Image:
    w = max(1, round(im.width * height / im.height))
    return im.convert("RGB").resize((w, height), Image.LANCZOS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pair", nargs=2, action="append", required=True, metavar=("PHOTO", "EXEMPLAR"))
    p.add_argument("--model", default="faces-hed-128")
    p.add_argument("--out", required=True)
    p.add_argument("--height", type=int, default=256)
    args = p.parse_args(argv)

    from matebit.inference import Translator

    translator = Translator.from_pretrained(args.model, dtype="fp32")
    rows = []
    for photo_name, exemplar_name in args.pair:
        photo, exemplar = _open(photo_name), _open(exemplar_name)
        result = translator(photo, exemplar, from_photo="hed")
        pair = result.photos[0]
        cells = [photo, exemplar, result.image]
        if pair.structure_align is not None:
            cells.append(pair.structure_align.paste_back(pair.structure_photo, result.image))
        rows.append([_tile(c, args.height) for c in cells])
    gap = 6
    width = max(sum(c.width for c in row) + gap * (len(row) - 1) for row in rows)
    sheet = Image.new("RGB", (width, len(rows) * args.height + gap * (len(rows) - 1)), "white")
    y = 0
    for row in rows:
        x = 0
        for c in row:
            sheet.paste(c, (x, y))
            x += c.width + gap
        y += args.height + gap
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height}, {len(rows)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
