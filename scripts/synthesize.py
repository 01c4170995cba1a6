"""Write the synthetic Ego4D twin: a small raw download with planted, learnable signals.

    python scripts/synthesize.py --out data/raw_twin --size tiny --seed 0 [--tasks lam,ttm,asd,pnr,oscc,ar,lta]

The output has the layout of a real Ego4D download (``v1/annotations``, ``v1/clips``, ``v1/full_scale``,
``v1/social_test``) plus ``twin.json`` describing the planted rules; turn it into training layouts with
``scripts/prepare.py``.
"""
import argparse
import sys
import time

from egot2.synthetic import ALL_TASKS, SIZES, parse_tasks, synthesize


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write the raw download into")
    parser.add_argument("--size", default="tiny", choices=SIZES, help="tiny (tests) or small (demo, benchmarks)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    parser.add_argument("--tasks", default=",".join(ALL_TASKS), help="comma-separated subset of "
                                                                     + ",".join(ALL_TASKS))
    parser.add_argument("--workers", type=int, default=1, help="processes rendering clips in parallel")
    args = parser.parse_args(argv)
    try:
        tasks = parse_tasks(args.tasks)
    except ValueError as err:
        parser.error(str(err))
    started = time.perf_counter()
    out = synthesize(args.out, size=args.size, seed=args.seed, tasks=tasks, workers=args.workers)
    print(f"wrote the {args.size} twin (seed {args.seed}, tasks {','.join(tasks)}) to {out} "
          f"in {time.perf_counter() - started:.1f} s; see {out / 'twin.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
