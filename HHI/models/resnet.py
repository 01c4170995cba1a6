"""The ResNet-18 face-frame encoder shared by the LAM and TTM stage-I models.

It is a plain ResNet-18 (BasicBlocks, [2, 2, 2, 2]) whose classifier is replaced by two linears,
``fc1`` 512 -> 1000 followed by ReLU and ``fc2`` 1000 -> 256 with no activation. The ``fc2`` output
of every frame is the feature EgoT2 translates (spec hhi.md §2.3). Attribute names follow the
official checkpoints (``conv1``, ``bn1``, ``layer1`` ... ``layer4`` with ``downsample.{0,1}``,
``fc1``, ``fc2``) so that ``ts_lam.pth`` / ``ts_ttm.pth`` load strictly.

Data flow per frame (224x224 input; any size works thanks to adaptive pooling)::

    3x224x224 -> conv1 7x7/2 + BN + ReLU -> maxpool 3x3/2 -> 64x56x56
              -> layer1 64x56x56 -> layer2 128x28x28 -> layer3 256x14x14 -> layer4 512x7x7
              -> global average pool 512 -> fc1 + ReLU 1000 -> fc2 256
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ["BasicBlock", "FrameEncoder", "init_conv_bn_"]


def init_conv_bn_(module: nn.Module) -> None:
    """Initialise every Conv2d and BatchNorm2d below ``module`` the way the official models do.

    Conv2d weights get Kaiming-normal (fan_out, ReLU gain); BatchNorm2d weight 1 and bias 0. Linear,
    Conv1d, BatchNorm1d and LSTM layers keep PyTorch's default initialisation.

    Args:
        module: any module; modified in place.
    """
    for submodule in module.modules():
        if isinstance(submodule, nn.Conv2d):
            nn.init.kaiming_normal_(submodule.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(submodule, nn.BatchNorm2d):
            nn.init.ones_(submodule.weight)
            nn.init.zeros_(submodule.bias)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet v1 basic block).

    Args:
        in_channels: channels of the block input.
        channels: channels of the block output.
        stride: stride of the first convolution (2 halves the resolution).
        downsample: projection applied to the residual when the shape changes, else ``None``.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            features: (N, in_channels, H, W).

        Returns:
            (N, channels, H / stride, W / stride).
        """
        residual = features if self.downsample is None else self.downsample(features)
        out = self.relu(self.bn1(self.conv1(features)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class FrameEncoder(nn.Module):
    """ResNet-18 that maps one RGB face crop to a 256-d embedding (the LAM/TTM frame encoder).

    Args:
        embedding_dim: width of ``fc2``, the per-frame feature (256 in every official model).
        hidden_dim: width of ``fc1`` (1000, the size of the ImageNet classifier it replaces).
        blocks_per_stage: BasicBlocks in ``layer1`` ... ``layer4``.
        stage_channels: output channels of ``layer1`` ... ``layer4``.

    Input frames are ImageNet-normalised float tensors; the official models see 224x224 crops,
    smaller crops (e.g. 64x64 in tests and the CPU demo) work because the pooling is adaptive.
    """

    def __init__(self, embedding_dim: int = 256, hidden_dim: int = 1000,
                 blocks_per_stage: Sequence[int] = (2, 2, 2, 2),
                 stage_channels: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        if len(blocks_per_stage) != 4 or len(stage_channels) != 4:
            raise ValueError(
                f"FrameEncoder needs 4 stages, got blocks_per_stage={tuple(blocks_per_stage)} "
                f"and stage_channels={tuple(stage_channels)}")
        self.embedding_dim = embedding_dim
        stem_channels = stage_channels[0]
        self.conv1 = nn.Conv2d(3, stem_channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = stem_channels
        for stage_index, (num_blocks, channels) in enumerate(zip(blocks_per_stage, stage_channels)):
            stride = 1 if stage_index == 0 else 2
            self.add_module(f"layer{stage_index + 1}", self._make_stage(in_channels, channels, num_blocks, stride))
            in_channels = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(in_channels, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, embedding_dim)
        init_conv_bn_(self)

    @staticmethod
    def _make_stage(in_channels: int, channels: int, num_blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or in_channels != channels:
            downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )
        blocks = [BasicBlock(in_channels, channels, stride, downsample)]
        blocks += [BasicBlock(channels, channels) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Embed a batch of independent frames.

        Args:
            frames: (N, 3, H, W) float, ImageNet-normalised RGB.

        Returns:
            (N, embedding_dim) ``fc2`` output, no activation.
        """
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"FrameEncoder expects frames of shape (N, 3, H, W), got {tuple(frames.shape)}")
        features = self.maxpool(self.relu(self.bn1(self.conv1(frames))))
        features = self.layer4(self.layer3(self.layer2(self.layer1(features))))
        pooled = torch.flatten(self.avgpool(features), 1)
        return self.fc2(torch.relu(self.fc1(pooled)))

    def encode_clip(self, video: torch.Tensor) -> torch.Tensor:
        """Embed every frame of a batch of clips in one pass of the network.

        Args:
            video: (B, T, 3, H, W) float, ImageNet-normalised RGB face crops.

        Returns:
            (B, T, embedding_dim) per-frame ``fc2`` features.
        """
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(f"expected a video of shape (B, T, 3, H, W), got {tuple(video.shape)}")
        batch_size, num_frames = video.shape[:2]
        frame_features = self(video.reshape(batch_size * num_frames, *video.shape[2:]))
        return frame_features.reshape(batch_size, num_frames, self.embedding_dim)
