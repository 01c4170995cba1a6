"""TTM datasets (hhi §3.1, §3.2, §3.7): segment drops and chunking, crops and audio, the frame-budget sampler, the
truncating collate and the challenge test release."""
import json
import os

import numpy as np
import pytest
import soundfile
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from egot2 import media
from HHI.data.social import IMAGENET_MEAN, IMAGENET_STD, read_split
from HHI.data.ttm import (FrameBudgetBatchSampler, TTMDataset, TTMTestDataset, chunk_segment, collate_truncate,
                          ttm_paths)
from tests.twin import make_twin

CLIP, QUIET = "clip-t", "clip-q"
SIZE = 8
RATE = 16000


def pixel_levels(video):
    std = torch.from_numpy(IMAGENET_STD)[:, None, None]
    mean = torch.from_numpy(IMAGENET_MEAN)[:, None, None]
    return [round(float(((frame * std + mean) * 255).mean()) / 4) for frame in video]


def write_noise(path, seconds, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * RATE)).astype(np.float32)
    soundfile.write(str(path), noise, RATE, subtype="PCM_16")


def person_track(person, frames):
    return [{"clip_uid": CLIP, "frameNumber": f, "Person ID": person, "x": 2.0, "y": 2.0, "width": 20.0,
             "height": 20.0} for f in frames]


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "data"
    ttm = root / "ttm"
    for frame in range(1, 41):
        media.write_image(ttm / "video_imgs" / CLIP / f"img_{frame:05d}.jpg", np.full((32, 32, 3), 4 * frame, np.uint8))
    (ttm / "video_imgs" / QUIET).mkdir(parents=True)
    write_noise(ttm / "wave" / f"{CLIP}.wav", 13.5)
    soundfile.write(str(ttm / "wave" / f"{QUIET}.wav"), np.zeros(0, np.float32), RATE, subtype="PCM_16")
    tracks = ttm / "json_original" / CLIP
    tracks.mkdir(parents=True)
    (tracks / "p2.json").write_text(json.dumps(person_track("2", range(5, 41))))
    (tracks / "p3.json").write_text(json.dumps(person_track("3", range(1, 400))))
    segments = [
        {"label": 2, "tags": 0, "start_frame": 1, "end_frame": 20},      # 0: positive, 20 frames
        {"label": 2, "start_frame": 30, "end_frame": 40},                # 1: 11 frames: dropped in train only
        {"label": 0, "tags": 2, "start_frame": 1, "end_frame": 100},     # 2: camera wearer: dropped
        {"label": 3, "start_frame": 50, "end_frame": 50},                # 3: one frame: dropped
        {"label": 3, "tags": 0, "start_frame": 60, "end_frame": 369},    # 4: 310 frames: 2 chunks
        {"label": 2, "start_frame": 1, "end_frame": 151},                # 5: 151 frames: 1 chunk
        {"label": 3, "start_frame": 1, "end_frame": 300},                # 6: 300 frames: 2 chunks
    ]
    (ttm / "result_TTM").mkdir(parents=True)
    (ttm / "result_TTM" / f"{CLIP}.json").write_text(json.dumps(segments))
    (ttm / "result_TTM" / f"{QUIET}.json").write_text(json.dumps([{"label": 1, "start_frame": 3, "end_frame": 30}]))
    (ttm / "split").mkdir()
    (ttm / "split" / "train.list").write_text(CLIP + "\n")
    (ttm / "split" / "val.list").write_text(f"{CLIP}\n{QUIET}\n")
    return root


# ----------------------------------------------------------------------------------------------- chunking
@pytest.mark.parametrize("length, expected", [
    (1, [(100, 100)]),
    (150, [(100, 249)]),
    (151, [(100, 250)]),
    (300, [(100, 250), (250, 399)]),
    (310, [(100, 250), (250, 400)]),
    (451, [(100, 250), (250, 400), (400, 550)]),
])
def test_chunk_segment(length, expected):
    assert chunk_segment(100, 100 + length - 1) == expected


def test_segments_drops_and_chunks(layout):
    train = TTMDataset(layout, "train", face_size=SIZE)
    assert [(s[1], s[2], s[3], s[4], s[5]) for s in train.segments] == [
        ("2", 1, 1, 20, 0), ("3", 1, 60, 210, 4), ("3", 1, 210, 360, 4), ("2", 0, 1, 151, 5), ("3", 0, 1, 151, 6),
        ("3", 0, 151, 300, 6)]
    assert train.lengths == [19, 150, 150, 150, 150, 149]
    val = TTMDataset(layout, "val", face_size=SIZE)
    # val keeps the 11-frame segment and the quiet clip's segment; person 0 and one-frame segments are gone
    assert [(s[0], s[5]) for s in val.segments] == [(CLIP, 0), (CLIP, 1), (CLIP, 4), (CLIP, 4), (CLIP, 5), (CLIP, 6),
                                                     (CLIP, 6), (QUIET, 0)]
    assert TTMDataset(layout, "val", face_size=SIZE, training=True).segments == train.segments + [
        (QUIET, "1", 0, 3, 30, 0)]
    corrected_path = layout / "ttm" / "result_TTM" / f"{CLIP}.json"
    assert "is_at_me" not in corrected_path.read_text()
    with pytest.raises(ValueError, match="is_at_me"):
        TTMDataset(layout, "train", label_mode="is_at_me")


