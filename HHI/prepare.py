"""Turn a raw Ego4D social download (real, or the synthetic twin) into the training layouts of LAM, TTM and ASD.

Input (``raw_dir``, as the Ego4D CLI lays it out; ``raw_dir`` may also point at its ``v1`` folder)::

    v1/annotations/av_train.json, av_val.json          AV/social annotations (hhi §1.1)
    v1/annotations/social_splits/{train,val,test,full}.list
                                                       split lists of the social repo; derived from the
                                                       annotation files (with a warning) when absent
    v1/clips/<clip_uid>.mp4                            clip videos with audio
    v1/social_test/final_test_data/, seg_info.json     TTM challenge test release (optional)
    v1/social_test/videos_challenge/                   LAM challenge test release (optional)

Output (``out_dir``; names exactly as hhi §1.2, §2.1, §3.1, §4.1)::

    social/video_imgs/<clip_uid>/img_%05d.jpg   every frame of every clip in av_train/av_val, numbered from 1
                                                (annotation frame f = img_f), native resolution, JPEG quality 95
                                                (close to ffmpeg -qscale:v 2)
    social/wave/<clip_uid>.wav                  16 kHz mono 16-bit PCM of the same clips
    social/json_original/<clip_uid>/<track_id>.json   per-track records of persons 1..N (hhi §1.4)
    social/json/av.json                         train and val annotations merged (train object, val videos appended)
    ttm/result_TTM/<clip_uid>.json, ttm/split/*.list, ttm/final_test_data/, ttm/seg_info.json
    lam/result_LAM/<clip_uid>.json, lam/split/*.list, lam/videos_challenge/
    asd/ego4d/csv/active_speaker_{train,val}.csv, asd/ego4d/bbox/<clip_uid>:<track_id>:<chunk>.json, asd/split/
    {lam,ttm,asd}/video_imgs, {lam,ttm,asd}/wave, {lam,ttm}/json_original, {lam,ttm}/json
                                                relative symlinks into social/ (frames and audio are stored once)

Label construction (hhi §1.4). ``label_mode="official"`` (default) does what the official builders do: LAM
segments are every ``social_segments_looking`` entry with a non-null person; a TTM segment gets ``tags`` (positive)
iff its ``target`` is not null. ``label_mode="is_at_me"`` is the correction argued in social-interactions issue #24:
LAM keeps only ``is_at_me`` looking segments and TTM is positive iff ``is_at_me``. In both modes every LAM/TTM
record also carries the annotation's ``is_at_me`` flag as an extra key (the official loaders ignore extra keys), so
a dataset can switch label mode without preparing again.

Deviations from the official scripts, on purpose: files are written whole and atomically (the official writers
append, so a re-run produced invalid JSON); a clip without looking or talking segments gets an empty list file
instead of no file; duplicate track ids inside a clip are merged into one file.

Idempotent and resumable: frame folders and wavs are built in a staging folder, moved into place and certified by
a done marker holding a fingerprint of the input video (see :mod:`egot2.jobs`); everything else is regenerated in
memory and written only when its bytes change. A re-run is a no-op that keeps every byte and mtime; a killed run
resumes where it stopped.
"""
from __future__ import annotations

import json
import logging
import shutil
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from egot2 import media
from egot2.jobs import (build_once, file_identity, fingerprint, is_done, mark_done, relative_symlink,
                        remove_stale_staging, run_jobs, write_bytes_atomic, write_json_atomic, write_text_atomic)

__all__ = ["SOCIAL_TASKS", "LABEL_MODES", "prepare_social", "lam_segments", "ttm_segments", "track_records",
           "asd_chunks", "load_av_annotations"]

log = logging.getLogger(__name__)

SOCIAL_TASKS = ("lam", "ttm", "asd")
LABEL_MODES = ("official", "is_at_me")
SPLITS = ("train", "val", "test", "full")
JPEG_QUALITY = 95
SAMPLE_RATE = 16000
ASD_CHUNK = 300  # frames per ASD track chunk (TalkNet preprocessing)
ASD_FPS = 30.0
_FORMAT_VERSION = 1  # bump when the bytes prepare writes for the same input change


# --------------------------------------------------------------------------------------------------------------
# Reading and checking the annotations.


def _need(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object, found {type(obj).__name__}")
    if key not in obj:
        raise ValueError(f"{where}: missing field '{key}'")
    return obj[key]


def _need_list(obj: Any, key: str, where: str, allow_null: bool = False) -> list:
    value = _need(obj, key, where)
    if value is None and allow_null:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where}: field '{key}' must be a list, found {type(value).__name__}")
    return value


