"""LAM datasets (hhi §2.1, §2.2): item list, key frames, labels, 7-frame clips with edge padding, test release."""
import json
import math

import numpy as np
import pytest
import torch

from egot2 import media
from egot2.config import load_cfg
from HHI.config import add_lam_config, lam_run_defaults
from HHI.data.lam import LAMDataset, LAMTestDataset, build_lam_dataset, lam_paths, pad_clip
from HHI.data.social import IMAGENET_MEAN, IMAGENET_STD, clean_track, read_json, read_split
from tests.twin import make_twin

CLIP = "clip-a"
SIZE = 8


def pixel_levels(video: torch.Tensor) -> list:
    """Mean 0-255 level of each frame of a normalised clip [T, 3, S, S]."""
    std = torch.from_numpy(IMAGENET_STD)[:, None, None]
    mean = torch.from_numpy(IMAGENET_MEAN)[:, None, None]
    return [round(float(((frame * std + mean) * 255).mean()) / 8) for frame in video]


def level_image(frame: int) -> np.ndarray:
    """A 32 x 32 frame whose every pixel is 8 * frame, so a crop tells which frame it came from."""
    return np.full((32, 32, 3), 8 * frame, np.uint8)


def track(frames, person="2", box=(4.0, 4.0, 20.0, 20.0), special=None):
    special = special or {}
    return [{"clip_uid": CLIP, "frameNumber": f, "Person ID": person, "x": special.get(f, box)[0],
             "y": special.get(f, box)[1], "width": special.get(f, box)[2], "height": special.get(f, box)[3]}
            for f in frames]


@pytest.fixture
def layout(tmp_path):
    """One clip, frames 1..20 (img 8 missing, img 12 corrupt); track A is 1..20, track B 1..20 with an empty box at
    frame 5, track C has no valid box."""
    root = tmp_path / "data"
    lam = root / "lam"
    for frame in range(1, 21):
        if frame != 8:
            media.write_image(lam / "video_imgs" / CLIP / f"img_{frame:05d}.jpg", level_image(frame))
    (lam / "video_imgs" / CLIP / "img_00012.jpg").write_bytes(b"\xff\xd8 broken")
    tracks = lam / "json_original" / CLIP
    tracks.mkdir(parents=True)
    (tracks / "A.json").write_text(json.dumps(track(range(20, 0, -1))))  # unsorted on disk: LAM sorts
    (tracks / "B.json").write_text(json.dumps(track(range(1, 21), person="3", special={5: (3.2, 4.0, 0.5, 9.0)})))
    (tracks / "C.json").write_text(json.dumps(track([1, 2], person="4", box=(1.0, 1.0, 0.0, 5.0))))
    gt = [{"label": "2", "start_frame": 3, "end_frame": 6, "is_at_me": True},
          {"label": "3", "start_frame": 10, "end_frame": 10, "is_at_me": False}]
    (lam / "result_LAM").mkdir(parents=True)
    (lam / "result_LAM" / f"{CLIP}.json").write_text(json.dumps(gt))
    (lam / "split").mkdir()
    for split in ("train", "val"):
        (lam / "split" / f"{split}.list").write_text(CLIP + "\n")
    return root


def sample_at(dataset, track_id, frame):
    for index, (_, sample_track, sample_frame, _, _) in enumerate(dataset.samples):
        if (sample_track, sample_frame) == (track_id, frame):
            return dataset[index]
    raise KeyError((track_id, frame))


# ----------------------------------------------------------------------------------------------- padding
def test_pad_clip_replicates_edges_for_blank_frames():
    frames = np.arange(7)[:, None, None, None] * np.ones((7, 1, 1, 3), np.uint8)
    blank = np.array([True, False, False, False, False, True, True])
    assert pad_clip(frames, blank)[:, 0, 0, 0].tolist() == [1, 1, 2, 3, 4, 4, 4]
    # the centre is never dropped, even when blank
    centre_blank = np.array([False, False, False, True, False, False, False])
    assert pad_clip(frames, centre_blank)[:, 0, 0, 0].tolist() == list(range(7))


