"""Train, evaluate and submit the AR and LTA stage-I models (the LTA config tree).

    python scripts/lta/run_lta.py --cfg FILE [--fast_dev_run] [--resume [CKPT]] [--eval] [--submit]
                                  [--data_dir D] [--output_dir D] [--num_gpus G] [--num_shards S] [KEY VALUE ...]

``DATA.TASK`` picks the task: ``classification`` (AR, ``MultiTaskSlowFast``) or ``long_term_anticipation`` (LTA,
``ForecastingEncoderDecoder``). Flags come before the trailing ``KEY VALUE`` overrides.

* ``TRAIN.ENABLE True``: initialise (AR: the trunk of ``CHECKPOINT_FILE_PATH``, the Kinetics model; LTA: the trunk
  of the recognition checkpoint ``DATA.CHECKPOINT_MODULE_FILE_PATH``, then the whole model from
  ``CHECKPOINT_FILE_PATH`` when set; a missing initialisation file only warns), train with validation every
  ``TRAIN.EVAL_PERIOD`` epochs, keep the best checkpoints by ``CHECKPOINT.MONITOR`` (AR ``val_top1_noun_err``, LTA
  ``val_0_ED_19``, both min), and export the best model in the official container as
  ``OUTPUT_DIR/recognition_ego4d_slowfast8x8.ckpt`` or ``OUTPUT_DIR/lta_slowfast_trf.ckpt``.
* ``TRAIN.ENABLE False`` (``--eval``): load ``CHECKPOINT_FILE_PATH`` strictly (official files and ours) and validate.
* LTA with ``TEST.ENABLE`` or ``--submit``: predict the unannotated test split with the best/evaluated model and
  write a validated ``submit_lta.json`` into the current directory (or ``TEST.SUBMISSION_FILE``).

Every run writes its merged config and library versions to ``OUTPUT_DIR`` and the validation metrics to
``OUTPUT_DIR/metrics_val.json``. Devices: ``NUM_GPUS`` per node (global batch sizes are split over all processes);
with fewer visible GPUs the run uses those, or the CPU, and says so.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from egot2.config import ConfigError, default_argument_parser, repo_path
from egot2.engine import build_trainer_from_cfg, predict_records, resume_checkpoint_from_cfg
from egot2.media import MediaError, atomic_path
from egot2.submission import SubmissionError, annotation_expectations, lta_results, write_submission
from HOI.config import lta_cfg_from_args, lta_checkpoint_file
from HOI.data.lta import LongTermAnticipationDataset, RecognitionDataset, annotation_path, dataset_paths_from_config
from HOI.tasks.forecasting import LongTermAnticipationTask
from HOI.tasks.recognition import RecognitionTask, load_trunk_from_recognition_checkpoint

logger = logging.getLogger("run_lta")

#: DATA.TASK -> (task class, dataset class, exported file name, default checkpoint monitor).
TASKS = {
    "classification": (RecognitionTask, RecognitionDataset, "recognition_ego4d_slowfast8x8.ckpt", "val_top1_noun_err"),
    "long_term_anticipation": (LongTermAnticipationTask, LongTermAnticipationDataset, "lta_slowfast_trf.ckpt",
                               "val_0_ED_19"),
}


# ------------------------------------------------------------------------------------------------------- setup

def available_gpus(requested: int) -> int:
    """GPUs per node actually used: ``requested``, or fewer / none (CPU) when fewer are visible, with a log line."""
    if requested <= 0:
        return 0
    visible = torch.cuda.device_count()
    if visible >= requested:
        return requested
    if visible == 0:
        logger.warning("NUM_GPUS %d requested but no GPU is visible: running on the CPU", requested)
    else:
        logger.warning("NUM_GPUS %d requested but only %d GPU(s) are visible: using %d", requested, visible, visible)
    return visible


def per_process_batch(global_batch: int, processes: int, what: str) -> int:
    if global_batch % processes:
        logger.warning("%s %d does not split evenly over %d processes: using %d per process", what, global_batch,
                       processes, max(global_batch // processes, 1))
    return max(global_batch // processes, 1)


def make_loader(dataset, batch_size: int, cfg, train: bool) -> DataLoader:
    workers = int(cfg.DATA_LOADER.NUM_WORKERS)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and bool(cfg.DATA_LOADER.SHUFFLE),
                      drop_last=train and bool(cfg.DATA_LOADER.DROP_LAST), num_workers=workers,
                      pin_memory=bool(cfg.DATA_LOADER.PIN_MEMORY) and torch.cuda.is_available(),
                      persistent_workers=workers > 0)


def initialise(module, cfg) -> None:
    """Training initialisation from the configured checkpoints; missing files warn and train from scratch."""
    init_file = lta_checkpoint_file(cfg)
    if isinstance(module, LongTermAnticipationTask):
        trunk_file = str(cfg.DATA.CHECKPOINT_MODULE_FILE_PATH)
        if trunk_file and repo_path(trunk_file).is_file():
            module.init_backbone_from_recognition(repo_path(trunk_file))
            logger.info("LTA clip backbone initialised from the recognition trunk of %s (head keys skipped)",
                        repo_path(trunk_file))
        else:
            logger.warning("DATA.CHECKPOINT_MODULE_FILE_PATH %r: no such file; the LTA clip backbone starts from "
                           "random weights%s", trunk_file,
                           " and stays frozen (MODEL.FREEZE_BACKBONE)" if cfg.MODEL.FREEZE_BACKBONE else "")
        if init_file:
            if not repo_path(init_file).is_file():
                logger.warning("CHECKPOINT_FILE_PATH %r: no such file; not used", init_file)
            else:
                module.load_weights(repo_path(init_file))
                logger.info("LTA model initialised from %s", repo_path(init_file))
        return
    if not init_file:
        logger.info("no CHECKPOINT_FILE_PATH: the recognition model starts from random weights")
    elif not repo_path(init_file).is_file():
        logger.warning("CHECKPOINT_FILE_PATH %r (the Kinetics initialisation): no such file; the recognition model "
                       "starts from random weights", init_file)
    elif cfg.CHECKPOINT_LOAD_MODEL_HEAD:
        module.load_weights(repo_path(init_file))
        logger.info("recognition model initialised from %s (trunk and heads)", repo_path(init_file))
    else:
        load_trunk_from_recognition_checkpoint(module.model, repo_path(init_file))
        logger.info("recognition trunk initialised from %s (head keys skipped)", repo_path(init_file))


def load_for_evaluation(module, cfg) -> Path:
    """Load the checkpoint that ``TRAIN.ENABLE False`` evaluates (strictly)."""
    checkpoint = lta_checkpoint_file(cfg)
    if not checkpoint:
        raise ConfigError("TRAIN.ENABLE is False (evaluation) but CHECKPOINT_FILE_PATH is empty: set it to the "
                          "checkpoint to evaluate, e.g. CHECKPOINT_FILE_PATH <OUTPUT_DIR of a training run>/"
                          f"{TASKS[cfg.DATA.TASK][2]}")
    path = repo_path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"CHECKPOINT_FILE_PATH: checkpoint {path} does not exist")
    module.load_weights(path)
    logger.info("evaluating %s", path)
    return path


# ------------------------------------------------------------------------------------------------------ results

def write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def submission_path(cfg) -> Path:
    """``TEST.SUBMISSION_FILE`` (relative to the repository root), or ``submit_lta.json`` in the current directory."""
    return repo_path(cfg.TEST.SUBMISSION_FILE) if cfg.TEST.SUBMISSION_FILE else Path.cwd() / "submit_lta.json"


def write_lta_submission(trainer: pl.Trainer, module: LongTermAnticipationTask, cfg, data_root) -> Optional[Path]:
    """Predict the test split and write the validated challenge file (first process only)."""
    dataset = LongTermAnticipationDataset.from_config(cfg, "test", data_root)
    processes = trainer.world_size
    loader = make_loader(dataset, per_process_batch(int(cfg.TEST.BATCH_SIZE), processes, "TEST.BATCH_SIZE"), cfg,
                         train=False)
    records = predict_records(trainer, module, loader)
    if cfg.FAST_DEV_RUN:
        logger.info("fast_dev_run: predicted one test batch; no submission written")
        return None
    if not trainer.is_global_zero:
        return None
    results = lta_results({key: (records["verb"][i], records["noun"][i]) for i, key in enumerate(records["key"])})
    annotation_dir, _ = dataset_paths_from_config(cfg, data_root)
    num_input, num_future = int(cfg.FORECASTING.NUM_INPUT_CLIPS), int(cfg.FORECASTING.NUM_ACTIONS_TO_PREDICT)
    expect = annotation_expectations("lta", annotation_path(annotation_dir, "test"), num_input_clips=num_input,
                                     num_actions=num_future)
    path = write_submission("lta", results, submission_path(cfg), **expect,
                            num_sequences=int(cfg.FORECASTING.NUM_SEQUENCES_TO_PREDICT), num_actions=num_future,
                            num_verbs=int(cfg.MODEL.NUM_CLASSES[0]), num_nouns=int(cfg.MODEL.NUM_CLASSES[1]))
    logger.info("wrote %s (%d windows)", path, len(results))
    print(f"submission: {path}")
    return path


def report_metrics(metrics: dict, output_dir: Path, is_global_zero: bool) -> None:
    """Print the headline validation metrics and write all of them to ``OUTPUT_DIR/metrics_val.json``."""
    if not metrics or not is_global_zero:
        return
    write_json(output_dir / "metrics_val.json", metrics)
    # Of the per-prefix ED@z curves only the last point (ED@Z) is a headline number.
    prefixes = [int(k.rsplit("_", 1)[1]) for k in metrics if re.fullmatch(r"[01]_ED_\d+", k)]
    last = f"_ED_{max(prefixes)}" if prefixes else None
    headline = {k: round(v, 4) for k, v in metrics.items()
                if not re.fullmatch(r"[01]_ED_\d+", k) or (last and k.endswith(last))}
    print(f"val metrics: {json.dumps(headline, sort_keys=True)}")


# ---------------------------------------------------------------------------------------------------------- run

def run(cfg) -> int:
    """Train and/or evaluate (and submit) as the config says; returns the exit status."""
    if cfg.DATA.TASK not in TASKS:
        raise ConfigError(f"DATA.TASK {cfg.DATA.TASK!r}: run_lta.py runs {sorted(TASKS)}")
    task_class, dataset_class, export_name, default_monitor = TASKS[cfg.DATA.TASK]
    data_root = None  # resolved from --data_dir / DATA.ROOT / $EGO4D_DATA / data/ by the datasets
    output_dir = repo_path(cfg.OUTPUT_DIR)
    pl.seed_everything(int(cfg.RNG_SEED), workers=True)
    module = task_class.from_config(cfg)

    gpus = available_gpus(int(cfg.NUM_GPUS))
    monitor = cfg.CHECKPOINT.MONITOR or default_monitor
    mode = cfg.CHECKPOINT.MODE if cfg.CHECKPOINT.MONITOR else "min"
    trainer = build_trainer_from_cfg(cfg, num_gpus=gpus, monitor=monitor, mode=mode)
    processes = trainer.world_size
    val_set = dataset_class.from_config(cfg, "val", data_root)
    val_loader = make_loader(val_set, per_process_batch(int(cfg.TEST.BATCH_SIZE), processes, "TEST.BATCH_SIZE"),
                             cfg, train=False)

    if cfg.TRAIN.ENABLE:
        resume = resume_checkpoint_from_cfg(cfg)
        if resume is None:
            initialise(module, cfg)
        else:
            logger.info("resuming from %s", resume)
        train_set = dataset_class.from_config(cfg, "train", data_root)
        train_loader = make_loader(train_set, per_process_batch(int(cfg.TRAIN.BATCH_SIZE), processes,
                                                                "TRAIN.BATCH_SIZE"), cfg, train=True)
        trainer.fit(module, train_loader, val_loader, ckpt_path=None if resume is None else str(resume))
        callback = trainer.checkpoint_callback
        best = (callback.best_model_path or callback.last_model_path) if callback is not None else ""
        if cfg.FAST_DEV_RUN or not best:
            logger.info("no checkpoint was saved (fast_dev_run); nothing to export")
            report_metrics(module.split_metrics.get("val", {}), output_dir, trainer.is_global_zero)
        else:
            progress = module.load_weights(best)
            epoch, step = int(progress.get("epoch", trainer.current_epoch)), int(progress.get("global_step", 0))
            # The metrics of the exported (best) epoch, not of the last one.
            report_metrics(module.val_history.get(epoch, module.split_metrics.get("val", {})), output_dir,
                           trainer.is_global_zero)
            score = callback.best_model_score
            if trainer.is_global_zero:
                exported = module.export_official(
                    output_dir / export_name, epoch=epoch, global_step=step, hyper_parameters={"cfg": cfg},
                    monitor=monitor, mode=mode, best_model_path=best,
                    best_model_score=None if score is None else float(score))
                print(f"exported: {exported} (epoch {epoch}, from {best})")
    else:
        load_for_evaluation(module, cfg)
        trainer.validate(module, val_loader)
        report_metrics(module.split_metrics.get("val", {}), output_dir, trainer.is_global_zero)

    wants_test = bool(cfg.TEST.ENABLE or cfg.TEST.SUBMIT)
    if wants_test and isinstance(module, LongTermAnticipationTask):
        write_lta_submission(trainer, module, cfg, data_root)
    elif wants_test:
        logger.info("action recognition has no annotated test split and no challenge file; evaluation uses val")
    return 0


def main(argv=None) -> int:
    parser = default_argument_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    try:
        cfg = lta_cfg_from_args(args)
        return run(cfg)
    except (ConfigError, FileNotFoundError, MediaError, SubmissionError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
