"""Looking-At-Me training task (hhi spec §2.5, §2.6, §7.6): a thin LightningModule, model registry, loaders and
submission.

``LookingAtMeTask`` keeps the official Lightning layout: the network is ``self.model`` (checkpoint keys
``model.*``) and the class-weighted loss is ``self.criterion`` (its weight buffer is ``criterion.weight``), so EgoT2's
LAM checkpoints and ours load into each other strictly. Validation records one row per key frame and computes the
social-benchmark mAP and accuracy over the whole split (all processes), logged as ``val_mAP`` / ``val_acc``.

Networks are chosen by name from :data:`LAM_MODELS` (``--model``); another module can add a row.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.data import DataLoader

from egot2.engine import OptimSettings, TaskModule
from HHI.cli import ModelEntry, SocialRun, optim_settings, resolve_model
from HHI.data.lam import build_lam_dataset
from HHI.metrics import lam_key, lam_map

__all__ = ["LookingAtMeTask", "LAM_MODELS", "build_lam_baseline", "build_lam_task", "lam_dataloader",
           "lam_submission", "lam_run"]


def build_lam_baseline(cfg: Any) -> nn.Module:
    """The official LAM ``BaselineLSTM`` (random init; ``--checkpoint`` is loaded by :func:`build_lam_task`)."""
    from HHI.models.lstm import LAMBaselineLSTM  # noqa: PLC0415

    return LAMBaselineLSTM()


def video_inputs(batch: dict) -> tuple:
    """Model inputs of a LAM batch: ``(video [B, 7, 3, S, S],)``."""
    return (batch["video"],)


#: ``--model`` name -> network. ``stage_one`` models take ``--checkpoint`` and are exported as ``ts_lam.pth``.
LAM_MODELS: dict[str, ModelEntry] = {
    "BaselineLSTM": ModelEntry(build=build_lam_baseline, inputs=video_inputs, stage_one=True),
}


class LookingAtMeTask(TaskModule):
    """LAM: class-weighted cross-entropy on 7-frame clips; whole-split mAP over key frames.

    Args:
        model: network mapping ``inputs(batch)`` to logits [B, 2] (class 1 = looking at the camera wearer).
        class_weights: cross-entropy weights of classes (0, 1); official [0.136, 0.864].
        optim: optimiser settings; default Adam, lr 5e-4, no weight decay, constant learning rate.
        inputs: ``batch -> tuple`` of model inputs (default: the clip only).

    Batches (from :class:`HHI.data.lam.LAMDataset`): ``video`` [B, 7, 3, S, S], ``label`` [B], ``clip_uid``,
    ``track_id`` (lists), ``frame`` [B], ``box`` [B, 4]; test batches (:class:`HHI.data.lam.LAMTestDataset`):
    ``video``, ``video_id``, ``unique_id``, ``track_id``.
    """

    def __init__(self, model: nn.Module, class_weights: Sequence[float] = (0.136, 0.864),
                 optim: Optional[OptimSettings] = None, inputs=video_inputs) -> None:
        super().__init__(optim or OptimSettings(method="adam", lr=5e-4), id_field="uid")
        self.model = model
        self.criterion = nn.CrossEntropyLoss(weight=torch.tensor(list(class_weights), dtype=torch.float32))
        self.inputs = inputs

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits [B, 2] of a batch."""
        return self.model(*self.inputs(batch))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.criterion(self(batch), batch["label"])
        self.log("train_loss", loss, on_step=True, on_epoch=True, batch_size=len(batch["label"]))
        return loss

    def _record_rows(self, split: str, batch: dict) -> None:
        looking_score = torch.softmax(self(batch).float(), dim=1)[:, 1]
        frames = batch["frame"].tolist()
        self.record(split, uid=[lam_key(c, f, t) for c, f, t in zip(batch["clip_uid"], frames, batch["track_id"])],
                    clip_uid=list(batch["clip_uid"]), track_id=list(batch["track_id"]), frame=batch["frame"],
                    box=batch["box"], label=batch["label"], score=looking_score)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._record_rows("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._record_rows("test", batch)

    def compute_metrics(self, split: str, records: dict[str, Any]) -> dict[str, float]:
        rows = [{"clip_uid": clip, "frame": frame, "track_id": track, "box": box, "label": label, "score": score}
                for clip, frame, track, box, label, score in zip(
                    records["clip_uid"], records["frame"].tolist(), records["track_id"], records["box"].tolist(),
                    records["label"].tolist(), records["score"].tolist())]
        result = lam_map(rows)
        return {"mAP": result.mean_ap, "acc": result.accuracy}

    def predict_batch(self, batch: dict) -> dict[str, Any]:
        looking_score = torch.softmax(self(batch).float(), dim=1)[:, 1]
        return {"uid": [f"{v}:{u}:{t}" for v, u, t in zip(batch["video_id"], batch["unique_id"], batch["track_id"])],
                "video_id": list(batch["video_id"]), "unique_id": list(batch["unique_id"]),
                "track_id": list(batch["track_id"]), "score": looking_score}


def build_lam_task(cfg: Any) -> LookingAtMeTask:
    """``LookingAtMeTask`` for a merged LAM config: model ``HHI.MODEL``, ``HHI.INIT_CHECKPOINT``, weights, optimiser."""
    entry = resolve_model(LAM_MODELS, cfg.HHI.MODEL, "LAM")
    model = entry.build_model(cfg)
    if cfg.HHI.INIT_CHECKPOINT:
        entry.load_init_checkpoint(model, cfg.HHI.INIT_CHECKPOINT)
    return LookingAtMeTask(model, class_weights=cfg.LAM.CLASS_WEIGHTS, optim=optim_settings(cfg),
                           inputs=entry.inputs)


def lam_dataloader(cfg: Any, split: str, root: Optional[Union[str, os.PathLike]] = None) -> DataLoader:
    """Loader of ``split``: "train" shuffles batches of ``TRAIN.BATCH_SIZE``; "val"/"test" keep the order
    (``TEST.BATCH_SIZE``). Under DDP Lightning shards them with a DistributedSampler."""
    dataset = build_lam_dataset(cfg, split, root)
    train = split == "train"
    workers = int(cfg.DATA_LOADER.NUM_WORKERS)
    return DataLoader(dataset, batch_size=int(cfg.TRAIN.BATCH_SIZE if train else cfg.TEST.BATCH_SIZE),
                      shuffle=train, drop_last=train and bool(cfg.DATA_LOADER.DROP_LAST), num_workers=workers,
                      pin_memory=bool(cfg.DATA_LOADER.PIN_MEMORY), persistent_workers=False)


def lam_submission(cfg: Any, task: LookingAtMeTask, trainer: Any, path: Union[str, os.PathLike],
                   root: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Score the challenge test release and write a validated ``submit_lam.json`` to ``path``.

    Returns:
        ``path``; only the global-zero process writes.
    """
    from egot2.engine import predict_records  # noqa: PLC0415
    from egot2.submission import lam_results, write_submission  # noqa: PLC0415

    loader = lam_dataloader(cfg, "test", root)
    records = predict_records(trainer, task, loader)
    rows = list(zip(records["video_id"], records["unique_id"], records["track_id"], records["score"].tolist()))
    path = Path(path)
    if trainer.is_global_zero:
        write_submission("lam", lam_results(rows), path, expected_ids=loader.dataset.expected_ids)
    return path


def lam_run(cfg: Any) -> SocialRun:
    """What ``scripts/run_lam.py`` runs (``HHI.cli.run_social_task``): train / ``--eval`` / ``--submit`` of a
    :data:`LAM_MODELS` network; stage-I models are exported as ``ts_lam.pth`` after training."""
    entry = resolve_model(LAM_MODELS, cfg.HHI.MODEL, "LAM")
    return SocialRun(task="lam", build_task=build_lam_task,
                     train_loader=functools.partial(lam_dataloader, split="train"),
                     val_loader=functools.partial(lam_dataloader, split="val"),
                     stage_one=lambda cfg_: entry.stage_one, submit=lam_submission)
