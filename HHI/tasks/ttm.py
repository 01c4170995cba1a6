"""Talking-To-Me training task (hhi spec §3.5, §3.6, §3.7, §7.6): thin LightningModule, model registry, loaders,
submission.

``TalkingToMeTask`` keeps the official Lightning layout (``model.*`` + ``criterion.weight``). Training batches come
from the frame-budget sampler and are truncated to the batch's shortest chunk; a batch whose audio is too short for
the audio encoder is skipped (the original skipped empty audio). Validation records the logits of every chunk;
at the end of the split the chunks of each annotation segment are averaged at logit level, soft-maxed, and the
social-benchmark mAP/accuracy is computed per segment, keyed by (clip, entry index) -- or, with
``legacy_metric_key``, by the original's "start:end" key that merges segments of different clips (needed only to
reproduce published numbers).

Networks are chosen by name from :data:`TTM_MODELS` (``--model``); another module can add a row, or give the
script its own :class:`HHI.cli.SocialRun` (the EgoT2-s translators do, see ``HHI.tasks.translation``).
"""
from __future__ import annotations

import functools
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from egot2.engine import OptimSettings, TaskModule
from HHI.cli import ModelEntry, SocialRun, optim_settings, resolve_model
from HHI.data.social import WarningCounter
from HHI.data.ttm import FrameBudgetBatchSampler, build_ttm_dataset, collate_truncate
from HHI.metrics import ttm_map, ttm_segment_scores
from HHI.models.translation import TTM_TRANSLATORS, translator_inputs

__all__ = ["TalkingToMeTask", "TTM_MODELS", "build_ttm_baseline", "build_ttm_task", "ttm_dataloader",
           "ttm_segment_logits", "ttm_submission", "video_audio_inputs", "ttm_run"]


def build_ttm_baseline(cfg: Any) -> nn.Module:
    """The official TTM ``BaselineLSTM`` (random init; ``--checkpoint`` is loaded by :func:`build_ttm_task`)."""
    from HHI.models.lstm import TTMBaselineLSTM  # noqa: PLC0415

    return TTMBaselineLSTM()


def video_audio_inputs(batch: dict) -> tuple:
    """Model inputs of a TTM batch: ``(video [B, T, 3, S, S], audio [B, A])``."""
    return batch["video"], batch["audio"]


#: ``--model`` name -> network. ``stage_one`` models take ``--checkpoint`` and are exported as ``ts_ttm.pth``.
TTM_MODELS: dict[str, ModelEntry] = {
    "BaselineLSTM": ModelEntry(build=build_ttm_baseline, inputs=video_audio_inputs, stage_one=True),
    # EgoT2-s translators (HHI.models.translation); they run through HHI.tasks.translation.ttm_translation_run.
    **{name: ModelEntry(build="HHI.tasks.translation:build_ttm_translator_model", inputs=translator_inputs)
       for name in TTM_TRANSLATORS},
}


def _pad_audio(audio: torch.Tensor, min_samples: int) -> torch.Tensor:
    if audio.shape[1] >= min_samples:
        return audio
    return torch.nn.functional.pad(audio, (0, min_samples - audio.shape[1]))


