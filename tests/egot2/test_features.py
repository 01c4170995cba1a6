"""Feature cache: format, fingerprints, resumption, invalidation, and reading tokens back exactly."""
import json
import shutil

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from egot2.features import (
    CACHE_FORMAT,
    CachedTokensDataset,
    FeatureCache,
    backbone_fingerprint,
    cache_fingerprint,
    fill_caches,
    hash_file,
)


class _Clips(Dataset):
    """Variable-length 'videos' [T_i, 4]; counts how often each item is decoded."""

    def __init__(self, lengths):
        generator = torch.Generator().manual_seed(0)
        self.videos = [torch.randn(length, 4, generator=generator) for length in lengths]
        self.decoded = []

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, index):
        self.decoded.append(index)
        return {"video": self.videos[index], "label": index % 2}


class _Backbones(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lam = nn.Linear(4, 3)
        self.ttm = nn.Linear(4, 5)
        self.calls = 0

    def extract(self, samples, sources):
        self.calls += 1
        return [{source: getattr(self, source)(sample["video"]) for source in sources} for sample in samples]


IDS = [f"clip:{i}" for i in range(7)]


def _caches(root, fingerprints=("a", "b"), shard_size=3):
    return {source: FeatureCache(root, "val", source, fingerprint, settings={"face_size": 32}, shard_size=shard_size)
            for source, fingerprint in zip(("lam", "ttm"), fingerprints)}


def test_tokens_are_stored_by_sample_id_and_read_back_exactly(tmp_path):
    dataset, backbones = _Clips([3, 5, 2, 4, 6, 1, 3]), _Backbones()
    caches = _caches(tmp_path)
    stats = fill_caches(caches, dataset, IDS, backbones.extract, samples_per_call=2, progress=False)
    assert stats["computed"] == 7 and sorted(dataset.decoded) == list(range(7))  # each item decoded once
    for source, cache in caches.items():
        assert cache.complete and len(cache) == 7
        tokens = cache.tokens()
        for index, sample_id in enumerate(IDS):
            expected = getattr(backbones, source)(dataset.videos[index]).detach()
            assert torch.equal(tokens[sample_id], expected)
    # Documented on-disk format: index.json + shards loadable with weights_only=True.
    folder = tmp_path / "val" / "ttm"
    index = json.loads((folder / "index.json").read_text())
    assert index["format"] == CACHE_FORMAT and index["complete"] and index["num_samples"] == 7
    assert index["fingerprint"] == "b" and index["settings"] == {"face_size": 32}
    assert sorted(index["shards"]) == ["shard_00000.pt", "shard_00001.pt", "shard_00002.pt"]
    shard = torch.load(folder / "shard_00000.pt", weights_only=True)
    assert list(shard) == index["shards"]["shard_00000.pt"] and shard["clip:0"].shape == (3, 5)


def test_reopening_a_complete_cache_computes_nothing(tmp_path):
    dataset, backbones = _Clips([2] * 7), _Backbones()
    fill_caches(_caches(tmp_path), dataset, IDS, backbones.extract, progress=False)
    dataset.decoded.clear()
    again = _caches(tmp_path)
    stats = fill_caches(again, dataset, IDS, backbones.extract, progress=False)
    assert stats["computed"] == 0 and dataset.decoded == []
    assert all(cache.complete and not cache.rebuilt for cache in again.values())


def test_a_changed_fingerprint_rebuilds_only_that_source(tmp_path):
    dataset, backbones = _Clips([2] * 7), _Backbones()
    fill_caches(_caches(tmp_path), dataset, IDS, backbones.extract, progress=False)
    old = _caches(tmp_path)["ttm"].tokens()["clip:0"].clone()
    with torch.no_grad():
        backbones.ttm.weight.add_(1.0)
    dataset.decoded.clear()
    caches = _caches(tmp_path, fingerprints=("a", "changed"))
    assert caches["ttm"].rebuilt and not caches["ttm"].complete and caches["lam"].complete
    fill_caches(caches, dataset, IDS, backbones.extract, progress=False)
    assert sorted(dataset.decoded) == list(range(7))
    assert not torch.equal(caches["ttm"].tokens()["clip:0"], old)
    assert json.loads((tmp_path / "val" / "ttm" / "index.json").read_text())["fingerprint"] == "changed"


def test_an_interrupted_build_resumes_where_it_stopped(tmp_path):
    dataset, backbones = _Clips([2] * 7), _Backbones()

    def crash_after_four(samples, sources):
        if len(dataset.decoded) > 4:
            raise KeyboardInterrupt
        return backbones.extract(samples, sources)

    with pytest.raises(KeyboardInterrupt):
        fill_caches(_caches(tmp_path), dataset, IDS, crash_after_four, samples_per_call=1, progress=False)
    (tmp_path / "val" / "lam" / ".shard_00009.pt.tmp123.pt").write_bytes(b"half")  # a killed atomic write
    resumed = _caches(tmp_path)
    assert len(resumed["lam"]) == 3 and not resumed["lam"].complete  # one full shard of 3 survived
    assert not list((tmp_path / "val" / "lam").glob(".shard_*"))
    dataset.decoded.clear()
    stats = fill_caches(resumed, dataset, IDS, backbones.extract, progress=False)
    assert stats["computed"] == 4 and sorted(dataset.decoded) == [3, 4, 5, 6]
    assert all(cache.complete for cache in resumed.values())


def test_fingerprints_follow_checkpoint_bytes_state_dicts_and_settings(tmp_path):
    first, second = tmp_path / "a.pth", tmp_path / "b.pth"
    model = nn.Linear(2, 2)
    torch.save(model.state_dict(), first)
    shutil.copyfile(first, second)
    assert hash_file(first) == backbone_fingerprint(second)
    assert backbone_fingerprint(model) == backbone_fingerprint(model.state_dict())
    before = backbone_fingerprint(model)
    with torch.no_grad():
        model.bias.add_(1e-3)
    assert backbone_fingerprint(model) != before
    assert cache_fingerprint("x", {"face_size": 32}) != cache_fingerprint("x", {"face_size": 64})
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        hash_file(tmp_path / "missing.pth")


def test_cached_dataset_serves_metadata_and_tokens(tmp_path):
    dataset, backbones = _Clips([2, 3, 4, 1, 2, 2, 2]), _Backbones()
    caches = _caches(tmp_path)
    fill_caches(caches, dataset, IDS, backbones.extract, progress=False)
    items = [{"label": index % 2, "start": index} for index in range(7)]
    cached = CachedTokensDataset(items, IDS, caches)
    sample = cached[2]
    assert sample["label"] == 0 and sample["start"] == 2 and sample["sample_id"] == "clip:2"
    assert sample["tokens"]["lam"].shape == (4, 3) and sample["tokens"]["ttm"].shape == (4, 5)
    with pytest.raises(ValueError, match="lacks 1 samples"):
        CachedTokensDataset(items + [{"label": 0}], IDS + ["clip:new"], caches)


def test_bad_input_is_refused_with_names(tmp_path):
    cache = FeatureCache(tmp_path, "train", "lam", "f")
    cache.add("clip:0", torch.zeros(2, 3))
    with pytest.raises(ValueError, match="stored twice"):
        cache.add("clip:0", torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"tensor \[N, C\]"):
        cache.add("clip:1", torch.zeros(3))
    with pytest.raises(ValueError, match="lacks 1 samples"):
        cache.finish(["clip:0", "clip:1"])
    with pytest.raises(ValueError, match="not unique"):
        fill_caches({"lam": cache}, _Clips([1, 1]), ["x", "x"], _Backbones().extract, progress=False)
    (tmp_path / "train" / "lam" / "shard_00000.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable feature-cache shard"):
        FeatureCache(tmp_path, "train", "lam", "f").tokens()


def test_other_processes_wait_for_the_first_ones_build(tmp_path):
    from egot2.features import cache_is_complete, wait_for_caches

    assert not cache_is_complete(tmp_path, "val", "lam", "a")
    with pytest.raises(TimeoutError, match="shared by all processes"):
        wait_for_caches(tmp_path, "val", {"lam": "a"}, timeout_s=0.05, poll_s=0.01)
    fill_caches(_caches(tmp_path), _Clips([2] * 7), IDS, _Backbones().extract, progress=False)
    assert cache_is_complete(tmp_path, "val", "lam", "a") and not cache_is_complete(tmp_path, "val", "lam", "b")
    wait_for_caches(tmp_path, "val", {"lam": "a", "ttm": "b"}, timeout_s=1, poll_s=0.01)
