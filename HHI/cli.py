"""The command line shared by the HHI scripts (``scripts/run_lam.py``, ``run_ttm.py``, ``run_asd.py``) and the run they
drive: train (then export the best stage-I model), ``--eval``, ``--submit``.

A script builds its parser, adds only its own flags, and hands a :class:`SocialRun` to :func:`run_social_task`::

    parser = social_argument_parser("lam", "Ego4D Looking At Me", defaults={"epochs": 40, ...})  # help texts
    parser.add_argument("--source_path", default=None, help=...)           # the script's own flags
    args = parser.parse_args(argv)
    cfg = social_cfg(args, "lam", extensions=(add_lam_config, lam_run_defaults),
                     flag_keys={**SHARED_FLAG_KEYS, "batch_size": "TRAIN.BATCH_SIZE", "source_path": "LAM.SOURCE_PATH"},
                     path_flags=("source_path",))
    sys.exit(run_social_task(cfg, lam_run(cfg)))

Every flag defaults to ``None`` ("not given"), so the config (defaults -> ``--cfg FILE``) keeps its value unless the
flag is on the command line; the original defaults live in the config sections (``HHI/config.py``) and are shown
in ``--help``. Order: defaults -> task run defaults -> ``--cfg`` -> flags -> trailing ``KEY VALUE`` opts ->
``--data_dir``.

Paths: the data root is ``--data_dir`` > ``DATA.ROOT`` > ``$EGO4D_DATA`` > ``data/`` (relative to the repository
root, the project's rule for data and config paths). Logs, checkpoints, the merged config and library versions go to
``logs/<task>/<output_dir>`` **relative to the current directory**, as with the original scripts; ``--submit`` writes
``submit_<task>.json`` into the current directory too. Accordingly, the file flags of a run (``--ckpt``,
``--checkpoint``, ``--resume CKPT``, ``--*_checkpoint`` and the scripts' folder overrides such as ``--img_path``) are
taken from the current directory when relative; paths inside a ``--cfg`` file or in ``KEY VALUE`` opts follow the
repository-root rule.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch

__all__ = [
    "ModelEntry",
    "resolve_model",
    "optim_settings",
    "SHARED_FLAG_KEYS",
    "SHARED_PATH_FLAGS",
    "social_argument_parser",
    "social_cfg",
    "run_dir",
    "SocialRun",
    "load_task_weights",
    "export_social_checkpoint",
    "run_social_task",
]


# ---------------------------------------------------------------------------------------------------------------
# Model selection
# ---------------------------------------------------------------------------------------------------------------


def _resolve_callable(target: Union[str, Callable]) -> Callable:
    if callable(target):
        return target
    module_name, _, attribute = str(target).partition(":")
    if not attribute:
        raise ValueError(f"model builder {target!r} must be a callable or 'package.module:function'")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class ModelEntry:
    """One ``--model`` choice of a task.

    Attributes:
        build: ``cfg -> nn.Module``, or its dotted name ``"package.module:function"`` (imported when chosen, so a
            registry row costs nothing until used).
        inputs: ``batch -> tuple`` of positional model inputs (a module-level function, so tasks stay picklable).
        stage_one: a stage-I network: ``--checkpoint`` initialises it from an official ``{epoch, state_dict, mAP}``
            file (strictly) and training exports the best model as ``ts_<task>.pth`` in that container.
    """

    build: Union[str, Callable[[Any], torch.nn.Module]]
    inputs: Callable[[dict], tuple]
    stage_one: bool = False

    def build_model(self, cfg: Any) -> torch.nn.Module:
        """Instantiate the network for ``cfg``."""
        return _resolve_callable(self.build)(cfg)

    def load_init_checkpoint(self, model: torch.nn.Module, path: Union[str, os.PathLike]) -> dict:
        """Load ``--checkpoint`` strictly into a stage-I model (official social container, ``module.`` stripped)."""
        if not self.stage_one:
            raise ValueError("--checkpoint initialises stage-I models only; translators take --lam_checkpoint, "
                             "--ttm_checkpoint and --asd_checkpoint")
        from HHI.models.lstm import load_social_checkpoint  # noqa: PLC0415

        return load_social_checkpoint(model, path)


def resolve_model(registry: Mapping[str, ModelEntry], name: str, task: str) -> ModelEntry:
    """The registry row ``name``; a clear error lists the choices."""
    if name not in registry:
        raise ValueError(f"unknown {task} model {name!r} (--model / HHI.MODEL); choose one of {sorted(registry)}")
    return registry[name]


def optim_settings(cfg: Any):
    """``egot2.engine.OptimSettings`` of a config's ``SOLVER.*``.

    One parameter group: weight decay applies to every trainable parameter, as the original
    ``torch.optim.Adam(params, lr, weight_decay=wd)`` (``OptimSettings.from_cfg`` would split off the "bn" names).
    """
    from egot2.engine import OptimSettings  # noqa: PLC0415

    solver = cfg.SOLVER
    return OptimSettings(method=solver.OPTIMIZING_METHOD, lr=float(solver.BASE_LR),
                         weight_decay=float(solver.WEIGHT_DECAY), momentum=float(solver.MOMENTUM),
                         nesterov=bool(solver.NESTEROV), dampening=float(solver.DAMPENING),
                         betas=tuple(float(beta) for beta in solver.BETAS), lr_policy=solver.LR_POLICY,
                         warmup_steps=int(solver.WARMUP_STEPS), gamma=float(solver.LR_DECAY),
                         step_size=int(solver.STEP_SIZE), interval=solver.SCHEDULER_INTERVAL)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------

#: argparse destination -> config key, for the flags every social script has.
SHARED_FLAG_KEYS = {
    "model": "HHI.MODEL",
    "epochs": "SOLVER.MAX_EPOCH",
    "lr": "SOLVER.BASE_LR",
    "wd": "SOLVER.WEIGHT_DECAY",
    "num_workers": "DATA_LOADER.NUM_WORKERS",
    "ckpt": "CHECKPOINT.FILE_PATH",
    "checkpoint": "HHI.INIT_CHECKPOINT",
    "seed": "RNG_SEED",
    "face_size": "HHI.FACE_SIZE",
    "label_mode": "HHI.LABEL_MODE",
    "rank": "HHI.RANK",
    "lam_checkpoint": "HHI.LAM_CHECKPOINT",
    "ttm_checkpoint": "HHI.TTM_CHECKPOINT",
    "asd_checkpoint": "HHI.ASD_CHECKPOINT",
    "nofreeze": "HHI.NOFREEZE",
    "two_loader": "HHI.TWO_LOADER",
    "dropout": "HHI.TRANSLATOR.DROPOUT",
    "num_layers": "HHI.TRANSLATOR.NUM_LAYERS",
    "num_heads": "HHI.TRANSLATOR.NUM_HEADS",
    "hidden_dim": "HHI.TRANSLATOR.HIDDEN_DIM",
    "hidden_dim2": "HHI.TRANSLATOR.HIDDEN_DIM2",
    "train_mode_backbones": "HHI.TRAIN_MODE_BACKBONES",
    "cache_features": "HHI.CACHE_FEATURES",
    "asd_max_frames": "HHI.ASD_MAX_FRAMES",
    "limit_train_batches": "TRAIN.LIMIT_TRAIN_BATCHES",
    "limit_val_batches": "TRAIN.LIMIT_VAL_BATCHES",
}

#: Shared flags holding file paths (made absolute from the current directory).
SHARED_PATH_FLAGS = ("ckpt", "checkpoint", "lam_checkpoint", "ttm_checkpoint", "asd_checkpoint", "cache_features")


def _batch_limit(text: str) -> Union[int, float]:
    """``--limit_*_batches``: an int counts batches, a float in [0, 1] is a fraction."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of batches or a fraction, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a fraction of batches must be in [0, 1], got {value}")
    return value


