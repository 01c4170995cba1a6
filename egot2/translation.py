"""EgoT2-s task translator: one transformer that reads the tokens of several frozen task models.

Data flow (B = batch, d = ``dim``, one row per source, in the order the sources are given)::

    source tokens [B, N_s, C_s] ── proj_s: Linear(C_s -> d) (or none when C_s == d already) ── token dropout
        │
        ├─ LayerNorm ``ln`` (one instance shared by all sources)
        ├─ style "hhi": + task_embed[task_id_s]          (learned, one vector per task)
        │               + sinusoidal pe[0 .. N_s)        (positions restart at 0 for every source)
        └─ style "hoi":   nothing per source
        │
    concatenate along the sequence -> [B, L, d], L = sum N_s
        ├─ style "hoi": + learned pe[0 .. L)             (one vector per absolute position)
        └─ dropout (``pos_dropout``; 0.1 in the HHI original, 0 in HOI)
        │
    TransformerEncoder: num_layers x post-norm layer (self-attention with num_heads, ReLU feed-forward ff_dim)
        │  [B, L, d]
        ├─ pool "mean": mean over the L tokens -> [B, d]
        │      -> head norm ("separate" LayerNorm | "shared": the input ``ln`` again | "none")
        │      -> dropout (``head_dropout``) -> one Linear(d -> k_i) per output head
        │      -> logits: [B, k] for one head, a list for several, or, with ``stack_heads``, [B, H, k]
        │         split along the last dimension by ``output_split`` (LTA: 20 x 593 -> verbs 115 + nouns 478)
        └─ pool "none": the encoder outputs at the positions of ``select_source`` -> [B, N_s, d]
               (the ASD translator classifies every ASD frame from its own position)

Every EgoT2-s model of the paper is one configuration of :class:`TaskTranslator`; the released ones are rows of
:data:`TRANSLATOR_VARIANTS`, each with the key layout of the official checkpoints so that official weights load
through :func:`translator_state_from_official` and our weights export through :func:`translator_state_to_official`.

Our own state-dict names: ``proj.<source>.*``, ``ln.*``, ``task_embed`` (hhi), ``pos_embed.pe`` (hhi: fixed
sinusoidal table (max_len, 1, d), kept as a saved buffer as in the original; hoi: learned (1, max_tokens, d)),
``encoder.layers.<i>.*``, ``head_norm.*`` (only with head_norm "separate"), ``heads.<i>.*``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "TaskTranslator",
    "SinusoidalPositions",
    "LearnedPositions",
    "OfficialLayout",
    "TranslatorVariant",
    "TRANSLATOR_VARIANTS",
    "build_translator",
    "official_translator_key_map",
    "translator_state_from_official",
    "translator_state_to_official",
    "apply_renames",
    "as_checkpoint_steps",
]

_STYLES = ("hhi", "hoi")
_HEAD_NORMS = ("separate", "shared", "none")
_POOLS = ("mean", "none")
_INITS = ("default", "xavier")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SinusoidalPositions(nn.Module):
    """Fixed sine/cosine position table, ``pe`` of shape (max_len, 1, dim) (the original's sequence-first layout).

    Args:
        dim: embedding width (even).
        max_len: number of positions in the table.
    """

    def __init__(self, dim: int, max_len: int = 1000):
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal positions need an even width, got dim={dim}")
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        inverse_wavelength = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * inverse_wavelength)
        table[:, 1::2] = torch.cos(position * inverse_wavelength)
        # Saved with the weights because the official checkpoints contain it (model.pos_embed.pe).
        self.register_buffer("pe", table.unsqueeze(1))

    @property
    def max_len(self) -> int:
        return self.pe.shape[0]

    def forward(self, num_positions: int) -> torch.Tensor:
        """Return the first ``num_positions`` rows, shape (num_positions, dim)."""
        if num_positions > self.max_len:
            raise ValueError(f"a source has {num_positions} tokens but the sinusoidal table holds {self.max_len}")
        return self.pe[:num_positions, 0]


class LearnedPositions(nn.Module):
    """Learned absolute position embedding ``pe`` of shape (1, max_tokens, dim), standard-normal init."""

    def __init__(self, dim: int, max_tokens: int):
        super().__init__()
        self.pe = nn.Parameter(torch.randn(1, max_tokens, dim))

    @property
    def max_len(self) -> int:
        return self.pe.shape[1]

    def forward(self, num_positions: int) -> torch.Tensor:
        """Return the first ``num_positions`` embeddings, shape (1, num_positions, dim)."""
        if num_positions > self.max_len:
            raise ValueError(f"the token sequence has {num_positions} tokens but the learned position table "
                             f"holds max_tokens={self.max_len}")
        return self.pe[:, :num_positions]


class TaskTranslator(nn.Module):
    """Transformer over the concatenated tokens of several task models (EgoT2-s), see the module docstring.

    Args:
        sources: ``(name, in_dim)`` per source in sequence order; ``in_dim=None`` means the tokens already have
            width ``dim`` and get no projection (LTA's AR tokens come out of a trainable SlowFast head). A model
            that emits several token groups (SlowFast slow/fast) is given as several sources.
        dim: translator width d.
        num_layers: encoder layers.
        num_heads: attention heads per layer.
        ff_dim: feed-forward width of every layer (2048 = PyTorch's default, used by HHI, AR and LTA; 2*d in PNR/OSCC).
        dropout: dropout inside the encoder layers.
        style: "hhi" (task embeddings + sinusoidal positions restarting per source) or "hoi" (learned positions
            over the whole sequence).
        task_ids: hhi only, the task-embedding row of each source (default 0, 1, 2, ...). EgoT2-s uses TTM=0,
            LAM=1, ASD=2 whatever the concatenation order.
        max_tokens: hoi only, length of the learned position table (the total number of tokens, e.g. 48).
        max_len: hhi only, length of the sinusoidal table.
        token_dropout: dropout on every projected token (HOI's feature dropout).
        pos_dropout: dropout after the position embeddings; ``None`` = the style's original value (hhi 0.1,
            hoi 0.0).
        heads: output size of each output head (``num_heads`` is the attention heads). Empty: ``forward`` returns
            the pooled features [B, d].
        head_norm: LayerNorm before the heads: "separate" (own weights, HHI), "shared" (re-uses ``ln``, HOI) or
            "none" (LTA); ``None`` = the style's default (hhi "separate", hoi "shared").
        head_dropout: dropout between the head norm and the heads (LTA's decoder dropout).
        stack_heads: stack the head outputs into [B, H, k] (all heads must have the same size).
        output_split: with ``stack_heads``, split the last dimension into these sizes and return the list.
        pool: "mean" (pool all tokens, apply the heads) or "none" (return the encoder outputs of ``select_source``;
            the heads and head norm are then unused and frozen, kept only for checkpoint compatibility).
        select_source: with ``pool="none"``, the source whose positions ``forward`` returns.
        init: "default" (PyTorch's initialisation) or "xavier" (xavier-uniform on every >=2-dim parameter of the
            projections, the position table and the encoder, as in the LTA translators; heads keep the default).
    """

    def __init__(
        self,
        sources: Sequence[tuple[str, int | None]],
        *,
        dim: int = 128,
        num_layers: int = 1,
        num_heads: int = 4,
        ff_dim: int = 2048,
        dropout: float = 0.1,
        style: str = "hhi",
        task_ids: Sequence[int] | None = None,
        max_tokens: int | None = None,
        max_len: int = 1000,
        token_dropout: float = 0.0,
        pos_dropout: float | None = None,
        heads: Sequence[int] = (2,),
        head_norm: str | None = None,
        head_dropout: float = 0.0,
        stack_heads: bool = False,
        output_split: Sequence[int] | None = None,
        pool: str = "mean",
        select_source: str | None = None,
        init: str = "default",
    ):
        super().__init__()
        self.sources = _check_sources(sources)
        self.source_names = [name for name, _ in self.sources]
        self.dim = int(dim)
        self.style = _choice("style", style, _STYLES)
        self.pool = _choice("pool", pool, _POOLS)
        self.head_norm_mode = _choice("head_norm", head_norm or ("separate" if style == "hhi" else "shared"),
                                      _HEAD_NORMS)
        _choice("init", init, _INITS)
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        if self.pool == "none":
            if select_source not in self.source_names:
                raise ValueError(f"pool='none' needs select_source to be one of {self.source_names}, "
                                 f"got {select_source!r}")
        elif select_source is not None:
            raise ValueError("select_source is only used with pool='none'")
        self.select_source = select_source
        self.head_sizes = [int(size) for size in heads]
        if any(size <= 0 for size in self.head_sizes):
            raise ValueError(f"head sizes must be positive, got {self.head_sizes}")
        self.stack_heads = bool(stack_heads)
        self.output_split = [int(size) for size in output_split] if output_split is not None else None
        if self.stack_heads and len(set(self.head_sizes)) != 1:
            raise ValueError(f"stack_heads needs equal head sizes, got {sorted(set(self.head_sizes))}")
        if self.output_split is not None:
            if not self.stack_heads:
                raise ValueError("output_split is only used with stack_heads=True")
            if sum(self.output_split) != self.head_sizes[0]:
                raise ValueError(f"output_split {self.output_split} does not add up to the head size "
                                 f"{self.head_sizes[0]}")

        if self.style == "hhi":
            if max_tokens is not None:
                raise ValueError("max_tokens is for style 'hoi' (learned positions); 'hhi' uses max_len")
            ids = list(range(len(self.sources))) if task_ids is None else [int(i) for i in task_ids]
            if len(ids) != len(self.sources) or min(ids) < 0:
                raise ValueError(f"task_ids must give one non-negative id per source ({len(self.sources)}), "
                                 f"got {list(task_ids or [])}")
            self.task_ids = ids
            self.task_embed = nn.Parameter(torch.randn(1, max(ids) + 1, dim))
        else:
            if task_ids is not None:
                raise ValueError("task_ids are for style 'hhi'; 'hoi' marks sources by absolute position")
            if max_tokens is None or max_tokens <= 0:
                raise ValueError("style 'hoi' needs max_tokens (length of the learned position table)")
            self.task_ids = None

        self.proj = nn.ModuleDict({name: nn.Linear(in_dim, dim)
                                   for name, in_dim in self.sources if in_dim is not None})
        self.token_dropout = nn.Dropout(token_dropout)
        self.ln = nn.LayerNorm(dim)
        self.pos_embed: nn.Module = (SinusoidalPositions(dim, max_len) if self.style == "hhi"
                                     else LearnedPositions(dim, max_tokens))
        self.embed_dropout = nn.Dropout((0.1 if self.style == "hhi" else 0.0) if pos_dropout is None else pos_dropout)
        layer = nn.TransformerEncoderLayer(dim, num_heads, dim_feedforward=ff_dim, dropout=dropout,
                                           activation="relu", batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        if init == "xavier":
            for module in (self.proj, self.pos_embed, self.encoder):
                for parameter in module.parameters():
                    if parameter.dim() > 1:
                        nn.init.xavier_uniform_(parameter)
        if self.head_norm_mode == "separate":
            self.head_norm = nn.LayerNorm(dim)
        self.head_dropout = nn.Dropout(head_dropout)
        self.heads = nn.ModuleList(nn.Linear(dim, size) for size in self.head_sizes)
        if self.pool == "none":
            # The heads are only kept so official checkpoints load (the ASD task classifies with its own lossAV.FC);
            # frozen, they stay out of the optimiser and DDP does not wait for their gradients.
            for module in (self.heads, getattr(self, "head_norm", None)):
                if module is not None:
                    module.requires_grad_(False)

    # ----------------------------------------------------------------------------------------------- inputs
    def _ordered_tokens(self, tokens: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if isinstance(tokens, Mapping):
            missing = [name for name in self.source_names if name not in tokens]
            extra = [name for name in tokens if name not in self.source_names]
            if missing or extra:
                raise ValueError(f"translator sources are {self.source_names}; missing {missing}, unexpected {extra}")
            ordered = [tokens[name] for name in self.source_names]
        else:
            ordered = list(tokens)
            if len(ordered) != len(self.sources):
                raise ValueError(f"expected {len(self.sources)} token tensors (sources {self.source_names}), "
                                 f"got {len(ordered)}")
        batch = None
        for (name, in_dim), source_tokens in zip(self.sources, ordered):
            width = self.dim if in_dim is None else in_dim
            if not isinstance(source_tokens, torch.Tensor) or source_tokens.dim() != 3:
                shape = tuple(source_tokens.shape) if isinstance(source_tokens, torch.Tensor) else type(source_tokens)
                raise ValueError(f"tokens of source '{name}' must be a tensor [B, N, {width}], got {shape}")
            if source_tokens.shape[-1] != width:
                raise ValueError(f"tokens of source '{name}' have width {source_tokens.shape[-1]}, expected {width}")
            if batch is not None and source_tokens.shape[0] != batch:
                raise ValueError(f"source '{name}' has batch size {source_tokens.shape[0]}, the first source {batch}")
            batch = source_tokens.shape[0]
        return ordered

    def embed(self, tokens: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]
              ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Project, normalise and position-embed every source and concatenate them.

        Args:
            tokens: ``{source name: Tensor[B, N_s, C_s]}`` or a list in source order.

        Returns:
            The encoder input [B, L, d] and each source's ``(start, end)`` span in it.
        """
        sequence, spans, start = [], [], 0
        for index, ((name, _), source_tokens) in enumerate(zip(self.sources, self._ordered_tokens(tokens))):
            projected = self.proj[name](source_tokens) if name in self.proj else source_tokens
            embedded = self.ln(self.token_dropout(projected))
            if self.style == "hhi":
                embedded = (embedded + self.task_embed[:, self.task_ids[index]].unsqueeze(1)
                            + self.pos_embed(embedded.shape[1]))
            sequence.append(embedded)
            spans.append((start, start + embedded.shape[1]))
            start += embedded.shape[1]
        concatenated = torch.cat(sequence, dim=1)
        if self.style == "hoi":
            concatenated = concatenated + self.pos_embed(concatenated.shape[1])
        return self.embed_dropout(concatenated), spans

    # ----------------------------------------------------------------------------------------------- encoder
    def _encode_with_attention(self, sequence: torch.Tensor, spans: list[tuple[int, int]]
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        # Same arithmetic as nn.TransformerEncoderLayer (post-norm), run by hand to read the attention weights.
        mass = sequence.new_zeros(sequence.shape[0], len(spans))
        for layer in self.encoder.layers:
            attended, weights = layer.self_attn(sequence, sequence, sequence, need_weights=True,
                                                average_attn_weights=True)
            sequence = layer.norm1(sequence + layer.dropout1(attended))
            feed_forward = layer.linear2(layer.dropout(layer.activation(layer.linear1(sequence))))
            sequence = layer.norm2(sequence + layer.dropout2(feed_forward))
            received = weights.mean(dim=1)  # [B, L]: attention each key gets, averaged over the queries
            mass = mass + torch.stack([received[:, start:end].sum(dim=1) for start, end in spans], dim=1)
        return sequence, mass / len(self.encoder.layers)

    def forward_tokens(self, tokens: Mapping[str, torch.Tensor] | Sequence[torch.Tensor], *,
                       select_source: str | None = None, return_attention: bool = False) -> Any:
        """Run the encoder and return its output sequence.

        Args:
            tokens: ``{source name: Tensor[B, N_s, C_s]}`` or a list in source order.
            select_source: return only this source's positions.
            return_attention: also return the per-source attention mass (see :meth:`forward`).

        Returns:
            ``Tensor[B, L, d]`` (or ``[B, N_s, d]`` for ``select_source``), and the attention mass [B, S] when asked.
        """
        sequence, spans = self.embed(tokens)
        if return_attention:
            encoded, mass = self._encode_with_attention(sequence, spans)
        else:
            encoded, mass = self.encoder(sequence), None
        if select_source is not None:
            if select_source not in self.source_names:
                raise ValueError(f"select_source {select_source!r} is not one of {self.source_names}")
            start, end = spans[self.source_names.index(select_source)]
            encoded = encoded[:, start:end]
        return (encoded, mass) if return_attention else encoded

    def forward(self, tokens: Mapping[str, torch.Tensor] | Sequence[torch.Tensor], return_attention: bool = False
                ) -> Any:
        """Translate the sources' tokens into the primary task's output.

        Args:
            tokens: ``{source name: Tensor[B, N_s, C_s]}`` or a list of tensors in source order.
            return_attention: also return the attention mass per source, Tensor[B, S]: the attention weight that
                lands on each source's tokens, averaged over heads, query positions and layers (rows sum to 1).

        Returns:
            With pool "mean": logits [B, k] for one head, a list of [B, k_i] for several, ``[B, H, k]`` with
            ``stack_heads`` or the list of its ``output_split`` parts; the pooled features [B, d] when there are no
            heads. With pool "none": the encoder outputs at ``select_source``'s positions [B, N_s, d].
            A tuple ``(output, attention_mass)`` when ``return_attention``.
        """
        encoded = self.forward_tokens(tokens, select_source=self.select_source, return_attention=return_attention)
        encoded, mass = encoded if return_attention else (encoded, None)
        output = encoded if self.pool == "none" else self.head(encoded.mean(dim=1))
        return (output, mass) if return_attention else output

    def head(self, pooled: torch.Tensor) -> Any:
        """Apply head norm, head dropout and the output heads to pooled features [B, d] (see :meth:`forward`)."""
        if self.head_norm_mode == "separate":
            pooled = self.head_norm(pooled)
        elif self.head_norm_mode == "shared":
            pooled = self.ln(pooled)
        if not self.head_sizes:
            return pooled
        pooled = self.head_dropout(pooled)
        outputs = [linear(pooled) for linear in self.heads]
        if self.stack_heads:
            stacked = torch.stack(outputs, dim=1)
            return list(torch.split(stacked, self.output_split, dim=-1)) if self.output_split else stacked
        return outputs[0] if len(outputs) == 1 else outputs


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _check_sources(sources: Sequence[tuple[str, int | None]]) -> list[tuple[str, int | None]]:
    checked = []
    for entry in sources:
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise ValueError(f"each source must be (name, in_dim), got {entry!r}")
        name, in_dim = entry
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"source name must be an identifier, got {name!r}")
        if in_dim is not None and (not isinstance(in_dim, int) or in_dim <= 0):
            raise ValueError(f"source '{name}': in_dim must be a positive int or None, got {in_dim!r}")
        checked.append((name, in_dim))
    names = [name for name, _ in checked]
    if not checked or len(set(names)) != len(names):
        raise ValueError(f"sources must be a non-empty list with unique names, got {names}")
    return checked


# ---------------------------------------------------------------------------------------------------------------
# Released EgoT2-s translators and the key layout of their official checkpoints
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OfficialLayout:
    """Names of the translator's modules inside an official EgoT2-s checkpoint (``model.`` prefix removed).

    Attributes:
        projections: source name -> official projection module (``proj_ttm``, ``proj1``, ...).
        encoder: official name of the TransformerEncoder (``transformer_encoder`` in HHI, ``transformer`` in HOI).
        positions: official key of the position table (``pos_embed.pe`` or ``pe``).
        head_norm: official module of a separate head LayerNorm (``linear_head.0``), if any.
        heads: official module of each output Linear, in head order.
        head_norm_aliases: per head, the official module that holds a copy of the shared ``ln`` (None if none);
            these entries are written on export and checked and dropped on import.
        order: official top-level module order, used to order exported keys like the original files.
    """

    projections: Mapping[str, str]
    encoder: str
    positions: str
    heads: tuple[str, ...]
    order: tuple[str, ...]
    head_norm: str | None = None
    head_norm_aliases: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class TranslatorVariant:
    """One released EgoT2-s translator: constructor arguments and the official checkpoint layout."""

    kwargs: Mapping[str, Any]
    layout: OfficialLayout
    manifest: str
    description: str = ""


_HHI_ORDER = ("task_embed", "proj_lam", "proj_ttm", "proj_asd", "pos_embed", "transformer_encoder", "ln",
              "linear_head")


def _hhi_layout(sources: Sequence[str]) -> OfficialLayout:
    return OfficialLayout(projections={name: f"proj_{name}" for name in sources}, encoder="transformer_encoder",
                          positions="pos_embed.pe", head_norm="linear_head.0", heads=("linear_head.1",),
                          order=_HHI_ORDER)


def _fho_layout(num_heads: int) -> OfficialLayout:
    heads = ("linear_head.1",) if num_heads == 1 else tuple(f"linear_head{i + 1}.1" for i in range(num_heads))
    aliases = tuple(name[:-2] + ".0" for name in heads)
    tail = ("ln", "transformer") if num_heads == 1 else ("transformer", "ln")
    return OfficialLayout(projections={"pnr": "proj1", "oscc": "proj2", "slow": "proj3_slow", "fast": "proj3_fast"},
                          encoder="transformer", positions="pe", heads=heads, head_norm_aliases=aliases,
                          order=("pe", "proj1", "proj2", "proj3_slow", "proj3_fast", *tail,
                                 *dict.fromkeys(name.split(".")[0] for name in heads)))


def _lta_layout(projected: Sequence[str], num_future: int) -> OfficialLayout:
    return OfficialLayout(projections={name: f"proj_{name}" for name in projected}, encoder="transformer",
                          positions="pe", heads=tuple(f"head.projections.{i}" for i in range(num_future)),
                          order=("pe", "proj_pnr", "proj_oscc", "proj_lta", "transformer", "ln", "head"))


_FHO_SOURCES = [("pnr", 8192), ("oscc", 8192), ("slow", 2048), ("fast", 256)]
_LTA_VERBS, _LTA_NOUNS, _LTA_FUTURE = 115, 478, 20

TRANSLATOR_VARIANTS: dict[str, TranslatorVariant] = {
    "ttm_2task": TranslatorVariant(
        kwargs=dict(sources=[("ttm", 256), ("lam", 256)], dim=128, num_layers=1, num_heads=4, ff_dim=2048,
                    dropout=0.5, style="hhi", task_ids=[0, 1], heads=[2]),
        layout=_hhi_layout(["ttm", "lam"]), manifest="egot2s_ttm_2task.json",
        description="TTM from TTM + LAM tokens (T each); README settings hidden 128, 1 layer, dropout 0.5"),
    "ttm_3task": TranslatorVariant(
        kwargs=dict(sources=[("ttm", 256), ("lam", 256), ("asd", 256)], dim=128, num_layers=1, num_heads=4,
                    ff_dim=2048, dropout=0.5, style="hhi", task_ids=[0, 1, 2], heads=[2]),
        layout=_hhi_layout(["ttm", "lam", "asd"]), manifest="egot2s_ttm_3task.json",
        description="TTM from TTM + LAM + ASD tokens"),
    "asd_3task": TranslatorVariant(
        kwargs=dict(sources=[("asd", 256), ("ttm", 256), ("lam", 256)], dim=256, num_layers=1, num_heads=4,
                    ff_dim=2048, dropout=0.1, style="hhi", task_ids=[2, 0, 1], heads=[2], pool="none",
                    select_source="asd"),
        layout=_hhi_layout(["asd", "ttm", "lam"]), manifest="egot2s_asd_3task.json",
        description="ASD per frame from its own positions; the linear_head is unused (logits come from the "
                    "task's lossAV.FC) but kept for checkpoint compatibility"),
    "pnr": TranslatorVariant(
        kwargs=dict(sources=_FHO_SOURCES, dim=128, num_layers=6, num_heads=8, ff_dim=256, dropout=0.1,
                    style="hoi", max_tokens=48, token_dropout=0.5, heads=[16]),
        layout=_fho_layout(1), manifest="egot2s_pnr.json",
        description="PNR keyframe logits (16) from PNR16, OSCC16, slow8, fast8 tokens"),
    "oscc": TranslatorVariant(
        kwargs=dict(sources=_FHO_SOURCES, dim=256, num_layers=5, num_heads=8, ff_dim=512, dropout=0.1,
                    style="hoi", max_tokens=48, token_dropout=0.1, heads=[2]),
        layout=_fho_layout(1), manifest="egot2s_oscc.json",
        description="OSCC state-change logits (2) from the same 48 tokens"),
    "ar": TranslatorVariant(
        kwargs=dict(sources=[("slow", 2048), ("fast", 256), ("pnr", 8192), ("oscc", 8192)], dim=128, num_layers=3,
                    num_heads=8, ff_dim=2048, dropout=0.1, style="hoi", max_tokens=48, heads=[115, 478]),
        layout=_fho_layout(2), manifest="egot2s_ar.json",
        description="AR verb (115) and noun (478) logits from slow8, fast8, PNR16, OSCC16 tokens"),
    "lta_4task": TranslatorVariant(
        kwargs=dict(sources=[("pnr", 8192), ("oscc", 8192), ("action", None), ("lta", 2048)], dim=1024,
                    num_layers=1, num_heads=8, ff_dim=2048, dropout=0.5, style="hoi", max_tokens=8,
                    head_norm="none", head_dropout=0.5, heads=[_LTA_VERBS + _LTA_NOUNS] * _LTA_FUTURE,
                    stack_heads=True, output_split=[_LTA_VERBS, _LTA_NOUNS], init="xavier"),
        layout=_lta_layout(["pnr", "oscc", "lta"], _LTA_FUTURE), manifest="egot2s_lta_4task.json",
        description="LTA 20 future verbs/nouns from PNR, OSCC, AR (trainable SlowFast head, already 1024 wide) "
                    "and LTA tokens, N=2 input clips each"),
    "lta_2task": TranslatorVariant(
        kwargs=dict(sources=[("action", None), ("lta", None)], dim=2048, num_layers=1, num_heads=4, ff_dim=2048,
                    dropout=0.5, style="hoi", max_tokens=4, head_norm="none", head_dropout=0.5,
                    heads=[_LTA_VERBS + _LTA_NOUNS] * _LTA_FUTURE, stack_heads=True,
                    output_split=[_LTA_VERBS, _LTA_NOUNS], init="xavier"),
        layout=_lta_layout([], _LTA_FUTURE), manifest="egot2s_lta_2task.json",
        description="LTA from AR + LTA tokens at width 2048 (no projections)"),
}


def build_translator(variant: str, **overrides: Any) -> TaskTranslator:
    """Build a released translator configuration, e.g. ``build_translator("pnr", token_dropout=0.0)``."""
    return TaskTranslator(**{**_variant(variant).kwargs, **overrides})


def _variant(variant: str) -> TranslatorVariant:
    if variant not in TRANSLATOR_VARIANTS:
        raise ValueError(f"unknown translator variant {variant!r}; known: {sorted(TRANSLATOR_VARIANTS)}")
    return TRANSLATOR_VARIANTS[variant]


def official_translator_key_map(variant: str, direction: str = "load") -> list[tuple[str, str | None]]:
    """Regex key map between an official EgoT2-s translator and :class:`TaskTranslator`.

    The official keys are the translator part of the Lightning ``state_dict`` with ``model.`` stripped and the
    sub-models (``*_model.*``) and task-level keys (``criterion.*``, ``lossAV.*``) left out.

    Args:
        variant: a key of :data:`TRANSLATOR_VARIANTS`.
        direction: "load" (official -> ours) or "save" (ours -> official).

    Returns:
        ``(pattern, replacement)`` pairs to apply in order with ``re.sub`` (``egot2.checkpoint.Rename``); a
        ``None`` replacement (load only) drops the key (``egot2.checkpoint.Drop``): those are the official copies
        of the shared LayerNorm, which :func:`translator_state_from_official` checks against ``ln`` first. The save
        direction cannot re-create those copies by renaming; use :func:`translator_state_to_official`.
    """
    layout = _variant(variant).layout
    pairs: list[tuple[str, str]] = []  # (official prefix, our prefix), both ending with "." or exact keys
    for source, official in layout.projections.items():
        pairs.append((official + ".", f"proj.{source}."))
    pairs.append((layout.encoder + ".", "encoder."))
    if layout.positions != "pos_embed.pe":
        pairs.append((layout.positions, "pos_embed.pe"))
    if layout.head_norm:
        pairs.append((layout.head_norm + ".", "head_norm."))
    for index, official in enumerate(layout.heads):
        pairs.append((official + ".", f"heads.{index}."))
    if direction == "load":
        drops = [(f"^{re.escape(alias)}\\.", None) for alias in dict.fromkeys(layout.head_norm_aliases) if alias]
        return drops + [(_anchored(official), ours) for official, ours in pairs]
    if direction == "save":
        return [(_anchored(ours), official) for official, ours in pairs]
    raise ValueError(f"direction must be 'load' or 'save', got {direction!r}")


def _anchored(prefix: str) -> str:
    return "^" + re.escape(prefix) + ("" if prefix.endswith(".") else "$")


def apply_renames(state_dict: Mapping[str, torch.Tensor], pairs: Sequence[tuple[str, str | None]]
                  ) -> dict[str, torch.Tensor]:
    """Apply ``(pattern, replacement)`` pairs in order to every key (``None`` drops matching keys)."""
    renamed = dict(state_dict)
    for pattern, replacement in pairs:
        regex = re.compile(pattern)
        step: dict[str, torch.Tensor] = {}
        for key, value in renamed.items():
            if regex.search(key):
                if replacement is None:
                    continue
                key = regex.sub(replacement, key)
            if key in step:
                raise ValueError(f"key map {pattern!r} -> {replacement!r} maps two keys onto {key!r}")
            step[key] = value
        renamed = step
    return renamed


def as_checkpoint_steps(pairs: Sequence[tuple[str, str | None]]) -> list[Any]:
    """Turn key-map pairs into ``egot2.checkpoint`` steps (``Rename``/``Drop``) for ``apply_key_map``."""
    from egot2.checkpoint import Drop, Rename  # imported here: translation must not need the checkpoint module

    return [Drop(pattern) if replacement is None else Rename(pattern, replacement) for pattern, replacement in pairs]


def translator_state_from_official(state_dict: Mapping[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
    """Map the translator keys of an official EgoT2-s checkpoint onto :class:`TaskTranslator` names.

    Args:
        state_dict: official translator keys (``model.`` stripped, sub-model and task keys removed).
        variant: a key of :data:`TRANSLATOR_VARIANTS`.

    Returns:
        A state dict for ``build_translator(variant).load_state_dict(..., strict=True)``.

    Raises:
        ValueError: if a copy of the shared LayerNorm differs from ``ln`` (the file is not what it claims).
    """
    layout = _variant(variant).layout
    for alias in dict.fromkeys(layout.head_norm_aliases):
        if not alias:
            continue
        for suffix in ("weight", "bias"):
            key = f"{alias}.{suffix}"
            if key in state_dict and f"ln.{suffix}" in state_dict and not torch.equal(state_dict[key],
                                                                                      state_dict[f"ln.{suffix}"]):
                raise ValueError(f"'{key}' should be a copy of the shared LayerNorm 'ln.{suffix}' "
                                 f"(variant {variant}) but the values differ")
    return apply_renames(state_dict, official_translator_key_map(variant, "load"))


def translator_state_to_official(state_dict: Mapping[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
    """Export :class:`TaskTranslator` weights under the official key names, in the official order.

    The shared LayerNorm is written again under every official alias (``linear_head.0``, ``linear_head1.0``, ...)
    as the original files do.

    Args:
        state_dict: ``TaskTranslator.state_dict()`` of the variant's configuration.
        variant: a key of :data:`TRANSLATOR_VARIANTS`.

    Returns:
        Official translator keys without the ``model.`` prefix.
    """
    layout = _variant(variant).layout
    renamed = apply_renames(state_dict, official_translator_key_map(variant, "save"))
    alias_before = {official: alias for official, alias in zip(layout.heads, layout.head_norm_aliases) if alias}
    exported: dict[str, torch.Tensor] = {}
    for key, value in renamed.items():
        for official, alias in alias_before.items():
            if key.startswith(official + ".") and f"{alias}.weight" not in exported:
                exported[f"{alias}.weight"] = state_dict["ln.weight"]
                exported[f"{alias}.bias"] = state_dict["ln.bias"]
        exported[key] = value

    def rank(key: str) -> int:
        top = next((name for name in layout.order if key == name or key.startswith(name + ".")), None)
        return layout.order.index(top) if top is not None else len(layout.order)

    return {key: exported[key] for key in sorted(exported, key=rank)}
