"""Ego4D long-term anticipation model ``ForecastingEncoderDecoder`` (spec hoi.md §4.3).

Data flow (N input clips, Z future actions)::

    [slow (B, N, 3, T/alpha, H, W), fast (B, N, 3, T, H, W)]
        │  backbone: SlowFastClipEncoder, one clip at a time      → clip features (B, N, 2048)
        ▼
    clip_aggregator: TransformerAggregator (sequence-first, sinusoidal positions, 6 post-norm layers, final norm)
        │  all N outputs → forward_features (B, N, 2048)       last output → (B, 2048)
        ▼
    decoder: MultiHeadDecoder, Z parallel Linear(2048 → 115 + 478)
        ▼
    (verb_logits (B, Z, 115), noun_logits (B, Z, 478));  generate(k) samples K sequences per window.

Attribute names are those of the official checkpoint (``backbone``, ``clip_aggregator.encoder``,
``clip_aggregator.pos_encoder.pe``, ``decoder.head.projections.{i}``); only the backbone's trunk keys differ, and
``lta_key_to_native`` / ``lta_key_to_official`` translate them.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from typing import Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from egot2.checkpoint import StripPrefix, apply_key_map, load_state_dict_exact
from HOI.models.slowfast import (
    AR_NUM_CLASSES,
    SlowFastClipEncoder,
    as_pathway_pair,
    slowfast_key_to_native,
    slowfast_key_to_official,
)

__all__ = [
    "sinusoidal_table",
    "PositionalEncoding",
    "TransformerAggregator",
    "ConcatAggregator",
    "ForecastHead",
    "MultiHeadDecoder",
    "ForecastingEncoderDecoder",
    "lta_key_to_native",
    "lta_key_to_official",
    "lta_official_to_native",
    "lta_native_to_official",
    "export_lta_official",
    "load_lta_official",
]


def sinusoidal_table(max_len: int, dim: int) -> torch.Tensor:
    """Fixed sine/cosine position table, sequence-first: (max_len, 1, dim).

    Row p holds ``sin(p * f_i)`` in the even and ``cos(p * f_i)`` in the odd channels, with
    ``f_i = 10000 ** (-2i / dim)``, computed in float32 as the original does.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even width, got {dim}")
    positions = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(positions * frequencies)
    table[:, 1::2] = torch.cos(positions * frequencies)
    return table.unsqueeze(1)


class PositionalEncoding(nn.Module):
    """Adds the fixed table (buffer ``pe``, (max_len, 1, dim), saved in checkpoints) then applies dropout."""

    def __init__(self, dim: int, max_len: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", sinusoidal_table(max_len, dim))

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        """(N, B, dim) → (N, B, dim)."""
        if sequence.shape[0] > self.pe.shape[0]:
            raise ValueError(f"sequence of {sequence.shape[0]} steps exceeds the {self.pe.shape[0]} positions")
        return self.dropout(sequence + self.pe[: sequence.shape[0]])


class TransformerAggregator(nn.Module):
    """Transformer over the N clip features (``encoder`` first, then ``pos_encoder``: the checkpoint's order).

    Args:
        dim: clip feature width (``MODEL.MULTI_INPUT_FEATURES``).
        num_heads, num_layers: ``MODEL.TRANSFORMER_ENCODER_HEADS`` / ``_LAYERS`` (8, 6).
        ff_dim: feed-forward width (PyTorch default 2048 in the original).
        dropout: dropout inside the encoder layers.
        pos_dropout: dropout after adding positions.
        max_len: rows of the position table.
    """

    def __init__(
        self,
        dim: int = 2048,
        num_heads: int = 8,
        num_layers: int = 6,
        ff_dim: int = 2048,
        dropout: float = 0.1,
        pos_dropout: float = 0.2,
        max_len: int = 1000,
    ) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, num_heads, dim_feedforward=ff_dim, dropout=dropout)
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.pos_encoder = PositionalEncoding(dim, max_len, pos_dropout)
        self.out_dim = dim

    def forward(self, clip_features: torch.Tensor, return_all: bool = False) -> torch.Tensor:
        """Aggregate clips.

        Args:
            clip_features: (B, N, dim).
            return_all: return every step's encoding instead of the last one.

        Returns:
            (B, dim), the last step; or (B, N, dim) with ``return_all`` (the original returns it sequence-first).
        """
        encoded = self.encoder(self.pos_encoder(clip_features.transpose(0, 1)))
        if return_all:
            return encoded.transpose(0, 1)
        return encoded[-1]


