import json

import numpy as np
import pytest
from PIL import Image

import matebit.metrics.registry as registry
from matebit.metrics import (EvalSet, MetricError, MetricOutput, MetricResult, PROTOCOLS, append_jsonl,
                             compute_metric, evaluate, list_metrics, load_landmarks, read_jsonl, register_metric,
                             report_markdown)


def test_all_metrics_registered_with_one_line_protocols():
    assert set(list_metrics()) >= {"fid", "kid", "swd", "texture", "color", "semantic", "lpips", "psnr", "ssim",
                                   "pck", "timing"}
    assert all(p and "\n" not in p for p in PROTOCOLS.values())


def test_register_compute_and_needs(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_metric("_count", protocol="counts outputs", needs=("outputs", "targets"))
    def _count(items, scale=1.0):
        """Number of outputs times scale."""
        return MetricOutput({"_count": len(items.outputs) * scale})

    a = np.zeros((4, 4, 3), np.uint8)
    r = compute_metric("_count", EvalSet(outputs=[a, a], targets=[a, a]), run="m1", scale=2.0)
    assert (r.name, r.value, r.num_samples, r.protocol, r.run) == ("_count", 4.0, 2, "counts outputs", "m1")
    assert set(r.versions) == {"torch", "torchvision", "numpy", "matebit"}
    with pytest.raises(MetricError, match="needs targets"):
        compute_metric("_count", EvalSet(outputs=[a]))
    with pytest.raises(KeyError, match="unknown metric"):
        compute_metric("nope", EvalSet(outputs=[a]))
    with pytest.raises(ValueError, match="docstring"):
        register_metric("_nodoc", protocol="x")(lambda items: None)


def _result(name, value, run, net=None, protocol="p"):
    return MetricResult(name=name, values={name: value}, protocol=protocol, feature_network=net, num_samples=10,
                        versions={}, time="t", elapsed_s=0.0, run=run)


def test_jsonl_round_trip_and_markdown_table(tmp_path):
    p = tmp_path / "res.jsonl"
    append_jsonl(_result("semantic", 0.949, "MATEBIT", "vgg19"), p)
    append_jsonl(_result("fid[hed-vgg16]", 11.54, "MATEBIT", "hed-vgg16 (substitute)"), p)
    append_jsonl(_result("swd", 13.2, "MATEBIT"), p)
    append_jsonl(_result("swd", 20.0, "baseline"), p)
    append_jsonl(_result("psnr", 21.0, "baseline"), p)
    rs = read_jsonl(p)
    assert [r.name for r in rs] == ["semantic", "fid[hed-vgg16]", "swd", "swd", "psnr"]
    assert json.loads(p.read_text().splitlines()[0])["values"] == {"semantic": 0.949}
    md = report_markdown([p])
    lines = md.splitlines()
    assert lines[0] == "| run | FID[hed-vgg16] ↓ [1] | SWD ↓ [2] | Semantic ↑ [3] | PSNR ↑ [4] |"
    assert lines[2] == "| MATEBIT | 11.5 | 13.2 | 0.949 | – |"
    assert lines[3] == "| baseline | – | 20.0 | – | 21.0 |"
    assert "[1] FID[hed-vgg16]: feature network hed-vgg16 (substitute); n = 10; p" in md
    assert "feature network vgg19" in md


def test_read_jsonl_names_bad_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text("{not json}\n")
    with pytest.raises(MetricError, match="bad.jsonl:1"):
        read_jsonl(p)


def _png(path, value, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)


def test_from_folder_matches_stems_and_notes_jpeg(tmp_path):
    for s, v in (("a", 10), ("b", 20)):
        _png(tmp_path / "outputs" / f"{s}.png", v)
        _png(tmp_path / "targets" / f"{s}.png", v + 5)
        _png(tmp_path / "exemplars" / f"{s}.jpg", v)
    es = EvalSet.from_folder(tmp_path)
    assert es.stems == ["a", "b"] and len(es) == 2
    assert es.images("targets")[1][0, 0, 0] == 25
    assert es.notes() == ["exemplars include JPEG files"]
    r = compute_metric("psnr", es)
    assert r.notes == ["exemplars include JPEG files"]
    assert r.value == pytest.approx(10 * np.log10(255 ** 2 / 25))


def test_from_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="outputs"):
        EvalSet.from_folder(tmp_path)
    _png(tmp_path / "outputs" / "a.jpg", 0)
    with pytest.raises(ValueError, match="must be PNG"):
        EvalSet.from_folder(tmp_path)
    _png(tmp_path / "outputs" / "b.png", 0)
    _png(tmp_path / "targets" / "b.png", 0)
    with pytest.raises(ValueError, match="'a'"):
        EvalSet.from_folder(tmp_path, allow_jpeg_outputs=True)


def test_evalset_lengths_must_agree():
    a = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="targets has 1"):
        EvalSet(outputs=[a, a], targets=[a])


def test_landmark_json(tmp_path):
    p = tmp_path / "001.json"
    p.write_text('{"template": "webmorph-FRL-189", "size": [512, 400], "points": [[1.5, 2], [3, 4]]}')
    lm = load_landmarks(p)
    assert lm.size == (512, 400) and lm.template == "webmorph-FRL-189"
    np.testing.assert_array_equal(lm.points, [[1.5, 2.0], [3.0, 4.0]])
    p.write_text('{"points": [[1, 2]]}')
    with pytest.raises(ValueError, match="001.json"):
        load_landmarks(p)


def test_evaluate_appends_one_line_per_metric(tmp_path):
    a = np.full((16, 16, 3), 100, np.uint8)  # SSIM's 11x11 window needs at least 11 px
    out = tmp_path / "r.jsonl"
    rs = evaluate(EvalSet(outputs=[a], targets=[a + 5]), ["psnr", "ssim"], out, run="toy")
    assert [r.name for r in rs] == ["psnr", "ssim"]
    assert [r.run for r in read_jsonl(out)] == ["toy", "toy"]
    with pytest.raises(ValueError, match="not requested"):
        evaluate(EvalSet(outputs=[a], targets=[a]), ["psnr"], None, metric_opts={"fid": {}})