def test_clip_at_the_start_and_end_of_a_track_is_edge_padded(layout):
    dataset = LAMDataset(layout, "train", stride=1, face_size=SIZE)
    assert pixel_levels(sample_at(dataset, "A", 1)["video"]) == [1, 1, 1, 1, 2, 3, 4]
    assert pixel_levels(sample_at(dataset, "A", 20)["video"]) == [17, 18, 19, 20, 20, 20, 20]


def test_missing_and_corrupt_images_are_padded_with_a_counted_warning(layout):
    dataset = LAMDataset(layout, "train", stride=1, face_size=SIZE)
    # image 8 is missing, after the centre of frame 7's clip: the last kept frame is repeated at the back
    assert pixel_levels(sample_at(dataset, "A", 7)["video"]) == [4, 5, 6, 7, 9, 10, 10]
    # image 12 is corrupt, before the centre of frame 14's clip: the first kept frame is repeated at the front
    assert pixel_levels(sample_at(dataset, "A", 14)["video"]) == [11, 11, 13, 14, 15, 16, 17]
    # both in one clip
    assert pixel_levels(sample_at(dataset, "A", 10)["video"]) == [7, 7, 9, 10, 11, 13, 13]
    assert dataset.warnings["missing frame image (black frame)"] >= 1
    assert dataset.warnings["corrupt frame image (black frame)"] >= 1


def test_empty_crop_stays_black_unless_the_clip_is_padded(layout):
    dataset = LAMDataset(layout, "train", stride=1, face_size=SIZE)
    # track B's box at frame 5 is empty: a black frame that does not mark the clip for padding
    alone = pixel_levels(sample_at(dataset, "B", 4)["video"])
    assert alone == [1, 2, 3, 4, 0, 6, 7]  # nothing marks this clip: the empty crop stays a black frame
    padded = pixel_levels(sample_at(dataset, "B", 3)["video"])
    assert padded == [1, 1, 2, 3, 4, 6, 6]  # frame 0 is outside the track: both blanks are padded over
    assert dataset.warnings["empty face crop (black frame)"] >= 1


# ----------------------------------------------------------------------------------------------- items
def test_items_keyframes_labels_and_sample_keys(layout):
    dataset = LAMDataset(layout, "train", stride=13, face_size=SIZE)
    # tracks A and B (C has no valid box) of 20 frames each: key frames at positions 0 and 13
    assert len(dataset) == 4
    assert [(sample[1], sample[2]) for sample in dataset.samples] == [("A", 1), ("A", 14), ("B", 1), ("B", 14)]
    assert dataset.warnings["track without a valid box (skipped)"] == 1
    sample = dataset[1]
    assert set(sample) == {"video", "label", "clip_uid", "track_id", "frame", "box"}
    assert sample["video"].shape == (7, 3, SIZE, SIZE) and sample["video"].dtype == torch.float32
    assert sample["box"].dtype == torch.int64 and sample["box"].tolist() == [4, 4, 24, 24]
    assert (sample["clip_uid"], sample["track_id"], sample["frame"]) == (CLIP, "A", 14)
    every = LAMDataset(layout, "val", stride=1, face_size=SIZE)
    labels = {(sample[1], sample[2]): sample[4] for sample in every.samples}
    assert [f for (t, f), label in labels.items() if label and t == "A"] == [3, 4, 5, 6]
    assert [f for (t, f), label in labels.items() if label and t == "B"] == [10]
    corrected = LAMDataset(layout, "val", stride=1, face_size=SIZE, label_mode="is_at_me")
    assert sum(corrected.labels) == 4


def test_clear_errors_for_missing_inputs(layout, tmp_path):
    with pytest.raises(FileNotFoundError, match="split list not found"):
        LAMDataset(layout, "test", face_size=SIZE)
    (layout / "lam" / "split" / "extra.list").write_text("clip-b\n")
    with pytest.raises(FileNotFoundError, match=r"clip-b\.json"):
        LAMDataset(layout, "extra", face_size=SIZE)
    with pytest.raises(FileNotFoundError, match="image folder"):
        LAMDataset(tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match="stride"):
        LAMDataset(layout, "train", stride=0)


