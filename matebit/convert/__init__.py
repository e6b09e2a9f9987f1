"""Structure-map converters (HED, Canny, face landmarks, OpenPose) and exemplar retrieval.

Every converter takes one image (PIL, array or path) and returns a PIL map: 'L' with white lines on
black for edges/sketches, 'RGB' for the pose skeleton. ``convert_folder`` runs one over a folder.
"""

from matebit.errors import ConvertError, MissingDependencyError

from .canny import canny, canny_edges
from .folder import CONVERTERS, FolderReport, convert_folder, convert_path
from .hed import hed, hed_probability
from .landmarks import detect_landmarks, landmarks, landmarks_to_sketch
from .pose import pose, pose_limb_masks
from .retrieval import build_pairs_file, color_histogram, make_extractor, read_pairs, retrieve, write_pairs

# The converters that take a photo (`matebit translate --from-photo`, the web demo's "From photo" tab); pose maps
# are drawn from OpenPose keypoints, not from photos.
PHOTO_CONVERTERS = ("canny", "hed", "landmarks")

__all__ = [
    "CONVERTERS",
    "ConvertError",
    "FolderReport",
    "MissingDependencyError",
    "PHOTO_CONVERTERS",
    "build_pairs_file",
    "canny",
    "canny_edges",
    "color_histogram",
    "convert_folder",
    "convert_path",
    "detect_landmarks",
    "hed",
    "hed_probability",
    "landmarks",
    "landmarks_to_sketch",
    "make_extractor",
    "pose",
    "pose_limb_masks",
    "read_pairs",
    "retrieve",
    "write_pairs",
]
