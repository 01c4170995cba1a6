"""egot2.synthetic.fho: the FHO half of the twin matches the official schemas field by field, keeps its layout
promises (windows inside videos, clips inside their videos, enough actions for LTA), shows its planted state
change at the PNR frame, and is deterministic."""
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from egot2 import media
from egot2.synthetic import FHO_TASKS
from egot2.synthetic import fho
from tests.twin import make_twin

SPLITS = {"train": "train", "val": "val", "test": "test_unannotated"}
WINDOW_KEYS = {"unique_id", "video_uid", "parent_start_sec", "parent_end_sec", "parent_start_frame",
               "parent_end_frame", "clip_uid", "clip_id", "clip_start_sec", "clip_end_sec", "clip_start_frame",
               "clip_end_frame"}
POSITIVE_KEYS = WINDOW_KEYS | {"state_change", "parent_pnr_frame", "clip_pnr_frame"}
NEGATIVE_KEYS = WINDOW_KEYS | {"state_change", "pnr_frame"}
CLIP_FIELDS = ("clip_uid", "clip_id", "clip_start_sec", "clip_end_sec", "clip_start_frame", "clip_end_frame")
LTA_KEYS = {"video_uid", "clip_uid", "clip_id", "clip_parent_start_sec", "clip_parent_end_sec",
            "clip_parent_start_frame", "clip_parent_end_frame", "interval_start_sec", "interval_end_sec",
            "interval_start_frame", "interval_end_frame", "action_clip_start_sec", "action_clip_end_sec",
            "action_clip_start_frame", "action_clip_end_frame", "action_idx"}
LTA_LABEL_KEYS = {"verb", "noun", "verb_label", "noun_label"}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    raw_dir, _ = make_twin(tmp_path_factory.mktemp("twin"), size="tiny", seed=0, tasks=FHO_TASKS)
    return raw_dir


def _load(raw: Path, name: str) -> dict:
    return json.loads((raw / "v1" / "annotations" / name).read_text())


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _lta_clips(raw: Path) -> dict:
    """clip_uid -> (split, clip-level fields) from the LTA files."""
    clips = {}
    for split, suffix in SPLITS.items():
        for item in _load(raw, f"fho_lta_{suffix}.json")["clips"]:
            clips[item["clip_uid"]] = (split, item)
    return clips


def test_top_level_objects(raw):
    for kind in ("fho_oscc-pnr", "fho_lta"):
        for split, suffix in SPLITS.items():
            document = _load(raw, f"{kind}_{suffix}.json")
            assert set(document) == {"version", "date", "description", "split", "clips"}
            assert all(isinstance(document[key], str) for key in ("version", "date", "description", "split"))
            assert document["split"] == suffix and isinstance(document["clips"], list) and document["clips"]


