"""Issue 14, `matebit translate` and `Translator`: the cases a hostile user broke, each as a test.

Items (issue 14's numbering): 1 outputs onto inputs, 2 aux outputs onto outputs, 5 non-finite weights and outputs,
6 a folder batch to an image name, 7 big photos (--max-size, progress), 8 16-pixel sides, 9 full disk and resuming
(--skip-existing, --skip-errors), 10 --from-photo pose and unknown devices, 12 symlink loops, BOMs and the training
pairs.txt, 13 temp files of a killed run, 15 --quiet; and issue 18's trained size.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hostile_helpers import command_help, edges, gradient, image_folder, read_only_under, snapshot
from matebit.cli import run
from matebit.errors import UserError


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("MATEBIT_DEBUG", raising=False)


def translate(capsys, *args) -> tuple[int, str, str]:
    code = run(["translate", "--device", "cpu", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("matebit translate: error:"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def net_sizes(monkeypatch) -> list[tuple[int, int]]:
    """The (height, width) of every batch the network runs on, in order."""
    from matebit.inference import Translator

    seen = []
    original = Translator._forward

    def spy(self, structure, exemplar):
        seen.append(tuple(structure.shape[-2:]))
        return original(self, structure, exemplar)

    monkeypatch.setattr(Translator, "_forward", spy)
    return seen


@pytest.fixture
def dataset(tmp_path) -> Path:
    """D/structure/*.png and D/images/*.png with the same stems, as a data set is laid out."""
    root = tmp_path / "D"
    image_folder(root / "structure", ["a.png", "b.png"])
    image_folder(root / "images", ["a.png", "b.png"], kind="gradient")
    return root


# -- 1: outputs never resolve to an input ----------------------------------------------------------------------


@pytest.mark.parametrize("out", ["images", "structure", ".", "images/../images"])
def test_item01_out_on_an_input_folder_is_refused_and_inputs_stay_byte_identical(tiny_model, dataset, capsys, out):
    before = snapshot(dataset)
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", dataset / "structure",
                             "--exemplar", dataset / "images", "--out", dataset / out)
    assert code == 2, err
    line = one_error_line(err)
    assert "input" in line and str(dataset) in line, line
    assert snapshot(dataset) == before


def test_item01_out_onto_an_input_file_is_refused(tiny_model, dataset, capsys):
    exemplar = dataset / "images" / "a.png"
    before = exemplar.read_bytes()
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", dataset / "structure" / "a.png",
                             "--exemplar", exemplar, "--out", exemplar)
    assert code == 2
    assert "a.png" in one_error_line(err) and "input" in err
    assert exemplar.read_bytes() == before


def test_item01_out_onto_an_input_through_a_symlink_is_refused(tiny_model, dataset, tmp_path, capsys):
    (tmp_path / "alias").symlink_to(dataset / "images")
    before = snapshot(dataset)
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", dataset / "structure",
                             "--exemplar", dataset / "images", "--out", tmp_path / "alias")
    assert code == 2
    one_error_line(err)
    assert snapshot(dataset) == before


def test_item01_pairs_list_outputs_onto_listed_inputs_are_refused(tiny_model, tmp_path, capsys):
    folder = image_folder(tmp_path / "in", ["s.png"])
    Image.fromarray(gradient(48, 40)).save(folder / "e.png")
    (tmp_path / "list.txt").write_text("in/s.png in/e.png\n")
    before = snapshot(folder)
    code, _, err = translate(capsys, "--model", tiny_model, "--pairs", tmp_path / "list.txt", "--out", folder)
    assert code == 2
    assert "input" in one_error_line(err)
    assert snapshot(folder) == before


# -- 2: outputs never resolve to each other --------------------------------------------------------------------


def test_item02_save_uncor_onto_out_folder_is_refused(tiny_model, dataset, tmp_path, capsys):
    out = tmp_path / "results"
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", dataset / "structure",
                             "--exemplar", dataset / "images", "--out", out, "--save-uncor", out)
    assert code == 2
    line = one_error_line(err)
    assert "--save-uncor" in line and "--out" in line, line
    assert not list(out.glob("*.png")) if out.exists() else True


def test_item02_save_warped_onto_the_single_output_is_refused(tiny_model, dataset, tmp_path, capsys):
    out = tmp_path / "o.png"
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", dataset / "structure" / "a.png",
                             "--exemplar", dataset / "images" / "a.png", "--out", out, "--save-warped", out)
    assert code == 2
    assert "--save-warped" in one_error_line(err)
    assert not out.exists()


def test_item02_save_warped_and_save_uncor_onto_each_other_are_refused(tiny_model, dataset, tmp_path, capsys):
    aux = tmp_path / "aux"
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", dataset / "structure",
                             "--exemplar", dataset / "images", "--out", tmp_path / "o",
                             "--save-warped", aux, "--save-uncor", aux)
    assert code == 2
    line = one_error_line(err)
    assert "--save-warped" in line and "--save-uncor" in line, line


# -- 5: non-finite weights and outputs -------------------------------------------------------------------------


def _edited_model(src: Path, dst: Path, edit) -> Path:
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    state = load_file(dst / "model.safetensors")
    edit(state)
    save_file(state, dst / "model.safetensors")
    return dst


def test_item05_nan_weights_are_refused_naming_the_model_folder(tiny_model, dataset, tmp_path, capsys):
    def poison(state):
        key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 4)
        state[key][0] = float("nan")

    model = _edited_model(tiny_model, tmp_path / "nan_model", poison)
    code, _, err = translate(capsys, "--model", model, "--structure", dataset / "structure" / "a.png",
                             "--exemplar", dataset / "images" / "a.png", "--out", tmp_path / "o.png")
    assert code == 2, err
    line = one_error_line(err)
    assert "nan_model" in line and "non-finite" in line, line
    assert not (tmp_path / "o.png").exists()


def test_item05_non_finite_outputs_are_refused_naming_the_model(tiny_model, dataset, tmp_path, capsys):
    from matebit.inference import Translator

    def overflow(state):  # finite weights (biases near float32's maximum) whose activations overflow
        for k, v in state.items():
            if k.endswith("bias"):
                state[k] = torch.full_like(v, 3e38)

    model = _edited_model(tiny_model, tmp_path / "hot_model", overflow)
    code, _, err = translate(capsys, "--model", model, "--structure", dataset / "structure" / "a.png",
                             "--exemplar", dataset / "images" / "a.png", "--out", tmp_path / "o.png",
                             "--dtype", "fp32")
    assert code == 2, err
    line = one_error_line(err)
    assert "hot_model" in line and "non-finite" in line, line
    assert not (tmp_path / "o.png").exists()
    with pytest.raises(UserError, match="non-finite"):
        Translator.from_pretrained(model, device="cpu", dtype="fp32")(torch.rand(3, 32, 32), torch.zeros(3, 32, 32))


# -- 6: a folder batch to an image name ------------------------------------------------------------------------


def test_item06_folder_batch_to_an_image_name_is_refused(tiny_model, dataset, tmp_path, capsys):
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", dataset / "structure",
                             "--exemplar", dataset / "images", "--out", tmp_path / "x.png")
    assert code == 2
    assert "x.png" in one_error_line(err)
    assert not (tmp_path / "x.png").exists()


# -- 7: big photos are capped (--max-size), folders show progress -----------------------------------------------


def test_item07_a_big_structure_is_capped_and_resized_back(tiny_model, tmp_path, capsys, net_sizes):
    Image.fromarray(edges(2048, 1536)).save(tmp_path / "big.png")
    Image.fromarray(gradient(640, 480)).save(tmp_path / "ex.png")
    seen = net_sizes
    start = time.monotonic()
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", tmp_path / "big.png",
                             "--exemplar", tmp_path / "ex.png", "--out", tmp_path / "o.png", "--max-size", "128")
    assert code == 0, err
    assert time.monotonic() - start < 60
    assert seen == [(96, 128)]
    assert Image.open(tmp_path / "o.png").size == (2048, 1536)


def test_item07_max_size_defaults_to_1024_and_applies_before_photo_conversion(tiny_model, tmp_path, capsys,
                                                                               monkeypatch):
    from matebit.cli import parse
    from matebit.convert import CONVERTERS

    assert parse(["translate", "--model", "m", "--out", "o"]).max_size == 1024
    photo = Image.fromarray(gradient(1500, 1000))
    photo.save(tmp_path / "photo.jpg")
    photo.resize((64, 48)).save(tmp_path / "ex.jpg")
    sizes = []
    canny = CONVERTERS["canny"]

    def recording(image, *a, **kw):
        sizes.append(image.size)
        return canny(image, *a, **kw)

    monkeypatch.setitem(CONVERTERS, "canny", recording)
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", tmp_path / "photo.jpg", "--from-photo",
                             "canny", "--exemplar", tmp_path / "ex.jpg", "--out", tmp_path / "o.png",
                             "--max-size", "96")
    assert code == 0, err
    assert sizes == [(96, 64)]
    assert Image.open(tmp_path / "o.png").size == (1500, 1000)


def test_item07_folders_show_progress_on_stderr_unless_quiet(tiny_model, dataset, tmp_path, capsys):
    code, out, err = translate(capsys, "--model", tiny_model, "--structure", dataset / "structure",
                               "--exemplar", dataset / "images", "--out", tmp_path / "a")
    assert code == 0, err
    assert "translate" in err and "2/2" in err, err  # compact lines: stderr is not a terminal here
    assert "\r" not in err
    code, out, err = translate(capsys, "--model", tiny_model, "--structure", dataset / "structure",
                               "--exemplar", dataset / "images", "--out", tmp_path / "b", "--quiet")
    assert code == 0 and err == "", err


# -- 8: 16-pixel sides -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(16, 64), (64, 16), (16, 16), (16, 2048), (17, 17)])
def test_item08_sixteen_pixel_sides_translate(tiny_model, tmp_path, capsys, size):
    w, h = size
    Image.fromarray(edges(w, h)).save(tmp_path / "s.png")
    Image.fromarray(gradient(w, h)).save(tmp_path / "e.png")
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", tmp_path / "s.png",
                             "--exemplar", tmp_path / "e.png", "--out", tmp_path / "o.png", "--max-size", "0")
    assert code == 0, err
    assert Image.open(tmp_path / "o.png").size == (w, h)


def test_item08_size_below_the_network_minimum_is_refused_in_one_line(tiny_model, dataset, tmp_path, capsys):
    from matebit.config import MIN_NET_SIDE

    code, _, err = translate(capsys, "--model", tiny_model, "--structure", dataset / "structure" / "a.png",
                             "--exemplar", dataset / "images" / "a.png", "--out", tmp_path / "o.png",
                             "--size-policy", "resize", "--size", "16")
    assert code == 2
    assert str(MIN_NET_SIDE) in one_error_line(err)


def test_item08_min_side_docs_and_behaviour_agree():
    from matebit.config import MIN_NET_SIDE
    from matebit.io import MIN_SIDE

    readme = (Path(__file__).parents[2] / "docs" / "usage.md").read_text()  # where README's translate details live
    assert f"at least {MIN_SIDE} px" in readme and f"{MIN_NET_SIDE}x{MIN_NET_SIDE}" in readme


# -- 9: full disk, read-only file systems, resuming a batch -----------------------------------------------------


@pytest.mark.parametrize("code_", [errno.ENOSPC, errno.EROFS])
def test_item09_full_or_read_only_disk_names_the_file_keeps_outputs_and_resumes(tiny_model, tmp_path, capsys,
                                                                                 monkeypatch, code_):
    maps = image_folder(tmp_path / "maps", ["a.png", "b.png", "c.png"])
    Image.fromarray(gradient(48, 40)).save(tmp_path / "ex.png")
    out = tmp_path / "out"
    real_save = Image.Image.save
    calls = []

    def failing_save(self, fp, *a, **kw):
        calls.append(fp)
        if len(calls) == 2:
            raise OSError(code_, os.strerror(code_))
        return real_save(self, fp, *a, **kw)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", maps, "--exemplar", tmp_path / "ex.png",
                             "--out", out, "--batch-size", "1", "--quiet")
    monkeypatch.undo()
    assert code == 2, err
    line = one_error_line(err)
    assert "b.png" in line and os.strerror(code_) in line, line
    assert "--skip-existing" in line
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # the finished output is kept, no temp file
    first = (out / "a.png").read_bytes()
    code, stdout, err = translate(capsys, "--model", tiny_model, "--structure", maps, "--exemplar",
                                  tmp_path / "ex.png", "--out", out, "--skip-existing", "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    assert (out / "a.png").read_bytes() == first
    assert "1 existing" in stdout, stdout


def test_item09_an_output_folder_on_a_read_only_file_system_is_one_line(tiny_model, dataset, tmp_path, capsys,
                                                                         monkeypatch):
    read_only_under(monkeypatch, "ro")
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", dataset / "structure",
                             "--exemplar", dataset / "images", "--out", tmp_path / "ro" / "out")
    assert code == 2
    line = one_error_line(err)
    assert str(tmp_path / "ro" / "out") in line and os.strerror(errno.EROFS) in line, line


def test_item09_skip_errors_continues_and_lists_the_bad_pairs(tiny_model, tmp_path, capsys):
    maps = image_folder(tmp_path / "maps", ["a.png", "c.png"])
    (maps / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    Image.fromarray(gradient(48, 40)).save(tmp_path / "ex.png")
    out = tmp_path / "out"
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", maps, "--exemplar", tmp_path / "ex.png",
                             "--out", out, "--skip-errors", "--quiet")
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    lines = err.strip().splitlines()
    assert any("b.png" in x for x in lines[:-1]), err
    assert "1 of 3" in lines[-1], lines[-1]


# -- 10: --from-photo pose, unknown devices --------------------------------------------------------------------


def test_item10_from_photo_pose_is_not_offered(tiny_model, dataset, tmp_path, capsys):
    helps = command_help("translate")
    assert "pose" not in helps.split("--from-photo", 1)[1].split("\n  --", 1)[0]
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", dataset / "images" / "a.png",
                             "--from-photo", "pose", "--exemplar", dataset / "images" / "b.png",
                             "--out", tmp_path / "o.png")
    assert code == 2
    line = one_error_line(err)
    assert "OpenPose" in line and "prepare pose" in line, line


@pytest.mark.parametrize("device", ["tpu", "cuda:99", "nonsense"])
def test_item10_unknown_devices_are_one_line_errors(tiny_model, dataset, tmp_path, capsys, device):
    code = run(["translate", "--model", str(tiny_model), "--structure", str(dataset / "structure" / "a.png"),
                "--exemplar", str(dataset / "images" / "a.png"), "--out", str(tmp_path / "o.png"),
                "--device", device])
    err = capsys.readouterr().err
    assert code == 2, err
    assert device in one_error_line(err)


# -- 12: symlink loops, BOMs, the training pairs.txt -----------------------------------------------------------


def test_item12_symlink_loop_is_reported_as_such(tiny_model, dataset, tmp_path, capsys):
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", loop, "--exemplar",
                             dataset / "images" / "a.png", "--out", tmp_path / "o.png")
    assert code == 2
    line = one_error_line(err)
    assert "loop.png" in line and "symlink loop" in line, line


def test_item12_pairs_list_with_a_bom_is_read(tiny_model, dataset, tmp_path, capsys):
    (dataset / "list.txt").write_bytes("\ufeffstructure/a.png images/b.png\n".encode("utf-8"))
    code, _, err = translate(capsys, "--model", tiny_model, "--pairs", dataset / "list.txt", "--out",
                             tmp_path / "o")
    assert code == 0, err
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["a.png"]


def test_item12_training_pairs_txt_given_to_translate_says_which_format(tiny_model, synthetic_data, tmp_path,
                                                                        capsys):
    code, _, err = translate(capsys, "--model", tiny_model, "--pairs", synthetic_data / "pairs.txt",
                             "--out", tmp_path / "o")
    assert code == 2
    line = one_error_line(err)
    assert "pairs.txt" in line and "training" in line and "<structure file> <exemplar file>" in line, line


# -- 13: temp files of a killed run ----------------------------------------------------------------------------


def test_item13_temp_files_of_a_killed_run_are_cleaned_by_the_next_run(tiny_model, dataset, tmp_path, capsys):
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    leftovers = [out / f".a.png.matebit-{dead.pid}-0123abcd.tmp", out / f".b.png.matebit-{dead.pid}-deadbeef.tmp"]
    # Issue 35: names only matebit makes, of a writer that is dead; a user's look-alike and a live run's stay.
    keep = [out / ".keep", out / "notes.tmp", out / ".a.png.tmp", out / ".x.png.nothex00.tmp",
            out / ".a.png.0123abcd.tmp", out / f".c.png.matebit-{os.getpid()}-0123abcd.tmp"]
    for p in leftovers + keep:
        p.write_bytes(b"half")
    outside = tmp_path / f".a.png.matebit-{dead.pid}-0123abcd.tmp"
    outside.write_bytes(b"not ours")
    code, _, err = translate(capsys, "--model", tiny_model, "--structure", dataset / "structure",
                             "--exemplar", dataset / "images", "--out", out, "--quiet")
    assert code == 0, err
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in keep) and outside.exists()


@pytest.mark.slow
def test_item13_a_killed_run_leaves_only_temp_files_the_next_run_removes(tiny_model, dataset, tmp_path):
    """A real SIGKILL in the middle of a batch: the next run cleans up and finishes the batch."""
    import signal
    import subprocess
    import sys

    maps = image_folder(tmp_path / "maps", [f"m{i:02d}.png" for i in range(40)])
    out = tmp_path / "out"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "matebit", "translate", "--model", str(tiny_model), "--structure", str(maps),
           "--exemplar", str(dataset / "images" / "a.png"), "--out", str(out), "--device", "cpu", "--quiet",
           "--batch-size", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out.is_dir() and len(list(out.glob("*.png"))) >= 2):
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (out / f".m39.png.matebit-{proc.pid}-00c0ffee.tmp").write_bytes(b"half")  # what a kill inside a write leaves
    done = set(p.name for p in out.glob("*.png"))
    assert 2 <= len(done) < 40
    assert subprocess.run(cmd + ["--skip-existing"], env=env, capture_output=True).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in maps.iterdir())


# -- 15: names --------------------------------------------------------------------------------------------------


def test_item15_translate_has_quiet_and_names_its_list_format_a_pairs_list():
    helps = command_help("translate")
    assert "--quiet" in helps and "pairs list" in helps


# -- issue 18: a model runs at the size it was trained at -------------------------------------------------------


def test_trained_size_is_the_default_and_pad_overrides_it(trained_model, tiny_model, dataset, tmp_path, capsys,
                                                          net_sizes):
    from matebit.inference import Translator

    Image.fromarray(edges(100, 80)).save(tmp_path / "s.png")
    seen = net_sizes
    ex = dataset / "images" / "a.png"
    for extra, net in (([], (32, 32)), (["--size-policy", "pad"], (80, 112)), (["--size", "48"], (48, 48))):
        seen.clear()
        code, _, err = translate(capsys, "--model", trained_model, "--structure", tmp_path / "s.png",
                                 "--exemplar", ex, "--out", tmp_path / "o.png", *extra)
        assert code == 0, err
        assert seen == [net], (extra, seen)
        assert Image.open(tmp_path / "o.png").size == (100, 80)
    seen.clear()
    translator = Translator.from_pretrained(trained_model, device="cpu")
    assert translator.trained_size == 32
    assert translator(tmp_path / "s.png", ex).image.size == (100, 80) and seen == [(32, 32)]
    seen.clear()
    bare = Translator.from_pretrained(tiny_model, device="cpu")  # a bare ModelConfig: the input's own size
    assert bare.trained_size is None
    assert bare(tmp_path / "s.png", ex).image.size == (100, 80) and seen == [(80, 112)]


def test_a_4000x3000_photo_translates_within_a_minute_with_a_trained_tiny_model(trained_model, tmp_path, capsys):
    rng = np.random.default_rng(0)
    photo = (gradient(4000, 3000).astype(np.int16) + rng.integers(-20, 20, (3000, 4000, 3))).clip(0, 255)
    Image.fromarray(photo.astype(np.uint8)).save(tmp_path / "photo.jpg", quality=90)
    Image.fromarray(gradient(640, 480)).save(tmp_path / "ex.jpg")
    start = time.monotonic()
    code, _, err = translate(capsys, "--model", trained_model, "--structure", tmp_path / "photo.jpg", "--from-photo",
                             "canny", "--exemplar", tmp_path / "ex.jpg", "--out", tmp_path / "o.jpg")
    took = time.monotonic() - start
    assert code == 0, err
    assert Image.open(tmp_path / "o.jpg").size == (4000, 3000)
    assert took < 60, took