def social_argument_parser(task: str, description: str, defaults: Optional[Mapping[str, Any]] = None,
                           submit: bool = True) -> argparse.ArgumentParser:
    """Parser with the flags the original LAM/TTM/ASD configs share, plus this project's run flags.

    Args:
        task: "lam", "ttm" or "asd" (for help texts).
        description: parser description.
        defaults: ``{dest: value}`` shown in the help as "(default: ...)" -- the original defaults, which the config
            holds; the flags themselves default to None (= keep the config's value).
        submit: add ``--submit`` (LAM and TTM have a challenge test set; ASD does not).

    Returns:
        A parser; the calling script adds its own flags (``conflict_handler="resolve"`` lets it redefine one).
    """
    shown = dict(defaults or {})

    def default(name: str) -> str:
        return f" (default: {shown[name]})" if name in shown else ""

    parser = argparse.ArgumentParser(
        description=description, conflict_handler="resolve", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Trailing KEY VALUE pairs override config keys, e.g. HHI.FACE_SIZE 112 SOLVER.BASE_LR 0.001. "
               f"Logs and checkpoints go to ./logs/{task}/<output_dir> (relative to the current directory).")
    add = parser.add_argument
    # Run
    add("--cfg", dest="cfg_file", default=None, metavar="FILE", help="YAML config merged before the flags")
    add("--data_dir", default=None,
        help="data root holding lam/, ttm/, asd/ (default: DATA.ROOT, else $EGO4D_DATA, else data/)")
    add("--output_dir", default="debug", help=f"run name: logs go to ./logs/{task}/<output_dir> (default: debug)")
    add("--exp_path", default=None, help="ignored (the original overwrote it with ./logs/<task>/<output_dir>)")
    add("--model", default=None, required=True, help="network name" + default("model"))
    add("--epochs", type=int, default=None, help="training epochs" + default("epochs"))
    add("--batch_size", type=int, default=None, help="batch size" + default("batch_size"))
    add("--lr", type=float, default=None, help="learning rate" + default("lr"))
    add("--wd", type=float, default=None, help="weight decay" + default("wd"))
    add("--weights", type=float, nargs=2, default=None, metavar=("W0", "W1"),
        help="cross-entropy class weights" + default("weights"))
    add("--num_workers", type=int, default=None, help="dataloader worker processes" + default("num_workers"))
    add("--num_gpus", type=int, default=None, help="GPUs per node; 0 = CPU (default: 1 with a GPU, else 0)")
    add("--seed", type=int, default=None, help="random seed (default: 0)")
    add("--fast_dev_run", action="store_true", help="one batch of each stage, no checkpoints or logs")
    add("--limit_train_batches", type=_batch_limit, default=None, help="train batches per epoch (int or fraction)")
    add("--limit_val_batches", type=_batch_limit, default=None, help="validation batches (int or fraction)")
    add("--eval", action="store_true", help="validate --ckpt instead of training")
    if submit:
        add("--submit", action="store_true",
            help=f"score the challenge test set with --ckpt and write ./submit_{task}.json")
    add("--ckpt", default=None, help="checkpoint for --eval/--submit: a Lightning .ckpt (ours or the original's) or "
                                     f"an official ts_{task}.pth")
    add("--resume", nargs="?", const="last", default=None, metavar="CKPT",
        help="continue training from CKPT, or from the run's last.ckpt when no path is given")
    add("--rank", type=int, default=None, help="ignored; ranks come from the launcher (kept from the original)")
    # Data
    add("--face_size", type=int, default=None, help="side of the face crops" + default("face_size"))
    add("--label_mode", choices=("official", "is_at_me"), default=None,
        help="'is_at_me' (default) requires is_at_me for a positive; 'official' ignores it as the "
             "original loaders did (needed to reproduce the published numbers)")
    # Models
    add("--checkpoint", default=None, help="initialise the stage-I network from this official checkpoint")
    for name in ("lam", "ttm", "asd"):
        add(f"--{name}_checkpoint", default=None,
            help=f"frozen {name.upper()} model of the translators (default: pretrained_models/ts_{name}.pth)")
    add("--nofreeze", action="store_true", help="train the task's own backbone inside a translator")
    add("--two_loader", action="store_true", help="add ASD inputs (TalkNet crops + MFCC) for 3-task translators")
    add("--dropout", type=float, default=None, help="translator dropout" + default("dropout"))
    add("--num_layers", type=int, default=None, help="translator layers" + default("num_layers"))
    add("--num_heads", type=int, default=None, help="translator heads" + default("num_heads"))
    add("--hidden_dim", type=int, default=None, help="translator width" + default("hidden_dim"))
    add("--hidden_dim2", type=int, default=None, help="second hidden width" + default("hidden_dim2"))
    add("--train_mode_backbones", action="store_true",
        help="keep the frozen backbones in train mode as the original (BatchNorm statistics drift; parity runs)")
    add("--cache_features", default=None, metavar="DIR",
        help="read the frozen backbones' tokens from a cache in DIR, built on first use (TTM translators)")
    add("--asd_max_frames", type=int, default=None,
        help="ASD frames per TTM chunk for the 3-task translators (default: 0 = all; CPU runs use fewer)")
    add("opts", nargs=argparse.REMAINDER, default=[], help="trailing KEY VALUE config overrides")
    return parser


