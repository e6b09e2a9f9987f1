"""The training objective: Eq. 14 for the generator, the hinge loss (Eq. 13) for the discriminator.

stylegan3's split: the objective is here, the schedule (optimisers, steps, the contrastive queue's policy,
checkpoints) in matebit/train.py. A term is computed when its weight is non-zero, and a term's name is the name of
its weight in `LossConfig`, so the sum takes every weight from the config:

    paper (Sec. 3.2, 3.4)   style (Eq. 7), align (8), corr (9), perceptual (10), contextual (11), structure (12),
                            adversarial (13)
    released recipe extras  gan_feature_matching, vgg_feature_matching, gram_style
    CPU demo                pixel (L1 to the target, standing in for the VGG terms), match (self-warp matching)
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager

import torch
import torch.nn as nn
from torch import Tensor

from matebit.config import LossConfig
from matebit.third_party import VGG_LAYERS

from .adversarial import d_hinge_loss, feature_matching_loss, g_hinge_loss
from .contrastive import StyleQueue, in_batch_negatives, info_nce
from .correspondence import align_loss, corr_loss, match_loss
from .gram import gram_style_loss
from .networks import LossNetworks
from .perceptual import contextual_loss_multi, perceptual_loss, vgg_feature_matching_loss
from .structure import structure_loss


class Objective:
    """The losses of one training run: the loss config, the frozen loss networks, and the critics they use.

    `discriminator` is D itself, a fixed critic in the generator step; `critic` is what the discriminator step
    calls (D wrapped for DDP; D itself by default). `queue` holds the contrastive negatives (Eq. 7); its filling
    policy belongs to the training loop. `autocast()` gives the mixed-precision context the networks run in; the
    loss networks run in fp32, as released, unless `networks_autocast` runs them under `autocast()` too (a speed
    option: train.loss_networks_autocast).
    """

    def __init__(self, cfg: LossConfig, nets: LossNetworks, discriminator: nn.Module, queue: StyleQueue | None,
                 use_style: bool, device: torch.device, autocast: Callable[[], ContextManager] = nullcontext,
                 critic: nn.Module | None = None, networks_autocast: bool = False):
        self.cfg, self.nets = cfg, nets
        self.networks_autocast = networks_autocast
        self.discriminator, self.critic = discriminator, critic if critic is not None else discriminator
        self.queue, self.use_style = queue, use_style
        self.device, self.autocast = torch.device(device), autocast

    def _network_precision(self) -> ContextManager:
        """The context the loss networks run in: fp32 (autocast off), or the training autocast when asked."""
        return self.autocast() if self.networks_autocast else torch.autocast(self.device.type, enabled=False)

    def _features(self, image: Tensor, grad: bool) -> dict[str, Tensor]:
        with self._network_precision(), (nullcontext() if grad else torch.no_grad()):
            feats = self.nets.perceptual(image.float(), VGG_LAYERS)
        return {k: v.float() for k, v in feats.items()}  # the losses on them stay fp32

    def generator_loss(self, batch: dict[str, Tensor], outputs) -> tuple[dict[str, Tensor], Tensor]:
        """(each term, the weighted sum of Eq. 14) for G's outputs on `batch`.

        `outputs`: (the GeneratorOutput, E_B(x_B) features for the alignment term or None, z(x̂_B) for the
        contrastive term or None). `batch`: structure x_A, exemplar y_B, image x_B, self_ref.
        """
        w = self.cfg
        out, feats_b, z_fake = outputs
        x_a, y_b, x_b = batch["structure"], batch["exemplar"], batch["image"]
        self_ref = batch["self_ref"].float()
        fake = out.image.float()
        losses: dict[str, Tensor] = {}
        if w.align:
            losses["align"] = align_loss(out.structure_features[-1].float(), feats_b[-1].float())
        if w.corr and out.warped:
            # Only a self-reference exemplar can be warped into the target; pairs-file exemplars show
            # another image (the released code restricts this term the same way).
            losses["corr"] = corr_loss([x.float() for x in out.warped], x_b, sample_weight=self_ref)
        if w.match and out.warped:
            if not out.rows:
                raise ValueError("loss.match needs every block's attention rows: run G with with_rows=True")
            losses["match"] = match_loss([r.float() for r in out.rows], batch["warp_grid"], out.warped[0].shape[-2:],
                                         sample_weight=self_ref)
        if w.pixel:
            losses["pixel"] = (fake - x_b).abs().mean()
        if self.nets.perceptual is not None:
            f_fake = self._features(fake, grad=True)
            f_real = self._features(x_b, grad=False)
            if w.perceptual:
                losses["perceptual"] = perceptual_loss(f_fake, f_real, "relu4_2", kind=w.perceptual_kind)
            if w.contextual or w.gram_style:
                f_ex = self._features(y_b, grad=False)
                if w.contextual:
                    losses["contextual"] = contextual_loss_multi(f_fake, f_ex, form=w.contextual_form,
                                                                 center=w.contextual_center)
                if w.gram_style:
                    losses["gram_style"] = gram_style_loss(f_fake, f_ex)
            if w.vgg_feature_matching:
                losses["vgg_feature_matching"] = vgg_feature_matching_loss(f_fake, f_real, sample_weight=self_ref)
        if w.structure:
            with self._network_precision():
                losses["structure"] = structure_loss(fake, x_b, self.nets.hed, self.nets.lpips).float()
        if w.adversarial or w.gan_feature_matching:
            self.discriminator.requires_grad_(False)  # D is a fixed critic in the G step
            with self.autocast():
                pred_fake = self.discriminator(x_a, out.image)
                pred_real = self.discriminator(x_a, x_b) if w.gan_feature_matching else None
            self.discriminator.requires_grad_(True)
            if w.adversarial:
                losses["adversarial"] = g_hinge_loss([[f.float() for f in s] for s in pred_fake])
            if w.gan_feature_matching:
                losses["gan_feature_matching"] = feature_matching_loss(
                    [[f.float() for f in s] for s in pred_fake], [[f.detach().float() for f in s] for s in pred_real])
        if self.use_style:
            z_pos = out.z.detach().float()  # the exemplar's code is the positive, not trained through
            negatives = self.queue.negatives()
            if w.negatives == "cast":
                # CAST: the other exemplars are the negatives (queued exemplar codes plus this batch's others).
                batch_negs = in_batch_negatives(z_pos)
                if len(negatives):
                    negatives = torch.cat([negatives.unsqueeze(0).expand(len(z_pos), -1, -1), batch_negs], 1)
                else:
                    negatives = batch_negs
            losses["style"] = info_nce(z_fake.float(), z_pos, negatives, w.tau, w.normalize_style_codes)
        total = sum(getattr(w, name) * value for name, value in losses.items())  # Eq. 14
        return losses, total

    def discriminator_loss(self, batch: dict[str, Tensor], fake: Tensor) -> Tensor:
        """Hinge loss of D on the real image (the target x_B, or y_B with d_real="exemplar") and a detached fake."""
        x_a = batch["structure"]
        real = batch["image"] if self.cfg.d_real == "target" else batch["exemplar"]
        n = x_a.shape[0]
        # Real and fake in one forward: DDP sees a single call per step.
        with self.autocast():
            preds = self.critic(torch.cat([x_a, x_a]), torch.cat([real, fake.detach()]))
        real_pred = [[f[:n].float() for f in s] for s in preds]
        fake_pred = [[f[n:].float() for f in s] for s in preds]
        return d_hinge_loss(real_pred, fake_pred)
