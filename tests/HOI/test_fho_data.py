"""PNR / OSCC samples: frame picker, one-hot labels, random clipping, the dataset on the tiny twin, bad input."""
import json
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from egot2.media import write_image
from HOI.config import load_pnr_cfg
from HOI.data.fho import (
    StateChangeDataset,
    keyframe_one_hot,
    pick_frame_indices,
    random_clip_window,
    read_state_change_annotations,
)
from HOI.data.transforms import frames_to_clip, resize_square
from tests.twin import make_twin

SAMPLE_KEYS = {"frames", "keyframe_label", "state", "fps", "unique_id", "pnr_frame", "start_frame", "end_frame",
               "start_sec", "end_sec", "frame_indices"}
TASK_OPTS = {
    "pnr": ["DATA.TASK", "keyframe_localization", "MODEL.MODEL_NAME", "KeyframeLocalizationResNet",
            "DATA_LOADER.IS_NO_STATE_CHANGE", False],
    "oscc": ["DATA.TASK", "state_change_classification", "MODEL.MODEL_NAME", "StateChangeClsResNet",
             "DATA_LOADER.IS_NO_STATE_CHANGE", True],
}


# ---------------------------------------------------------------------------------------------------- picker
def test_picker_exact_step_covers_the_window():
    frames = pick_frame_indices(300, 540, 16)
    assert frames.tolist() == list(range(300, 540, 15))
    assert frames.dtype == np.int64


def test_picker_falls_back_to_the_floor_step():
    # n = 40: step 3 gives only 13 multiples of 3 in [10, 50), so step 2 is used and the first 16 kept.
    assert pick_frame_indices(10, 50, 16).tolist() == list(range(10, 42, 2))


def test_picker_uses_absolute_divisibility_not_offsets():
    # n = 241 -> ceil step 16; multiples of 16 in [7, 248): 16, 32, ..., 240 = 15 frames -> floor step 15.
    assert pick_frame_indices(7, 248, 16).tolist() == list(range(15, 255, 15))[:16]
    assert pick_frame_indices(0, 16, 16).tolist() == list(range(16))


def test_picker_rejects_short_ranges():
    with pytest.raises(ValueError, match="fewer than the 16"):
        pick_frame_indices(100, 110, 16)


def test_one_hot_marks_the_nearest_sampled_frame():
    frames = np.arange(300, 540, 15)
    label = keyframe_one_hot(frames, 337)  # 330 is 7 away, 345 is 8 away
    assert label.dtype == np.float32 and label.shape == (16,)
    assert label.sum() == 1 and label[2] == 1
    assert keyframe_one_hot(np.array([0, 10, 20]), 15).tolist() == [0, 1, 0]  # tie -> the earlier frame
    assert keyframe_one_hot(frames, 9999)[-1] == 1
    assert keyframe_one_hot(frames, -1).sum() == 0


# ----------------------------------------------------------------------------------------------- random clipping
WINDOW = dict(start_frame=300, end_frame=540, start_sec=10.0, end_sec=18.0)


def _clip(pnr, length_draw, offset_draw, legacy=False):
    return random_clip_window(**WINDOW, pnr_frame=pnr, length_draw=length_draw, offset_draw=offset_draw,
                              num_frames=16, legacy_offset=legacy)


def test_random_clip_hand_examples():
    # L = 5 s, offset = 0.5 * 3 s = 1.5 s -> frames 345 .. 495.
    assert _clip(400, 0.0, 0.5) == (345, 495)
    # Legacy offset: uniform between W - L = 3 s and 1 s; draw 0.5 -> 2 s.
    assert _clip(400, 0.0, 0.5, legacy=True) == (360, 510)
    # The PNR before the new start brings the start back; after the new end, the end.
    assert _clip(310, 0.0, 0.5) == (300, 495)
    assert _clip(530, 0.0, 0.5) == (345, 540)


def _offset_seconds(length_draw, offset_draw, legacy):
    start, _ = _clip(-1, length_draw, offset_draw, legacy)
    return (start - 300) / 30.0


