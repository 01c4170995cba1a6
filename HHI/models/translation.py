"""EgoT2-s on the HHI tasks: translators that read frozen LAM, TTM and ASD models (spec hhi.md §7).

Data flow (B = batch, T = face frames of a TTM chunk, D = its ASD frames, m = frames of an ASD track, d = width)::

    TTM is the task of interest (logits (B, 2))
      video (B, T, 3, S, S) ── lam_model ── LAM tokens (B, T, 256) ─┐
                            └─ ttm_model ── TTM tokens (B, T, 256) ─┼─ TaskTranslator (ids TTM 0, LAM 1, ASD 2)
      faces (B, D, 112, 112) + mfcc (B, 4D, 13) ── asd_model ─ ASD tokens (B, D, 256) ─┘   mean → LayerNorm → Linear

    ASD is the task of interest (per-frame embeddings (B·m, d); the task's ``lossAV.FC`` turns them into logits)
      order ASD (id 2), TTM (id 0), LAM (id 1) → encoder → the m ASD positions → (B·m, d)

Every model splits into :meth:`HHITranslationModel.extract_tokens` (the frozen backbones: what the feature cache
of :mod:`egot2.features` stores) and :meth:`HHITranslationModel.forward_tokens` (what is trained), so training can
read cached tokens instead of video with identical results.

State-dict layout: a transformer model's ``state_dict()`` is exactly the official EgoT2 layout without the
Lightning ``model.`` prefix -- ``task_embed``, ``lam_model.*``, ``ttm_model.*``, ``asd_model.*``, ``proj_*``,
``pos_embed.pe``, ``transformer_encoder.*``, ``ln.*``, ``linear_head.{0,1}.*`` -- because state-dict hooks rename
the :class:`~egot2.translation.TaskTranslator` keys (``proj.ttm``, ``encoder``, ``head_norm``, ``heads.0``) to the
official names and back. A task that stores the model as ``self.model`` therefore reads the released checkpoints
and writes checkpoints the original code reads, with no converter. The stage-I backbones drop their unused heads
(``last_layer1/2``, TalkNet's ``loss*``), as the original ``LAMBackbone``/``TTMBackbone``/``talkNetModel`` did.

Model names are the original ``--model`` values (:data:`TTM_TRANSLATORS`, :data:`ASD_TRANSLATORS`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from egot2.backbone import FrozenBackbone
from egot2.translation import (
    TaskTranslator,
    apply_renames,
    build_translator,
    official_translator_key_map,
    translator_state_from_official,
    translator_state_to_official,
)
from HHI.models.lstm import BaselineLSTM
from HHI.models.resnetse import ResNetSE
from HHI.models.talknet import TalkNet

__all__ = [
    "SOURCE_DIM",
    "SOURCES",
    "LAMBackbone",
    "TTMBackbone",
    "build_backbone",
    "load_backbone",
    "backbone_checkpoint_steps",
    "HHITranslationModel",
    "TaskFusionMFTransformer2Task",
    "TaskFusionMFTransformer3Task",
    "ASDTaskFusionMFTransformer3Task",
    "FinetuneTTM",
    "LAM2TTM",
    "ASD2TTM",
    "TaskFusionLFLinear3Task",
    "FinetuneASD",
    "LAM2ASD",
    "TTM2ASD",
    "TTM_TRANSLATORS",
    "ASD_TRANSLATORS",
    "TRANSLATORS",
    "DEFAULT_BACKBONE_CHECKPOINTS",
    "build_translation_model",
    "translator_inputs",
    "truncate_tokens",
]

SOURCE_DIM = 256
"""Width of every HHI stage-I token: frame-encoder ``fc2`` (LAM, TTM) and TalkNet ``selfAV`` (ASD)."""

SOURCES = ("lam", "ttm", "asd")

DEFAULT_BACKBONE_CHECKPOINTS = {source: f"pretrained_models/ts_{source}.pth" for source in SOURCES}
"""Repository-relative stage-I files (``--lam_checkpoint`` etc. override them)."""

PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------------------------------------------------
# Stage-I backbones
# ---------------------------------------------------------------------------------------------------------------
class LAMBackbone(BaselineLSTM):
    """The LAM ``BaselineLSTM`` without its head (keys ``base_model.*``, ``lstm.*``), the original ``LAMBackbone``.

    Only :meth:`forward_features` runs in EgoT2 (per-frame ``fc2`` tokens, (B, T, 256)); the LSTM is kept because
    the released stage-II checkpoints contain it.
    """

    def __init__(self, feature_dim: int = SOURCE_DIM, frame_hidden_dim: int = 1000, lstm_layers: int = 2) -> None:
        super().__init__(frame_encoder_name="base_model", readout="centre", feature_dim=feature_dim,
                         frame_hidden_dim=frame_hidden_dim, lstm_layers=lstm_layers)


class TTMBackbone(BaselineLSTM):
    """The TTM ``BaselineLSTM`` without its head (keys ``video_encoder.*``, ``lstm.*``, ``audio_encoder.*``).

    As in the original ``TTMBackbone(middle=True)`` the tokens are the per-frame video features only: the audio
    encoder and the LSTM never run (hhi §3.3), they are kept for the checkpoint layout.
    """

    def __init__(self, feature_dim: int = SOURCE_DIM, frame_hidden_dim: int = 1000, lstm_layers: int = 2,
                 audio_embedding_dim: int = 512, n_mels: int = 64) -> None:
        super().__init__(frame_encoder_name="video_encoder", readout="last", feature_dim=feature_dim,
                         frame_hidden_dim=frame_hidden_dim, lstm_layers=lstm_layers)
        self.audio_encoder = ResNetSE(n_mels=n_mels, embedding_dim=audio_embedding_dim)


_BACKBONE_CLASSES = {"lam": LAMBackbone, "ttm": TTMBackbone, "asd": TalkNet}

# File keys of the stage-I files that the backbones do not have (the heads the translators never use).
_IGNORED_STAGE1_KEYS = {
    "lam": (r"last_layer[12]\.(weight|bias)",),
    "ttm": (r"last_layer[12]\.(weight|bias)",),
    "asd": (r"loss(AV|A|V)\..+",),
}


def build_backbone(source: str) -> nn.Module:
    """A freshly initialised stage-I backbone: ``"lam"`` → :class:`LAMBackbone`, ``"ttm"`` → :class:`TTMBackbone`,
    ``"asd"`` → :class:`~HHI.models.talknet.TalkNet`."""
    if source not in _BACKBONE_CLASSES:
        raise ValueError(f"unknown backbone source {source!r}; known: {list(_BACKBONE_CLASSES)}")
    return _BACKBONE_CLASSES[source]()


def backbone_checkpoint_steps(source: str, state_dict: Mapping[str, Tensor]) -> list:
    """Key-map steps (``egot2.checkpoint``) from a ``ts_<source>.pth`` state dict to the backbone's names.

    LAM/TTM (``{epoch, state_dict, mAP}``): strip DDP's ``module.`` when the first key has it (original rule).
    ASD (flat TalkNet file): strip ``module.`` wherever it is, then the leading ``model.`` of the network keys
    (the loss heads keep their names and are ignored by :func:`load_backbone`).
    """
    from egot2.checkpoint import Rename
    from HHI.models.lstm import social_key_map

    if source in ("lam", "ttm"):
        return social_key_map(state_dict)
    if source == "asd":
        return [Rename(r"(^|\.)module\.", r"\1"), Rename(r"^model\.", "")]
    raise ValueError(f"unknown backbone source {source!r}; known: {list(_BACKBONE_CLASSES)}")


def load_backbone(source: str, path: PathLike, flag: str | None = None) -> nn.Module:
    """Build a stage-I backbone and load ``pretrained_models/ts_<source>.pth`` (or ``path``) into it strictly.

    The only file keys allowed to be left out are the heads the backbone lacks (``last_layer1/2.*`` for LAM and
    TTM, ``lossAV/lossA/lossV.*`` for ASD), exactly as the original non-strict loads reported them.

    Args:
        source: "lam", "ttm" or "asd".
        path: checkpoint file; a relative path is taken from the repository root.
        flag: command-line flag that set the path, named in the error when the file is missing.

    Raises:
        FileNotFoundError: the file does not exist (the message says how to make or override it).
        ValueError: unreadable file, or keys/shapes that do not fit (``CheckpointMismatchError`` lists them).
    """
    from egot2.checkpoint import apply_key_map, extract_state_dict, load_file, load_state_dict_exact
    from egot2.config import repo_path

    resolved = repo_path(path)
    if not resolved.is_file():
        flag = flag or f"--{source}_checkpoint"
        raise FileNotFoundError(
            f"{flag}: stage-I {source.upper()} checkpoint {resolved} not found. Train it with "
            f"scripts/run_{source}.py (it exports ts_{source}.pth into its log folder), download the official one "
            f"into pretrained_models/, or point {flag} at the file")
    backbone = build_backbone(source)
    state_dict = extract_state_dict(load_file(resolved), source=str(resolved))
    state_dict = apply_key_map(state_dict, backbone_checkpoint_steps(source, state_dict))
    load_state_dict_exact(backbone, state_dict, expected_unexpected=_IGNORED_STAGE1_KEYS[source],
                          source=str(resolved))
    return backbone


def _run_backbone(module: nn.Module, *inputs: Tensor) -> Tensor:
    # A trainable TTM backbone (--nofreeze) is a plain module; frozen ones are FrozenBackbone wrappers.
    if isinstance(module, FrozenBackbone):
        return module(*inputs)
    return module.forward_features(*inputs)


def truncate_tokens(per_sample: Sequence[Tensor]) -> Tensor:
    """Stack per-sample tokens [1, N_i, C] (or [N_i, C]) into [B, min N_i, C], cutting the tails.

    The translator has no padding mask, so, as the original collate functions do with the inputs, every sample
    of a batch is cut to the shortest one.
    """
    rows = [tokens[0] if tokens.dim() == 3 else tokens for tokens in per_sample]
    if not rows:
        raise ValueError("truncate_tokens: empty batch")
    shortest = min(row.shape[0] for row in rows)
    return torch.stack([row[:shortest] for row in rows])


# ---------------------------------------------------------------------------------------------------------------
# Translation models
# ---------------------------------------------------------------------------------------------------------------
Frames = Union[Tensor, Sequence[Tensor]]


class HHITranslationModel(nn.Module):
    """Base of every EgoT2-s HHI model: frozen backbones + a trainable head over their tokens.

    Subclasses set ``task`` ("ttm": logits (B, 2); "asd": per-frame embeddings (B·m, ``embedding_dim``)),
    ``sources`` (the backbones whose tokens they read) and implement :meth:`forward_tokens`.

    Args:
        lam_model, ttm_model, asd_model: stage-I backbones (modules with ``forward_features``); exactly those in
            ``sources`` must be given.
        freeze_ttm: ``False`` (``--nofreeze``) trains the TTM frame encoder with the translator; its unused LSTM
            and audio encoder stay frozen.
        train_mode_backbones: reproduce the original's train-mode backbones (BatchNorm statistics drift, TalkNet
            dropout active; hhi §7.4). Off by default.
    """

    task: str = ""
    sources: tuple[str, ...] = ()
    has_attention = False

    def __init__(self, *, lam_model: nn.Module | None = None, ttm_model: nn.Module | None = None,
                 asd_model: nn.Module | None = None, freeze_ttm: bool = True,
                 train_mode_backbones: bool = False) -> None:
        super().__init__()
        given = {"lam": lam_model, "ttm": ttm_model, "asd": asd_model}
        name = type(self).__name__
        for source, module in given.items():
            if (module is None) == (source in self.sources):
                need = "needs" if source in self.sources else "does not use"
                article = "an" if source == "asd" else "a"
                raise ValueError(f"{name} {need} {article} {source.upper()} backbone ({source}_model)")
        self.freeze_ttm = bool(freeze_ttm) or "ttm" not in self.sources
        self.train_mode_backbones = bool(train_mode_backbones)
        for source in SOURCES:
            module = given[source]
            if module is None:
                continue
            if source == "ttm" and not self.freeze_ttm:
                # Only the frame encoder produces the tokens; leaving the LSTM and audio encoder trainable would
                # hand DDP parameters that never receive a gradient.
                for child_name, child in module.named_children():
                    if child_name != "video_encoder":
                        child.requires_grad_(False)
                setattr(self, f"{source}_model", module)
            else:
                setattr(self, f"{source}_model", FrozenBackbone(module, train_mode=self.train_mode_backbones))

    # ------------------------------------------------------------------------------------------- tokens
    @property
    def cacheable(self) -> bool:
        """Whether the backbones' tokens are constant during training (frozen, eval mode), so they can be cached."""
        return self.freeze_ttm and not self.train_mode_backbones

    def backbone(self, source: str) -> nn.Module:
        """The backbone module of ``source`` (a :class:`FrozenBackbone` unless TTM is trainable)."""
        if source not in self.sources:
            raise ValueError(f"{type(self).__name__} has no {source.upper()} backbone (sources {self.sources})")
        return getattr(self, f"{source}_model")

    def extract_tokens(self, video: Tensor | None = None, faces: Frames | None = None,
                       mfcc: Frames | None = None) -> dict[str, Tensor]:
        """Run the backbones this model reads.

        Args:
            video: (B, T, 3, S, S) ImageNet-normalised RGB face crops (LAM and TTM backbones).
            faces: (B, D, 112, 112) grey TalkNet faces, values 0..255, or a list of B tensors (D_i, 112, 112)
                (ASD backbone). A list is encoded sample by sample over its full length and the tokens are then
                cut to the shortest sample, so a sample's tokens never depend on the rest of its batch (what the
                feature cache needs); a tensor is encoded in one call (TalkNet's own batch behaviour).
            mfcc: (B, 4D, 13) MFCC rows, or a list of B tensors (4·D_i, 13), matching ``faces``.

        Returns:
            ``{source: Tensor[B, N, 256]}`` for every source of the model.
        """
        return {source: self.extract_tokens_of(source, video=video, faces=faces, mfcc=mfcc)
                for source in self.sources}

    def extract_tokens_of(self, source: str, video: Tensor | None = None, faces: Frames | None = None,
                          mfcc: Frames | None = None) -> Tensor:
        """Tokens [B, N, 256] of one backbone (inputs as :meth:`extract_tokens`)."""
        if source in ("lam", "ttm"):
            if video is None:
                raise ValueError(f"{type(self).__name__}: the {source.upper()} backbone needs 'video' "
                                 "(B, T, 3, S, S)")
            return _run_backbone(self.backbone(source), video)
        return self._asd_tokens(faces, mfcc)

    def _asd_tokens(self, faces: Frames | None, mfcc: Frames | None) -> Tensor:
        if faces is None or mfcc is None:
            raise ValueError(f"{type(self).__name__}: the ASD backbone needs 'faces' (B, D, 112, 112) and 'mfcc' "
                             "(B, 4D, 13); TTM runs need the paired data (--two_loader)")
        backbone = self.backbone("asd")
        if isinstance(faces, Tensor):
            return _run_backbone(backbone, faces, mfcc)
        if len(faces) != len(mfcc):
            raise ValueError(f"'faces' has {len(faces)} samples but 'mfcc' {len(mfcc)}")
        return truncate_tokens([_run_backbone(backbone, face[None], rows[None]) for face, rows in zip(faces, mfcc)])

    def forward_tokens(self, tokens: Mapping[str, Tensor], return_attention: bool = False) -> Any:
        """The trainable part, on backbone tokens ``{source: Tensor[B, N, 256]}``; see the subclasses."""
        raise NotImplementedError

    def forward(self, video: Tensor | None = None, audio: Tensor | None = None, faces: Frames | None = None,
                mfcc: Frames | None = None, tokens: Mapping[str, Tensor] | None = None,
                return_attention: bool = False) -> Any:
        """Backbones (unless ``tokens`` are given, e.g. from the feature cache), then :meth:`forward_tokens`.

        Args:
            video: (B, T, 3, S, S) RGB face crops.
            audio: the TTM waveform (B, A); accepted for the TTM call convention ``model(video, audio)`` and unused,
                as in the original translators (the TTM tokens are visual only, hhi §3.3).
            faces, mfcc: ASD inputs, see :meth:`extract_tokens`.
            tokens: pre-computed backbone tokens; the inputs are then ignored.
            return_attention: also return the attention mass per source [B, S] (transformer models only).

        Returns:
            TTM models: logits (B, 2). ASD models: embeddings (B·m, ``embedding_dim``). With ``return_attention``
            a tuple ``(output, mass)``.
        """
        if tokens is None:
            tokens = self.extract_tokens(video=video, faces=faces, mfcc=mfcc)
        missing = [source for source in self.sources if source not in tokens]
        if missing:
            raise ValueError(f"{type(self).__name__} needs tokens of {list(self.sources)}; missing {missing}")
        return self.forward_tokens({source: tokens[source] for source in self.sources},
                                   return_attention=return_attention)


