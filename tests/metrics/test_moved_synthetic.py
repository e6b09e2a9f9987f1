"""The synthetic benchmark's scores on hand-made cases, and one tiny end-to-end run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from matebit.config import model_preset
from matebit.data.synthetic import KEYPOINT_NAMES, SyntheticFaces
from matebit.metrics import attention_to_points
from matebit.models import MATEBITGenerator
from matebit.metrics.moved import synthetic as benchmark
from matebit.metrics.moved.synthetic import (PSNR_CAP, PairResult, QualityPair, capped_psnr, evaluate_baselines,
                             evaluate_generator, format_table, held_out_pairs, part_colour_error, structure_rgb,
                             summarise)


@pytest.fixture(scope="module")
def face():
    return SyntheticFaces(2, 32, seed=3).cross(0, 1)


def test_colour_error_of_truth_is_zero(face):
    assert part_colour_error(face.image, face.image, face.labels) == 0.0


def test_colour_error_is_mean_over_parts_of_mean_colour_distance():
    labels = np.array([[0, 0], [1, 1]])
    truth = np.zeros((2, 2, 3), np.uint8)
    out = truth.copy()
    out[1, :, 0] = 30  # part 1 off by 30 in red, part 0 exact
    assert part_colour_error(out, truth, labels) == pytest.approx(15.0)
    # Only the part's MEAN colour counts: a pattern that averages to the truth costs nothing.
    out = truth.copy() + 10
    out[0, 0] = 0
    out[0, 1] = 20
    assert part_colour_error(out, truth + 10, labels) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        part_colour_error(out[:1], truth, labels)


def test_psnr_capped_and_known_value(face):
    assert capped_psnr(face.image, face.image) == PSNR_CAP
    a = np.zeros((4, 4, 3), np.uint8)
    assert capped_psnr(a, a + 1) == pytest.approx(10 * math.log10(255 ** 2))


def token_centres(points, size):
    from matebit.config import TOKEN_STRIDE
    from matebit.metrics.correspondence import token_centres as centres

    return centres(points, (size // TOKEN_STRIDE,) * 2, (size, size))


def test_token_centres_and_perfect_correspondence_pck():
    size = 64
    grid = (size // 8, size // 8)
    rng = np.random.default_rng(0)
    true = rng.uniform(0, size, (50, 2))

    def one_hot(points):
        idx = (np.floor(points[:, 1] / 8) * grid[1] + np.floor(points[:, 0] / 8)).astype(int)
        rows = np.zeros((len(points), grid[0] * grid[1]))
        rows[np.arange(len(points)), idx] = 1
        return rows

    pred = attention_to_points(one_hot(true), grid, (size, size))
    np.testing.assert_allclose(pred, token_centres(true, size))
    got = benchmark._pooled_pck([pred], [true], size)
    assert got["pck@0.1"] == 1.0  # a token is 8 px: its centre is at most 5.7 px < 6.4 px away
    centred = token_centres(true, size)  # points at token centres: a perfect argmax is exact
    assert benchmark._pooled_pck([attention_to_points(one_hot(centred), grid, (size, size))], [centred],
                               size) == {"pck@0.05": 1.0, "pck@0.1": 1.0}
    wrong = attention_to_points(one_hot(size - 1 - centred), grid, (size, size))
    assert benchmark._pooled_pck([wrong], [centred], size)["pck@0.1"] < 0.2


def _result(face, output, pred=None):
    pts = np.array(list(face.keypoints.values()))
    return PairResult(pair=QualityPair(0, 1), structure=face.structure, exemplar=face.image, truth=face.image,
                      labels=face.labels, output=output, warped=None, uncor=None, query_points=pts,
                      true_points=pts, pred_points=pred, rows_masked=None, rows_full=None,
                      scores={"colour_error": part_colour_error(output, face.image, face.labels),
                              "psnr": capped_psnr(output, face.image)})


def test_baselines_and_summary_on_hand_made_pairs(face):
    size = face.image.shape[0]
    pts = np.array(list(face.keypoints.values()))
    perfect = _result(face, face.image.copy(), pred=token_centres(pts, size))
    rows = {"model": summarise([perfect], size), **evaluate_baselines([perfect], size)}
    assert rows["model"]["colour_error"] == 0.0 and rows["model"]["psnr"] == PSNR_CAP
    ceiling = rows["grid ceiling (PCK only)"]
    assert rows["model"]["pck@0.1"] == ceiling["pck@0.1"] > 0.3  # 32 px: 3.2 px, less than a 4 px half-token
    # Here the exemplar IS the truth, so copying it is perfect; the structure map is far off.
    assert rows["exemplar (copy)"]["colour_error"] == 0.0
    assert rows["structure map"]["psnr"] < 15 and rows["structure map"]["colour_error"] > 20
    assert rows["model"]["pck@0.05"] == ceiling["pck@0.05"] < 1
    assert structure_rgb(face.structure).shape == face.image.shape
    table = format_table(rows)
    assert "exemplar (copy)" in table and "—" in table  # no PCK for the structure map
    assert format_table(rows, markdown=True).startswith("| ")


def test_evaluate_generator_end_to_end_writes_json(tmp_path):
    torch.manual_seed(0)
    gen = MATEBITGenerator(model_preset("tiny"))
    report, results = evaluate_generator(gen, 32, n_pairs=3, batch_size=2, name="tiny")
    assert len(results) == 3 and [r.pair for r in results] == held_out_pairs(3)
    assert set(report.rows) == {"tiny", "exemplar (copy)", "structure map", "grid ceiling (PCK only)"}
    row = report.rows["tiny"]
    assert 0 <= row["pck@0.05"] <= row["pck@0.1"] <= 1
    assert row["colour_error"] > 0 and 0 < row["psnr"] < PSNR_CAP
    r = results[0]
    assert r.output.shape == (32, 32, 3) and r.warped.shape == (4, 4, 3) and r.uncor.shape == (4, 4)
    assert r.rows_masked.shape == (len(r.query_points), 16)
    np.testing.assert_allclose(r.rows_masked.sum(1), 1, atol=1e-4)
    # The pair's truth is the exact cross render of (structure face, exemplar face).
    faces = SyntheticFaces(6, 32, benchmark.BENCH_SEED)
    np.testing.assert_array_equal(r.truth, faces.cross(0, 1).image)
    # The exemplar is face 1 moved by its pair's seeded pose change; its keypoints are the true matches.
    moved = faces.moved_exemplar(1, np.random.default_rng(r.pair.move_seed))
    np.testing.assert_array_equal(r.exemplar, moved.image)
    np.testing.assert_allclose(r.true_points, [moved.keypoints[k] for k in KEYPOINT_NAMES])
    assert not np.allclose(moved.image, faces[1].image)
    path = benchmark.write_json(report, tmp_path / "q.json")
    data = json.loads(path.read_text())
    assert data["rows"]["structure map"]["pck@0.05"] is None  # NaN is written as null
    assert data["n_pairs"] == 3 and "protocol" in data
