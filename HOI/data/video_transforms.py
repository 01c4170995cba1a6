"""SlowFast-view clip transforms of the AR and LTA datasets (spec hoi.md §5.2-§5.3), as plain torch functions.

Every function works on float videos laid out ``(C, T, H, W)`` (channels first, as pytorchvideo's transforms), so
several clips stacked along T are transformed *jointly* (one scale, one crop, one flip for all of them)::

    decoded uint8 [T_i, H, W, 3] per clip
        │  uniform temporal subsample to NUM_FRAMES (linspace indices, as pytorchvideo)
        ▼
    (3, N·T, H, W) float in [0, 255]
        │  train: random short side in TRAIN_JITTER_SCALES, random TRAIN_CROP_SIZE crop, horizontal flip
        │  eval:  short side TRAIN_JITTER_SCALES[0], centre TRAIN_CROP_SIZE crop
        │  /255, (x - MEAN) / STD per channel
        ▼
    split per clip → pack pathways: fast = all T frames, slow = T / alpha frames (linspace indices)

Randomness comes from an optional ``torch.Generator`` (``None`` = torch's global generator, which Lightning's
``seed_everything(workers=True)`` seeds per dataloader worker).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "FLIP_MODES",
    "uniform_temporal_indices",
    "uniform_temporal_subsample",
    "short_side_scale",
    "random_short_side_scale",
    "random_crop",
    "center_crop",
    "horizontal_flip",
    "normalize",
    "pack_pathways",
    "SlowFastClipTransform",
]

#: ``"none"``: never flip; ``"random"``: flip with probability 0.5 (the corrected default); ``"always"``: flip every
#: training clip, what the original ``RandomHorizontalFlip(p=True)`` did (spec §11 item 10).
FLIP_MODES = ("none", "random", "always")


def uniform_temporal_indices(num_frames: int, num_samples: int) -> torch.Tensor:
    """Indices of ``num_samples`` equally spaced frames out of ``num_frames`` (nearest neighbour when upsampling).

    ``linspace(0, num_frames - 1, num_samples)`` truncated to integers, the rule of pytorchvideo's
    ``UniformTemporalSubsample`` and of PySlowFast's pathway packing.

    Returns:
        int64 ``[num_samples]``.
    """
    if num_frames < 1 or num_samples < 1:
        raise ValueError(f"uniform temporal subsampling needs at least one frame in and out, got {num_frames} -> "
                         f"{num_samples}")
    return torch.linspace(0, num_frames - 1, num_samples).clamp(0, num_frames - 1).long()


def uniform_temporal_subsample(video: torch.Tensor, num_samples: int, temporal_dim: int = -3) -> torch.Tensor:
    """``num_samples`` equally spaced frames along ``temporal_dim`` (see :func:`uniform_temporal_indices`)."""
    indices = uniform_temporal_indices(video.shape[temporal_dim], num_samples).to(video.device)
    return video.index_select(temporal_dim, indices)


def short_side_scale(video: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(C, T, H, W)`` so that the shorter side is ``size`` (bilinear, aspect kept, long side floored).

    Returns:
        ``(C, T, H', W')`` float32.
    """
    _check_video(video)
    _, _, height, width = video.shape
    if width < height:
        new_height, new_width = int(math.floor(height / width * size)), int(size)
    else:
        new_height, new_width = int(size), int(math.floor(width / height * size))
    if (new_height, new_width) == (height, width):
        return video
    # interpolate treats C as the batch and T as channels: every frame is resized the same way.
    return F.interpolate(video, size=(new_height, new_width), mode="bilinear", align_corners=False)


