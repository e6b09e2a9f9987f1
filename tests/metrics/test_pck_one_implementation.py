"""One PCK for every command: `matebit eval` and `matebit bench quality` score the same rows the same way."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from matebit.checkpoint import load_pretrained
from matebit.cli import run
from matebit.data.synthetic import SyntheticFaces
from matebit.metrics.moved.synthetic import BENCH_SEED, evaluate_generator, held_out_pairs
from matebit.metrics import read_jsonl, soft_points, token_centres
from matebit.metrics.correspondence import grid_of, pck_metric, probe_matches
from matebit.metrics.evalset import EvalSet, Landmarks

SIZE, PAIRS = 64, 6


def _benchmark_pairs_as_data_folder(root):
    """The benchmark's faces and pairs written as a paired folder: val = the structure faces, each listing its
    benchmark exemplar (face j under the pair's pose change, stem m<j>) first in pairs.txt, keypoints as
    {name: [x, y]}."""
    faces = SyntheticFaces(2 * PAIRS, SIZE, BENCH_SEED)
    for sub in ("images", "structure", "keypoints"):
        (root / sub).mkdir(parents=True)

    def write(stem, sample):
        Image.fromarray(sample.image).save(root / "images" / f"{stem}.png")
        Image.fromarray(sample.structure).save(root / "structure" / f"{stem}.png")
        (root / "keypoints" / f"{stem}.json").write_text(json.dumps(sample.keypoints))

    pairs = held_out_pairs(PAIRS, BENCH_SEED)
    for p in pairs:
        write(f"{p.structure_index:06d}", faces[p.structure_index])
        write(f"m{p.exemplar_index:06d}",
              faces.moved_exemplar(p.exemplar_index, np.random.default_rng(p.move_seed)))
    (root / "val.txt").write_text("".join(f"{p.structure_index:06d}\n" for p in pairs))
    (root / "pairs.txt").write_text("".join(f"{p.structure_index:06d} m{p.exemplar_index:06d}\n" for p in pairs))
    return root


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("pck")
    return tiny_model, _benchmark_pairs_as_data_folder(root / "data"), root


@pytest.mark.parametrize("rows", ["used", "masked"])
def test_eval_and_bench_quality_give_the_same_pck(model_and_data, rows, monkeypatch):
    model_dir, data, root = model_and_data
    out = root / f"eval-{rows}"
    assert run(["eval", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--metrics", "pck",
                "--dtype", "fp32", "--device", "cpu", "--pck-rows", rows]) == 0
    (result,) = read_jsonl(out / "metrics.jsonl")
    assert result.num_samples == PAIRS and f"rows={rows} (last MAT block)" in result.notes

    generator, _ = load_pretrained(model_dir)
    if rows == "masked":  # the benchmark scores "used" rows; make them the masked ones to compare that path too
        from matebit.models.generator import CorrespondenceProbe
        original = CorrespondenceProbe.rows
        monkeypatch.setattr(CorrespondenceProbe, "rows",
                            lambda self, kind="used", block=-1: original(self, "masked" if kind == "used" else kind,
                                                                         block))
    report, results = evaluate_generator(generator, SIZE, n_pairs=PAIRS, seed=BENCH_SEED)
    bench = report.rows["model"]
    for a in ("0.05", "0.1"):
        assert result.values[f"pck@{a}"] == pytest.approx(bench[f"pck@{a}"], abs=1e-12), a
    # The identity guess of `matebit eval` is the benchmark's "exemplar (copy)" PCK, the ceiling its grid ceiling.
    for a in ("0.05", "0.1"):
        assert result.values[f"identity@{a}"] == pytest.approx(report.rows["exemplar (copy)"][f"pck@{a}"])
        assert result.values[f"ceiling@{a}"] == pytest.approx(report.rows["grid ceiling (PCK only)"][f"pck@{a}"])
    # Point for point, not only on average.
    saved = sorted((out / "samples" / "predicted_points").glob("*.json"))
    assert len(saved) == PAIRS
    for path, r in zip(saved, results):
        np.testing.assert_allclose(json.loads(path.read_text())["points"], r.pred_points, atol=1e-9)
    report_md = (out / "report.md").read_text()
    assert "PCK@0.02" in report_md and "identity guess" in report_md and "grid ceiling" in report_md


def test_console_shows_three_thresholds_and_the_identity_guess(model_and_data, capsys):
    model_dir, data, root = model_and_data
    assert run(["eval", "--model", str(model_dir), "--data", str(data), "--out", str(root / "console"),
                "--metrics", "pck", "--dtype", "fp32", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for text in ("PCK@0.02", "PCK@0.05", "PCK@0.10", "identity guess", "grid ceiling"):
        assert text in out


def test_probe_matches_rows_by_name_and_soft_positions(model_and_data):
    model_dir, data, _ = model_and_data
    generator, _ = load_pretrained(model_dir)
    faces = SyntheticFaces(2, SIZE, 1)
    from matebit.metrics.moved.synthetic import QualityPair, pair_tensors
    st, ex = pair_tensors(faces, [QualityPair(0, 1)])
    pts = np.array(list(faces[0].keypoints.values()))
    m = probe_matches(generator, st, ex, pts)
    grid = grid_of((SIZE, SIZE))
    assert m.grid_hw == grid and m.image_size == (SIZE, SIZE)
    for kind in ("used", "masked", "full"):
        r = m.rows(kind)
        assert r.shape == (1, len(pts), grid[0] * grid[1])
        np.testing.assert_allclose(r.sum(-1), 1.0, atol=1e-4)
        mean, spread = m.soft(kind)
        assert mean.shape == (1, len(pts), 2) and spread.shape == (1, len(pts)) and (spread >= 0).all()
    # The paper's block aggregates with the masked rows.
    torch.testing.assert_close(m.rows("used"), m.rows("masked"))
    with pytest.raises(ValueError, match="rows must be"):
        m.rows("nope")


def test_soft_points_hand_built():
    grid, size = (2, 2), (16, 16)  # cells 8 px, centres 4 and 12
    mean, spread = soft_points(np.array([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0]]), grid, size)
    np.testing.assert_allclose(mean, [[4, 4], [8, 4]])
    np.testing.assert_allclose(spread, [0, 4])
    np.testing.assert_allclose(token_centres([[0.1, 15.9], [8.0, 7.99]], grid, size), [[4, 12], [12, 4]])


def test_pck_metric_identity_and_ceiling_on_a_hand_case():
    true = np.array([[4.0, 4.0], [20.0, 20.0]])  # 32x32 image, 4x4 grid of 8 px cells
    pred = np.array([[4.0, 4.0], [4.0, 4.0]])
    src = np.array([[4.0, 4.0], [28.0, 28.0]])
    r = pck_metric(EvalSet(exemplar_landmarks=[Landmarks(true, (32, 32))], predicted_points=[pred],
                           landmarks=[Landmarks(src, (32, 32))]))
    assert r.values["pck@0.05"] == 0.5 and r.values["pck"] == 0.5
    assert r.values["identity@0.1"] == 0.5  # the first point stays put; (28, 28) is 11 px from (20, 20)
    assert r.values["ceiling@0.02"] == 1.0  # both true points are token centres
