import json
import os

import numpy as np
import pytest
from PIL import Image

from matebit.convert import CONVERTERS, ConvertError, convert_folder
from matebit.convert.cli import add_prepare_parser, main, run_prepare


@pytest.fixture()
def photos(tmp_path, astronaut, coffee):
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(astronaut[::4, ::4]).save(src / "astro.jpg")
    Image.fromarray(coffee[::4, ::4]).save(src / "cup.png")
    (src / "notes.txt").write_text("ignored: not an image")
    return src


def test_registry_names():
    assert set(CONVERTERS) == {"canny", "hed", "landmarks", "pose"}
    assert all(callable(f) for f in CONVERTERS.values())


def test_convert_folder_writes_same_stems(photos, tmp_path):
    dst = tmp_path / "maps"
    report = convert_folder("canny", photos, dst, progress=False)
    assert sorted(os.listdir(dst)) == ["astro.png", "cup.png"]
    for p in dst.iterdir():
        im = Image.open(p)
        assert im.mode == "L" and (np.asarray(im) > 0).mean() > 0.01
    assert len(report.written) == 2 and not report.failed


def test_bad_file_stops_or_is_skipped(photos, tmp_path):
    (photos / "broken.png").write_bytes(b"\x89PNG truncated")
    dst = tmp_path / "maps"
    with pytest.raises(ConvertError, match="broken.png"):
        convert_folder("canny", photos, dst, progress=False)
    report = convert_folder("canny", photos, dst, skip_errors=True, progress=False)
    assert [p.name for p, _ in report.failed] == ["broken.png"]
    assert sorted(os.listdir(dst)) == ["astro.png", "cup.png"]  # nothing half-written, no temp files


def test_resume_and_guards(photos, tmp_path):
    dst = tmp_path / "maps"
    convert_folder("canny", photos, dst, progress=False)
    report = convert_folder("canny", photos, dst, overwrite=False, progress=False)
    assert len(report.skipped) == 2 and not report.written
    Image.new("RGB", (8, 8)).save(photos / "astro.png")  # astro.jpg and astro.png -> same output
    with pytest.raises(ConvertError, match="same output name"):
        convert_folder("canny", photos, dst, progress=False)
    os.remove(photos / "astro.png")
    with pytest.raises(ConvertError, match="must differ"):
        convert_folder("canny", photos, photos, progress=False)
    with pytest.raises(ValueError, match="unknown converter"):
        convert_folder("sobel", photos, dst, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConvertError, match="no input files"):
        convert_folder("canny", empty, dst, progress=False)


def test_recursive_mirrors_subfolders(photos, tmp_path):
    sub = photos / "more"
    sub.mkdir()
    Image.open(photos / "cup.png").save(sub / "cup2.png")
    dst = tmp_path / "maps"
    convert_folder("canny", photos, dst, recursive=True, progress=False)
    assert (dst / "more" / "cup2.png").is_file() and (dst / "cup.png").is_file()


def test_cli_canny_ok(photos, tmp_path, capsys):
    dst = tmp_path / "out"
    rc = main(["canny", str(photos), str(dst), "--quiet", "--blur", "2"])
    assert rc == 0
    assert sorted(os.listdir(dst)) == ["astro.png", "cup.png"]


def test_cli_bad_input_is_one_line_exit_2(photos, tmp_path, capsys):
    (photos / "broken.jpg").write_bytes(b"nope")
    rc = main(["canny", str(photos), str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "broken.jpg" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    rc = main(["canny", str(photos), str(tmp_path / "out2"), "--quiet", "--skip-errors"])
    err = capsys.readouterr().err
    assert rc == 2 and sorted(os.listdir(tmp_path / "out2")) == ["astro.png", "cup.png"]
    rc = main(["canny", str(tmp_path / "missing"), str(tmp_path / "o")])
    assert rc == 2 and "not a folder" in capsys.readouterr().err
    rc = main(["canny", str(photos), str(tmp_path / "o"), "--low", "90", "--high", "10"])
    assert rc == 2 and "--low" in capsys.readouterr().err


def test_cli_argument_errors_exit_2(photos, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["pose", str(photos), str(tmp_path / "o")])  # --size is required
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["pose", str(photos), str(tmp_path / "o"), "--size", "axb"])
    assert exc.value.code == 2


def test_cli_pose_and_retrieval(tmp_path, photos, capsys):
    src = tmp_path / "json"
    src.mkdir()
    kp = [100, 50, 0.9, 100, 80, 0.9] + [0, 0, 0] * 16
    (src / "a_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": kp}]}))
    assert main(["pose", str(src), str(tmp_path / "poses"), "--size", "200x150", "--quiet"]) == 0
    im = Image.open(tmp_path / "poses" / "a.png")
    assert im.mode == "RGB" and im.size == (200, 150) and np.asarray(im)[65, 100].max() > 0

    pairs = tmp_path / "pairs.txt"
    assert main(["retrieval", str(photos), str(pairs), "--features", "color-hist", "--k", "1", "--quiet"]) == 0
    assert pairs.read_text().split("\n")[:2] == ["astro cup", "cup astro"]


def test_cli_mounts_on_any_subparsers():
    import argparse

    parser = argparse.ArgumentParser(prog="matebit")
    add_prepare_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["prepare", "landmarks", "src", "dst", "--no-background"])
    assert args.func is run_prepare and args.prepare_cmd == "landmarks" and args.background is False
    none = parser.parse_args(["prepare"])
    assert run_prepare(none) == 2


def test_package_cli_dispatch(photos, tmp_path):
    # The top-level `matebit` command (matebit/cli.py) mounts this module as `prepare`.
    cli = pytest.importorskip("matebit.cli")
    if "prepare" not in getattr(cli, "COMMANDS", {}):
        pytest.skip("matebit.cli does not list prepare")
    try:
        cli._available_commands()
    except ImportError as exc:  # another command's module is broken: not this package's concern
        pytest.skip(f"matebit CLI cannot load all commands yet: {exc}")
    assert cli.run(["prepare", "canny", str(photos), str(tmp_path / "o"), "--quiet"]) == 0
    assert cli.run(["prepare", "canny", str(tmp_path / "nope"), str(tmp_path / "o")]) == 2