def random_short_side_scale(video: torch.Tensor, min_size: int, max_size: int,
                            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """:func:`short_side_scale` to a size drawn uniformly from the integers ``min_size … max_size``."""
    if min_size > max_size:
        raise ValueError(f"random short-side scale range is empty: [{min_size}, {max_size}]")
    size = int(torch.randint(int(min_size), int(max_size) + 1, (1,), generator=generator))
    return short_side_scale(video, size)


def random_crop(video: torch.Tensor, size: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A ``size``×``size`` crop at a uniformly random position (the same for every frame)."""
    _check_video(video)
    height, width = video.shape[-2:]
    _check_crop(height, width, size)
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    return video[..., top:top + size, left:left + size]


def center_crop(video: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size``×``size`` crop (offsets rounded as torchvision's ``CenterCrop``)."""
    _check_video(video)
    height, width = video.shape[-2:]
    _check_crop(height, width, size)
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return video[..., top:top + size, left:left + size]


def horizontal_flip(video: torch.Tensor) -> torch.Tensor:
    """Mirror left-right (for egocentric video this swaps the hands)."""
    return video.flip(-1)


def normalize(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(video / 255 - mean) / std`` per channel of a ``(C, T, H, W)`` video in [0, 255]."""
    _check_video(video)
    channels = video.shape[0]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"normalize: {channels} channels but mean {list(mean)} and std {list(std)}")
    mean_t = torch.tensor(mean, dtype=video.dtype, device=video.device).view(-1, 1, 1, 1)
    std_t = torch.tensor(std, dtype=video.dtype, device=video.device).view(-1, 1, 1, 1)
    return (video / 255.0 - mean_t) / std_t


def pack_pathways(frames: torch.Tensor, alpha: int, temporal_dim: int = -3) -> Tuple[torch.Tensor, torch.Tensor]:
    """SlowFast inputs from one frame sequence: ``(slow, fast)`` with T/alpha and T frames.

    Args:
        frames: ``(..., C, T, H, W)``.
        alpha: frame-rate ratio fast/slow (``SLOWFAST.ALPHA``); T must be a multiple of it.
    """
    num_frames = frames.shape[temporal_dim]
    if num_frames % alpha:
        raise ValueError(f"pack_pathways: {num_frames} frames is not a multiple of alpha={alpha}")
    slow = frames.index_select(temporal_dim, uniform_temporal_indices(num_frames, num_frames // alpha))
    return slow, frames


def _check_video(video: torch.Tensor) -> None:
    if not isinstance(video, torch.Tensor) or video.dim() != 4 or not video.is_floating_point():
        raise ValueError(f"expected a float video (C, T, H, W), got "
                         f"{getattr(video, 'dtype', type(video).__name__)} {tuple(getattr(video, 'shape', ()))}")


def _check_crop(height: int, width: int, size: int) -> None:
    if size > height or size > width:
        raise ValueError(f"crop size {size} is larger than the frame ({height}x{width}); raise the short-side "
                         f"scale (DATA.TRAIN_JITTER_SCALES) or lower the crop (DATA.TRAIN_CROP_SIZE)")


@dataclass(frozen=True)
class SlowFastClipTransform:
    """Decoded clips → normalised SlowFast pathways, the same spatial transform for every clip of a sample.

    Args:
        num_frames: frames per clip after temporal subsampling (``DATA.NUM_FRAMES``, 32).
        alpha: slow pathway gets ``num_frames // alpha`` frames (``SLOWFAST.ALPHA``, 4).
        crop_size: output side (``DATA.TRAIN_CROP_SIZE``, 224): random crop in training, centre crop otherwise.
        jitter_scales: ``(min, max)`` random short side in training (``DATA.TRAIN_JITTER_SCALES``); evaluation
            resizes the short side to ``min`` (the original's eval rule; ``DATA.TEST_CROP_SIZE`` was never used).
        mean, std: per-channel normalisation after /255 (``DATA.MEAN``, ``DATA.STD``).
        train: training augmentation (random scale, crop, flip) instead of the deterministic eval view.
        flip: one of :data:`FLIP_MODES`, training only.
    """

    num_frames: int = 32
    alpha: int = 4
    crop_size: int = 224
    jitter_scales: Tuple[int, int] = (256, 320)
    mean: Tuple[float, ...] = (0.45, 0.45, 0.45)
    std: Tuple[float, ...] = (0.225, 0.225, 0.225)
    train: bool = False
    flip: str = "random"

    def __post_init__(self) -> None:
        if self.flip not in FLIP_MODES:
            raise ValueError(f"flip must be one of {FLIP_MODES}, got {self.flip!r}")
        if self.num_frames % self.alpha:
            raise ValueError(f"num_frames ({self.num_frames}) must be a multiple of alpha ({self.alpha})")
        low, high = self.jitter_scales
        if not 0 < low <= high:
            raise ValueError(f"jitter_scales must be 0 < min <= max, got {self.jitter_scales}")
        if self.crop_size > low:
            raise ValueError(f"crop_size {self.crop_size} exceeds the smallest short side {low} (jitter_scales)")

    def __call__(self, clips: Sequence[np.ndarray], generator: Optional[torch.Generator] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Transform the N clips of one sample jointly.

        Args:
            clips: N uint8 arrays ``[T_i, H, W, 3]`` (RGB) of one size; T_i may differ.
            generator: random source of the training augmentation.

        Returns:
            ``(slow (N, 3, T/alpha, S, S), fast (N, 3, T, S, S))`` float32, S = ``crop_size``.
        """
        if not clips:
            raise ValueError("SlowFastClipTransform needs at least one clip")
        sizes = {tuple(clip.shape[1:]) for clip in clips}
        if len(sizes) != 1 or len(next(iter(sizes))) != 3 or next(iter(sizes))[2] != 3:
            raise ValueError(f"clips must be [T, H, W, 3] arrays of one frame size, got {sorted(sizes)}")
        # Subsample each clip first so that only the frames kept are converted and resized.
        subsampled = [torch.from_numpy(np.ascontiguousarray(clip))[uniform_temporal_indices(len(clip),
                                                                                             self.num_frames)]
                      for clip in clips]
        video = torch.cat(subsampled).permute(3, 0, 1, 2).float()  # (3, N*T, H, W)
        if self.train:
            video = random_short_side_scale(video, *self.jitter_scales, generator=generator)
            video = random_crop(video, self.crop_size, generator=generator)
            if self.flip == "always" or (
                    self.flip == "random" and float(torch.rand((), generator=generator)) < 0.5):
                video = horizontal_flip(video)
        else:
            video = short_side_scale(video, self.jitter_scales[0])
            video = center_crop(video, self.crop_size)
        # Bilinear resizing and cropping are per-channel affine maps, so normalising last gives the same values as
        # the original order (normalise, then resize) on far fewer pixels.
        video = normalize(video.contiguous(), self.mean, self.std)
        frames = video.reshape(3, len(clips), self.num_frames, self.crop_size, self.crop_size).transpose(0, 1)
        return pack_pathways(frames.contiguous(), self.alpha)