class ConcatAggregator(nn.Module):
    """Concatenates the N clip features: (B, N, dim) → (B, N·dim). No parameters.

    Args:
        dim: clip feature width.
        num_inputs: N (the decoder's input width depends on it).
    """

    def __init__(self, dim: int = 2048, num_inputs: int = 2) -> None:
        super().__init__()
        self.num_inputs = num_inputs
        self.out_dim = dim * num_inputs

    def forward(self, clip_features: torch.Tensor, return_all: bool = False) -> torch.Tensor:
        """(B, N, dim) → (B, N·dim); with ``return_all`` the clip features themselves (B, N, dim)."""
        if clip_features.shape[1] != self.num_inputs:
            raise ValueError(
                f"ConcatAggregator was built for {self.num_inputs} clips, got {clip_features.shape[1]}"
            )
        if return_all:
            return clip_features
        return clip_features.flatten(1)


class ForecastHead(nn.Module):
    """Z parallel classifiers over one vector: dropout (shared mask) → ``projections.{z}`` Linear(D → C)."""

    def __init__(self, in_features: int, num_outputs: int, num_future: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        # PyTorch's default Linear init, as in the original (these heads sit outside the SlowFast initialiser).
        self.projections = nn.ModuleList(nn.Linear(in_features, num_outputs) for _ in range(num_future))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) → (B, Z, C)."""
        features = self.dropout(features)
        return torch.stack([projection(features) for projection in self.projections], dim=1)


class MultiHeadDecoder(nn.Module):
    """Ego4D ``MultiHeadDecoder``: one Linear(D → verbs + nouns) per future action, split per vocabulary.

    Args:
        in_features: aggregator output width.
        num_classes: vocabulary sizes, (115, 478).
        num_future: Z, the number of future actions (20).
        dropout: ``MODEL.DROPOUT_RATE``.
    """

    def __init__(
        self,
        in_features: int = 2048,
        num_classes: Sequence[int] = AR_NUM_CLASSES,
        num_future: int = 20,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = tuple(int(n) for n in num_classes)
        self.num_future = num_future
        self.head = ForecastHead(in_features, sum(self.num_classes), num_future, dropout)

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, D) → ``(verb_logits (B, Z, 115), noun_logits (B, Z, 478))``."""
        return tuple(torch.split(self.head(features), self.num_classes, dim=-1))


