"""Stage I of PNR (keyframe localisation) and OSCC (object state change): train, evaluate, export, submit.

    python scripts/pnr/train.py --cfg configs/pnr/baseline/keyframe_bce.yaml        # PNR, paper settings
    python scripts/pnr/train.py --cfg configs/pnr/baseline/statechangecls.yaml      # OSCC, paper settings
    python scripts/pnr/train.py --cfg configs/eval/pnr.yaml                         # evaluate ts_pnr on val
    python scripts/pnr/train.py --cfg configs/eval/oscc.yaml --submit               # submit_oscc.json (test split)
    python scripts/pnr/train.py --cfg configs/pnr/cpu/keyframe_tiny.yaml            # small CPU model (minutes)

Flags: ``--data_dir D`` (else ``DATA.ROOT``, ``$EGO4D_DATA``, ``data/``), ``--output_dir`` (the run folder; else
``MISC.OUTPUT_DIR/MISC.LOG_DIR``), ``--resume [CKPT]`` (default: the run's ``checkpoints/last.ckpt``), ``--eval``
(no training: validate ``MISC.CHECKPOINT_FILE_PATH`` on the val split), ``--submit`` (predict the test split and
write a validated ``submit_pnr.json`` / ``submit_oscc.json`` into the current directory, or ``TEST.SUBMISSION_FILE``),
``--fast_dev_run``, ``--num_gpus``; trailing ``KEY VALUE`` pairs override config keys.

Training writes, under the run folder: ``config.yaml`` + ``versions.json``, CSV/TensorBoard logs, ``checkpoints/``
(top-3 by the task's metric + ``last.ckpt``, all with the official key layout) and finally ``ts_pnr.pth`` /
``ts_oscc.pth``: the best model in the released Lightning-1.6 container (``--resume`` restarts the interrupted
run). With ``TEST.ENABLE`` the best checkpoint is then validated again (the original "test" also ran on val).
Runs without training keep their config and logs in ``<run folder>/eval``.

The paper configs ask for 2 GPUs; with fewer the run falls back to the GPUs there are, or to the CPU, keeping the
global batch through gradient accumulation (a log line says so). On a CPU the paper-size model needs about 2.5 GB
of memory per training clip and ~20 s per clip and step: use ``configs/pnr/cpu/*_tiny.yaml`` there.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

try:
    import HOI  # noqa: F401  (installed with `pip install -e .`)
except ImportError:  # running from a checkout without installing: the repository root holds the packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from egot2.config import ConfigError, default_argument_parser, repo_path, resolve_data_root
from egot2.engine import build_trainer_from_cfg, predict_records, resume_checkpoint_from_cfg
from egot2.submission import annotation_expectations, oscc_results, pnr_results, write_submission
from HOI.config import pnr_cfg_from_args
from HOI.data.fho import StateChangeDataset
from HOI.tasks.state_change import (
    TASK_NAMES,
    build_state_change_loader,
    build_state_change_task,
    export_stage_one_checkpoint,
    load_stage_one_checkpoint,
    plan_devices,
)

log = logging.getLogger("pnr.train")


def _loader(cfg, split: str, plan, data_root, world_size: int):
    dataset = StateChangeDataset.from_config(cfg, split, data_root=data_root)
    train = split == "train"
    batch = plan.train_batch if train else plan.test_batch
    log.info("%s split: %d windows from %s", split, len(dataset), dataset.ann_file)
    return build_state_change_loader(dataset, batch, train=train, cfg=cfg, pin_memory=plan.num_gpus > 0,
                                     world_size=world_size)


def _submission_path(cfg, short: str) -> Path:
    if cfg.TEST.SUBMISSION_FILE:
        return repo_path(cfg.TEST.SUBMISSION_FILE)
    # The original eval scripts wrote submit_<task>.json into the working directory.
    return Path.cwd() / f"submit_{short}.json"


def _export_best(cfg, task, trainer, short: str) -> Path | None:
    callback = trainer.checkpoint_callback
    best = (callback.best_model_path or callback.last_model_path) if callback is not None else ""
    if not best:
        log.info("no checkpoint was written (fast_dev_run?): nothing to export")
        return None
    info = load_stage_one_checkpoint(task.model, best)
    score = callback.best_model_score
    path = repo_path(cfg.OUTPUT_DIR) / f"ts_{short}.pth"
    export_stage_one_checkpoint(task.model, path, epoch=int(info.get("epoch", 0)),
                                global_step=int(info.get("global_step", 0)), cfg=cfg, monitor=callback.monitor,
                                best_model_path=str(best), best_model_score=None if score is None else float(score))
    return path


def run(cfg, data_dir=None) -> int:
    """Train / evaluate / export / submit as ``cfg`` says; returns the process exit code."""
    short = TASK_NAMES[cfg.DATA.TASK]
    data_root = resolve_data_root(data_dir, cfg)
    plan = plan_devices(cfg.NUM_GPUS, torch.cuda.device_count(), cfg.TRAIN.BATCH_SIZE, cfg.TEST.BATCH_SIZE,
                        cfg.NUM_SHARDS)
    if plan.message:
        log.warning(plan.message)
    task = build_state_change_task(cfg)
    weights = cfg.CHECKPOINT.FILE_PATH
    if weights:
        load_stage_one_checkpoint(task.model, repo_path(weights))
        log.info("loaded weights from %s", repo_path(weights))
    elif not cfg.TRAIN.ENABLE:
        raise ConfigError("evaluation without training needs weights: set MISC.CHECKPOINT_FILE_PATH (e.g. "
                          "pretrained_models/ts_pnr.pth or a run's ts_pnr.pth)")
    run_dir = repo_path(cfg.OUTPUT_DIR)
    if not cfg.TRAIN.ENABLE:
        # An evaluation shares its training run's folder name (configs/eval/*.yaml): keep its records apart.
        run_dir = run_dir / "eval"
    trainer = build_trainer_from_cfg(cfg, output_dir=run_dir, num_gpus=plan.num_gpus,
                                     accumulate_grad_batches=plan.accumulate,
                                     monitor=cfg.CHECKPOINT.MONITOR or task.monitor,
                                     mode=cfg.CHECKPOINT.MODE if cfg.CHECKPOINT.MONITOR else "max")
    world = trainer.world_size
    log.info("data root %s; run folder %s", data_root, run_dir)

    evaluate_from = None
    if cfg.TRAIN.ENABLE:
        resume = resume_checkpoint_from_cfg(cfg)
        started = time.perf_counter()
        trainer.fit(task, _loader(cfg, "train", plan, data_root, world), _loader(cfg, "val", plan, data_root, world),
                    ckpt_path=None if resume is None else str(resume))
        log.info("training took %.1f s", time.perf_counter() - started)
        if trainer.is_global_zero:
            exported = _export_best(cfg, task, trainer, short)
            if exported is not None:
                print(f"exported the best model to {exported}", flush=True)
        evaluate_from = "best" if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path \
            else None
    if cfg.TEST.ENABLE:
        results = trainer.validate(task, _loader(cfg, "val", plan, data_root, world), ckpt_path=evaluate_from)
        for name, value in sorted((results[0] if results else {}).items()):
            print(f"{name}: {value:.4f}", flush=True)
    if cfg.TEST.SUBMIT:
        predictions = predict_records(trainer, task, _loader(cfg, "test", plan, data_root, world),
                                      ckpt_path=evaluate_from)
        if trainer.is_global_zero:
            test_ann = data_root / cfg.DATA.ANN_DIR / cfg.DATA.ANN_FILE_TEST
            if short == "pnr":
                offsets = predictions["pnr_frame_offset"].tolist()
                submission = pnr_results(dict(zip(predictions["unique_id"], offsets)))
            else:
                changes = predictions["state_change"].tolist()
                submission = oscc_results(dict(zip(predictions["unique_id"], changes)))
            path = write_submission(short, submission, _submission_path(cfg, short),
                                    **annotation_expectations(short, test_ann))
            print(f"wrote {len(submission)} predictions to {path}", flush=True)
    return 0


def main(argv=None) -> int:
    parser = default_argument_parser(__doc__)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = pnr_cfg_from_args(args)
        return run(cfg)
    except (ValueError, FileNotFoundError) as err:
        # Bad configs, data, checkpoints and submissions raise these with a message naming the file and the field.
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
