"""`matebit export MODEL_DIR NAME`: write a trained model folder as a shipped model (matebit/weights/NAME/).

    matebit export runs/faces-hed-128/model faces-hed-128             # fp16 (default), <= 25 MB
    matebit export runs/x/model x --card CARD.md --root /tmp/shipped     # elsewhere, with a card written by hand

The weights are stored in fp16 (default: 3 more mantissa bits than bf16, see matebit/weights/__init__.py) or bf16 and
must fit in 25 MB; the card must have front matter (description, licence, structure, ...), as the card
`matebit recipe faces` writes. The output difference the storage precision causes is measured and put on the card.
"""

from __future__ import annotations

import argparse
from pathlib import Path



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL_DIR", help="a model folder (model.safetensors, config.json, README.md)")
    p.add_argument("name", metavar="NAME", help="the shipped name, e.g. faces-hed-128")
    p.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16", help="storage precision (default fp16)")
    p.add_argument("--card", metavar="FILE", help="the model card to ship (default: MODEL_DIR/README.md)")
    p.add_argument("--root", metavar="DIR", help="where to write NAME/ (default: the package's matebit/weights/)")
    p.add_argument("--max-mb", type=float, default=None, help="size limit of the weights (default 25)")
    p.add_argument("--force", action="store_true", help="replace an existing NAME/")


def main(args: argparse.Namespace) -> int:
    from matebit.io import check_outputs, read_text
    from matebit.weights import MAX_SHIPPED_MB, export_model, weights_root

    card = None
    if args.card:
        # NAME/ is replaced whole, so a card kept inside it would be lost with the folder.
        check_outputs(out_folders={"NAME": Path(args.root or weights_root()) / args.name},
                      in_folders={args.card: "--card"})
        card = read_text(args.card)
    target = export_model(args.model, args.name, dtype=args.dtype, card=card, root=args.root,
                          max_mb=args.max_mb if args.max_mb is not None else MAX_SHIPPED_MB, overwrite=args.force)
    from matebit.weights import read_card_meta

    mb = (target / "model.safetensors").stat().st_size / 2**20
    where = args.name if args.root is None else str(target.resolve())  # a shipped name, or the folder written
    print(f"wrote {target} ({mb:.1f} MB, {args.dtype}); load it with Translator.from_pretrained({where!r})")
    print(f"  {read_card_meta(target).get('storage_check', '')}")
    return 0