class ForecastingEncoderDecoder(nn.Module):
    """SlowFast clip encoder + clip aggregator + multi-head decoder (the official LTA baseline).

    Args:
        num_classes: vocabulary sizes (verbs, nouns).
        num_future: Z, future actions predicted (20).
        num_input_clips: N, observed clips (2 in every EgoT2 yaml); only ConcatAggregator depends on it.
        clip_dim: clip feature width D (``MODEL.MULTI_INPUT_FEATURES``, 2048).
        aggregator: ``"transformer"`` or ``"concat"``.
        aggregator_heads, aggregator_layers, aggregator_ff_dim, aggregator_dropout, pos_dropout: transformer
            aggregator settings (8, 6, 2048, 0.1, 0.2).
        backbone_dropout: dropout of the clip encoder's head (0.5).
        decoder_dropout: dropout of the decoder (0.5).
        freeze_backbone: ``MODEL.FREEZE_BACKBONE``: freeze the backbone except ``backbone.head``.
        frozen_backbone_train_mode: run the frozen trunk in train mode like the original (see
            :meth:`SlowFast.freeze_trunk`); default keeps it in eval mode.
        build_decoder: False builds the model the LTA translators embed (no ``decoder``).
        **backbone_kwargs: SlowFast trunk settings (depth, width, num_frames, crop_size, ...).
    """

    def __init__(
        self,
        *,
        num_classes: Sequence[int] = AR_NUM_CLASSES,
        num_future: int = 20,
        num_input_clips: int = 2,
        clip_dim: int = 2048,
        aggregator: str = "transformer",
        aggregator_heads: int = 8,
        aggregator_layers: int = 6,
        aggregator_ff_dim: int = 2048,
        aggregator_dropout: float = 0.1,
        pos_dropout: float = 0.2,
        backbone_dropout: float = 0.5,
        decoder_dropout: float = 0.5,
        freeze_backbone: bool = True,
        frozen_backbone_train_mode: bool = False,
        build_decoder: bool = True,
        **backbone_kwargs,
    ) -> None:
        super().__init__()
        self.num_classes = tuple(int(n) for n in num_classes)
        self.num_future = num_future
        self.num_input_clips = num_input_clips
        self.clip_dim = clip_dim
        self.backbone = SlowFastClipEncoder(out_features=clip_dim, dropout=backbone_dropout, **backbone_kwargs)
        if freeze_backbone:
            self.backbone.freeze_trunk(train_mode=frozen_backbone_train_mode)
        if aggregator == "transformer":
            self.clip_aggregator = TransformerAggregator(
                clip_dim, aggregator_heads, aggregator_layers, aggregator_ff_dim, aggregator_dropout, pos_dropout
            )
        elif aggregator == "concat":
            self.clip_aggregator = ConcatAggregator(clip_dim, num_input_clips)
        else:
            raise ValueError(f"unknown LTA aggregator {aggregator!r}; use 'transformer' or 'concat'")
        self.decoder = (
            MultiHeadDecoder(self.clip_aggregator.out_dim, self.num_classes, num_future, decoder_dropout)
            if build_decoder
            else None
        )

    @property
    def feature_dim(self) -> int:
        """Width of a :meth:`forward_features` token (D = 2048)."""
        return self.clip_dim

    def encode_clips(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Run the clip encoder on each observed clip.

        Args:
            inputs: ``[slow (B, N, 3, T/alpha, H, W), fast (B, N, 3, T, H, W)]``.

        Returns:
            clip_features: (B, N, D).
        """
        slow, fast = as_pathway_pair(inputs, 6, type(self).__name__)
        if slow.shape[1] != fast.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: clip counts differ: slow {tuple(slow.shape)}, fast {tuple(fast.shape)}"
            )
        # One clip at a time, as the original: BatchNorm in train mode then sees the same batches.
        return torch.stack([self.backbone([slow[:, i], fast[:, i]]) for i in range(slow.shape[1])], dim=1)

    def forward_features(self, *inputs) -> torch.Tensor:
        """Aggregator output for every observed clip, the tokens EgoT2's LTA translators read (spec §9.4).

        Args:
            *inputs: ``[slow, fast]`` as one list, or the two tensors (see :meth:`encode_clips`).

        Returns:
            tokens: (B, N, D), batch-first (the original's ``middle=True`` output transposed).
        """
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = inputs[0]
        return self.clip_aggregator(self.encode_clips(inputs), return_all=True)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """``[slow, fast]`` → ``(verb_logits (B, Z, 115), noun_logits (B, Z, 478))``."""
        if self.decoder is None:
            raise ValueError("this ForecastingEncoderDecoder was built without a decoder; use forward_features")
        return self.decoder(self.clip_aggregator(self.encode_clips(inputs)))

    @torch.no_grad()
    def generate(
        self, inputs: Sequence[torch.Tensor], k: int = 5, generator: Optional[torch.Generator] = None
    ) -> Tuple[torch.Tensor, ...]:
        """Predict K future-action sequences per window.

        k = 1 takes the per-position argmax; k > 1 draws K independent samples per position from the softmax of
        each head's logits (positions and heads independent, as the original). Call ``.eval()`` first: this
        method does not change the mode. Pass a seeded ``generator`` for reproducible submissions.

        Args:
            inputs: ``[slow, fast]`` as for :meth:`forward`.
            k: sequences per window (5 for the challenge).
            generator: random source for the sampling.

        Returns:
            ``(verb (B, k, Z), noun (B, k, Z))`` int64 class indices.
        """
        if k < 1:
            raise ValueError(f"generate needs k >= 1, got {k}")
        predictions = []
        for logits in self.forward(inputs):
            batch, num_future, num_classes = logits.shape
            if k == 1:
                predictions.append(logits.argmax(dim=-1).unsqueeze(1))
                continue
            probabilities = torch.softmax(logits.float(), dim=-1).reshape(batch * num_future, num_classes)
            samples = torch.multinomial(probabilities, k, replacement=True, generator=generator)
            predictions.append(samples.reshape(batch, num_future, k).transpose(1, 2))
        return tuple(predictions)


# ---------------------------------------------------------------------- official key names
_BACKBONE = "backbone."
_SAME_NAME_PREFIXES = ("clip_aggregator.", "decoder.")


def lta_key_to_native(key: str) -> str:
    """Official LTA key (no ``model.`` prefix) → this module's key; only backbone trunk keys change.

    Raises:
        ValueError: the key belongs to none of ``backbone``, ``clip_aggregator``, ``decoder``.
    """
    if key.startswith(_BACKBONE):
        return _BACKBONE + slowfast_key_to_native(key[len(_BACKBONE) :])
    if key.startswith(_SAME_NAME_PREFIXES):
        return key
    raise ValueError(f"not an official LTA state-dict key: {key!r}")


def lta_key_to_official(key: str) -> str:
    """This module's key → official LTA key (inverse of :func:`lta_key_to_native`)."""
    if key.startswith(_BACKBONE):
        return _BACKBONE + slowfast_key_to_official(key[len(_BACKBONE) :])
    if key.startswith(_SAME_NAME_PREFIXES):
        return key
    raise ValueError(f"not a native LTA state-dict key: {key!r}")


def lta_official_to_native(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Rename every key of an official LTA state dict (no ``model.`` prefix); order is kept."""
    return OrderedDict((lta_key_to_native(key), value) for key, value in state_dict.items())


def lta_native_to_official(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Rename every key of a native LTA state dict to the official names; order is kept."""
    return OrderedDict((lta_key_to_official(key), value) for key, value in state_dict.items())


def export_lta_official(model: ForecastingEncoderDecoder) -> "OrderedDict[str, torch.Tensor]":
    """State dict in the official layout (``model.``-prefixed, the checkpoint's key order)."""
    return OrderedDict(("model." + lta_key_to_official(key), value) for key, value in model.state_dict().items())


def load_lta_official(model: ForecastingEncoderDecoder, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load an official LTA state dict (``model.``-prefixed or bare), strictly.

    A model built without a decoder accepts a full checkpoint: exactly its ``decoder.*`` keys are then
    expected to be left over (the LTA translators' case).

    Raises:
        ValueError: a key is not an LTA key; ``egot2.checkpoint.CheckpointMismatchError`` (a ValueError) when keys
            or shapes do not match exactly.
    """
    native = apply_key_map(state_dict, [StripPrefix("model."), lta_official_to_native])
    unexpected = [re.escape(key) for key in native if key.startswith("decoder.")] if model.decoder is None else []
    load_state_dict_exact(model, native, expected_unexpected=unexpected, source="official LTA state dict")
