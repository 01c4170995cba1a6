"""Shared social data pieces: track cleaning/interpolation (hhi §1.5), ground truth, face crops, audio windows."""
import json

import numpy as np
import pytest
import soundfile
import torch

from egot2 import media
from HHI.data.social import (IMAGENET_MEAN, IMAGENET_STD, WarningCounter, audio_window, clean_track, crop_face,
                             load_clip_tracks, looking_identifiers, normalise_frames, read_face, read_json,
                             read_lam_segments, read_split, read_ttm_segments, read_wav_window, rms_normalise,
                             track_boxes)


def record(frame, x=10.0, y=20.0, width=30.0, height=40.0, person="2", **extra):
    return {"clip_uid": "clip", "frameNumber": frame, "Person ID": person, "x": x, "y": y, "width": width,
            "height": height, **extra}


# ----------------------------------------------------------------------------------------------- clean_track
def test_clean_track_drops_invalid_records_and_clamps_top_left():
    records = [record(1, x=-5.0, y=-1.0), record(2, width=0.0), record(3, height=-1.0), record(0),
               record(4, person=""), record(5)]
    cleaned = clean_track(records)
    # frames 1 and 5 survive; the gap 2..4 is interpolated between them
    assert [r["frameNumber"] for r in cleaned] == [1, 2, 3, 4, 5]
    first = cleaned[0]
    assert (first["x"], first["y"]) == (0.0, 0.0)
    # the corner box is built from the clamped x/y, so width and height are kept (the box shifts)
    assert (first["width"], first["height"]) == pytest.approx((30.0, 40.0))


def test_clean_track_interpolates_each_corner_linearly():
    records = [record(10, x=0.0, y=0.0, width=10.0, height=10.0), record(14, x=40.0, y=8.0, width=20.0, height=2.0)]
    cleaned = clean_track(records)
    assert [r["frameNumber"] for r in cleaned] == [10, 11, 12, 13, 14]
    boxes = track_boxes(cleaned)
    # corners (x1, y1, x2, y2) go linearly from (0, 0, 10, 10) to (40, 8, 60, 10)
    assert boxes[12] == pytest.approx((20.0, 4.0, 35.0, 10.0))
    assert boxes[11] == pytest.approx((10.0, 2.0, 22.5, 10.0))
    # every record is a copy of the first one with frame and box replaced
    assert all(r["Person ID"] == "2" and r["clip_uid"] == "clip" for r in cleaned)


def test_clean_track_keeps_contiguous_tracks_and_returns_copies():
    records = [record(3), record(4, x=11.0), record(5, x=12.0)]
    cleaned = clean_track(records)
    assert [r["x"] for r in cleaned] == [10.0, 11.0, 12.0]
    cleaned[0]["x"] = 99.0
    assert records[0]["x"] == 10.0


def test_clean_track_sorting_is_optional():
    records = [record(5, x=50.0), record(1, x=10.0), record(3, x=30.0)]
    # unsorted: last - first + 1 = -3 < 3 records, so kept as is (the contiguity test assumes sorted input)
    assert [r["frameNumber"] for r in clean_track(records)] == [5, 1, 3]
    sorted_track = clean_track(records, sort=True)
    assert [r["frameNumber"] for r in sorted_track] == [1, 2, 3, 4, 5]
    assert [r["x"] for r in sorted_track] == pytest.approx([10.0, 20.0, 30.0, 40.0, 50.0])


def test_clean_track_asd_records_use_frame_and_no_person():
    records = [{"frame": 7, "x": 1.0, "y": 2.0, "width": 3.0, "height": 4.0},
               {"frame": 9, "x": 3.0, "y": 2.0, "width": 3.0, "height": 4.0}]
    cleaned = clean_track(records, frame_key="frame", check_person=False)
    assert [r["frame"] for r in cleaned] == [7, 8, 9]
    assert cleaned[1]["x"] == pytest.approx(2.0)


def test_clean_track_without_valid_boxes_is_empty():
    assert clean_track([]) == []
    assert clean_track([record(1, width=0.0), record(0)]) == []