def run_dir(task: str, output_dir: str) -> Path:
    """``./logs/<task>/<output_dir>`` as an absolute path (relative to the current directory, as the original)."""
    return (Path.cwd() / "logs" / task / output_dir).resolve()


def _from_cwd(value: str) -> str:
    return str((Path.cwd() / Path(value).expanduser()).resolve())


def social_cfg(args: argparse.Namespace, task: str, extensions: Sequence[Callable], flag_keys: Mapping[str, str],
               path_flags: Sequence[str] = (), freeze: bool = True):
    """The run's config from parsed arguments.

    Flags given on the command line (not None; switches only when set) override the config keys of
    ``flag_keys``; trailing ``KEY VALUE`` opts come after them. ``OUTPUT_DIR`` becomes
    ``./logs/<task>/<output_dir>``; ``NUM_GPUS`` is ``--num_gpus`` or 1 with a CUDA device, else 0. Relative
    values of :data:`SHARED_PATH_FLAGS` and ``path_flags`` are taken from the current directory.

    Raises:
        egot2.config.ConfigError: an unknown key or bad value (names it and where it came from).
    """
    from egot2.config import load_cfg  # noqa: PLC0415

    paths = set(SHARED_PATH_FLAGS) | set(path_flags)
    opts: list = []
    for dest, key in flag_keys.items():
        value = getattr(args, dest, None)
        if value is None or value is False:
            continue
        if dest in paths and str(value) != "":
            value = _from_cwd(str(value))
        opts += [key, list(value) if isinstance(value, (list, tuple)) else value]
    opts += ["OUTPUT_DIR", str(run_dir(task, args.output_dir))]
    num_gpus = args.num_gpus if args.num_gpus is not None else (1 if torch.cuda.is_available() else 0)
    opts += ["NUM_GPUS", int(num_gpus)]
    if args.fast_dev_run:
        opts += ["FAST_DEV_RUN", True]
    if args.resume:
        opts += ["CHECKPOINT.RESUME", str(args.resume) if args.resume == "last" else _from_cwd(args.resume)]
    evaluate = bool(args.eval or getattr(args, "submit", False))
    if evaluate:
        opts += ["TRAIN.ENABLE", False, "TEST.ENABLE", True]
    if getattr(args, "submit", False):
        opts += ["TEST.SUBMIT", True]
    trailing = list(args.opts or [])
    if trailing and trailing[0] == "--":
        trailing = trailing[1:]
    if len(trailing) % 2:
        raise SystemExit(f"trailing config overrides must be KEY VALUE pairs, got {trailing}")
    return load_cfg(args.cfg_file, opts + trailing, extensions=extensions, data_dir=args.data_dir, freeze=freeze)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints of a run
