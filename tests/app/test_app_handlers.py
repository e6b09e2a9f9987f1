"""The web demo's logic without a browser: upload checks, sketch reading, translate and correspondence handlers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from matebit.app import (
    Limits,
    ServeApp,
    UploadRefused,
    check_upload,
    fit_side,
    for_display,
    heat_overlay,
    sketch_to_structure,
    write_examples,
)
from matebit.errors import InputError


@pytest.fixture(scope="module")
def translator():
    from matebit.config import model_preset
    from matebit.inference import Translator
    from matebit.models.generator import MATEBITGenerator

    torch.manual_seed(0)
    cfg = model_preset("tiny")
    return Translator(MATEBITGenerator(cfg), cfg, device="cpu")


@pytest.fixture
def files(tmp_path):
    s = Image.new("L", (48, 40), 0)
    ImageDraw.Draw(s).ellipse([8, 6, 40, 34], outline=255, width=2)
    s.save(tmp_path / "structure.png")
    ex = np.random.default_rng(0).integers(0, 255, (36, 52, 3), dtype=np.uint8)
    Image.fromarray(ex).save(tmp_path / "exemplar.png")
    return tmp_path


def test_check_upload_accepts_an_image(files):
    im = check_upload(files / "exemplar.png", "Exemplar", Limits(), upload_root=files)
    assert im.size == (52, 36)


@pytest.mark.parametrize("case, message", [
    ("text", "Exemplar refused: this file is not an image"),
    ("bytes", "Exemplar refused: the file is"),
    ("pixels", "Exemplar refused: 1200x1000 is 1,200,000 pixels; the limit is 1,000,000."),
    ("empty", "Exemplar refused: the file is empty."),
    ("truncated", "Exemplar refused:"),
    ("outside", "Exemplar refused: only files uploaded through this page are read."),
    ("missing", "Exemplar refused: the upload is missing"),
])
def test_check_upload_refusals(tmp_path, case, message):
    root = tmp_path / "uploads"
    root.mkdir()
    path = root / "upload.png"
    if case == "text":
        path.write_text("hello\n" * 10)
    elif case == "bytes":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2 * 1024 * 1024))
    elif case == "pixels":
        Image.new("RGB", (1200, 1000)).save(path)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.png")
        path.write_bytes((tmp_path / "full.png").read_bytes()[:60])
    elif case == "outside":
        path = tmp_path / "elsewhere.png"
        Image.new("RGB", (32, 32)).save(path)
    limits = Limits(max_bytes=1024 * 1024, max_pixels=1_000_000)
    with pytest.raises(UploadRefused) as info:
        check_upload(path, "Exemplar", limits, upload_root=root)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, InputError)


def test_check_upload_rejects_a_path_escaping_the_root(tmp_path):
    (tmp_path / "uploads").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "secret.png")
    with pytest.raises(UploadRefused, match="only files uploaded"):
        check_upload(tmp_path / "uploads" / ".." / "secret.png", "Photo", Limits(), upload_root=tmp_path / "uploads")


def test_sketch_to_structure_transparent_and_paper():
    canvas = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).line([5, 20, 35, 20], fill=(0, 0, 0, 255), width=3)  # black ink, transparent canvas
    out = np.asarray(sketch_to_structure({"composite": canvas, "layers": [], "background": None}))
    assert out[20, 20] == 255 and out[5, 5] == 0
    paper = Image.new("RGB", (40, 40), "white")
    ImageDraw.Draw(paper).line([20, 5, 20, 35], fill="black", width=3)  # dark lines on white paper
    out = np.asarray(sketch_to_structure(paper))
    assert out[20, 20] == 255 and out[5, 5] == 0
    with pytest.raises(UploadRefused, match="draw something"):
        sketch_to_structure({"composite": Image.new("RGBA", (40, 40), (0, 0, 0, 0))})
    with pytest.raises(UploadRefused, match="draw something"):
        sketch_to_structure(None)


def test_fit_side_and_display_sizes():
    assert fit_side(Image.new("RGB", (1000, 500)), 256).size == (256, 128)
    assert fit_side(Image.new("RGB", (64, 32)), 256).size == (64, 32)  # never upscaled
    assert for_display(Image.new("RGB", (64, 48))).size == (256, 192)  # whole multiples: clicks map back exactly
    assert for_display(Image.new("RGB", (300, 200))).size == (300, 200)


def test_heat_overlay_peaks_in_colour():
    heat = np.zeros((20, 30), np.float32)
    heat[5, 7] = 1.0
    out = np.asarray(heat_overlay(Image.new("RGB", (30, 20), (128, 128, 128)), heat)).astype(int)
    assert out.shape == (20, 30, 3)
    assert out[5, 7, 0] > 150 and out[5, 7, 2] < 60  # the peak is red
    assert abs(out[0, 0, 0] - out[0, 0, 2]) < 3  # elsewhere the exemplar, greyed


def test_translate_and_correspondence(translator, files):
    app = ServeApp(translator, Limits(work_side=256), upload_root=files)
    structure = app.structure_from("upload", files / "structure.png", None)
    t = app.translate(structure, files / "exemplar.png")
    assert t.output.size == (48, 40) and t.warped.size == (48, 40) and t.reliability.size == (48, 40)
    assert t.exemplar.size == (52, 36)
    marked, masked, full = app.correspondence(t.structure, t.exemplar, 10, 12)
    assert marked.size == (48, 40) and masked.size == full.size == (52, 36)
    assert np.asarray(marked)[12, 10 + 3].tolist() != np.asarray(t.structure.convert("RGB"))[12, 13].tolist()
    _, masked2, _ = app.correspondence(t.structure, t.exemplar, 40, 30)
    assert np.asarray(masked).tobytes() != np.asarray(masked2).tobytes()  # another point, another heat map
    # Points outside the picture (a click on the border) are clamped, not refused.
    app.correspondence(t.structure, t.exemplar, 500, -3)


def test_translate_refuses_a_bad_exemplar_with_a_message(translator, files):
    (files / "bad.png").write_text("no")
    app = ServeApp(translator, Limits(), upload_root=files)
    with pytest.raises(UploadRefused, match="Exemplar refused: this file is not an image"):
        app.translate(Image.open(files / "structure.png"), files / "bad.png")
    with pytest.raises(UploadRefused, match="Structure map: nothing uploaded"):
        app.structure_from("upload", None, None)


def test_convert_photo(translator, files):
    app = ServeApp(translator, Limits(), upload_root=files)
    edges = app.convert_photo(files / "exemplar.png", "canny")
    assert edges.mode == "L" and edges.size == (52, 36)
    with pytest.raises(UploadRefused, match="Unknown converter"):
        app.convert_photo(files / "exemplar.png", "pose")


def test_examples_from_a_paired_folder(tmp_path):
    for sub in ("images", "structure"):
        (tmp_path / "data" / sub).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(tmp_path / "data" / sub / f"{i:06d}.png")
    structures, exemplars = write_examples(tmp_path / "out", tmp_path / "data")
    assert len(structures) == 3 and len(exemplars) == 3
    assert all(p.startswith(str(tmp_path / "out")) for p in structures + exemplars)
