"""SlowFast 8x8 R101, the Ego4D action-recognition model (stage I of AR, clip encoder of LTA).

The trunk is built with pytorchvideo's ``create_slowfast`` configured as the Ego4D recognition yaml
(spec hoi.md §4.2); the heads are ours, with the module names of the official checkpoints::

    [slow (B, 3, T/alpha, H, W), fast (B, 3, T, H, W)]      normalised: (x/255 - 0.45) / 0.225
        │  trunk `blocks`: stem+fuse, s2..s4 (+fuse), s5      (pytorchvideo blocks 0..4)
        ▼
    [slow s5 (B, 32w, T/alpha, H/32, W/32), fast s5 (B, 32w/beta_inv, T, H/32, W/32)]
        ├─ forward_features: EgoT2 tokens, slow (B, n, 32w) and fast (B, n, 32w/beta_inv)   (n = 8)
        └─ head: AvgPool3d per pathway → concat (B, 32w + 32w/beta_inv) → dropout → Linear(s)
              MultiTaskSlowFast    `head.projections.{0,1}`  → (verb (B, 115), noun (B, 478))
              SlowFastClipEncoder  `head.projection`         → clip embedding (B, D)

With the paper settings (w = 64, beta_inv = 8, T = 32, alpha = 4, 224 crop) the s5 maps are (B, 2048, 8, 7, 7)
and (B, 256, 32, 7, 7) and the heads see 2304 channels.

Official checkpoints use PySlowFast names (``s1.pathway0_stem.conv.weight``, ``s2_fuse.conv_f2s.weight``,
``s3.pathway1_res2.branch2.a_bn.running_mean``, ``head.projections.0.weight``); the pure functions
``slowfast_key_to_native`` / ``slowfast_key_to_official`` translate single keys, the ``*_official_to_native`` /
``*_native_to_official`` functions whole state dicts, and ``export_slowfast_official`` writes a ``model.``-prefixed
state dict in the official key order.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorchvideo.models.slowfast import create_slowfast

from egot2.checkpoint import Drop, StripPrefix, apply_key_map, load_state_dict_exact

__all__ = [
    "AR_NUM_CLASSES",
    "as_pathway_pair",
    "SlowFast",
    "SlowFastClipEncoder",
    "MultiTaskSlowFast",
    "MultiTaskHead",
    "ClipProjectionHead",
    "slowfast_key_to_native",
    "slowfast_key_to_official",
    "slowfast_official_to_native",
    "slowfast_native_to_official",
    "export_slowfast_official",
    "load_slowfast_official",
    "load_recognition_trunk",
]

# Ego4D v1 taxonomy: 115 verbs, 478 nouns (the released checkpoints are v1, spec hoi.md §1).
AR_NUM_CLASSES: Tuple[int, int] = (115, 478)

_STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def as_pathway_pair(inputs: Sequence, clip_ndim: int, where: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate a ``[slow, fast]`` input and return it as a tuple (never the caller's list).

    Args:
        inputs: ``[slow, fast]``, ``(slow, fast)`` or a one-element sequence holding that pair.
        clip_ndim: dims of each pathway tensor (5 for one clip, 6 for the LTA's N clips).
        where: name used in error messages.

    Returns:
        ``(slow, fast)``.

    Raises:
        ValueError: not two tensors of ``clip_ndim`` dims with one batch size.
    """
    if isinstance(inputs, torch.Tensor):
        raise ValueError(f"{where}: expected the two SlowFast pathways [slow, fast], got one tensor")
    if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
        inputs = inputs[0]
    if len(inputs) != 2 or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise ValueError(
            f"{where}: expected the two SlowFast pathways [slow, fast] as tensors, got "
            f"{[type(x).__name__ for x in inputs]}"
        )
    slow, fast = inputs
    for name, x in (("slow", slow), ("fast", fast)):
        if x.dim() != clip_ndim:
            raise ValueError(f"{where}: the {name} pathway must have {clip_ndim} dims, got shape {tuple(x.shape)}")
    if slow.shape[0] != fast.shape[0]:
        raise ValueError(f"{where}: batch sizes differ: slow {tuple(slow.shape)} vs fast {tuple(fast.shape)}")
    return slow, fast