@pytest.mark.parametrize("length_sec", [5.0, 6.5, 7.4, 7.9])
def test_corrected_and_legacy_offset_ranges(length_sec):
    length_draw = (length_sec - 5.0) / 3.0
    spare = 8.0 - length_sec
    draws = np.linspace(0.0, 0.999999, 101)
    corrected = [_offset_seconds(length_draw, d, False) for d in draws]
    legacy = [_offset_seconds(length_draw, d, True) for d in draws]
    frame = 1 / 30
    # Corrected: uniform(0, W - L), starting at the window start.
    assert min(corrected) == 0.0 and max(corrected) <= spare + 1e-9 and max(corrected) >= spare - frame - 1e-6
    # Legacy np.random.uniform(W - L): between W - L and 1 s, so never 0 and sometimes past W - L.
    low, high = min(spare, 1.0), max(spare, 1.0)
    assert min(legacy) >= low - frame - 1e-9 and max(legacy) <= high + 1e-9
    assert min(legacy) > 0.0
    if spare < 1.0:
        assert max(legacy) > spare  # the bug: offsets beyond W - L push the end against the window end
    for length_draw_, draw in ((length_draw, 0.3), (length_draw, 0.9)):
        for legacy_flag in (False, True):
            start, end = _clip(-1, length_draw_, draw, legacy_flag)
            assert 300 <= start < end <= 540 and end - start >= 16


def test_random_clip_keeps_short_windows_whole():
    assert random_clip_window(0, 120, 0.0, 4.0, -1, 0.5, 0.5, num_frames=16) == (0, 120)


# -------------------------------------------------------------------------------------------------- transforms
def test_frames_to_clip_is_raw_rgb_channel_first():
    red = np.zeros((6, 10, 3), np.uint8)
    red[..., 0] = 200
    blue = np.zeros((12, 8, 3), np.uint8)
    blue[..., 2] = 255
    clip = frames_to_clip([red, blue], 5)
    assert clip.shape == (3, 2, 5, 5) and clip.dtype == torch.float32
    assert torch.all(clip[0, 0] == 200) and torch.all(clip[2, 1] == 255) and torch.all(clip[1] == 0)
    assert resize_square(red, 7).shape == (7, 7, 3)


# ------------------------------------------------------------------------------------------- twin dataset
@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return make_twin(tmp_path_factory.mktemp("twin"), tasks=("pnr", "oscc"))[1]


def _cfg(task, data_dir, *extra):
    return load_pnr_cfg(opts=[*TASK_OPTS[task], "DATA.CROP_SIZE", 33, *extra], data_dir=data_dir)


def _annotated(data_dir, split):
    name = {"train": "train", "val": "val", "test": "test_unannotated"}[split]
    return json.loads((data_dir / "fho" / "annotations" / f"fho_oscc-pnr_{name}.json").read_text())["clips"]


@pytest.mark.parametrize("task", ["pnr", "oscc"])
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_twin_samples(twin, task, split):
    dataset = StateChangeDataset.from_config(_cfg(task, twin), split)
    items = _annotated(twin, split)
    if split == "test" or task == "oscc":
        assert len(dataset) == len(items)
    else:
        assert len(dataset) == sum(item["state_change"] for item in items) < len(items)
    by_id = {item["unique_id"]: item for item in items}
    for index in range(len(dataset)):  # a compact index: every position works
        sample = dataset[index]
        assert set(sample) == SAMPLE_KEYS
        assert sample["frames"].shape == (3, 16, 33, 33) and sample["frames"].dtype == torch.float32
        assert 0.0 <= float(sample["frames"].min()) and float(sample["frames"].max()) <= 255.0
        assert float(sample["frames"].max()) > 1.0  # raw values, not normalised
        assert sample["keyframe_label"].shape == (16,) and sample["keyframe_label"].dtype == torch.float32
        item = by_id[sample["unique_id"]]
        assert (sample["start_frame"], sample["end_frame"]) == (item["parent_start_frame"], item["parent_end_frame"])
        assert (sample["start_sec"], sample["end_sec"]) == (item["parent_start_sec"], item["parent_end_sec"])
        assert sample["fps"] == pytest.approx((item["parent_end_frame"] - item["parent_start_frame"] + 1)
                                              / (item["parent_end_sec"] - item["parent_start_sec"]))
        frames = sample["frame_indices"]
        assert frames.shape == (16,) and torch.all(frames[1:] > frames[:-1])
        assert sample["start_frame"] <= int(frames[0]) and int(frames[-1]) < sample["end_frame"]
        if split == "test":
            assert sample["state"] == -1 and sample["pnr_frame"] == -1 and sample["keyframe_label"].sum() == 0
        elif item["state_change"]:
            assert sample["state"] == 1 and sample["pnr_frame"] == item["parent_pnr_frame"]
            assert sample["keyframe_label"].sum() == 1
            nearest = int(torch.argmin((frames - sample["pnr_frame"]).abs()))
            assert sample["keyframe_label"][nearest] == 1
        else:
            assert sample["state"] == 0 and sample["pnr_frame"] == -1 and sample["keyframe_label"].sum() == 0
        if split != "train":
            assert frames.tolist() == pick_frame_indices(sample["start_frame"], sample["end_frame"], 16).tolist()


