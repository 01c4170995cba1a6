"""The synthetic Ego4D twin: a small raw *download* (annotation JSONs in the official schemas, mp4 clips, split lists,
challenge test releases) with planted, learnable signals, so the whole chain raw → prepare → train → evaluate →
submit runs without the licensed data.

Layout written under ``out_dir`` (as the Ego4D CLI lays out a download)::

    v1/annotations/av_{train,val}.json, social_splits/*.list     social part (egot2.synthetic.social)
    v1/annotations/fho_*.json                                    FHO part (egot2.synthetic.fho)
    v1/annotations/manifest.csv                                  video_uid -> canonical_s3_location
    v1/clips/<clip_uid>.mp4, v1/full_scale/<video_uid>.mp4        videos
    v1/social_test/...                                           LAM / TTM challenge test releases
    twin.json                                                    size, seed, tasks and planted rules (for humans)
    twin_answers/                                                hidden test labels (not part of a real download)

Same ``(size, seed, tasks)`` → byte-identical tree, whatever the number of workers.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Sequence

from egot2.jobs import write_json_atomic, write_text_atomic

__all__ = ["ALL_TASKS", "SOCIAL_TASKS", "FHO_TASKS", "SIZES", "synthesize", "parse_tasks"]

SOCIAL_TASKS = ("lam", "ttm", "asd")
FHO_TASKS = ("pnr", "oscc", "ar", "lta")
ALL_TASKS = SOCIAL_TASKS + FHO_TASKS
SIZES = ("tiny", "small")
_S3_PREFIX = "s3://ego4d-consortium-sharing/public/v1/full_scale/"


def parse_tasks(tasks) -> tuple[str, ...]:
    """Normalise a task selection (``"lam,ttm"`` or a sequence) to a tuple in canonical order.

    Raises:
        ValueError: an unknown task name (the message lists the known ones).
    """
    if isinstance(tasks, str):
        tasks = [t for t in tasks.replace(" ", "").split(",") if t]
    tasks = list(tasks)
    unknown = sorted(set(tasks) - set(ALL_TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {','.join(ALL_TASKS)}")
    if not tasks:
        raise ValueError(f"no task selected; choose from {','.join(ALL_TASKS)}")
    return tuple(t for t in ALL_TASKS if t in tasks)


def synthesize(out_dir, size: str = "tiny", seed: int = 0, tasks: Sequence[str] = ALL_TASKS,
               workers: int = 1) -> Path:
    """Write a twin download of the selected tasks under ``out_dir``.

    Args:
        out_dir: destination folder (created).
        size: ``"tiny"`` (tests, seconds) or ``"small"`` (demo and benchmarks, about a minute).
        seed: all randomness derives from it; the same seed gives the same bytes.
        tasks: any of ``lam, ttm, asd, pnr, oscc, ar, lta`` (a comma-separated string works too). The social tasks
            share one set of annotations and clips, so any of them writes the whole social part.
        workers: processes rendering clips in parallel (results do not depend on it).

    Returns:
        ``out_dir`` as a Path.
    """
    if size not in SIZES:
        raise ValueError(f"unknown twin size {size!r}; choose one of {list(SIZES)}")
    tasks = parse_tasks(tasks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    description = {"generator": "egot2.synthetic", "size": size, "seed": int(seed), "tasks": list(tasks)}
    social = [t for t in tasks if t in SOCIAL_TASKS]
    fho = [t for t in tasks if t in FHO_TASKS]
    if social:
        from egot2.synthetic.social import synthesize_social

        description["social"] = synthesize_social(out_dir, size=size, seed=seed, tasks=social, workers=workers)
    if fho:
        # Imported lazily: the FHO half lives in its own module and is not needed for a social-only twin.
        try:
            from egot2.synthetic import fho as fho_module
        except ImportError as err:
            raise ImportError(f"the FHO twin generator (egot2.synthetic.fho) cannot be imported ({err}); "
                              f"synthesize only the social tasks with tasks={','.join(SOCIAL_TASKS)}") from err
        kwargs = {"workers": workers} if "workers" in inspect.signature(fho_module.synthesize_fho).parameters else {}
        summary = fho_module.synthesize_fho(out_dir, size, seed, fho, **kwargs)
        description["fho"] = summary if isinstance(summary, dict) else {
            "rules": list(getattr(fho_module, "FHO_RULES", []))}
    _write_manifest(out_dir)
    write_json_atomic(out_dir / "twin.json", description, indent=2, sort_keys=True)
    return out_dir


def _write_manifest(out_dir: Path) -> None:
    """``v1/annotations/manifest.csv``: every video the annotations refer to, plus every downloaded full-scale video."""
    annotations = out_dir / "v1" / "annotations"
    video_uids = set()
    for path in sorted(annotations.glob("av_*.json")):
        video_uids.update(video["video_uid"] for video in json.loads(path.read_text())["videos"])
    full_scale = out_dir / "v1" / "full_scale"
    if full_scale.is_dir():
        video_uids.update(path.stem for path in full_scale.glob("*.mp4"))
    rows = "".join(f"{uid},{_S3_PREFIX}{uid}.mp4\n" for uid in sorted(video_uids))
    write_text_atomic(annotations / "manifest.csv", "video_uid,canonical_s3_location\n" + rows)
