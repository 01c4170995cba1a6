"""HHI.prepare on the tiny twin: complete and consistent layouts, labels as the official builders make them,
no-op re-runs, resumption after a kill, clear errors, and a learnability probe proving the planted signals
survive the pipeline."""
import ast
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from egot2 import jobs, media
from egot2.synthetic import SOCIAL_TASKS
from HHI.prepare import asd_chunks, lam_segments, prepare_social, ttm_segments
from tests.twin import make_twin


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    raw_dir, data_dir = make_twin(tmp_path_factory.mktemp("twin"), size="tiny", seed=0, tasks=SOCIAL_TASKS)
    return raw_dir, data_dir


def _split(data, split):
    return (data / "ttm" / "split" / f"{split}.list").read_text().split()


def _annotated_clips(raw):
    clips = {}
    for split in ("train", "val"):
        data = json.loads((raw / "v1" / "annotations" / f"av_{split}.json").read_text())
        clips.update({c["clip_uid"]: c for v in data["videos"] for c in v["clips"]})
    return clips


def _snapshot(root: Path) -> dict:
    """Every entry under ``root``: (kind, mtime_ns, size, bytes or link target); symlinks are not followed."""
    entries = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        if path.is_symlink():
            entries[str(path.relative_to(root))] = ("link", stat.st_mtime_ns, 0, str(path.readlink()))
        elif path.is_file():
            entries[str(path.relative_to(root))] = ("file", stat.st_mtime_ns, stat.st_size, path.read_bytes())
        else:
            entries[str(path.relative_to(root))] = ("dir", stat.st_mtime_ns, 0, b"")
    return entries


def test_media_layout_is_complete(twin):
    raw, data = twin
    clips = _annotated_clips(raw)
    assert sorted(clips) == sorted(_split(data, "train") + _split(data, "val"))
    for task in SOCIAL_TASKS:
        for name in ("video_imgs", "wave"):
            assert (data / task / name).is_symlink() and (data / task / name).resolve() == \
                (data / "social" / name).resolve()
        assert (data / task / "split" / "full.list").read_bytes() == \
            (raw / "v1" / "annotations" / "social_splits" / "full.list").read_bytes()
    for uid in clips:
        video = raw / "v1" / "clips" / f"{uid}.mp4"
        num_frames = media.video_info(video)["num_frames"]
        names = sorted(p.name for p in (data / "lam" / "video_imgs" / uid).iterdir())
        assert names == [f"img_{f:05d}.jpg" for f in range(1, num_frames + 1)]
        # Annotation frame f is image f is decoded frame f - 1 (hhi §1.6).
        for f in (1, 100):
            image = media.read_image(data / "ttm" / "video_imgs" / uid / f"img_{f:05d}.jpg")
            decoded = media.read_video_frames(video, f - 1, f)[0]
            assert np.abs(image.astype(int) - decoded.astype(int)).mean() < 3
        samples, rate = media.read_wav(data / "asd" / "wave" / f"{uid}.wav")
        assert rate == 16000 and abs(len(samples) - num_frames / 30 * 16000) <= 1024 and np.abs(samples).max() > 0.05


def test_track_files_and_labels_match_the_annotations(twin):
    raw, data = twin
    for uid, clip in _annotated_clips(raw).items():
        expected_tracks = {}
        for person in clip["persons"][1:]:
            for path in person["tracking_paths"]:
                expected_tracks[f"{path['track_id']}.json"] = [
                    {"clip_uid": uid, "frameNumber": b["frame"], "Person ID": person["person_id"], "x": b["x"],
                     "y": b["y"], "height": b["height"], "width": b["width"]} for b in path["track"]]
        folder = data / "lam" / "json_original" / uid
        assert sorted(p.name for p in folder.iterdir()) == sorted(expected_tracks)
        for name, records in expected_tracks.items():
            assert json.loads((folder / name).read_text()) == records
        lam = json.loads((data / "lam" / "result_LAM" / f"{uid}.json").read_text())
        assert [(r["label"], r["start_frame"], r["end_frame"]) for r in lam] == [
            (s["person"], s["start_frame"], s["end_frame"]) for s in clip["social_segments_looking"]]
        assert all(isinstance(r["label"], str) for r in lam)
        ttm = json.loads((data / "ttm" / "result_TTM" / f"{uid}.json").read_text())
        assert len(ttm) == len(clip["social_segments_talking"])
        for record, segment in zip(ttm, clip["social_segments_talking"]):
            assert record["label"] == int(segment["person"])
            assert (record["start_frame"], record["end_frame"]) == (segment["start_frame"], segment["end_frame"])
            assert ("tags" in record) == (segment["target"] is not None)
            if "tags" in record:
                assert record["tags"] == int(segment["target"])


