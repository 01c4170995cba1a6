"""Training engine shared by every task: the ``TaskModule`` base LightningModule and ``build_trainer``.

``TaskModule`` owns what every task repeats: the optimiser with the original name-based weight-decay grouping, the
learning-rate schedule, whole-split metric bookkeeping that is correct under DDP, and a prediction hook for the
submission writers. A task subclass only implements its steps and ``compute_metrics``::

    class LookingAtMe(TaskModule):
        def __init__(self, model, optim):
            super().__init__(optim, id_field="uid")
            self.model = model
        def training_step(self, batch, batch_idx):
            ...
        def validation_step(self, batch, batch_idx):
            self.record("val", uid=batch["uid"], score=probabilities[:, 1], label=batch["label"])
        def compute_metrics(self, split, records):
            return {"mAP": voc_map(records["score"], records["label"])}     # logged as val_mAP

Networks stay plain ``nn.Module``s; only the task classes import Lightning.
"""
from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

__all__ = [
    "OptimSettings",
    "parameter_groups",
    "build_optimizer",
    "build_lr_scheduler",
    "lr_factor",
    "TaskModule",
    "predict_records",
    "build_trainer",
    "build_trainer_from_cfg",
    "find_resume_checkpoint",
    "resume_checkpoint_from_cfg",
    "CHECKPOINT_DIRNAME",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_POLICIES = ("constant", "cosine", "cosine_warmup", "step_decay")
INTERVALS = ("step", "epoch")
CHECKPOINT_DIRNAME = "checkpoints"
SPLITS = ("train", "val", "test", "predict")


# ---------------------------------------------------------------------------------------------------------------
# Optimisation
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptimSettings:
    """Optimiser and learning-rate schedule of a task (plain values; ``from_cfg`` reads them from a config).

    Attributes:
        method: "sgd", "adam" (coupled L2 weight decay) or "adamw" (decoupled weight decay).
        lr: base learning rate.
        momentum, nesterov, dampening: SGD settings.
        betas, eps: Adam/AdamW settings.
        weight_decay: decay of every trainable parameter (except the "bn" group below).
        bn_weight_decay: if not None, parameters whose name contains "bn" form their own group with this decay
            (the original HOI grouping rule, ``BN.WEIGHT_DECAY``); None = one group.
        lr_policy: "constant"; "cosine" (to 0 over all scheduler intervals); "cosine_warmup" (linear warm-up from
            0 over ``warmup_steps`` intervals, then half cosine to 0); "step_decay" (x ``gamma`` every
            ``step_size`` intervals).
        warmup_steps: warm-up length of "cosine_warmup", in scheduler intervals.
        gamma, step_size: "step_decay" factor and period.
        interval: when the scheduler advances, "step" (every optimisation step, as the original HOI trainers and
            the legacy EgoT2 ASD decay) or "epoch".
    """

    method: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = True
    dampening: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    bn_weight_decay: float | None = None
    lr_policy: str = "constant"
    warmup_steps: int = 1000
    gamma: float = 0.95
    step_size: int = 1
    interval: str = "step"

    def __post_init__(self) -> None:
        for name, value, allowed in (("method", self.method, OPTIMIZERS), ("lr_policy", self.lr_policy, LR_POLICIES),
                                     ("interval", self.interval, INTERVALS)):
            if value not in allowed:
                raise ValueError(f"OptimSettings.{name} must be one of {list(allowed)}, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"OptimSettings.lr must be positive, got {self.lr}")
        if self.step_size < 1 or self.warmup_steps < 0:
            raise ValueError("OptimSettings.step_size must be >= 1 and warmup_steps >= 0")

    @classmethod
    def from_cfg(cls, cfg: Any) -> "OptimSettings":
        """Read ``SOLVER.*`` and ``BN.WEIGHT_DECAY`` of an ``egot2.config`` tree."""
        solver = cfg.SOLVER
        return cls(method=solver.OPTIMIZING_METHOD, lr=float(solver.BASE_LR), momentum=float(solver.MOMENTUM),
                   nesterov=bool(solver.NESTEROV), dampening=float(solver.DAMPENING),
                   betas=tuple(float(beta) for beta in solver.BETAS), weight_decay=float(solver.WEIGHT_DECAY),
                   bn_weight_decay=float(cfg.BN.WEIGHT_DECAY), lr_policy=solver.LR_POLICY,
                   warmup_steps=int(solver.WARMUP_STEPS), gamma=float(solver.LR_DECAY),
                   step_size=int(solver.STEP_SIZE), interval=solver.SCHEDULER_INTERVAL)


def parameter_groups(named_parameters: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float,
                     bn_weight_decay: float | None = None) -> list[dict[str, Any]]:
    """Split trainable parameters into weight-decay groups.

    Parameters with ``requires_grad=False`` (frozen backbones) are left out. The original code handed them to the
    optimiser anyway; they never receive a gradient, so the optimiser never touches them and the result is the
    same.

    Args:
        named_parameters: ``module.named_parameters()``.
        weight_decay: decay of ordinary parameters.
        bn_weight_decay: decay of parameters whose name contains "bn"; None puts everything in one group.

    Returns:
        Optimiser parameter groups (empty groups omitted).
    """
    regular, batch_norm = [], []
    for name, parameter in named_parameters:
        if not parameter.requires_grad:
            continue
        (batch_norm if bn_weight_decay is not None and "bn" in name else regular).append(parameter)
    groups = []
    if regular:
        groups.append({"params": regular, "weight_decay": weight_decay})
    if batch_norm:
        groups.append({"params": batch_norm, "weight_decay": bn_weight_decay})
    if not groups:
        raise ValueError("the module has no trainable parameters to optimise")
    return groups


def build_optimizer(named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
                    settings: OptimSettings) -> torch.optim.Optimizer:
    """Optimiser over the trainable parameters with the settings' weight-decay grouping."""
    groups = parameter_groups(named_parameters, settings.weight_decay, settings.bn_weight_decay)
    if settings.method == "sgd":
        return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=settings.nesterov,
                               dampening=settings.dampening)
    optimizer_class = torch.optim.Adam if settings.method == "adam" else torch.optim.AdamW
    return optimizer_class(groups, lr=settings.lr, betas=settings.betas, eps=settings.eps)


def lr_factor(settings: OptimSettings, step: int, total: int) -> float:
    """Learning-rate multiplier after ``step`` scheduler intervals out of ``total`` (what the schedulers apply)."""
    if settings.lr_policy == "constant":
        return 1.0
    if settings.lr_policy == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    if settings.lr_policy == "cosine_warmup":
        return _warmup_cosine(step, warmup_steps=settings.warmup_steps, total=total)
    return settings.gamma ** (step // settings.step_size)


def _warmup_cosine(step: int, *, warmup_steps: int, total: int) -> float:
    if step < warmup_steps:
        return step / warmup_steps
    remaining = max(total - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, remaining) / remaining))


