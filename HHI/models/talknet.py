"""TalkNet active speaker detection network (stage-I ASD model of EgoT2).

Data flow for a batch of B face tracks of T frames (spec hhi.md §4.3)::

    faces (B, T, 112, 112) grey, 0..255 ──normalise──► visual frontend (3-D conv over all B·T frames
        in one sequence, 2-D ResNet) (B·T, 512) ──► visual TCN ──► visualConv1D ──► visual (B, T, 128)
    mfcc  (B, 4T, 13) ──► SE-ResNet audio encoder, mean over frequency ──► audio (B, T, 128)

    crossA2V(audio ← visual queries), crossV2A(visual ← audio queries)
    concat (B, T, 256) ──► selfAV ──► av_embedding (B·T, 256)      (the feature EgoT2 translates)

    heads (the original loss modules): lossAV.FC 256→2, lossA.FC 128→2, lossV.FC 128→2

Module and attribute names follow the original ``talkNetModel`` so that the official flat TalkNet
files load strictly: ``model.*`` into :class:`TalkNet`, ``lossAV.*``/``lossA.*``/``lossV.*`` into
:class:`TalkNetHeads`, and the whole file into :class:`TalkNetASD`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from egot2.checkpoint import (
    Drop,
    LoadReport,
    Rename,
    SelectPrefix,
    StripPrefix,
    apply_key_map,
    load_state_dict_exact,
)

__all__ = [
    "FACE_SIZE",
    "MFCC_PER_FRAME",
    "NUM_MFCC",
    "TalkNet",
    "TalkNetLossHead",
    "TalkNetHeads",
    "TalkNetASD",
    "talknet_loss",
    "TALKNET_CRITERION_KEYS",
    "TALKNET_FLAT_STEPS",
    "TALKNET_NETWORK_STEPS",
    "TALKNET_HEADS_STEPS",
    "talknet_expected_missing",
    "load_talknet_state_dict",
]

FACE_SIZE = 112
"""Side of the square grey face crops TalkNet reads (the ResNet's final 4×4 average pool needs it)."""
MFCC_PER_FRAME = 4
"""MFCC rows per video frame (100 Hz MFCC against 25 fps in the original timing)."""
NUM_MFCC = 13
"""MFCC coefficients per row."""

# Grey-level statistics of the original training faces (spec §4.3).
_FACE_MEAN = 0.4161
_FACE_STD = 0.1688

# The lip-reading style frontend uses slow, loose BatchNorm statistics (spec §4.3).
_FRONTEND_BN = {"momentum": 0.01, "eps": 1e-3}


# --------------------------------------------------------------------------------------------
# Visual stream
# --------------------------------------------------------------------------------------------


class _VisualResNetLayer(nn.Module):
    """Two residual units whose BatchNorm sits after the addition (``ResNetLayer`` of TalkNet).

    The 1×1 ``downsample`` conv exists in every layer (so the checkpoint has it) but only runs when
    the layer changes resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1a = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1a = nn.BatchNorm2d(out_channels, **_FRONTEND_BN)
        self.conv2a = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.downsample = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        self.outbna = nn.BatchNorm2d(out_channels, **_FRONTEND_BN)
        self.conv1b = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn1b = nn.BatchNorm2d(out_channels, **_FRONTEND_BN)
        self.conv2b = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.outbnb = nn.BatchNorm2d(out_channels, **_FRONTEND_BN)

    def forward(self, frames: Tensor) -> Tensor:
        """(N, C_in, H, W) → (N, C_out, H / stride, W / stride)."""
        shortcut = frames if self.stride == 1 else self.downsample(frames)
        first_sum = self.conv2a(F.relu(self.bn1a(self.conv1a(frames)))) + shortcut
        hidden = F.relu(self.outbna(first_sum))
        second_sum = self.conv2b(F.relu(self.bn1b(self.conv1b(hidden)))) + first_sum
        return F.relu(self.outbnb(second_sum))


class _VisualResNet(nn.Module):
    """2-D ResNet over 28×28 frontend maps: 64 → 128 → 256 → 512 channels, 4×4 average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = _VisualResNetLayer(64, 64, stride=1)
        self.layer2 = _VisualResNetLayer(64, 128, stride=2)
        self.layer3 = _VisualResNetLayer(128, 256, stride=2)
        self.layer4 = _VisualResNetLayer(256, 512, stride=2)
        self.avgpool = nn.AvgPool2d(kernel_size=4, stride=1)

    def forward(self, frames: Tensor) -> Tensor:
        """(N, 64, 28, 28) → (N, 512)."""
        frames = self.layer4(self.layer3(self.layer2(self.layer1(frames))))
        return self.avgpool(frames).flatten(1)


class _VisualFrontend(nn.Module):
    """3-D conv stem + 2-D ResNet turning grey faces into one 512-d vector per frame."""

    def __init__(self) -> None:
        super().__init__()
        self.frontend3D = nn.Sequential(
            nn.Conv3d(1, 64, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
            nn.BatchNorm3d(64, **_FRONTEND_BN),
            nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.resnet = _VisualResNet()

    def forward(self, faces: Tensor, mix_tracks: bool = True) -> Tensor:
        """Encode normalised faces.

        Args:
            faces: (B, T, 112, 112) normalised grey faces.
            mix_tracks: True reproduces the original, which lays all B·T frames end to end as ONE
                clip, so the 5-frame temporal kernel reads the last two frames of one track
                together with the first frames of the next. False runs the stem per track (zero
                temporal padding at every track boundary). BatchNorm3d's train-mode statistics
                span the whole batch either way.

        Returns:
            (B, T, 512) per-frame embeddings.
        """
        batch, frames_per_track = faces.shape[:2]
        if mix_tracks:
            clips = faces.reshape(1, 1, batch * frames_per_track, *faces.shape[2:])
        else:
            clips = faces.unsqueeze(1)
        maps = self.frontend3D(clips)  # (clips, 64, frames, 28, 28)
        maps = maps.transpose(1, 2).flatten(0, 1)  # (B·T, 64, 28, 28), track by track
        return self.resnet(maps).reshape(batch, frames_per_track, -1)


class _GlobalLayerNorm(nn.Module):
    """LayerNorm over channels AND time of a (B, C, T) sequence, with per-channel affine."""

    def __init__(self, channels: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, sequence: Tensor) -> Tensor:
        """(B, C, T) → (B, C, T)."""
        mean = sequence.mean(dim=(1, 2), keepdim=True)
        var = (sequence - mean).pow(2).mean(dim=(1, 2), keepdim=True)
        return self.gamma * (sequence - mean) / torch.sqrt(var + self.eps) + self.beta


class _DepthwiseSeparableUnit(nn.Module):
    """Residual unit ReLU → BN → depthwise conv k3 → PReLU → gLN → pointwise conv."""

    def __init__(self, channels: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.BatchNorm1d(channels),
            nn.Conv1d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.PReLU(),
            _GlobalLayerNorm(channels),
            nn.Conv1d(channels, channels, 1, bias=False),
        )

    def forward(self, sequence: Tensor) -> Tensor:
        """(B, C, T) → (B, C, T)."""
        return self.net(sequence) + sequence


class _VisualTCN(nn.Module):
    """Five depthwise-separable temporal units at 512 channels."""

    def __init__(self, channels: int = 512, num_units: int = 5) -> None:
        super().__init__()
        self.net = nn.Sequential(*[_DepthwiseSeparableUnit(channels) for _ in range(num_units)])

    def forward(self, sequence: Tensor) -> Tensor:
        """(B, 512, T) → (B, 512, T)."""
        return self.net(sequence)


class _VisualConv1D(nn.Module):
    """Temporal conv k5 512→256, BN, ReLU, 1×1 conv 256→128."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(512, 256, 5, padding=2),
            nn.BatchNorm1d(256),
            nn.ReLU(),
            nn.Conv1d(256, 128, 1),
        )

    def forward(self, sequence: Tensor) -> Tensor:
        """(B, 512, T) → (B, 128, T)."""
        return self.net(sequence)


# --------------------------------------------------------------------------------------------
# Audio stream
# --------------------------------------------------------------------------------------------


class _SqueezeExcite(nn.Module):
    """Channel gate: global average → Linear C→C/r → ReLU → Linear C/r→C → sigmoid."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, maps: Tensor) -> Tensor:
        """(B, C, F, T) → (B, C, F, T)."""
        gate = self.fc(maps.mean(dim=(2, 3)))
        return maps * gate[:, :, None, None]


class _SEBasicBlock(nn.Module):
    """Squeeze-excitation basic block of the audio encoder.

    The first conv is followed by ReLU *then* BatchNorm (the order of the speaker-verification
    ResNetSE this encoder comes from); checkpoint numerics depend on keeping it.
    """

    def __init__(self, in_channels: int, channels: int, stride: int | tuple[int, int] = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.se = _SqueezeExcite(channels)
        strided = stride not in (1, (1, 1))
        if strided or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )
        else:
            self.downsample = None

    def forward(self, maps: Tensor) -> Tensor:
        """(B, C_in, F, T) → (B, C, F / stride, T / stride)."""
        shortcut = maps if self.downsample is None else self.downsample(maps)
        hidden = self.bn1(F.relu(self.conv1(maps)))
        hidden = self.se(self.bn2(self.conv2(hidden)))
        return F.relu(hidden + shortcut)


class _AudioEncoder(nn.Module):
    """SE-ResNet over the MFCC "image" (frequency × time), averaged over frequency."""

    def __init__(
        self,
        blocks_per_stage: Sequence[int] = (3, 4, 6, 3),
        channels_per_stage: Sequence[int] = (16, 32, 64, 128),
    ) -> None:
        super().__init__()
        stem_channels = channels_per_stage[0]
        # Stride 2 on frequency only: time stays at 4 MFCC rows per frame until layers 2 and 3.
        self.conv1 = nn.Conv2d(1, stem_channels, 7, stride=(2, 1), padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        strides = (1, (2, 2), (2, 2), (1, 1))
        in_channels = stem_channels
        for index, (num_blocks, channels, stride) in enumerate(
            zip(blocks_per_stage, channels_per_stage, strides), start=1
        ):
            stage = [_SEBasicBlock(in_channels, channels, stride)]
            stage += [_SEBasicBlock(channels, channels) for _ in range(num_blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            in_channels = channels
        self.out_channels = in_channels
        # He init for the audio convs only, as the original; the visual stream keeps PyTorch's
        # default init (matters when training from scratch, as the EgoT2 README's stage-I run does).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, mfcc_maps: Tensor) -> Tensor:
        """(B, 1, 13, 4T) → (B, T, 128)."""
        maps = F.relu(self.bn1(self.conv1(mfcc_maps)))
        maps = self.layer4(self.layer3(self.layer2(self.layer1(maps))))
        return maps.mean(dim=2).transpose(1, 2)


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------


class _AttentionLayer(nn.Module):
    """Post-norm transformer layer whose queries come from a *target* stream.

    ``out = LN(source + MHA(query=target, key=value=source))`` followed by a residual 4× FFN and a
    second LayerNorm. With ``target is source`` it is an ordinary self-attention layer.
    """

    def __init__(self, dim: int, num_heads: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, 4 * dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(4 * dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, source: Tensor, target: Tensor) -> Tensor:
        """Attend from ``target`` to ``source``.

        Args:
            source: (B, T, dim) stream kept as the residual; provides keys and values.
            target: (B, T, dim) stream providing the queries.

        Returns:
            (B, T, dim) updated source stream.
        """
        attended, _ = self.self_attn(target, source, source, need_weights=False)
        hidden = self.norm1(source + self.dropout1(attended))
        feed_forward = self.linear2(self.dropout(F.relu(self.linear1(hidden))))
        return self.norm2(hidden + self.dropout2(feed_forward))


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------


def _check_inputs(faces: Tensor, mfcc: Tensor) -> None:
    if faces.dim() != 4 or tuple(faces.shape[2:]) != (FACE_SIZE, FACE_SIZE):
        raise ValueError(
            f"TalkNet input 'faces' must have shape (B, T, {FACE_SIZE}, {FACE_SIZE}); "
            f"got {tuple(faces.shape)}"
        )
    if mfcc.dim() != 3 or mfcc.shape[2] != NUM_MFCC:
        raise ValueError(
            f"TalkNet input 'mfcc' must have shape (B, {MFCC_PER_FRAME}*T, {NUM_MFCC}); "
            f"got {tuple(mfcc.shape)}"
        )
    batch, num_frames = faces.shape[:2]
    if mfcc.shape[0] != batch or mfcc.shape[1] != MFCC_PER_FRAME * num_frames:
        raise ValueError(
            f"TalkNet input 'mfcc' has shape {tuple(mfcc.shape)} but 'faces' {tuple(faces.shape)} "
            f"needs ({batch}, {MFCC_PER_FRAME * num_frames}, {NUM_MFCC}) "
            f"({MFCC_PER_FRAME} MFCC rows per video frame)"
        )
    if num_frames == 0:
        raise ValueError("TalkNet inputs 'faces'/'mfcc' have no frames (T = 0)")


class TalkNet(nn.Module):
    """The TalkNet audio-visual network (original ``talkNetModel``), without its loss heads.

    Its ``state_dict`` is exactly the ``model.*`` part of an official TalkNet file with ``model.``
    removed, and the ``asd_model.*`` part of the EgoT2 translator checkpoints.

    Args:
        attention_dropout: dropout inside the three attention layers (0.1 in the original).
        mix_tracks: keep the original's visual 3-D conv over all B·T frames of a batch laid end to
            end (True, needed for checkpoint-exact numerics), or run it per track (False).

    Attributes:
        feature_dim: width of :meth:`forward_features` tokens (256).
    """

    feature_dim = 256

    def __init__(self, attention_dropout: float = 0.1, mix_tracks: bool = True) -> None:
        super().__init__()
        self.mix_tracks = mix_tracks
        self.visualFrontend = _VisualFrontend()
        self.visualTCN = _VisualTCN()
        self.visualConv1D = _VisualConv1D()
        self.audioEncoder = _AudioEncoder()
        self.crossA2V = _AttentionLayer(128, 8, attention_dropout)
        self.crossV2A = _AttentionLayer(128, 8, attention_dropout)
        self.selfAV = _AttentionLayer(256, 8, attention_dropout)

    def encode_visual(self, faces: Tensor) -> Tensor:
        """Visual stream before cross attention.

        Args:
            faces: (B, T, 112, 112) grey faces with values in 0..255 (float or uint8).

        Returns:
            (B, T, 128) visual embeddings.
        """
        normalised = (faces.float() / 255.0 - _FACE_MEAN) / _FACE_STD
        frame_embeddings = self.visualFrontend(normalised, mix_tracks=self.mix_tracks)
        sequence = self.visualConv1D(self.visualTCN(frame_embeddings.transpose(1, 2)))
        return sequence.transpose(1, 2)

    def encode_audio(self, mfcc: Tensor) -> Tensor:
        """Audio stream before cross attention.

        Args:
            mfcc: (B, 4T, 13) MFCC rows.

        Returns:
            (B, T, 128) audio embeddings (for 4T rows; the encoder halves time twice).
        """
        return self.audioEncoder(mfcc.float().unsqueeze(1).transpose(2, 3))

    def cross_attend(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        """Exchange information between the streams.

        Args:
            audio: (B, T, 128) audio embeddings.
            visual: (B, T, 128) visual embeddings.

        Returns:
            (audio, visual), each (B, T, 128): audio attended with visual queries (``crossA2V``)
            and visual attended with audio queries (``crossV2A``).
        """
        attended_audio = self.crossA2V(source=audio, target=visual)
        attended_visual = self.crossV2A(source=visual, target=audio)
        return attended_audio, attended_visual

    def fuse(self, audio: Tensor, visual: Tensor) -> Tensor:
        """Self-attention over the concatenated streams (audio first, as in the original).

        Args:
            audio: (B, T, 128) cross-attended audio.
            visual: (B, T, 128) cross-attended visual.

        Returns:
            (B, T, 256) audio-visual embeddings.
        """
        audio_visual = torch.cat((audio, visual), dim=2)
        return self.selfAV(source=audio_visual, target=audio_visual)

    def _streams(self, faces: Tensor, mfcc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(audio (B, T, 128), visual (B, T, 128), audio-visual (B, T, 256)) after attention."""
        _check_inputs(faces, mfcc)
        audio, visual = self.cross_attend(self.encode_audio(mfcc), self.encode_visual(faces))
        return audio, visual, self.fuse(audio, visual)

    def forward(self, faces: Tensor, mfcc: Tensor) -> dict[str, Tensor]:
        """Run the whole network.

        Args:
            faces: (B, T, 112, 112) grey faces, values 0..255.
            mfcc: (B, 4T, 13) MFCC rows aligned with the faces.

        Returns:
            dict with ``av_embedding`` (B·T, 256), ``audio_embedding`` (B·T, 128) and
            ``visual_embedding`` (B·T, 128), rows ordered track by track; the inputs of the
            ``lossAV``, ``lossA`` and ``lossV`` heads.
        """
        audio, visual, audio_visual = self._streams(faces, mfcc)
        return {
            "av_embedding": audio_visual.reshape(-1, audio_visual.shape[-1]),
            "audio_embedding": audio.reshape(-1, audio.shape[-1]),
            "visual_embedding": visual.reshape(-1, visual.shape[-1]),
        }

    def forward_features(self, faces: Tensor, mfcc: Tensor) -> Tensor:
        """Tokens EgoT2 translates: the ``selfAV`` output per frame.

        Same argument order as :meth:`forward` (faces first, then MFCC), so
        ``FrozenBackbone(talknet)(faces, mfcc)`` works.

        Args:
            faces: (B, T, 112, 112) grey faces, values 0..255.
            mfcc: (B, 4T, 13) MFCC rows.

        Returns:
            (B, T, 256) audio-visual tokens.
        """
        return self._streams(faces, mfcc)[2]


# --------------------------------------------------------------------------------------------
# Heads and loss
# --------------------------------------------------------------------------------------------


class TalkNetLossHead(nn.Module):
    """One original TalkNet loss module: ``FC`` (in_dim → 2) plus its class-weighted criterion.

    ``criterion.weight`` is a buffer of the official Ego4D files ([1, 4]: non-speaking, speaking);
    the AVA TalkNet files have no class weights and so no such key.

    Args:
        in_dim: embedding width (256 for ``lossAV``, 128 for ``lossA``/``lossV``; the EgoT2-s ASD
            translator uses its own width).
        class_weights: cross-entropy weights for (not speaking, speaking).
    """

    def __init__(self, in_dim: int, class_weights: Sequence[float] = (1.0, 4.0)) -> None:
        super().__init__()
        # criterion before FC: the official files list ``criterion.weight`` first.
        self.criterion = nn.CrossEntropyLoss(weight=torch.tensor(class_weights, dtype=torch.float32))
        self.FC = nn.Linear(in_dim, 2)

    def forward(self, embedding: Tensor) -> Tensor:
        """(N, in_dim) → (N, 2) logits (not speaking, speaking)."""
        return self.FC(embedding)

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Class-weighted cross entropy of (N, 2) logits against (N,) or (B, T) 0/1 labels."""
        return self.criterion(logits, labels.reshape(-1).long())


class TalkNetHeads(nn.Module):
    """The three TalkNet classification heads, named as in the official file (``lossAV.FC`` …).

    Args:
        class_weights: cross-entropy weights for (not speaking, speaking), shared by all heads.
    """

    def __init__(self, class_weights: Sequence[float] = (1.0, 4.0)) -> None:
        super().__init__()
        self.lossAV = TalkNetLossHead(256, class_weights)
        self.lossA = TalkNetLossHead(128, class_weights)
        self.lossV = TalkNetLossHead(128, class_weights)

    def forward(self, embeddings: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Classify every frame from each stream.

        Args:
            embeddings: :meth:`TalkNet.forward` output (``av_embedding`` (N, 256),
                ``audio_embedding`` (N, 128), ``visual_embedding`` (N, 128)), N = B·T.

        Returns:
            dict with ``av_logits``, ``audio_logits``, ``visual_logits``, each (N, 2).
        """
        return {
            "av_logits": self.lossAV(embeddings["av_embedding"]),
            "audio_logits": self.lossA(embeddings["audio_embedding"]),
            "visual_logits": self.lossV(embeddings["visual_embedding"]),
        }


class TalkNetASD(nn.Module):
    """Stage-I ASD model: :class:`TalkNet` under ``model`` plus the three heads.

    The attribute names (``model``, ``lossAV``, ``lossA``, ``lossV``) make ``state_dict()`` identical
    to the official flat TalkNet file, so ``ts_asd.pth`` and ``pretrain_AVA.model`` load with
    :func:`load_talknet_state_dict` and ``torch.save(asd.state_dict())`` writes the official format.

    Args:
        class_weights: cross-entropy weights for (not speaking, speaking).
        attention_dropout: dropout of the attention layers.
        mix_tracks: see :class:`TalkNet`.
    """

    feature_dim = TalkNet.feature_dim

    def __init__(
        self,
        class_weights: Sequence[float] = (1.0, 4.0),
        attention_dropout: float = 0.1,
        mix_tracks: bool = True,
    ) -> None:
        super().__init__()
        self.model = TalkNet(attention_dropout=attention_dropout, mix_tracks=mix_tracks)
        self.lossAV = TalkNetLossHead(256, class_weights)
        self.lossA = TalkNetLossHead(128, class_weights)
        self.lossV = TalkNetLossHead(128, class_weights)

    def forward(self, faces: Tensor, mfcc: Tensor) -> dict[str, Tensor]:
        """Per-frame speaking logits.

        Args:
            faces: (B, T, 112, 112) grey faces, values 0..255.
            mfcc: (B, 4T, 13) MFCC rows.

        Returns:
            dict with ``av_logits``, ``audio_logits``, ``visual_logits`` (each (B·T, 2), rows track
            by track) and the embeddings of :meth:`TalkNet.forward`.
        """
        embeddings = self.model(faces, mfcc)
        return {
            "av_logits": self.lossAV(embeddings["av_embedding"]),
            "audio_logits": self.lossA(embeddings["audio_embedding"]),
            "visual_logits": self.lossV(embeddings["visual_embedding"]),
            **embeddings,
        }

    def forward_features(self, faces: Tensor, mfcc: Tensor) -> Tensor:
        """(B, T, 112, 112) faces, (B, 4T, 13) MFCC → (B, T, 256) tokens; see :meth:`TalkNet.forward_features`."""
        return self.model.forward_features(faces, mfcc)


def talknet_loss(
    outputs: Mapping[str, Tensor],
    labels: Tensor,
    weights: Sequence[float] = (1.0, 4.0),
    aux_weight: float = 0.4,
) -> Tensor:
    """TalkNet training loss L_AV + 0.4·L_A + 0.4·L_V with class-weighted cross entropy.

    Args:
        outputs: dict with ``av_logits``, ``audio_logits``, ``visual_logits``, each (N, 2).
        labels: (N,) or (B, T) with N = B·T; 1 = speaking.
        weights: cross-entropy class weights (not speaking, speaking).
        aux_weight: weight of the audio-only and visual-only losses.

    Returns:
        Scalar loss.
    """
    targets = labels.reshape(-1).long()
    av_logits = outputs["av_logits"]
    if av_logits.shape[0] != targets.shape[0]:
        raise ValueError(
            f"talknet_loss: 'labels' has {targets.shape[0]} frames but 'av_logits' has "
            f"{av_logits.shape[0]} rows"
        )
    class_weights = torch.as_tensor(weights, dtype=av_logits.dtype, device=av_logits.device)
    losses = {
        name: F.cross_entropy(outputs[name], targets, weight=class_weights)
        for name in ("av_logits", "audio_logits", "visual_logits")
    }
    return losses["av_logits"] + aux_weight * (losses["audio_logits"] + losses["visual_logits"])


# --------------------------------------------------------------------------------------------
# Checkpoint key maps (egot2.checkpoint steps)
# --------------------------------------------------------------------------------------------

TALKNET_CRITERION_KEYS = (
    "lossAV.criterion.weight",
    "lossA.criterion.weight",
    "lossV.criterion.weight",
)
"""Class-weight buffers present in Ego4D TalkNet files and absent from the AVA pretrain file."""

# ``module.`` can stand in front of a key (DDP around the trainer) or after ``model.`` (DataParallel around the
# network); TalkNet's own loader strips it in both places, and so do these steps.
_STRIP_MODULE = (StripPrefix("module."), Rename(r"^(model|lossAV|lossA|lossV)\.module\.", r"\1."))

TALKNET_FLAT_STEPS = _STRIP_MODULE
"""Official flat file (``ts_asd.pth``, ``pretrain_AVA.model``) → :class:`TalkNetASD` (or any module with the same
layout, e.g. the ASD Lightning task)."""

TALKNET_NETWORK_STEPS = (*_STRIP_MODULE, Drop(r"^loss(AV|A|V)\."), SelectPrefix("model."))
"""Official flat file → :class:`TalkNet` (heads dropped)."""

TALKNET_HEADS_STEPS = (*_STRIP_MODULE, Drop(r"^model\."))
"""Official flat file → :class:`TalkNetHeads` (network dropped)."""

_LAYOUT_STEPS = {"flat": TALKNET_FLAT_STEPS, "network": TALKNET_NETWORK_STEPS, "heads": TALKNET_HEADS_STEPS}


def talknet_expected_missing(module: nn.Module, state_dict: Mapping[str, Tensor]) -> tuple[str, ...]:
    """The criterion buffers ``module`` has but a (key-mapped) file lacks, e.g. the AVA file."""
    suffixes = tuple(key.split(".", 1)[1] for key in TALKNET_CRITERION_KEYS)  # "criterion.weight"
    return tuple(sorted(key for key in module.state_dict() if key.endswith(suffixes) and key not in state_dict))


def load_talknet_state_dict(
    module: nn.Module, state_dict: Mapping[str, Tensor], source: str = "state dict", layout: str | None = None
) -> LoadReport:
    """Load an official flat TalkNet state dict strictly into a TalkNet module.

    The key-map steps follow the module's layout: ``"flat"`` (:class:`TalkNetASD`, or any module whose state dict
    has the flat file's keys, such as the ASD task): the whole file; ``"network"`` (:class:`TalkNet`): ``model.*``;
    ``"heads"`` (:class:`TalkNetHeads`): ``loss*.*``. The only keys allowed to be absent are the class-weight
    buffers (:data:`TALKNET_CRITERION_KEYS`), which keep their constructor value.

    Args:
        module: destination.
        state_dict: the flat mapping read from ``ts_asd.pth`` or ``pretrain_AVA.model``.
        source: file name used in error messages.
        layout: ``"flat"``, ``"network"`` or ``"heads"``; None picks it from the module type.

    Returns:
        What was left out (``missing``: absent criterion buffers; ``unexpected``: always empty).

    Raises:
        egot2.checkpoint.CheckpointMismatchError: keys are missing, unexpected or of the wrong shape; the message
            lists them.
    """
    if layout is None:
        if isinstance(module, TalkNetASD):
            layout = "flat"
        elif isinstance(module, TalkNet):
            layout = "network"
        elif isinstance(module, TalkNetHeads):
            layout = "heads"
        else:
            raise TypeError(f"load_talknet_state_dict: pass layout= for a {type(module).__name__}")
    if layout not in _LAYOUT_STEPS:
        raise ValueError(f"load_talknet_state_dict: layout must be one of {sorted(_LAYOUT_STEPS)}, got {layout!r}")
    mapped = apply_key_map(state_dict, _LAYOUT_STEPS[layout])
    return load_state_dict_exact(
        module, mapped, expected_missing=talknet_expected_missing(module, mapped), source=source
    )