def test_asd_csv_and_boxes(twin):
    raw, data = twin
    clips = _annotated_clips(raw)
    for split in ("train", "val"):
        lines = (data / "asd" / "ego4d" / "csv" / f"active_speaker_{split}.csv").read_text().splitlines()
        seen_tracks = set()
        for line in lines:
            chunk_id, n, fps, labels, first = line.split("\t")
            uid, track_id, chunk = chunk_id.split(":")
            assert uid == chunk_id[:36] and uid in _split(data, split) and chunk.isdigit()
            labels = ast.literal_eval(labels)
            assert fps == "30.0" and int(n) == len(labels) and 1 < len(labels) <= 300
            boxes = json.loads((data / "asd" / "ego4d" / "bbox" / f"{chunk_id}.json").read_text())
            assert len(boxes) == len(labels) and int(first) == boxes[0]["frame"]
            person = next(p for p in clips[uid]["persons"][1:]
                          if p["tracking_paths"][0]["track_id"] == track_id)
            assert boxes == person["tracking_paths"][0]["track"][300 * int(chunk):300 * int(chunk) + 300]
            speaking = {f for s in person["voice_segments"] for f in range(s["start_frame"], s["end_frame"] + 1)}
            assert labels == [int(b["frame"] in speaking) for b in boxes]
            seen_tracks.add(track_id)
        expected = {p["tracking_paths"][0]["track_id"] for uid in _split(data, split)
                    for p in clips[uid]["persons"][1:]}
        assert seen_tracks == expected


def test_test_releases_are_copied(twin):
    raw, data = twin
    source = raw / "v1" / "social_test"
    assert (data / "ttm" / "seg_info.json").read_bytes() == (source / "seg_info.json").read_bytes()
    for release, task in (("final_test_data", "ttm"), ("videos_challenge", "lam")):
        original = {p.relative_to(source / release): p.read_bytes() for p in (source / release).rglob("*")
                    if p.is_file()}
        copied = {p.relative_to(data / task / release): p.read_bytes() for p in (data / task / release).rglob("*")
                  if p.is_file()}
        assert original and original == copied


def test_label_modes_on_a_handmade_clip():
    clip = {
        "clip_uid": "c" * 36,
        "persons": [
            {"person_id": "0", "tracking_paths": [], "voice_segments": []},
            {"person_id": "2", "voice_segments": [{"start_frame": 3, "end_frame": 4}],
             "tracking_paths": [{"track_id": "t1", "track": [{"frame": f, "x": 1, "y": 2, "width": 3, "height": 4}
                                                             for f in range(1, 7)]},
                                {"track_id": "t1_visual_anchor", "track": [{"frame": 1, "x": 1, "y": 2,
                                                                            "width": 3, "height": 4}] * 3}]},
        ],
        "social_segments_looking": [
            {"person": "2", "target": "0", "is_at_me": True, "start_frame": 1, "end_frame": 5},
            {"person": "2", "target": "3", "is_at_me": False, "start_frame": 8, "end_frame": 9},
            {"person": None, "target": "0", "is_at_me": True, "start_frame": 1, "end_frame": 2},
        ],
        "social_segments_talking": [
            {"person": "2", "target": "0", "is_at_me": True, "start_frame": 1, "end_frame": 30},
            {"person": "'2'", "target": "3", "is_at_me": False, "start_frame": 40, "end_frame": 60},
            {"person": "2", "target": None, "is_at_me": False, "start_frame": 70, "end_frame": 90},
        ],
    }
    # Official builders: every non-null looking person; TTM positive iff the target is not null.
    assert [r["start_frame"] for r in lam_segments(clip)] == [1, 8]
    assert [("tags" in r, r.get("tags")) for r in ttm_segments(clip)] == [(True, 0), (True, 3), (False, None)]
    assert all(r["label"] == 2 for r in ttm_segments(clip))
    # Corrected mode (social-interactions issue #24): is_at_me decides.
    assert [r["start_frame"] for r in lam_segments(clip, "is_at_me")] == [1]
    assert ["tags" in r for r in ttm_segments(clip, "is_at_me")] == [True, False, False]
    rows, boxes = asd_chunks(clip)
    assert rows == [["c" * 36 + ":t1:0", 6, 30.0, [0, 0, 1, 1, 0, 0], 1]]
    assert list(boxes) == ["c" * 36 + ":t1:0"]


def test_rerun_is_a_no_op(twin, tmp_path):
    raw, data = twin
    copy = tmp_path / "data"
    shutil.copytree(data, copy, symlinks=True)
    before = _snapshot(copy)
    prepare_social(raw, copy, progress=False)
    assert _snapshot(copy) == before


