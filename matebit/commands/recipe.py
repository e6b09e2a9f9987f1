"""`matebit recipe faces`: prepare the London faces, train, evaluate on held-out people, write the model and its card.

    matebit recipe faces --src ../shared/data/london-faces --out runs/faces-hed-128 [--preset faces] [--steps N]
                         [--set KEY=VALUE ...]

Every stage is restartable: the prepared data are cached, training resumes from OUT/run's checkpoints (a finished
run is only re-evaluated), and the card is rewritten from the new figures. The work is
`matebit.recipes.faces.run_face_recipe`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="recipe", metavar="<recipe>")
    p = sub.add_parser("faces", help="London-faces portraits -> a face model with a card and measured figures")
    p.add_argument("--src", required=True, help="the London-faces folder (neutral/NNN.jpg + NNN.json, smiling/)")
    p.add_argument("--out", required=True, help="run folder: data/, run/, eval/, model/")
    p.add_argument("--preset", default="faces", help="model and loss preset (default %(default)s; `matebit info`)")
    p.add_argument("--size", type=int, default=128, help="image side, a multiple of 16 (default %(default)s)")
    p.add_argument("--steps", type=int, help="training steps (default: the preset's; the decay keeps its share)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.batch_size=8")
    p.add_argument("--perceptual", choices=("vgg19", "hed-vgg16"),
                   help="perceptual network (default: the preset's); hed-vgg16 is the offline substitute")
    p.add_argument("--val-identities", type=int, default=12, help="people held out (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="split and pairs seed (default %(default)s)")
    p.add_argument("--hed-size", type=int, help="side HED runs at (default: max(256, 2 x size))")
    p.add_argument("--variants", type=int, default=8,
                   help="versions of each aligned training photo: the plain one and the rest with other backdrops, "
                        "clothes, light and framing (default %(default)s)")
    p.add_argument("--backdrops", metavar="DIR",
                   help="a folder of images to cut training backdrops from, besides scikit-image's samples")
    p.add_argument("--eval-pairs", type=int, default=40, help="moved pairs per draw (default %(default)s)")
    p.add_argument("--eval-seeds", default="0,1,2,3,4", metavar="LIST",
                   help="pair draws, reported as mean and sd (default %(default)s)")
    p.add_argument("--select-seeds", default="100,101", metavar="LIST|none",
                   help="pair draws on which the kept checkpoints are compared, the best shipped (default "
                        "%(default)s; none: the last step)")
    p.add_argument("--eval-photos", action="append", default=[], metavar="DIR",
                   help="also score the model on these photos (landmark files beside them: NAME.json or NAME.tem)")
    p.add_argument("--people-info", metavar="CSV",
                   help="the set's information file (face_id, face_age, face_gender, face_eth) for the card")
    p.add_argument("--name", help="the model's name on its card (default faces-hed-<size>)")
    p.add_argument("--data", help="where the prepared data go (default OUT/data; share it between runs)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from matebit.commands import parse_seeds
    from matebit.errors import InputError
    from matebit.recipes.faces import FaceRecipe, run_face_recipe

    if args.recipe != "faces":
        raise InputError("choose a recipe: `matebit recipe faces ...`")
    from matebit.io import check_outputs

    # Data, runs, evaluations and the model go under --out (and --data): never into the London-faces folder.
    check_outputs(out_folders={"--out": args.out, **({"--data": args.data} if args.data else {})},
                  in_folders={args.src: "--src"}, nested=False)
    recipe = FaceRecipe(src=args.src, out=args.out, preset=args.preset, size=args.size, steps=args.steps,
                        overrides=list(args.overrides), perceptual=args.perceptual,
                        val_identities=args.val_identities, seed=args.seed, hed_size=args.hed_size,
                        eval_pairs=args.eval_pairs, eval_seeds=tuple(parse_seeds(args.eval_seeds, '--eval-seeds')), eval_photos=list(args.eval_photos),
                        people_info=args.people_info, name=args.name, data=args.data,
                        variants=args.variants, backdrops=args.backdrops,
                        select_seeds=() if args.select_seeds == "none" else tuple(parse_seeds(args.select_seeds,
                                                                                             "--select-seeds")))
    run_face_recipe(recipe, progress=not args.no_progress, device=args.device)
    return 0
