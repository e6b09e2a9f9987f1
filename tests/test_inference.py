import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

from matebit.checkpoint import save_pretrained
from matebit.config import model_preset
from matebit.errors import InputError
from matebit.errors import ImageInputError
from matebit.inference import TranslationResult, Translator
from matebit.io import load_image
from matebit.models.generator import MATEBITGenerator


@pytest.fixture(scope="module")
def translator(tiny_model):
    return Translator.from_pretrained(tiny_model, device="cpu", dtype="fp32")  # exact reference numbers


@pytest.fixture(scope="module")
def pair():
    """A real pair at an odd size: Canny edges of `camera` (70x50) and the astronaut (64x48) as exemplar."""
    edges = cv2.Canny(cv2.resize(data.camera(), (70, 50), interpolation=cv2.INTER_AREA), 60, 150)
    exemplar = cv2.resize(data.astronaut(), (64, 48), interpolation=cv2.INTER_AREA)
    return edges, exemplar


def _arr(im):
    return np.asarray(im, dtype=np.int16)


# -- every input form gives the same translation ---------------------------------------------------------------


def test_every_input_form_gives_the_same_image(translator, pair, tmp_path):
    edges, ex = pair
    Image.fromarray(edges).save(tmp_path / "s.png")
    Image.fromarray(ex).save(tmp_path / "e.png")
    result = translator(str(tmp_path / "s.png"), tmp_path / "e.png")
    assert isinstance(result, TranslationResult) and len(result.images) == 1  # one output type, whatever the input
    reference = result.image
    assert isinstance(reference, Image.Image) and reference.size == (70, 50) and reference.mode == "RGB"
    forms = [
        (Image.fromarray(edges), Image.fromarray(ex)),
        (edges, ex),
        (edges.astype(np.float32) / 255, ex.astype(np.float64) / 255),
        (torch.from_numpy(edges).float()[None] / 255, torch.from_numpy(ex).permute(2, 0, 1).float() / 127.5 - 1),
    ]
    for s, e in forms:
        assert np.abs(_arr(translator(s, e).image) - _arr(reference)).max() <= 1


def test_output_matches_the_generator(translator, pair):
    edges, ex = pair
    s = load_image(edges[:48, :64], role="structure")
    e = load_image(ex, role="exemplar")
    result = translator(edges[:48, :64], ex)
    with torch.no_grad():
        out = translator.generator(s[None], e[None])
    expect = ((out.image[0].permute(1, 2, 0) + 1) * 127.5).round().numpy()
    assert np.abs(_arr(result.image) - expect).max() <= 1
    uncor = F.interpolate(out.uncor_weight[-1], size=(48, 64), mode="bilinear", align_corners=False)[0, 0]
    assert np.abs(np.asarray(result.uncor_weight[0]) / 255 - uncor.numpy()).max() <= 1.5 / 255


def test_batch_and_broadcast(translator, pair):
    edges, ex = pair
    small = edges[:32, :40]
    images = translator([edges, small, edges], ex, batch_size=2).images
    assert [im.size for im in images] == [(70, 50), (40, 32), (70, 50)]
    assert np.abs(_arr(images[0]) - _arr(translator(edges, ex).image)).max() <= 1
    assert np.abs(_arr(images[1]) - _arr(translator(small, ex).image)).max() <= 1
    stacked = torch.from_numpy(np.stack([edges, edges])).float()[:, None] / 255  # (B, 1, H, W) is a batch
    assert len(translator(stacked, [ex, ex[::-1].copy()]).images) == 2
    with pytest.raises(ImageInputError, match="2 structure inputs but 3 exemplars"):
        translator([edges, edges], [ex, ex, ex])


@pytest.mark.parametrize("policy, size", [("pad", None), ("resize", None), ("resize", 32), ("resize", (48, 32))])
def test_size_policies_keep_the_structure_size(translator, pair, policy, size):
    edges, ex = pair
    result = translator(edges, ex, size_policy=policy, size=size)
    assert isinstance(result, TranslationResult)
    assert result.images[0].size == result.warped[0].size == result.uncor_weight[0].size == (70, 50)


def test_size_arguments_are_checked(translator, pair):
    edges, ex = pair
    with pytest.raises(ValueError, match="size_policy"):
        translator(edges, ex, size_policy="crop")
    with pytest.raises(ValueError, match="multiples of 16"):
        translator(edges, ex, size_policy="resize", size=30)
    with pytest.raises(ValueError, match="only with size_policy='resize'"):
        translator(edges, ex, size_policy="pad", size=32)
    assert translator(edges, ex, size=32).image.size == Image.fromarray(edges).size  # size alone: run at 32x32


# -- auxiliaries -----------------------------------------------------------------------------------------------