def test_killed_run_resumes(twin, tmp_path):
    raw, data = twin
    copy = tmp_path / "data"
    shutil.copytree(data, copy, symlinks=True)
    reference = {name: entry[3] for name, entry in _snapshot(copy).items()}
    train = _split(copy, "train")
    val = _split(copy, "val")
    frames = copy / "social" / "video_imgs"
    # Clip 1: its folder lost its marker and half of its frames (an interrupted older run).
    jobs.clear_done(frames / train[0])
    for path in sorted((frames / train[0]).iterdir())[::2]:
        path.unlink()
    # Clip 2: killed while building: only a staging folder with a few frames exists.
    shutil.move(frames / train[1], frames / f".{train[1]}.staging-killed")
    jobs.clear_done(frames / train[1])
    # Clip 3: a truncated wav without marker; plus lost labels and a truncated csv.
    wav = copy / "social" / "wave" / f"{val[0]}.wav"
    wav.write_bytes(wav.read_bytes()[:100])
    jobs.clear_done(wav)
    (copy / "ttm" / "result_TTM" / f"{val[1]}.json").unlink()
    (copy / "asd" / "ego4d" / "csv" / "active_speaker_val.csv").write_text("broken")
    untouched = frames / val[1] / "img_00001.jpg"
    untouched_mtime = untouched.stat().st_mtime_ns

    prepare_social(raw, copy, progress=False)
    after = _snapshot(copy)
    assert {name: entry[3] for name, entry in after.items()} == reference
    assert untouched.stat().st_mtime_ns == untouched_mtime
    assert not any(".staging-" in name for name in after)


def _raw_without_videos(raw: Path, dst: Path, keep_videos=True, drop=()):
    (dst / "v1").mkdir(parents=True)
    shutil.copytree(raw / "v1" / "annotations", dst / "v1" / "annotations")
    if keep_videos:
        (dst / "v1" / "clips").mkdir()
        for video in (raw / "v1" / "clips").glob("*.mp4"):
            if video.stem not in drop:
                (dst / "v1" / "clips" / video.name).symlink_to(video)
    return dst


def test_missing_video_names_the_clip_and_file(twin, tmp_path):
    raw, data = twin
    missing = _split(data, "train")[0]
    broken = _raw_without_videos(raw, tmp_path / "raw", drop={missing})
    with pytest.raises(FileNotFoundError, match=rf"clips/{missing}\.mp4: video of clip {missing} not found"):
        prepare_social(broken, tmp_path / "out", progress=False)