def build_lr_scheduler(optimizer: torch.optim.Optimizer, settings: OptimSettings, total: int | float
                       ) -> dict[str, Any] | None:
    """Lightning scheduler config for the settings' policy, or None for "constant".

    Args:
        optimizer: the optimiser to schedule.
        settings: the policy.
        total: number of scheduler intervals in the whole run (optimisation steps for interval "step", epochs for
            "epoch"); needed by the cosine policies.
    """
    if settings.lr_policy == "constant":
        return None
    if settings.lr_policy in ("cosine", "cosine_warmup") and (not math.isfinite(float(total)) or total < 1):
        raise ValueError(f"lr_policy {settings.lr_policy!r} needs a finite number of scheduler intervals, got {total}")
    if settings.lr_policy == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(total), eta_min=0.0)
    elif settings.lr_policy == "cosine_warmup":
        # A partial (not a lambda) so LambdaLR.state_dict stays plain data and checkpoints load with weights_only.
        factor = functools.partial(_warmup_cosine, warmup_steps=settings.warmup_steps, total=int(total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.step_size, gamma=settings.gamma)
    return {"scheduler": scheduler, "interval": settings.interval, "frequency": 1}


# ---------------------------------------------------------------------------------------------------------------
# TaskModule
# ---------------------------------------------------------------------------------------------------------------
class TaskModule(pl.LightningModule):
    """Base LightningModule of every task: optimisation, whole-split metrics across processes, prediction.

    Subclasses implement ``training_step`` / ``validation_step`` / ``test_step`` as usual and, in the evaluation
    steps, call :meth:`record` with per-sample values. At the end of each epoch of a split the records of all
    processes are gathered, de-duplicated by ``id_field`` (DistributedSampler repeats samples to even out the
    shards), sorted by id, passed to :meth:`compute_metrics`, and the returned values are logged as
    ``<split>_<name>`` (``val_mAP``). For prediction, subclasses implement :meth:`predict_batch`; see
    :func:`predict_records`. Subclasses that override the ``on_*_epoch_end`` hooks must call ``super()``.

    Args:
        optim: optimiser and schedule settings.
        id_field: name of a recorded field that identifies a sample (str list or integer tensor); None disables
            de-duplication (then padded DDP shards count repeated samples twice).
    """

    def __init__(self, optim: OptimSettings | None = None, *, id_field: str | None = None):
        super().__init__()
        self.optim_settings = optim if optim is not None else OptimSettings()
        self.id_field = id_field
        self._records: dict[str, dict[str, list]] = {}
        self.gathered: dict[str, dict[str, Any]] = {}
        self.split_metrics: dict[str, dict[str, float]] = {}

    # --------------------------------------------------------------------------------------------- optimiser
    def optimizer_named_parameters(self) -> Iterable[tuple[str, torch.nn.Parameter]]:
        """The (name, parameter) pairs the optimiser sees; names drive the "bn" weight-decay grouping.

        Override when the grouping must follow other names than the module's own (e.g. official checkpoint names).
        """
        return self.named_parameters()

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.optimizer_named_parameters(), self.optim_settings)
        if self.optim_settings.lr_policy == "constant":
            return optimizer
        if self.optim_settings.interval == "step":
            total = self.trainer.estimated_stepping_batches
        else:
            total = self.trainer.max_epochs
        scheduler = build_lr_scheduler(optimizer, self.optim_settings, total)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # --------------------------------------------------------------------------------------------- records
    def record(self, split: str, **fields: torch.Tensor | Sequence[Any]) -> None:
        """Keep per-sample values of one batch for the split's metrics.

        Args:
            split: "train", "val", "test" or "predict".
            **fields: each a tensor whose first dimension is the batch (``score=[B]``, ``logits=[B, C]``) or a
                list of B python values (``uid=["vid:12:3", ...]``); all fields of one call have the same B.
        """
        if split not in SPLITS:
            raise ValueError(f"record: split must be one of {SPLITS}, got {split!r}")
        sizes = {}
        for name, value in fields.items():
            if isinstance(value, torch.Tensor):
                if value.dim() == 0:
                    raise ValueError(f"record({split!r}): field '{name}' is a scalar; "
                                     "record per-sample values [B, ...]")
                sizes[name] = value.shape[0]
            elif isinstance(value, (list, tuple)):
                sizes[name] = len(value)
            else:
                raise ValueError(f"record({split!r}): field '{name}' must be a tensor or a list, "
                                 f"got {type(value).__name__}")
        if len(set(sizes.values())) > 1:
            raise ValueError(f"record({split!r}): fields have different batch sizes {sizes}")
        store = self._records.setdefault(split, {})
        for name, value in fields.items():
            kind = torch.Tensor if isinstance(value, torch.Tensor) else list
            if store.get(name) and not isinstance(store[name][0], kind):
                raise ValueError(f"record({split!r}): field '{name}' switched between tensor and list")
            store.setdefault(name, []).append(value.detach() if kind is torch.Tensor else list(value))

    def compute_metrics(self, split: str, records: dict[str, Any]) -> dict[str, float]:
        """Whole-split metrics from every recorded sample (all processes, de-duplicated, sorted by id).

        Args:
            split: "train", "val" or "test".
            records: field -> CPU tensor [N, ...] or list of N values.

        Returns:
            metric name -> value, logged as ``<split>_<name>``.
        """
        raise NotImplementedError(f"{type(self).__name__} records '{split}' values but does not implement "
                                  "compute_metrics(split, records)")

    def predict_batch(self, batch: Any) -> dict[str, torch.Tensor | Sequence[Any]]:
        """Per-sample predictions of one batch (same field rules as :meth:`record`)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement predict_batch(batch)")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        outputs = self.predict_batch(batch)
        self.record("predict", **outputs)
        return outputs

    def on_train_epoch_end(self) -> None:
        self._finish_split("train")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            # A few sanity batches are not the split: discard them instead of logging a misleading metric.
            self._records.pop("val", None)
            return
        self._finish_split("val")

    def on_test_epoch_end(self) -> None:
        self._finish_split("test")

    def on_predict_epoch_end(self) -> None:
        self.gathered["predict"] = self._gather_records("predict")

    def _finish_split(self, split: str) -> None:
        if split not in self._records:
            return
        records = self._gather_records(split)
        self.gathered[split] = records
        metrics = {name: float(value) for name, value in self.compute_metrics(split, records).items()}
        self.split_metrics[split] = metrics
        for name, value in metrics.items():
            # Every process computed the same value from the same gathered records; "max" keeps it bit-exact
            # where a mean over processes could round.
            self.log(f"{split}_{name}", value, prog_bar=split != "train", sync_dist=True, reduce_fx="max")

    def _gather_records(self, split: str) -> dict[str, Any]:
        local = {name: _concatenate(split, name, values) for name, values in self._records.pop(split, {}).items()}
        if self._trainer is not None and self.trainer.world_size > 1 and dist.is_available() \
                and dist.is_initialized():
            merged = self._gather_across_processes(split, local)
        else:
            merged = {name: value.cpu() if isinstance(value, torch.Tensor) else value for name, value in local.items()}
        return _deduplicate(split, merged, self.id_field)

    def _gather_across_processes(self, split: str, local: dict[str, Any]) -> dict[str, Any]:
        world = dist.get_world_size()
        layout = {name: (("tensor", tuple(value.shape), str(value.dtype)) if isinstance(value, torch.Tensor)
                         else ("list", (len(value),), "")) for name, value in local.items()}
        layouts: list[dict] = [None] * world
        dist.all_gather_object(layouts, layout)
        names = sorted({name for each in layouts for name in each})
        merged: dict[str, Any] = {}
        for name in names:
            entries = [each.get(name) for each in layouts]
            kinds = {entry[0] for entry in entries if entry is not None}
            if len(kinds) != 1:
                raise ValueError(f"'{split}' field '{name}' is a tensor on some processes and a list on others")
            if kinds == {"list"}:
                parts: list[list] = [None] * world
                dist.all_gather_object(parts, local.get(name, []))
                merged[name] = [item for part in parts for item in part]
                continue
            shapes = {entry[1][1:] for entry in entries if entry is not None}
            dtypes = {entry[2] for entry in entries if entry is not None}
            if len(shapes) != 1 or len(dtypes) != 1:
                raise ValueError(f"'{split}' field '{name}' has different shapes/dtypes across processes: "
                                 f"{sorted(shapes)} {sorted(dtypes)}")
            trailing, dtype = shapes.pop(), getattr(torch, dtypes.pop().replace("torch.", ""))
            counts = [entry[1][0] if entry is not None else 0 for entry in entries]
            # all_gather needs equal shapes on every process: pad to the longest shard, cut after gathering.
            transport = torch.uint8 if dtype == torch.bool else dtype
            padded = torch.zeros((max(counts), *trailing), dtype=transport, device=self.device)
            if name in local and counts[dist.get_rank()]:
                padded[: counts[dist.get_rank()]] = local[name].to(device=self.device, dtype=transport)
            gathered = self.all_gather(padded)
            merged[name] = torch.cat([gathered[rank, :count] for rank, count in enumerate(counts)]).to(dtype).cpu()
        return merged


def _concatenate(split: str, name: str, values: list) -> Any:
    if isinstance(values[0], torch.Tensor):
        trailing = {tuple(value.shape[1:]) for value in values}
        if len(trailing) > 1:
            raise ValueError(f"'{split}' field '{name}' was recorded with different per-sample shapes "
                             f"{sorted(trailing)}; record ragged values as a list")
        return torch.cat(values)
    return [item for value in values for item in value]


def _deduplicate(split: str, records: dict[str, Any], id_field: str | None) -> dict[str, Any]:
    if not records or id_field is None:
        return records
    if id_field not in records:
        raise ValueError(f"'{split}' records have no id field '{id_field}' (fields: {sorted(records)})")
    ids = records[id_field]
    keys = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    keys = [tuple(key) if isinstance(key, list) else key for key in keys]
    lengths = {name: len(value) for name, value in records.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"'{split}' fields have different lengths {lengths}; cannot de-duplicate by '{id_field}'")
    first: dict[Any, int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    order = list(first.values())
    try:
        # Sorting makes the record order independent of how samples were sharded over processes.
        order.sort(key=lambda index: keys[index])
    except TypeError:
        pass
    index = torch.tensor(order, dtype=torch.long)
    return {name: value.index_select(0, index) if isinstance(value, torch.Tensor) else [value[i] for i in order]
            for name, value in records.items()}


def predict_records(trainer: pl.Trainer, module: TaskModule, dataloaders: Any,
                    ckpt_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run ``trainer.predict`` and return the predictions of the whole split, gathered from every process.

    Args:
        trainer: a trainer from :func:`build_trainer`.
        module: the task; its :meth:`TaskModule.predict_batch` gives the per-sample fields.
        dataloaders: the prediction loader(s).
        ckpt_path: optional checkpoint to load first.

    Returns:
        field -> CPU tensor [N, ...] or list of N values (de-duplicated and sorted by the module's ``id_field``),
        the same on every process.
    """
    trainer.predict(module, dataloaders=dataloaders, ckpt_path=None if ckpt_path is None else str(ckpt_path),
                    return_predictions=False)
    return module.gathered.get("predict", {})