def test_twin_batches_collate_without_none(twin):
    dataset = StateChangeDataset.from_config(_cfg("oscc", twin), "train")
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch["frames"].shape == (3, 3, 16, 33, 33)
    assert batch["keyframe_label"].shape == (3, 16)
    assert batch["state"].dtype == torch.int64 and batch["pnr_frame"].dtype == torch.int64
    assert batch["fps"].dtype == torch.float64 and isinstance(batch["unique_id"], list)


def test_train_split_clips_randomly_and_val_does_not(twin):
    cfg = _cfg("pnr", twin)
    train = StateChangeDataset.from_config(cfg, "train")
    val = StateChangeDataset.from_config(cfg, "val")
    assert train.random_clip and not val.random_clip and not train.legacy_offset
    assert torch.equal(val[0]["frame_indices"], val[0]["frame_indices"])
    torch.manual_seed(0)
    windows = {tuple(train[0]["frame_indices"].tolist()) for _ in range(6)}
    assert len(windows) > 1
    for _ in range(6):
        sample = train[0]
        assert sample["keyframe_label"].sum() == 1  # the PNR frame stays inside the random sub-window
    legacy = StateChangeDataset.from_config(_cfg("pnr", twin, "DATA.LEGACY_OFFSET", True), "train")
    assert legacy.legacy_offset
    fixed = StateChangeDataset.from_config(_cfg("pnr", twin, "DATA.TRAIN_RANDOM_CLIP", False), "train")
    assert not fixed.random_clip


# ----------------------------------------------------------------------------------- hand-built frame folders
def _write_window(folder, first, last, size=(12, 16)):
    """JPEG frames first..last whose red channel encodes the frame number (frame % 256)."""
    folder.mkdir(parents=True)
    for frame in range(first, last + 1):
        image = np.zeros((*size, 3), np.uint8)
        image[..., 0] = frame % 256
        write_image(folder / f"{frame}.jpeg", image)


def _annotation(path, clips):
    path.write_text(json.dumps({"version": "1", "split": "train", "clips": clips}))
    return path


def _item(uid, start=0, end=64, pnr=20, state=True):
    item = {"unique_id": uid, "video_uid": "v", "parent_start_frame": start, "parent_end_frame": end,
            "parent_start_sec": start / 30, "parent_end_sec": end / 30, "state_change": state}
    if state:
        item["parent_pnr_frame"] = pnr
    else:
        item["pnr_frame"] = None
    return item


def _dataset(tmp_path, clips, split="val", task="oscc", **kwargs):
    ann = _annotation(tmp_path / "ann.json", clips)
    return StateChangeDataset(ann, split, task, pos_dir=tmp_path / "pos", neg_dir=tmp_path / "neg",
                              test_dir=tmp_path / "test", crop_size=8, **kwargs)


