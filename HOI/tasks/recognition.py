"""Action recognition (AR) stage I: the Lightning task around ``MultiTaskSlowFast`` (spec hoi.md §4.2, §7.2, §8.3).

Checkpoint layout (the choice this module makes): the network lives in ``self.model`` with pytorchvideo module
names, but every checkpoint the task writes carries the **official** PySlowFast names — ``on_save_checkpoint``
renames ``model.blocks.0.multipathway_blocks.0.conv.weight`` to ``model.s1.pathway0_stem.conv.weight`` and so on,
and ``on_load_checkpoint`` renames back (official files and ours load the same way). So ``last.ckpt``, the top-k
checkpoints and the exported ``recognition_ego4d_slowfast8x8.ckpt`` all have the key set of the released file,
and ``--resume`` works on them. The optimiser's weight-decay grouping ("bn" in the parameter name → BN.WEIGHT_DECAY)
is applied to the official names too, as the original did; the pytorchvideo names say ``norm``, not ``bn``.

Metrics (validation, whole split, gathered across processes): top-1 / top-5 accuracy of verbs and nouns, also as
errors in percent as the original logged them; ``val_top1_noun_err`` (min) selects checkpoints.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

import torch
import torch.nn.functional as F

from egot2.checkpoint import (extract_state_dict, load_file, load_state_dict_exact, model_checkpoint_callback_state,
                              save_lightning_checkpoint)
from egot2.engine import OptimSettings, TaskModule
from HOI.metrics import topk_accuracy
from HOI.models.slowfast import (MultiTaskSlowFast, SlowFast, load_recognition_trunk, slowfast_key_to_native,
                                 slowfast_key_to_official)

__all__ = [
    "OUTPUT_ACTIVATIONS",
    "slowfast_kwargs_from_config",
    "build_recognition_model",
    "OfficialLayoutTask",
    "RecognitionTask",
    "load_trunk_from_recognition_checkpoint",
]


#: What evaluation/prediction scores are: raw logits (``TEST.NO_ACT``, the default) or a softmax.
OUTPUT_ACTIVATIONS = (None, "softmax")
_MODEL_PREFIX = "model."


# ---------------------------------------------------------------------------------------------------- from config

def slowfast_kwargs_from_config(cfg) -> Dict[str, Any]:
    """Keyword arguments of ``HOI.models.slowfast.SlowFast`` from ``RESNET.*``, ``SLOWFAST.*`` and ``DATA.*``."""
    strides = [tuple(int(s) for s in pair) for pair in cfg.RESNET.SPATIAL_STRIDES]
    return dict(
        depth=int(cfg.RESNET.DEPTH), width=int(cfg.RESNET.WIDTH_PER_GROUP), alpha=int(cfg.SLOWFAST.ALPHA),
        beta_inv=int(cfg.SLOWFAST.BETA_INV), fusion_channel_ratio=int(cfg.SLOWFAST.FUSION_CONV_CHANNEL_RATIO),
        fusion_kernel_size=int(cfg.SLOWFAST.FUSION_KERNEL_SZ), spatial_strides=tuple(pair[0] for pair in strides),
        num_frames=int(cfg.DATA.NUM_FRAMES), crop_size=int(cfg.DATA.CROP_SIZE))


def build_recognition_model(cfg) -> MultiTaskSlowFast:
    """``MultiTaskSlowFast`` with ``MODEL.NUM_CLASSES`` heads and ``MODEL.DROPOUT_RATE``."""
    return MultiTaskSlowFast(num_classes=tuple(int(n) for n in cfg.MODEL.NUM_CLASSES),
                             dropout=float(cfg.MODEL.DROPOUT_RATE), **slowfast_kwargs_from_config(cfg))


def output_activation_from_config(cfg) -> Optional[str]:
    """None (logits) when ``TEST.NO_ACT``, else ``MODEL.HEAD_ACT``."""
    return None if cfg.TEST.NO_ACT else str(cfg.MODEL.HEAD_ACT)


# ----------------------------------------------------------------------------------------- official key layout

def _rename(state_dict: Mapping[str, torch.Tensor], rename: Callable[[str], str], where: str
            ) -> "OrderedDict[str, torch.Tensor]":
    renamed = OrderedDict()
    for key, value in state_dict.items():
        if not key.startswith(_MODEL_PREFIX):
            raise ValueError(f"{where}: state-dict key {key!r} is not under '{_MODEL_PREFIX}' (only the network "
                             f"is expected in the task's state dict)")
        renamed[_MODEL_PREFIX + rename(key[len(_MODEL_PREFIX):])] = value
    return renamed


class OfficialLayoutTask(TaskModule):
    """A TaskModule whose checkpoints use the official key names of its network (``model.`` + official names).

    Subclasses set ``key_to_official`` / ``key_to_native`` (pure single-key converters of the network) and hold the
    network in ``self.model``.
    """

    key_to_official: Callable[[str], str]
    key_to_native: Callable[[str], str]

    def __init__(self, optim: Optional[OptimSettings] = None, *, id_field: Optional[str] = None) -> None:
        super().__init__(optim, id_field=id_field)
        #: Validation metrics of every epoch of this process's training (epoch -> metrics), so that the metrics of
        #: the best checkpoint can be reported without another validation pass.
        self.val_history: Dict[int, Dict[str, float]] = {}

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self.trainer.sanity_checking and "val" in self.split_metrics:
            self.val_history[int(self.current_epoch)] = dict(self.split_metrics["val"])

    def _to_native_key(self, key: str) -> str:
        try:
            return type(self).key_to_native(key)
        except ValueError:
            # Already native (a checkpoint written before conversion, or a state dict built in memory).
            type(self).key_to_official(key)
            return key

    def official_state_dict(self) -> "OrderedDict[str, torch.Tensor]":
        """The network's state dict as the released checkpoints store it: ``model.`` + official names."""
        return _rename(self.state_dict(), type(self).key_to_official, type(self).__name__)

    def native_state_dict(self, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
                          ) -> "OrderedDict[str, torch.Tensor]":
        """A ``model.``-prefixed state dict (official or native names) with this module's native names."""
        return _rename(state_dict, self._to_native_key, source)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["state_dict"] = _rename(checkpoint["state_dict"], type(self).key_to_official, "on_save_checkpoint")

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["state_dict"] = self.native_state_dict(checkpoint["state_dict"], "on_load_checkpoint")

    def load_weights(self, path: Union[str, Path]) -> Dict[str, Any]:
        """Load a whole-network checkpoint (official or ours: Lightning ``state_dict`` with ``model.`` keys) strictly.

        Returns:
            The container's other top-level entries (``epoch``, ``global_step``, ...).

        Raises:
            FileNotFoundError, ValueError: unreadable file, or keys/shapes that do not fit (all listed).
        """
        container = load_file(path)
        state_dict = extract_state_dict(container, source=str(path))
        if not any(key.startswith(_MODEL_PREFIX) for key in state_dict):
            state_dict = OrderedDict((_MODEL_PREFIX + key, value) for key, value in state_dict.items())
        native = self.native_state_dict(state_dict, str(path))
        load_state_dict_exact(self, native, source=str(path))
        if isinstance(container, Mapping) and "state_dict" in container:
            return {key: value for key, value in container.items() if key != "state_dict"}
        return {}

    def optimizer_named_parameters(self):
        # The original grouping rule ("bn" in the name → BN.WEIGHT_DECAY) must see the official names: the native
        # pytorchvideo names call BatchNorm layers "norm".
        return ((_MODEL_PREFIX + type(self).key_to_official(name[len(_MODEL_PREFIX):]), parameter)
                for name, parameter in self.named_parameters())

    def export_official(self, path: Union[str, Path], *, epoch: int = 0, global_step: int = 0,
                        hyper_parameters: Optional[dict] = None, monitor: str = "", mode: str = "min",
                        best_model_path: str = "", best_model_score: Optional[float] = None) -> Path:
        """Write the network as a Lightning-1.6 checkpoint in the official container and key layout.

        Args:
            path: destination (written atomically).
            epoch, global_step: training progress recorded in the file.
            hyper_parameters: e.g. ``{"cfg": cfg}`` (a yacs CfgNode loads back with ``weights_only=True``).
            monitor, mode, best_model_path, best_model_score: the ModelCheckpoint state stored under ``callbacks``.
        """
        extra: Dict[str, Any] = {}
        if hyper_parameters is not None:
            extra.update(hparams_name="kwargs", hyper_parameters=hyper_parameters)
        if monitor:
            extra["callbacks"] = model_checkpoint_callback_state(monitor, mode, best_model_path=best_model_path,
                                                                 best_model_score=best_model_score)
        return save_lightning_checkpoint(path, self.official_state_dict(), epoch=epoch, global_step=global_step,
                                         **extra)