def test_oscc_pnr_windows_match_the_schema(raw):
    lta = _lta_clips(raw)
    info = {path.stem: media.video_info(path) for path in (raw / "v1" / "full_scale").glob("*.mp4")}
    seen = set()
    for split, suffix in SPLITS.items():
        items = _load(raw, f"fho_oscc-pnr_{suffix}.json")["clips"]
        counts = defaultdict(int)
        for item in items:
            assert item["unique_id"] not in seen
            seen.add(item["unique_id"])
            assert isinstance(item["unique_id"], str) and isinstance(item["video_uid"], str)
            start, end = item["parent_start_frame"], item["parent_end_frame"]
            assert _is_int(start) and _is_int(end) and end - start == 240
            assert item["parent_start_sec"] == start / 30 and item["parent_end_sec"] == end / 30
            assert isinstance(item["parent_start_sec"], float)
            video = info[item["video_uid"]]
            assert video["fps"] == 30 and 0 <= start and end <= video["num_frames"] - 1
            if split == "test":
                assert set(item) == WINDOW_KEYS  # unlabelled
            elif item["state_change"]:
                assert set(item) == POSITIVE_KEYS
                assert _is_int(item["parent_pnr_frame"]) and start <= item["parent_pnr_frame"] <= end
            else:
                assert set(item) == NEGATIVE_KEYS and item["pnr_frame"] is None and item["state_change"] is False
                assert all(item[field] is None for field in CLIP_FIELDS)
            counts["positive" if item.get("state_change") else "negative"] += 1
            if item["clip_uid"] is not None:
                # Positive and test windows lie inside their canonical clip; clip fields are parent fields shifted.
                clip_split, clip = lta[item["clip_uid"]]
                assert clip_split == split and clip["video_uid"] == item["video_uid"]
                assert item["clip_id"] == str(clip["clip_id"])
                offset = clip["clip_parent_start_frame"]
                assert (item["clip_start_frame"], item["clip_end_frame"]) == (start - offset, end - offset)
                assert item["clip_start_sec"] == item["clip_start_frame"] / 30
                assert clip["clip_parent_start_frame"] <= start and end < clip["clip_parent_end_frame"]
                if "clip_pnr_frame" in item:
                    assert item["clip_pnr_frame"] == item["parent_pnr_frame"] - offset
        if split != "test":
            assert counts["positive"] >= 2 and counts["negative"] >= 2, counts
        else:
            assert counts["negative"] >= 4 and all(item["clip_uid"] for item in items)
    answers = json.loads((raw / "twin_answers" / "fho_oscc-pnr_test.json").read_text())["clips"]
    test_ids = {item["unique_id"] for item in _load(raw, "fho_oscc-pnr_test_unannotated.json")["clips"]}
    assert {item["unique_id"] for item in answers} == test_ids
    assert 2 <= sum(item["state_change"] for item in answers) <= len(answers) - 2


def test_lta_actions_match_the_schema(raw):
    taxonomy = _load(raw, "fho_lta_taxonomy.json")
    by_clip = defaultdict(list)
    for split, suffix in SPLITS.items():
        for item in _load(raw, f"fho_lta_{suffix}.json")["clips"]:
            assert set(item) == (LTA_KEYS if split == "test" else LTA_KEYS | LTA_LABEL_KEYS)
            assert all(_is_int(item[key]) for key in LTA_KEYS if key.endswith(("_frame", "_idx", "clip_id")))
            assert all(isinstance(item[key], float) for key in LTA_KEYS if key.endswith("_sec"))
            if split != "test":
                assert 0 <= item["verb_label"] < 115 and 0 <= item["noun_label"] < 478
                assert taxonomy["verbs"][item["verb_label"]] == item["verb"]
                assert taxonomy["nouns"][item["noun_label"]] == item["noun"]
            by_clip[(split, item["clip_uid"])].append(item)
    windows = defaultdict(int)
    for (split, clip_uid), items in by_clip.items():
        info = media.video_info(raw / "v1" / "clips" / f"{clip_uid}.mp4")
        first = items[0]
        assert info["fps"] == 30 and not info["has_audio"]
        assert first["clip_parent_end_frame"] - first["clip_parent_start_frame"] == info["num_frames"]
        assert sorted(item["action_idx"] for item in items) == list(range(len(items)))
        assert len(items) >= 24
        windows[split] += len(items) - 20 - 2  # N = 2 observed, Z = 20 forecast actions
        for item in items:
            start, end = item["action_clip_start_frame"], item["action_clip_end_frame"]
            assert 0 <= start < end <= info["num_frames"] and end - start <= 240
            assert item["action_clip_start_sec"] == start / 30 and item["action_clip_end_sec"] == end / 30
            assert all(item[key] == first[key] for key in ("video_uid", "clip_id", "clip_parent_start_frame"))
    assert all(windows[split] >= 1 for split in SPLITS), windows


def test_taxonomy_is_v1_sized_with_the_real_traps(raw):
    taxonomy = _load(raw, "fho_lta_taxonomy.json")
    verbs, nouns = taxonomy["verbs"], taxonomy["nouns"]
    assert set(taxonomy) == {"verbs", "nouns"} and len(verbs) == 115 and len(nouns) == 478
    assert len(set(verbs)) == 115 and len(set(nouns)) == 478
    assert nouns[19].split("_(")[0] == nouns[20].split("_(")[0]
    assert nouns[85] == "chip_(wood'_metal)," and nouns[319] == "pot"
    heads = lambda names: {name.split("_(")[0] for name in names}  # noqa: E731
    assert heads(verbs) & heads(nouns)  # some words are both a verb and a noun, as in the real list
    for index, name, _ in fho.VERBS.values():
        assert verbs[index] == name
    assert taxonomy == fho.fho_taxonomy()


