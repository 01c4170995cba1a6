"""The social half of the synthetic twin: official schemas field by field, planted defects, test releases,
determinism (same seed → same bytes, whatever the worker count; another seed → other data)."""
import json
import re
import uuid
from pathlib import Path

import numpy as np
import pytest

from egot2 import media
from egot2.synthetic import SOCIAL_TASKS, parse_tasks, synthesize
from egot2.synthetic.social import SOCIAL_SIZES
from tests.twin import make_twin

SEGMENT_KEYS = {"start_frame", "end_frame", "start_time", "end_time", "video_start_frame", "video_end_frame",
                "video_start_time", "video_end_time"}
CLIP_KEYS = {"clip_uid", "source_clip_uid", "video_uid", "fps", "valid", "parent_start_sec", "parent_end_sec",
             "parent_start_frame", "parent_end_frame", "video_start_sec", "video_end_sec", "video_start_frame",
             "video_end_frame", "clip_start_sec", "clip_end_sec", "clip_start_frame", "clip_end_frame",
             "camera_wearer", "persons", "missing_voice_segments", "transcriptions", "social_segments_talking",
             "social_segments_looking"}
TINY = SOCIAL_SIZES["tiny"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    raw_dir, _ = make_twin(tmp_path_factory.mktemp("twin"), size="tiny", seed=0, tasks=SOCIAL_TASKS)
    return raw_dir / "v1"


def _is_uuid(text):
    return isinstance(text, str) and str(uuid.UUID(text)) == text


def _load(raw, split):
    return json.loads((raw / "annotations" / f"av_{split}.json").read_text())


def _clips(raw, split):
    return [clip for video in _load(raw, split)["videos"] for clip in video["clips"]]


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_segment(segment, num_frames, extra_keys):
    assert set(segment) == SEGMENT_KEYS | extra_keys
    assert all(isinstance(segment[k], int) for k in SEGMENT_KEYS if k.endswith("frame"))
    assert all(_is_number(segment[k]) for k in SEGMENT_KEYS if k.endswith("time"))
    assert 1 <= segment["start_frame"] <= segment["end_frame"] <= num_frames
    assert segment["video_end_frame"] - segment["video_start_frame"] == segment["end_frame"] - segment["start_frame"]


@pytest.mark.parametrize("split", ["train", "val"])
def test_av_annotations_follow_the_official_schema(raw, split):
    data = _load(raw, split)
    assert set(data) == {"version", "date", "description", "split", "videos"} and data["split"] == split
    clips = _clips(raw, split)
    assert len(clips) == {"train": TINY.train_clips, "val": TINY.val_clips}[split]
    for video in data["videos"]:
        assert _is_uuid(video["video_uid"]) and video["split"] == split
        assert all(clip["video_uid"] == video["video_uid"] for clip in video["clips"])
    for clip in clips:
        assert set(clip) == CLIP_KEYS and _is_uuid(clip["clip_uid"]) and clip["valid"] is True
        info = media.video_info(raw / "clips" / f"{clip['clip_uid']}.mp4")
        num_frames = info["num_frames"]
        assert (info["fps"], info["has_audio"], info["width"], info["height"]) == (30.0, True, TINY.width,
                                                                                   TINY.height)
        assert num_frames == TINY.num_frames == clip["clip_end_frame"]
        for key in ("parent", "video"):
            assert _is_number(clip[f"{key}_start_sec"]) and _is_number(clip[f"{key}_end_sec"])
            assert clip[f"{key}_end_sec"] - clip[f"{key}_start_sec"] == pytest.approx(num_frames / 30)
        persons = clip["persons"]
        wearer = persons[0]
        assert wearer["person_id"] == "0" and wearer["camera_wearer"] is True and wearer["tracking_paths"] == []
        assert clip["camera_wearer"]["person_id"] == "0"
        ids = [p["person_id"] for p in persons]
        assert len(set(ids)) == len(ids) and 3 <= len(persons) <= 4 and all(i.isdigit() for i in ids)
        for person in persons[1:]:
            assert set(person) == {"person_id", "camera_wearer", "tracking_paths", "voice_segments"}
            assert person["camera_wearer"] is False and len(person["tracking_paths"]) == 1
            path = person["tracking_paths"][0]
            assert {"track_id", "track"} <= set(path) and _is_uuid(path["track_id"])
            frames = [box["frame"] for box in path["track"]]
            assert all(isinstance(f, int) for f in frames) and frames == sorted(set(frames))
            assert 1 <= frames[0] and frames[-1] <= num_frames
            for box in path["track"]:
                assert {"frame", "x", "y", "width", "height"} <= set(box)
                assert all(_is_number(box[k]) for k in ("x", "y", "width", "height"))
                assert box["width"] > 0 and box["height"] > 0
        for person in persons:
            for segment in person["voice_segments"]:
                _check_segment(segment, num_frames, {"person"})
                assert segment["person"] == person["person_id"]
        for segment in clip["social_segments_looking"]:
            _check_segment(segment, num_frames, {"person", "target", "is_at_me"})
            assert segment["person"] in ids[1:] and segment["target"] == "0" and segment["is_at_me"] is True
        for segment in clip["social_segments_talking"]:
            _check_segment(segment, num_frames, {"person", "target", "is_at_me"})
            assert segment["person"] in ids and isinstance(segment["is_at_me"], bool)
            if segment["person"] == "0":
                assert segment["is_at_me"] is False and segment["target"] in [None] + ids[1:]
            else:
                # Both label modes agree on the twin: a target is set exactly when the speech is for the wearer.
                assert segment["is_at_me"] == (segment["target"] == "0")
                assert segment["target"] in (None, "0")
                assert segment["end_frame"] - segment["start_frame"] + 1 >= 15
        # Voice segments and talking segments describe the same speech turns.
        voiced = sorted((s["person"], s["start_frame"], s["end_frame"]) for p in persons for s in p["voice_segments"])
        talked = sorted((s["person"], s["start_frame"], s["end_frame"]) for s in clip["social_segments_talking"])
        assert voiced == talked


def test_planted_structure_and_track_defects(raw):
    clips = _clips(raw, "train") + _clips(raw, "val")
    for clip in clips:
        tracks = [p["tracking_paths"][0]["track"] for p in clip["persons"][1:]]
        frames = [[box["frame"] for box in track] for track in tracks]
        assert any(f[-1] - f[0] + 1 > len(f) for f in frames), "no missing frame inside any track"
        assert sum(f[0] > 1 for f in frames) == 1, "exactly one person enters late"
        assert any(box["x"] < 0 or box["x"] + box["width"] > TINY.width for t in tracks for box in t), \
            "no box partly outside the frame"
    for split in ("train", "val"):
        talking = [s for c in _clips(raw, split) for s in c["social_segments_talking"] if s["person"] != "0"]
        assert {s["is_at_me"] for s in talking} == {True, False}, f"TTM needs both classes in {split}"
        assert any(s["end_frame"] - s["start_frame"] + 1 > 150 for s in talking), f"no long TTM segment in {split}"
    assert any(c["persons"][0]["voice_segments"] for c in clips), "the camera wearer never speaks"


def test_split_lists_manifest_and_twin_description(raw):
    lists = {s: (raw / "annotations" / "social_splits" / f"{s}.list").read_text() for s in
             ("train", "val", "test", "full")}
    assert all(text.endswith("\n") for text in lists.values())
    uids = {s: text.split() for s, text in lists.items()}
    assert uids["train"] == [c["clip_uid"] for c in _clips(raw, "train")]
    assert uids["val"] == [c["clip_uid"] for c in _clips(raw, "val")]
    assert len(uids["test"]) == TINY.test_clips and uids["full"] == uids["train"] + uids["val"] + uids["test"]
    assert all(_is_uuid(u) and (raw / "clips" / f"{u}.mp4").is_file() for u in uids["full"])
    manifest = (raw / "annotations" / "manifest.csv").read_text().splitlines()
    assert manifest[0] == "video_uid,canonical_s3_location"
    video_uids = {v["video_uid"] for s in ("train", "val") for v in _load(raw, s)["videos"]}
    assert {row.split(",")[0] for row in manifest[1:]} >= video_uids
    assert all(row.split(",")[1].endswith(".mp4") for row in manifest[1:])
    twin = json.loads((raw.parent / "twin.json").read_text())
    assert twin["size"] == "tiny" and twin["seed"] == 0 and set(SOCIAL_TASKS) <= set(twin["tasks"])
    assert twin["social"]["rules"] and twin["social"]["splits"]["train"]["clips"] == TINY.train_clips


def test_challenge_test_releases(raw):
    test_root = raw / "social_test"
    seg_info = json.loads((test_root / "seg_info.json").read_text())
    assert len(seg_info) == TINY.ttm_test_segments
    for segment_id, entry in seg_info.items():
        assert set(entry) == {"frame_list", "frame_num"} and entry["frame_list"] == sorted(entry["frame_list"])
        folder = test_root / "final_test_data" / segment_id
        faces = sorted(int(p.stem) for p in (folder / "face").glob("*.jpg"))
        assert faces == entry["frame_list"] and faces
        samples, rate = media.read_wav(folder / "audio" / "aud.wav")
        assert rate == 16000
        assert entry["frame_num"] == max(int(len(samples) / rate * 30 + 1), max(faces) + 1)
        assert media.read_image(folder / "face" / f"{faces[0]}.jpg").shape == (224, 224, 3)
    videos = [p for p in (test_root / "videos_challenge").iterdir() if p.is_dir()]
    tracks = [t for v in videos for t in v.iterdir() if t.is_dir()]
    assert len(tracks) == TINY.lam_test_tracks
    test_uids = (raw / "annotations" / "social_splits" / "test.list").read_text().split()
    for track in tracks:
        assert track.parent.name in test_uids
        crops = sorted(track.glob("*.jpg"))
        assert len(crops) == TINY.lam_test_frames
        for crop in crops:
            frame, unique = crop.stem.split("_")  # the official loader splits the stem at "_"
            assert frame.isdigit() and unique and "_" not in unique
        assert media.read_image(crops[0]).shape == (224, 224, 3)
    answers = json.loads((raw.parent / "twin_answers" / "social_test.json").read_text())
    assert set(answers["ttm"]) == set(seg_info)
    assert len(answers["lam"]) == TINY.lam_test_tracks * TINY.lam_test_frames


def _tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers_other_seed_other_data(raw, tmp_path):
    first = _tree_bytes(raw.parent)
    again = _tree_bytes(synthesize(tmp_path / "again", size="tiny", seed=0, tasks=SOCIAL_TASKS, workers=2))
    assert first.keys() == again.keys()
    assert [name for name in first if first[name] != again[name]] == []
    other = synthesize(tmp_path / "other", size="tiny", seed=1, tasks=("ttm",))
    assert (other / "v1" / "annotations" / "av_train.json").read_bytes() != first["v1/annotations/av_train.json"]
    videos = sorted((other / "v1" / "clips").glob("*.mp4"))
    assert videos and all(f"v1/clips/{v.name}" not in first for v in videos)  # new seed, new uids
    assert np.abs(media.read_video_frames(videos[0], 0, 1).astype(int)
                  - media.read_video_frames(sorted((raw / "clips").glob("*.mp4"))[0], 0, 1).astype(int)).mean() > 1


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown twin size 'huge'"):
        synthesize(tmp_path, size="huge")
    with pytest.raises(ValueError, match=re.escape("unknown task(s) ['gaze']")):
        synthesize(tmp_path, tasks="lam,gaze")
    assert parse_tasks("ttm, lam") == ("lam", "ttm")
    assert not any(tmp_path.iterdir())