def _check_clip(clip: dict, where: str, need_voice: bool, label_mode: str) -> None:
    """Fail early, naming the file, clip and field, when a field prepare relies on is missing."""
    uid = _need(clip, "clip_uid", where)
    where = f"{where}: clip {uid}"
    persons = _need_list(clip, "persons", where)
    for k, person in enumerate(persons):
        here = f"{where}: persons[{k}]"
        _need(person, "person_id", here)
        if k == 0:
            continue
        for j, path in enumerate(_need_list(person, "tracking_paths", here)):
            there = f"{here}.tracking_paths[{j}]"
            _need(path, "track_id", there)
            for r, box in enumerate(_need_list(path, "track", there)):
                for key in ("frame", "x", "y", "width", "height"):
                    _need(box, key, f"{there}.track[{r}]")
        if need_voice:
            for j, segment in enumerate(_need_list(person, "voice_segments", here, allow_null=True)):
                for key in ("start_frame", "end_frame"):
                    _need(segment, key, f"{here}.voice_segments[{j}]")
    for name in ("social_segments_looking", "social_segments_talking"):
        keys = ("person", "start_frame", "end_frame") + (("target",) if name.endswith("talking") else ())
        keys += ("is_at_me",) if label_mode == "is_at_me" else ()
        for j, segment in enumerate(_need_list(clip, name, where, allow_null=True)):
            for key in keys:
                _need(segment, key, f"{where}: {name}[{j}]")


def load_av_annotations(annotation_dir, need_voice: bool = True,
                        label_mode: str = "official") -> "OrderedDict[str, tuple[str, dict, Path]]":
    """Read ``av_train.json`` and ``av_val.json`` and check every field prepare uses.

    Returns:
        ``clip_uid -> (source split "train"/"val", clip object, annotation file)``, in file order.

    Raises:
        FileNotFoundError: an annotation file is missing.
        ValueError: a file is not valid JSON or lacks a field (the message names the file, clip and field).
    """
    annotation_dir = Path(annotation_dir)
    clips: "OrderedDict[str, tuple[str, dict, Path]]" = OrderedDict()
    for split in ("train", "val"):
        path = annotation_dir / f"av_{split}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: AV/social annotation file not found (Ego4D download: "
                                    f"--datasets annotations)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        for v, video in enumerate(_need_list(data, "videos", str(path))):
            for c, clip in enumerate(_need_list(video, "clips", f"{path}: videos[{v}]")):
                _check_clip(clip, f"{path}: videos[{v}].clips[{c}]", need_voice, label_mode)
                clips[clip["clip_uid"]] = (split, clip, path)
    return clips


def _is_camera_wearer(index: int, person: dict) -> bool:
    # The social scripts skip persons[0]; the TalkNet script skips person_id "camera_wearer". Honour both.
    return index == 0 or person.get("person_id") == "camera_wearer" or person.get("camera_wearer") is True


# --------------------------------------------------------------------------------------------------------------
# Pure label/record builders (hhi §1.4, §4.1).


def track_records(clip: dict) -> "OrderedDict[str, list[dict]]":
    """Per-track records of persons 1..N: ``track_id -> [{clip_uid, frameNumber, Person ID, x, y, height, width}]``."""
    uid = clip["clip_uid"]
    tracks: "OrderedDict[str, list[dict]]" = OrderedDict()
    for person in clip["persons"][1:]:
        for path in person["tracking_paths"]:
            records = tracks.setdefault(str(path["track_id"]), [])
            for box in path["track"]:
                records.append({"clip_uid": uid, "frameNumber": box["frame"], "Person ID": person["person_id"],
                                "x": box["x"], "y": box["y"], "height": box["height"], "width": box["width"]})
    return tracks


def lam_segments(clip: dict, label_mode: str = "official") -> list[dict]:
    """``result_LAM`` records ``{label (person id str), start_frame, end_frame, is_at_me}`` of one clip."""
    records = []
    for segment in clip.get("social_segments_looking") or []:
        if segment["person"] is None:
            continue
        if label_mode == "is_at_me" and not segment.get("is_at_me"):
            continue
        records.append({"label": segment["person"], "start_frame": segment["start_frame"],
                        "end_frame": segment["end_frame"], "is_at_me": segment.get("is_at_me")})
    return records


