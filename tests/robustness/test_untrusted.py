"""Untrusted files: nothing matebit reads can run code, and mutated files give only clean errors.

1. A scan of the package's source (its syntax tree, so comments and strings do not count): no pickle-family
   module is imported, torch.load is only ever called with weights_only=True, numpy.load never with
   allow_pickle=True, and there is no eval/exec.
2. Hypothesis mutates real image and safetensors bytes (flipped, overwritten, inserted and cut bytes, biased
   towards the headers) and feeds them to the loaders for a fixed number of iterations each; the only
   acceptable outcomes are success or the loader's own error type.
"""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

import matebit
from matebit.checkpoint import CheckpointError, load_pretrained, load_tensors, save_pretrained, save_tensors
from matebit.config import model_preset
from matebit.errors import ImageInputError
from matebit.io import load_image
from matebit.models.generator import MATEBITGenerator

FUZZ_ITERATIONS = 200  # per loader; the figure docs/robustness.md states
PACKAGE = Path(matebit.__file__).parent

# -- 1. the source ---------------------------------------------------------------------------------------------

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
    return None


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where}: imports {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where}: imports from {node.module}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in ("eval", "exec"):
                found.append(f"{where}: calls {name}")
            elif name == "torch.load" or name.endswith(".torch.load"):
                if _keyword(node, "weights_only") is not True:
                    found.append(f"{where}: torch.load without weights_only=True")
            elif name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") not in (None, False):
                found.append(f"{where}: numpy.load with allow_pickle")
            elif name.endswith("yaml.load") or name.endswith("torch.jit.load"):
                found.append(f"{where}: calls {name}")
        if isinstance(node, ast.ImportFrom) and node.module == "torch" and any(a.name == "load" for a in node.names):
            found.append(f"{where}: imports torch.load by name, out of reach of this scan")
    return found


def test_the_package_never_unpickles_or_evaluates(tmp_path):
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    problems = [p for f in files for p in _problems(f)]
    assert not problems, "\n".join(problems)
    # The scan itself works: it flags each pattern in a sample.
    sample = tmp_path / "sample.py"
    sample.write_text("import pickle\nimport torch\nimport numpy as np\ntorch.load('x')\n"
                      "torch.load('y', weights_only=False)\nnp.load('z', allow_pickle=True)\neval('1')\n")
    assert len(_problems(sample)) == 5


def test_torch_load_calls_are_all_weights_only():
    uses = [f for f in PACKAGE.rglob("*.py") if "torch.load(" in f.read_text(encoding="utf-8")]
    for f in uses:  # every textual use sits in a call the AST scan checked above
        assert not [p for p in _problems(f) if "torch.load" in p]