def test_sample_video_audio_and_keys(layout):
    dataset = TTMDataset(layout, "train", face_size=SIZE)
    sample = dataset[0]
    assert set(sample) == {"video", "audio", "label", "clip_uid", "person", "index", "start", "end", "chunk_id",
                           "position"}
    assert sample["position"] == 0 and dataset[3]["position"] == 3
    assert sample["video"].shape == (20, 3, SIZE, SIZE) and sample["video"].dtype == torch.float32
    # person 2 has boxes from frame 5 on: frames 1..4 are black, the rest show their own frame
    assert pixel_levels(sample["video"]) == [0, 0, 0, 0] + list(range(5, 21))
    onset, offset = int(1 / 30 * RATE), int(20 / 30 * RATE)
    assert sample["audio"].shape == (offset - onset,) and sample["audio"].dtype == torch.float32
    assert float(sample["audio"].pow(2).mean().sqrt()) == pytest.approx(0.1, rel=1e-3)
    assert (sample["label"], sample["clip_uid"], sample["person"], sample["index"]) == (1, CLIP, "2", 0)
    assert sample["chunk_id"] == f"{CLIP}:0:1:20"
    long_chunk = dataset[1]
    assert long_chunk["video"].shape[0] == 151 and (long_chunk["start"], long_chunk["end"]) == (60, 210)
    # frames beyond the extracted images (41+) are black and counted
    assert dataset.warnings["missing frame image (black frame)"] >= 1


def test_empty_wav_gives_empty_audio_with_a_counted_warning(layout):
    val = TTMDataset(layout, "val", face_size=SIZE)
    quiet = val[len(val) - 1]
    assert quiet["clip_uid"] == QUIET and quiet["audio"].shape == (0,)
    assert val.warnings["empty audio window"] == 1
    # a frame folder without images: the chunk is all black
    assert quiet["video"].shape == (28, 3, SIZE, SIZE) and set(pixel_levels(quiet["video"])) == {0}


def test_missing_wav_or_ground_truth_is_a_clear_error(layout):
    os.remove(layout / "ttm" / "wave" / f"{QUIET}.wav")
    with pytest.raises(FileNotFoundError, match=f"{QUIET}.wav"):
        TTMDataset(layout, "val")
    os.remove(layout / "ttm" / "result_TTM" / f"{CLIP}.json")
    with pytest.raises(FileNotFoundError, match=f"{CLIP}.json"):
        TTMDataset(layout, "train")


# ----------------------------------------------------------------------------------------------- sampler
LENGTHS = [150] * 5 + [30] * 3 + [14] * 30


def test_sampler_respects_the_frame_budget_and_covers_every_sample_once():
    sampler = FrameBudgetBatchSampler(LENGTHS, frame_budget=400, seed=3)
    batches = list(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(len(LENGTHS)))
    sizes = sorted((max(LENGTHS[i] for i in batch), len(batch)) for batch in batches)
    # runs of int(400 / L) for the run's longest L: 150-frame chunks two per batch (the fifth with a 30), then a run
    # starting with a 30 takes 13 samples, the remaining 19 14-frame segments fit one batch (room for 28)
    assert sizes == [(14, 19), (30, 13), (150, 2), (150, 2), (150, 2)]
    assert len(sampler) == len(batches) == 5


def test_sampler_is_deterministic_per_seed_and_epoch_and_never_mutates():
    lengths = list(LENGTHS)
    first = list(FrameBudgetBatchSampler(lengths, seed=1))
    assert list(FrameBudgetBatchSampler(lengths, seed=1)) == first
    assert list(FrameBudgetBatchSampler(lengths, seed=2)) != first
    sampler = FrameBudgetBatchSampler(lengths, seed=1)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert lengths == LENGTHS


def test_sampler_without_shuffle_keeps_the_dataset_order_and_drop_last():
    ordered = list(FrameBudgetBatchSampler([10, 10, 10, 100, 100, 100], frame_budget=20, shuffle=False))
    assert ordered == [[0, 1], [2, 3], [4], [5]]
    dropped = FrameBudgetBatchSampler([10, 10, 10], frame_budget=20, shuffle=False, drop_last=True)
    assert list(dropped) == [[0, 1]] and len(dropped) == 1


def test_sampler_legacy_length_is_n_over_budget():
    sampler = FrameBudgetBatchSampler(LENGTHS, frame_budget=10, legacy_truncated_epochs=True)
    assert len(sampler) == int(len(LENGTHS) / 10) == 3
    assert len(list(sampler)) == len(FrameBudgetBatchSampler(LENGTHS, frame_budget=10))
    assert len(FrameBudgetBatchSampler(LENGTHS, frame_budget=400, legacy_truncated_epochs=True)) == 0


