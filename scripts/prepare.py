"""Turn a raw Ego4D download (real, or the synthetic twin) into the training layouts of the selected tasks.

    python scripts/prepare.py --raw data/raw_twin --out data [--tasks lam,ttm,asd,pnr,oscc,ar,lta] [--workers 4]

Writes ``OUT/lam``, ``OUT/ttm``, ``OUT/asd`` (+ the shared ``OUT/social``) for the social tasks and ``OUT/fho``,
``OUT/lta`` for the FHO tasks. Without ``--tasks``, every task whose annotation files are present in the download
is prepared. Re-running is a no-op; an interrupted run resumes where it stopped.
"""
import argparse
import logging
import sys
import time
from pathlib import Path

from egot2.media import MediaError
from egot2.synthetic import ALL_TASKS, FHO_TASKS, SOCIAL_TASKS, parse_tasks


def _available_tasks(raw: Path) -> tuple:
    annotations = (raw / "v1" if (raw / "v1").is_dir() else raw) / "annotations"
    found = []
    if (annotations / "av_train.json").is_file():
        found += SOCIAL_TASKS
    if any(annotations.glob("fho_oscc-pnr_*.json")):
        found += ("pnr", "oscc")
    if any(annotations.glob("fho_lta_*.json")):
        found += ("ar", "lta")
    return tuple(t for t in ALL_TASKS if t in found)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", required=True, help="the raw download (the folder holding v1/)")
    parser.add_argument("--out", required=True, help="data root to write the training layouts into")
    parser.add_argument("--tasks", default=None, help="comma-separated subset of " + ",".join(ALL_TASKS)
                        + " (default: every task found in the download)")
    parser.add_argument("--workers", type=int, default=1, help="processes decoding videos in parallel")
    parser.add_argument("--label_mode", default="official", choices=("official", "is_at_me"),
                        help="LAM/TTM labels as the official builders make them, or from is_at_me (issue #24)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raw = Path(args.raw)
    if not raw.is_dir():
        parser.error(f"--raw {raw}: folder not found")
    try:
        tasks = parse_tasks(args.tasks) if args.tasks else _available_tasks(raw)
    except ValueError as err:
        parser.error(str(err))
    if not tasks:
        parser.error(f"--raw {raw}: no av_*.json or fho_*.json annotation files found under v1/annotations")
    started = time.perf_counter()
    social = tuple(t for t in tasks if t in SOCIAL_TASKS)
    fho = tuple(t for t in tasks if t in FHO_TASKS)
    try:
        if social:
            from HHI.prepare import prepare_social

            summary = prepare_social(raw, args.out, tasks=social, workers=args.workers, label_mode=args.label_mode)
            print(f"social ({','.join(social)}): {summary['clips']} clips, {summary['frames']} frames")
            for message, count in summary["warnings"].items():
                print(f"  warning: {message}: {count}")
        if fho:
            from HOI.prepare import prepare_fho

            counts = prepare_fho(raw, args.out, tasks=fho, workers=args.workers)
            details = ", ".join(f"{key} {value}" for key, value in (counts or {}).items())
            print(f"fho ({','.join(fho)}): {details or 'done'}")
    except (FileNotFoundError, ValueError, MediaError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"prepared {','.join(tasks)} into {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
