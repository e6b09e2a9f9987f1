"""The objective: every term is weighted by the LossConfig field of its name (Eq. 14), and D's hinge loss."""

import dataclasses

import torch

from matebit.config import LossConfig, apply_overrides, experiment_preset
from matebit.data.warp import WarpConfig, warp_grid
from matebit.losses import LossNetworks, Objective, StyleQueue
from matebit.third_party import VGG_LAYERS
from matebit.models import MATEBITGenerator, MultiscaleDiscriminator


def _setup(*overrides):
    cfg = apply_overrides(experiment_preset("tiny"), list(overrides))
    torch.manual_seed(0)
    # eval(): spectral norm's power iteration would otherwise move D between the two calls compared below
    g, d = MATEBITGenerator(cfg.model), MultiscaleDiscriminator(cfg.model).eval()
    queue = StyleQueue(cfg.model.style_dim, cfg.loss.queue_size)
    grid = warp_grid(2, 32, 32, torch.Generator().manual_seed(0), WarpConfig(flip=0.0))
    grid[1] = float("nan")  # sample 1's exemplar is another image: no known correspondence
    batch = {"structure": torch.rand(2, 3, 32, 32), "exemplar": torch.rand(2, 3, 32, 32) * 2 - 1,
             "image": torch.rand(2, 3, 32, 32) * 2 - 1, "self_ref": torch.tensor([True, False]), "warp_grid": grid}
    out = g(batch["structure"], batch["exemplar"], with_rows=cfg.loss.match > 0)
    outputs = (out, g.encode_exemplar(batch["image"])[0], g.encode_style(out.image))
    return cfg, d, queue, batch, outputs


def test_total_is_the_sum_of_terms_weighted_by_their_config_fields():
    cfg, d, queue, batch, outputs = _setup("loss.gan_feature_matching=2.0", "loss.gram_style=0.0")
    objective = Objective(cfg.loss, LossNetworks(), d, queue, use_style=True, device="cpu")
    with torch.no_grad():
        terms, total = objective.generator_loss(batch, outputs)
    fields = {f.name for f in dataclasses.fields(LossConfig)}
    assert set(terms) == {"align", "corr", "match", "pixel", "adversarial", "gan_feature_matching", "style"}
    assert set(terms) <= fields
    expected = sum(getattr(cfg.loss, k) * v for k, v in terms.items())
    torch.testing.assert_close(total, expected)
    # Doubling one weight adds that term once more, and nothing else moves.
    doubled = dataclasses.replace(cfg.loss, pixel=2 * cfg.loss.pixel)
    with torch.no_grad():
        terms2, total2 = Objective(doubled, LossNetworks(), d, queue, True, "cpu").generator_loss(batch, outputs)
    torch.testing.assert_close(total2, total + cfg.loss.pixel * terms["pixel"])


def test_discriminator_hinge_loss_is_finite_and_reaches_d():
    cfg, d, queue, batch, outputs = _setup()
    objective = Objective(cfg.loss, LossNetworks(), d, queue, use_style=False, device="cpu")
    loss = objective.discriminator_loss(batch, outputs[0].image)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in d.parameters())


def _tiny_perceptual_net():
    """A VGG-shaped stand-in: one convolution per named layer; records the dtype its convolutions compute in."""
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(3, 3, 3, padding=1) for _ in VGG_LAYERS)
            self.seen: list[torch.dtype] = []

        def forward(self, x, layers):
            out = {}
            for name, conv in zip(VGG_LAYERS, self.convs):
                x = torch.relu(conv(x))
                self.seen.append(x.dtype)
                out[name] = x
            return {k: out[k] for k in layers}

    return Net().requires_grad_(False)


def test_loss_networks_run_in_fp32_unless_asked_to_follow_the_training_autocast():
    cfg, d, queue, batch, outputs = _setup("loss.perceptual=1.0")
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    results = {}
    for follow in (False, True):
        nets = LossNetworks(perceptual=_tiny_perceptual_net())
        objective = Objective(cfg.loss, nets, d, queue, use_style=False, device="cpu", autocast=bf16,
                              networks_autocast=follow)
        with torch.no_grad():
            terms, _ = objective.generator_loss(batch, outputs)
        results[follow] = (set(nets.perceptual.seen), terms["perceptual"])
    assert results[False][0] == {torch.float32}  # as released: fp32 under AMP
    assert results[True][0] == {torch.bfloat16}
    assert results[True][1].dtype == torch.float32 and torch.isfinite(results[True][1])
    torch.testing.assert_close(results[True][1], results[False][1], rtol=0.05, atol=1e-3)
