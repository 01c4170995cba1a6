"""I3D ResNet-50 stage-I models for PNR (keyframe localisation) and OSCC (state change).

The trunk is the PySlowFast ``slow_layer5`` network of the Ego4D hands-and-objects baseline, assembled from
pytorchvideo's stem and stage builders: temporal kernel 3 in the stem and in conv ``a`` of every bottleneck,
bottleneck blocks (3, 4, 6, 3), spatial strides 1, 2, 2, 2 carried by conv ``b``, and no temporal stride or
pooling anywhere, so T input frames stay T steps up to the head.

Data flow at the paper's size (crop 225, width 64, 16 frames)::

    frames (B, 3, 16, 225, 225)   raw RGB in [0, 255], no mean/std normalisation
      -> stem  (B, 64, 16, 57, 57)
      -> s2    (B, 256, 16, 57, 57)
      -> s3    (B, 512, 16, 29, 29)
      -> s4    (B, 1024, 16, 15, 15)
      -> s5    (B, 2048, 16, 8, 8)
      -> KeyframeHead: AvgPool3d [t, 7, 7] stride 1 -> (B, 2048, T', 2, 2)
                       -> (B, T', 2, 2, 2048) -> dropout -> tokens (B, T', 8192)  <- forward_features
                       -> Linear(8192 -> K) -> (B, K, T')

Crop size -> grid rule: the s5 map side ``s5`` is ``crop`` after the stride-2 stem conv (7x7, pad 3), the stride-2
max-pool (3x3, pad 1) and three stride-2 convs (3x3, pad 1) (:func:`s5_spatial_size`; about ``crop / 32`` rounded
up); the head pools with a ``crop // 32`` window at stride 1, so the grid side is ``s5 - crop // 32 + 1``.
A 225 crop gives an 8x8 map and a 2x2 grid (hence 8192 = 4 x 2048 features); a 224 crop would give a 1x1 grid.
Any ``crop = 32 m + 1`` (e.g. 97 for tests) also gives 2x2. The head width is ``grid**2 * 32 * width``.

Checkpoint compatibility: our modules follow pytorchvideo's naming (``blocks.0.conv.weight``,
``blocks.1.res_blocks.0.branch2.conv_a.weight``, ``head.projection.weight``); :func:`official_to_native` and
:func:`native_to_official` translate to and from the official PySlowFast names (``s1.pathway0_stem.conv.weight``,
``s2.pathway0_res0.branch2.a.weight``, ``Keyframe_localisation_head.projection.weight``), and
:func:`export_official` writes the ``model.``-prefixed layout of the released ``ts_pnr`` / ``ts_oscc`` files.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from pytorchvideo.models.resnet import create_bottleneck_block, create_res_stage
from pytorchvideo.models.stem import create_res_basic_stem
from pytorchvideo.models.weight_init import init_net_weights

__all__ = [
    "STAGE_DEPTHS",
    "PNR_HEAD_NAME",
    "OSCC_HEAD_NAME",
    "s5_spatial_size",
    "head_grid_size",
    "I3DResNet",
    "KeyframeHead",
    "KeyframeLocalizationResNet",
    "StateChangeClsResNet",
    "official_to_native",
    "native_to_official",
    "export_official",
]

# Bottleneck blocks per stage (s2..s5) for the supported ResNet depths.
STAGE_DEPTHS: Dict[int, Tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}

# Attribute names of the head in the official networks; they become the key prefix in released files.
PNR_HEAD_NAME = "Keyframe_localisation_head"
OSCC_HEAD_NAME = "State_detection_head"
_OFFICIAL_HEAD_NAMES = (PNR_HEAD_NAME, OSCC_HEAD_NAME)

FramesInput = Union[torch.Tensor, Sequence[torch.Tensor]]


def _stride2_out(size: int, kernel: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // 2 + 1


def s5_spatial_size(crop_size: int) -> int:
    """Side of the s5 feature map for a square ``crop_size`` input (225 -> 8, 224 -> 7)."""
    size = _stride2_out(crop_size, kernel=7, padding=3)  # stem conv
    size = _stride2_out(size, kernel=3, padding=1)  # stem max-pool
    for _ in range(3):  # conv b of the first block of s3, s4, s5
        size = _stride2_out(size, kernel=3, padding=1)
    return size


def head_grid_size(crop_size: int) -> int:
    """Side of the spatial grid left after the head's ``crop_size // 32`` average pool (225 -> 2, 224 -> 1).

    Raises:
        ValueError: if ``crop_size`` is too small for a pooling window.
    """
    if crop_size < 32:
        raise ValueError(f"crop_size must be at least 32 for the head's crop_size // 32 pooling, got {crop_size}")
    return s5_spatial_size(crop_size) - crop_size // 32 + 1


def _as_frames_tensor(frames: FramesInput) -> torch.Tensor:
    """Accept a (B, C, T, H, W) tensor or the original code's one-element list holding it."""
    if isinstance(frames, (list, tuple)):
        if len(frames) != 1:
            raise ValueError(f"frames: expected a tensor or a one-element list, got a list of {len(frames)}")
        frames = frames[0]
    if not isinstance(frames, torch.Tensor) or frames.dim() != 5:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames: expected a (B, C, T, H, W) tensor, got {shape}")
    return frames


