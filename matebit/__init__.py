"""matebit: exemplar-based image translation with MATEBIT (Jiang et al., CVPR 2023)."""

__version__ = "0.1.0"
