"""The losses of MATEBIT (paper Sec. 3.2 and 3.4) plus the released code's extra terms; `Objective` sums them."""

from .adversarial import d_hinge_loss, feature_matching_loss, g_hinge_loss
from .contrastive import POLICIES, StyleQueue, in_batch_negatives, info_nce
from .correspondence import align_loss, corr_loss, downsample_to
from .gram import GRAM_WEIGHTS, gram_matrix, gram_style_loss
from .networks import LossNetworks
from .objective import Objective
from .perceptual import (
    CX_POOL,
    CX_WEIGHTS,
    FM_WEIGHTS,
    contextual_loss,
    contextual_loss_multi,
    contextual_similarity,
    perceptual_loss,
    vgg_feature_matching_loss,
)
from .structure import edges_to_image, structure_loss

__all__ = [
    "CX_POOL",
    "CX_WEIGHTS",
    "FM_WEIGHTS",
    "GRAM_WEIGHTS",
    "LossNetworks",
    "Objective",
    "POLICIES",
    "StyleQueue",
    "align_loss",
    "contextual_loss",
    "contextual_loss_multi",
    "contextual_similarity",
    "corr_loss",
    "d_hinge_loss",
    "downsample_to",
    "edges_to_image",
    "feature_matching_loss",
    "g_hinge_loss",
    "gram_matrix",
    "gram_style_loss",
    "in_batch_negatives",
    "info_nce",
    "perceptual_loss",
    "structure_loss",
    "vgg_feature_matching_loss",
]