def test_clean_track_malformed_record_names_the_file_and_field():
    with pytest.raises(ValueError, match=r"t\.json: record 1: missing field 'width'"):
        clean_track([record(1), {"frameNumber": 2, "Person ID": "2", "x": 1, "y": 1, "height": 3}], source="t.json")
    with pytest.raises(ValueError, match="field 'x' must be a number"):
        clean_track([record(1, x="left")], source="t.json")


def test_load_clip_tracks_skips_tracks_without_boxes_with_a_counted_warning(tmp_path):
    folder = tmp_path / "json_original" / "clip"
    folder.mkdir(parents=True)
    (folder / "b.json").write_text(json.dumps([record(1), record(3)]))
    (folder / "a.json").write_text(json.dumps([record(1, width=0.0)]))
    (folder / "c.json").write_text(json.dumps([]))
    warnings = WarningCounter()
    tracks = load_clip_tracks(tmp_path / "json_original", "clip", sort=True, warnings=warnings)
    assert list(tracks) == ["b"]
    assert [r["frameNumber"] for r in tracks["b"]] == [1, 2, 3]
    assert warnings["track without a valid box (skipped)"] == 2
    assert load_clip_tracks(tmp_path / "json_original", "other", sort=True, warnings=warnings) == {}
    assert warnings["clip without face tracks"] == 1


def test_load_clip_tracks_bad_json_names_the_file(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "t.json").write_text("[{")
    with pytest.raises(ValueError, match=r"t\.json: not valid JSON"):
        load_clip_tracks(tmp_path, "clip", sort=False)


# ----------------------------------------------------------------------------------------------- ground truth
def test_read_split_and_missing_files(tmp_path):
    (tmp_path / "train.list").write_text("a\n\nb\na\n")
    assert read_split(tmp_path / "train.list") == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="split list not found"):
        read_split(tmp_path / "val.list")
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        read_json(tmp_path / "nothing.json")


def test_lam_segments_label_modes(tmp_path):
    path = tmp_path / "clip.json"
    path.write_text(json.dumps([{"label": "2", "start_frame": 4, "end_frame": 6, "is_at_me": True},
                                {"label": "3", "start_frame": 5, "end_frame": 5, "is_at_me": False}]))
    official = read_lam_segments(path)
    assert looking_identifiers(official) == {"4:2", "5:2", "6:2", "5:3"}
    assert looking_identifiers(read_lam_segments(path, "is_at_me")) == {"4:2", "5:2", "6:2"}
    path.write_text(json.dumps([{"label": "2", "start_frame": 4}]))
    with pytest.raises(ValueError, match="segment 0: missing field 'end_frame'"):
        read_lam_segments(path)


def test_ttm_segments_label_modes(tmp_path):
    path = tmp_path / "clip.json"
    path.write_text(json.dumps([{"label": 2, "tags": 0, "start_frame": 1, "end_frame": 30, "is_at_me": False},
                                {"label": 3, "start_frame": 40, "end_frame": 60, "is_at_me": True},
                                {"label": "'1'", "start_frame": 70, "end_frame": 90, "is_at_me": False}]))
    official = read_ttm_segments(path)
    assert [(s["index"], s["person"], s["label"]) for s in official] == [(0, "2", 1), (1, "3", 0), (2, "1", 0)]
    corrected = read_ttm_segments(path, "is_at_me")
    assert [s["label"] for s in corrected] == [0, 1, 0]
    path.write_text(json.dumps([{"label": 2, "start_frame": 1, "end_frame": 30}]))
    with pytest.raises(ValueError, match="missing field 'is_at_me'"):
        read_ttm_segments(path, "is_at_me")
    with pytest.raises(ValueError, match="label_mode"):
        read_ttm_segments(path, "clever")


