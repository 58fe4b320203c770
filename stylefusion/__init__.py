"""StyleFusion: neural style transfer in PyTorch (Gatys et al. iterative, Johnson et al. feed-forward)."""

from .errors import StyleFusionError

__all__ = ["StyleFusionError"]
__version__ = "0.1.0"
