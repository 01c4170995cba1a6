"""``BaselineLSTM`` stage-I models of Looking-At-Me (LAM) and Talking-To-Me (TTM).

Both run the ResNet-18 frame encoder over every face crop of a clip, feed the per-frame 256-d
features to a 2-layer bidirectional LSTM, read out one time step and classify it with two linears
(no non-linearity in between). They differ only in the readout and in the audio branch::

    LAM: video (B, 7, 3, H, W) -> base_model    -> (B, 7, 256) -> lstm (B, 7, 512) -> centre step (B, 512)
                                                                                   -> last_layer1/2 -> (B, 2)
    TTM: video (B, T, 3, H, W) -> video_encoder -> (B, T, 256) -> lstm (B, T, 512) -> last step (B, 512) -+
         audio (B, A)          -> audio_encoder (ResNetSE)                                  (B, 512) ----+-> concat
                                                                            (B, 1024) -> last_layer1/2 -> (B, 2)

``forward_features`` returns the per-frame encoder output (B, T, 256): that, and nothing else, is
what EgoT2's translators consume (spec hhi.md §2.3, §3.3); the LSTM, heads and audio branch are
not run there. Module names equal the official checkpoint prefixes, so ``ts_lam.pth`` and
``ts_ttm.pth`` state dicts load strictly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Union

import torch
from torch import nn

from HHI.models.resnet import FrameEncoder
from HHI.models.resnetse import ResNetSE

__all__ = [
    "BaselineLSTM",
    "LAMBaselineLSTM",
    "TTMBaselineLSTM",
    "STAGE1_LSTM_MODELS",
    "build_lam_model",
    "build_ttm_model",
    "social_key_map",
    "load_social_checkpoint",
]

_READOUTS = ("centre", "last")


class BaselineLSTM(nn.Module):
    """Frame encoder + BiLSTM + one time step + two linears; the common body of the LAM and TTM models.

    Use :class:`LAMBaselineLSTM` or :class:`TTMBaselineLSTM`; this class holds what they share.

    Args:
        frame_encoder_name: attribute (and checkpoint key prefix) of the frame encoder,
            ``"base_model"`` in LAM, ``"video_encoder"`` in TTM.
        readout: ``"centre"`` takes time step T // 2 (LAM, index 3 of 7 frames), ``"last"`` the last one (TTM).
        feature_dim: per-frame feature width (``fc2`` output and LSTM hidden size), 256.
        frame_hidden_dim: width of the frame encoder's ``fc1``, 1000.
        lstm_layers: stacked BiLSTM layers, 2.

    Subclasses register any extra branch (TTM's ``audio_encoder``) and then call ``_build_head``, so
    ``last_layer1``/``last_layer2`` come last in the state dict as in the official files.
    """

    def __init__(self, *, frame_encoder_name: str, readout: str, feature_dim: int = 256,
                 frame_hidden_dim: int = 1000, lstm_layers: int = 2) -> None:
        super().__init__()
        if readout not in _READOUTS:
            raise ValueError(f"readout must be one of {_READOUTS}, got {readout!r}")
        self.readout = readout
        self.feature_dim = feature_dim
        self._frame_encoder_name = frame_encoder_name
        self.add_module(frame_encoder_name, FrameEncoder(embedding_dim=feature_dim, hidden_dim=frame_hidden_dim))
        self.lstm = nn.LSTM(feature_dim, feature_dim, num_layers=lstm_layers, bidirectional=True, batch_first=True)

    def _build_head(self, head_extra_dim: int, head_dim: int, num_classes: int) -> None:
        # called by the subclasses after any extra branch so the key order matches the official files
        self.last_layer1 = nn.Linear(2 * self.feature_dim + head_extra_dim, head_dim)
        self.last_layer2 = nn.Linear(head_dim, num_classes)

    @property
    def frame_encoder(self) -> FrameEncoder:
        """The ResNet-18 frame encoder, whatever its checkpoint name."""
        return getattr(self, self._frame_encoder_name)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame features, the tokens EgoT2 translates.

        Args:
            video: (B, T, 3, H, W) float, ImageNet-normalised face crops.

        Returns:
            (B, T, feature_dim) frame-encoder ``fc2`` outputs.
        """
        return self.frame_encoder.encode_clip(video)

    def sequence_readout(self, video: torch.Tensor) -> torch.Tensor:
        """Run frame encoder and BiLSTM and keep the readout time step.

        Args:
            video: (B, T, 3, H, W) float.

        Returns:
            (B, 2 * feature_dim) BiLSTM output at the centre (LAM) or last (TTM) frame.
        """
        sequence, _ = self.lstm(self.forward_features(video))
        step = sequence.shape[1] // 2 if self.readout == "centre" else sequence.shape[1] - 1
        return sequence[:, step]

    def classify(self, summary: torch.Tensor) -> torch.Tensor:
        """Apply the two head linears.

        Args:
            summary: (B, last_layer1.in_features).

        Returns:
            (B, num_classes) logits.
        """
        return self.last_layer2(self.last_layer1(summary))


class LAMBaselineLSTM(BaselineLSTM):
    """Looking-At-Me model: is the person in the 7-frame face track looking at the camera wearer?

    Keys: ``base_model.*``, ``lstm.*``, ``last_layer1.*``, ``last_layer2.*`` (manifest ts_lam.json).

    Args:
        feature_dim: per-frame feature width, 256.
        frame_hidden_dim: frame encoder ``fc1`` width, 1000.
        lstm_layers: BiLSTM layers, 2.
        head_dim: ``last_layer1`` width, 128.
        num_classes: 2 (not looking, looking).
    """

    def __init__(self, feature_dim: int = 256, frame_hidden_dim: int = 1000, lstm_layers: int = 2,
                 head_dim: int = 128, num_classes: int = 2) -> None:
        super().__init__(frame_encoder_name="base_model", readout="centre", feature_dim=feature_dim,
                         frame_hidden_dim=frame_hidden_dim, lstm_layers=lstm_layers)
        self._build_head(0, head_dim, num_classes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Classify the centre frame of each clip.

        Args:
            video: (B, T, 3, H, W) float, T = 7 in the official data; the centre is frame T // 2.

        Returns:
            (B, num_classes) logits; softmax[:, 1] is the looking score.
        """
        return self.classify(self.sequence_readout(video))


class TTMBaselineLSTM(BaselineLSTM):
    """Talking-To-Me model: is the person in the face track talking to the camera wearer?

    Keys: ``video_encoder.*``, ``lstm.*``, ``audio_encoder.*`` (incl. the three ``torchfb`` buffers),
    ``last_layer1.*``, ``last_layer2.*`` (manifest ts_ttm.json).

    Args:
        feature_dim: per-frame feature width, 256.
        frame_hidden_dim: frame encoder ``fc1`` width, 1000.
        lstm_layers: BiLSTM layers, 2.
        head_dim: ``last_layer1`` width, 128.
        num_classes: 2 (not talking to me, talking to me).
        audio_embedding_dim: ResNetSE output width, 512.
        n_mels: mel bands of the audio front end, 64.
    """

    def __init__(self, feature_dim: int = 256, frame_hidden_dim: int = 1000, lstm_layers: int = 2,
                 head_dim: int = 128, num_classes: int = 2, audio_embedding_dim: int = 512, n_mels: int = 64) -> None:
        super().__init__(frame_encoder_name="video_encoder", readout="last", feature_dim=feature_dim,
                         frame_hidden_dim=frame_hidden_dim, lstm_layers=lstm_layers)
        self.audio_encoder = ResNetSE(n_mels=n_mels, embedding_dim=audio_embedding_dim)
        self._build_head(audio_embedding_dim, head_dim, num_classes)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Classify a segment from its face crops and its audio.

        Args:
            video: (B, T, 3, H, W) float face crops.
            audio: (B, A) float 16 kHz waveform, A > 256 samples.

        Returns:
            (B, num_classes) logits; softmax[:, 1] is the talking-to-me score.
        """
        if audio.dim() != 2 or audio.shape[0] != video.shape[0]:
            raise ValueError(
                f"expected audio of shape (B, A) with B = {video.shape[0]} (the video batch), got {tuple(audio.shape)}")
        video_summary = self.sequence_readout(video)
        audio_embedding = self.audio_encoder(audio)
        return self.classify(torch.cat((video_summary, audio_embedding), dim=1))


STAGE1_LSTM_MODELS = {"lam": LAMBaselineLSTM, "ttm": TTMBaselineLSTM}
"""Task name -> stage-I model class whose weights live in ``pretrained_models/ts_<task>.pth``."""


def build_lam_model(**kwargs: Any) -> LAMBaselineLSTM:
    """The official LAM ``BaselineLSTM`` (keyword arguments override :class:`LAMBaselineLSTM` defaults)."""
    return LAMBaselineLSTM(**kwargs)


def build_ttm_model(**kwargs: Any) -> TTMBaselineLSTM:
    """The official TTM ``BaselineLSTM`` (keyword arguments override :class:`TTMBaselineLSTM` defaults)."""
    return TTMBaselineLSTM(**kwargs)


def social_key_map(state_dict: Mapping[str, Any]) -> List[Any]:
    """Key-map steps that turn an official social-benchmark state dict into our module names.

    The official loaders strip ``module.`` (left by DDP training) when the *first* key contains
    "module"; otherwise the names are already ours. Here every key must then carry the prefix.

    Args:
        state_dict: the ``state_dict`` entry of a ``{epoch, state_dict, mAP}`` file.

    Returns:
        Steps for ``egot2.checkpoint.apply_key_map``: ``[StripPrefix("module.", required=True)]`` or ``[]``.
    """
    # imported here so that importing the models never depends on the checkpoint utilities
    from egot2.checkpoint import StripPrefix

    first_key = next(iter(state_dict), "")
    return [StripPrefix("module.", required=True)] if "module" in first_key else []


def load_social_checkpoint(model: nn.Module, path: Union[str, Path]) -> Dict[str, Any]:
    """Load an official ``ts_lam.pth`` / ``ts_ttm.pth`` (``{epoch, state_dict, mAP}``) strictly into ``model``.

    Args:
        model: a :class:`LAMBaselineLSTM` or :class:`TTMBaselineLSTM` (or a model with the same keys).
        path: checkpoint file; a relative path is taken from the repository root.

    Returns:
        ``{"epoch": ..., "mAP": ...}`` as stored in the file (``None`` when absent).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is unreadable or has no ``state_dict``; ``CheckpointMismatchError`` (a
            ``ValueError``) when its keys or shapes do not fit ``model`` (the message lists them).
    """
    from egot2.checkpoint import apply_key_map, extract_state_dict, load_file, load_state_dict_exact
    from egot2.config import repo_path

    path = repo_path(path)
    container = load_file(path)
    state_dict = extract_state_dict(container, source=str(path))
    load_state_dict_exact(model, apply_key_map(state_dict, social_key_map(state_dict)), source=str(path))
    return {"epoch": container.get("epoch"), "mAP": container.get("mAP")}