def test_sampler_shards_batches_over_processes():
    everything = FrameBudgetBatchSampler(LENGTHS, frame_budget=400, seed=5).all_batches()
    shards = [list(FrameBudgetBatchSampler(LENGTHS, frame_budget=400, seed=5, num_replicas=2, rank=rank))
              for rank in range(2)]
    assert [len(shard) for shard in shards] == [3, 3]
    assert shards[0] + shards[1] != everything
    assert shards[0] == everything[0::2] and shards[1] == everything[1::2] + [everything[0]]
    assert len(FrameBudgetBatchSampler(LENGTHS, num_replicas=2, rank=1)) == 3
    with pytest.raises(ValueError, match="rank"):
        FrameBudgetBatchSampler(LENGTHS, num_replicas=2, rank=2)


def _distributed_worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        sampler = FrameBudgetBatchSampler(LENGTHS, frame_budget=400, seed=5)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
            json.dump({"batches": list(sampler), "len": len(sampler)}, handle)
    finally:
        dist.destroy_process_group()


def test_sampler_reads_rank_and_world_from_torch_distributed(tmp_path):
    # fork: the workers need nothing but the already imported sampler, and a spawn would re-import torch twice
    mp.start_processes(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    expected = [list(FrameBudgetBatchSampler(LENGTHS, frame_budget=400, seed=5, num_replicas=2, rank=rank))
                for rank in range(2)]
    assert [r["batches"] for r in results] == expected
    assert [r["len"] for r in results] == [3, 3]


# ----------------------------------------------------------------------------------------------- collate
def test_collate_truncates_video_and_audio_to_the_shortest():
    samples = [{"video": torch.ones(5, 3, 2, 2), "audio": torch.ones(100), "label": 1, "chunk_id": "a", "index": 0},
               {"video": torch.zeros(3, 3, 2, 2), "audio": torch.zeros(80), "label": 0, "chunk_id": "b", "index": 4}]
    batch = collate_truncate(samples)
    assert batch["video"].shape == (2, 3, 3, 2, 2) and batch["audio"].shape == (2, 80)
    assert batch["video"][0].eq(1).all() and batch["audio"][1].eq(0).all()
    assert batch["label"].tolist() == [1, 0] and batch["label"].dtype == torch.int64
    assert batch["index"].tolist() == [0, 4] and batch["chunk_id"] == ["a", "b"]
    with pytest.raises(ValueError, match="empty batch"):
        collate_truncate([])


# ----------------------------------------------------------------------------------------------- test release
def test_test_release_chunks_black_frames_and_a_segment_without_faces(tmp_path):
    release = tmp_path / "final_test_data"
    for frame in (0, 1, 3):
        media.write_image(release / "segA" / "face" / f"{frame}.jpg", np.full((16, 16, 3), 40 * (frame + 1), np.uint8))
    write_noise(release / "segA" / "audio" / "aud.wav", 6)
    write_noise(release / "segB" / "audio" / "aud.wav", 1)
    info = {"segA": {"frame_list": [0, 1, 3], "frame_num": 175}, "segB": {"frame_list": [], "frame_num": 20}}
    (tmp_path / "seg_info.json").write_text(json.dumps(info))
    dataset = TTMTestDataset(release, tmp_path / "seg_info.json", face_size=SIZE)
    assert dataset.segments == [("segA", 0, 150), ("segB", 0, 19)]
    assert dataset.frame_lists == {"segA": [0, 1, 3], "segB": []}
    first = dataset[0]
    assert set(first) == {"video", "audio", "segment_id", "start", "end", "chunk_id"}
    assert first["video"].shape == (151, 3, SIZE, SIZE)
    assert pixel_levels(first["video"])[:5] == [10, 20, 0, 40, 0]
    assert first["audio"].shape == (int(150 / 30 * RATE),)
    faceless = dataset[1]
    assert faceless["video"].shape == (20, 3, SIZE, SIZE) and set(pixel_levels(faceless["video"])) == {0}
    assert dataset.warnings["test segment without a face folder (all frames black)"] == 1
    del info["segB"]
    (tmp_path / "seg_info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="no entry for segment segB"):
        TTMTestDataset(release, tmp_path / "seg_info.json")


# ----------------------------------------------------------------------------------------------- twin
@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return make_twin(tmp_path_factory.mktemp("twin"), tasks=("lam", "ttm", "asd"))[1]


def test_twin_dataset_shapes_and_chunks(twin):
    dataset = TTMDataset(twin, "train", face_size=16)
    paths = ttm_paths(twin)
    assert {s[0] for s in dataset.segments} <= set(read_split(paths.split_file("train")))
    assert all(end - start + 1 <= 151 and person != "0" and end - start + 1 >= 15
               for _, person, _, start, end, _ in dataset.segments)
    assert set(dataset.labels) == {0, 1}
    index = int(np.argmin(dataset.lengths))
    sample = dataset[index]
    frames = sample["end"] - sample["start"] + 1
    assert sample["video"].shape == (frames, 3, 16, 16)
    assert abs(sample["audio"].shape[0] - (frames - 1) / 30 * RATE) <= 2
    test = TTMTestDataset(paths.test_dir, paths.seg_info, face_size=16)
    assert len(test) > 0 and test[len(test) - 1]["video"].shape[1:] == (3, 16, 16)