class KeyframeHead(nn.Module):
    """Grid-token head shared by PNR and OSCC (the official ``ResNetKeyframeLocalizationHead``).

    Average-pools the s5 map with a ``[temporal_kernel, spatial_kernel, spatial_kernel]`` window at stride 1,
    flattens each time step's grid in (h, w, c) order, channel fastest (feature index ``(h * grid + w) * C + c``,
    the order the released projection weights expect), and projects to ``num_classes``.

    Args:
        in_channels: channels of the s5 map (2048 at width 64).
        num_classes: K, outputs per time step (1 for PNR, 2 for OSCC).
        grid_size: side of the grid left after pooling (2 for a 225 crop).
        spatial_kernel: spatial pooling window (``crop_size // 32``).
        temporal_kernel: temporal pooling window (1 = one output per frame, T = one output per clip).
        dropout_rate: dropout on the grid tokens, active in train mode only.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        grid_size: int,
        spatial_kernel: int,
        temporal_kernel: int = 1,
        dropout_rate: float = 0.5,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.grid_size = grid_size
        self.temporal_kernel = temporal_kernel
        self.feature_dim = grid_size * grid_size * in_channels
        self.pool = nn.AvgPool3d(kernel_size=(temporal_kernel, spatial_kernel, spatial_kernel), stride=1)
        self.dropout = nn.Dropout(dropout_rate)
        self.projection = nn.Linear(self.feature_dim, num_classes)

    def tokens(self, trunk_features: torch.Tensor) -> torch.Tensor:
        """Pooled grid tokens.

        Args:
            trunk_features: s5 map (B, C, T, H5, W5).

        Returns:
            (B, T', grid * grid * C) with T' = T - temporal_kernel + 1, flattened in (h, w, c) order.
        """
        pooled = self.pool(trunk_features)  # (B, C, T', grid, grid)
        if pooled.shape[-2:] != (self.grid_size, self.grid_size):
            raise ValueError(
                f"KeyframeHead: pooled grid is {tuple(pooled.shape[-2:])}, expected "
                f"{(self.grid_size, self.grid_size)}; the input crop size does not match the model's crop_size"
            )
        grid_tokens = self.dropout(pooled.permute(0, 2, 3, 4, 1))  # (B, T', h, w, C)
        return grid_tokens.flatten(start_dim=2)

    def forward(self, trunk_features: torch.Tensor) -> torch.Tensor:
        """Per-step logits.

        Args:
            trunk_features: s5 map (B, C, T, H5, W5).

        Returns:
            (B, K, T') logits.
        """
        return self.projection(self.tokens(trunk_features)).permute(0, 2, 1)


class I3DResNet(nn.Module):
    """I3D ResNet trunk (pytorchvideo blocks) plus a :class:`KeyframeHead`.

    Args:
        num_classes: K outputs of the head per time step.
        temporal_pool: pool the head over all ``num_frames`` steps (T' = 1) instead of per frame (T' = T).
        depth: ResNet depth selecting the bottleneck counts from :data:`STAGE_DEPTHS` (50 = 3, 4, 6, 3).
        stage_depths: explicit bottleneck counts for s2..s5, overriding ``depth`` (tiny test models).
        width: stem width; bottleneck inner widths are width x (1, 2, 4, 8), stage outputs 4 x that, so the
            s5 map has ``32 * width`` channels (2048 at width 64).
        num_frames: T, frames per clip; fixes the pooled head's temporal window.
        crop_size: square input side; fixes the head's pooling window and grid (see module docstring).
        temporal_kernel: temporal kernel of the stem and of conv ``a`` in every bottleneck.
        dropout_rate: head dropout.
        in_channels: input channels (3, RGB).
    """

    official_head_name: Optional[str] = None

    def __init__(
        self,
        *,
        num_classes: int,
        temporal_pool: bool = False,
        depth: int = 50,
        stage_depths: Optional[Sequence[int]] = None,
        width: int = 64,
        num_frames: int = 16,
        crop_size: int = 225,
        temporal_kernel: int = 3,
        dropout_rate: float = 0.5,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if stage_depths is None:
            if depth not in STAGE_DEPTHS:
                raise ValueError(f"depth must be one of {sorted(STAGE_DEPTHS)} (or pass stage_depths), got {depth}")
            stage_depths = STAGE_DEPTHS[depth]
        stage_depths = tuple(int(d) for d in stage_depths)
        if len(stage_depths) != 4 or min(stage_depths) < 1:
            raise ValueError(f"stage_depths must be four positive block counts, got {stage_depths}")
        if width < 1 or num_frames < 1:
            raise ValueError(f"width and num_frames must be positive, got width={width}, num_frames={num_frames}")
        self.stage_depths = stage_depths
        self.width = width
        self.num_frames = num_frames
        self.crop_size = crop_size
        self.temporal_pool = temporal_pool
        grid_size = head_grid_size(crop_size)

        pad_t = temporal_kernel // 2
        stem = create_res_basic_stem(
            in_channels=in_channels,
            out_channels=width,
            conv_kernel_size=(temporal_kernel, 7, 7),
            conv_stride=(1, 2, 2),
            conv_padding=(pad_t, 3, 3),
            pool=nn.MaxPool3d,
            pool_kernel_size=(1, 3, 3),
            pool_stride=(1, 2, 2),
            pool_padding=(0, 1, 1),
        )
        blocks = [stem]
        dim_in = width
        for stage_index, (num_blocks, spatial_stride) in enumerate(zip(stage_depths, (1, 2, 2, 2))):
            dim_inner = width * 2**stage_index
            dim_out = 4 * dim_inner
            blocks.append(
                create_res_stage(
                    depth=num_blocks,
                    dim_in=dim_in,
                    dim_inner=dim_inner,
                    dim_out=dim_out,
                    bottleneck=create_bottleneck_block,
                    conv_a_kernel_size=(temporal_kernel, 1, 1),
                    conv_a_stride=(1, 1, 1),
                    conv_a_padding=(pad_t, 0, 0),
                    conv_b_kernel_size=(1, 3, 3),
                    conv_b_stride=(1, spatial_stride, spatial_stride),
                    conv_b_padding=(0, 1, 1),
                )
            )
            dim_in = dim_out
        self.blocks = nn.ModuleList(blocks)
        self.trunk_dim = dim_in
        self.head = KeyframeHead(
            in_channels=dim_in,
            num_classes=num_classes,
            grid_size=grid_size,
            spatial_kernel=crop_size // 32,
            temporal_kernel=num_frames if temporal_pool else 1,
            dropout_rate=dropout_rate,
        )
        self.feature_dim = self.head.feature_dim
        # Caffe2 MSRA fill for convs, BN weight 1 (0 for each bottleneck's final BN), bias 0, Linear N(0, 0.01).
        init_net_weights(self, init_std=0.01, style="resnet")

    def _check_frames(self, frames: FramesInput) -> torch.Tensor:
        frames = _as_frames_tensor(frames)
        if frames.shape[-2:] != (self.crop_size, self.crop_size):
            raise ValueError(
                f"frames: spatial size {tuple(frames.shape[-2:])} does not match the model's crop_size "
                f"{self.crop_size} (the head's grid and projection width depend on it)"
            )
        if self.temporal_pool and frames.shape[2] != self.num_frames:
            raise ValueError(
                f"frames: {frames.shape[2]} frames, but the temporally pooled head expects num_frames={self.num_frames}"
            )
        return frames

    def forward_trunk(self, frames: FramesInput) -> torch.Tensor:
        """Run stem and s2..s5.

        Args:
            frames: (B, 3, T, crop, crop) raw RGB 0-255, or a one-element list holding it (never mutated).

        Returns:
            s5 map (B, 32 * width, T, s5, s5).
        """
        features = self._check_frames(frames)
        for block in self.blocks:
            features = block(features)
        return features

    def forward_features(self, frames: FramesInput) -> torch.Tensor:
        """Grid tokens EgoT2 translators consume (the official ``middle=True`` output).

        Args:
            frames: (B, 3, T, crop, crop) raw RGB 0-255, or a one-element list holding it.

        Returns:
            (B, T', feature_dim) with T' = T per frame or 1 when temporally pooled; (B, 16, 8192) at paper size.
        """
        return self.head.tokens(self.forward_trunk(frames))

    def forward_logits(self, frames: FramesInput) -> torch.Tensor:
        """Head output in the official layout.

        Args:
            frames: (B, 3, T, crop, crop) raw RGB 0-255, or a one-element list holding it.

        Returns:
            (B, K, T') logits.
        """
        return self.head(self.forward_trunk(frames))


class KeyframeLocalizationResNet(I3DResNet):
    """PNR stage-I model: one keyframe logit per input frame.

    Args:
        **kwargs: trunk/head options of :class:`I3DResNet` except ``num_classes`` and ``temporal_pool``.
    """

    official_head_name = PNR_HEAD_NAME

    def __init__(self, **kwargs) -> None:
        super().__init__(num_classes=1, temporal_pool=False, **kwargs)

    def forward(self, frames: FramesInput) -> torch.Tensor:
        """Keyframe logits.

        Args:
            frames: (B, 3, T, crop, crop) raw RGB 0-255, or a one-element list holding it.

        Returns:
            keyframe_logits (B, T); the PNR is at the arg-max frame.
        """
        return self.forward_logits(frames).squeeze(1)


class StateChangeClsResNet(I3DResNet):
    """OSCC stage-I model: state-change logits (index 1 = state change).

    Args:
        no_temp_pool: keep one output (and one feature token) per frame, as EgoT2-s/-g instantiate the OSCC
            model; the default pools over the clip, as in stage-I training. Pooling has no parameters, so the
            same weights load either way.
        **kwargs: trunk/head options of :class:`I3DResNet` except ``num_classes`` and ``temporal_pool``.
    """

    official_head_name = OSCC_HEAD_NAME

    def __init__(self, *, no_temp_pool: bool = False, **kwargs) -> None:
        super().__init__(num_classes=2, temporal_pool=not no_temp_pool, **kwargs)
        self.no_temp_pool = no_temp_pool

    def forward(self, frames: FramesInput) -> torch.Tensor:
        """State-change logits.

        Args:
            frames: (B, 3, T, crop, crop) raw RGB 0-255, or a one-element list holding it.

        Returns:
            state_logits (B, 2) when temporally pooled, (B, 2, T) with ``no_temp_pool``.
        """
        state_logits = self.forward_logits(frames)
        return state_logits if self.no_temp_pool else state_logits.squeeze(2)


# ---------------------------------------------------------------------------------------------------------------
# Official PySlowFast names <-> our pytorchvideo names. Keys are without the Lightning "model." prefix.

_BN_SUFFIX = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_BRANCH2_OFFICIAL_TO_NATIVE = {"a": "conv_a", "b": "conv_b", "c": "conv_c",
                               "a_bn": "norm_a", "b_bn": "norm_b", "c_bn": "norm_c"}
_BRANCH2_NATIVE_TO_OFFICIAL = {v: k for k, v in _BRANCH2_OFFICIAL_TO_NATIVE.items()}

_OFFICIAL_PATTERNS = (
    (re.compile(r"s1\.pathway0_stem\.conv\.weight"), lambda m: "blocks.0.conv.weight"),
    (re.compile(rf"s1\.pathway0_stem\.bn\.{_BN_SUFFIX}"), lambda m: f"blocks.0.norm.{m[1]}"),
    (re.compile(r"s([2-5])\.pathway0_res(\d+)\.branch1\.weight"),
     lambda m: f"blocks.{int(m[1]) - 1}.res_blocks.{m[2]}.branch1_conv.weight"),
    (re.compile(rf"s([2-5])\.pathway0_res(\d+)\.branch1_bn\.{_BN_SUFFIX}"),
     lambda m: f"blocks.{int(m[1]) - 1}.res_blocks.{m[2]}.branch1_norm.{m[3]}"),
    (re.compile(r"s([2-5])\.pathway0_res(\d+)\.branch2\.([abc])\.weight"),
     lambda m: f"blocks.{int(m[1]) - 1}.res_blocks.{m[2]}.branch2.{_BRANCH2_OFFICIAL_TO_NATIVE[m[3]]}.weight"),
    (re.compile(rf"s([2-5])\.pathway0_res(\d+)\.branch2\.([abc]_bn)\.{_BN_SUFFIX}"),
     lambda m: f"blocks.{int(m[1]) - 1}.res_blocks.{m[2]}.branch2.{_BRANCH2_OFFICIAL_TO_NATIVE[m[3]]}.{m[4]}"),
    (re.compile(rf"({'|'.join(_OFFICIAL_HEAD_NAMES)})\.projection\.(weight|bias)"),
     lambda m: f"head.projection.{m[2]}"),
)

_NATIVE_PATTERNS = (
    (re.compile(r"blocks\.0\.conv\.weight"), lambda m, head: "s1.pathway0_stem.conv.weight"),
    (re.compile(rf"blocks\.0\.norm\.{_BN_SUFFIX}"), lambda m, head: f"s1.pathway0_stem.bn.{m[1]}"),
    (re.compile(r"blocks\.([1-4])\.res_blocks\.(\d+)\.branch1_conv\.weight"),
     lambda m, head: f"s{int(m[1]) + 1}.pathway0_res{m[2]}.branch1.weight"),
    (re.compile(rf"blocks\.([1-4])\.res_blocks\.(\d+)\.branch1_norm\.{_BN_SUFFIX}"),
     lambda m, head: f"s{int(m[1]) + 1}.pathway0_res{m[2]}.branch1_bn.{m[3]}"),
    (re.compile(r"blocks\.([1-4])\.res_blocks\.(\d+)\.branch2\.(conv_[abc])\.weight"),
     lambda m, head: f"s{int(m[1]) + 1}.pathway0_res{m[2]}.branch2.{_BRANCH2_NATIVE_TO_OFFICIAL[m[3]]}.weight"),
    (re.compile(rf"blocks\.([1-4])\.res_blocks\.(\d+)\.branch2\.(norm_[abc])\.{_BN_SUFFIX}"),
     lambda m, head: f"s{int(m[1]) + 1}.pathway0_res{m[2]}.branch2.{_BRANCH2_NATIVE_TO_OFFICIAL[m[3]]}.{m[4]}"),
    (re.compile(r"head\.projection\.(weight|bias)"), lambda m, head: f"{head}.projection.{m[1]}"),
)


def official_to_native(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Rename an official PNR/OSCC state dict (``s1.pathway0_stem.conv.weight``, ...) to our module names.

    Args:
        state_dict: official keys with the Lightning ``model.`` prefix already removed; BatchNorm
            ``num_batches_tracked`` entries are renamed like the other BN tensors.

    Returns:
        Same tensors, same order, keys of :class:`I3DResNet` (``blocks.0.conv.weight``, ``head.projection.*``).

    Raises:
        ValueError: on a key with no mapping (the message names it), on both official heads in one dict, or on
            keys that still carry the ``model.`` prefix.
    """
    native: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    head_names = set()
    for key, tensor in state_dict.items():
        for pattern, rename in _OFFICIAL_PATTERNS:
            match = pattern.fullmatch(key)
            if match:
                break
        else:
            hint = " (strip the Lightning 'model.' prefix first)" if key.startswith("model.") else ""
            raise ValueError(f"official_to_native: no mapping for official key '{key}'{hint}")
        if key.endswith(".projection.weight") or key.endswith(".projection.bias"):
            head_names.add(match[1])
        native[rename(match)] = tensor
    if len(head_names) > 1:
        raise ValueError(f"official_to_native: state dict holds more than one head: {sorted(head_names)}")
    return native


def native_to_official(
    state_dict: Mapping[str, torch.Tensor], head_name: str = PNR_HEAD_NAME
) -> "OrderedDict[str, torch.Tensor]":
    """Rename our state dict to the official PySlowFast names (inverse of :func:`official_to_native`).

    Args:
        state_dict: keys of :class:`I3DResNet`.
        head_name: official head attribute, :data:`PNR_HEAD_NAME` or :data:`OSCC_HEAD_NAME`.

    Returns:
        Same tensors, same order, official keys without the ``model.`` prefix.

    Raises:
        ValueError: on an unknown ``head_name`` or a key with no mapping.
    """
    if head_name not in _OFFICIAL_HEAD_NAMES:
        raise ValueError(f"native_to_official: head_name must be one of {_OFFICIAL_HEAD_NAMES}, got '{head_name}'")
    official: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, tensor in state_dict.items():
        for pattern, rename in _NATIVE_PATTERNS:
            match = pattern.fullmatch(key)
            if match:
                official[rename(match, head_name)] = tensor
                break
        else:
            raise ValueError(f"native_to_official: no mapping for key '{key}'")
    return official


def export_official(model: I3DResNet) -> "OrderedDict[str, torch.Tensor]":
    """State dict of ``model`` in the released Lightning layout (``model.s1.pathway0_stem.conv.weight``, ...).

    Key order equals the official files' order (stem, then per block branch1, branch1_bn, a, a_bn, b, b_bn, c,
    c_bn, then the head). The tensors are the model's own (not copies); pass the result to
    ``egot2.checkpoint.save_lightning_checkpoint`` to write a ``ts_pnr``/``ts_oscc`` file.

    Args:
        model: a :class:`KeyframeLocalizationResNet` or :class:`StateChangeClsResNet`.

    Returns:
        ``model.``-prefixed official keys -> tensors.
    """
    if model.official_head_name is None:
        raise ValueError(f"export_official: {type(model).__name__} has no official head name")
    official = native_to_official(model.state_dict(), head_name=model.official_head_name)
    return OrderedDict((f"model.{key}", tensor) for key, tensor in official.items())
