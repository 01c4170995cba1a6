"""Frame transforms of the HOI datasets.

PNR / OSCC (the I3D input convention the released models were trained with, spec section 5.1): every frame is
resized to a ``size x size`` square with bilinear interpolation (aspect ratio *not* kept), values stay raw 0-255
RGB as float32 (no mean/std normalisation), frames are stacked channel-first ``(3, T, size, size)``. No flips,
crops or colour jitter: the original PNR/OSCC pipeline has none.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

__all__ = ["resize_square", "frames_to_clip"]


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB frame to ``size x size`` with bilinear interpolation (aspect ratio not kept).

    Args:
        image: uint8 ``[H, W, 3]``.
        size: output side.

    Returns:
        uint8 ``[size, size, 3]`` (the input itself when it already has that size).
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"resize_square: expected an [H, W, 3] image, got shape {image.shape}")
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def frames_to_clip(frames: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """Stack frames into the raw 0-255 clip the I3D models take.

    Args:
        frames: T uint8 RGB images ``[H, W, 3]`` (sizes may differ).
        size: square side of the output.

    Returns:
        float32 ``(3, T, size, size)`` with values in [0, 255].
    """
    if not frames:
        raise ValueError("frames_to_clip: no frames")
    stacked = np.stack([resize_square(frame, size) for frame in frames])  # (T, S, S, 3)
    return torch.from_numpy(stacked).permute(3, 0, 1, 2).float().contiguous()