def test_missing_annotation_field_or_file_is_named(twin, tmp_path):
    raw, _ = twin
    broken = _raw_without_videos(raw, tmp_path / "raw", keep_videos=False)
    path = broken / "v1" / "annotations" / "av_val.json"
    data = json.loads(path.read_text())
    clip = data["videos"][0]["clips"][0]
    del clip["persons"][1]["tracking_paths"][0]["track"][3]["width"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"av_val\.json: videos\[0\]\.clips\[0\]: clip {clip['clip_uid']}: "
                                         r"persons\[1\]\.tracking_paths\[0\]\.track\[3\]: missing field 'width'"):
        prepare_social(broken, tmp_path / "out", progress=False)
    clip["persons"][1]["tracking_paths"][0]["track"][3]["width"] = 10.0
    del clip["persons"][2]["voice_segments"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"persons\[2\]: missing field 'voice_segments'"):
        prepare_social(broken, tmp_path / "out", tasks=("asd",), progress=False)
    (broken / "v1" / "annotations" / "av_train.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"av_train\.json: AV/social annotation file not found"):
        prepare_social(broken, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="label_mode"):
        prepare_social(broken, tmp_path / "out", label_mode="sometimes")


# --------------------------------------------------------------------------------------------------------------
# Learnability probe: a few hand-made numbers per sample and a logistic regression beat chance on val.


class _Faces:
    """Grey 48x48 face crops read from the prepared frames, the way a loader would (box from json_original)."""

    def __init__(self, data: Path):
        self.data, self.frames = data, {}

    def crop(self, uid, frame, box):
        key = (uid, frame)
        if key not in self.frames:
            image = media.read_image(self.data / "ttm" / "video_imgs" / uid / f"img_{frame:05d}.jpg")
            self.frames[key] = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        image = self.frames[key]
        height, width = image.shape
        x0, y0 = int(np.clip(box["x"], 0, width - 1)), int(np.clip(box["y"], 0, height - 1))
        x1 = int(np.clip(box["x"] + box["width"], x0 + 1, width))
        y1 = int(np.clip(box["y"] + box["height"], y0 + 1, height))
        return cv2.resize(image[y0:y1, x0:x1], (48, 48), interpolation=cv2.INTER_AREA).astype(np.float32)


def _gaze_numbers(face):
    """How far the dark pupils and the bright eye whites sit from the face centre (0 for a frontal gaze)."""
    band = face[18:27, 6:42]
    columns = np.arange(6, 42) - 23.5
    dark = np.clip(90 - band, 0, None).sum(axis=0)
    bright = np.clip(band - 200, 0, None).sum(axis=0)
    return [abs((dark * columns).sum() / (dark.sum() + 1e-6)), abs((bright * columns).sum() / (bright.sum() + 1e-6))]


def _mouth_darkness(face):
    return float((255 - face[32:44, 12:36]).mean())


def _lam_samples(data, faces, split):
    features, labels = [], []
    for uid in _split(data, split):
        segments = json.loads((data / "lam" / "result_LAM" / f"{uid}.json").read_text())
        for track in sorted((data / "lam" / "json_original" / uid).glob("*.json")):
            for record in json.loads(track.read_text())[::2]:
                f, person = record["frameNumber"], record["Person ID"]
                features.append(_gaze_numbers(faces.crop(uid, f, record)))
                labels.append(int(any(s["label"] == person and s["start_frame"] <= f <= s["end_frame"]
                                      for s in segments)))
    return np.array(features), np.array(labels)


def _asd_samples(data, faces, split):
    features, labels = [], []
    for line in (data / "asd" / "ego4d" / "csv" / f"active_speaker_{split}.csv").read_text().splitlines():
        chunk_id, _, _, frame_labels, _ = line.split("\t")
        uid = chunk_id[:36]
        boxes = json.loads((data / "asd" / "ego4d" / "bbox" / f"{chunk_id}.json").read_text())
        samples, rate = media.read_wav(data / "asd" / "wave" / f"{uid}.wav")
        mouth = np.array([_mouth_darkness(faces.crop(uid, b["frame"], b)) for b in boxes])
        motion = np.abs(np.diff(mouth, prepend=mouth[0]))
        for i, (box, label) in enumerate(zip(boxes, ast.literal_eval(frame_labels))):
            window = samples[int(box["frame"] / 30 * rate):int((box["frame"] + 1) / 30 * rate)]
            energy = float(np.sqrt(np.mean(window ** 2))) if len(window) else 0.0
            features.append([mouth[max(0, i - 3):i + 4].mean(), motion[max(0, i - 3):i + 4].mean(), energy])
            labels.append(label)
    return np.array(features), np.array(labels)


def test_planted_signals_are_learnable(twin):
    _, data = twin
    faces = _Faces(data)
    # LAM: gaze numbers of single frames.
    train_x, train_y = _lam_samples(data, faces, "train")
    val_x, val_y = _lam_samples(data, faces, "val")
    lam = LogisticRegression().fit(train_x, train_y)
    lam_auc = roc_auc_score(val_y, lam.predict_proba(val_x)[:, 1])
    # ASD: mouth darkness and motion around the frame, plus the audio energy of the frame.
    train_x, train_y = _asd_samples(data, faces, "train")
    val_x, val_y = _asd_samples(data, faces, "val")
    asd = LogisticRegression().fit(train_x, train_y)
    asd_auc = roc_auc_score(val_y, asd.predict_proba(val_x)[:, 1])
    # TTM through the cross-task structure EgoT2 exploits: the LAM probe (trained on LAM labels only) averaged
    # over a speech segment ranks the segments spoken to the camera wearer first.
    scores, targets = [], []
    for split in ("train", "val"):
        for uid in _split(data, split):
            tracks = {}
            for track in (data / "ttm" / "json_original" / uid).glob("*.json"):
                records = json.loads(track.read_text())
                tracks[int(records[0]["Person ID"])] = {r["frameNumber"]: r for r in records}
            for segment in json.loads((data / "ttm" / "result_TTM" / f"{uid}.json").read_text()):
                if segment["label"] == 0:
                    continue  # the camera wearer's own speech (dropped by the TTM loader too)
                boxes = tracks[segment["label"]]
                numbers = [_gaze_numbers(faces.crop(uid, f, boxes[f]))
                           for f in range(segment["start_frame"], segment["end_frame"] + 1, 2) if f in boxes]
                scores.append(lam.predict_proba(np.array(numbers))[:, 1].mean())
                targets.append(int("tags" in segment))
    assert len(set(targets)) == 2
    ttm_auc = roc_auc_score(targets, scores)
    assert lam_auc > 0.75, f"LAM val AUC {lam_auc:.3f}"
    assert asd_auc > 0.75, f"ASD val AUC {asd_auc:.3f}"
    assert ttm_auc > 0.7, f"TTM AUC {ttm_auc:.3f}"
