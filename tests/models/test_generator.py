import pytest
import torch

from matebit.config import PRESETS, model_preset
from matebit.models import InputSizeError, MATEBITGenerator, MultiscaleDiscriminator
from matebit.models.layers import AdaConv


def _inputs(b=2, h=64, w=64, c=3):
    return torch.rand(b, c, h, w), torch.rand(b, 3, h, w) * 2 - 1


@pytest.mark.parametrize("size", [(64, 64), (48, 64), (96, 80)])
def test_output_shapes_at_several_sizes(size):
    g = MATEBITGenerator(model_preset("tiny")).eval()
    s, e = _inputs(h=size[0], w=size[1])
    out = g(s, e)
    assert out.image.shape == (2, 3, *size)
    assert out.image.abs().max() <= 1
    assert len(out.warped) == 3 and out.warped[0].shape == (2, 3, size[0] // 8, size[1] // 8)
    assert out.uncor_weight[0].shape == (2, 1, size[0] // 8, size[1] // 8)
    assert out.z.shape == (2, 16)


def test_sizes_not_multiple_of_stride_are_refused():
    g = MATEBITGenerator(model_preset("tiny"))
    s, e = _inputs(h=60, w=64)
    with pytest.raises(InputSizeError, match="not a positive multiple of 16"):
        g(s, e)
    s, e = _inputs()
    with pytest.raises(InputSizeError, match="same size"):
        g(s, e[..., :48])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_runs(name):
    tiny = PRESETS["tiny"].model
    cfg = model_preset(name, **{k: v for k, v in tiny.items() if k not in PRESETS[name].model})
    g, d = MATEBITGenerator(cfg), MultiscaleDiscriminator(cfg)
    s, e = _inputs(b=1, h=32, w=32)
    probe = g.probe_correspondence(s, e, query_index=torch.tensor([0, 3]))
    out = probe.output
    assert out.image.shape == (1, 3, 32, 32)
    assert len(out.warped) == cfg.n_mat_blocks
    assert len(probe.blocks) == cfg.n_mat_blocks
    logits = d(s, out.image)
    assert len(logits) == cfg.d_scales and logits[0][-1].shape[1] == 1


def test_every_parameter_gets_a_gradient_in_the_paper_model():
    # The paper preset's structure at tiny widths (a full-width backward is too slow for a unit test).
    g = MATEBITGenerator(model_preset("tiny"))
    s, e = _inputs(b=2, h=32, w=32)
    out = g(s, e)
    loss = out.image.mean() + sum(w.mean() for w in out.warped) + out.z.pow(2).mean()
    loss.backward()
    dead = [n for n, p in g.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
            or p.grad.abs().sum() == 0]
    assert not dead, f"parameters without gradient: {dead}"


def test_same_seed_same_output_and_same_weights_any_size():
    torch.manual_seed(3)
    g1 = MATEBITGenerator(model_preset("tiny")).eval()
    torch.manual_seed(3)
    g2 = MATEBITGenerator(model_preset("tiny")).eval()
    s, e = _inputs()
    torch.testing.assert_close(g1(s, e).image, g2(s, e).image, rtol=0, atol=0)
    # The same weights at another size (no fixed positional grid).
    s2, e2 = _inputs(h=96, w=64)
    assert g1(s2, e2).image.shape == (2, 3, 96, 64)


def test_variants_change_the_architecture():
    base = MATEBITGenerator(model_preset("tiny"))
    no_skip = MATEBITGenerator(model_preset("tiny", skip_connections=False))
    assert base.decoder.up2.conv.weight.shape[1] == 2 * no_skip.decoder.up2.conv.weight.shape[1]
    assert MATEBITGenerator(model_preset("tiny", global_style=False)).mapping is None
    assert len(MATEBITGenerator(model_preset("tiny", n_mat_blocks=0)).blocks) == 0
    ffn = MATEBITGenerator(model_preset("tiny", feed_forward="ffn"))
    assert not any(isinstance(m, AdaConv) for m in ffn.modules())
    full = MATEBITGenerator(model_preset("tiny", correspondence="full"))
    assert not hasattr(full.blocks[0], "feed_forward")


def test_spectral_norm_policies():
    def n_sn(cfg):
        g = MATEBITGenerator(cfg)
        return sum(1 for m in g.modules() if hasattr(m, "parametrizations"))

    all_sn = n_sn(model_preset("tiny"))
    official = n_sn(model_preset("tiny", spectral_norm="official"))
    none = n_sn(model_preset("tiny", spectral_norm="none"))
    convs = sum(1 for m in MATEBITGenerator(model_preset("tiny")).modules()
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert all_sn == convs and 0 < official < all_sn and none == 0


@pytest.mark.parametrize("kind", ["masked", "no-relu", "full", "official"])
def test_query_rows_agree_with_the_whole_matrix_and_probing_leaves_the_output_alone(kind):
    over = {"masked": {}, "no-relu": {"mask": "none"}, "full": {"correspondence": "full"},
            "official": {"correspondence": "official"}}[kind]
    g = MATEBITGenerator(model_preset("tiny", **over)).eval()
    s, e = _inputs(b=1)
    idx = torch.tensor([0, 17, 63])
    with torch.no_grad():
        whole = g.probe_correspondence(s, e)  # every token: (B, N, M)
        rows = g.probe_correspondence(s, e, query_index=idx)
        plain = g(s, e)
    torch.testing.assert_close(rows.output.image, plain.image)
    for b in range(len(g.blocks)):
        for which in ("masked", "full", "used"):
            assert whole.rows(which, b).shape == (1, 64, 64)
            torch.testing.assert_close(rows.rows(which, b), whole.rows(which, b)[:, idx], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(rows.rows(which, b).sum(-1), torch.ones(1, 3), atol=1e-4, rtol=0)
    used_is = {"masked": "masked", "no-relu": "full", "full": "full", "official": "masked"}[kind]
    torch.testing.assert_close(rows.rows("used"), rows.rows(used_is))
    xy = torch.tensor([[4.0, 4.0], [63.0, 63.0]])
    assert g.point_to_token(xy, 64, 64).tolist() == [0, 63]


@pytest.mark.parametrize("kind", ["masked", "full", "official"])
def test_rows_are_an_aux_output_of_the_blocks_own_pass(kind):
    # Asking for rows must not run a second Q/K projection or cosine: each block's to_q and to_k run once per
    # forward, and the whole pass counts the same matmul/conv FLOPs with rows as without.
    from collections import Counter

    from torch.utils.flop_counter import FlopCounterMode

    g = MATEBITGenerator(model_preset("tiny", correspondence=kind)).eval()  # eval: no spectral-norm updates
    calls = Counter()
    for i, block in enumerate(g.blocks):
        for name in ("to_q", "to_k"):
            getattr(block, name).register_forward_hook(lambda *_, key=(i, name): calls.update([key]))
    s, e = _inputs(b=1)

    def run(fn):
        calls.clear()
        with FlopCounterMode(display=False) as flops:
            result = fn()
        assert set(calls.values()) == {1} and len(calls) == 2 * len(g.blocks)
        return result, flops.get_total_flops()

    plain, plain_flops = run(lambda: g(s, e))
    trained, rows_flops = run(lambda: g(s, e, with_rows=True))
    probe, probe_flops = run(lambda: g.probe_correspondence(s, e, query_index=torch.tensor([0, 9])))
    assert plain_flops == rows_flops == probe_flops
    assert len(trained.rows) == 3 and trained.rows[0].shape == (1, 64, 64) and plain.rows == []
    torch.testing.assert_close(trained.image, plain.image)
    torch.testing.assert_close(probe.rows("full"), trained.rows[-1][:, [0, 9]])


def test_the_attention_implementation_is_a_runtime_setting():
    g = MATEBITGenerator(model_preset("tiny")).eval()
    s, e = _inputs(b=1)
    with torch.no_grad():
        auto = g(s, e).image
        g.set_attention("reference")
        assert g.attention.impl == "reference"
        torch.testing.assert_close(g(s, e).image, auto)  # the same numbers by another path on CPU
    assert not any("attention" in key for key in g.state_dict())
    from matebit.config import ConfigError

    with pytest.raises(ConfigError, match="attention must be"):
        g.set_attention("flash")
    with pytest.raises(ConfigError, match="fused_min_tokens"):
        g.set_attention("auto", fused_min_tokens=-1)