def test_aux_outputs_and_correspondence(translator, pair):
    edges, ex = pair
    result = translator([edges, edges[:40, :60]], ex)
    assert len(result.images) == len(result.warped) == len(result.uncor_weight) == 2
    assert result.warped[1].mode == "RGB" and result.warped[1].size == (60, 40)
    assert result.uncor_weight[0].mode == "L"
    points = [(0, 0), (35, 25), (69, 49)]
    for item in (0, 1):
        for block in (0, -1):
            masked, full = result.correspondence(points if item == 0 else points[:2], block=block, item=item)
            assert masked.shape == full.shape == (3 - item, 48, 64)
            assert masked.dtype == np.float32 and (masked >= 0).all() and (full >= 0).all()
            np.testing.assert_allclose(masked.sum((1, 2)), 1, atol=1e-4)
            np.testing.assert_allclose(full.sum((1, 2)), 1, atol=1e-4)
    with pytest.raises(ValueError, match="outside the 70x50"):
        result.correspondence([(70, 10)])
    with pytest.raises(IndexError):
        result.correspondence([(1, 1)], block=3)


def test_correspondence_follows_the_generator_rows(translator, pair):
    """With no padding or resizing, the heat map is the token row upsampled: its peak is the row's argmax."""
    edges, ex = pair
    s, e = edges[:48, :64], ex
    result = translator(s, e)
    masked, _ = result.correspondence([(20, 30)])
    gen = translator.generator
    index = gen.point_to_token(torch.tensor([[20.0, 30.0]]), 48, 64)
    with torch.no_grad():
        rows = gen.probe_correspondence(load_image(s, role="structure")[None], load_image(e)[None],
                                        query_index=index).rows("masked")
    peak = int(rows[0, 0].argmax())
    y, x = np.unravel_index(masked[0].argmax(), masked[0].shape)
    assert (y // 8) * 8 + (x // 8) == peak  # 6x8 token grid


def test_batch_errors_name_the_item_and_come_before_any_model_work(translator, pair, monkeypatch):
    edges, ex = pair
    calls = []
    monkeypatch.setattr(translator, "_forward", lambda *a, **k: calls.append(1))
    with pytest.raises(ImageInputError, match=r"structure\[1\]: 8x8 is too small"):
        translator([edges, edges[:8, :8]], ex)
    assert not calls and isinstance(ImageInputError("x"), InputError)


def test_devices():
    with pytest.raises(ValueError, match="dtype"):
        Translator(MATEBITGenerator(model_preset("tiny", n_mat_blocks=1)), model_preset("tiny", n_mat_blocks=1),
                   device="cpu", dtype="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            Translator(torch.nn.Identity(), model_preset("tiny"), device="cuda")


def test_bf16_on_cpu_runs_in_bf16_and_returns_float_images(tiny_model, pair):
    from matebit import speed

    if not speed.cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16")
    folder = tiny_model
    auto = Translator.from_pretrained(folder, device="cpu")
    assert next(auto.generator.parameters()).dtype == torch.bfloat16  # the default where the CPU has bf16
    fast = Translator.from_pretrained(folder, device="cpu", dtype="bf16")
    assert next(fast.generator.parameters()).dtype == torch.bfloat16
    edges, ex = pair
    result = fast(edges[:32, :32], ex)
    assert result.image.size == (32, 32)
    masked, full = result.correspondence([(5, 5)])
    assert np.allclose(masked.sum(axis=(1, 2)), 1, atol=1e-3)


def test_compiled_translator_gives_the_eager_image(pair, tmp_path):
    # torch.compile (Inductor, weights frozen on CPU) must change the speed, not the translation.
    cfg = model_preset("tiny", n_mat_blocks=1)  # one MAT block: a third less graph to compile
    folder = tmp_path / "tiny"
    torch.manual_seed(0)
    save_pretrained(folder, MATEBITGenerator(cfg), cfg)
    translator = Translator.from_pretrained(folder, device="cpu", dtype="fp32")
    compiled = Translator.from_pretrained(folder, device="cpu", dtype="fp32", compile="default")
    assert compiled.compile == "default" and hasattr(compiled.generator, "_orig_mod")  # really compiled
    edges, ex = pair
    got = compiled(edges[:32, :32], ex)
    want = translator(edges[:32, :32], ex)
    assert np.abs(_arr(got.image) - _arr(want.image)).max() <= 1
    masked, _ = got.correspondence([(5, 5)])  # the probe runs the eager module beside the compiled one
    assert np.allclose(masked.sum(axis=(1, 2)), 1, atol=1e-3)
    with pytest.raises(InputError, match="compile must be"):
        Translator.from_pretrained(folder, device="cpu", compile="fast")
