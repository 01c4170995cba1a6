"""Long-term action anticipation (LTA) stage I: the Lightning task around ``ForecastingEncoderDecoder``.

Spec hoi.md §4.3, §7.2, §8.4, §8.5. Training minimises the sum of 2·Z cross-entropy terms (one per future position
and head). Validation and prediction sample K = 5 sequences per window from the softmax of each position's logits
(not beam search, not argmax), with the model in eval mode and a random generator seeded per window from
``sampling_seed`` and the window key — so a window's sequences do not depend on batch size, batch order or the
number of processes, and a rerun writes the same ``submit_lta.json`` (the original sampled without a seed and left
dropout on, §11 item 18).

Validation metrics over the whole split (gathered across processes): ED@z for z = 1 … Z of verbs (head 0) and nouns
(head 1), logged ``val_0_ED_{z-1}`` / ``val_1_ED_{z-1}`` as the original (``val_0_ED_19`` = verb ED@20, the
checkpoint monitor, min), their AUED ``val_{0,1}_AUED``, and the action-level (verb, noun) ED ``val_action_ED_19`` /
``val_action_AUED`` of the challenge leaderboard.

Checkpoints use the official key layout of ``lta_slowfast_trf.ckpt`` (see :class:`HOI.tasks.recognition.OfficialLayoutTask`).
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from egot2.engine import OptimSettings
from HOI.metrics import action_edit_distance, aued, edit_distance_at_z
from HOI.models.lta import ForecastingEncoderDecoder, lta_key_to_native, lta_key_to_official
from HOI.tasks.recognition import OfficialLayoutTask, load_trunk_from_recognition_checkpoint, slowfast_kwargs_from_config

__all__ = [
    "AGGREGATORS",
    "DECODERS",
    "build_lta_model",
    "sample_sequences",
    "LongTermAnticipationTask",
]

#: ``FORECASTING.AGGREGATOR`` value → ``ForecastingEncoderDecoder(aggregator=...)``.
AGGREGATORS = {"TransformerAggregator": "transformer", "ConcatAggregator": "concat"}
#: ``FORECASTING.DECODER`` values this project implements.
DECODERS = ("MultiHeadDecoder",)


def build_lta_model(cfg) -> ForecastingEncoderDecoder:
    """``ForecastingEncoderDecoder`` from ``MODEL.*``, ``FORECASTING.*`` and the SlowFast keys."""
    if cfg.FORECASTING.AGGREGATOR not in AGGREGATORS:
        raise ValueError(f"FORECASTING.AGGREGATOR {cfg.FORECASTING.AGGREGATOR!r} is not one of {sorted(AGGREGATORS)}")
    if cfg.FORECASTING.DECODER not in DECODERS:
        raise ValueError(f"FORECASTING.DECODER {cfg.FORECASTING.DECODER!r} is not one of {list(DECODERS)}")
    return ForecastingEncoderDecoder(
        num_classes=tuple(int(n) for n in cfg.MODEL.NUM_CLASSES),
        num_future=int(cfg.FORECASTING.NUM_ACTIONS_TO_PREDICT),
        num_input_clips=int(cfg.FORECASTING.NUM_INPUT_CLIPS),
        clip_dim=int(cfg.MODEL.MULTI_INPUT_FEATURES),
        aggregator=AGGREGATORS[cfg.FORECASTING.AGGREGATOR],
        aggregator_heads=int(cfg.MODEL.TRANSFORMER_ENCODER_HEADS),
        aggregator_layers=int(cfg.MODEL.TRANSFORMER_ENCODER_LAYERS),
        backbone_dropout=float(cfg.MODEL.DROPOUT_RATE),
        decoder_dropout=float(cfg.MODEL.DROPOUT_RATE),
        freeze_backbone=bool(cfg.MODEL.FREEZE_BACKBONE),
        **slowfast_kwargs_from_config(cfg),
    )


def _window_generator(seed: int, key: str) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(key.encode("utf-8"))) % (2 ** 63))


def sample_sequences(logits: torch.Tensor, keys: Sequence[str], num_sequences: int, seed: int) -> torch.Tensor:
    """K future-action sequences per window from per-position logits.

    K = 1 takes the arg-max; K > 1 draws K independent samples per position from the softmax (positions
    independent, as ``ForecastingEncoderDecoder.generate``), from a generator seeded by ``seed`` and the window key.

    Args:
        logits: (B, Z, C) one head's logits.
        keys: B window keys.
        num_sequences: K.
        seed: base seed.

    Returns:
        int64 (B, K, Z) class indices.
    """
    if num_sequences < 1:
        raise ValueError(f"num_sequences must be >= 1, got {num_sequences}")
    if logits.shape[0] != len(keys):
        raise ValueError(f"{logits.shape[0]} windows of logits but {len(keys)} keys")
    if num_sequences == 1:
        return logits.argmax(dim=-1).unsqueeze(1)
    probabilities = torch.softmax(logits.detach().float().cpu(), dim=-1)
    samples = [torch.multinomial(window, num_sequences, replacement=True, generator=_window_generator(seed, key)).T
               for window, key in zip(probabilities, keys)]
    return torch.stack(samples).to(logits.device)


class LongTermAnticipationTask(OfficialLayoutTask):
    """Stage-I LTA (the original ``LongTermAnticipationTask``).

    Batches are :class:`HOI.data.lta.LongTermAnticipationDataset` samples collated: ``slow (B, N, 3, T/alpha, S, S)``,
    ``fast (B, N, 3, T, S, S)``, ``forecast_labels (B, Z, 2)``, ``key`` (B strings).

    Args:
        model: the network (``self.model``).
        optim: optimiser and schedule (Adam, cosine_warmup in the paper config).
        num_sequences: K sequences per window at evaluation (``FORECASTING.NUM_SEQUENCES_TO_PREDICT``, 5).
        sampling_seed: base seed of the per-window sampling generators.
    """

    key_to_official = staticmethod(lta_key_to_official)
    key_to_native = staticmethod(lta_key_to_native)

    def __init__(self, model: ForecastingEncoderDecoder, optim: Optional[OptimSettings] = None, *,
                 num_sequences: int = 5, sampling_seed: int = 0) -> None:
        super().__init__(optim, id_field="key")
        if model.decoder is None:
            raise ValueError("LongTermAnticipationTask needs a ForecastingEncoderDecoder with a decoder")
        self.model = model
        self.num_sequences = int(num_sequences)
        self.sampling_seed = int(sampling_seed)

    @classmethod
    def from_config(cls, cfg) -> "LongTermAnticipationTask":
        """Network, optimiser, K and the sampling seed (``RNG_SEED``) from an LTA-tree config."""
        return cls(build_lta_model(cfg), OptimSettings.from_cfg(cfg),
                   num_sequences=int(cfg.FORECASTING.NUM_SEQUENCES_TO_PREDICT), sampling_seed=int(cfg.RNG_SEED))

    def init_backbone_from_recognition(self, path: Union[str, Path]) -> None:
        """Load the AR recognition checkpoint's trunk into ``model.backbone`` (its head keys skipped)."""
        load_trunk_from_recognition_checkpoint(self.model.backbone, path)

    def forward(self, batch: Mapping[str, Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(verb_logits (B, Z, 115), noun_logits (B, Z, 478))``."""
        return self.model([batch["slow"], batch["fast"]])

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        targets = batch["forecast_labels"]
        size = targets.shape[0]
        losses, errors = [], {}
        for head, logits in enumerate(self(batch)):
            if logits.shape[1] != targets.shape[1]:
                raise ValueError(f"the model predicts {logits.shape[1]} future actions, the data has "
                                 f"{targets.shape[1]} (FORECASTING.NUM_ACTIONS_TO_PREDICT)")
            # One CE per future position and head, summed (2·Z unweighted terms, as the original).
            losses += [F.cross_entropy(logits[:, z], targets[:, z, head]) for z in range(logits.shape[1])]
            errors[f"train_{head}_top1_err"] = 100.0 * (logits.argmax(-1) != targets[..., head]).float().mean()
        loss = torch.stack(losses).sum()
        self.log("train_loss", loss, prog_bar=True, batch_size=size)
        self.log_dict(errors, batch_size=size)
        return loss

    def sample(self, batch: Mapping[str, Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(verb (B, K, Z), noun (B, K, Z))`` sampled sequences (call in eval mode)."""
        keys = list(batch["key"])
        return tuple(sample_sequences(logits, keys, self.num_sequences, self.sampling_seed)
                     for logits in self(batch))

    def _evaluate(self, split: str, batch: Mapping[str, Any]) -> None:
        targets = batch["forecast_labels"]
        if (targets < 0).any():
            raise ValueError(f"{split} batch holds unannotated windows (label -1): ED needs labels; use predict "
                             f"for the test split")
        verbs, nouns = self.sample(batch)
        self.record(split, key=list(batch["key"]), verb_preds=verbs, noun_preds=nouns,
                    verb_labels=targets[..., 0], noun_labels=targets[..., 1])

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def compute_metrics(self, split: str, records: Dict[str, Any]) -> Dict[str, float]:
        """ED@z (z = 1 … Z) and AUED of verbs (0), nouns (1), and ED@Z / AUED of actions, over the split."""
        metrics: Dict[str, float] = {}
        distances = {
            "0": edit_distance_at_z(records["verb_preds"], records["verb_labels"]),
            "1": edit_distance_at_z(records["noun_preds"], records["noun_labels"]),
            "action": action_edit_distance(records["verb_preds"], records["noun_preds"], records["verb_labels"],
                                           records["noun_labels"]),
        }
        for head, per_window in distances.items():
            curve = per_window.mean(axis=0)
            positions = range(len(curve)) if head != "action" else [len(curve) - 1]
            for z in positions:
                metrics[f"{head}_ED_{z}"] = float(curve[z])
            if len(curve) > 1:
                metrics[f"{head}_AUED"] = aued(curve)
        return metrics

    def predict_batch(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        """``key`` and the sampled ``verb`` / ``noun`` sequences (B, K, Z) of each window."""
        verbs, nouns = self.sample(batch)
        return {"key": list(batch["key"]), "verb": verbs, "noun": nouns}