# ---------------------------------------------------------------------------------------------------------------


def load_task_weights(task: torch.nn.Module, path: Union[str, os.PathLike]) -> str:
    """Load evaluation weights into a task strictly.

    Accepted: a Lightning checkpoint of this project or of the original code (``model.*`` keys, with or without the
    ``criterion.weight`` buffer), or an official social container ``{epoch, state_dict, mAP}`` / flat state dict of
    the bare network (loaded into ``task.model``, ``module.`` stripped).

    Returns:
        ``"lightning"`` or ``"network"``: which layout was found.

    Raises:
        FileNotFoundError: no such file. ``egot2.checkpoint.CheckpointMismatchError``: keys or shapes do not fit
        (all listed).
    """
    from egot2.checkpoint import (StripPrefix, apply_key_map, extract_state_dict, load_file,  # noqa: PLC0415
                                  load_state_dict_exact)
    from egot2.config import repo_path  # noqa: PLC0415

    path = repo_path(path)
    state_dict = extract_state_dict(load_file(path), source=str(path))
    state_dict = apply_key_map(state_dict, [StripPrefix("module.")])
    own = task.state_dict()
    if any(key.startswith("model.") for key in state_dict):
        missing = [key for key in own if not key.startswith("model.") and key not in state_dict]
        load_state_dict_exact(task, state_dict, expected_missing=missing, source=str(path))
        return "lightning"
    load_state_dict_exact(task.model, state_dict, source=str(path))
    return "network"


