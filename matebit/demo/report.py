"""The demo: synthetic data -> a small trained model -> the synthetic benchmark -> an HTML report.

    matebit demo                 # ~6 minutes on 2 CPU cores; prints where report.html is (matebit/commands/demo.py)
    matebit demo --out my-demo --steps 100

Everything runs offline on the CPU. The loss is the `demo` recipe (pixel L1 + correspondence + alignment +
contrastive style + a small adversarial term + self-warp matching, which is not in the paper): no pretrained VGG19
can be loaded without a download, so the report says the numbers are not the paper's setting.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from matebit import speed
from matebit.config import TOKEN_STRIDE, ExperimentConfig, apply_overrides, experiment_preset, to_dict
from matebit.heatmap import heat_overlay

# ---------------------------------------------------------------------------------------------------------------
# Settings shared with `matebit bench quality --synthetic --presets ...` (same budget for every preset)


@dataclass
class DemoSettings:
    preset: str = "demo"
    size: int = 64  # 64 px: the 1/8 token grid is 8x8, enough for faces, and a step is cheap on a CPU
    n_train: int = 400
    # 1300 steps: minutes on 2 CPU cores, enough for the model to beat the identity map on PCK@0.05/0.10 and the
    # copied exemplar on colour error (the 3-seed study and its times: docs/demo-study.md).
    steps: int = 1300
    batch_size: int = 8
    n_pairs: int = 32  # held-out benchmark pairs
    seed: int = 0
    # Every preset is trained at the `demo` preset's CPU size (config.py: its widths, no spectral norm, Adam
    # beta1 0.5 at 10x the paper's rates), so `bench quality --presets mat1,...` compares architectures at the
    # demo's budget instead of training 100 M-parameter models on a laptop.
    overrides: tuple[str, ...] = (
        "model.base_channels=8", "model.feature_channels=64", "model.spade_hidden=32", "model.style_dim=16",
        "model.d_channels=16", "model.d_layers=2", "model.spectral_norm=none",
        "train.lr_g=1e-3", "train.lr_d=2e-3", "train.beta1=0.5")
    extra: list[str] = field(default_factory=list)  # user --set values, applied last

    def config(self) -> ExperimentConfig:
        cfg = experiment_preset(self.preset)
        decay = max(1, (2 * self.steps) // 3)
        every = max(1, self.steps // 4)
        base = [f"train.image_size={self.size}", f"train.batch_size={self.batch_size}",
                f"train.steps={self.steps}", f"train.decay_start={decay}", f"train.seed={self.seed}",
                f"train.log_every={max(1, min(20, self.steps))}", f"train.image_every={every}",
                f"train.checkpoint_every={self.steps}", "train.num_workers=0", "train.keep_checkpoints=1"]
        return apply_overrides(cfg, base + list(self.overrides) + list(self.extra))


def make_data(root: Path, settings: DemoSettings) -> Path:
    """The training set (seed `settings.seed`); reused when an earlier run already wrote the same one."""
    from matebit.data.synthetic import write_synthetic_dataset

    meta = root / "meta.json"
    want = {"seed": settings.seed, "size": settings.size, "n_train": settings.n_train}
    if meta.is_file():
        have = json.loads(meta.read_text())
        if all(have.get(k) == v for k, v in want.items()):
            return root
    return write_synthetic_dataset(root, settings.n_train, 0, settings.size, settings.seed)


# The thread choice moved to matebit.speed (load-aware at start, re-chosen while training); `matebit bench` imports
# it from here.
choose_threads = speed.choose_threads


def train_model(settings: DemoSettings, data_root: Path, run_dir: Path, progress: bool = True):
    """Train one preset with the demo's budget; returns (trainer, seconds)."""
    import shutil

    from matebit.train import train

    if run_dir.exists():  # a demo run always starts fresh; `matebit train --resume` is for long runs
        shutil.rmtree(run_dir)
    torch.manual_seed(settings.seed)
    t0 = time.perf_counter()
    trainer = train(settings.config(), str(data_root), run_dir, device=torch.device("cpu"), progress=progress,
                    num_workers=0)  # workers would compete with training for the 2 cores
    return trainer, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------------------