def test_hand_built_frames_arrive_in_picked_order(tmp_path):
    _write_window(tmp_path / "pos" / "a", 0, 64)
    _write_window(tmp_path / "neg" / "b", 100, 164)
    dataset = _dataset(tmp_path, [_item("a", 0, 64, pnr=21), _item("b", 100, 164, state=False)])
    positive, negative = dataset[0], dataset[1]
    assert positive["frame_indices"].tolist() == list(range(0, 64, 4))
    red = positive["frames"][0].mean(dim=(1, 2))
    assert torch.allclose(red, positive["frame_indices"].float(), atol=3)  # JPEG rounding
    assert positive["keyframe_label"].argmax() == 5  # 21 is nearest to frame 20
    assert negative["frame_indices"].tolist() == list(range(100, 164, 4))
    assert negative["keyframe_label"].sum() == 0 and negative["state"] == 0
    pnr_only = _dataset(tmp_path, [_item("a", 0, 64, pnr=21), _item("b", 100, 164, state=False)], task="pnr")
    assert [r.unique_id for r in pnr_only.records] == ["a"]


def test_missing_frame_folder_names_folder_and_window(tmp_path):
    dataset = _dataset(tmp_path, [_item("lost-window")])
    with pytest.raises(FileNotFoundError, match=r"pos[/\\]lost-window.*lost-window"):
        dataset[0]


def test_window_outside_the_extracted_video_is_an_error(tmp_path):
    _write_window(tmp_path / "pos" / "cut", 0, 30)  # the video ended at frame 30, the window goes to 64
    dataset = _dataset(tmp_path, [_item("cut", 0, 64, pnr=10)])
    with pytest.raises(FileNotFoundError, match=r"frame 32 of window cut.*holds frames 0\.\.30 \(31 files\)"):
        dataset[0]


def test_corrupt_frame_names_the_file(tmp_path):
    _write_window(tmp_path / "pos" / "bad", 0, 64)
    (tmp_path / "pos" / "bad" / "8.jpeg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"8\.jpeg.*window bad"):
        _dataset(tmp_path, [_item("bad")])[0]


@pytest.mark.parametrize("field", ["parent_start_frame", "parent_end_sec", "unique_id", "state_change"])
def test_absent_annotation_field_names_file_field_and_item(tmp_path, field):
    item = _item("w1")
    del item[field]
    with pytest.raises(ValueError, match=rf"ann\.json: clips\[1\].*field '{field}' is missing"):
        _dataset(tmp_path, [_item("w0"), item])


def test_bad_annotation_values_are_named(tmp_path):
    no_pnr = _item("w0")
    del no_pnr["parent_pnr_frame"]
    with pytest.raises(ValueError, match="clips\\[0\\] \\(unique_id w0\\).*parent_pnr_frame"):
        _dataset(tmp_path, [no_pnr])
    with pytest.raises(ValueError, match="lies outside the window"):
        _dataset(tmp_path, [_item("w0", 0, 64, pnr=90)])
    with pytest.raises(ValueError, match="fewer than the 16 frames"):
        _dataset(tmp_path, [_item("w0", 0, 10, pnr=5)])
    with pytest.raises(ValueError, match="field 'parent_start_frame' must be a whole frame number"):
        _dataset(tmp_path, [dict(_item("w0"), parent_start_frame="zero")])
    with pytest.raises(ValueError, match="appears twice"):
        _dataset(tmp_path, [_item("w0"), _item("w0")])
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="field 'clips' is missing"):
        read_state_change_annotations(tmp_path / "list.json", "val", pos_dir=tmp_path, neg_dir=tmp_path,
                                      test_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        read_state_change_annotations(tmp_path / "none.json", "val", pos_dir=tmp_path, neg_dir=tmp_path,
                                      test_dir=tmp_path)


def test_test_split_needs_no_labels(tmp_path):
    item = {k: v for k, v in _item("t0", 0, 64).items() if k not in ("state_change", "parent_pnr_frame")}
    _write_window(tmp_path / "test" / "t0", 0, 64)
    sample = _dataset(tmp_path, [item], split="test")[0]
    assert sample["state"] == -1 and sample["pnr_frame"] == -1 and sample["keyframe_label"].sum() == 0


def test_twin_copy_with_a_deleted_folder(tmp_path, twin):
    data = tmp_path / "data"
    shutil.copytree(twin / "fho" / "annotations", data / "fho" / "annotations")
    dataset = StateChangeDataset.from_config(_cfg("pnr", twin), "val", data_root=data)
    with pytest.raises(FileNotFoundError, match=dataset.records[0].unique_id):
        dataset[0]
