"""Bad input, table-driven, through the command line and through the Python API.

Every row names the file(s) it builds, what to run and the expected outcome:

* ``Err``: the CLI exits 2 with exactly one stderr line that names the file and the problem, no traceback,
  and leaves no output file (nor a temp file) behind; the Python API raises a clean error type
  (matebit's InputError family or a ValueError such as ConfigError) whose message names the same file.
* ``Ok``: the input is valid after a documented conversion: the CLI exits 0 and writes an image of the
  structure's size, the API returns one, and `check` verifies the conversion itself on `load_image`'s result.
"""

from __future__ import annotations

import json
import pickle
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from matebit.checkpoint import load_pretrained, save_pretrained
from matebit.cli import run
from matebit.config import ConfigError, ExperimentConfig, from_json, model_preset
from matebit.errors import MatebitError
from matebit.inference import Translator
from matebit.io import MAX_PIXELS, load_image
from matebit.models.generator import MATEBITGenerator

# -- building the files ------------------------------------------------------------------------------------------


def _gradient(w: int, h: int) -> np.ndarray:
    """A smooth RGB image; smooth so JPEG round trips stay close to the source."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 128)], -1).astype(np.uint8)


def _edges(w: int, h: int) -> np.ndarray:
    arr = np.zeros((h, w), np.uint8)
    arr[h // 2, :] = 255
    arr[:, w // 3] = 255
    return arr


def _png_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A valid 1x1 greyscale PNG whose IHDR claims `width` x `height` (CRC fixed): only the header is big,
    so the file is refused if and only if the size is checked before decoding."""
    data = bytearray(_png_bytes(np.zeros((1, 1), np.uint8)))
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


