"""Stage-I Lightning tasks for PNR keyframe localisation and OSCC state-change classification.

Both train an I3D ResNet (``HOI.models.resnet3d``) held in ``self.model`` on the samples of
``HOI.data.fho.StateChangeDataset``::

    batch["frames"] (B, 3, T, S, S) raw 0-255
      -> KeyframeLocalizationResNet -> keyframe_logits (B, T)
           loss: sigmoid + BCE(mean) against keyframe_label (B, T)   ("bce", the released model)
                 or CE over the T frames against the keyframe index, state-change clips only ("cross_entropy")
           val:  PNR absolute error in seconds over the whole split (HOI.metrics.pnr_error), logged as
                 keyframe_loc_metric_time_dist_val and its negative keyframe_loc_metric_time_dist_val_neg (monitor)
           predict: pnr_frame_offset = (end - start) / T * argmax, the submit_pnr.json value
      -> StateChangeClsResNet -> state_logits (B, 2)
           loss: CE against state;  val: accuracy over the whole split, state_change_metric_val (monitor)
           predict: state_change = argmax == 1, the submit_oscc.json value

Checkpoint layout. Our network uses pytorchvideo's module names; the released ``ts_pnr`` / ``ts_oscc`` files use
PySlowFast's (``model.s1.pathway0_stem.conv.weight``). The tasks convert in ``on_save_checkpoint`` /
``on_load_checkpoint``, so every Lightning checkpoint they write (``last.ckpt``, the top-k ones) already has the
official ``state_dict`` keys, and official files and ours resume or evaluate alike.
:func:`export_stage_one_checkpoint` additionally writes the Lightning-1.6 container of the released files.

Optimiser groups follow the original rule on the *official* names (weight decay ``BN.WEIGHT_DECAY`` for parameters
whose name contains ``bn``, ``SOLVER.WEIGHT_DECAY`` for the rest): with our module names (``norm_a``) the rule would
miss every BatchNorm.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from egot2.checkpoint import (
    StripPrefix,
    apply_key_map,
    extract_state_dict,
    load_file,
    load_state_dict_exact,
    model_checkpoint_callback_state,
    save_lightning_checkpoint,
)
from egot2.engine import OptimSettings, TaskModule
from HOI import metrics
from HOI.models.resnet3d import (
    I3DResNet,
    KeyframeLocalizationResNet,
    StateChangeClsResNet,
    export_official,
    native_to_official,
    official_to_native,
)

__all__ = [
    "KEYFRAME_MONITOR",
    "STATE_CHANGE_MONITOR",
    "TASK_NAMES",
    "build_state_change_model",
    "official_named_parameters",
    "load_stage_one_checkpoint",
    "export_stage_one_checkpoint",
    "StateChangeTask",
    "KeyframeLocalizationTask",
    "StateChangeClassificationTask",
    "build_state_change_task",
    "DevicePlan",
    "plan_devices",
    "build_state_change_loader",
]

KEYFRAME_METRIC = "keyframe_loc_metric_time_dist_val"
KEYFRAME_MONITOR = KEYFRAME_METRIC + "_neg"
STATE_CHANGE_MONITOR = "state_change_metric_val"
#: ``DATA.TASK`` -> short task name used in file names (``ts_pnr.pth``, ``submit_pnr.json``).
TASK_NAMES = {"keyframe_localization": "pnr", "state_change_classification": "oscc"}
_MODEL_PREFIX = "model."


# ---------------------------------------------------------------------------------------------------------------
# Models, weights, export
# ---------------------------------------------------------------------------------------------------------------


def build_state_change_model(cfg) -> I3DResNet:
    """The stage-I network a PNR-tree config describes (``MODEL.MODEL_NAME``, ``RESNET.*``, ``DATA.*``)."""
    from HOI.config import pnr_num_frames

    common = dict(depth=int(cfg.RESNET.DEPTH), width=int(cfg.RESNET.WIDTH_PER_GROUP), num_frames=pnr_num_frames(cfg),
                  crop_size=int(cfg.DATA.CROP_SIZE), dropout_rate=float(cfg.MODEL.DROPOUT_RATE))
    if cfg.MODEL.MODEL_NAME == "KeyframeLocalizationResNet":
        return KeyframeLocalizationResNet(**common)
    if cfg.MODEL.MODEL_NAME == "StateChangeClsResNet":
        return StateChangeClsResNet(no_temp_pool=bool(cfg.MODEL.NO_TEMP_POOL), **common)
    raise ValueError(f"MODEL.MODEL_NAME: unknown stage-I model {cfg.MODEL.MODEL_NAME!r}")


def official_named_parameters(model: I3DResNet, prefix: str = _MODEL_PREFIX) -> list:
    """``[(official name, parameter), ...]`` of ``model`` (``model.s2.pathway0_res0.branch2.a_bn.weight``, ...)."""
    native = OrderedDict(model.named_parameters())
    official = native_to_official(native, head_name=model.official_head_name)
    return [(prefix + name, parameter) for name, parameter in official.items()]


def _is_official(state_dict) -> bool:
    return any(key.startswith("s1.pathway0_stem.") for key in state_dict)


def load_stage_one_checkpoint(model: I3DResNet, path: Union[str, Path]) -> dict:
    """Load a PNR/OSCC checkpoint into ``model`` strictly.

    Accepts the released ``ts_pnr`` / ``ts_oscc`` files, our exports and our Lightning checkpoints (all official
    keys under ``model.``), as well as state dicts in our own module names.

    Returns:
        The container's other top-level entries (``epoch``, ``global_step``, ...).

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unreadable file, or keys of which only some carry the ``model.`` prefix.
        CheckpointMismatchError: keys or shapes that do not fit (all listed), e.g. a ``ts_oscc`` file given to the
            PNR model.
    """
    obj = load_file(path)
    state_dict = extract_state_dict(obj, source=str(path))
    if any(key.startswith(_MODEL_PREFIX) for key in state_dict):
        state_dict = apply_key_map(state_dict, [StripPrefix(_MODEL_PREFIX, required=True)])
    if _is_official(state_dict):
        state_dict = official_to_native(state_dict)
    load_state_dict_exact(model, state_dict, source=str(path))
    return {key: value for key, value in obj.items() if key != "state_dict"} if isinstance(obj, dict) else {}


def export_stage_one_checkpoint(
    model: I3DResNet,
    path: Union[str, Path],
    *,
    epoch: int = 0,
    global_step: int = 0,
    cfg=None,
    monitor: Optional[str] = None,
    mode: str = "max",
    best_model_path: str = "",
    best_model_score: Optional[float] = None,
) -> Path:
    """Write ``model`` as a released-style ``ts_pnr`` / ``ts_oscc`` file (PyTorch-Lightning 1.6 container).

    ``state_dict`` holds the official ``model.``-prefixed keys in the official order; ``epoch``, ``global_step`` and
    ``pytorch-lightning_version`` are set; with ``cfg`` the merged config is stored as ``hyper_parameters["cfg"]``
    (as the original task's ``save_hyperparameters`` did); with ``monitor`` a ModelCheckpoint callback state is added.

    Returns:
        ``path``.
    """
    extra: dict[str, Any] = {}
    if cfg is not None:
        extra.update(hparams_name="kwargs", hyper_parameters={"cfg": cfg})
    if monitor:
        extra["callbacks"] = model_checkpoint_callback_state(
            monitor, mode, best_model_path=str(best_model_path), best_model_score=best_model_score,
            dirpath=str(Path(best_model_path).parent) if best_model_path else "")
    return save_lightning_checkpoint(path, export_official(model), epoch=epoch, global_step=global_step, **extra)


def _activation(name: str, logits: torch.Tensor, dim: int) -> torch.Tensor:
    if name == "sigmoid":
        return torch.sigmoid(logits)
    if name == "softmax":
        return torch.softmax(logits, dim=dim)
    return logits


# ---------------------------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------------------------


class StateChangeTask(TaskModule):
    """Shared part of the two tasks: official checkpoint layout, BN weight-decay grouping, batch unpacking.

    Args:
        model: the network (kept as ``self.model``).
        optim: optimiser and schedule.

    Attributes:
        monitor: the logged metric that selects checkpoints (larger is better).
    """

    monitor: str = ""

    def __init__(self, model: I3DResNet, optim: Optional[OptimSettings] = None) -> None:
        super().__init__(optim, id_field="unique_id")
        self.model = model

    # --------------------------------------------------------------------------------------------- optimiser
    def optimizer_named_parameters(self):
        # The "bn" weight-decay grouping follows the official names, as the released files were trained.
        return official_named_parameters(self.model)

    # --------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Rewrite ``checkpoint["state_dict"]`` to the official key layout (``model.s1.pathway0_stem...``)."""
        state_dict = checkpoint["state_dict"]
        network = OrderedDict((k[len(_MODEL_PREFIX):], v) for k, v in state_dict.items() if k.startswith(_MODEL_PREFIX))
        official = native_to_official(network, head_name=self.model.official_head_name)
        others = [(k, v) for k, v in state_dict.items() if not k.startswith(_MODEL_PREFIX)]
        checkpoint["state_dict"] = OrderedDict([*((_MODEL_PREFIX + k, v) for k, v in official.items()), *others])

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Accept official keys (ours and the released files) by renaming them back to our module names."""
        state_dict = checkpoint.get("state_dict", {})
        network = OrderedDict((k[len(_MODEL_PREFIX):], v) for k, v in state_dict.items() if k.startswith(_MODEL_PREFIX))
        if not _is_official(network):
            return
        native = official_to_native(network)
        others = [(k, v) for k, v in state_dict.items() if not k.startswith(_MODEL_PREFIX)]
        checkpoint["state_dict"] = OrderedDict([*((_MODEL_PREFIX + k, v) for k, v in native.items()), *others])

    # --------------------------------------------------------------------------------------------- helpers
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model(frames)

    def _window_fields(self, batch: dict) -> dict:
        return {name: batch[name] for name in ("pnr_frame", "start_frame", "end_frame", "start_sec", "end_sec",
                                               "state")}

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def _evaluate(self, batch: dict, batch_idx: int, split: str) -> None:
        raise NotImplementedError

    def on_validation_epoch_end(self) -> None:
        self.split_metrics.pop("val", None)
        super().on_validation_epoch_end()
        if "val" in self.split_metrics:
            self._log_monitor(self.split_metrics["val"])

    def _log_monitor(self, metrics_val: dict) -> None:
        raise NotImplementedError


class KeyframeLocalizationTask(StateChangeTask):
    """PNR stage I: where in the window does the state change happen.

    Args:
        model: a :class:`KeyframeLocalizationResNet`.
        optim: optimiser and schedule (the paper: AdamW 1e-4, constant).
        loss_func: "bce" (sigmoid + BCE against the one-hot label, mean over all elements; the released model) or
            "cross_entropy" (softmax over frames against the keyframe index; clips without a state change count 0).
        legacy_batch_mean: report the error as the mean of per-batch means, as the original code did, instead of
            the per-clip mean over the whole split.
        activation: "none", "sigmoid" or "softmax" for the ``keyframe_scores`` prediction output.
    """

    monitor = KEYFRAME_MONITOR

    def __init__(self, model: KeyframeLocalizationResNet, optim: Optional[OptimSettings] = None, *,
                 loss_func: str = "bce", legacy_batch_mean: bool = False, activation: str = "none") -> None:
        if not isinstance(model, KeyframeLocalizationResNet):
            raise ValueError(f"KeyframeLocalizationTask needs a KeyframeLocalizationResNet, got {type(model).__name__}")
        if loss_func not in ("bce", "cross_entropy"):
            raise ValueError(f"loss_func must be 'bce' or 'cross_entropy', got {loss_func!r}")
        super().__init__(model, optim)
        self.loss_func = loss_func
        self.legacy_batch_mean = legacy_batch_mean
        self.activation = activation

    def keyframe_loss(self, keyframe_logits: torch.Tensor, keyframe_label: torch.Tensor,
                      state: torch.Tensor) -> torch.Tensor:
        """Training loss.

        Args:
            keyframe_logits: (B, T).
            keyframe_label: (B, T) one-hot (zeros without a state change).
            state: (B,) 1 = state change.
        """
        if self.loss_func == "bce":
            return F.binary_cross_entropy_with_logits(keyframe_logits, keyframe_label.to(keyframe_logits.dtype))
        per_clip = F.cross_entropy(keyframe_logits, keyframe_label.argmax(dim=1), reduction="none")
        return (per_clip * (state == 1).to(per_clip.dtype)).mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        keyframe_logits = self.model(batch["frames"])
        loss = self.keyframe_loss(keyframe_logits, batch["keyframe_label"], batch["state"])
        positive = batch["state"] == 1
        batch_size = len(batch["unique_id"])
        self.log("train_loss", loss, prog_bar=True, batch_size=batch_size)
        if positive.any():
            hits = keyframe_logits.argmax(dim=1) == batch["keyframe_label"].argmax(dim=1)
            self.log("train_keyframe_accuracy", hits[positive].float().mean(), batch_size=int(positive.sum()))
        return loss

    def _evaluate(self, batch: dict, batch_idx: int, split: str) -> None:
        keyframe_logits = self.model(batch["frames"])
        rank = self.global_rank if self._trainer is not None else 0
        world = self.trainer.world_size if self._trainer is not None else 1
        batch_key = torch.full((len(batch["unique_id"]),), batch_idx * world + rank, dtype=torch.long)
        self.record(split, unique_id=list(batch["unique_id"]), keyframe_logits=keyframe_logits.float(),
                    batch_key=batch_key, **self._window_fields(batch))

    def compute_metrics(self, split: str, records: dict) -> dict:
        """PNR error (s): per-clip mean, legacy batch mean, and the always-the-centre baseline; positives only."""
        windows = {name: records[name] for name in ("pnr_frame", "start_frame", "end_frame", "start_sec", "end_sec",
                                                     "state")}
        positive = (records["state"] == 1).numpy()
        errors = metrics.pnr_error(records["keyframe_logits"], **windows)
        centre = metrics.pnr_center_baseline_error(**windows)
        batch_keys = records["batch_key"].numpy()
        per_batch = [errors[batch_keys[positive] == key] for key in np.unique(batch_keys)]
        return {
            "keyframe_error": metrics.mean_error(errors),
            "keyframe_error_batch_mean": metrics.batch_mean_error(per_batch),
            "keyframe_center_error": metrics.mean_error(centre),
            "num_positive_clips": float(positive.sum()),
        }

    def _log_monitor(self, metrics_val: dict) -> None:
        error = metrics_val["keyframe_error_batch_mean" if self.legacy_batch_mean else "keyframe_error"]
        self.log(KEYFRAME_METRIC, error, prog_bar=True, sync_dist=True, reduce_fx="max")
        self.log(KEYFRAME_MONITOR, -error, sync_dist=True, reduce_fx="max")
        self.log(KEYFRAME_METRIC.replace("time_dist", "center_baseline"), metrics_val["keyframe_center_error"],
                 sync_dist=True, reduce_fx="max")

    def predict_batch(self, batch: dict) -> dict:
        """``unique_id``, ``pnr_frame_offset`` (frames after ``parent_start_frame``), ``keyframe_scores`` (B, T)."""
        keyframe_logits = self.model(batch["frames"]).float()
        offsets = metrics.pnr_keyframe_offset(keyframe_logits, batch["start_frame"], batch["end_frame"])
        return {"unique_id": list(batch["unique_id"]), "pnr_frame_offset": torch.from_numpy(offsets),
                "keyframe_scores": _activation(self.activation, keyframe_logits, dim=1)}


class StateChangeClassificationTask(StateChangeTask):
    """OSCC stage I: did the object change state in this window.

    Args:
        model: a :class:`StateChangeClsResNet` pooled over the clip (``no_temp_pool=False``).
        optim: optimiser and schedule (the paper: AdamW 1e-4, cosine per step).
        activation: "none", "sigmoid" or "softmax" for the ``state_scores`` prediction output.
    """

    monitor = STATE_CHANGE_MONITOR

    def __init__(self, model: StateChangeClsResNet, optim: Optional[OptimSettings] = None, *,
                 activation: str = "none") -> None:
        if not isinstance(model, StateChangeClsResNet):
            raise ValueError(f"StateChangeClassificationTask needs a StateChangeClsResNet, got {type(model).__name__}")
        if model.no_temp_pool:
            raise ValueError("StateChangeClassificationTask: MODEL.NO_TEMP_POOL True builds the per-frame OSCC model "
                             "EgoT2 translators read features from; stage-I training and evaluation need False")
        super().__init__(model, optim)
        self.activation = activation

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        state_logits = self.model(batch["frames"])
        loss = F.cross_entropy(state_logits, batch["state"])
        batch_size = len(batch["unique_id"])
        self.log("train_loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train_state_change_accuracy", (state_logits.argmax(dim=1) == batch["state"]).float().mean(),
                 batch_size=batch_size)
        return loss

    def _evaluate(self, batch: dict, batch_idx: int, split: str) -> None:
        state_logits = self.model(batch["frames"])
        self.record(split, unique_id=list(batch["unique_id"]), state_logits=state_logits.float(), state=batch["state"])

    def compute_metrics(self, split: str, records: dict) -> dict:
        """OSCC accuracy over every recorded clip."""
        return {"state_change_accuracy": metrics.oscc_accuracy(records["state_logits"], records["state"])}

    def _log_monitor(self, metrics_val: dict) -> None:
        self.log(STATE_CHANGE_MONITOR, metrics_val["state_change_accuracy"], prog_bar=True, sync_dist=True,
                 reduce_fx="max")

    def predict_batch(self, batch: dict) -> dict:
        """``unique_id``, ``state_change`` (bool, arg-max is index 1), ``state_scores`` (B, 2)."""
        state_logits = self.model(batch["frames"]).float()
        return {"unique_id": list(batch["unique_id"]), "state_change": state_logits.argmax(dim=1) == 1,
                "state_scores": _activation(self.activation, state_logits, dim=1)}


def build_state_change_task(cfg, model: Optional[I3DResNet] = None) -> StateChangeTask:
    """The task ``DATA.TASK`` names, with its network (built from ``cfg`` unless given) and ``SOLVER`` settings.

    ``MODEL.LOSS_FUNC``, ``MODEL.KEYFRAME_DETECTION_ACT`` / ``STATE_CHANGE_ACT`` and ``TEST.LEGACY_BATCH_MEAN`` are
    passed on.
    """
    model = build_state_change_model(cfg) if model is None else model
    optim = OptimSettings.from_cfg(cfg)
    if cfg.DATA.TASK == "keyframe_localization":
        return KeyframeLocalizationTask(model, optim, loss_func=cfg.MODEL.LOSS_FUNC,
                                        legacy_batch_mean=bool(cfg.TEST.LEGACY_BATCH_MEAN),
                                        activation=cfg.MODEL.KEYFRAME_DETECTION_ACT)
    if cfg.DATA.TASK == "state_change_classification":
        return StateChangeClassificationTask(model, optim, activation=cfg.MODEL.STATE_CHANGE_ACT)
    raise ValueError(f"DATA.TASK: unknown PNR-tree task {cfg.DATA.TASK!r}")


# ---------------------------------------------------------------------------------------------------------------
# Devices and loaders
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DevicePlan:
    """How a run with ``requested`` GPUs per node executes on the devices that exist.

    Attributes:
        num_gpus: GPUs per node to use (0 = CPU, one process per node).
        accumulate: micro-batches accumulated per optimisation step.
        train_batch: training micro-batch per process.
        test_batch: evaluation batch per process.
        message: what differs from the request (empty when nothing does).
    """

    num_gpus: int
    accumulate: int
    train_batch: int
    test_batch: int
    message: str = ""


def plan_devices(requested: int, available: int, train_batch: int, test_batch: int, num_nodes: int = 1) -> DevicePlan:
    """Run a ``requested``-GPU configuration on ``available`` GPUs (per node).

    Batch sizes are global. Every device of the requested run would see ``batch / (requested x nodes)`` clips, and
    that stays the per-process batch (so BatchNorm statistics cover the same number of clips); with fewer devices
    each step accumulates ``requested / used`` micro-batches, which keeps the global batch and the loss scale.
    With no GPU the run falls back to the CPU. ``used`` is the largest divisor of ``requested`` not above
    ``available``.
    """
    slots = max(int(requested), 1) * max(int(num_nodes), 1)
    if train_batch % slots:
        raise ValueError(f"TRAIN.BATCH_SIZE {train_batch} does not split over {slots} devices (NUM_GPUS x NUM_SHARDS)")
    per_device, per_device_test = train_batch // slots, max(test_batch // slots, 1)
    if requested <= 0:
        return DevicePlan(0, 1, per_device, per_device_test)
    used = max((d for d in range(1, int(requested) + 1) if requested % d == 0 and d <= available), default=0)
    accumulate = int(requested) // max(used, 1)
    if used == requested:
        return DevicePlan(used, 1, per_device, per_device_test)
    where = "the CPU" if used == 0 else f"{used} GPU{'s' if used > 1 else ''}"
    seen = "no CUDA device is visible" if available == 0 else f"only {available} CUDA device(s) are visible"
    message = (f"NUM_GPUS = {requested} but {seen}: running on {where}; each optimisation step accumulates "
               f"{accumulate} micro-batches of {per_device} clips (global batch {train_batch}, BatchNorm statistics "
               f"over {per_device} clips as on each of the {requested} requested GPUs)")
    return DevicePlan(used, accumulate, per_device, per_device_test, message)


def build_state_change_loader(dataset, batch_size: int, *, train: bool, cfg=None, num_workers: int = 0,
                              pin_memory: bool = False, world_size: int = 1) -> DataLoader:
    """DataLoader for :class:`~HOI.data.fho.StateChangeDataset` (default collation; no ``None`` in samples).

    Training shuffles (``DATA_LOADER.SHUFFLE``) and drops the last incomplete batch (``DATA_LOADER.DROP_LAST``),
    except that the only batch of a split smaller than one batch per process is kept, so a tiny set still trains.
    With ``cfg`` the loader settings come from ``DATA_LOADER.*``.
    """
    shuffle, drop_last = train, train
    if cfg is not None:
        num_workers = int(cfg.DATA_LOADER.NUM_WORKERS)
        pin_memory = bool(cfg.DATA_LOADER.PIN_MEMORY) and pin_memory
        shuffle = train and bool(cfg.DATA_LOADER.SHUFFLE)
        drop_last = train and bool(cfg.DATA_LOADER.DROP_LAST)
    if drop_last and -(-len(dataset) // max(world_size, 1)) < batch_size:
        drop_last = False
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=False)