class TalkingToMeTask(TaskModule):
    """TTM: class-weighted cross-entropy on face-crop chunks with audio; whole-split mAP per annotation segment.

    Args:
        model: network mapping ``inputs(batch)`` to logits [B, 2] (class 1 = talking to the camera wearer).
        class_weights: cross-entropy weights of classes (0, 1); official [0.266, 0.734].
        optim: optimiser settings; default Adam, lr 5e-4, no weight decay.
        legacy_metric_key: key segments by "start:end" as the original metric (see module docstring).
        min_audio_samples: shorter audio skips a training batch (with a counted warning) and is zero-padded in
            evaluation, so every segment still gets a score.
        inputs: ``batch -> tuple`` of model inputs (default ``(video, audio)``).

    Batches (from :class:`HHI.data.ttm.TTMDataset` through :func:`HHI.data.ttm.collate_truncate`): ``video``
    [B, T, 3, S, S], ``audio`` [B, A], ``label`` [B], ``clip_uid``, ``chunk_id`` (lists), ``index``, ``start``,
    ``end`` [B]; test batches: ``video``, ``audio``, ``segment_id``, ``chunk_id``, ``start``, ``end``.
    """

    def __init__(self, model: nn.Module, class_weights: Sequence[float] = (0.266, 0.734),
                 optim: Optional[OptimSettings] = None, legacy_metric_key: bool = False,
                 min_audio_samples: int = 400, inputs=video_audio_inputs) -> None:
        super().__init__(optim or OptimSettings(method="adam", lr=5e-4), id_field="uid")
        self.model = model
        self.criterion = nn.CrossEntropyLoss(weight=torch.tensor(list(class_weights), dtype=torch.float32))
        self.legacy_metric_key = legacy_metric_key
        self.min_audio_samples = int(min_audio_samples)
        self.inputs = inputs
        self.warnings = WarningCounter()

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits [B, 2] of a batch."""
        return self.model(*self.inputs(batch))

    def on_train_epoch_start(self) -> None:
        # Lightning sets the epoch of a loader's sampler, not of its batch sampler: the frame-budget sampler's
        # shuffle would repeat every epoch (and after a resume) without this.
        batch_sampler = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        if callable(getattr(batch_sampler, "set_epoch", None)):
            batch_sampler.set_epoch(self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int) -> Optional[torch.Tensor]:
        batch_size = len(batch["label"])
        if batch["audio"].shape[1] < self.min_audio_samples:
            self.warnings.warn("training batch with too little audio (skipped)",
                               f"{batch['audio'].shape[1]} samples in {batch['chunk_id']}")
            if self._trainer is None or self.trainer.world_size == 1:
                return None
            # Every DDP process must take part in the gradient all-reduce: run on silence, contribute nothing.
            batch = {**batch, "audio": _pad_audio(batch["audio"], self.min_audio_samples)}
            return self.criterion(self(batch), batch["label"]) * 0.0
        loss = self.criterion(self(batch), batch["label"])
        self.log("train_loss", loss, on_step=True, on_epoch=True, batch_size=batch_size)
        return loss

    def _evaluation_logits(self, batch: dict) -> torch.Tensor:
        if batch["audio"].shape[1] < self.min_audio_samples:
            self.warnings.warn("evaluation chunk with too little audio (zero-padded)",
                               f"{batch['audio'].shape[1]} samples in {batch['chunk_id']}")
            batch = {**batch, "audio": _pad_audio(batch["audio"], self.min_audio_samples)}
        return self(batch).float()

    def _record_chunks(self, split: str, batch: dict) -> None:
        # ``position`` (dataset order) lets the metric see the chunks in the original loader's order.
        order = {"position": batch["position"]} if "position" in batch else {}
        self.record(split, uid=list(batch["chunk_id"]), clip_uid=list(batch["clip_uid"]), index=batch["index"],
                    start=batch["start"], end=batch["end"], label=batch["label"],
                    logits=self._evaluation_logits(batch), **order)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._record_chunks("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._record_chunks("test", batch)

    def compute_metrics(self, split: str, records: dict[str, Any]) -> dict[str, float]:
        chunks = [{"clip_uid": clip, "index": index, "start": start, "end": end, "label": label, "logits": logits}
                  for clip, index, start, end, label, logits in zip(
                      records["clip_uid"], records["index"].tolist(), records["start"].tolist(),
                      records["end"].tolist(), records["label"].tolist(), records["logits"].numpy())]
        if "position" in records:
            # The legacy key keeps the first of colliding segments: "first" in the original's val loader order.
            chunks = [chunks[i] for i in np.argsort(records["position"].numpy(), kind="stable")]
        result = ttm_map(ttm_segment_scores(chunks), legacy_key=self.legacy_metric_key)
        return {"mAP": result.mean_ap, "acc": result.accuracy}

    def predict_batch(self, batch: dict) -> dict[str, Any]:
        return {"uid": list(batch["chunk_id"]), "segment_id": list(batch["segment_id"]),
                "start": batch["start"], "logits": self._evaluation_logits(batch)}


def build_ttm_task(cfg: Any) -> TalkingToMeTask:
    """``TalkingToMeTask`` for a merged TTM config: model ``HHI.MODEL``, ``HHI.INIT_CHECKPOINT``, weights, options."""
    entry = resolve_model(TTM_MODELS, cfg.HHI.MODEL, "TTM")
    model = entry.build_model(cfg)
    if cfg.HHI.INIT_CHECKPOINT:
        entry.load_init_checkpoint(model, cfg.HHI.INIT_CHECKPOINT)
    return TalkingToMeTask(model, class_weights=cfg.TTM.CLASS_WEIGHTS, optim=optim_settings(cfg),
                           legacy_metric_key=bool(cfg.TTM.LEGACY_METRIC_KEY),
                           min_audio_samples=int(cfg.TTM.MIN_AUDIO_SAMPLES), inputs=entry.inputs)


def ttm_dataloader(cfg: Any, split: str, root: Optional[Union[str, os.PathLike]] = None) -> DataLoader:
    """Loader of ``split``.

    "train": :class:`FrameBudgetBatchSampler` (``TTM.FRAME_BUDGET`` frames, shuffled with ``RNG_SEED`` and the
    epoch, sharded over DDP processes, ``TTM.LEGACY_EPOCHS`` for the original epoch length) -- use it with
    ``Trainer(use_distributed_sampler=False)``. "val"/"test": one chunk per batch, in order (``TEST.BATCH_SIZE``;
    larger batches would truncate chunks to the shortest one). Under DDP without Lightning's sampler every process
    evaluates the whole split and the task de-duplicates the gathered chunks.
    """
    dataset = build_ttm_dataset(cfg, split, root)
    common = dict(num_workers=int(cfg.DATA_LOADER.NUM_WORKERS), pin_memory=bool(cfg.DATA_LOADER.PIN_MEMORY),
                  collate_fn=collate_truncate)
    if split == "train":
        sampler = FrameBudgetBatchSampler(dataset.lengths, frame_budget=int(cfg.TTM.FRAME_BUDGET), shuffle=True,
                                          seed=int(cfg.RNG_SEED), legacy_truncated_epochs=bool(cfg.TTM.LEGACY_EPOCHS))
        return DataLoader(dataset, batch_sampler=sampler, **common)
    return DataLoader(dataset, batch_size=int(cfg.TEST.BATCH_SIZE), shuffle=False, **common)


def ttm_segment_logits(segment_ids: Sequence[str], logits: Any) -> "OrderedDict[str, float]":
    """Average chunk logits per test segment, softmax, P(talking to me): ``{segment_id: score}`` in first-seen order."""
    logits = np.asarray(logits, dtype=np.float64)
    grouped: "OrderedDict[str, list]" = OrderedDict()
    for segment_id, row in zip(segment_ids, logits):
        grouped.setdefault(segment_id, []).append(row)
    scores: "OrderedDict[str, float]" = OrderedDict()
    for segment_id, rows in grouped.items():
        mean = np.mean(rows, axis=0)
        probabilities = np.exp(mean - mean.max())
        scores[segment_id] = float(probabilities[1] / probabilities.sum())
    return scores


def ttm_submission(cfg: Any, task: TalkingToMeTask, trainer: Any, path: Union[str, os.PathLike],
                   root: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Score the challenge test release and write a validated ``submit_ttm.json`` to ``path``.

    Every face frame of a segment (``seg_info.json``'s ``frame_list``) gets the segment's score (chunk logits
    averaged, then soft-maxed), label 1, as the original writer. Only the global-zero process writes.
    """
    from egot2.engine import predict_records  # noqa: PLC0415
    from egot2.submission import ttm_results, write_submission  # noqa: PLC0415

    loader = ttm_dataloader(cfg, "test", root)
    dataset = loader.dataset
    records = predict_records(trainer, task, loader)
    scores = ttm_segment_logits(records["segment_id"], records["logits"].numpy())
    path = Path(path)
    if trainer.is_global_zero:
        frame_lists = {segment: dataset.frame_lists[segment] for segment in scores}
        expected = {(segment, str(frame)) for segment, frames in dataset.frame_lists.items() for frame in frames}
        write_submission("ttm", ttm_results(scores, frame_lists), path, expected_ids=expected)
    return path


def ttm_run(cfg: Any) -> SocialRun:
    """What ``scripts/run_ttm.py`` runs (``HHI.cli.run_social_task``) for a :data:`TTM_MODELS` network: train (the
    frame-budget sampler shards itself, so Lightning's distributed sampler is off), ``--eval``, ``--submit``; stage-I
    models are exported as ``ts_ttm.pth`` after training."""
    entry = resolve_model(TTM_MODELS, cfg.HHI.MODEL, "TTM")
    if cfg.HHI.MODEL in TTM_TRANSLATORS:
        from HHI.tasks.translation import ttm_translation_run  # noqa: PLC0415  (it imports this module)

        return ttm_translation_run(cfg)
    return SocialRun(task="ttm", build_task=build_ttm_task,
                     train_loader=functools.partial(ttm_dataloader, split="train"),
                     val_loader=functools.partial(ttm_dataloader, split="val"),
                     stage_one=lambda cfg_: entry.stage_one, submit=ttm_submission,
                     trainer_overrides=lambda cfg_: {"use_distributed_sampler": False})