class _Payload:
    """Unpickling this would create MARKER: the test proves no loader ever executes it."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@dataclass
class Files:
    root: Path
    model: Path  # tiny, 3-channel structure maps
    model_grey: Path  # tiny, 1-channel structure maps
    structure: Path  # a good 48x40 structure map
    exemplar: Path  # a good 48x40 exemplar
    marker: Path  # created only if a pickle were executed


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Files:
    root = tmp_path_factory.mktemp("bad")
    cfg = model_preset("tiny")
    torch.manual_seed(0)
    save_pretrained(root / "model", MATEBITGenerator(cfg), cfg)
    grey_cfg = model_preset("tiny", structure_channels=1)
    save_pretrained(root / "model_grey", MATEBITGenerator(grey_cfg), grey_cfg)
    Image.fromarray(_edges(48, 40)).save(root / "structure.png")
    Image.fromarray(_gradient(48, 40)).save(root / "exemplar.png")
    return Files(root, root / "model", root / "model_grey", root / "structure.png", root / "exemplar.png",
                 root / "PICKLE_RAN")


def _copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


# -- the table ---------------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    # make(files, tmp) -> the "bad" path (what the messages must name); writes it and anything else it needs
    make: Callable[[Files, Path], Path]
    # CLI arguments; {bad}, {model}, {structure}, {exemplar}, {out}, {tmp}, {data} are filled in
    argv: list[str]
    # Python API call on the same file, or None where the problem exists only on the command line
    api: Callable[[Files, Path], object] | None
    ok: bool = False  # True: valid after conversion
    problem: str = ""  # a word the message must contain (the problem, in the message's own terms)
    check: Callable[[Files, Path], None] | None = None  # for ok rows: the documented conversion
    out_size: tuple[int, int] | None = None  # for ok rows: (width, height) of the written image
    extra_names: list[str] = field(default_factory=list)


TRANSLATE = ["translate", "--model", "{model}", "--structure", "{structure}", "--exemplar", "{exemplar}",
             "--out", "{out}", "--device", "cpu"]


def _translate(**swap: str) -> list[str]:
    argv = list(TRANSLATE)
    for flag, value in swap.items():
        argv[argv.index("--" + flag.replace("_", "-")) + 1] = value
    return argv


def _translator(model: Path) -> Translator:
    return Translator.from_pretrained(model, device="cpu")


_TRANSLATORS: dict[Path, Translator] = {}


def _api_translate(structure=None, exemplar=None, model=None):
    """Python API: Translator(...)(structure, exemplar), with the good file where one side is not given."""

    def call(f: Files, bad: Path):
        m = model(f) if model else f.model
        if m not in _TRANSLATORS:
            _TRANSLATORS[m] = _translator(m)
        s = bad if structure == "bad" else f.structure
        e = bad if exemplar == "bad" else f.exemplar
        return _TRANSLATORS[m](s, e).image

    return call


def _write(name: str, data: bytes):
    def make(f: Files, tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def _save(name: str, arr_fn: Callable[[], np.ndarray] | None = None, mode: str | None = None, **kw):
    def make(f: Files, tmp: Path) -> Path:
        im = Image.fromarray(arr_fn()) if arr_fn else None
        if mode:
            im = im.convert(mode)
        im.save(tmp / name, **kw)
        return tmp / name

    return make


def _truncated(name: str, fmt: str):
    def make(f: Files, tmp: Path) -> Path:
        Image.fromarray(_gradient(64, 48)).save(tmp / name, format=fmt)
        data = (tmp / name).read_bytes()
        (tmp / name).write_bytes(data[:len(data) // 2])
        return tmp / name

    return make


def _npy(name: str, value: float | None = None, arr: np.ndarray | None = None):
    def make(f: Files, tmp: Path) -> Path:
        a = arr if arr is not None else (_edges(48, 40) / 255.0).astype(np.float32)
        if value is not None:
            a = a.copy()
            a[5, 7] = value
        np.save(tmp / name, a, allow_pickle=True)
        return tmp / name

    return make


def _model_variant(edit: Callable[[Files, Path], None]):
    def make(f: Files, tmp: Path) -> Path:
        folder = _copy_model(f.model, tmp / "model_bad")
        edit(f, folder)
        return folder

    return make


def _rename_key(f: Files, folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    key = next(iter(state))
    state["renamed." + key] = state.pop(key)
    save_file(state, folder / "model.safetensors")


def _wrong_shapes(f: Files, folder: Path) -> None:
    # Weights of a wider model under the tiny config: every key matches, shapes do not.
    wide = model_preset("tiny", base_channels=16)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in MATEBITGenerator(wide).state_dict().items()},
              folder / "model.safetensors")


def _pickle_payload(f: Files, folder: Path) -> None:
    payload = _Payload()
    payload.marker = f.marker
    (folder / "model.safetensors").write_bytes(pickle.dumps({"weights": payload}, protocol=2))


def _torch_save_zip(f: Files, folder: Path) -> None:
    payload = _Payload()
    payload.marker = f.marker
    (folder / "model.safetensors").unlink()
    torch.save({"weights": payload}, folder / "model.pt")


def _zip_as_safetensors(f: Files, folder: Path) -> None:
    payload = _Payload()
    payload.marker = f.marker
    torch.save({"weights": payload}, folder / "model.safetensors")


def _truncate_weights(f: Files, folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:len(data) - 1000])


def _edit_config(change: Callable[[dict], None]):
    def edit(f: Files, folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        change(cfg)
        (folder / "config.json").write_text(json.dumps(cfg))

    return edit


def _train_config(change: Callable[[dict], None]):
    def make(f: Files, tmp: Path) -> Path:
        from matebit.config import experiment_preset, to_dict

        cfg = to_dict(experiment_preset("tiny"))
        change(cfg)
        (tmp / "run.json").write_text(json.dumps(cfg))
        return tmp / "run.json"

    return make


def _api_config(f: Files, bad: Path):
    return from_json(ExperimentConfig, bad.read_text(), where=str(bad))


def _api_load_model(f: Files, bad: Path):
    return load_pretrained(bad)


def _api_load(role: str, channels: int = 3):
    return lambda f, bad: load_image(bad, role=role, channels=channels)


def _mkdir(name: str):
    def make(f: Files, tmp: Path) -> Path:
        (tmp / name).mkdir()
        return tmp / name

    return make


def _missing(name: str):
    return lambda f, tmp: tmp / name


def _loaded(f: Files, bad: Path, role: str, channels: int = 3) -> torch.Tensor:
    return load_image(bad, role=role, channels=channels)


# Conversion checks for the rows that succeed -------------------------------------------------------------------


def _check_16bit(f, bad):
    t = _loaded(f, bad, "structure")
    src = np.asarray(Image.open(bad)).astype(np.float64) / 65535.0  # scaled from 0..65535, not clipped at 255
    np.testing.assert_allclose(t[0].numpy(), src, atol=1e-6)
    assert 0.2 < float(t.max()) < 0.3  # the file's maximum is 16000 / 65535


def _check_cmyk(f, bad):
    assert Image.open(bad).mode == "CMYK"
    t = _loaded(f, bad, "exemplar")
    assert t.shape[0] == 3  # converted to RGB
    ref = torch.from_numpy(_gradient(48, 40)).permute(2, 0, 1).float() / 127.5 - 1
    assert float((t - ref).abs().mean()) < 0.05


def _check_palette(f, bad):
    t = _loaded(f, bad, "exemplar")
    ref = torch.from_numpy(np.array(Image.open(bad).convert("RGB"))).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(t, ref)


def _check_palette_transparent(f, bad):
    t = _loaded(f, bad, "exemplar")
    assert torch.all(t[:, 0, 0] == 1.0)  # the transparent palette entry is composited onto white


def _check_rgba(f, bad):
    ex = _loaded(f, bad, "exemplar")
    st = _loaded(f, bad, "structure")
    assert ex.shape[0] == 3 and torch.all(ex[:, :, :10] == 1.0)  # transparent: white behind an exemplar
    assert torch.all(st[:, :, :10] == 0.0)  # ...and black behind a structure map


def _check_grey_exemplar(f, bad):
    t = _loaded(f, bad, "exemplar")
    assert t.shape[0] == 3 and torch.equal(t[0], t[1]) and torch.equal(t[1], t[2])  # replicated


def _check_grey_structure(f, bad):
    t = _loaded(f, bad, "structure")
    assert t.shape[0] == 3 and torch.equal(t[0], t[2])


def _check_exif(f, bad):
    im = Image.open(bad)
    assert im.size == (48, 32) and im.getexif()[0x0112] == 6
    t = _loaded(f, bad, "structure")
    assert tuple(t.shape[-2:]) == (48, 32)  # rotated 90 degrees: 32 wide, 48 high


def _check_gif(f, bad):
    t = _loaded(f, bad, "exemplar")
    assert float(t[0].mean()) > 0.9 and float(t[2].mean()) < -0.9  # frame 0 is red; frame 1 (blue) unused


def _check_odd_size(f, bad):
    assert tuple(_loaded(f, bad, "structure").shape[-2:]) == (21, 37)


def _check_npy_chw(f, bad):
    t = _loaded(f, bad, "structure")
    assert tuple(t.shape) == (3, 40, 48)


def _check_16px(f, bad):
    assert tuple(_loaded(f, bad, "exemplar").shape[-2:]) == (16, 16)


def _frames_gif(f: Files, tmp: Path) -> Path:
    red = Image.new("RGB", (48, 40), (255, 0, 0))
    blue = Image.new("RGB", (48, 40), (0, 0, 255))
    red.save(tmp / "anim.gif", save_all=True, append_images=[blue], duration=100, loop=0)
    return tmp / "anim.gif"


def _exif_jpeg(f: Files, tmp: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(np.repeat(_edges(48, 32)[..., None], 3, -1)).save(tmp / "rotated.jpg", exif=exif.tobytes())
    return tmp / "rotated.jpg"


def _palette_transparent(f: Files, tmp: Path) -> Path:
    im = Image.fromarray(_gradient(48, 40)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    idx = im.getpixel((0, 0))
    im.save(tmp / "ptrans.png", transparency=idx)
    return tmp / "ptrans.png"


def _rgba(f: Files, tmp: Path) -> Path:
    arr = np.dstack([_gradient(48, 40), np.full((40, 48), 255, np.uint8)])
    arr[:, :10, 3] = 0
    Image.fromarray(arr, "RGBA").save(tmp / "rgba.png")
    return tmp / "rgba.png"


def _uint16(f: Files, tmp: Path) -> Path:
    arr = (_edges(48, 40).astype(np.int64) * 16000 // 255).astype(np.uint16)
    Image.fromarray(arr).save(tmp / "deep.png")
    assert Image.open(tmp / "deep.png").mode.startswith("I")
    return tmp / "deep.png"


def _float_tiff(f: Files, tmp: Path) -> Path:
    Image.fromarray(np.full((40, 48), 3.5, np.float32), mode="F").save(tmp / "float.tif")
    return tmp / "float.tif"


def _file_as_parent(f: Files, tmp: Path) -> Path:
    (tmp / "not_a_dir").write_text("x")
    return tmp / "not_a_dir"


CASES: list[Case] = [
    # -- unreadable image files ---------------------------------------------------------------------------------
    Case("empty structure file", _write("empty.png", b""), _translate(structure="{bad}"),
         _api_translate(structure="bad"), problem="empty"),
    Case("empty exemplar file", _write("empty.jpg", b""), _translate(exemplar="{bad}"),
         _api_translate(exemplar="bad"), problem="empty"),
    Case("truncated PNG", _truncated("cut.png", "PNG"), _translate(structure="{bad}"),
         _api_translate(structure="bad"), problem="truncated"),
    Case("truncated JPEG", _truncated("cut.jpg", "JPEG"), _translate(exemplar="{bad}"),
         _api_translate(exemplar="bad"), problem="truncated"),
    Case("text file named .png", _write("notes.png", b"just some text, not an image\n"),
         _translate(structure="{bad}"), _api_translate(structure="bad"), problem="not an image"),
    Case("random bytes named .jpg", _write("noise.jpg", bytes(range(256)) * 8), _translate(exemplar="{bad}"),
         _api_translate(exemplar="bad"), problem="not an image"),
    Case("decompression bomb (header 20000x20000)", _write("bomb.png", _bomb_png(20000, 20000)),
         _translate(exemplar="{bad}"), _api_translate(exemplar="bad"), problem="decompression bomb"),
    Case("1x1 image", _save("one.png", lambda: _gradient(1, 1)), _translate(structure="{bad}"),
         _api_translate(structure="bad"), problem="too small"),
    Case("8x8 image", _save("eight.png", lambda: _gradient(8, 8)), _translate(exemplar="{bad}"),
         _api_translate(exemplar="bad"), problem="too small"),
    Case("32-bit float TIFF outside [0, 1]", _float_tiff, _translate(structure="{bad}"),
         _api_translate(structure="bad"), problem="must lie in"),
    # -- structure maps that do not fit the model ----------------------------------------------------------------
    Case("colour structure map for a 1-channel model", _save("colour.png", lambda: _gradient(48, 40)),
         _translate(structure="{bad}", model=str("{model_grey}")),
         _api_translate(structure="bad", model=lambda f: f.model_grey), problem="1-channel"),
    Case(".npy map with 5 channels", _npy("five.npy", arr=np.zeros((40, 48, 5), np.float32)),
         _translate(structure="{bad}"), _api_translate(structure="bad"), problem="channels"),
    Case(".npy map with NaN", _npy("nan.npy", value=float("nan")), _translate(structure="{bad}"),
         _api_translate(structure="bad"), problem="NaN"),
    Case(".npy map with inf", _npy("inf.npy", value=float("inf")), _translate(structure="{bad}"),
         _api_translate(structure="bad"), problem="infinite"),
    Case(".npy map holding a pickled object array", _npy("obj.npy", arr=np.array([{"a": 1}], dtype=object)),
         _translate(structure="{bad}"), _api_translate(structure="bad"), problem="pickle"),
    # -- missing files and folders where files belong ------------------------------------------------------------
    Case("missing exemplar", _missing("nowhere.jpg"), _translate(exemplar="{bad}"),
         _api_translate(exemplar="bad"), problem="no such file"),
    Case("missing structure", _missing("nowhere.png"), _translate(structure="{bad}"),
         _api_translate(structure="bad"), problem="no such file"),
    Case("folder given as the exemplar", _mkdir("a_folder"), _translate(exemplar="{bad}"),
         _api_translate(exemplar="bad"), problem="folder"),
    Case("missing model folder", _missing("no_model"), _translate(model="{bad}"), _api_load_model,
         problem="no such"),
    Case("a file given as the model folder", _write("model.bin", b"\x00" * 64), _translate(model="{bad}"),
         _api_load_model, problem="pickle"),
    # -- outputs that cannot be written --------------------------------------------------------------------------
    Case("output folder is a file", _file_as_parent, _translate(out="{bad}/out.png"), None,
         problem="not a folder"),
    Case("output path is an existing folder", _mkdir("out_dir"), _translate(out="{bad}"), None,
         problem="folder"),
    Case("output with an unknown extension", _missing("out.xyz"), _translate(out="{bad}"), None,
         problem="extension"),
    # -- checkpoints -------------------------------------------------------------------------------------------
    Case("checkpoint with a renamed key", _model_variant(_rename_key), _translate(model="{bad}"),
         _api_load_model, problem="unexpected key"),
    Case("checkpoint with wrong shapes", _model_variant(_wrong_shapes), _translate(model="{bad}"),
         _api_load_model, problem="shape"),
    Case("pickle payload named model.safetensors", _model_variant(_pickle_payload), _translate(model="{bad}"),
         _api_load_model, problem="pickle"),
    Case("torch.save zip named model.safetensors", _model_variant(_zip_as_safetensors),
         _translate(model="{bad}"), _api_load_model, problem="pickle"),
    Case("model folder with only a model.pt pickle", _model_variant(_torch_save_zip), _translate(model="{bad}"),
         _api_load_model, problem="pickle"),
    Case("truncated safetensors", _model_variant(_truncate_weights), _translate(model="{bad}"),
         _api_load_model, problem="safetensors"),
    # -- configs -----------------------------------------------------------------------------------------------
    Case("model config.json with an unknown key", _model_variant(_edit_config(lambda c: c.update(colour=1))),
         _translate(model="{bad}"), _api_load_model, problem="unknown key"),
    Case("model config.json with a wrong type",
         _model_variant(_edit_config(lambda c: c.update(base_channels="eight"))), _translate(model="{bad}"),
         _api_load_model, problem="expected int"),
    Case("model config.json with alpha NaN", _model_variant(_edit_config(lambda c: c.update(alpha=float("nan")))),
         _translate(model="{bad}"), _api_load_model, problem="expected float"),
    Case("model config.json that is not JSON",
         _model_variant(lambda f, d: (d / "config.json").write_text("{not json")), _translate(model="{bad}"),
         _api_load_model, problem="not valid JSON"),
    Case("training config with an unknown key", _train_config(lambda c: c["train"].update(epochs=3)),
         ["train", "--config", "{bad}", "--data", "{tmp}/data", "--out", "{out}"], _api_config, problem="unknown key"),
    Case("training config with a wrong type", _train_config(lambda c: c["model"].update(n_mat_blocks="2")),
         ["train", "--config", "{bad}", "--data", "{tmp}/data", "--out", "{out}"], _api_config,
         problem="expected int"),
    Case("training config with a wrong literal", _train_config(lambda c: c["train"].update(nan_policy="ignore")),
         ["train", "--config", "{bad}", "--data", "{tmp}/data", "--out", "{out}"], _api_config,
         problem="nan_policy"),
    # -- valid after conversion ----------------------------------------------------------------------------------
    Case("16-bit PNG structure (scaled from 0..65535)", _uint16, _translate(structure="{bad}"),
         _api_translate(structure="bad"), ok=True, check=_check_16bit, out_size=(48, 40)),
    Case("CMYK JPEG exemplar (to RGB)", _save("cmyk.jpg", lambda: _gradient(48, 40), mode="CMYK", quality=95),
         _translate(exemplar="{bad}"), _api_translate(exemplar="bad"), ok=True, check=_check_cmyk,
         out_size=(48, 40)),
    Case("palette PNG exemplar (to RGB)",
         _save("pal.png", lambda: _gradient(48, 40), mode="P"), _translate(exemplar="{bad}"),
         _api_translate(exemplar="bad"), ok=True, check=_check_palette, out_size=(48, 40)),
    Case("palette PNG with transparency (onto white)", _palette_transparent, _translate(exemplar="{bad}"),
         _api_translate(exemplar="bad"), ok=True, check=_check_palette_transparent, out_size=(48, 40)),
    Case("RGBA exemplar (composited onto white)", _rgba, _translate(exemplar="{bad}"),
         _api_translate(exemplar="bad"), ok=True, check=_check_rgba, out_size=(48, 40)),
    Case("greyscale exemplar (replicated to RGB)", _save("grey.jpg", lambda: _edges(48, 40)),
         _translate(exemplar="{bad}"), _api_translate(exemplar="bad"), ok=True, check=_check_grey_exemplar,
         out_size=(48, 40)),
    Case("greyscale structure for a 3-channel model (replicated)", _save("grey.png", lambda: _edges(48, 40)),
         _translate(structure="{bad}"), _api_translate(structure="bad"), ok=True, check=_check_grey_structure,
         out_size=(48, 40)),
    Case("EXIF-rotated JPEG structure (rotation honoured)", _exif_jpeg, _translate(structure="{bad}"),
         _api_translate(structure="bad"), ok=True, check=_check_exif, out_size=(32, 48)),
    Case("animated GIF exemplar (first frame)", _frames_gif, _translate(exemplar="{bad}"),
         _api_translate(exemplar="bad"), ok=True, check=_check_gif, out_size=(48, 40)),
    Case("37x21 structure, not a multiple of 16 (pad policy)", _save("odd.png", lambda: _edges(37, 21)),
         _translate(structure="{bad}"), _api_translate(structure="bad"), ok=True, check=_check_odd_size,
         out_size=(37, 21)),
    Case("16x16 exemplar, the smallest accepted", _save("tiny.png", lambda: _gradient(16, 16)),
         _translate(exemplar="{bad}"), _api_translate(exemplar="bad"), ok=True, check=_check_16px,
         out_size=(48, 40)),
    Case(".npy structure map in (C, H, W) layout",
         _npy("chw.npy", arr=np.repeat((_edges(48, 40) / 255.0)[None], 3, 0).astype(np.float32)),
         _translate(structure="{bad}"), _api_translate(structure="bad"), ok=True, check=_check_npy_chw,
         out_size=(48, 40)),
]

ERR_CASES = [c for c in CASES if not c.ok]
OK_CASES = [c for c in CASES if c.ok]


def test_the_table_is_big_enough():
    assert len(ERR_CASES) >= 30 and len(OK_CASES) >= 10, (len(ERR_CASES), len(OK_CASES))
    assert len({c.name for c in CASES}) == len(CASES)
    assert _bomb_png(20000, 20000) and 20000 * 20000 > MAX_PIXELS


def _fill(argv: list[str], f: Files, bad: Path, tmp: Path, out: Path) -> list[str]:
    values = dict(model=f.model, model_grey=f.model_grey, structure=f.structure, exemplar=f.exemplar, out=out,
                  tmp=tmp, bad=bad)
    return [a.format(**{k: str(v) for k, v in values.items()}) for a in argv]


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("case", ERR_CASES, ids=lambda c: c.name)
def test_bad_input_fails_cleanly(case: Case, files: Files, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("MATEBIT_DEBUG", raising=False)
    bad = case.make(files, tmp_path)
    out = tmp_path / "result.png" if case.argv[0] == "translate" else tmp_path / "run"
    before = _listing(tmp_path)
    argv = _fill(case.argv, files, bad, tmp_path, out)

    code = run(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (code, captured.err)
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert bad.name in lines[0], lines[0]
    assert case.problem.lower() in lines[0].lower(), lines[0]
    # Nothing written: no output, no temp file, no new folder anywhere under the test's folder.
    assert _listing(tmp_path) == before, sorted(_listing(tmp_path) - before)
    assert not files.marker.exists(), "a pickle payload was executed"

    if case.api is not None:
        with pytest.raises(Exception) as info:
            case.api(files, bad)
        exc = info.value
        assert isinstance(exc, (MatebitError, ConfigError)), f"{type(exc).__name__}: {exc}"
        assert bad.name in str(exc), str(exc)
        assert case.problem.lower() in str(exc).lower(), str(exc)
        assert "\n" not in str(exc).strip()
        assert not files.marker.exists(), "a pickle payload was executed"


@pytest.mark.parametrize("case", OK_CASES, ids=lambda c: c.name)
def test_input_valid_after_conversion(case: Case, files: Files, tmp_path: Path, capsys):
    bad = case.make(files, tmp_path)
    out = tmp_path / "result.png"
    code = run(_fill(case.argv, files, bad, tmp_path, out))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err.strip() == "", captured.err
    with Image.open(out) as im:
        assert im.size == case.out_size and im.mode == "RGB"
    image = case.api(files, bad)
    assert image.size == case.out_size
    case.check(files, bad)
