"""`matebit demo` and `matebit bench quality` end to end at toy sizes (the real demo takes minutes)."""

from __future__ import annotations

import base64
import json
import re

import pytest

from matebit.cli import run

TOY = ["--preset", "tiny", "--size", "32", "--steps", "2", "--batch-size", "2", "--train-faces", "6",
       "--pairs", "2", "--no-progress"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert run(["demo", "--out", str(out), *TOY]) == 0
    return out


def test_demo_writes_self_contained_report_pngs_and_json(demo_dir, capsys):
    page = (demo_dir / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    real = sorted((demo_dir / "report_files").glob("real_*.png"))  # the shipped face model on public-domain photos
    # 2 pairs x 6 tiles, and per correspondence pair 1 query tile + 4 points x (masked, full); then the real photos
    assert len(images) == 2 * 6 + 2 * (1 + 4 * 2) + len(real)
    assert "Real photos" in page
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert 'src="' + "http" not in page and "<script" not in page  # nothing fetched from elsewhere
    pngs = sorted(p.name for p in (demo_dir / "report_files").glob("*.png"))
    assert len(pngs) == len(images) and "pair0_reliability.png" in pngs and "corr0_nose_tip_full.png" in pngs
    for name in ("ground truth", "warped exemplar", "reliability", "Correspondence", "PCK@0.05", "PSNR"):
        assert name in page
    data = json.loads((demo_dir / "quality.json").read_text())
    assert set(data["rows"]) >= {"MATEBIT (tiny)", "exemplar (copy)", "structure map"}
    assert data["size"] == 32 and data["n_pairs"] == 2 and data["info"]["steps"] == 2
    assert (demo_dir / "run" / "model" / "model.safetensors").is_file()


def test_bench_scores_a_saved_model(demo_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    assert run(["bench", "quality", "--synthetic", "--model", str(demo_dir / "run" / "model"), "--pairs", "2",
                "--out", str(out), "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert "| exemplar (copy) |" in printed
    data = json.loads((out / "quality.json").read_text())
    assert str(demo_dir / "run" / "model") in data["rows"] and data["size"] == 32


@pytest.mark.parametrize("argv", [["demo", "--size", "40"], ["demo", "--steps", "0"],
                                  ["demo", "--preset", "nope"], ["bench", "quality", "--model", "x"],
                                  ["bench", "quality", "--synthetic"]])
def test_bad_input_is_one_line_exit_2(argv, tmp_path, capsys):
    assert run(argv + (["--out", str(tmp_path / "o")] if argv[0] == "demo" else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
    assert not (tmp_path / "o").exists()  # refused before anything was written
