"""Small shims for third-party packages that lag behind current torch/torchvision."""
from __future__ import annotations

import importlib
import sys
from types import ModuleType

__all__ = ["import_pytorchvideo_transforms"]


def import_pytorchvideo_transforms() -> ModuleType:
    """Import and return ``pytorchvideo.transforms`` on current torchvision.

    pytorchvideo 0.1.5 imports ``torchvision.transforms.functional_tensor``, which torchvision renamed to
    ``_functional_tensor``; the old name is registered as an alias of the new module when it is missing.
    """
    legacy = "torchvision.transforms.functional_tensor"
    if legacy not in sys.modules:
        try:
            importlib.import_module(legacy)
        except ImportError:
            sys.modules[legacy] = importlib.import_module("torchvision.transforms._functional_tensor")
    return importlib.import_module("pytorchvideo.transforms")
