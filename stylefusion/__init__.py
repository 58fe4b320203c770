"""StyleFusion: neural style transfer in PyTorch (Gatys et al. iterative, Johnson et al. feed-forward).

The folders are the design: `core` (what every flavour uses), `iterative` (the Gatys optimiser), `networks`
(the feed-forward networks and their files), `training` (Johnson et al.'s training loop) and `run` (running
a network on images, videos and a camera). The few names a user needs are importable from here:
    from stylefusion import stylize, IterativeConfig, load_model
They load lazily, so `import stylefusion` (and the CLIs' --help) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "StyleFusionError": "stylefusion.core.errors",
    "IterativeConfig": "stylefusion.iterative.gatys",
    "IterativeProgress": "stylefusion.iterative.gatys",
    "stylize": "stylefusion.iterative.gatys",
    "load_model": "stylefusion.networks.model_files",
    "save_model": "stylefusion.networks.model_files",
    "export_model": "stylefusion.networks.export",
    "arbitrary_network": "stylefusion.networks.arbitrary",
    "Paintings": "stylefusion.run.painting",
    "TrainConfig": "stylefusion.training.loop",
    "train": "stylefusion.training.loop",
    "ImageConfig": "stylefusion.run.folder",
    "Stylizer": "stylefusion.run.stylizer",
    "stylize_images": "stylefusion.run.folder",
    "stylize_folder": "stylefusion.run.folder",
    "VideoConfig": "stylefusion.run.video",
    "stylize_video": "stylefusion.run.video",
    "WebcamConfig": "stylefusion.run.webcam",
    "run_webcam": "stylefusion.run.webcam",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'stylefusion' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
