"""A prepared synthetic twin for tests: ``make_twin(tmp_dir, size, seed, tasks) -> (raw_dir, data_dir)``.

Synthesizing and preparing costs seconds, so results are cached per process by ``(size, seed, tasks)``: a later call
with the same arguments (or a subset of already-built tasks) returns the folders built first, whatever ``tmp_dir``
it passes. Tests must treat the returned folders as read-only; a test that modifies data copies it first.

Typical use::

    @pytest.fixture(scope="module")
    def twin(tmp_path_factory):
        return make_twin(tmp_path_factory.mktemp("twin"), tasks=("lam", "ttm", "asd"))
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from egot2.synthetic import ALL_TASKS, FHO_TASKS, SOCIAL_TASKS, parse_tasks, synthesize

_CACHE: dict = {}


def make_twin(tmp_dir, size: str = "tiny", seed: int = 0, tasks: Sequence[str] = ALL_TASKS,
              workers: int = 1) -> tuple[Path, Path]:
    """Synthesize a raw twin download and prepare it; cached per process.

    Returns:
        (raw_dir holding ``v1/``, data_dir holding ``lam/``, ``ttm/``, ``asd/``, ``fho/``, ``lta/`` as selected).
    """
    tasks = parse_tasks(tasks)
    for (cached_size, cached_seed, cached_tasks), dirs in _CACHE.items():
        if (cached_size, cached_seed) == (size, seed) and set(tasks) <= set(cached_tasks) \
                and all(d.is_dir() for d in dirs):
            return dirs
    root = Path(tmp_dir) / f"twin_{size}_seed{seed}_{'-'.join(tasks)}"
    raw_dir, data_dir = root / "raw", root / "data"
    synthesize(raw_dir, size=size, seed=seed, tasks=tasks, workers=workers)
    social = tuple(t for t in tasks if t in SOCIAL_TASKS)
    fho = tuple(t for t in tasks if t in FHO_TASKS)
    if social:
        from HHI.prepare import prepare_social

        prepare_social(raw_dir, data_dir, tasks=social, workers=workers, progress=False)
    if fho:
        from HOI.prepare import prepare_fho

        prepare_fho(raw_dir, data_dir, tasks=fho, workers=workers, progress=False)
    _CACHE[(size, seed, tasks)] = (raw_dir, data_dir)
    return raw_dir, data_dir