# -- 2. fuzzing ------------------------------------------------------------------------------------------------


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _image_seeds() -> list[tuple[str, bytes]]:
    y, x = np.mgrid[0:20, 0:24]
    rgb = Image.fromarray(np.stack([x * 10, y * 12, (x + y) * 5], -1).astype(np.uint8))
    frames = [Image.new("RGB", (24, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    return [
        (".png", _encode(rgb, "PNG")),
        (".png", _encode(rgb.convert("P"), "PNG")),
        (".png", _encode(Image.fromarray((x * 2000).astype(np.uint16)), "PNG")),
        (".png", _encode(rgb.convert("RGBA"), "PNG")),
        (".jpg", _encode(rgb, "JPEG", quality=90)),
        (".jpg", _encode(rgb.convert("CMYK"), "JPEG")),
        (".gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])),
        (".bmp", _encode(rgb, "BMP")),
        (".tif", _encode(rgb, "TIFF")),
        (".webp", _encode(rgb, "WEBP")),
    ]


# One mutation: (kind, position, payload). Positions are taken modulo the length; half of them fall in the
# first 256 bytes, where the headers are and where a parser is most easily confused.
_POSITION = st.one_of(st.integers(0, 255), st.integers(0, 2**31 - 1))
_MUTATION = st.one_of(
    st.tuples(st.just("xor"), _POSITION, st.integers(1, 255)),
    st.tuples(st.just("set"), _POSITION, st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF])),
    st.tuples(st.just("insert"), _POSITION, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), _POSITION, st.integers(1, 64)),
    st.tuples(st.just("truncate"), _POSITION, st.just(0)),
)
_MUTATIONS = st.lists(_MUTATION, min_size=1, max_size=6)


def _mutate(data: bytes, mutations) -> bytes:
    buf = bytearray(data)
    for kind, pos, arg in mutations:
        if not buf:
            break
        i = pos % len(buf)
        if kind == "xor":
            buf[i] ^= arg
        elif kind == "set":
            buf[i] = arg
        elif kind == "insert":
            buf[i:i] = arg
        elif kind == "delete":
            del buf[i:i + arg]
        else:
            del buf[i:]
    return bytes(buf)


FUZZ = settings(max_examples=FUZZ_ITERATIONS, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.slow
def test_fuzz_image_loader(tmp_path):
    seeds = _image_seeds()
    calls, decoded = [], []

    @FUZZ
    @given(seed=st.integers(0, len(seeds) - 1), mutations=_MUTATIONS, role=st.sampled_from(["structure", "exemplar"]))
    def check(seed, mutations, role):
        suffix, data = seeds[seed]
        path = tmp_path / f"fuzz{suffix}"
        path.write_bytes(_mutate(data, mutations))
        calls.append(1)
        try:
            # A small pixel limit keeps a mutated size field from costing a big allocation per example.
            t = load_image(path, role=role, channels=3, max_pixels=1_000_000)
        except ImageInputError as exc:
            msg = str(exc)
            assert str(path) in msg and "\n" not in msg.strip(), msg
            return
        decoded.append(1)
        low = 0.0 if role == "structure" else -1.0
        assert t.dtype == torch.float32 and t.dim() == 3 and t.shape[0] == 3
        assert torch.isfinite(t).all() and float(t.min()) >= low and float(t.max()) <= 1.0

    check()
    assert len(calls) >= FUZZ_ITERATIONS
    assert 0 < len(decoded) < len(calls)  # both outcomes were exercised


@pytest.mark.slow
def test_fuzz_tensor_file_loader(tmp_path):
    seed_path = tmp_path / "seed.safetensors"
    save_tensors(seed_path, {"a": torch.arange(12, dtype=torch.float32).reshape(3, 4),
                             "b": torch.ones(5, dtype=torch.int64), "c": torch.zeros(2, 2, dtype=torch.bfloat16)},
                 {"step": 7, "config": {"x": [1, 2]}})
    data = seed_path.read_bytes()
    calls, loaded = [], []

    @FUZZ
    @given(mutations=_MUTATIONS)
    def check(mutations):
        path = tmp_path / "fuzz.safetensors"
        path.write_bytes(_mutate(data, mutations))
        calls.append(1)
        try:
            tensors, meta = load_tensors(path)
        except CheckpointError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc).strip(), str(exc)
            return
        loaded.append(1)
        assert isinstance(meta, dict) and all(isinstance(t, torch.Tensor) for t in tensors.values())

    check()
    assert len(calls) >= FUZZ_ITERATIONS
    assert 0 < len(loaded) < len(calls)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, bytes]:
    cfg = model_preset("tiny", n_mat_blocks=1)
    folder = tmp_path_factory.mktemp("m") / "model"
    torch.manual_seed(0)  # the same weights whatever ran before, so the examples below are the same everywhere
    save_pretrained(folder, MATEBITGenerator(cfg), cfg)
    return {f.name: f.read_bytes() for f in folder.iterdir()}


@pytest.mark.slow
def test_fuzz_model_folder_loader(tmp_path, model_files):
    calls, loaded = [], []
    header_len = int.from_bytes(model_files["model.safetensors"][:8], "little") + 8

    # Both outcomes pinned, whatever the random draws give: a space after config.json's opening brace is still
    # the same JSON and must load; a header cut short must be refused.
    @FUZZ
    @given(target=st.sampled_from(["model.safetensors", "config.json"]), mutations=_MUTATIONS)
    @example(target="config.json", mutations=[("insert", 1, b" ")])
    @example(target="model.safetensors", mutations=[("truncate", 20, 0)])
    def check(target, mutations):
        folder = tmp_path / "model"
        folder.mkdir(exist_ok=True)
        for name, data in model_files.items():
            if name == target and name == "model.safetensors":
                # Mutate within the JSON header (names, dtypes, shapes, offsets): data bytes are just numbers.
                data = _mutate(data[:header_len], mutations) + data[header_len:]
            elif name == target:
                data = _mutate(data, mutations)
            (folder / name).write_bytes(data)
        calls.append(1)
        try:
            generator, cfg = load_pretrained(folder)
        except CheckpointError as exc:
            assert str(folder) in str(exc) and "\n" not in str(exc).strip(), str(exc)
            return
        loaded.append(1)
        assert isinstance(generator, torch.nn.Module)

    check()
    assert len(calls) >= FUZZ_ITERATIONS
    assert 0 < len(loaded) < len(calls)


def test_config_json_mutations_are_valid_json_or_refused(tmp_path, model_files):
    """Type confusion inside valid JSON (not just broken syntax): every field set to a wrong-typed value."""
    base = json.loads(model_files["config.json"])
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(model_files["model.safetensors"])
    (folder / "README.md").write_bytes(model_files["README.md"])
    checked = 0
    for key, value in base.items():
        if key.startswith("_"):
            continue
        for wrong in (None, "text", [1], {"a": 1}, True, -1, 1e309):
            if type(wrong) is type(value) or wrong == value:
                continue
            (folder / "config.json").write_text(json.dumps({**base, key: wrong}))
            try:
                load_pretrained(folder)
            except CheckpointError as exc:
                assert "config.json" in str(exc) or "model.safetensors" in str(exc), str(exc)
            checked += 1
    assert checked > 100