def ttm_segments(clip: dict, label_mode: str = "official") -> list[dict]:
    """``result_TTM`` records ``{label (person id int), [tags], start_frame, end_frame, is_at_me}`` of one clip.

    ``tags`` (the target's id as int, 0 when the target is missing) is present exactly for positives: a non-null
    target in the official mode, ``is_at_me`` in the corrected mode.
    """
    records = []
    for segment in clip.get("social_segments_talking") or []:
        if segment["person"] is None:
            continue
        record = {"label": _person_number(segment["person"], clip, "person")}
        target = segment["target"]
        positive = bool(segment.get("is_at_me")) if label_mode == "is_at_me" else target is not None
        if positive:
            record["tags"] = _person_number(target, clip, "target") if target is not None else 0
        record.update(start_frame=segment["start_frame"], end_frame=segment["end_frame"],
                      is_at_me=segment.get("is_at_me"))
        records.append(record)
    return records


def _person_number(value: Any, clip: dict, field_name: str) -> int:
    try:
        return int(str(value).replace("'", ""))
    except ValueError:
        raise ValueError(f"clip {clip.get('clip_uid')}: social_segments_talking field '{field_name}' must be a "
                         f"numeric person id, found {value!r}") from None


def asd_chunks(clip: dict) -> tuple[list[list], dict]:
    """TalkNet's ASD lines and box files of one clip (hhi §4.1).

    Tracks of the camera wearer and ``visual_anchor`` tracks are skipped; a frame is speaking iff it lies in one of
    the person's voice segments (inclusive); a track is cut at list offsets 0, 300, … up to its frame-number span;
    a csv line is kept only for chunks with more than one record, a box file is written for every chunk.

    Returns:
        (csv rows ``[chunk_id, n, 30.0, labels, first_frame]``, ``{chunk_id: raw track records}``).
    """
    uid = clip["clip_uid"]
    speaking: dict = {}
    tracks: "OrderedDict[str, tuple[str, list]]" = OrderedDict()
    for index, person in enumerate(clip["persons"]):
        if _is_camera_wearer(index, person):
            continue
        pid = person["person_id"]
        frames = speaking.setdefault(pid, set())
        for segment in person.get("voice_segments") or []:
            frames.update(range(int(segment["start_frame"]), int(segment["end_frame"]) + 1))
        for path in person["tracking_paths"]:
            if "visual_anchor" in str(path["track_id"]):
                continue
            tracks[str(path["track_id"])] = (pid, path["track"])
    rows, boxes = [], {}
    for track_id, (pid, records) in tracks.items():
        if not records:
            continue
        labels = [int(int(r["frame"]) in speaking[pid]) for r in records]
        span = int(records[-1]["frame"]) - int(records[0]["frame"]) + 1
        for chunk, start in enumerate(range(0, span, ASD_CHUNK)):
            chunk_id = f"{uid}:{track_id}:{chunk}"
            piece = records[start:start + ASD_CHUNK]
            boxes[chunk_id] = piece
            if len(piece) > 1:
                rows.append([chunk_id, len(piece), ASD_FPS, labels[start:start + ASD_CHUNK], piece[0]["frame"]])
    return rows, boxes


def _csv_line(row: list) -> str:
    chunk_id, n, fps, labels, first = row
    return f"{chunk_id}\t{n}\t{fps}\t{labels}\t{first}\n"


# --------------------------------------------------------------------------------------------------------------
# Media extraction (one job per clip, runs in worker processes).


@dataclass(frozen=True)
class _MediaJob:
    clip_uid: str
    video: str
    frames_dir: str
    wav: str


def _extract_clip_media(job: _MediaJob) -> int:
    """Frames and audio of one clip; returns the number of frames on disk."""
    video = Path(job.video)
    if not video.is_file():
        raise FileNotFoundError(f"{video}: video of clip {job.clip_uid} not found (expected v1/clips/"
                                f"<clip_uid>.mp4 from the Ego4D 'clips' download)")
    identity = file_identity(video)

    def write_frames(folder: Path) -> None:
        count = 0
        for count, image in enumerate(media.iter_video_frames(video), start=1):
            media.write_image(folder / f"img_{count:05d}.jpg", image, quality=JPEG_QUALITY)
        if count == 0:
            raise media.MediaError(f"{video}: no frames decoded (clip {job.clip_uid})")

    build_once(job.frames_dir, fingerprint(_FORMAT_VERSION, "frames", identity, JPEG_QUALITY), write_frames)
    wav_print = fingerprint(_FORMAT_VERSION, "wave", identity, SAMPLE_RATE)
    if not is_done(job.wav, wav_print):
        media.extract_audio(video, job.wav, SAMPLE_RATE)
        mark_done(job.wav, wav_print)
    return sum(1 for _ in Path(job.frames_dir).glob("img_*.jpg"))


