"""Feature cache: the tokens of frozen stage-I backbones, computed once per split and stored by sample id.

Stage II spends almost all its time running the frozen backbones over video. Their outputs do not change while a
translator trains (frozen weights, eval mode, no augmentation), so they are computed once and read back::

    dataset item ──decode──► backbone(s) ──► tokens [N, C] per source ──► <cache>/<split>/<source>/shard_*.pt
                                                                              │
    translator training / evaluation ◄── {source: tokens} by sample id ◄──────┘

On-disk format (version :data:`CACHE_FORMAT`), one folder per split and source, so translators that share a backbone
share its tokens (the 2- and 3-task TTM translators both read ``lam`` and ``ttm``)::

    <cache_dir>/<split>/<source>/
        index.json        {"format": 1, "source": "ttm", "split": "val", "fingerprint": "<sha256 hex>",
                           "settings": {...}, "complete": true, "num_samples": N,
                           "shards": {"shard_00000.pt": ["<sample id>", ...], ...}}
        shard_00000.pt    torch.save of {"<sample id>": Tensor[N_tokens, C] float32, ...}

Every file loads with ``torch.load(path, weights_only=True)``. The fingerprint hashes the backbone (its
checkpoint file bytes, or its state dict) and the feature settings (face size, data root, ...): a cache whose
fingerprint differs from the requested one is deleted and rebuilt. Shards and the index are written atomically
(temporary file + rename) and the index is rewritten after every shard, so a killed build resumes where it stopped;
``complete`` turns true once every sample id of the split is stored.

Multi-process runs: one process builds (the first one), the others wait for ``complete`` with
:func:`wait_for_caches` and then only read; the cache folder must be shared by all of them.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from egot2.media import atomic_path

__all__ = [
    "CACHE_FORMAT",
    "INDEX_NAME",
    "FeatureCache",
    "hash_file",
    "hash_state_dict",
    "backbone_fingerprint",
    "cache_fingerprint",
    "cache_is_complete",
    "wait_for_caches",
    "fill_caches",
    "CachedTokensDataset",
]

CACHE_FORMAT = 1
INDEX_NAME = "index.json"
_SHARD = "shard_{:05d}.pt"

PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------------------------
def hash_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes (e.g. a ``ts_<task>.pth`` checkpoint).

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot fingerprint {path}: file not found")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_state_dict(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 hex digest of a state dict: every key, dtype, shape and value, in key order."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def backbone_fingerprint(backbone: PathLike | nn.Module | Mapping[str, torch.Tensor]) -> str:
    """Hash of a backbone given as its checkpoint file, a module, or a state dict."""
    if isinstance(backbone, nn.Module):
        return hash_state_dict(backbone.state_dict())
    if isinstance(backbone, Mapping):
        return hash_state_dict(backbone)
    return hash_file(backbone)


def cache_fingerprint(backbone_hash: str, settings: Mapping[str, Any]) -> str:
    """Fingerprint of one source's cache: the backbone hash plus the JSON-serialisable feature settings."""
    text = json.dumps({"format": CACHE_FORMAT, "backbone": backbone_hash, "settings": dict(settings)},
                      sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# One source's cache of one split
# ---------------------------------------------------------------------------------------------------------------
def _check_sample_id(sample_id: Any) -> str:
    if not isinstance(sample_id, str) or not sample_id:
        raise ValueError(f"feature cache sample ids must be non-empty strings, got {sample_id!r}")
    return sample_id


class FeatureCache:
    """Tokens of one backbone (``source``) for one split, stored as described in the module docstring.

    Opening a cache whose ``index.json`` holds another fingerprint (or format) deletes its files: the tokens belong
    to another backbone or other settings. Temporary files left by a killed run are removed.

    Args:
        root: cache directory (``--cache_features DIR``).
        split: "train", "val", ...
        source: backbone name ("lam", "ttm", "asd", ...).
        fingerprint: :func:`cache_fingerprint` of the backbone and settings.
        settings: stored in the index for humans (what the tokens were computed with).
        shard_size: samples per shard file.
    """

    def __init__(self, root: PathLike, split: str, source: str, fingerprint: str,
                 settings: Mapping[str, Any] | None = None, shard_size: int = 256):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.folder = Path(root) / split / source
        self.split, self.source, self.fingerprint = split, source, fingerprint
        self.settings = dict(settings or {})
        self.shard_size = int(shard_size)
        self.rebuilt = False
        self._shards: dict[str, list[str]] = {}
        self._stored: set[str] = set()
        self._pending: dict[str, torch.Tensor] = {}
        self._complete = False
        self._tokens: dict[str, torch.Tensor] | None = None
        self._open()

    # ------------------------------------------------------------------------------------------ index
    @property
    def index_path(self) -> Path:
        return self.folder / INDEX_NAME

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.folder.glob(".*.tmp*"):
            leftover.unlink()
        for leftover in self.folder.glob(".shard_*"):
            leftover.unlink()
        index = self._read_index()
        if index is None or index.get("format") != CACHE_FORMAT or index.get("fingerprint") != self.fingerprint:
            self.rebuilt = index is not None or any(self.folder.glob("shard_*.pt"))
            self._clear()
            return
        shards = index.get("shards")
        if not isinstance(shards, dict):
            raise ValueError(f"{self.index_path}: field 'shards' must be an object of shard file -> sample ids")
        for name, ids in shards.items():
            if not (self.folder / name).is_file():
                # A shard the index promises but the disk lacks: drop its ids, they are recomputed.
                continue
            self._shards[name] = list(ids)
            self._stored.update(ids)
        self._complete = bool(index.get("complete")) and len(self._stored) == int(index.get("num_samples", -1))
        for stray in self.folder.glob("shard_*.pt"):
            if stray.name not in self._shards:
                stray.unlink()

    def _read_index(self) -> dict | None:
        if not self.index_path.is_file():
            return None
        try:
            index = json.loads(self.index_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # a damaged index is treated as no cache: everything is rebuilt
        return index if isinstance(index, dict) else None

    def _clear(self) -> None:
        for path in list(self.folder.glob("shard_*.pt")) + [self.index_path]:
            if path.exists():
                path.unlink()
        self._shards, self._stored, self._complete = {}, set(), False

    def _write_index(self) -> None:
        from egot2.jobs import write_json_atomic

        write_json_atomic(self.index_path, {
            "format": CACHE_FORMAT, "source": self.source, "split": self.split, "fingerprint": self.fingerprint,
            "settings": self.settings, "complete": self._complete, "num_samples": len(self._stored),
            "shards": self._shards,
        }, indent=1)

    # ------------------------------------------------------------------------------------------ writing
    @property
    def complete(self) -> bool:
        """Every sample id of the split is stored (set by :meth:`finish`)."""
        return self._complete

    @property
    def stored_ids(self) -> frozenset:
        return frozenset(self._stored) | frozenset(self._pending)

    def missing(self, sample_ids: Iterable[str]) -> list[str]:
        """The ids among ``sample_ids`` that are not stored yet, in the given order."""
        stored = self.stored_ids
        return [sample_id for sample_id in sample_ids if sample_id not in stored]

    def add(self, sample_id: str, tokens: torch.Tensor) -> None:
        """Queue one sample's tokens [N, C]; a shard is written every ``shard_size`` samples."""
        _check_sample_id(sample_id)
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            raise ValueError(f"cache '{self.source}': tokens of sample {sample_id!r} must be a tensor [N, C], "
                             f"got {getattr(tokens, 'shape', type(tokens))}")
        if sample_id in self._stored or sample_id in self._pending:
            raise ValueError(f"cache '{self.source}' ({self.folder}): sample id {sample_id!r} is stored twice; "
                             "sample ids must be unique within a split")
        self._pending[sample_id] = tokens.detach().to("cpu", torch.float32).contiguous().clone()
        self._complete = False
        self._tokens = None
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the queued samples as a new shard and update the index."""
        if not self._pending:
            return
        number = 0
        while _SHARD.format(number) in self._shards:
            number += 1
        name = _SHARD.format(number)
        with atomic_path(self.folder / name) as tmp:
            torch.save(self._pending, tmp)
        self._shards[name] = list(self._pending)
        self._stored.update(self._pending)
        self._pending = {}
        self._write_index()

    def finish(self, sample_ids: Iterable[str]) -> None:
        """Flush and mark the cache complete if it holds every id in ``sample_ids``.

        Raises:
            ValueError: some ids are still missing (the message names a few).
        """
        self.flush()
        missing = self.missing(sample_ids)
        if missing:
            raise ValueError(f"cache '{self.source}' ({self.folder}) lacks {len(missing)} samples, "
                             f"e.g. {missing[:3]}")
        self._complete = True
        self._write_index()

    # ------------------------------------------------------------------------------------------ reading
    def tokens(self) -> dict[str, torch.Tensor]:
        """``{sample_id: Tensor[N, C]}`` of every stored sample (shards memory-mapped, loaded once).

        Raises:
            ValueError: a shard is unreadable or does not hold the ids the index lists.
        """
        if self._tokens is None:
            self.flush()
            tokens: dict[str, torch.Tensor] = {}
            for name, ids in self._shards.items():
                path = self.folder / name
                try:
                    shard = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
                except Exception as error:  # noqa: BLE001  (torch raises many types on damaged files)
                    raise ValueError(f"{path}: unreadable feature-cache shard ({type(error).__name__}: {error}); "
                                     f"delete {self.folder} to rebuild it") from None
                if not isinstance(shard, dict) or set(shard) != set(ids):
                    raise ValueError(f"{path}: shard does not hold the sample ids {self.index_path} lists; "
                                     f"delete {self.folder} to rebuild it")
                tokens.update(shard)
            self._tokens = tokens
        return self._tokens

    def __len__(self) -> int:
        return len(self.stored_ids)

    def __repr__(self) -> str:
        return (f"FeatureCache({str(self.folder)!r}, samples={len(self)}, complete={self.complete}, "
                f"fingerprint={self.fingerprint[:12]})")


def cache_is_complete(root: PathLike, split: str, source: str, fingerprint: str) -> bool:
    """Whether ``<root>/<split>/<source>`` holds a complete cache for ``fingerprint`` (reads only its index)."""
    index_path = Path(root) / split / source / INDEX_NAME
    try:
        index = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return (isinstance(index, dict) and index.get("format") == CACHE_FORMAT and index.get("fingerprint") == fingerprint
            and bool(index.get("complete")))


def wait_for_caches(root: PathLike, split: str, fingerprints: Mapping[str, str], timeout_s: float = 4 * 3600,
                    poll_s: float = 5.0) -> None:
    """Block until another process (the first of a multi-process run) has completed these caches.

    Args:
        root, split: cache location.
        fingerprints: ``{source: fingerprint}`` expected.
        timeout_s: give up after this long.
        poll_s: seconds between checks.

    Raises:
        TimeoutError: the caches did not appear (e.g. the folder is not shared between the machines).
    """
    deadline = time.monotonic() + timeout_s
    while not all(cache_is_complete(root, split, source, fingerprint) for source, fingerprint in fingerprints.items()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"feature caches {sorted(fingerprints)} of split '{split}' under {root} were not "
                               f"completed within {timeout_s:.0f} s by the first process; the cache folder must be "
                               "shared by all processes (or built beforehand with a single process)")
        time.sleep(poll_s)


# ---------------------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------------------
def _as_list(samples: Any) -> list:
    return list(samples)


def fill_caches(
    caches: Mapping[str, FeatureCache],
    dataset: Dataset,
    sample_ids: Sequence[str],
    extract: Callable[[list, Sequence[str]], Sequence[Mapping[str, torch.Tensor]]],
    *,
    samples_per_call: int = 8,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "caching features",
) -> dict[str, Any]:
    """Compute and store the tokens every cache lacks; each needed dataset item is decoded once.

    Args:
        caches: ``{source: FeatureCache}`` of one split.
        dataset: map-style dataset of that split; ``dataset[i]`` is the sample ``sample_ids[i]``.
        sample_ids: id of every dataset item (unique).
        extract: ``extract(samples, sources) -> [{source: Tensor[N_s, C]} per sample]``: runs the frozen backbones of
            ``sources`` on a list of raw samples (it decides how to batch them; every sample keeps its full length).
        samples_per_call: samples handed to ``extract`` at a time.
        num_workers: DataLoader workers that decode the samples.
        progress: show a tqdm bar (samples).
        desc: bar label.

    Returns:
        ``{"computed": samples run through the backbones, "seconds": wall time}``.
    """
    ids = [_check_sample_id(sample_id) for sample_id in sample_ids]
    if len(ids) != len(dataset):
        raise ValueError(f"{desc}: {len(ids)} sample ids for a dataset of {len(dataset)} items")
    if len(set(ids)) != len(ids):
        duplicates = sorted({sample_id for sample_id in ids if ids.count(sample_id) > 1})[:3]
        raise ValueError(f"{desc}: sample ids are not unique, e.g. {duplicates}")
    started = time.perf_counter()
    missing = {source: set(cache.missing(ids)) for source, cache in caches.items()}
    positions = [index for index, sample_id in enumerate(ids) if any(sample_id in m for m in missing.values())]
    if positions:
        # Building a cache must not move the global random state: a run that builds it and one that finds it
        # ready then train identically (same dropout masks, same loader seeds).
        with torch.random.fork_rng(devices=[]):
            _fill(caches, dataset, ids, positions, missing, extract, samples_per_call, num_workers, progress, desc)
    for cache in caches.values():
        cache.finish(ids)
    return {"computed": len(positions), "seconds": time.perf_counter() - started}


def _fill(caches: Mapping[str, FeatureCache], dataset: Dataset, ids: list, positions: list, missing: dict,
          extract: Callable, samples_per_call: int, num_workers: int, progress: bool, desc: str) -> None:
    """Run ``extract`` over the dataset items at ``positions`` and store what each cache misses."""
    loader = DataLoader(Subset(dataset, positions), batch_size=samples_per_call, shuffle=False,
                        num_workers=num_workers, collate_fn=_as_list)
    bar = tqdm(total=len(positions), desc=desc, unit="sample", disable=not progress, dynamic_ncols=True)
    offset = 0
    with torch.inference_mode():
        for samples in loader:
            batch_ids = [ids[index] for index in positions[offset:offset + len(samples)]]
            offset += len(samples)
            sources = [source for source in caches if any(i in missing[source] for i in batch_ids)]
            outputs = extract(samples, sources)
            if len(outputs) != len(samples):
                raise ValueError(f"{desc}: extract returned {len(outputs)} results for {len(samples)} samples")
            for sample_id, output in zip(batch_ids, outputs):
                for source in sources:
                    if sample_id in missing[source]:
                        if source not in output:
                            raise ValueError(f"{desc}: extract gave no '{source}' tokens for {sample_id!r}")
                        caches[source].add(sample_id, output[source])
            bar.update(len(samples))
    bar.close()


class CachedTokensDataset(Dataset):
    """A dataset whose items carry cached tokens instead of video.

    Args:
        items: the per-sample metadata dicts (labels, ids, lengths -- whatever the task's collate needs, no video).
        sample_ids: id of each item.
        caches: ``{source: FeatureCache}`` (complete) to read the tokens from.

    Items: ``{**items[i], "sample_id": str, "tokens": {source: Tensor[N_s, C] float32}}``.
    """

    def __init__(self, items: Sequence[Mapping[str, Any]], sample_ids: Sequence[str],
                 caches: Mapping[str, FeatureCache]):
        if len(items) != len(sample_ids):
            raise ValueError(f"{len(items)} items but {len(sample_ids)} sample ids")
        self.items = list(items)
        self.sample_ids = list(sample_ids)
        self.tokens = {}
        for source, cache in caches.items():
            stored = cache.tokens()
            absent = [sample_id for sample_id in self.sample_ids if sample_id not in stored]
            if absent:
                raise ValueError(f"feature cache {cache.folder} lacks {len(absent)} samples of this split, "
                                 f"e.g. {absent[:3]}; build it first")
            self.tokens[source] = stored

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample_id = self.sample_ids[index]
        return {**self.items[index], "sample_id": sample_id,
                "tokens": {source: stored[sample_id] for source, stored in self.tokens.items()}}