# Pictures


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def upscale(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize to size x size (token-grid maps stay visibly blocky, as they are)."""
    h, w = image.shape[:2]
    rows = (np.arange(size) * h // size)
    cols = (np.arange(size) * w // size)
    return image[rows][:, cols]


def gray_rgb(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        x = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(x[..., None], 3, axis=2) if x.ndim == 2 else x


def mark(image: np.ndarray, points: list[tuple[float, float]], colours: list[tuple[int, int, int]],
         scale: float, shapes: list[str] | None = None) -> np.ndarray:
    """Draw circles ('o') or crosses ('x') at (x, y) pixel points given in the original image's units."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    d = ImageDraw.Draw(im)
    r = max(3, image.shape[0] // 40)
    for k, ((x, y), c) in enumerate(zip(points, colours)):
        cx, cy = (x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5
        if shapes and shapes[k] == "x":
            d.line([(cx - r, cy - r), (cx + r, cy + r)], fill=c, width=2)
            d.line([(cx - r, cy + r), (cx + r, cy - r)], fill=c, width=2)
        else:
            d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=c, width=2)
    return np.asarray(im)


QUERY_KEYPOINTS = ("left_eye_center", "nose_tip", "mouth_right", "hair_top")
QUERY_COLOURS = [(0, 200, 255), (0, 255, 90), (255, 60, 200), (255, 255, 255)]


# ---------------------------------------------------------------------------------------------------------------
# The report


class Report:
    """Collects tiles; writes each as a PNG under files/ and inline (base64) into one HTML file."""

    def __init__(self, out: Path, display: int):
        self.out, self.display = out, display
        self.files = out / "report_files"
        self.files.mkdir(parents=True, exist_ok=True)

    def tile(self, name: str, image: np.ndarray, caption: str = "") -> str:
        data = png_bytes(upscale(image, self.display) if image.shape[0] != self.display else image)
        (self.files / f"{name}.png").write_bytes(data)
        b64 = base64.b64encode(data).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        return f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{b64}">{cap}</figure>'


def _metrics_html(rows: dict[str, dict[str, float]]) -> str:
    from matebit.metrics.moved.synthetic import table_cells

    head, body = table_cells(rows)
    head_html = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body_html = "".join(f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
                        for name, *cells in body)
    return f"<table class=metrics><tr>{head_html}</tr>{body_html}</table>"


def _loss_svg(log_path: Path) -> str:
    """Inline SVG of the generator's total loss over steps (no plotting library needed)."""
    if not log_path.is_file():
        return ""
    pts = [(r["step"], r["loss/g_total"]) for r in map(json.loads, log_path.read_text().splitlines())
           if "loss/g_total" in r]
    if len(pts) < 2:
        return ""
    xs, ys = np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)
    w, h, m = 480, 160, 30
    sx = lambda x: m + (x - xs.min()) / max(np.ptp(xs), 1e-9) * (w - 2 * m)  # noqa: E731
    sy = lambda y: h - m + -(y - ys.min()) / max(np.ptp(ys), 1e-9) * (h - 2 * m)  # noqa: E731
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
    return (f'<svg width="{w}" height="{h}" role="img" aria-label="training loss">'
            f'<rect width="{w}" height="{h}" fill="#fff" stroke="#ccc"/>'
            f'<polyline fill="none" stroke="#c33" stroke-width="2" points="{path}"/>'
            f'<text x="{m}" y="18" font-size="12">generator loss {ys.max():.3g} → {ys[-1]:.3g}</text>'
            f'<text x="{m}" y="{h - 8}" font-size="11">step {int(xs.min())}</text>'
            f'<text x="{w - m}" y="{h - 8}" font-size="11" text-anchor="end">step {int(xs.max())}</text></svg>')


CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
figure{display:inline-block;margin:2px;text-align:center}figcaption{font-size:11px;color:#555}
img{image-rendering:pixelated}table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #ddd}
table.metrics td{text-align:right;font-variant-numeric:tabular-nums}.row{white-space:nowrap}.note{color:#555}"""


def write_report(out: Path, results, rows: dict, settings: DemoSettings, cfg: ExperimentConfig, timings: dict,
                 log_path: Path | None = None, n_show: int = 6, n_corr: int = 2, faces_html: str = "") -> Path:
    """report.html (self-contained) plus every picture as a PNG in report_files/."""
    from matebit.data.synthetic import KEYPOINT_NAMES

    size = results[0].output.shape[0]
    display = max(128, size)
    rep = Report(out, display)
    scale = display / size
    sections = []

    # Samples: one row per held-out pair.
    lines = []
    for k, r in enumerate(results[:n_show]):
        tiles = [rep.tile(f"pair{k}_structure", gray_rgb(r.structure), "structure x_A"),
                 rep.tile(f"pair{k}_exemplar", r.exemplar, "exemplar y_B"),
                 rep.tile(f"pair{k}_output", r.output,
                          f"output ({r.scores['psnr']:.1f} dB)"),
                 rep.tile(f"pair{k}_truth", r.truth, "ground truth")]
        if r.warped is not None:
            tiles.append(rep.tile(f"pair{k}_warped", r.warped, "warped exemplar (last block)"))
        if r.uncor is not None:
            rel = 1 - r.uncor  # shown as is (not stretched), so an all-white map means every token matched
            tiles.append(rep.tile(f"pair{k}_reliability", gray_rgb(rel),
                                  f"reliability {rel.min():.2f}–{rel.max():.2f} (white = matched)"))
        lines.append(f'<div class=row>{"".join(tiles)}</div>')
    sections.append("<h2>Held-out pairs</h2><p class=note>Structure of one face, style of another; the ground "
                    "truth is rendered exactly. Warped exemplar and reliability are on the 1/8 token grid of the "
                    "last MAT block; reliability is 1 − the weight of X<sub>uncor</sub>.</p>" + "".join(lines))

    # Correspondence for a few query points (the paper's Fig. 1): masked vs full.
    if results[0].rows_masked is not None:
        grid = (size // TOKEN_STRIDE, size // TOKEN_STRIDE)
        idx = [KEYPOINT_NAMES.index(n) for n in QUERY_KEYPOINTS]
        lines = []
        for k, r in enumerate(results[:n_corr]):
            qs = [tuple(r.query_points[i]) for i in idx]
            tiles = [rep.tile(f"corr{k}_queries", mark(upscale(gray_rgb(r.structure), display), qs, QUERY_COLOURS,
                                                       scale), "query points on x_A")]
            for q, (name, i) in enumerate(zip(QUERY_KEYPOINTS, idx)):
                for kind, rows_ in (("masked", r.rows_masked), ("full", r.rows_full)):
                    heat = rows_[i].reshape(grid)
                    img = heat_overlay(upscale(r.exemplar, display), heat)
                    pts, cols, shapes = [tuple(r.true_points[i])], [QUERY_COLOURS[q]], ["o"]
                    if kind == "masked" and r.pred_points is not None:
                        pts.append(tuple(r.pred_points[i]))
                        cols.append(QUERY_COLOURS[q])
                        shapes.append("x")
                    tiles.append(rep.tile(f"corr{k}_{name}_{kind}", mark(img, pts, cols, scale, shapes),
                                          f"{name}: {'MAT (ReLU-masked)' if kind == 'masked' else 'full'}"))
            lines.append(f'<div class=row>{"".join(tiles)}</div>')
        sections.append("<h2>Correspondence (Fig. 1)</h2><p class=note>Where the last MAT block looks in the "
                        "exemplar for each query point: softmax(α·ReLU(cos)) as MAT uses it, and the unmasked "
                        "softmax(α·cos) of a full correspondence. ○ the true matching point, × the argmax "
                        "(what PCK scores).</p>" + "".join(lines))

    # Metrics
    t = cfg.train
    sections.insert(0, (
        f"<h2>Benchmark ({results and len(results)} held-out pairs, {size}×{size})</h2>" + _metrics_html(rows) +
        "<p class=note>PCK: share of keypoints whose attention argmax (last MAT block) lies within 0.05 / 0.10 "
        "of the image side of the true match; the exemplar row's PCK is the identity map. Colour error: per-part "
        "mean colour distance (RGB 0–255) to the truth. PSNR against the exact truth. Trivial answers: copying "
        "the exemplar, and the structure map as an RGB image.</p>"))
    svg = _loss_svg(log_path) if log_path else ""
    setup = (f"<h2>Run</h2><p>Preset <b>{html.escape(cfg.preset)}</b>, {t.steps} steps × batch {t.batch_size} at "
             f"{t.image_size} px on {settings.n_train} synthetic faces, loss recipe <b>{cfg.loss.recipe}</b> "
             f"(pixel L1 stands in for the VGG19 losses, which need pretrained weights"
             + (f"; self-warp matching, weight {cfg.loss.match:g}, is not in the paper" if cfg.loss.match else "")
             + "; not the paper's setting). Times: "
             + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ".</p>" + svg +
             "<details><summary>config</summary><pre>" + html.escape(json.dumps(to_dict(cfg), indent=1)) +
             "</pre></details>")
    page = ("<!doctype html><html><head><meta charset=utf-8><title>MATEBIT demo report</title>"
            f"<style>{CSS}</style></head><body><h1>MATEBIT demo</h1>" + "".join(sections) + faces_html + setup +
            "</body></html>")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


# Public-domain portraits that ship with scikit-image (NASA's astronaut) and with matebit (Grace Hopper, US Navy).
REAL_PAIRS = (("astronaut", "hopper"), ("hopper", "astronaut"))


def real_photos_section(folder: Path) -> str:
    """The shipped face model on public-domain photos, through the pipeline `matebit translate --from-photo hed`
    runs (face alignment, HED, the model, paste-back), as an HTML section; a one-line note when it cannot run."""
    from PIL import Image
    from skimage import data as skdata

    from matebit.errors import MatebitError
    from matebit.recipes.faces import FACE_MODEL, default_exemplar

    hopper = default_exemplar()
    photos = {"astronaut": Image.fromarray(skdata.astronaut())}
    if hopper is not None:
        photos["hopper"] = Image.open(hopper).convert("RGB")
    try:
        from matebit.inference import Translator

        translator = Translator.from_pretrained(FACE_MODEL)
        rows = []
        folder.mkdir(parents=True, exist_ok=True)
        for s_name, e_name in REAL_PAIRS:
            if s_name not in photos or e_name not in photos:
                continue
            result = translator(photos[s_name], photos[e_name], from_photo="hed")
            pair = result.photos[0]
            tiles = {"photo": photos[s_name], "exemplar": photos[e_name], "structure": pair.structure_map,
                     "output": result.image}
            if pair.structure_align is not None:
                tiles["pasted back"] = pair.structure_align.paste_back(pair.structure_photo, result.image)
            cells = []
            for key, im in tiles.items():
                # Inline, as every tile of the report (it is one self-contained file), and as a PNG beside it.
                data = png_bytes(np.asarray(im.convert("RGB")))
                (folder / f"real_{s_name}_{e_name}_{key.replace(' ', '_')}.png").write_bytes(data)
                b64 = base64.b64encode(data).decode("ascii")
                cells.append(f'<figure><img alt="{html.escape(key)}" src="data:image/png;base64,{b64}" height="192" '
                             f'style="image-rendering:auto"><figcaption>{html.escape(key)}</figcaption></figure>')
            rows.append(f"<div class=row>{''.join(cells)}</div>")
    except MatebitError as exc:  # e.g. the landmarks extra is not installed
        return f"<h2>Real photos</h2><p class=note>The shipped face model could not run here: {html.escape(str(exc))}</p>"
    return ("<h2>Real photos: the shipped face model</h2><p class=note>" + html.escape(FACE_MODEL) + " on "
            "public-domain portraits (NASA's astronaut from scikit-image; Grace Hopper, US Navy), through the "
            "pipeline of <code>matebit translate --from-photo hed</code>: both faces aligned, HED edges of the "
            "photo, the model at its trained size, the output pasted back into the photo.</p>" + "".join(rows))


# ---------------------------------------------------------------------------------------------------------------
# The whole demo


def run_demo(out: Path, settings: DemoSettings, progress: bool = True, echo=print,
             threads: int | None = None) -> dict:
    """The whole demo; returns paths, rows and timings (also written to out/quality.json)."""
    from matebit.metrics.moved.synthetic import evaluate_generator, format_table, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    echo(f"[1/4] synthetic data: {settings.n_train} faces at {settings.size} px")
    data = make_data(out / "data", settings)
    timings["data"] = time.perf_counter() - t0

    threads = speed.configure_cpu_threads(threads)
    echo(f"[2/4] training preset {settings.preset!r}: {settings.steps} steps, batch {settings.batch_size}, "
         f"{threads} thread(s)")
    trainer, timings["training"] = train_model(settings, data, out / "run", progress)
    cfg = trainer.cfg

    echo(f"[3/4] benchmark on {settings.n_pairs} held-out cross pairs")
    t1 = time.perf_counter()
    report, results = evaluate_generator(trainer.generator, settings.size, settings.n_pairs,
                                         name=f"MATEBIT ({settings.preset})")
    report.info.update({"preset": settings.preset, "steps": cfg.train.steps, "batch_size": cfg.train.batch_size,
                        "train_seconds": round(timings["training"], 1), "settings": asdict(settings)})
    json_path = write_json(report, out / "quality.json")
    timings["benchmark"] = time.perf_counter() - t1
    echo(format_table(report.rows))

    echo("[4/4] report, ending with the shipped face model on real photos")
    t2 = time.perf_counter()
    faces_html = real_photos_section(out / "report_files")
    html_path = write_report(out, results, report.rows, settings, cfg, timings, out / "run" / "log.jsonl",
                             faces_html=faces_html)
    timings["report"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    return {"report": html_path, "json": json_path, "model": out / "run" / "model", "rows": report.rows,
            "timings": timings}