# Official top-level names of the translator part (everything else under the model is a backbone).
_OFFICIAL_TRANSLATOR_MODULES = ("task_embed", "proj_lam", "proj_ttm", "proj_asd", "pos_embed",
                                "transformer_encoder", "ln", "linear_head")
_OFFICIAL_ORDER = ("task_embed", "lam_model", "ttm_model", "asd_model", "proj_lam", "proj_ttm", "proj_asd",
                   "pos_embed", "transformer_encoder", "ln", "linear_head")
_TRANSLATOR = "translator"


def _top_name(key: str) -> str:
    return key.split(".", 1)[0]


def _official_rank(key: str) -> int:
    top = _top_name(key)
    return _OFFICIAL_ORDER.index(top) if top in _OFFICIAL_ORDER else len(_OFFICIAL_ORDER)


class _TransformerTranslation(HHITranslationModel):
    """A :class:`TaskTranslator` configuration of :data:`egot2.translation.TRANSLATOR_VARIANTS` over the tokens."""

    variant = ""
    has_attention = True

    def __init__(self, *, hidden_dim: int = 128, num_layers: int = 1, num_heads: int = 4, dropout: float = 0.1,
                 lam_model: nn.Module | None = None, ttm_model: nn.Module | None = None,
                 asd_model: nn.Module | None = None, freeze_ttm: bool = True,
                 train_mode_backbones: bool = False) -> None:
        super().__init__(lam_model=lam_model, ttm_model=ttm_model, asd_model=asd_model, freeze_ttm=freeze_ttm,
                         train_mode_backbones=train_mode_backbones)
        self.hidden_dim = int(hidden_dim)
        self.translator: TaskTranslator = build_translator(self.variant, dim=hidden_dim, num_layers=num_layers,
                                                           num_heads=num_heads, dropout=dropout)
        if set(self.translator.source_names) != set(self.sources):
            raise AssertionError(f"variant {self.variant} reads {self.translator.source_names}, "
                                 f"the model declares {self.sources}")
        self.register_state_dict_post_hook(_export_official_names)
        self.register_load_state_dict_pre_hook(_import_official_names)
        self.register_load_state_dict_post_hook(_report_official_names)
        self._load_prefix = ""

    @property
    def source_order(self) -> list[str]:
        """Sources in the order the translator concatenates them."""
        return list(self.translator.source_names)