# ---------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------
def find_resume_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """``<output_dir>/checkpoints/last.ckpt`` if it exists (what ``--resume`` continues from), else None."""
    last = Path(output_dir) / CHECKPOINT_DIRNAME / "last.ckpt"
    return last if last.is_file() else None


def build_trainer(
    *,
    output_dir: str | os.PathLike,
    max_epochs: int,
    monitor: str | None = None,
    mode: str = "max",
    num_gpus: int = 0,
    cpu_processes: int = 1,
    num_nodes: int = 1,
    accelerator: str = "auto",
    strategy: str = "auto",
    precision: str | int = "32-true",
    fast_dev_run: bool | int = False,
    deterministic: bool = False,
    seed: int | None = None,
    save_top_k: int = 3,
    save_last: bool = True,
    log_every_n_steps: int = 50,
    accumulate_grad_batches: int = 1,
    limit_train_batches: int | float | None = None,
    limit_val_batches: int | float | None = None,
    limit_test_batches: int | float | None = None,
    limit_predict_batches: int | float | None = None,
    check_val_every_n_epoch: int = 1,
    num_sanity_val_steps: int = 0,
    gradient_clip_val: float | None = None,
    enable_progress_bar: bool = True,
    use_distributed_sampler: bool = True,
    extra_callbacks: Sequence[Callback] = (),
) -> pl.Trainer:
    """A Lightning trainer with the project's conventions.

    CPU, one GPU, several GPUs and several nodes: devices come from ``num_gpus`` (0 = CPU, -1 = all GPUs) or, on
    CPU, ``cpu_processes``; when more than one process results, the strategy becomes DDP (gloo on CPU, NCCL on
    GPU). Under torchrun or SLURM, Lightning's cluster environments pick up ranks and addresses by themselves.
    Logs go to ``output_dir/csv`` and ``output_dir/tensorboard``; checkpoints to ``output_dir/checkpoints``
    (``epoch=<e>-step=<s>.ckpt`` for the ``save_top_k`` best by ``monitor``, plus ``last.ckpt``).

    Args:
        output_dir: run folder (used as given; resolve relative paths before calling).
        max_epochs: training epochs.
        monitor: logged metric that ranks checkpoints (e.g. "val_mAP"); None keeps only the latest.
        mode: "max" or "min" for ``monitor``.
        num_gpus: accelerator devices per node; 0 = CPU; -1 = all.
        cpu_processes: processes on CPU (>1 runs DDP over gloo; for tests and debugging).
        num_nodes: machines.
        accelerator: "auto" (CPU when ``num_gpus`` is 0, else GPU) or an explicit Lightning accelerator.
        strategy: "auto" (DDP when there is more than one process) or an explicit Lightning strategy.
        precision: Lightning precision ("32-true", "16-mixed", "bf16-mixed", ...).
        fast_dev_run: run one batch (or n) of every stage; no checkpoints or logs.
        deterministic: deterministic algorithms.
        seed: seed everything (python, numpy, torch, dataloader workers) before building the trainer.
        save_top_k, save_last: checkpoint retention.
        log_every_n_steps, accumulate_grad_batches, limit_*_batches, check_val_every_n_epoch,
        num_sanity_val_steps, gradient_clip_val, enable_progress_bar: passed to ``pl.Trainer`` (None = default).
        use_distributed_sampler: let Lightning wrap loaders in a DistributedSampler under DDP; False for loaders
            whose batch sampler shards itself (the TTM frame-budget sampler).
        extra_callbacks: more callbacks.

    Returns:
        The trainer; ``trainer.checkpoint_callback`` is the ModelCheckpoint.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"checkpoint mode must be 'max' or 'min', got {mode!r}")
    if seed is not None:
        pl.seed_everything(int(seed), workers=True)
    if accelerator == "auto":
        accelerator = "cpu" if num_gpus == 0 else "gpu"
    devices: int = cpu_processes if accelerator == "cpu" else num_gpus
    if devices == 0:
        raise ValueError("no devices: num_gpus is 0 with a non-CPU accelerator")
    if strategy == "auto" and (devices == -1 or devices * num_nodes > 1):
        strategy = "ddp"
    output_dir = Path(output_dir)
    # Frozen backbones sit in eval mode on purpose (egot2.backbone.FrozenBackbone); Lightning would warn about it.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    checkpoint = ModelCheckpoint(dirpath=output_dir / CHECKPOINT_DIRNAME, filename="epoch={epoch}-step={step}",
                                 auto_insert_metric_name=False, monitor=monitor or None, mode=mode,
                                 save_top_k=save_top_k if monitor else min(save_top_k, 1),
                                 save_last=save_last and not monitor)
    checkpoints = [checkpoint]
    if save_last and monitor:
        # Lightning refreshes its own ``save_last`` copy only in a step that also saved a ranked checkpoint, so after
        # an epoch that does not improve the monitor it would be stale; an unmonitored callback of its own writes
        # last.ckpt after every epoch (what --resume continues from).
        checkpoints.append(ModelCheckpoint(dirpath=output_dir / CHECKPOINT_DIRNAME, filename="last", save_top_k=1,
                                           enable_version_counter=False))
    loggers: list[Any] = [CSVLogger(save_dir=output_dir, name="csv")]
    try:
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=output_dir, name="tensorboard", default_hp_metric=False))
    except ModuleNotFoundError as error:  # tensorboard is optional at run time; CSV logs are always written
        warnings.warn(f"TensorBoard logging disabled ({error}); CSV logs are still written")
    optional = dict(limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
                    limit_test_batches=limit_test_batches, limit_predict_batches=limit_predict_batches,
                    gradient_clip_val=gradient_clip_val or None)
    return pl.Trainer(
        default_root_dir=output_dir, max_epochs=max_epochs, accelerator=accelerator, devices=devices,
        num_nodes=num_nodes, strategy=strategy, precision=precision, fast_dev_run=fast_dev_run,
        deterministic=deterministic, logger=loggers, callbacks=[*checkpoints, *extra_callbacks],
        log_every_n_steps=log_every_n_steps, accumulate_grad_batches=accumulate_grad_batches,
        check_val_every_n_epoch=check_val_every_n_epoch, num_sanity_val_steps=num_sanity_val_steps,
        enable_progress_bar=enable_progress_bar, use_distributed_sampler=use_distributed_sampler,
        **{name: value for name, value in optional.items() if value is not None})


def build_trainer_from_cfg(cfg: Any, *, write_info: bool = True, **overrides: Any) -> pl.Trainer:
    """:func:`build_trainer` from an ``egot2.config`` tree; keyword ``overrides`` win over the config.

    Reads ``OUTPUT_DIR`` (relative to the repository root), ``SOLVER.MAX_EPOCH``, ``CHECKPOINT.MONITOR/MODE/
    SAVE_TOP_K/SAVE_LAST``, ``NUM_GPUS``, ``NUM_SHARDS``, ``ACCELERATOR``, ``STRATEGY``, ``PRECISION``,
    ``FAST_DEV_RUN``, ``DETERMINISTIC``, ``RNG_SEED``, ``TRAIN.LOG_EVERY_N_STEPS/NUM_SANITY_VAL_STEPS/
    LIMIT_TRAIN_BATCHES/LIMIT_VAL_BATCHES/EVAL_PERIOD`` and ``SOLVER.CLIP_GRAD_NORM``. With ``write_info`` the
    merged config and library versions are written into the run folder (by the first process only).
    """
    from egot2.config import repo_path, write_run_info  # the engine itself needs no config module

    settings = dict(
        output_dir=repo_path(cfg.OUTPUT_DIR), max_epochs=int(cfg.SOLVER.MAX_EPOCH),
        monitor=cfg.CHECKPOINT.MONITOR or None, mode=cfg.CHECKPOINT.MODE, save_top_k=int(cfg.CHECKPOINT.SAVE_TOP_K),
        save_last=bool(cfg.CHECKPOINT.SAVE_LAST), num_gpus=int(cfg.NUM_GPUS), num_nodes=int(cfg.NUM_SHARDS),
        accelerator=cfg.ACCELERATOR, strategy=cfg.STRATEGY, precision=cfg.PRECISION,
        fast_dev_run=bool(cfg.FAST_DEV_RUN), deterministic=bool(cfg.DETERMINISTIC), seed=int(cfg.RNG_SEED),
        log_every_n_steps=int(cfg.TRAIN.LOG_EVERY_N_STEPS), num_sanity_val_steps=int(cfg.TRAIN.NUM_SANITY_VAL_STEPS),
        limit_train_batches=cfg.TRAIN.LIMIT_TRAIN_BATCHES, limit_val_batches=cfg.TRAIN.LIMIT_VAL_BATCHES,
        check_val_every_n_epoch=int(cfg.TRAIN.EVAL_PERIOD), gradient_clip_val=float(cfg.SOLVER.CLIP_GRAD_NORM) or None,
    )
    settings.update(overrides)
    trainer = build_trainer(**settings)
    if write_info and trainer.is_global_zero:
        write_run_info(cfg, settings["output_dir"])
    return trainer


def resume_checkpoint_from_cfg(cfg: Any) -> Path | None:
    """The checkpoint ``CHECKPOINT.RESUME`` asks for: "" = none, "last" = the run's last.ckpt (None on a fresh
    run), otherwise a path (relative to the repository root) that must exist."""
    from egot2.config import repo_path

    request = str(cfg.CHECKPOINT.RESUME)
    if not request:
        return None
    if request == "last":
        return find_resume_checkpoint(repo_path(cfg.OUTPUT_DIR))
    path = repo_path(request)
    if not path.is_file():
        raise FileNotFoundError(f"CHECKPOINT.RESUME: checkpoint {path} does not exist")
    return path