def export_social_checkpoint(best_checkpoint: Union[str, os.PathLike], destination: Union[str, os.PathLike],
                             score: Optional[float] = None) -> Path:
    """Write the network of a Lightning checkpoint as an official ``{epoch, state_dict, mAP}`` file.

    Args:
        best_checkpoint: our Lightning checkpoint (``model.*`` keys).
        destination: ``.../ts_<task>.pth``.
        score: the checkpoint's val mAP (default: read from its ModelCheckpoint state).

    Raises:
        ValueError: no ``model.`` keys, or no finite score to store.
    """
    from egot2.checkpoint import SelectPrefix, apply_key_map, extract_state_dict, load_file  # noqa: PLC0415
    from egot2.checkpoint import save_social_checkpoint  # noqa: PLC0415

    container = load_file(best_checkpoint)
    state_dict = apply_key_map(extract_state_dict(container, source=str(best_checkpoint)), [SelectPrefix("model.")])
    if score is None:
        for state in (container.get("callbacks") or {}).values():
            if isinstance(state, dict) and state.get("best_model_score") is not None:
                score = float(state["best_model_score"])
                break
    if score is None or score != score:
        raise ValueError(f"{best_checkpoint}: no finite val_mAP to store in the exported checkpoint")
    return save_social_checkpoint(destination, state_dict, epoch=int(container.get("epoch", 0)), mAP=float(score))


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SocialRun:
    """What a social script plugs into :func:`run_social_task`.

    Attributes:
        task: "lam", "ttm" or "asd" (names ``logs/<task>``, ``ts_<task>.pth``, ``submit_<task>.json``).
        build_task: ``cfg -> TaskModule``.
        train_loader, val_loader: ``cfg -> DataLoader``.
        stage_one: ``cfg -> bool``, whether the chosen model is exported as ``ts_<task>.pth`` after training.
        submit: ``(cfg, task, trainer, path) -> Path`` writing the challenge file, or None (no test set).
        trainer_overrides: ``cfg -> dict`` of extra ``egot2.engine.build_trainer`` arguments.
    """

    task: str
    build_task: Callable[[Any], Any]
    train_loader: Callable[[Any], Any]
    val_loader: Callable[[Any], Any]
    stage_one: Callable[[Any], bool] = lambda cfg: False
    submit: Optional[Callable[..., Path]] = None
    trainer_overrides: Callable[[Any], dict] = lambda cfg: {}