# --------------------------------------------------------------------------------------------------------------
# The whole step.


def _read_splits(annotation_dir: Path, clips: "OrderedDict[str, tuple]", warnings: Counter) -> dict:
    split_dir = annotation_dir / "social_splits"
    lists = {}
    for split in SPLITS:
        path = split_dir / f"{split}.list"
        if path.is_file():
            lists[split] = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(lists) == len(SPLITS):
        return lists
    log.warning("%s: split lists missing; deriving train/val from the annotation files (test empty)", split_dir)
    warnings["split lists derived from annotation files"] += 1
    lists = {split: [uid for uid, (source, _, _) in clips.items() if source == split] for split in ("train", "val")}
    lists["test"] = []
    lists["full"] = lists["train"] + lists["val"]
    return lists


def _tree_identity(folder: Path) -> list:
    return [[str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns]
            for path in sorted(folder.rglob("*")) if path.is_file()]


def _copy_tree(source: Path, destination: Path) -> None:
    def build(staging: Path) -> None:
        shutil.copytree(source, staging, dirs_exist_ok=True)

    build_once(destination, fingerprint(_FORMAT_VERSION, "copy", _tree_identity(source)), build)


def _seg_info_from_release(final_test_data: Path) -> dict:
    """Rebuild ``seg_info.json`` from a TTM test release (what the official ``pre_process.py`` computes)."""
    info = {}
    for segment in sorted(p for p in final_test_data.iterdir() if p.is_dir()):
        face = segment / "face"
        frame_list = sorted(int(p.stem) for p in face.glob("*.jpg")) if face.is_dir() else []
        samples, rate = media.read_wav(segment / "audio" / "aud.wav")
        frame_num = max(int(len(samples) / rate * 30 + 1), (max(frame_list) + 1) if frame_list else 0)
        info[segment.name] = {"frame_list": frame_list, "frame_num": frame_num}
    return info


def _sync_json_folder(folder: Path, files: "dict[str, Any]") -> None:
    """Make ``folder`` hold exactly these JSON files (extra ``*.json`` files from an older annotation are removed)."""
    for name, obj in files.items():
        write_json_atomic(folder / name, obj)
    if folder.is_dir():
        for path in folder.glob("*.json"):
            if path.name not in files:
                path.unlink()