class SlowFast(nn.Module):
    """Head-less SlowFast trunk (PySlowFast ``SlowFast(cfg, with_head=False)``), built with pytorchvideo.

    Subclasses add a ``head``. Key names of the official checkpoints are obtained with
    :func:`slowfast_native_to_official`.

    Args:
        depth: ResNet depth, 50 (blocks 3/4/6/3) or 101 (blocks 3/4/23/3).
        width: channels of the slow stem (PySlowFast ``RESNET.WIDTH_PER_GROUP``); slow s5 has ``32 * width``.
        alpha: frame-rate ratio fast/slow (``SLOWFAST.ALPHA``); also the temporal stride of the lateral convs.
        beta_inv: channel ratio slow/fast (``SLOWFAST.BETA_INV``).
        fusion_channel_ratio: output/input channel ratio of the lateral convs (``FUSION_CONV_CHANNEL_RATIO``).
        fusion_kernel_size: temporal kernel of the lateral convs (``FUSION_KERNEL_SZ``).
        slow_temporal_kernels: temporal kernel of the slow stem and of conv ``a`` in every block of s2..s5.
        fast_temporal_kernels: the same for the fast pathway.
        spatial_strides: spatial stride of s2..s5.
        num_frames: frames of the fast pathway (``DATA.NUM_FRAMES``); the slow pathway gets ``num_frames // alpha``.
        crop_size: input side (``DATA.CROP_SIZE``); sizes the heads' pooling kernels.
        num_feature_tokens: tokens per pathway returned by :meth:`forward_features`; default
            ``num_frames // alpha`` (8 for the paper settings, as EgoT2 uses).
    """

    def __init__(
        self,
        *,
        depth: int = 101,
        width: int = 64,
        alpha: int = 4,
        beta_inv: int = 8,
        fusion_channel_ratio: int = 2,
        fusion_kernel_size: int = 5,
        slow_temporal_kernels: Sequence[int] = (1, 1, 1, 3, 3),
        fast_temporal_kernels: Sequence[int] = (5, 3, 3, 3, 3),
        spatial_strides: Sequence[int] = (1, 2, 2, 2),
        num_frames: int = 32,
        crop_size: int = 224,
        num_feature_tokens: Optional[int] = None,
    ) -> None:
        super().__init__()
        if depth not in _STAGE_DEPTHS:
            raise ValueError(f"SlowFast depth must be one of {sorted(_STAGE_DEPTHS)}, got {depth}")
        if width % beta_inv != 0:
            raise ValueError(f"SlowFast width ({width}) must be a multiple of beta_inv ({beta_inv})")
        if num_frames % alpha != 0:
            raise ValueError(f"SlowFast num_frames ({num_frames}) must be a multiple of alpha ({alpha})")
        if len(slow_temporal_kernels) != 5 or len(fast_temporal_kernels) != 5 or len(spatial_strides) != 4:
            raise ValueError("SlowFast needs 5 temporal kernels per pathway (stem, s2..s5) and 4 spatial strides")

        def conv_a_kernels(kernels: Sequence[int]) -> Tuple[Tuple[int, int, int], ...]:
            return tuple((int(t), 1, 1) for t in kernels[1:])

        strides = tuple(int(s) for s in spatial_strides)
        net = create_slowfast(
            slowfast_channel_reduction_ratio=(beta_inv,),
            slowfast_conv_channel_fusion_ratio=fusion_channel_ratio,
            slowfast_fusion_conv_kernel_size=(fusion_kernel_size, 1, 1),
            slowfast_fusion_conv_stride=(alpha, 1, 1),
            input_channels=(3, 3),
            model_depth=depth,
            stem_dim_outs=(width, width // beta_inv),
            stem_conv_kernel_sizes=((slow_temporal_kernels[0], 7, 7), (fast_temporal_kernels[0], 7, 7)),
            stage_conv_a_kernel_sizes=(conv_a_kernels(slow_temporal_kernels), conv_a_kernels(fast_temporal_kernels)),
            stage_spatial_strides=(strides, strides),
            head=None,
        )
        # pytorchvideo's Net already initialised the trunk as PySlowFast does (MSRA conv, BN 1/0, final BN of
        # each bottleneck zero). Its last block pools and concatenates the pathways; our heads do that, and
        # forward_features needs the un-pooled s5 maps, so it is dropped.
        self.blocks = nn.ModuleList(list(net.blocks)[:5])

        self.depth = depth
        self.width = width
        self.alpha = alpha
        self.beta_inv = beta_inv
        self.num_frames = num_frames
        self.crop_size = crop_size
        self.num_feature_tokens = num_feature_tokens or num_frames // alpha
        self.slow_channels = width * 32
        self.fast_channels = width * 32 // beta_inv
        self._spatial_reduction = 4 * math.prod(strides)
        self._trunk_frozen = False
        self._frozen_trunk_train_mode = False

    # ------------------------------------------------------------------ geometry
    @property
    def feature_dims(self) -> Tuple[int, int]:
        """Widths of the two :meth:`forward_features` token groups = s5 channels (2048, 256)."""
        return (self.slow_channels, self.fast_channels)

    @property
    def feature_dim(self) -> int:
        """Total width of both token groups (2304), which is also what the heads see after pooling.

        :meth:`forward_features` returns the groups separately; use :attr:`feature_dims` for their widths.
        """
        return self.slow_channels + self.fast_channels

    def head_pool_kernels(self) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
        """AvgPool3d kernels of the heads: ``[T/alpha, S, S]`` and ``[T, S, S]`` with ``S = crop_size / 32``."""
        grid = self.crop_size // self._spatial_reduction
        if grid < 1:
            raise ValueError(f"SlowFast crop_size {self.crop_size} is smaller than the trunk's stride")
        return ((self.num_frames // self.alpha, grid, grid), (self.num_frames, grid, grid))

    # ------------------------------------------------------------------ forward
    def forward_pathways(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Run the trunk.

        Args:
            inputs: ``[slow (B, 3, T/alpha, H, W), fast (B, 3, T, H, W)]``, normalised. Not modified.

        Returns:
            ``[slow s5 (B, 32w, T/alpha, H/32, W/32), fast s5 (B, 32w/beta_inv, T, H/32, W/32)]``.
        """
        slow, fast = as_pathway_pair(inputs, 5, type(self).__name__)
        if fast.shape[2] != slow.shape[2] * self.alpha:
            raise ValueError(
                f"{type(self).__name__}: the fast pathway must have alpha={self.alpha} times the slow frames, "
                f"got slow {tuple(slow.shape)} and fast {tuple(fast.shape)}"
            )
        # pytorchvideo writes every stage's output back into the list it is given: hand it a fresh one.
        pathways = [slow, fast]
        for block in self.blocks:
            pathways = block(pathways)
        return pathways

    def forward(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Head-less trunk: returns the two s5 maps (see :meth:`forward_pathways`)."""
        return self.forward_pathways(inputs)

    def forward_features(self, *inputs) -> Tuple[torch.Tensor, torch.Tensor]:
        """EgoT2's SlowFast tokens (spec hoi.md §9.2/§9.3): two token groups, slow and fast.

        Each s5 map is average-pooled adaptively to ``(n, 1, 1)``: space is averaged away and time is cut into
        ``n`` equal groups (slow: 8 frames → 8 tokens, one per frame; fast: 32 frames → 8 tokens, each the mean
        of 4 frames), so token ``t`` of both groups covers the same time span. The translators project the groups
        separately (``proj3_slow`` 2048 → D, ``proj3_fast`` 256 → D); their widths are :attr:`feature_dims`.

        Args:
            *inputs: ``[slow, fast]`` as one list, or the two tensors.

        Returns:
            ``(slow_tokens (B, n, 32w), fast_tokens (B, n, 32w/beta_inv))`` = (B, 8, 2048), (B, 8, 256) for the
            paper model.
        """
        slow_map, fast_map = self.forward_pathways(inputs)
        return tuple(
            F.adaptive_avg_pool3d(feature_map, (self.num_feature_tokens, 1, 1)).flatten(2).transpose(1, 2)
            for feature_map in (slow_map, fast_map)
        )

    # ------------------------------------------------------------------ freezing
    def trunk_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters of the trunk (everything but the head)."""
        return self.blocks.parameters()

    def freeze_trunk(self, train_mode: bool = False) -> "SlowFast":
        """Freeze the trunk; the head (if any) stays trainable (LTA ``MODEL.FREEZE_BACKBONE``).

        Args:
            train_mode: False (default) keeps the frozen trunk in eval mode whatever ``.train()`` says, so its
                BatchNorm statistics never move. True reproduces the original code, whose frozen trunk still
                ran in train mode (batch statistics, running statistics updated; spec hoi.md §9.5).
        """
        for parameter in self.trunk_parameters():
            parameter.requires_grad_(False)
        self._trunk_frozen = True
        self._frozen_trunk_train_mode = train_mode
        return self.train(self.training)

    def train(self, mode: bool = True) -> "SlowFast":
        super().train(mode)
        if self._trunk_frozen and not self._frozen_trunk_train_mode:
            self.blocks.eval()
        return self


class _PooledHead(nn.Module):
    """Pool each s5 map with a fixed AvgPool3d (stride 1), concatenate, average the remaining grid, dropout."""

    def __init__(self, pool_kernels: Sequence[Sequence[int]], dropout: float) -> None:
        super().__init__()
        self.pool_kernels = tuple(tuple(int(k) for k in kernel) for kernel in pool_kernels)
        self.dropout = nn.Dropout(dropout)

    def pooled(self, pathways: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, C_p, T_p, h, w) per pathway → (B, sum C_p), before dropout."""
        if len(pathways) != len(self.pool_kernels):
            raise ValueError(f"head expects {len(self.pool_kernels)} pathways, got {len(pathways)}")
        grids = []
        for feature_map, kernel in zip(pathways, self.pool_kernels):
            if any(size < k for size, k in zip(feature_map.shape[2:], kernel)):
                raise ValueError(
                    f"s5 map {tuple(feature_map.shape)} is smaller than the head's pooling kernel {kernel}: "
                    "num_frames / crop_size of the model do not match the input"
                )
            grids.append(F.avg_pool3d(feature_map, kernel, stride=1))
        # A larger input leaves a grid of pooled cells; the original applies the projection per cell and
        # averages in eval mode. The projection is linear, so averaging first gives the same logits.
        return torch.cat(grids, dim=1).mean(dim=(2, 3, 4))


class ClipProjectionHead(_PooledHead):
    """PySlowFast ``ResNetBasicHead`` without activation: pooled s5 → dropout → ``projection`` Linear(C → D)."""

    def __init__(
        self, in_features: int, out_features: int, pool_kernels: Sequence[Sequence[int]], dropout: float = 0.5
    ):
        super().__init__(pool_kernels, dropout)
        self.projection = nn.Linear(in_features, out_features)
        nn.init.normal_(self.projection.weight, std=0.01)
        nn.init.zeros_(self.projection.bias)

    def forward(self, pathways: Sequence[torch.Tensor]) -> torch.Tensor:
        """Returns (B, D)."""
        return self.projection(self.dropout(self.pooled(pathways)))


class MultiTaskHead(_PooledHead):
    """Ego4D ``MultiTaskHead`` with logits at eval (``TEST.NO_ACT``): pooled s5 → dropout → ``projections``."""

    def __init__(
        self, in_features: int, num_classes: Sequence[int], pool_kernels: Sequence[Sequence[int]], dropout: float = 0.5
    ):
        super().__init__(pool_kernels, dropout)
        self.projections = nn.ModuleList(nn.Linear(in_features, n) for n in num_classes)
        for projection in self.projections:
            nn.init.normal_(projection.weight, std=0.01)
            nn.init.zeros_(projection.bias)

    def forward(self, pathways: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """Returns one (B, C_i) logit tensor per projection; all share one dropout mask, as in the original."""
        features = self.dropout(self.pooled(pathways))
        return tuple(projection(features) for projection in self.projections)


class SlowFastClipEncoder(SlowFast):
    """SlowFast with a single ``head.projection`` to a D-dim clip embedding.

    The LTA clip backbone (D = 2048), and the AR source of the LTA translators (new trainable head, D = 1024 or
    2048). ``forward`` returns (B, D); ``forward_features`` the trunk tokens of :class:`SlowFast`.

    Args:
        out_features: D.
        dropout: dropout before the projection (``MODEL.DROPOUT_RATE``).
        **trunk_kwargs: forwarded to :class:`SlowFast`.
    """

    def __init__(self, *, out_features: int = 2048, dropout: float = 0.5, **trunk_kwargs) -> None:
        super().__init__(**trunk_kwargs)
        self.out_features = out_features
        self.head = ClipProjectionHead(self.feature_dim, out_features, self.head_pool_kernels(), dropout)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[slow (B, 3, T/alpha, H, W), fast (B, 3, T, H, W)]`` → clip embedding (B, D)."""
        return self.head(self.forward_pathways(inputs))


class MultiTaskSlowFast(SlowFast):
    """Ego4D AR model: SlowFast with ``head.projections.{i}`` (verb and noun classifiers).

    Args:
        num_classes: classes per head; (115, 478) for Ego4D v1 verbs and nouns.
        dropout: dropout before the projections (``MODEL.DROPOUT_RATE``).
        **trunk_kwargs: forwarded to :class:`SlowFast`.
    """

    def __init__(self, *, num_classes: Sequence[int] = AR_NUM_CLASSES, dropout: float = 0.5, **trunk_kwargs) -> None:
        super().__init__(**trunk_kwargs)
        self.num_classes = tuple(int(n) for n in num_classes)
        self.head = MultiTaskHead(self.feature_dim, self.num_classes, self.head_pool_kernels(), dropout)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """``[slow, fast]`` → ``(verb_logits (B, 115), noun_logits (B, 478))`` (one tensor per head)."""
        return self.head(self.forward_pathways(inputs))


# ---------------------------------------------------------------------- official key names
_PARAM = r"(?P<param>weight|bias|running_mean|running_var|num_batches_tracked)"

# PySlowFast name pieces inside a residual block ↔ pytorchvideo's.
_BLOCK_PART_TO_NATIVE = {
    "branch1": "branch1_conv",
    "branch1_bn": "branch1_norm",
    "branch2.a": "branch2.conv_a",
    "branch2.a_bn": "branch2.norm_a",
    "branch2.b": "branch2.conv_b",
    "branch2.b_bn": "branch2.norm_b",
    "branch2.c": "branch2.conv_c",
    "branch2.c_bn": "branch2.norm_c",
}
_BLOCK_PART_TO_OFFICIAL = {native: official for official, native in _BLOCK_PART_TO_NATIVE.items()}

_OFFICIAL_STEM = re.compile(r"s1\.pathway(?P<p>\d)_stem\.(?P<part>conv|bn)\." + _PARAM)
_OFFICIAL_FUSE = re.compile(r"s(?P<s>[1-4])_fuse\.(?P<part>conv_f2s|bn)\." + _PARAM)
_OFFICIAL_BLOCK = re.compile(
    r"s(?P<s>[2-5])\.pathway(?P<p>\d)_res(?P<i>\d+)\.(?P<part>branch1|branch1_bn|branch2\.[abc]|branch2\.[abc]_bn)\."
    + _PARAM
)
_NATIVE_STEM = re.compile(r"blocks\.0\.multipathway_blocks\.(?P<p>\d)\.(?P<part>conv|norm)\." + _PARAM)
_NATIVE_FUSE = re.compile(r"blocks\.(?P<b>[0-3])\.multipathway_fusion\.(?P<part>conv_fast_to_slow|norm)\." + _PARAM)
_NATIVE_BLOCK = re.compile(
    r"blocks\.(?P<b>[1-4])\.multipathway_blocks\.(?P<p>\d)\.res_blocks\.(?P<i>\d+)\."
    r"(?P<part>branch1_conv|branch1_norm|branch2\.(?:conv|norm)_[abc])\." + _PARAM
)
_HEAD = re.compile(r"head\.(?:projection|projections\.\d+)\.(?:weight|bias)")


def slowfast_key_to_native(key: str) -> str:
    """Official PySlowFast key (no ``model.`` prefix) → this module's key.

    ``s1.pathway1_stem.bn.weight`` → ``blocks.0.multipathway_blocks.1.norm.weight``;
    ``s2_fuse.conv_f2s.weight`` → ``blocks.1.multipathway_fusion.conv_fast_to_slow.weight``;
    ``s3.pathway0_res1.branch2.a_bn.bias`` → ``blocks.2.multipathway_blocks.0.res_blocks.1.branch2.norm_a.bias``;
    ``head.*`` is unchanged.

    Raises:
        ValueError: the key is not a SlowFast key.
    """
    if match := _OFFICIAL_STEM.fullmatch(key):
        part = "conv" if match["part"] == "conv" else "norm"
        return f"blocks.0.multipathway_blocks.{match['p']}.{part}.{match['param']}"
    if match := _OFFICIAL_FUSE.fullmatch(key):
        part = "conv_fast_to_slow" if match["part"] == "conv_f2s" else "norm"
        return f"blocks.{int(match['s']) - 1}.multipathway_fusion.{part}.{match['param']}"
    if match := _OFFICIAL_BLOCK.fullmatch(key):
        part = _BLOCK_PART_TO_NATIVE[match["part"]]
        return (
            f"blocks.{int(match['s']) - 1}.multipathway_blocks.{match['p']}.res_blocks.{match['i']}."
            f"{part}.{match['param']}"
        )
    if _HEAD.fullmatch(key):
        return key
    raise ValueError(f"not an official SlowFast state-dict key: {key!r}")


def slowfast_key_to_official(key: str) -> str:
    """This module's key → official PySlowFast key (inverse of :func:`slowfast_key_to_native`).

    Raises:
        ValueError: the key is not a SlowFast key.
    """
    if match := _NATIVE_STEM.fullmatch(key):
        part = "conv" if match["part"] == "conv" else "bn"
        return f"s1.pathway{match['p']}_stem.{part}.{match['param']}"
    if match := _NATIVE_FUSE.fullmatch(key):
        part = "conv_f2s" if match["part"] == "conv_fast_to_slow" else "bn"
        return f"s{int(match['b']) + 1}_fuse.{part}.{match['param']}"
    if match := _NATIVE_BLOCK.fullmatch(key):
        part = _BLOCK_PART_TO_OFFICIAL[match["part"]]
        return f"s{int(match['b']) + 1}.pathway{match['p']}_res{match['i']}.{part}.{match['param']}"
    if _HEAD.fullmatch(key):
        return key
    raise ValueError(f"not a native SlowFast state-dict key: {key!r}")


def slowfast_official_to_native(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Rename every key of an official SlowFast state dict (no ``model.`` prefix); order is kept."""
    return OrderedDict((slowfast_key_to_native(key), value) for key, value in state_dict.items())


def slowfast_native_to_official(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Rename every key of a native SlowFast state dict to the official names; order is kept."""
    return OrderedDict((slowfast_key_to_official(key), value) for key, value in state_dict.items())


def export_slowfast_official(model: SlowFast) -> "OrderedDict[str, torch.Tensor]":
    """State dict of a SlowFast variant in the official layout: ``model.``-prefixed, official key order.

    The result is what a PyTorch-Lightning task stores under ``state_dict`` (write it with
    ``egot2.checkpoint.save_lightning_checkpoint``).
    """
    return OrderedDict(
        ("model." + slowfast_key_to_official(key), value) for key, value in model.state_dict().items()
    )


def load_slowfast_official(model: SlowFast, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Strictly load an official SlowFast state dict (``model.``-prefixed or bare) into ``model``.

    Raises:
        ValueError: a key is not a SlowFast key; ``egot2.checkpoint.CheckpointMismatchError`` (a ValueError) when
            the key sets or shapes do not match the model exactly (the message lists them, in native names).
    """
    native = apply_key_map(state_dict, [StripPrefix("model."), slowfast_official_to_native])
    load_state_dict_exact(model, native, source="official SlowFast state dict")


def load_recognition_trunk(model: SlowFast, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load the trunk of the AR recognition checkpoint into any SlowFast variant, skipping its head.

    Follows the official rule (spec hoi.md §6.1, LTA stage I and the LTA translators): drop every key containing
    ``head``, load the rest; the only keys allowed to stay missing are the target's own ``head.*`` keys.

    Args:
        model: the target (e.g. ``ForecastingEncoderDecoder.backbone`` or a translator's AR clip encoder).
        state_dict: ``recognition_ego4d_slowfast8x8.ckpt``'s ``state_dict`` (``model.``-prefixed or bare).

    Raises:
        ValueError (``CheckpointMismatchError``): trunk keys are missing or unexpected, or shapes differ.
    """
    native = apply_key_map(state_dict, [StripPrefix("model."), Drop("head"), slowfast_official_to_native])
    head_keys = [re.escape(key) for key in model.state_dict() if key.startswith("head.")]
    load_state_dict_exact(model, native, expected_missing=head_keys, source="recognition checkpoint trunk")