def _export_official_names(module: _TransformerTranslation, state_dict: dict, prefix: str,
                           local_metadata: dict) -> None:
    """State-dict hook: ``translator.*`` → official names, then the official module order."""
    inner = prefix + _TRANSLATOR + "."
    own_keys = [key for key in state_dict if key.startswith(prefix)]
    translator_state = {key[len(inner):]: state_dict[key] for key in own_keys if key.startswith(inner)}
    others = {key[len(prefix):]: state_dict[key] for key in own_keys if not key.startswith(inner)}
    for key in own_keys:
        del state_dict[key]
    merged = {**others, **translator_state_to_official(translator_state, module.variant)}
    for key in sorted(merged, key=_official_rank):  # sorted() is stable: each module keeps its inner order
        state_dict[prefix + key] = merged[key]


def _import_official_names(module: _TransformerTranslation, state_dict: dict, prefix: str, local_metadata: dict,
                           strict: bool, missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    """Load pre-hook: official translator keys → ``translator.*`` (backbone keys are left alone)."""
    module._load_prefix = prefix
    official = [key for key in state_dict
                if key.startswith(prefix) and _top_name(key[len(prefix):]) in _OFFICIAL_TRANSLATOR_MODULES]
    translator_state = {key[len(prefix):]: state_dict.pop(key) for key in official}
    for key, value in translator_state_from_official(translator_state, module.variant).items():
        state_dict[prefix + _TRANSLATOR + "." + key] = value


def _report_official_names(module: _TransformerTranslation, incompatible_keys: Any) -> None:
    """Load post-hook: report missing/unexpected translator keys under their official names."""
    inner = module._load_prefix + _TRANSLATOR + "."
    save_map = official_translator_key_map(module.variant, "save")
    for keys in (incompatible_keys.missing_keys, incompatible_keys.unexpected_keys):
        for index, key in enumerate(keys):
            if key.startswith(inner):
                official = next(iter(apply_renames({key[len(inner):]: None}, save_map)))
                keys[index] = module._load_prefix + official


class TaskFusionMFTransformer2Task(_TransformerTranslation):
    """TTM from TTM + LAM tokens of the same face frames (ids TTM 0, LAM 1): sequence 2T → mean → (B, 2)."""

    task = "ttm"
    sources = ("lam", "ttm")
    variant = "ttm_2task"

    def forward_tokens(self, tokens: Mapping[str, Tensor], return_attention: bool = False) -> Any:
        """``{ttm, lam: (B, T, 256)}`` → logits (B, 2) (and the attention mass (B, 2) in source order TTM, LAM)."""
        return self.translator(dict(tokens), return_attention=return_attention)


class TaskFusionMFTransformer3Task(TaskFusionMFTransformer2Task):
    """TTM from TTM, LAM and ASD tokens (ids 0, 1, 2): sequence T + T + D → mean → (B, 2); needs paired data."""

    sources = ("lam", "ttm", "asd")
    variant = "ttm_3task"


class ASDTaskFusionMFTransformer3Task(_TransformerTranslation):
    """ASD from ASD, TTM and LAM tokens (ids 2, 0, 1), read out at the ASD positions: (B·m, d).

    Registered as ``TaskFusionMFTransformer3Task`` for ``run_asd.py``. All three backbones are frozen; the
    translator's ``linear_head`` exists only for the checkpoint layout (the task's ``lossAV.FC`` classifies).
    """

    task = "asd"
    sources = ("lam", "ttm", "asd")
    variant = "asd_3task"

    def __init__(self, *, hidden_dim: int = 256, num_layers: int = 1, num_heads: int = 4, dropout: float = 0.1,
                 lam_model: nn.Module | None = None, ttm_model: nn.Module | None = None,
                 asd_model: nn.Module | None = None, freeze_ttm: bool = True,
                 train_mode_backbones: bool = False) -> None:
        if not freeze_ttm:
            raise ValueError("--nofreeze is a TTM option: the ASD translators keep every backbone frozen")
        super().__init__(hidden_dim=hidden_dim, num_layers=num_layers, num_heads=num_heads, dropout=dropout,
                         lam_model=lam_model, ttm_model=ttm_model, asd_model=asd_model,
                         train_mode_backbones=train_mode_backbones)

    @property
    def embedding_dim(self) -> int:
        """Width of the per-frame embeddings (the ``lossAV.FC`` input)."""
        return self.hidden_dim

    def forward_tokens(self, tokens: Mapping[str, Tensor], return_attention: bool = False) -> Any:
        """``{asd, ttm, lam: (B, m, 256)}`` → embeddings (B·m, d) at the ASD positions (and the mass (B, 3))."""
        lengths = {source: value.shape[1] for source, value in tokens.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"the ASD translator needs the same number of frames from every source, got {lengths}")
        output = self.translator(dict(tokens), return_attention=return_attention)
        encoded, mass = output if return_attention else (output, None)
        embeddings = encoded.reshape(-1, encoded.shape[-1])
        return (embeddings, mass) if return_attention else embeddings


class _MeanProbe(HHITranslationModel):
    """MLP on one source's time-averaged tokens: Linear 256→hidden, ReLU, Linear →hidden2, ReLU, Linear →2."""

    task = "ttm"

    def __init__(self, *, hidden_dim: int = 256, hidden_dim2: int = 512, lam_model: nn.Module | None = None,
                 ttm_model: nn.Module | None = None, asd_model: nn.Module | None = None, freeze_ttm: bool = True,
                 train_mode_backbones: bool = False) -> None:
        super().__init__(lam_model=lam_model, ttm_model=ttm_model, asd_model=asd_model, freeze_ttm=freeze_ttm,
                         train_mode_backbones=train_mode_backbones)
        self.linear_head = nn.Sequential(nn.Linear(SOURCE_DIM, hidden_dim), nn.ReLU(inplace=True),
                                         nn.Linear(hidden_dim, hidden_dim2), nn.ReLU(inplace=True),
                                         nn.Linear(hidden_dim2, 2))

    def forward_tokens(self, tokens: Mapping[str, Tensor], return_attention: bool = False) -> Tensor:
        """``{source: (B, N, 256)}`` → logits (B, 2)."""
        if return_attention:
            raise ValueError(f"{type(self).__name__} has no attention to return")
        return self.linear_head(tokens[self.sources[0]].mean(dim=1))


class FinetuneTTM(_MeanProbe):
    """MLP probe on the frozen TTM tokens (the original's name; it does not fine-tune the backbone by default)."""

    sources = ("ttm",)


class LAM2TTM(_MeanProbe):
    """TTM from the LAM tokens alone (the original crashed in its constructor without ``--nofreeze``)."""

    sources = ("lam",)


class ASD2TTM(_MeanProbe):
    """TTM from the ASD tokens alone; needs paired data (the original also needed ``--nofreeze`` to start)."""

    sources = ("asd",)


class TaskFusionLFLinear3Task(HHITranslationModel):
    """Late fusion: per-source mean tokens → ``proj_*`` (256→d) → concat (B, 3d) → LayerNorm → MLP → (B, 2)."""

    task = "ttm"
    sources = ("lam", "ttm", "asd")
    _order = ("ttm", "lam", "asd")

    def __init__(self, *, hidden_dim: int = 128, hidden_dim2: int = 512, lam_model: nn.Module | None = None,
                 ttm_model: nn.Module | None = None, asd_model: nn.Module | None = None, freeze_ttm: bool = True,
                 train_mode_backbones: bool = False) -> None:
        super().__init__(lam_model=lam_model, ttm_model=ttm_model, asd_model=asd_model, freeze_ttm=freeze_ttm,
                         train_mode_backbones=train_mode_backbones)
        self.proj_lam = nn.Linear(SOURCE_DIM, hidden_dim)
        self.proj_ttm = nn.Linear(SOURCE_DIM, hidden_dim)
        self.proj_asd = nn.Linear(SOURCE_DIM, hidden_dim)
        self.linear_head = nn.Sequential(nn.LayerNorm(3 * hidden_dim), nn.Linear(3 * hidden_dim, hidden_dim2),
                                         nn.ReLU(inplace=True), nn.Linear(hidden_dim2, 2))

    def forward_tokens(self, tokens: Mapping[str, Tensor], return_attention: bool = False) -> Tensor:
        """``{ttm, lam, asd: (B, N_s, 256)}`` → logits (B, 2)."""
        if return_attention:
            raise ValueError("TaskFusionLFLinear3Task has no attention to return")
        fused = torch.cat([getattr(self, f"proj_{source}")(tokens[source].mean(dim=1)) for source in self._order],
                          dim=1)
        return self.linear_head(fused)


class _FrameProbe(HHITranslationModel):
    """ASD baseline: ReLU(Linear 256→hidden) on one source's per-frame tokens → (B·m, hidden)."""

    task = "asd"

    def __init__(self, *, hidden_dim: int = 256, lam_model: nn.Module | None = None,
                 ttm_model: nn.Module | None = None, asd_model: nn.Module | None = None, freeze_ttm: bool = True,
                 train_mode_backbones: bool = False) -> None:
        if not freeze_ttm:
            raise ValueError("--nofreeze is a TTM option: the ASD translators keep every backbone frozen")
        super().__init__(lam_model=lam_model, ttm_model=ttm_model, asd_model=asd_model,
                         train_mode_backbones=train_mode_backbones)
        self.hidden_dim = int(hidden_dim)
        self.linear_head = nn.Sequential(nn.Linear(SOURCE_DIM, hidden_dim), nn.ReLU(inplace=True))

    @property
    def embedding_dim(self) -> int:
        """Width of the per-frame embeddings (the ``lossAV.FC`` input)."""
        return self.hidden_dim

    def forward_tokens(self, tokens: Mapping[str, Tensor], return_attention: bool = False) -> Tensor:
        """``{source: (B, m, 256)}`` → embeddings (B·m, hidden)."""
        if return_attention:
            raise ValueError(f"{type(self).__name__} has no attention to return")
        frames = tokens[self.sources[0]]
        return self.linear_head(frames.reshape(-1, frames.shape[-1]))


class FinetuneASD(_FrameProbe):
    """ASD from the frozen TalkNet audio-visual tokens (a linear probe with ReLU)."""

    sources = ("asd",)


class LAM2ASD(_FrameProbe):
    """ASD from the LAM tokens of the tight RGB face crops."""

    sources = ("lam",)


class TTM2ASD(_FrameProbe):
    """ASD from the TTM tokens of the tight RGB face crops."""

    sources = ("ttm",)


TTM_TRANSLATORS: dict[str, type[HHITranslationModel]] = {
    "TaskFusionMFTransformer2Task": TaskFusionMFTransformer2Task,
    "TaskFusionMFTransformer3Task": TaskFusionMFTransformer3Task,
    "FinetuneTTM": FinetuneTTM,
    "LAM2TTM": LAM2TTM,
    "ASD2TTM": ASD2TTM,
    "TaskFusionLFLinear3Task": TaskFusionLFLinear3Task,
}
"""``run_ttm.py --model`` names of the EgoT2-s TTM models."""

ASD_TRANSLATORS: dict[str, type[HHITranslationModel]] = {
    "TaskFusionMFTransformer3Task": ASDTaskFusionMFTransformer3Task,
    "FinetuneASD": FinetuneASD,
    "LAM2ASD": LAM2ASD,
    "TTM2ASD": TTM2ASD,
}
"""``run_asd.py --model`` names of the EgoT2-s ASD models (they imply the paired ASD + RGB data)."""

TRANSLATORS = {"ttm": TTM_TRANSLATORS, "asd": ASD_TRANSLATORS}


def translator_inputs(batch: Mapping[str, Any]) -> tuple:
    """Positional model inputs of a batch: ``(video, audio, faces, mfcc)``, or ``(None,) * 4 + (tokens,)`` when the
    batch carries cached backbone tokens (``batch["tokens"]``, see :mod:`egot2.features`)."""
    if "tokens" in batch:
        return None, None, None, None, batch["tokens"]
    return batch.get("video"), batch.get("audio"), batch.get("faces"), batch.get("mfcc")


def build_translation_model(
    task: str,
    name: str,
    *,
    hidden_dim: int | None = None,
    hidden_dim2: int = 512,
    num_layers: int = 1,
    num_heads: int = 4,
    dropout: float = 0.1,
    nofreeze: bool = False,
    train_mode_backbones: bool = False,
    checkpoints: Mapping[str, Optional[PathLike]] | None = None,
    load_backbones: bool = True,
) -> HHITranslationModel:
    """Build an EgoT2-s HHI model by its original ``--model`` name, with its stage-I backbones.

    Args:
        task: "ttm" or "asd" (the task of interest; ``TaskFusionMFTransformer3Task`` exists for both).
        name: a key of :data:`TTM_TRANSLATORS` / :data:`ASD_TRANSLATORS`.
        hidden_dim: translator width d (``--hidden_dim``); None = the original default (TTM 256 for the probes and
            the transformers as in the TTM config, ASD 256).
        hidden_dim2: second MLP width of the probes and the late-fusion model (``--hidden_dim2``).
        num_layers, num_heads, dropout: transformer settings (``--num_layers``, ``--num_heads``, ``--dropout``).
        nofreeze: train the TTM frame encoder too (``--nofreeze``; TTM models with a TTM backbone).
        train_mode_backbones: reproduce the original train-mode backbones (``--train_mode_backbones``).
        checkpoints: ``{source: path}`` of the stage-I files (``--lam_checkpoint`` ...); missing entries use
            :data:`DEFAULT_BACKBONE_CHECKPOINTS`.
        load_backbones: ``False`` leaves the backbones randomly initialised, for when an EgoT2 checkpoint will
            overwrite every tensor anyway (``--eval/--submit --ckpt``): the stage-I files need not exist then.

    Raises:
        ValueError: unknown task or name, or options the model does not support.
        FileNotFoundError: a needed stage-I file is missing (names the flag).
    """
    if task not in TRANSLATORS:
        raise ValueError(f"unknown task {task!r} for the EgoT2-s HHI models; known: {list(TRANSLATORS)}")
    registry = TRANSLATORS[task]
    if name not in registry:
        raise ValueError(f"--model {name!r} is not an EgoT2-s {task.upper()} model; known: {sorted(registry)}")
    model_class = registry[name]
    paths = {**DEFAULT_BACKBONE_CHECKPOINTS, **{k: v for k, v in (checkpoints or {}).items() if v}}
    backbones = {}
    for source in model_class.sources:
        backbones[f"{source}_model"] = (load_backbone(source, paths[source]) if load_backbones
                                        else build_backbone(source))
    kwargs: dict[str, Any] = dict(backbones, train_mode_backbones=train_mode_backbones)
    if nofreeze:
        if task == "asd":
            raise ValueError("--nofreeze is a TTM option: the ASD translators keep every backbone frozen")
        kwargs["freeze_ttm"] = False
    if hidden_dim is None:
        hidden_dim = 256
    if issubclass(model_class, _TransformerTranslation):
        kwargs.update(hidden_dim=hidden_dim, num_layers=num_layers, num_heads=num_heads, dropout=dropout)
    elif issubclass(model_class, (_MeanProbe, TaskFusionLFLinear3Task)):
        kwargs.update(hidden_dim=hidden_dim, hidden_dim2=hidden_dim2)
    else:
        kwargs.update(hidden_dim=hidden_dim)
    return model_class(**kwargs)

