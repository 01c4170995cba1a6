#!/usr/bin/env python
"""Benchmark of the feature cache: epoch time of 2-task EgoT2-s TTM training with and without cached tokens.

    python scripts/bench.py                                   # small twin in bench/, JSON to bench/bench.json
    python scripts/bench.py --out bench.json --size small --face_size 64 --epochs 2 --threads 2

Both runs train the same translator (README settings: 1 layer, width 128, dropout 0.5) on the same batches, one
after the other in this process, and time only the training epochs (no validation). The first cache build is
timed separately: it is paid once per split and backbone. Output (also printed)::

    {"ttm_2task_epoch_s": {"uncached": s, "cached": s, "speedup": x}, "cache_build_s": {"train": s},
     "settings": {...}, "machine": {"cpu": ..., "cores": n, "torch_threads": n, "torch": ..., "python": ...}}

Data: ``--data_dir`` (a prepared layout), else the ``--size`` twin synthesised and prepared under ``--work``.
Backbones: ``--lam_checkpoint`` / ``--ttm_checkpoint``, else randomly initialised stage-I models written there
(timing does not depend on the weights).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from pytorch_lightning.callbacks import Callback

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


class EpochTimer(Callback):
    """Wall time of every training epoch (validation excluded)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def machine_info() -> dict:
    """CPU model, core count, torch threads and library versions of this run."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def _random_backbones(folder: Path) -> dict:
    from egot2.checkpoint import save_social_checkpoint
    from HHI.models.lstm import LAMBaselineLSTM, TTMBaselineLSTM

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    paths = {"lam": folder / "ts_lam.pth", "ttm": folder / "ts_ttm.pth"}
    for source, model_class in (("lam", LAMBaselineLSTM), ("ttm", TTMBaselineLSTM)):
        if not paths[source].is_file():
            save_social_checkpoint(paths[source], model_class().state_dict(), epoch=0, mAP=0.0)
    return paths


def _prepared_twin(work: Path, size: str, seed: int, workers: int) -> Path:
    from egot2.synthetic import synthesize
    from HHI.prepare import prepare_social

    raw, data = work / "twin" / "raw", work / "twin" / "data"
    synthesize(raw, size=size, seed=seed, tasks=("lam", "ttm", "asd"), workers=workers)
    prepare_social(raw, data, tasks=("ttm",), workers=workers)
    return data


def _cfg(args: argparse.Namespace, data_dir: Path, checkpoints: dict, run_dir: Path, cache_dir: str):
    from HHI.cli import social_cfg
    from HHI.config import add_ttm_config, ttm_run_defaults

    run_ttm = _load_run_ttm()
    argv = ["--model", "TaskFusionMFTransformer2Task", "--num_layers", "1", "--hidden_dim", "128", "--dropout", "0.5",
            "--output_dir", "bench", "--epochs", str(args.epochs), "--face_size", str(args.face_size),
            "--data_dir", str(data_dir), "--num_workers", str(args.workers), "--seed", str(args.seed),
            "--lam_checkpoint", str(checkpoints["lam"]), "--ttm_checkpoint", str(checkpoints["ttm"])]
    parsed = run_ttm.parse_args(argv)
    cfg = social_cfg(parsed, "ttm", extensions=(add_ttm_config, ttm_run_defaults),
                     flag_keys=run_ttm.FLAG_KEYS, path_flags=run_ttm.PATH_FLAGS, freeze=False)
    cfg.OUTPUT_DIR = str(run_dir)
    cfg.HHI.CACHE_FEATURES = cache_dir
    cfg.freeze()
    return cfg


def _load_run_ttm():
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_ttm", REPO_ROOT / "scripts" / "run_ttm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_training(cfg, progress: bool) -> tuple[list[float], float]:
    """Train the configured translator with validation off; returns (epoch seconds, cache build seconds)."""
    from egot2.engine import build_trainer_from_cfg
    from HHI.tasks.translation import build_ttm_translation_task, ttm_translation_loader

    task = build_ttm_translation_task(cfg)
    started = time.perf_counter()
    loader = ttm_translation_loader(cfg, "train", task.model, progress=progress)
    build_seconds = time.perf_counter() - started if cfg.HHI.CACHE_FEATURES else 0.0
    timer = EpochTimer()
    trainer = build_trainer_from_cfg(cfg, write_info=False, limit_val_batches=0, num_sanity_val_steps=0,
                                     enable_progress_bar=progress, extra_callbacks=[timer], save_top_k=0,
                                     save_last=False, monitor=None, use_distributed_sampler=False)
    trainer.fit(task, train_dataloaders=loader)
    return timer.seconds, build_seconds


def run_bench(args: argparse.Namespace) -> dict:
    """Run both trainings and return the result dictionary (see the module docstring)."""
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir).resolve() if args.data_dir else _prepared_twin(work, args.size, args.seed,
                                                                                  args.workers)
    checkpoints = _random_backbones(work / "pretrained_models")
    if args.lam_checkpoint:
        checkpoints["lam"] = Path(args.lam_checkpoint).resolve()
    if args.ttm_checkpoint:
        checkpoints["ttm"] = Path(args.ttm_checkpoint).resolve()
    cache_dir = work / "features"
    if cache_dir.exists() and not args.keep_cache:
        import shutil

        shutil.rmtree(cache_dir)  # the first build is part of what is measured
    print("== 2-task EgoT2-s TTM, backbones run every step (uncached)", flush=True)
    uncached, _ = time_training(_cfg(args, data_dir, checkpoints, work / "logs" / "uncached", ""), args.progress)
    print("== the same with the feature cache", flush=True)
    cached, build = time_training(_cfg(args, data_dir, checkpoints, work / "logs" / "cached", str(cache_dir)),
                                  args.progress)
    uncached_s, cached_s = statistics.median(uncached), statistics.median(cached)
    return {
        "ttm_2task_epoch_s": {"uncached": round(uncached_s, 3), "cached": round(cached_s, 3),
                              "speedup": round(uncached_s / cached_s, 1)},
        "epochs_s": {"uncached": [round(s, 3) for s in uncached], "cached": [round(s, 3) for s in cached]},
        "cache_build_s": {"train": round(build, 3)},
        "settings": {"size": None if args.data_dir else args.size, "data_dir": str(data_dir),
                     "face_size": args.face_size, "epochs": args.epochs, "workers": args.workers, "seed": args.seed,
                     "model": "TaskFusionMFTransformer2Task", "num_layers": 1, "hidden_dim": 128, "dropout": 0.5},
        "machine": machine_info(),
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="JSON result file (default: <work>/bench.json)")
    parser.add_argument("--work", default="bench", help="working folder: twin, checkpoints, cache, logs (bench/)")
    parser.add_argument("--size", default="small", choices=("tiny", "small"), help="twin size (default: small)")
    parser.add_argument("--data_dir", default=None, help="use this prepared data root instead of a twin")
    parser.add_argument("--seed", type=int, default=0, help="twin and training seed")
    parser.add_argument("--face_size", type=int, default=64, help="face crop side (default: 64)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the median epoch is reported")
    parser.add_argument("--workers", type=int, default=2, help="data-loading / prepare workers (default: 2)")
    parser.add_argument("--lam_checkpoint", default=None, help="LAM stage-I file (default: random weights)")
    parser.add_argument("--ttm_checkpoint", default=None, help="TTM stage-I file (default: random weights)")
    parser.add_argument("--keep_cache", action="store_true", help="reuse an existing cache (build time ~0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default: 1; on a machine shared with other jobs, several threads per "
                             "process mostly wait for each other and blur the comparison)")
    parser.add_argument("--no_progress", dest="progress", action="store_false", help="hide progress bars")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run_bench(args)
    out = Path(args.out) if args.out else Path(args.work) / "bench.json"
    from egot2.jobs import write_json_atomic

    write_json_atomic(out, result, indent=2)
    epoch = result["ttm_2task_epoch_s"]
    print(f"2-task TTM translator, seconds per training epoch: uncached {epoch['uncached']:.2f}, cached "
          f"{epoch['cached']:.3f} -> {epoch['speedup']:.1f}x faster; first cache build "
          f"{result['cache_build_s']['train']:.1f} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
