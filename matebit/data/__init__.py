"""Data: the paired-folder dataset, self-exemplar warps and the procedural synthetic face set."""

from matebit.errors import DataError

from .folder import DataConfig, PairedFolderDataset, load_image, load_structure
from .synthetic import (KEYPOINT_NAMES, KEYPOINT_PARTS, PART_INDEX, PART_NAMES, FaceGeometry, FaceStyle, Sample,
                        SyntheticFaces, Texture, render, sample_geometry, sample_style, write_synthetic_dataset)
from .warp import WarpConfig, random_warp, random_warp_batch, warp_grid

__all__ = [
    "DataError", "DataConfig", "PairedFolderDataset", "load_image", "load_structure",
    "PART_NAMES", "PART_INDEX", "KEYPOINT_NAMES", "KEYPOINT_PARTS", "FaceGeometry", "FaceStyle", "Texture",
    "Sample", "SyntheticFaces", "render", "sample_geometry", "sample_style", "write_synthetic_dataset",
    "WarpConfig", "random_warp", "random_warp_batch", "warp_grid",
]