def _print_metrics(trainer: Any, label: str) -> None:
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items() if name.startswith("val_")}
    if trainer.is_global_zero and metrics:
        print(f"{label}: " + ", ".join(f"{name} = {value:.4f}" for name, value in sorted(metrics.items())))


def run_social_task(cfg: Any, spec: SocialRun) -> int:
    """Train, evaluate (``TEST.ENABLE`` without ``TEST.SUBMIT``) or submit, as the config says.

    Training fits with checkpoints on ``val_mAP`` (or the config's monitor), resumes with ``CHECKPOINT.RESUME``,
    then, for stage-I models, exports the best checkpoint as ``<OUTPUT_DIR>/ts_<task>.pth`` and prints its path.
    ``--eval`` validates ``CHECKPOINT.FILE_PATH`` and prints the metrics; ``--submit`` writes
    ``./submit_<task>.json``.

    Returns:
        Process exit status (0 = success).
    """
    import pytorch_lightning as pl  # noqa: PLC0415

    from egot2.engine import build_trainer_from_cfg, resume_checkpoint_from_cfg  # noqa: PLC0415

    pl.seed_everything(int(cfg.RNG_SEED), workers=True, verbose=False)  # the initial weights repeat with the seed
    task = spec.build_task(cfg)
    # Only training records its config: an --eval/--submit into the same run folder must not replace it.
    trainer = build_trainer_from_cfg(cfg, write_info=not cfg.TEST.ENABLE, **spec.trainer_overrides(cfg))
    if cfg.TEST.ENABLE:
        if not cfg.CHECKPOINT.FILE_PATH:
            raise SystemExit("--eval and --submit need --ckpt (a Lightning checkpoint or an official "
                             f"ts_{spec.task}.pth)")
        layout = load_task_weights(task, cfg.CHECKPOINT.FILE_PATH)
        if trainer.is_global_zero:
            print(f"loaded {layout} weights from {cfg.CHECKPOINT.FILE_PATH}")
        if cfg.TEST.SUBMIT:
            if spec.submit is None:
                raise SystemExit(f"{spec.task} has no challenge submission")
            path = spec.submit(cfg, task, trainer, Path.cwd() / f"submit_{spec.task}.json")
            if trainer.is_global_zero:
                print(f"wrote {path}")
            return 0
        trainer.validate(task, dataloaders=spec.val_loader(cfg))
        _print_metrics(trainer, "validation")
        return 0

    resume = resume_checkpoint_from_cfg(cfg)
    trainer.fit(task, train_dataloaders=spec.train_loader(cfg), val_dataloaders=spec.val_loader(cfg),
                ckpt_path=None if resume is None else str(resume))
    _print_metrics(trainer, "last validation")
    if not trainer.is_global_zero:
        return 0
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback is not None else ""
    if not spec.stage_one(cfg):
        if best:
            print(f"best checkpoint: {best}")
        return 0
    if not best:
        print(f"no checkpoint was saved (fast_dev_run or no validation), so no ts_{spec.task}.pth was exported",
              file=sys.stderr)
        return 0
    score = callback.best_model_score
    score = None if score is None else float(score)
    if score is None or score != score:
        print(f"best checkpoint {best} has no finite {callback.monitor}; ts_{spec.task}.pth not exported",
              file=sys.stderr)
        return 0
    exported = export_social_checkpoint(best, Path(cfg.OUTPUT_DIR) / f"ts_{spec.task}.pth", score)
    print(f"best checkpoint: {best} ({callback.monitor} = {score:.4f})")
    print(f"exported the best model in the official container: {exported} "
          f"(copy it to pretrained_models/ts_{spec.task}.pth)")
    return 0