def test_build_lam_dataset_reads_the_config(layout, tmp_path):
    alternative = tmp_path / "lists"
    alternative.mkdir()
    (alternative / "mine.list").write_text(CLIP + "\n")
    cfg = load_cfg(extensions=(add_lam_config, lam_run_defaults), data_dir=str(layout),
                   opts=["HHI.FACE_SIZE", 16, "LAM.TRAIN_STRIDE", 5, "LAM.TRAIN_FILE", str(alternative / "mine.list")])
    dataset = build_lam_dataset(cfg, "train")
    assert isinstance(dataset, LAMDataset) and dataset.face_size == 16 and dataset.stride == 5
    assert len(dataset) == 8
    with pytest.raises(ValueError, match="split"):
        build_lam_dataset(cfg, "holdout")


# ----------------------------------------------------------------------------------------------- test release
def test_test_release_clips_and_ids(tmp_path):
    release = tmp_path / "videos_challenge"
    for frame, unique in ((5, "u5"), (6, "u6"), (7, "u7"), (9, "u9")):
        media.write_image(release / "vid" / "trk" / f"{frame}_{unique}.jpg", np.full((16, 16, 3), 8 * frame, np.uint8))
    dataset = LAMTestDataset(release, face_size=SIZE)
    assert len(dataset) == 4
    assert dataset.expected_ids == {("vid", u, "trk") for u in ("u5", "u6", "u7", "u9")}
    sample = dataset[0]
    assert set(sample) == {"video", "video_id", "track_id", "unique_id", "frame"}
    assert (sample["video_id"], sample["track_id"], sample["unique_id"], sample["frame"]) == ("vid", "trk", "u5", 5)
    assert sample["video"].shape == (7, 3, SIZE, SIZE)
    assert pixel_levels(sample["video"]) == [5, 5, 5, 5, 6, 7, 7]
    assert pixel_levels(dataset[2]["video"]) == [5, 5, 6, 7, 9, 9, 9]
    (release / "vid" / "trk" / "badname.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"badname\.jpg"):
        LAMTestDataset(release)
    with pytest.raises(FileNotFoundError, match="LAM test release"):
        LAMTestDataset(tmp_path / "absent")


# ----------------------------------------------------------------------------------------------- twin
@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return make_twin(tmp_path_factory.mktemp("twin"), tasks=("lam", "ttm", "asd"))[1]


def test_twin_dataset_matches_the_annotations(twin):
    dataset = LAMDataset(twin, "val", stride=13, face_size=16)
    paths = lam_paths(twin)
    expected_samples, positives = 0, 0
    for clip_uid in read_split(paths.split_file("val")):
        segments = read_json(paths.gt_dir / f"{clip_uid}.json")
        for track_file in sorted((paths.json_dir / clip_uid).glob("*.json")):
            records = clean_track(read_json(track_file), sort=True)
            expected_samples += math.ceil(len(records) / 13)
            for record in records[::13]:
                positives += any(s["label"] == record["Person ID"] and s["start_frame"] <= record["frameNumber"]
                                 <= s["end_frame"] for s in segments)
    assert len(dataset) == expected_samples and sum(dataset.labels) == positives
    assert 0 < positives < len(dataset)
    sample = dataset[len(dataset) // 2]
    assert sample["video"].shape == (7, 3, 16, 16) and sample["video"].dtype == torch.float32
    assert sample["label"] in (0, 1) and isinstance(sample["frame"], int) and sample["box"].shape == (4,)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    assert batch["video"].shape == (2, 7, 3, 16, 16) and batch["box"].shape == (2, 4)
    test = LAMTestDataset(twin / "lam" / "videos_challenge", face_size=16)
    assert len(test) > 0 and test[0]["video"].shape == (7, 3, 16, 16)
