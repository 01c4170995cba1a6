"""Checkpoint manifests of the official EgoT2 / Ego4D files: key names, shapes and dtypes (see README.md here).

Tests build state dicts from them to prove that official files load strictly and that the files we write have the
official layout.
"""
import json
from functools import lru_cache
from pathlib import Path

import torch

MANIFEST_DIR = Path(__file__).resolve().parent
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "float16": torch.float16,
           "int32": torch.int32, "bool": torch.bool}


@lru_cache(maxsize=None)
def load_manifest(name: str) -> dict:
    """The manifest ``name`` (``"ts_lam"`` or ``"ts_lam.json"``) as a dict."""
    return json.loads((MANIFEST_DIR / (name if name.endswith(".json") else name + ".json")).read_text())


def manifest_keys(name: str) -> list:
    """``[(key, shape tuple, dtype str), ...]`` in file order."""
    return [(key, tuple(shape), dtype) for key, shape, dtype in load_manifest(name)["keys"]]


def random_state_dict(name: str, prefix: str = "", strip: str = "", seed: int = 0) -> dict:
    """A state dict with exactly the manifest's keys (those under ``prefix``), shapes and dtypes, random values.

    Args:
        prefix: keep only keys starting with it.
        strip: remove this leading string from every kept key (e.g. ``"model."``).
    """
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, dtype in manifest_keys(name):
        if not key.startswith(prefix):
            continue
        dtype = _DTYPES[dtype]
        if dtype.is_floating_point:
            value = torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype)
        else:
            value = torch.randint(0, 3, shape, generator=generator).to(dtype)
        state[key[len(strip):] if strip and key.startswith(strip) else key] = value
    return state
