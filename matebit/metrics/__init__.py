"""Evaluation metrics for exemplar-based translation (MATEBIT §4.1), in a stylegan3-style registry.

Importing this package registers: fid, kid, swd, texture, color, semantic, lpips, psnr, ssim, pck, timing.
See `PROTOCOLS` for the one-line description of each (also written into every result).
"""

from . import correspondence, distribution, pixel, swd, timing, vgg_scores  # noqa: F401  (registration)
from .correspondence import (PCK_ALPHAS, ProbedMatches, attention_to_points, pck, predict_matches, predict_points,
                             probe_matches, query_rows, soft_points, token_centres)
from .distribution import feature_stats, frechet_distance, kid_mmd2, kid_subsets
from .evalset import EvalSet, Landmarks, load_image, load_label_map, load_landmarks
from .evaluate import evaluate
from .features import FID_WEIGHTS_NAME, FIDInceptionV3, MissingWeightsError, load_fid_inception
from .pixel import psnr, ssim
from .registry import (MetricError, MetricOutput, MetricResult, append_jsonl, compute_metric, get_metric,
                       list_metrics, read_jsonl, register_metric, report_markdown)
from .swd import sliced_wasserstein
from .swd import swd as swd_distance
from .timing import TimingResult, time_callable
from .vgg_scores import region_cosine

PROTOCOLS = {name: get_metric(name).protocol for name in list_metrics()}

__all__ = [
    "EvalSet", "Landmarks", "load_image", "load_label_map", "load_landmarks",
    "MetricError", "MetricOutput", "MetricResult", "MissingWeightsError", "PROTOCOLS",
    "register_metric", "list_metrics", "get_metric", "compute_metric", "evaluate",
    "append_jsonl", "read_jsonl", "report_markdown",
    "frechet_distance", "feature_stats", "kid_mmd2", "kid_subsets", "FIDInceptionV3", "FID_WEIGHTS_NAME",
    "load_fid_inception", "swd_distance", "sliced_wasserstein", "region_cosine", "psnr", "ssim",
    "pck", "PCK_ALPHAS", "attention_to_points", "query_rows", "predict_points", "token_centres", "soft_points",
    "ProbedMatches", "probe_matches", "predict_matches", "time_callable", "TimingResult",
]