def prepare_social(raw_dir, out_dir, tasks: Sequence[str] = SOCIAL_TASKS, workers: int = 1,
                   label_mode: str = "official", progress: Optional[bool] = None) -> dict:
    """Prepare the LAM/TTM/ASD training layouts from a raw social download (see the module docstring).

    Args:
        raw_dir: the download folder (holding ``v1/``), or its ``v1`` folder.
        out_dir: data root to write; ``DIR/lam``, ``DIR/ttm``, ``DIR/asd`` and the shared ``DIR/social`` appear.
        tasks: subset of ``("lam", "ttm", "asd")``.
        workers: processes extracting frames/audio in parallel.
        label_mode: ``"official"`` or ``"is_at_me"`` (see the module docstring).
        progress: show progress bars (None: only on a terminal).

    Returns:
        summary dict: ``clips``, ``frames`` (total), ``warnings`` (message -> count).

    Raises:
        FileNotFoundError: an annotation file or a clip video is missing (names it).
        ValueError: an annotation field is missing (names file, clip and field), or bad arguments.
    """
    unknown = sorted(set(tasks) - set(SOCIAL_TASKS))
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {list(SOCIAL_TASKS)}, got {list(tasks)}")
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {list(LABEL_MODES)}, got {label_mode!r}")
    raw = Path(raw_dir)
    v1 = raw / "v1" if (raw / "v1").is_dir() else raw
    annotation_dir = v1 / "annotations"
    out = Path(out_dir)
    social = out / "social"
    warnings: Counter = Counter()

    clips = load_av_annotations(annotation_dir, need_voice="asd" in tasks, label_mode=label_mode)
    splits = _read_splits(annotation_dir, clips, warnings)
    for split in ("train", "val"):
        missing = [uid for uid in splits[split] if uid not in clips]
        if missing:
            log.warning("%d clip(s) of the %s list have no annotation and are skipped, e.g. %s",
                        len(missing), split, missing[0])
            warnings[f"{split}.list clips without annotation (skipped)"] += len(missing)

    for folder in (social / "video_imgs", social / "wave", out / "ttm", out / "lam"):
        remove_stale_staging(folder)
    jobs = [_MediaJob(uid, str(v1 / "clips" / f"{uid}.mp4"), str(social / "video_imgs" / uid),
                      str(social / "wave" / f"{uid}.wav")) for uid in clips]
    frame_counts = dict(zip(clips, run_jobs(_extract_clip_media, jobs, workers=workers, desc="social clips",
                                            progress=progress)))

    tracks_root = social / "json_original"
    for uid, (_, clip, path) in clips.items():
        tracks = track_records(clip)
        empty = sum(1 for records in tracks.values() if not records)
        if empty:
            log.warning("%s: clip %s has %d track(s) without boxes", path, uid, empty)
            warnings["tracks without boxes"] += empty
        last = max((int(r["frameNumber"]) for records in tracks.values() for r in records), default=0)
        if last > frame_counts[uid]:
            log.warning("%s: clip %s annotates frame %d but the video has %d frames", path, uid, last,
                        frame_counts[uid])
            warnings["clips annotating frames beyond the video"] += 1
        _sync_json_folder(tracks_root / uid, {f"{track_id}.json": records for track_id, records in tracks.items()})
    for stale in [p for p in tracks_root.iterdir() if p.is_dir() and p.name not in clips]:
        shutil.rmtree(stale)
    merged_print = fingerprint(_FORMAT_VERSION, [file_identity(annotation_dir / f"av_{s}.json")
                                                 for s in ("train", "val")])
    if not is_done(social / "json" / "av.json", merged_print):
        merged = json.loads((annotation_dir / "av_train.json").read_text())
        merged["videos"] = merged["videos"] + json.loads((annotation_dir / "av_val.json").read_text())["videos"]
        write_json_atomic(social / "json" / "av.json", merged)
        mark_done(social / "json" / "av.json", merged_print)

    split_text = {split: "".join(uid + "\n" for uid in splits[split]) for split in SPLITS}
    for task in tasks:
        root = out / task
        relative_symlink(root / "video_imgs", social / "video_imgs")
        relative_symlink(root / "wave", social / "wave")
        if task in ("lam", "ttm"):
            relative_symlink(root / "json_original", tracks_root)
            relative_symlink(root / "json", social / "json")
        for split, text in split_text.items():
            write_text_atomic(root / "split" / f"{split}.list", text)

    if "lam" in tasks:
        _sync_json_folder(out / "lam" / "result_LAM",
                          {f"{uid}.json": lam_segments(clip, label_mode) for uid, (_, clip, _) in clips.items()})
    if "ttm" in tasks:
        _sync_json_folder(out / "ttm" / "result_TTM",
                          {f"{uid}.json": ttm_segments(clip, label_mode) for uid, (_, clip, _) in clips.items()})
    if "asd" in tasks:
        boxes_all: dict = {}
        for split in ("train", "val"):
            rows = []
            for uid in splits[split]:
                if uid not in clips:
                    continue
                clip_rows, boxes = asd_chunks(clips[uid][1])
                rows.extend(clip_rows)
                boxes_all.update(boxes)
            write_text_atomic(out / "asd" / "ego4d" / "csv" / f"active_speaker_{split}.csv",
                              "".join(_csv_line(row) for row in rows))
        bbox_dir = out / "asd" / "ego4d" / "bbox"
        for chunk_id, records in boxes_all.items():
            write_text_atomic(bbox_dir / f"{chunk_id}.json", json.dumps(records))
        for path in bbox_dir.glob("*.json"):
            if path.stem not in boxes_all:
                path.unlink()

    test_root = v1 / "social_test"
    if "ttm" in tasks:
        release = test_root / "final_test_data"
        if release.is_dir():
            _copy_tree(release, out / "ttm" / "final_test_data")
            seg_info = test_root / "seg_info.json"
            if seg_info.is_file():
                write_bytes_atomic(out / "ttm" / "seg_info.json", seg_info.read_bytes())
            else:
                write_json_atomic(out / "ttm" / "seg_info.json", _seg_info_from_release(release), sort_keys=True)
        else:
            log.warning("%s: no TTM test release; TTM --submit will not find its data", release)
            warnings["TTM test release missing"] += 1
    if "lam" in tasks:
        release = test_root / "videos_challenge"
        if release.is_dir():
            _copy_tree(release, out / "lam" / "videos_challenge")
        else:
            log.warning("%s: no LAM test release; LAM --submit will not find its data", release)
            warnings["LAM test release missing"] += 1
    return {"clips": len(clips), "frames": int(sum(frame_counts.values())), "warnings": dict(warnings)}