def load_trunk_from_recognition_checkpoint(model: SlowFast, path: Union[str, Path]) -> None:
    """Initialise a SlowFast variant's trunk from a recognition checkpoint, skipping every ``head`` key.

    The official rule of LTA stage I (``DATA.CHECKPOINT_MODULE_FILE_PATH``) and of AR's Kinetics initialisation
    (``CHECKPOINT_FILE_PATH``): keys containing ``head`` are dropped, the trunk must match exactly, and only the
    target's own ``head.*`` keys stay missing.

    Raises:
        FileNotFoundError, ValueError: unreadable file, or trunk keys/shapes that do not fit (all listed).
    """
    state_dict = extract_state_dict(load_file(path), source=str(path))
    try:
        load_recognition_trunk(model, state_dict)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


# ----------------------------------------------------------------------------------------------------------- task

def _activate(logits: torch.Tensor, activation: Optional[str]) -> torch.Tensor:
    return logits if activation is None else torch.softmax(logits.float(), dim=-1)


class RecognitionTask(OfficialLayoutTask):
    """Stage-I AR: ``MultiTaskSlowFast`` trained with CE(verb) + CE(noun) (the original ``MultiTaskClassificationTask``).

    Batches are :class:`HOI.data.lta.RecognitionDataset` samples collated: ``slow (B, 3, T/alpha, S, S)``, ``fast
    (B, 3, T, S, S)``, ``verb (B,)``, ``noun (B,)``, ``uid`` (B strings).

    Args:
        model: the network (``self.model``).
        optim: optimiser and schedule (SGD Nesterov, cosine_warmup in the paper config).
        output_activation: None (logits, ``TEST.NO_ACT``) or "softmax" for the predicted scores.
    """

    key_to_official = staticmethod(slowfast_key_to_official)
    key_to_native = staticmethod(slowfast_key_to_native)

    def __init__(self, model: MultiTaskSlowFast, optim: Optional[OptimSettings] = None, *,
                 output_activation: Optional[str] = None) -> None:
        super().__init__(optim, id_field="uid")
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}")
        if len(model.num_classes) != 2:
            raise ValueError(f"RecognitionTask needs a verb and a noun head, got num_classes {model.num_classes}")
        self.model = model
        self.output_activation = output_activation

    @classmethod
    def from_config(cls, cfg) -> "RecognitionTask":
        """Network, optimiser and output activation from an LTA-tree config."""
        return cls(build_recognition_model(cfg), OptimSettings.from_cfg(cfg),
                   output_activation=output_activation_from_config(cfg))

    def forward(self, batch: Mapping[str, Any]):
        """``(verb_logits (B, 115), noun_logits (B, 478))``."""
        return self.model([batch["slow"], batch["fast"]])

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        verb_logits, noun_logits = self(batch)
        verb_loss = F.cross_entropy(verb_logits, batch["verb"])
        noun_loss = F.cross_entropy(noun_logits, batch["noun"])
        loss = verb_loss + noun_loss
        size = verb_logits.shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=size)
        self.log_dict({"train_verb_loss": verb_loss, "train_noun_loss": noun_loss,
                       "train_top1_verb_err": _batch_top1_err(verb_logits, batch["verb"]),
                       "train_top1_noun_err": _batch_top1_err(noun_logits, batch["noun"])}, batch_size=size)
        return loss

    def _evaluate(self, split: str, batch: Mapping[str, Any]) -> None:
        if (batch["verb"] < 0).any():
            raise ValueError(f"{split} batch holds unannotated samples (label -1): AR can only be evaluated on "
                             f"an annotated split")
        verb_logits, noun_logits = self(batch)
        self.record(split, uid=list(batch["uid"]), verb_logits=verb_logits.float(), noun_logits=noun_logits.float(),
                    verb=batch["verb"], noun=batch["noun"])

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def compute_metrics(self, split: str, records: Dict[str, Any]) -> Dict[str, float]:
        """Top-1/top-5 accuracy (fraction) and error (percent) of verbs and nouns over the whole split."""
        metrics = {}
        for head in ("verb", "noun"):
            logits = records[f"{head}_logits"]
            ks = [k for k in (1, 5) if k <= logits.shape[1]]
            for k, accuracy in topk_accuracy(logits, records[head], ks).items():
                metrics[f"top{k}_{head}_acc"] = accuracy
                metrics[f"top{k}_{head}_err"] = 100.0 * (1.0 - accuracy)
        return metrics

    def predict_batch(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        """``uid`` and verb/noun scores (logits, or softmax when configured)."""
        verb_logits, noun_logits = self(batch)
        return {"uid": list(batch["uid"]), "verb_scores": _activate(verb_logits, self.output_activation),
                "noun_scores": _activate(noun_logits, self.output_activation)}


def _batch_top1_err(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return 100.0 * (logits.argmax(dim=-1) != labels).float().mean()