# ----------------------------------------------------------------------------------------------- faces
def test_crop_face_truncates_clips_and_detects_empty_crops():
    image = np.zeros((20, 30, 3), np.uint8)
    image[5:10, 10:20] = 200
    face = crop_face(image, (10.9, 5.7, 20.2, 10.9), size=4)
    assert face.shape == (4, 4, 3) and np.all(face == 200)
    # a box reaching past the right/bottom edges is clipped by the slice
    assert crop_face(image, (25.0, 15.0, 90.0, 90.0), size=4).shape == (4, 4, 3)
    assert crop_face(image, (10.2, 5.0, 10.9, 9.0), size=4) is None
    assert crop_face(image, (40.0, 5.0, 50.0, 9.0), size=4) is None


def test_read_face_reports_missing_corrupt_and_empty(tmp_path):
    good = tmp_path / "good.jpg"
    media.write_image(good, np.full((16, 16, 3), 120, np.uint8))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"definitely not a jpeg")
    warnings = WarningCounter()
    face, status = read_face(good, 8, (0, 0, 16, 16), warnings)
    assert status == "ok" and face.shape == (8, 8, 3)
    assert read_face(tmp_path / "gone.jpg", 8, (0, 0, 4, 4), warnings) == (None, "missing")
    assert read_face(corrupt, 8, (0, 0, 4, 4), warnings) == (None, "corrupt")
    assert read_face(good, 8, (3, 3, 3.5, 9), warnings) == (None, "empty")
    whole, status = read_face(good, 8, None, warnings)
    assert status == "ok" and whole.shape == (8, 8, 3)
    assert warnings == {"missing frame image (black frame)": 1, "corrupt frame image (black frame)": 1,
                        "empty face crop (black frame)": 1}


def test_normalise_frames_is_imagenet_normalisation():
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    frames[1] = 255
    tensor = normalise_frames(frames)
    assert tensor.shape == (2, 3, 4, 4) and tensor.dtype == torch.float32
    assert torch.allclose(tensor[0, :, 0, 0], torch.from_numpy(-IMAGENET_MEAN / IMAGENET_STD))
    assert torch.allclose(tensor[1, :, 0, 0], torch.from_numpy((1 - IMAGENET_MEAN) / IMAGENET_STD))


# ----------------------------------------------------------------------------------------------- audio
def test_rms_normalise():
    samples = np.array([0.5, -0.5, 0.5, -0.5])
    assert np.sqrt(np.mean(rms_normalise(samples) ** 2)) == pytest.approx(0.1)
    # silence is scaled by 0.1 / 1e-4 instead of dividing by zero
    assert np.all(rms_normalise(np.zeros(5)) == 0)
    assert rms_normalise(np.zeros(0)).size == 0


def test_read_wav_window_equals_slicing_the_whole_file(tmp_path):
    rng = np.random.default_rng(0)
    samples = (rng.uniform(-0.5, 0.5, 16000 * 2)).astype(np.float32)
    path = tmp_path / "clip.wav"
    soundfile.write(str(path), samples, 16000, subtype="PCM_16")
    whole, rate = soundfile.read(str(path))
    window, window_rate = read_wav_window(path, 7, 40)
    onset, offset = audio_window(7, 40, 16000)
    assert (onset, offset) == (int(7 / 30 * 16000), int(40 / 30 * 16000))
    assert window_rate == rate == 16000
    np.testing.assert_array_equal(window, whole[onset:offset])
    # a window past the end of the file is empty (or cut short), not an error
    assert read_wav_window(path, 100, 130)[0].size == 0
    assert read_wav_window(path, 50, 130)[0].size == 32000 - int(50 / 30 * 16000)


def test_read_wav_window_empty_and_broken_files(tmp_path):
    empty = tmp_path / "empty.wav"
    soundfile.write(str(empty), np.zeros(0, np.float32), 16000, subtype="PCM_16")
    assert read_wav_window(empty, 0, 30)[0].size == 0
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....nonsense")
    with pytest.raises(media.MediaError, match="broken.wav"):
        read_wav_window(broken, 0, 30)
    with pytest.raises(media.MediaError, match="missing.wav"):
        read_wav_window(tmp_path / "missing.wav", 0, 30)
