#!/usr/bin/env python
"""The EgoT2 demo: task translation for Talking-To-Me on the synthetic Ego4D twin, end to end on a CPU.

    python scripts/demo.py                       # writes demo/ (4-7 minutes on 2 CPU cores)
    python scripts/demo.py --out /tmp/egot2_demo --seed 1 --workers 2

Stages (each announced with a banner; Lightning, prepare and cache builds show progress bars):

1. synthesise the ``small`` twin of an Ego4D download (social tasks: LAM, TTM, ASD; ``<out>/raw``) and prepare it
   into the training layouts (``<out>/data``);
2. stage I: train the task-specific LAM, TTM and ASD models with reduced CPU settings (small face crops, few
   epochs, short ASD tracks) and export them as ``<out>/pretrained_models/ts_{lam,ttm,asd}.pth``;
3. build the feature cache of the frozen backbones (``<out>/features``);
4. stage II: train EgoT2-s for TTM with 2-task (LAM + TTM) and 3-task (LAM + TTM + ASD) translation, exactly the
   README's commands plus the CPU settings, reading the cached tokens;
5. write the challenge file ``<out>/submit_ttm.json`` (3-task model, validated), the attention figure
   ``<out>/attention.png``, ``<out>/results.json`` and print a table shaped like the paper's.

Every stage runs the project's own scripts (``scripts/run_{lam,ttm,asd}.py``) in this process, with the current
directory set to ``<out>`` so that their ``logs/<task>/<output_dir>`` folders land there. The numbers are those of
the synthetic twin -- they show the method working (the translator reads the LAM model's gaze features, which carry
the "addressed to me" cue), not Ego4D results. The stage-I models get a CPU budget of one epoch each, the
translators five epochs on cached tokens. The same seed gives the same numbers; a re-run into the same folder
retrains (the twin, the prepared data and, when the backbones come out identical, the feature cache are reused).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

#: Reduced CPU settings per profile. "small" is the demo; "smoke" (tiny twin, a few steps) is for the tests.
PROFILES: dict[str, dict[str, Any]] = {
    "small": {
        "size": "small",
        "face_size": 32,
        "lam": ["--epochs", "1", "--batch_size", "16", "--lr", "1e-3", "--train_stride", "39", "--val_stride", "39"],
        "ttm": ["--epochs", "1", "--lr", "1e-3"],
        "asd": ["--epochs", "1", "--max_frames", "12", "--batch_size", "96", "--nodecay"],
        "translator": ["--epochs", "5", "--lr", "5e-4"],
        "asd_max_frames": 12,
    },
    "smoke": {
        "size": "tiny",
        "face_size": 16,
        "lam": ["--epochs", "1", "--batch_size", "8", "--train_stride", "60", "--val_stride", "60",
                "--limit_train_batches", "1"],
        "ttm": ["--epochs", "1", "--limit_train_batches", "1"],
        "asd": ["--epochs", "1", "--max_frames", "6", "--batch_size", "24", "--limit_train_batches", "1"],
        "translator": ["--epochs", "2"],
        "asd_max_frames": 6,
    },
}
#: Trailing config overrides of every demo run: keep only the best checkpoint (a stage-II file holds the frozen
#: backbones too, ~200 MB), no last.ckpt.
RUN_OPTS = ["CHECKPOINT.SAVE_TOP_K", "1", "CHECKPOINT.SAVE_LAST", "False"]

README_TRANSLATOR_FLAGS = ["--num_layers", "1", "--hidden_dim", "128", "--dropout", "0.5"]


def banner(text: str) -> None:
    """Print a stage banner."""
    line = "=" * min(100, max(40, len(text) + 6))
    print(f"\n{line}\n== {text}\n{line}", flush=True)


def _script(name: str):
    """Import ``scripts/<name>.py`` as a module (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"egot2_demo_{name}", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def working_directory(path: Path):
    """Run the block with ``path`` as the current directory (the scripts write ``./logs`` and ``./submit_*.json``)."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run_script(name: str, argv: list[str], out: Path) -> None:
    """Run ``scripts/<name>.py`` in this process with ``argv``, inside ``out``; a failure stops the demo."""
    print(f"$ python scripts/{name}.py {' '.join(argv)}", flush=True)
    with working_directory(out):
        status = _script(name).main(argv)
    if status:
        raise RuntimeError(f"scripts/{name}.py exited with status {status}")


def best_score(run_dir: Path, metric: str) -> float:
    """The best value of a logged validation metric over a run's epochs (its CSV log)."""
    import csv

    logs = sorted((run_dir / "csv").glob("version_*/metrics.csv"), key=lambda path: int(path.parent.name[8:]))
    if not logs:
        raise FileNotFoundError(f"{run_dir / 'csv'}: the run wrote no metrics")
    with open(logs[-1], newline="") as handle:
        values = [float(row[metric]) for row in csv.DictReader(handle) if row.get(metric) not in (None, "")]
    values = [value for value in values if math.isfinite(value)]
    if not values:
        raise ValueError(f"{logs[-1]}: no finite {metric}")
    return max(values)


def best_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint (the only ``epoch=*.ckpt`` left with ``CHECKPOINT.SAVE_TOP_K 1``)."""
    found = sorted((run_dir / "checkpoints").glob("epoch=*.ckpt"))
    if len(found) != 1:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'}: expected one best checkpoint, found {len(found)}")
    return found[0]


def _stage_one_score(path: Path) -> Optional[float]:
    from egot2.checkpoint import load_file

    container = load_file(path)
    return float(container["mAP"]) if isinstance(container, dict) and "mAP" in container else None


def format_table(ttm: dict) -> str:
    """The paper's TTM table, with the demo's numbers (percent)."""
    headers = ["", "Task-specific model", "EgoT2-s (2 task translation)", "EgoT2-s (3 task translation)"]
    values = ["TTM Val mAP (%)"] + [f"{100 * ttm[key]:.2f}" for key in ("task_specific", "egot2s_2task",
                                                                         "egot2s_3task")]
    widths = [max(len(h), len(v)) for h, v in zip(headers, values)]
    row = lambda cells: "| " + " | ".join(c.center(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([row(headers), rule, row(values)])


def run_demo(out: str | os.PathLike = "demo", seed: int = 0, workers: int = 2, profile: str = "small") -> dict:
    """Run every stage of the demo into ``out`` and return the results dictionary (also written as JSON).

    Args:
        out: output folder (created).
        seed: twin and training seed.
        workers: processes for synthesis/prepare and dataloader workers.
        profile: a key of :data:`PROFILES` ("small" = the demo, "smoke" = a seconds-long run on the tiny twin).

    Returns:
        ``{"ttm": {"task_specific", "egot2s_2task", "egot2s_3task"}, "stage_one": {...}, "timings_s": {...},
        "files": {...}, "settings": {...}}``.
    """
    import torch

    from egot2.jobs import write_json_atomic
    from egot2.submission import validate_file
    from egot2.synthetic import synthesize
    from HHI.prepare import prepare_social

    settings = PROFILES[profile]
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    raw_dir, data_dir = out / "raw", out / "data"
    models_dir, cache_dir = out / "pretrained_models", out / "features"
    if (out / "logs").exists():
        # The training stages start afresh (the twin, the prepared data and, if the backbones come out the same,
        # the feature cache are reused).
        print(f"removing the previous demo's training logs in {out / 'logs'}", flush=True)
        shutil.rmtree(out / "logs")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    face = ["--face_size", str(settings["face_size"])]
    # One loader worker decodes while the main process computes; more would only compete for the cores.
    common = ["--data_dir", str(data_dir), "--seed", str(seed), "--num_workers", str(min(workers, 1))]

    def timed(name: str):
        class _Timer(contextlib.ContextDecorator):
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timings[name] = round(time.perf_counter() - self.start, 1)
                return False
        return _Timer()

    banner(f"1/6  synthesise the {settings['size']} Ego4D twin (social tasks) and prepare it  ->  {data_dir}")
    with timed("synthesise_and_prepare"):
        synthesize(raw_dir, size=settings["size"], seed=seed, tasks=("lam", "ttm", "asd"), workers=workers)
        prepare_social(raw_dir, data_dir, tasks=("lam", "ttm", "asd"), workers=workers)

    models_dir.mkdir(parents=True, exist_ok=True)
    banner("2/6  stage I: task-specific LAM model (ResNet-18 frames + BiLSTM)")
    with timed("stage1_lam"):
        run_script("run_lam", ["--model", "BaselineLSTM", "--output_dir", "ts_model", *face, *common,
                               *settings["lam"], *RUN_OPTS], out)
        shutil.copyfile(out / "logs" / "lam" / "ts_model" / "ts_lam.pth", models_dir / "ts_lam.pth")
    banner("3/6  stage I: task-specific TTM model (ResNet-18 frames + BiLSTM + ResNetSE audio)")
    with timed("stage1_ttm"):
        run_script("run_ttm", ["--model", "BaselineLSTM", "--output_dir", "ts_model", *face, *common,
                               *settings["ttm"], *RUN_OPTS], out)
        shutil.copyfile(out / "logs" / "ttm" / "ts_model" / "ts_ttm.pth", models_dir / "ts_ttm.pth")
    banner("4/6  stage I: task-specific ASD model (TalkNet)")
    with timed("stage1_asd"):
        run_script("run_asd", ["--model", "talkNetModel", "--output_dir", "ts_model", *common, *settings["asd"],
                               *RUN_OPTS], out)
        shutil.copyfile(out / "logs" / "asd" / "ts_model" / "ts_asd.pth", models_dir / "ts_asd.pth")

    backbones = ["--lam_checkpoint", str(models_dir / "ts_lam.pth"), "--ttm_checkpoint",
                 str(models_dir / "ts_ttm.pth"), "--asd_checkpoint", str(models_dir / "ts_asd.pth")]
    translator = [*README_TRANSLATOR_FLAGS, *face, *common, *backbones, "--cache_features", str(cache_dir),
                  "--asd_max_frames", str(settings["asd_max_frames"]), *settings["translator"]]
    banner("5/6  feature cache of the frozen LAM, TTM and ASD backbones (train and val)")
    with timed("feature_cache"):
        build_feature_cache(translator, out)
    banner("6/6  stage II: EgoT2-s for TTM -- 2-task (LAM + TTM) and 3-task (LAM + TTM + ASD) translation")
    with timed("egot2s_2task"):
        run_script("run_ttm", ["--model", "TaskFusionMFTransformer2Task", "--output_dir", "2tasktranslation",
                               *translator, *RUN_OPTS], out)
    with timed("egot2s_3task"):
        run_script("run_ttm", ["--two_loader", "--model", "TaskFusionMFTransformer3Task", "--output_dir",
                               "3tasktranslation", *translator, *RUN_OPTS], out)
    logs = out / "logs" / "ttm"
    with timed("submit_ttm"):
        submission = out / "submit_ttm.json"
        run_script("run_ttm", ["--submit", "--two_loader", "--model", "TaskFusionMFTransformer3Task", "--ckpt",
                               str(best_checkpoint(logs / "3tasktranslation")), *translator], out)
        problems = validate_file("ttm", submission)
        if problems:
            raise RuntimeError(f"{submission} does not validate: {problems[:3]}")
    for name, target in (("3tasktranslation", "attention.png"), ("2tasktranslation", "attention_2task.png")):
        figure = logs / name / "attention" / "attention.png"
        if figure.is_file():
            shutil.copyfile(figure, out / target)
    timings["total"] = round(time.perf_counter() - started, 1)

    results = {
        "ttm": {"task_specific": _stage_one_score(models_dir / "ts_ttm.pth"),
                "egot2s_2task": best_score(logs / "2tasktranslation", "val_mAP"),
                "egot2s_3task": best_score(logs / "3tasktranslation", "val_mAP")},
        "stage_one": {"lam_val_mAP": _stage_one_score(models_dir / "ts_lam.pth"),
                      "ttm_val_mAP": _stage_one_score(models_dir / "ts_ttm.pth"),
                      "asd_val_acc": best_score(out / "logs" / "asd" / "ts_model", "val_acc")},
        "timings_s": timings,
        "files": {"results": "results.json", "submission": "submit_ttm.json", "attention": "attention.png",
                  "attention_2task": "attention_2task.png", "logs": "logs/", "pretrained_models": "pretrained_models/",
                  "features": "features/", "twin": "raw/", "data": "data/"},
        "settings": {"profile": profile, "seed": seed, "workers": workers, "torch_threads": torch.get_num_threads(),
                     **{key: value for key, value in settings.items()}},
    }
    write_json_atomic(out / "results.json", results, indent=2)
    banner("EgoT2-s on the synthetic twin (validation)")
    print(format_table(results["ttm"]))
    print(f"\nstage I: LAM val mAP {100 * results['stage_one']['lam_val_mAP']:.2f} %, ASD val frame accuracy "
          f"{100 * results['stage_one']['asd_val_acc']:.2f} %")
    print("timings (s): " + ", ".join(f"{name} {seconds:.0f}" for name, seconds in timings.items()))
    print(f"wrote {out / 'results.json'}, {submission}, {out / 'attention.png'}")
    return results


def build_feature_cache(translator_argv: list[str], out: Path) -> dict:
    """Fill the token caches of every backbone for train and val (what the translator runs then read)."""
    from HHI.cli import social_cfg
    from HHI.config import add_ttm_config, ttm_run_defaults
    from HHI.tasks.translation import build_ttm_translation_task, ttm_feature_caches, ttm_translation_dataset

    run_ttm = _script("run_ttm")
    args = run_ttm.parse_args(["--two_loader", "--model", "TaskFusionMFTransformer3Task", "--output_dir",
                               "feature_cache", *translator_argv])
    with working_directory(out):
        cfg = social_cfg(args, "ttm", extensions=(add_ttm_config, ttm_run_defaults),
                         flag_keys=run_ttm.FLAG_KEYS, path_flags=run_ttm.PATH_FLAGS)
    model = build_ttm_translation_task(cfg).model
    stats = {}
    for split in ("train", "val"):
        _, stats[split] = ttm_feature_caches(cfg, model, split, ttm_translation_dataset(cfg, split, paired=True))
    return stats


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo", help="output folder (default: demo/)")
    parser.add_argument("--seed", type=int, default=0, help="twin and training seed (default: 0)")
    parser.add_argument("--workers", type=int, default=2, help="processes for synthesis, prepare and data loading")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run on the tiny twin (for tests)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    run_demo(args.out, seed=args.seed, workers=args.workers, profile="smoke" if args.smoke else "small")
    return 0


if __name__ == "__main__":
    sys.exit(main())
