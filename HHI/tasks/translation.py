"""EgoT2-s on the HHI tasks: the Lightning tasks, loaders (paired or cached tokens) and runs of the translators.

``run_ttm.py --model <translator>`` and ``run_asd.py --model <translator>`` hand their config to
:func:`ttm_translation_run` / :func:`asd_translation_run`, which plug into :func:`HHI.cli.run_social_task`::

    cfg ─► build_translation_model (frozen ts_*.pth backbones, or the --ckpt's)   ─► task (model.*, criterion / lossAV)
        ─► loaders: TTM chunks (+ ASD inputs when a backbone is ASD: HHI.data.paired)
                    or, with --cache_features DIR, cached backbone tokens (egot2.features; built on first use)
        ─► fit / --eval / --submit; validation writes logs/<task>/<output_dir>/attention/{val_attention.csv,
           attention.png} for the transformer translators

Checkpoints: the models' state dicts are the official EgoT2 layout (see :mod:`HHI.models.translation`), the TTM
task adds ``criterion.weight`` and the ASD task ``lossAV.*``, so the released EgoT2-s files and ours load both ways.

Cached and uncached runs give the same results: the backbones are frozen in eval mode, HHI has no augmentation
(TTM), the batches are the same (same sampler, same lengths) and a sample's tokens do not depend on its batch
(frame encoders work per frame; TalkNet runs per chunk over its whole length). ASD training augments its inputs, so
ASD translators are not cached.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from egot2.engine import OptimSettings, TaskModule
from HHI.cli import SocialRun, optim_settings
from HHI.data.ttm import FrameBudgetBatchSampler, collate_truncate
from HHI.metrics import asd_frame_accuracy, asd_map
from HHI.models.talknet import TalkNetLossHead
from HHI.models.translation import (HHITranslationModel, build_translation_model, translator_inputs,
                                    truncate_tokens)
from HHI.tasks.ttm import TalkingToMeTask, ttm_segment_logits

__all__ = [
    "TTMTranslationTask",
    "ASDTranslationTask",
    "build_translator_from_cfg",
    "build_ttm_translator_model",
    "build_asd_translator_model",
    "build_ttm_translation_task",
    "build_asd_translation_task",
    "ttm_translation_dataset",
    "ttm_feature_caches",
    "cached_ttm_dataset",
    "collate_cached_tokens",
    "ttm_translation_loader",
    "ttm_translation_submission",
    "asd_translation_loader",
    "ttm_translation_run",
    "asd_translation_run",
]

_LABEL_NAMES = {"ttm": {0: "not talking to me", 1: "talking to me"}, "asd": {0: "not speaking", 1: "speaking"}}


def _write_attention(module: TaskModule, task: str, records: dict, ids: Sequence[str], labels: Sequence[int]) -> None:
    """Save the attention records of a finished validation split (first process only)."""
    from egot2.attention import save_attention  # noqa: PLC0415

    if module.attention_dir is None or "attention" not in records or module._trainer is None:
        return
    if not module.trainer.is_global_zero or module.trainer.sanity_checking:
        return
    csv_path, png_path = save_attention(module.attention_dir, ids, labels, records["attention"],
                                        module.model.source_order, title=f"EgoT2-s {task.upper()}: attention per "
                                        "source task (validation)", label_names=_LABEL_NAMES[task])
    module.attention_files = (csv_path, png_path)


class TTMTranslationTask(TalkingToMeTask):
    """:class:`HHI.tasks.ttm.TalkingToMeTask` for the EgoT2-s TTM models.

    The translators read no audio (hhi §3.3), so no batch is skipped for short audio; batches may carry cached
    backbone tokens (``batch["tokens"]``). Validation also records the attention mass per source and writes
    ``<attention_dir>/attention/val_attention.csv`` and ``attention.png`` (one row per chunk, label of the chunk).

    Args:
        model: an :class:`HHI.models.translation.HHITranslationModel` with ``task == "ttm"``.
        class_weights, optim, legacy_metric_key: see :class:`~HHI.tasks.ttm.TalkingToMeTask`.
        attention_dir: run folder for the attention files; None = do not write them.
    """

    def __init__(self, model: HHITranslationModel, class_weights: Sequence[float] = (0.266, 0.734),
                 optim: Optional[OptimSettings] = None, legacy_metric_key: bool = False,
                 attention_dir: Union[str, os.PathLike, None] = None) -> None:
        if getattr(model, "task", None) != "ttm":
            raise ValueError(f"TTMTranslationTask needs a TTM translator, got {type(model).__name__}")
        super().__init__(model, class_weights=class_weights, optim=optim, legacy_metric_key=legacy_metric_key,
                         min_audio_samples=0, inputs=translator_inputs)
        self.attention_dir = None if attention_dir is None else Path(attention_dir)
        self.attention_files: Optional[tuple] = None

    def _record_chunks(self, split: str, batch: dict) -> None:
        fields = dict(uid=list(batch["chunk_id"]), clip_uid=list(batch["clip_uid"]), index=batch["index"],
                      start=batch["start"], end=batch["end"], label=batch["label"])
        if split == "val" and self.model.has_attention:
            logits, mass = self.model(*translator_inputs(batch), return_attention=True)
            self.record(split, **fields, logits=logits.float(), attention=mass.float())
        else:
            self.record(split, **fields, logits=self(batch).float())

    def compute_metrics(self, split: str, records: dict[str, Any]) -> dict[str, float]:
        metrics = super().compute_metrics(split, records)
        if split == "val":
            _write_attention(self, "ttm", records, records["uid"], records["label"].tolist())
        return metrics


class ASDTranslationTask(TaskModule):
    """EgoT2-s with ASD as the task of interest (the original ``ActiveSpeakerDetection2Loader``).

    The translator's per-frame embeddings go through ``lossAV`` (FC d→2 and its class-weighted criterion, weights
    [1, 4]); there are no audio-only/visual-only losses. Metrics as :class:`HHI.tasks.asd.ActiveSpeakerTask`:
    ``val_acc`` (frame accuracy, a tie counts as not speaking) and ``val_mAP``. State dict: ``model.*`` +
    ``lossAV.*``, the official layout. Validation writes the attention files per track (label = whether most of
    the track's frames are speaking).

    Args:
        model: an :class:`HHI.models.translation.HHITranslationModel` with ``task == "asd"``.
        class_weights: cross-entropy weights (not speaking, speaking).
        optim: optimiser settings (default Adam 1e-4, x0.95 per epoch).
        attention_dir: run folder for the attention files; None = do not write them.
    """

    def __init__(self, model: HHITranslationModel, class_weights: Sequence[float] = (1.0, 4.0),
                 optim: Optional[OptimSettings] = None,
                 attention_dir: Union[str, os.PathLike, None] = None) -> None:
        if getattr(model, "task", None) != "asd":
            raise ValueError(f"ASDTranslationTask needs an ASD translator, got {type(model).__name__}")
        super().__init__(optim or OptimSettings(method="adam", lr=1e-4, lr_policy="step_decay", gamma=0.95,
                                                interval="epoch"), id_field="frame_id")
        self.model = model
        self.lossAV = TalkNetLossHead(model.embedding_dim, class_weights)
        self.attention_dir = None if attention_dir is None else Path(attention_dir)
        self.attention_files: Optional[tuple] = None

    def forward(self, batch: dict, return_attention: bool = False) -> Any:
        """Per-frame logits (B·m, 2) of a paired ASD batch (and the attention mass (B, S) when asked)."""
        output = self.model(*translator_inputs(batch), return_attention=return_attention)
        embeddings, mass = output if return_attention else (output, None)
        logits = self.lossAV(embeddings)
        return (logits, mass) if return_attention else logits

    @staticmethod
    def _is_empty(batch: dict) -> bool:
        return batch["faces"].shape[0] == 0 or batch["faces"].shape[1] == 0

    def training_step(self, batch: dict, batch_idx: int) -> Optional[torch.Tensor]:
        if self._is_empty(batch):
            return None
        loss = self.lossAV.loss(self(batch), batch["labels"])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch["labels"].numel())
        return loss

    def _record_frames(self, split: str, batch: dict) -> None:
        if self._is_empty(batch):
            return
        with_attention = split == "val" and self.model.has_attention
        output = self(batch, return_attention=with_attention)
        logits, mass = output if with_attention else (output, None)
        tracks, length = batch["labels"].shape
        frame_id = torch.stack([batch["index"].repeat_interleave(length),
                                torch.arange(length, device=batch["index"].device).repeat(tracks)], dim=1)
        fields = dict(frame_id=frame_id, logits=logits.float(), label=batch["labels"].reshape(-1))
        if mass is not None:
            # Per-frame rows carry their track's mass, so the records stay one row per frame.
            fields["attention"] = mass.float().repeat_interleave(length, dim=0)
            fields["track"] = batch["index"].repeat_interleave(length)
        self.record(split, **fields)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._record_frames("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._record_frames("test", batch)

    def compute_metrics(self, split: str, records: dict[str, Any]) -> dict[str, float]:
        speaking = torch.softmax(records["logits"], dim=1)[:, 1]
        metrics = {"acc": asd_frame_accuracy(records["logits"], records["label"]),
                   "mAP": asd_map(speaking, records["label"])}
        if split == "val" and "attention" in records:
            tracks = records["track"].tolist()
            first = {track: row for row, track in reversed(list(enumerate(tracks)))}
            order = sorted(first)
            labels = [int(records["label"][torch.tensor(tracks) == track].float().mean() >= 0.5) for track in order]
            per_track = {"attention": records["attention"][[first[track] for track in order]]}
            _write_attention(self, "asd", per_track, [f"track:{track}" for track in order], labels)
        return metrics


# ---------------------------------------------------------------------------------------------------------------
# Building from a config
# ---------------------------------------------------------------------------------------------------------------
def build_translator_from_cfg(cfg: Any, task: str) -> HHITranslationModel:
    """The EgoT2-s model ``HHI.MODEL`` of ``task`` with its backbones.

    The stage-I files (``HHI.{LAM,TTM,ASD}_CHECKPOINT``) are loaded unless an evaluation checkpoint
    (``--eval/--submit --ckpt``) will overwrite every tensor: then they need not exist.
    """
    evaluating = bool(cfg.TEST.ENABLE and cfg.CHECKPOINT.FILE_PATH)
    sizes = cfg.HHI.TRANSLATOR
    # The trainer seeds everything only after the task is built; seeding here makes the translator's initial
    # weights follow RNG_SEED too, so a run repeats exactly (and cached and uncached runs start alike).
    torch.manual_seed(int(cfg.RNG_SEED))
    return build_translation_model(
        task, cfg.HHI.MODEL, hidden_dim=int(sizes.HIDDEN_DIM), hidden_dim2=int(sizes.HIDDEN_DIM2),
        num_layers=int(sizes.NUM_LAYERS), num_heads=int(sizes.NUM_HEADS), dropout=float(sizes.DROPOUT),
        nofreeze=bool(cfg.HHI.NOFREEZE), train_mode_backbones=bool(cfg.HHI.TRAIN_MODE_BACKBONES),
        checkpoints={"lam": cfg.HHI.LAM_CHECKPOINT, "ttm": cfg.HHI.TTM_CHECKPOINT, "asd": cfg.HHI.ASD_CHECKPOINT},
        load_backbones=not evaluating)


def build_ttm_translator_model(cfg: Any) -> HHITranslationModel:
    """Registry builder (``HHI.tasks.ttm.TTM_MODELS``): the EgoT2-s TTM model of a config."""
    return build_translator_from_cfg(cfg, "ttm")


def build_asd_translator_model(cfg: Any) -> HHITranslationModel:
    """Registry builder (``HHI.tasks.asd.ASD_MODELS``): the EgoT2-s ASD model of a config."""
    return build_translator_from_cfg(cfg, "asd")


def build_ttm_translation_task(cfg: Any) -> TTMTranslationTask:
    """:class:`TTMTranslationTask` for a merged TTM config (attention files go to ``OUTPUT_DIR``)."""
    return TTMTranslationTask(build_translator_from_cfg(cfg, "ttm"), class_weights=cfg.TTM.CLASS_WEIGHTS,
                              optim=optim_settings(cfg), legacy_metric_key=bool(cfg.TTM.LEGACY_METRIC_KEY),
                              attention_dir=cfg.OUTPUT_DIR)


def build_asd_translation_task(cfg: Any) -> ASDTranslationTask:
    """:class:`ASDTranslationTask` for a merged ASD config (``ASD.NODECAY``, ``ASD.LR_DECAY_PER_STEP`` honoured)."""
    optim = optim_settings(cfg)
    if cfg.ASD.NODECAY:
        optim = dataclasses.replace(optim, lr_policy="constant")
    if cfg.ASD.LR_DECAY_PER_STEP:
        optim = dataclasses.replace(optim, interval="step")
    return ASDTranslationTask(build_translator_from_cfg(cfg, "asd"), class_weights=cfg.ASD.CLASS_WEIGHTS,
                              optim=optim, attention_dir=cfg.OUTPUT_DIR)


# ---------------------------------------------------------------------------------------------------------------
# TTM data: paired, or cached tokens
# ---------------------------------------------------------------------------------------------------------------
def _ttm_paths_and_root(cfg: Any, root: Optional[Union[str, os.PathLike]] = None):
    from egot2.config import resolve_data_root  # noqa: PLC0415
    from HHI.data.ttm import ttm_paths  # noqa: PLC0415

    root = Path(root) if root is not None else resolve_data_root(cfg=cfg)
    ttm = cfg.TTM
    return root, ttm_paths(root, ttm.IMG_PATH, ttm.WAVE_PATH, ttm.GT_PATH, ttm.JSON_PATH, ttm.TEST_DATA_PATH,
                           ttm.SEG_INFO)


def _split_file(cfg: Any, paths: Any, split: str) -> Path:
    from HHI.data.social import resolve_path  # noqa: PLC0415

    overrides = {"train": cfg.TTM.TRAIN_FILE, "val": cfg.TTM.VAL_FILE}
    if split not in overrides:
        raise ValueError(f"TTM split must be 'train', 'val' or 'test', got {split!r}")
    return resolve_path(overrides[split], paths.split_file(split))


def ttm_translation_dataset(cfg: Any, split: str, paired: bool,
                            root: Optional[Union[str, os.PathLike]] = None) -> Dataset:
    """The TTM dataset of ``split``; ``paired`` adds the ASD inputs (:mod:`HHI.data.paired`)."""
    from HHI.data.paired import PairedTTMDataset, PairedTTMTestDataset  # noqa: PLC0415
    from HHI.data.ttm import TTMDataset, TTMTestDataset  # noqa: PLC0415

    root, paths = _ttm_paths_and_root(cfg, root)
    face_size, chunk_frames = int(cfg.HHI.FACE_SIZE), int(cfg.TTM.CHUNK_FRAMES)
    pairing = {"asd_max_frames": int(cfg.HHI.ASD_MAX_FRAMES)} if paired else {}
    if split == "test":
        test_class = PairedTTMTestDataset if paired else TTMTestDataset
        return test_class(paths.test_dir, paths.seg_info, face_size=face_size, chunk_frames=chunk_frames, **pairing)
    dataset_class = PairedTTMDataset if paired else TTMDataset
    return dataset_class(root, str(_split_file(cfg, paths, split)), face_size=face_size,
                         min_train_len=int(cfg.TTM.MIN_TRAIN_LEN), label_mode=cfg.HHI.LABEL_MODE,
                         chunk_frames=chunk_frames, paths=paths, training=split == "train", **pairing)


def _needs_asd_inputs(model: HHITranslationModel) -> bool:
    return "asd" in model.sources


def _chunk_items(dataset: Any) -> tuple[list[dict], list[str]]:
    """Per chunk, the metadata a TTM batch carries (no video) and its id (``chunk_id``)."""
    items, ids = [], []
    for clip_uid, person, label, start, end, entry in dataset.segments:
        chunk_id = f"{clip_uid}:{entry}:{start}:{end}"
        items.append({"label": label, "clip_uid": clip_uid, "person": person, "index": entry, "start": start,
                      "end": end, "chunk_id": chunk_id})
        ids.append(chunk_id)
    return items, ids


def _ttm_token_extractor(model: HHITranslationModel):
    """``extract(samples, sources)`` for :func:`egot2.features.fill_caches`: frames of several chunks in one pass."""

    def extract(samples: list, sources: Sequence[str]) -> list[dict]:
        outputs: list[dict] = [{} for _ in samples]
        visual = [source for source in sources if source in ("lam", "ttm")]
        if visual:
            lengths = [sample["video"].shape[0] for sample in samples]
            video = torch.cat([sample["video"] for sample in samples])[None]
            for source in visual:
                tokens = model.extract_tokens_of(source, video=video)[0]
                for output, part in zip(outputs, tokens.split(lengths)):
                    output[source] = part
        if "asd" in sources:
            for output, sample in zip(outputs, samples):
                output["asd"] = model.extract_tokens_of("asd", faces=[sample["faces"]], mfcc=[sample["mfcc"]])[0]
        return outputs

    return extract


def ttm_feature_caches(cfg: Any, model: HHITranslationModel, split: str, dataset: Any, progress: bool = True):
    """Open (and fill, on first use) the token caches of ``split`` under ``HHI.CACHE_FEATURES``.

    One cache per backbone source, fingerprinted by the backbone's weights (as loaded: from ``ts_*.pth`` or from an
    evaluation checkpoint) and the feature settings; a stale cache is rebuilt.

    Returns:
        ``{source: egot2.features.FeatureCache}`` (complete) and the build statistics.
    """
    from egot2.features import (FeatureCache, backbone_fingerprint, cache_fingerprint, fill_caches,  # noqa: PLC0415
                                wait_for_caches)

    if not model.cacheable:
        raise ValueError("--cache_features needs frozen backbones in eval mode: the tokens of a trainable "
                         "(--nofreeze) or train-mode (--train_mode_backbones) backbone change during training")
    root, paths = _ttm_paths_and_root(cfg)
    settings = {"task": "ttm", "split_file": str(_split_file(cfg, paths, split)), "image_dir": str(paths.image_dir),
                "wave_dir": str(paths.wave_dir), "json_dir": str(paths.json_dir), "face_size": int(cfg.HHI.FACE_SIZE),
                "chunk_frames": int(cfg.TTM.CHUNK_FRAMES)}
    own_settings, fingerprints = {}, {}
    for source in model.sources:
        # The ASD tokens also depend on how many ASD frames a chunk keeps; LAM/TTM tokens do not.
        own_settings[source] = {**settings, "source": source,
                                **({"asd_max_frames": int(cfg.HHI.ASD_MAX_FRAMES)} if source == "asd" else {})}
        fingerprints[source] = cache_fingerprint(backbone_fingerprint(model.backbone(source)), own_settings[source])
    # Under torchrun every process starts at once: the first builds, the others wait and then only read.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0:
        wait_for_caches(cfg.HHI.CACHE_FEATURES, split, fingerprints)
    caches = {source: FeatureCache(cfg.HHI.CACHE_FEATURES, split, source, fingerprints[source],
                                   settings=own_settings[source]) for source in model.sources}
    _, ids = _chunk_items(dataset)
    stats = fill_caches(caches, dataset, ids, _ttm_token_extractor(model), samples_per_call=4,
                        num_workers=int(cfg.DATA_LOADER.NUM_WORKERS), progress=progress,
                        desc=f"caching {'+'.join(model.sources)} tokens ({split})")
    return caches, stats


def cached_ttm_dataset(dataset: Any, caches: dict) -> Dataset:
    """Items of ``dataset`` (a TTM train/val dataset) with their cached tokens instead of video."""
    from egot2.features import CachedTokensDataset  # noqa: PLC0415

    items, ids = _chunk_items(dataset)
    return CachedTokensDataset(items, ids, caches)


def collate_cached_tokens(samples: Sequence[dict]) -> dict[str, Any]:
    """Stack cached items: ``tokens`` ``{source: [B, min N, C]}`` (cut like the video), ints as int64 [B], strings
    as lists, and an empty ``audio`` [B, 0] (the translators read none)."""
    if not samples:
        raise ValueError("collate_cached_tokens: empty batch")
    batch: dict[str, Any] = {"tokens": {source: truncate_tokens([sample["tokens"][source] for sample in samples])
                                        for source in samples[0]["tokens"]},
                             "audio": torch.zeros(len(samples), 0)}
    for key in samples[0]:
        if key in ("tokens", "sample_id"):
            continue
        values = [sample[key] for sample in samples]
        if isinstance(values[0], (int, np.integer)) and not isinstance(values[0], bool):
            batch[key] = torch.tensor([int(value) for value in values], dtype=torch.int64)
        else:
            batch[key] = values
    return batch


def ttm_translation_loader(cfg: Any, split: str, model: HHITranslationModel, progress: bool = True) -> DataLoader:
    """Loader of ``split`` for a TTM translator: paired when it reads ASD tokens; cached with ``HHI.CACHE_FEATURES``
    (train/val). Batching as :func:`HHI.tasks.ttm.ttm_dataloader` (frame-budget sampler for train, one chunk per
    validation batch)."""
    from HHI.data.paired import collate_paired_ttm  # noqa: PLC0415

    paired = _needs_asd_inputs(model)
    dataset = ttm_translation_dataset(cfg, split, paired)
    workers = int(cfg.DATA_LOADER.NUM_WORKERS)
    collate = collate_paired_ttm if paired else collate_truncate
    if cfg.HHI.CACHE_FEATURES and split in ("train", "val"):
        caches, _ = ttm_feature_caches(cfg, model, split, dataset, progress=progress)
        lengths = dataset.lengths
        dataset, collate, workers = cached_ttm_dataset(dataset, caches), collate_cached_tokens, 0
    else:
        lengths = dataset.lengths
    common = dict(num_workers=workers, pin_memory=bool(cfg.DATA_LOADER.PIN_MEMORY), collate_fn=collate)
    if split == "train":
        sampler = FrameBudgetBatchSampler(lengths, frame_budget=int(cfg.TTM.FRAME_BUDGET), shuffle=True,
                                          seed=int(cfg.RNG_SEED), legacy_truncated_epochs=bool(cfg.TTM.LEGACY_EPOCHS))
        return DataLoader(dataset, batch_sampler=sampler, **common)
    return DataLoader(dataset, batch_size=int(cfg.TEST.BATCH_SIZE), shuffle=False, **common)


def ttm_translation_submission(cfg: Any, task: TTMTranslationTask, trainer: Any,
                               path: Union[str, os.PathLike]) -> Path:
    """Score the challenge test release with a TTM translator and write a validated ``submit_ttm.json``.

    As :func:`HHI.tasks.ttm.ttm_submission`, with the test chunks paired with their ASD inputs when the model reads
    ASD tokens (the original crashed here, hhi §10.2).
    """
    from egot2.engine import predict_records  # noqa: PLC0415
    from egot2.submission import ttm_results, write_submission  # noqa: PLC0415
    from HHI.data.paired import collate_paired_ttm  # noqa: PLC0415

    paired = _needs_asd_inputs(task.model)
    dataset = ttm_translation_dataset(cfg, "test", paired)
    loader = DataLoader(dataset, batch_size=int(cfg.TEST.BATCH_SIZE), shuffle=False,
                        num_workers=int(cfg.DATA_LOADER.NUM_WORKERS),
                        collate_fn=collate_paired_ttm if paired else collate_truncate)
    records = predict_records(trainer, task, loader)
    scores = ttm_segment_logits(records["segment_id"], records["logits"].numpy())
    path = Path(path)
    if trainer.is_global_zero:
        frame_lists = {segment: dataset.frame_lists[segment] for segment in scores}
        expected = {(segment, str(frame)) for segment, frames in dataset.frame_lists.items() for frame in frames}
        write_submission("ttm", ttm_results(scores, frame_lists), path, expected_ids=expected)
    return path


# ---------------------------------------------------------------------------------------------------------------
# ASD data
# ---------------------------------------------------------------------------------------------------------------
def asd_translation_loader(cfg: Any, split: str, face_size: Optional[int] = None) -> DataLoader:
    """Paired ASD loader (TalkNet inputs + RGB crops of the same frames) of ``split``, batched as
    :func:`HHI.tasks.asd.asd_dataloader` (dynamic frame-budget batches for train, one track chunk per val batch)."""
    from egot2.config import resolve_data_root  # noqa: PLC0415
    from HHI.data.asd import DynamicBatchSampler  # noqa: PLC0415
    from HHI.data.paired import PairedASDDataset, collate_paired_asd  # noqa: PLC0415
    from HHI.data.social import resolve_path  # noqa: PLC0415

    if split not in ("train", "val"):
        raise ValueError(f"ASD split must be 'train' or 'val', got {split!r}")
    root = resolve_data_root(cfg=cfg)
    asd_root = resolve_path(cfg.ASD.DATA_PATH, root / "asd")
    csv_override = cfg.ASD.TRAIN_CSV if split == "train" else cfg.ASD.VAL_CSV
    csv_path = resolve_path(csv_override, asd_root / "ego4d" / "csv" / f"active_speaker_{split}.csv")
    train = split == "train"
    dataset = PairedASDDataset(asd_root, split, train=train, max_frames=int(cfg.ASD.MAX_FRAMES) or None,
                               legacy_int16_mix=bool(cfg.ASD.LEGACY_INT16_MIX), audio_mix=bool(cfg.ASD.AUDIO_MIX),
                               visual_aug=bool(cfg.ASD.VISUAL_AUG), csv_path=csv_path,
                               face_size=int(face_size or cfg.HHI.FACE_SIZE))
    common = dict(num_workers=int(cfg.DATA_LOADER.NUM_WORKERS), pin_memory=bool(cfg.DATA_LOADER.PIN_MEMORY),
                  collate_fn=collate_paired_asd)
    if train:
        sampler = DynamicBatchSampler(SequentialSampler(dataset), int(cfg.ASD.FRAME_BUDGET), shuffle=True,
                                      seed=int(cfg.RNG_SEED))
        return DataLoader(dataset, batch_sampler=sampler, **common)
    return DataLoader(dataset, batch_size=int(cfg.TEST.BATCH_SIZE), shuffle=False, **common)


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------
class _Holder:
    """Remembers the task built by ``build_task`` so the loaders can use its (possibly --ckpt-loaded) model."""

    def __init__(self, build):
        self.build = build
        self.task = None

    def __call__(self, cfg: Any) -> Any:
        self.task = self.build(cfg)
        return self.task


def _announce_pairing(cfg: Any, model: HHITranslationModel, script: str) -> None:
    if _needs_asd_inputs(model) and not cfg.HHI.TWO_LOADER:
        print(f"{script}: {cfg.HHI.MODEL} reads ASD tokens, so every sample is paired with its ASD inputs "
              "(as --two_loader does)", file=sys.stderr)


def ttm_translation_run(cfg: Any) -> SocialRun:
    """What ``run_ttm.py`` runs for an EgoT2-s model (training, ``--eval``, ``--submit``; optional token cache)."""
    holder = _Holder(build_ttm_translation_task)

    def loader(split: str):
        def make(cfg_: Any) -> DataLoader:
            _announce_pairing(cfg_, holder.task.model, "run_ttm.py")
            return ttm_translation_loader(cfg_, split, holder.task.model)
        return make

    return SocialRun(task="ttm", build_task=holder, train_loader=loader("train"), val_loader=loader("val"),
                     stage_one=lambda c: False, submit=ttm_translation_submission,
                     trainer_overrides=lambda c: {"use_distributed_sampler": False})


def asd_translation_run(cfg: Any) -> SocialRun:
    """What ``run_asd.py`` runs for an EgoT2-s model: the translator names imply the paired ASD + RGB data."""
    if cfg.HHI.CACHE_FEATURES:
        raise ValueError("--cache_features is a TTM option: ASD training augments the TalkNet inputs, so its "
                         "tokens cannot be cached")
    holder = _Holder(build_asd_translation_task)
    return SocialRun(task="asd", build_task=holder, train_loader=lambda c: asd_translation_loader(c, "train"),
                     val_loader=lambda c: asd_translation_loader(c, "val"), stage_one=lambda c: False)