def test_canonical_clip_is_a_frame_range_of_its_video(raw):
    split, clip = next(iter(_lta_clips(raw).values()))
    full = raw / "v1" / "full_scale" / f"{clip['video_uid']}.mp4"
    cut = raw / "v1" / "clips" / f"{clip['clip_uid']}.mp4"
    checked = 0
    for k in range(0, 600, 40):
        clip_frame = media.read_video_frames(cut, k, k + 1)[0].astype(int)
        parent = clip["clip_parent_start_frame"] + k
        window = media.read_video_frames(full, parent - 3, parent + 4).astype(int)
        if np.abs(np.diff(window, axis=0)).mean() < 1.2:
            continue  # a still moment: after lossy encoding its neighbouring frames are as close as the match
        differences = np.abs(window - clip_frame).mean(axis=(1, 2, 3))
        # Both files are lossy encodes of the same pixels: the matching parent frame is the closest one.
        assert np.argmin(differences) == 3 and differences[3] < 5, (k, differences)
        checked += 1
    assert checked >= 5


def _object_brightness(frame: np.ndarray) -> float:
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
    saturated = hsv[..., 1] > 128
    return float(np.median(hsv[..., 2][saturated])) if saturated.sum() > 20 else float("nan")


def test_state_change_is_visible_at_the_pnr_frame(raw):
    drops, controls = [], []
    for suffix in ("train", "val"):
        for item in _load(raw, f"fho_oscc-pnr_{suffix}.json")["clips"]:
            video = raw / "v1" / "full_scale" / f"{item['video_uid']}.mp4"
            if item["state_change"]:
                pnr = item["parent_pnr_frame"]
                frames = media.read_video_frames(video, pnr - 12, pnr + 13)
                drops.append(_object_brightness(frames[0]) - _object_brightness(frames[-1]))
            else:
                middle = (item["parent_start_frame"] + item["parent_end_frame"]) // 2
                frames = media.read_video_frames(video, middle - 12, middle + 13)
                controls.append(_object_brightness(frames[0]) - _object_brightness(frames[-1]))
    # The object darkens across annotated PNR frames, not across negative midpoints. Label noise, the hand in front
    # of the object and an object leaving soon after its change allow a few misses among the tiny twin's positives.
    assert np.mean(np.array(drops) > 40) >= 0.6, drops
    assert np.mean(np.array(controls) > 40) <= 0.25, controls


def _digests(root: Path) -> dict:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and (path.suffix == ".json" or "v1" in path.parts)}


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_data(raw, tmp_path):
    fho.synthesize_fho(tmp_path / "again", "tiny", 0, FHO_TASKS, workers=2)
    again = _digests(tmp_path / "again")
    # 7 annotation files, 2 answer files, 3 full-scale videos, 3 clips; the shared twin may hold other tasks too.
    assert len(again) == 15
    assert {name: digest for name, digest in _digests(raw).items() if name in again} == again
    # A different seed gives different annotations and different pixels.
    other = [fho.plan_video(1, index, "tiny") for index in range(3)]
    same = [fho.plan_video(0, index, "tiny") for index in range(3)]
    assert [plan.windows for plan in other] != [plan.windows for plan in same]
    assert other[0].video_uid != same[0].video_uid
    assert not np.array_equal(fho.render_video(other[0])[:30], fho.render_video(same[0])[:30])


def test_task_subsets_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown FHO tasks"):
        fho.synthesize_fho(tmp_path, "tiny", 0, ("pnr", "asd"))
    with pytest.raises(ValueError, match="unknown size"):
        fho.synthesize_fho(tmp_path, "huge", 0, ("pnr",))
    plan = fho.plan_video(0, 1, "tiny")
    assert fho.plan_video(0, 1, "tiny") == plan  # independent of the other videos and of call order
    assert plan.split == "val" and plan.num_clip_actions >= 24
