"""Active speaker detection, stage I (hhi spec §4.3–4.6): TalkNet trained as EgoT2's ``ActiveSpeakerDetection``.

``ActiveSpeakerTask`` keeps the official layout: the network is ``self.model`` (``model.*``) and the three loss heads
are ``self.lossAV``, ``self.lossA``, ``self.lossV`` (``loss*.FC.*`` and the class-weight buffers
``loss*.criterion.weight``), so the task's ``state_dict()`` *is* the flat TalkNet file (``ts_asd.pth``,
``pretrain_AVA.model``) and the original Lightning checkpoints of this task load strictly.

Training: L = L_AV + 0.4 (L_A + L_V), class weights [1, 4]; Adam 1e-4; learning rate x0.95 per epoch (the Ego4D
TalkNet trainer) or, with ``lr_decay_per_step``, per optimisation step as EgoT2 did. Validation records every frame
and logs, over the whole split and across processes, ``val_acc`` (frame accuracy as EgoT2 logs it: speaking iff
P(speaking) > 0.5, a tie counts as not speaking) and ``val_mAP`` (AP of the speaking class).

``ASD_MODELS`` maps ``--model`` names to networks (``HHI.cli.ModelEntry`` rows); the EgoT2-s ASD translators add
their rows there.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from pytorch_lightning.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler

from egot2.checkpoint import extract_state_dict, load_file, save_flat_checkpoint
from egot2.engine import OptimSettings, TaskModule
from HHI.cli import ModelEntry, optim_settings, resolve_model
from HHI.data.asd import ActiveSpeakerDataset, DynamicBatchSampler, collate_active_speaker
from HHI.metrics import asd_frame_accuracy, asd_map
from HHI.models.talknet import TalkNet, TalkNetLossHead, load_talknet_state_dict
from HHI.models.translation import ASD_TRANSLATORS, translator_inputs

__all__ = [
    "ASD_MODELS",
    "ActiveSpeakerTask",
    "asd_optim_settings",
    "build_talknet",
    "build_asd_task",
    "build_asd_dataset",
    "asd_dataloader",
    "load_asd_weights",
    "ExportFlatCheckpoint",
]


def build_talknet(cfg: Any) -> nn.Module:
    """TalkNet (random init; ``--init_from_ava`` / ``--finetune`` weights are loaded by :func:`build_asd_task`)."""
    return TalkNet(attention_dropout=float(cfg.ASD.ATTENTION_DROPOUT), mix_tracks=bool(cfg.ASD.MIX_TRACKS))


def talknet_inputs(batch: dict) -> tuple:
    """Model inputs of an ASD batch: ``(faces [B, m, 112, 112], mfcc [B, 4m, 13])``."""
    return batch["faces"], batch["mfcc"]


#: ``--model`` name -> network. ``stage_one`` rows are TalkNet-like networks trained with the three TalkNet heads
#: and exported as ``ts_asd.pth``.
ASD_MODELS: dict[str, ModelEntry] = {
    "talkNetModel": ModelEntry(build=build_talknet, inputs=talknet_inputs, stage_one=True),
    # EgoT2-s translators (HHI.models.translation); scripts/run_asd.py runs them through
    # HHI.tasks.translation.asd_translation_run, on the paired ASD + RGB data.
    **{name: ModelEntry(build="HHI.tasks.translation:build_asd_translator_model", inputs=translator_inputs)
       for name in ASD_TRANSLATORS},
}


def asd_optim_settings(lr: float = 1e-4, lr_decay: float = 0.95, decay: bool = True,
                       lr_decay_per_step: bool = False) -> OptimSettings:
    """Adam without weight decay; lr x ``lr_decay`` every epoch, or every step with ``lr_decay_per_step``."""
    return OptimSettings(method="adam", lr=lr, weight_decay=0.0, lr_policy="step_decay" if decay else "constant",
                         gamma=lr_decay, step_size=1, interval="step" if lr_decay_per_step else "epoch")


class ActiveSpeakerTask(TaskModule):
    """TalkNet with its three heads, trained on dynamic batches; whole-split frame accuracy and mAP.

    Args:
        model: the network, returning ``av_embedding`` (N, 256), ``audio_embedding`` (N, 128) and
            ``visual_embedding`` (N, 128) for N = B·m frames (:class:`HHI.models.talknet.TalkNet`).
        class_weights: cross-entropy weights (not speaking, speaking) of all three heads; official [1, 4].
        aux_weight: weight of the audio-only and visual-only losses (0.4).
        optim: optimiser settings; default :func:`asd_optim_settings` (Adam 1e-4, x0.95 per epoch).
        finetune: freeze the network and train only the heads. The frozen network stays in eval mode (BatchNorm
            statistics fixed, no dropout) and runs without gradients; the original left it in train mode.

    Batches (:func:`HHI.data.asd.collate_active_speaker`): ``faces`` (B, m, 112, 112), ``mfcc`` (B, 4m, 13),
    ``labels`` (B, m), ``track_id``, ``start_frame``, ``index`` (B,). A batch with B = 0 or m = 0 (every track lacked
    readable faces) is skipped in training and ignored in validation.
    """

    def __init__(self, model: Optional[nn.Module] = None, class_weights: Sequence[float] = (1.0, 4.0),
                 aux_weight: float = 0.4, optim: Optional[OptimSettings] = None, finetune: bool = False) -> None:
        super().__init__(optim or asd_optim_settings(), id_field="frame_id")
        self.model = model if model is not None else TalkNet()
        self.lossAV = TalkNetLossHead(256, class_weights)
        self.lossA = TalkNetLossHead(128, class_weights)
        self.lossV = TalkNetLossHead(128, class_weights)
        self.aux_weight = float(aux_weight)
        self.finetune = bool(finetune)
        if self.finetune:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> "ActiveSpeakerTask":
        super().train(mode)
        if self.finetune:
            self.model.eval()
        return self

    def forward(self, faces: torch.Tensor, mfcc: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-frame logits.

        Args:
            faces: (B, m, 112, 112) grey faces, 0..255.
            mfcc: (B, 4m, 13) MFCC rows.

        Returns:
            ``av_logits``, ``audio_logits``, ``visual_logits``, each (B·m, 2), rows track by track.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.finetune):
            embeddings = self.model(faces, mfcc)
        return {
            "av_logits": self.lossAV(embeddings["av_embedding"]),
            "audio_logits": self.lossA(embeddings["audio_embedding"]),
            "visual_logits": self.lossV(embeddings["visual_embedding"]),
        }

    def loss(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss`` = L_AV + aux (L_A + L_V), plus the three terms (``loss_av``, ``loss_a``, ``loss_v``)."""
        terms = {
            "loss_av": self.lossAV.loss(outputs["av_logits"], labels),
            "loss_a": self.lossA.loss(outputs["audio_logits"], labels),
            "loss_v": self.lossV.loss(outputs["visual_logits"], labels),
        }
        terms["loss"] = terms["loss_av"] + self.aux_weight * (terms["loss_a"] + terms["loss_v"])
        return terms

    @staticmethod
    def _is_empty(batch: dict) -> bool:
        return batch["faces"].shape[0] == 0 or batch["faces"].shape[1] == 0

    def training_step(self, batch: dict, batch_idx: int) -> Optional[torch.Tensor]:
        if self._is_empty(batch):
            return None
        terms = self.loss(self(batch["faces"], batch["mfcc"]), batch["labels"])
        frames = batch["labels"].numel()
        self.log("train_loss", terms["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=frames)
        for name in ("loss_av", "loss_a", "loss_v"):
            self.log(f"train_{name}", terms[name], on_step=False, on_epoch=True, batch_size=frames)
        return terms["loss"]

    def _record_frames(self, split: str, batch: dict) -> None:
        if self._is_empty(batch):
            return
        av_logits = self(batch["faces"], batch["mfcc"])["av_logits"].float()
        tracks, length = batch["labels"].shape
        # (line index, position) identifies a frame across processes (DDP pads shards with repeated lines).
        frame_id = torch.stack([batch["index"].repeat_interleave(length),
                                torch.arange(length, device=batch["index"].device).repeat(tracks)], dim=1)
        self.record(split, frame_id=frame_id, logits=av_logits, label=batch["labels"].reshape(-1))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._record_frames("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._record_frames("test", batch)

    def compute_metrics(self, split: str, records: dict[str, Any]) -> dict[str, float]:
        speaking = torch.softmax(records["logits"], dim=1)[:, 1]
        return {"acc": asd_frame_accuracy(records["logits"], records["label"]),
                "mAP": asd_map(speaking, records["label"])}


# ---------------------------------------------------------------------------------------------------------------
# Building from a config
# ---------------------------------------------------------------------------------------------------------------


def load_asd_weights(module: nn.Module, path: Union[str, os.PathLike], layout: str = "flat") -> None:
    """Load an ASD checkpoint strictly: a flat TalkNet file (``ts_asd.pth``, ``pretrain_AVA.model``) or a Lightning
    checkpoint of :class:`ActiveSpeakerTask` (ours or the original's; same keys under ``state_dict``).

    ``module.`` prefixes (DDP, DataParallel) are removed; only the class-weight buffers may be absent (the AVA file
    has none).

    Args:
        module: the task (``layout="flat"``), a :class:`TalkNet` (``"network"``) or the heads (``"heads"``).
        path: the file; a relative path is taken from the repository root.
        layout: see :func:`HHI.models.talknet.load_talknet_state_dict`.

    Raises:
        FileNotFoundError: no such file. ``egot2.checkpoint.CheckpointMismatchError``: keys or shapes do not fit.
    """
    from egot2.config import repo_path  # noqa: PLC0415

    path = repo_path(path)
    state_dict = extract_state_dict(load_file(path), source=str(path))
    load_talknet_state_dict(module, state_dict, source=str(path), layout=layout)


def build_asd_task(cfg: Any) -> ActiveSpeakerTask:
    """:class:`ActiveSpeakerTask` for a merged ASD config.

    Network ``HHI.MODEL`` from :data:`ASD_MODELS`; ``ASD.INIT_FROM_AVA`` loads ``ASD.AVA_CHECKPOINT`` (network and
    heads); ``ASD.FINETUNE`` loads the network from ``HHI.ASD_CHECKPOINT`` and freezes it; for evaluation
    (``TEST.ENABLE``) ``CHECKPOINT.FILE_PATH`` is checked and loaded strictly. Optimiser from ``SOLVER.*`` with
    ``ASD.NODECAY`` / ``ASD.LR_DECAY_PER_STEP``.

    Raises:
        ValueError: an unknown model, or a translator model, which needs ``--two_loader`` and its own task.
    """
    entry = resolve_model(ASD_MODELS, cfg.HHI.MODEL, "ASD")
    if not entry.stage_one or cfg.HHI.TWO_LOADER:
        raise ValueError(f"ASD model {cfg.HHI.MODEL!r} with two_loader={bool(cfg.HHI.TWO_LOADER)}: the TalkNet task "
                         f"trains stage-I models ({sorted(n for n, e in ASD_MODELS.items() if e.stage_one)}) on the "
                         f"plain ASD loader, without --two_loader")
    optim = optim_settings(cfg)
    if cfg.ASD.NODECAY:
        optim = dataclasses.replace(optim, lr_policy="constant")
    if cfg.ASD.LR_DECAY_PER_STEP:
        optim = dataclasses.replace(optim, interval="step")
    task = ActiveSpeakerTask(entry.build_model(cfg), class_weights=cfg.ASD.CLASS_WEIGHTS,
                             aux_weight=cfg.ASD.AUX_LOSS_WEIGHT, optim=optim, finetune=bool(cfg.ASD.FINETUNE))
    if cfg.ASD.INIT_FROM_AVA:
        load_asd_weights(task, cfg.ASD.AVA_CHECKPOINT, layout="flat")
    if cfg.ASD.FINETUNE:
        load_asd_weights(task.model, cfg.HHI.ASD_CHECKPOINT, layout="network")
    if cfg.TEST.ENABLE and cfg.CHECKPOINT.FILE_PATH:
        load_asd_weights(task, cfg.CHECKPOINT.FILE_PATH, layout="flat")
    return task


def build_asd_dataset(cfg: Any, split: str, root: Optional[Union[str, os.PathLike]] = None) -> ActiveSpeakerDataset:
    """The ASD dataset of ``split`` ("train" or "val") for a config with the ``ASD`` section.

    Args:
        cfg: merged config (``ASD.*``).
        split: "train" (augmented) or "val".
        root: data root; default ``egot2.config.resolve_data_root(cfg=cfg)`` (the ASD folder is ``<root>/asd``
            unless ``ASD.DATA_PATH`` is set).
    """
    from egot2.config import resolve_data_root  # noqa: PLC0415
    from HHI.data.social import resolve_path  # noqa: PLC0415

    if split not in ("train", "val"):
        raise ValueError(f"ASD split must be 'train' or 'val', got {split!r}")
    root = Path(root) if root is not None else resolve_data_root(cfg=cfg)
    asd_root = resolve_path(cfg.ASD.DATA_PATH, root / "asd")
    csv_override = cfg.ASD.TRAIN_CSV if split == "train" else cfg.ASD.VAL_CSV
    csv_path = resolve_path(csv_override, asd_root / "ego4d" / "csv" / f"active_speaker_{split}.csv")
    train = split == "train"
    return ActiveSpeakerDataset(asd_root, split, train=train, max_frames=int(cfg.ASD.MAX_FRAMES) or None,
                                legacy_int16_mix=bool(cfg.ASD.LEGACY_INT16_MIX), audio_mix=bool(cfg.ASD.AUDIO_MIX),
                                visual_aug=bool(cfg.ASD.VISUAL_AUG), csv_path=csv_path)


def asd_dataloader(cfg: Any, split: str, root: Optional[Union[str, os.PathLike]] = None) -> DataLoader:
    """Loader of ``split``.

    "train": :class:`HHI.data.asd.DynamicBatchSampler` with ``ASD.FRAME_BUDGET`` frames per batch, batch order
    shuffled with ``RNG_SEED`` and the epoch; under DDP Lightning rebuilds it around a DistributedSampler and each
    process takes every R-th batch. "val": one track chunk per batch (``TEST.BATCH_SIZE``; larger batches would cut
    chunks to the shortest one and mix tracks in TalkNet's 3-D conv), in order.
    """
    dataset = build_asd_dataset(cfg, split, root)
    common = dict(num_workers=int(cfg.DATA_LOADER.NUM_WORKERS), pin_memory=bool(cfg.DATA_LOADER.PIN_MEMORY),
                  collate_fn=collate_active_speaker)
    if split == "train":
        sampler = DynamicBatchSampler(SequentialSampler(dataset), int(cfg.ASD.FRAME_BUDGET), shuffle=True,
                                      seed=int(cfg.RNG_SEED))
        return DataLoader(dataset, batch_sampler=sampler, **common)
    return DataLoader(dataset, batch_size=int(cfg.TEST.BATCH_SIZE), shuffle=False, **common)


class ExportFlatCheckpoint(Callback):
    """After ``fit``, write the best checkpoint's weights as a flat TalkNet file (the ``ts_asd.pth`` container).

    The file holds exactly the task's state-dict keys (``model.*``, ``loss{AV,A,V}.FC.*``,
    ``loss{AV,A,V}.criterion.weight``), as the official ``ts_asd.pth`` does. Only the global-zero process writes;
    nothing is written when no checkpoint was saved (``fast_dev_run``).

    Args:
        destination: the file to write, e.g. ``logs/asd/<output_dir>/ts_asd.pth``.
    """

    def __init__(self, destination: Union[str, os.PathLike]) -> None:
        self.destination = Path(destination)
        self.exported: Optional[Path] = None

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        callback = trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        if not best:
            print(f"no checkpoint was saved (fast_dev_run or no validation), so {self.destination} was not written")
            return
        state_dict = extract_state_dict(load_file(best), source=best)
        expected = list(pl_module.state_dict())
        if sorted(state_dict) != sorted(expected):
            raise ValueError(f"{best}: its keys differ from the ASD task's; not exporting a TalkNet file")
        self.exported = save_flat_checkpoint(self.destination, {key: state_dict[key] for key in expected})
        print(f"exported the best model ({best}) as a flat TalkNet file: {self.exported} "
              f"(copy it to pretrained_models/ts_asd.pth)")
