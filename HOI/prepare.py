"""Turn an Ego4D FHO download (or its synthetic twin) into the training layouts of the HOI tasks.

Input: the Ego4D CLI layout ``raw_dir/v1/{annotations,full_scale,clips}`` (``raw_dir`` may also be the ``v1``
folder itself). Output under ``out_dir``::

    fho/annotations/fho_oscc-pnr_{train,val,test_unannotated}.json     byte copies, official names (not renamed
                                                                        to train/val/test.json: our loaders read
                                                                        the official names)
    fho/pos_clips/<unique_id>/<abs_frame>.jpeg    windows with a PNR frame (train/val)
    fho/neg_clips/<unique_id>/<abs_frame>.jpeg    windows without one (train/val)
    fho/test_clips/<unique_id>/<abs_frame>.jpeg   every test window
    lta/annotations/fho_lta_{train,val,test_unannotated}.json, fho_lta_taxonomy.json   byte copies
    lta/clips/<clip_uid>.mp4                      canonical clips re-encoded for SlowFast

Frame folders (PNR/OSCC, tasks ``pnr``/``oscc``): frames ``parent_start_frame … parent_end_frame`` *inclusive* of
the full-scale video, named by their absolute frame number (no zero padding), JPEG quality 95. Frames are resized
with ``INTER_AREA`` so that the shorter side is 384 — but never upscaled: a video whose shorter side is already
384 or less keeps its size (the PNR/OSCC dataset resizes every frame to 225×225 anyway). Each full-scale video
is decoded once: its windows are grouped into runs of overlapping or nearby windows (gaps under
:data:`DECODE_GAP` frames), one sequential decode per run, and a frame shared by several windows is encoded once.

Clips (tasks ``ar``/``lta``): what the official ``resize_clips.sh`` does — H.264 (CRF 28), no audio, the source
frame rate, shorter side 320 (never upscaled), odd dimensions padded to even with black.

Every output is idempotent and resumable (``egot2.jobs`` conventions): a window folder or clip is built in a
hidden staging place, moved into place complete, then certified by a ``.<name>.done`` marker holding the
fingerprint of its inputs; a re-run skips certified outputs (bytes and mtimes unchanged) and rebuilds anything
half-written. Work runs in parallel over videos/clips with a progress bar.

Bad input stops the run before any work with an error naming the file and the field: a missing annotation file or
video (``FileNotFoundError``), a missing or mistyped field, a label outside the taxonomy, or a window that lies
outside its video (``ValueError``, with the video's frame count and duration). Windows are never clamped here.
"""
from __future__ import annotations

import json
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import cv2
import numpy as np

from egot2 import media
from egot2.jobs import (file_identity, fingerprint, is_done, mark_done, remove_stale_staging, run_jobs,
                        staging_dir, write_bytes_atomic)

__all__ = [
    "HOI_TASKS",
    "SPLIT_FILES",
    "FRAME_SHORT_SIDE",
    "CLIP_SHORT_SIDE",
    "DECODE_GAP",
    "find_download",
    "resize_short_side",
    "prepare_fho",
]

HOI_TASKS = ("pnr", "oscc", "ar", "lta")
SPLIT_FILES = {"train": "train", "val": "val", "test": "test_unannotated"}
FRAME_SHORT_SIDE = 384
CLIP_SHORT_SIDE = 320
JPEG_QUALITY = 95
CLIP_CRF = 28
DECODE_GAP = 300            # frames: windows closer than this share one sequential decode
_FORMAT = 1                 # bump when the output format changes: every fingerprint changes with it


# ---------------------------------------------------------------------------------------------------- geometry

def resize_short_side(frame: np.ndarray, short_side: int) -> np.ndarray:
    """Resize so that the shorter side equals ``short_side`` (``INTER_AREA``, aspect kept); never upscale.

    Args:
        frame: uint8 ``[H, W, 3]``.

    Returns:
        uint8 ``[H', W', 3]`` with ``min(H', W') == min(min(H, W), short_side)``.
    """
    height, width = frame.shape[:2]
    short = min(height, width)
    if short <= short_side:
        return frame
    scale = short_side / short
    if height <= width:
        size = (max(short_side, int(round(width * scale))), short_side)
    else:
        size = (short_side, max(short_side, int(round(height * scale))))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _pad_even(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return frame
    return cv2.copyMakeBorder(frame, 0, height % 2, 0, width % 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))


# ------------------------------------------------------------------------------------------------- annotations

def find_download(raw_dir) -> Path:
    """The ``v1`` folder of a download: ``raw_dir/v1`` if it exists, else ``raw_dir`` itself if it has annotations.

    Raises:
        FileNotFoundError: neither holds an ``annotations`` folder.
    """
    raw_dir = Path(raw_dir)
    for candidate in (raw_dir / "v1", raw_dir):
        if (candidate / "annotations").is_dir():
            return candidate
    raise FileNotFoundError(f"{raw_dir}: no Ego4D download here (expected {raw_dir / 'v1' / 'annotations'}/, the "
                            f"layout the Ego4D CLI writes)")


def _read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    try:
        return json.loads(path.read_bytes())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def _clips_of(path: Path, document) -> list[dict]:
    if not isinstance(document, dict) or not isinstance(document.get("clips"), list):
        raise ValueError(f"{path}: field 'clips' missing or not a list (expected an object with a 'clips' array)")
    return document["clips"]


def _field(path: Path, position: int, item: dict, name: str, types, nullable: bool = False):
    """``item[name]``, checked; errors name the file, the item and the field."""
    if not isinstance(item, dict):
        raise ValueError(f"{path}: clips[{position}] is not an object")
    label = item.get("unique_id") or item.get("clip_uid") or "?"
    if name not in item:
        raise ValueError(f"{path}: clips[{position}] ({label}): field '{name}' is missing")
    value = item[name]
    if value is None and nullable:
        return None
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ValueError(f"{path}: clips[{position}] ({label}): field '{name}' must be {types}, got {value!r}")
    if not isinstance(value, types):
        raise ValueError(f"{path}: clips[{position}] ({label}): field '{name}' must be "
                         f"{getattr(types, '__name__', types)}, got {value!r}")
    return value


@dataclass(frozen=True)
class _Window:
    unique_id: str
    video_uid: str
    start: int           # parent_start_frame
    end: int             # parent_end_frame (inclusive)
    folder: str          # pos_clips / neg_clips / test_clips
    source: str          # annotation file, for error messages


def _oscc_windows(annotation_dir: Path) -> tuple[list[_Window], dict[str, bytes]]:
    windows, raw = [], {}
    for split, suffix in SPLIT_FILES.items():
        path = annotation_dir / f"fho_oscc-pnr_{suffix}.json"
        document = _read_json(path)
        raw[path.name] = path.read_bytes()
        seen: set[str] = set()
        for position, item in enumerate(_clips_of(path, document)):
            unique_id = _field(path, position, item, "unique_id", str)
            if unique_id in seen:
                raise ValueError(f"{path}: clips[{position}]: unique_id {unique_id} appears twice")
            seen.add(unique_id)
            video_uid = _field(path, position, item, "video_uid", str)
            start = _field(path, position, item, "parent_start_frame", (int, float))
            end = _field(path, position, item, "parent_end_frame", (int, float))
            if split == "test":
                folder = "test_clips"
            else:
                _field(path, position, item, "state_change", bool)
                pnr = item.get("parent_pnr_frame", item.get("pnr_frame"))
                folder = "neg_clips" if pnr is None else "pos_clips"
            if int(end) < int(start):
                raise ValueError(f"{path}: clips[{position}] ({unique_id}): parent_end_frame {end} is before "
                                 f"parent_start_frame {start}")
            windows.append(_Window(unique_id, video_uid, int(start), int(end), folder, path.name))
    return windows, raw


def _lta_items(annotation_dir: Path) -> tuple[list[tuple[str, int, dict]], dict[str, bytes]]:
    raw: dict[str, bytes] = {}
    taxonomy_path = annotation_dir / "fho_lta_taxonomy.json"
    taxonomy = _read_json(taxonomy_path)
    raw[taxonomy_path.name] = taxonomy_path.read_bytes()
    sizes = {}
    for key in ("verbs", "nouns"):
        if not isinstance(taxonomy, dict) or not isinstance(taxonomy.get(key), list):
            raise ValueError(f"{taxonomy_path}: field '{key}' missing or not a list")
        sizes[key] = len(taxonomy[key])
    items = []
    for split, suffix in SPLIT_FILES.items():
        path = annotation_dir / f"fho_lta_{suffix}.json"
        document = _read_json(path)
        raw[path.name] = path.read_bytes()
        for position, item in enumerate(_clips_of(path, document)):
            _field(path, position, item, "clip_uid", str)
            _field(path, position, item, "action_idx", int)
            start = _field(path, position, item, "action_clip_start_sec", (int, float))
            end = _field(path, position, item, "action_clip_end_sec", (int, float))
            if end < start:
                raise ValueError(f"{path}: clips[{position}] ({item['clip_uid']}): action_clip_end_sec {end} is "
                                 f"before action_clip_start_sec {start}")
            if split != "test":
                for name, key in (("verb_label", "verbs"), ("noun_label", "nouns")):
                    label = _field(path, position, item, name, int)
                    if not 0 <= label < sizes[key]:
                        raise ValueError(f"{path}: clips[{position}] ({item['clip_uid']}): {name} {label} is outside "
                                         f"the taxonomy ({sizes[key]} {key} in {taxonomy_path.name}; EgoT2 uses "
                                         f"the v1 taxonomy: 115 verbs, 478 nouns)")
            items.append((path.name, position, item))
    return items, raw


def _copy_annotations(raw: dict[str, bytes], destination: Path) -> None:
    for name, data in sorted(raw.items()):
        write_bytes_atomic(destination / name, data)


# -------------------------------------------------------------------------------------------------- frame jobs

def _window_fingerprint(video: Path, window: _Window) -> str:
    return fingerprint("fho-frames", _FORMAT, file_identity(video), window.start, window.end, FRAME_SHORT_SIDE,
                       JPEG_QUALITY)


def _decode_runs(windows: list[dict]) -> list[list[dict]]:
    """Group windows (sorted by start) into runs that one sequential decode serves."""
    runs: list[list[dict]] = []
    for window in sorted(windows, key=lambda w: (w["start"], w["end"], w["folder"])):
        if runs and window["start"] <= max(w["end"] for w in runs[-1]) + DECODE_GAP:
            runs[-1].append(window)
        else:
            runs.append([window])
    return runs


def _extract_video(job: dict) -> int:
    """Write the frame folders of one full-scale video's pending windows; returns how many were built."""
    video = Path(job["video"])
    pending = [w for w in job["windows"] if not is_done(w["folder"], w["fingerprint"])]
    built = 0
    for run in _decode_runs(pending):
        first, last = run[0]["start"], max(w["end"] for w in run)
        open_windows: dict[str, tuple] = {}      # folder -> (staging context, staging path, window)
        try:
            frame_index = first
            for frame in media.iter_video_frames(video, first, last + 1):
                resized = None
                for window in run:
                    if window["start"] == frame_index:
                        context = staging_dir(window["folder"])
                        open_windows[window["folder"]] = (context, context.__enter__(), window)
                written: Optional[Path] = None
                for folder, (_, staging, window) in open_windows.items():
                    if not window["start"] <= frame_index <= window["end"]:
                        continue
                    target = staging / f"{frame_index}.jpeg"
                    if written is None:
                        resized = resize_short_side(frame, FRAME_SHORT_SIDE) if resized is None else resized
                        media.write_image(target, resized, quality=JPEG_QUALITY)
                        written = target
                    else:
                        shutil.copyfile(written, target)
                for folder in [f for f, (_, _, w) in open_windows.items() if w["end"] == frame_index]:
                    context, _, window = open_windows.pop(folder)
                    context.__exit__(None, None, None)
                    mark_done(folder, window["fingerprint"])
                    built += 1
                frame_index += 1
            if frame_index <= last:
                short = [w for w in run if w["end"] >= frame_index]
                raise media.MediaError(
                    f"{video}: decoding stopped at frame {frame_index - 1}, but window {short[0]['unique_id']} "
                    f"({short[0]['source']}) needs frames {short[0]['start']}..{short[0]['end']}")
        except BaseException:
            error = sys.exc_info()
            for context, _, _ in open_windows.values():
                context.__exit__(*error)
            raise
    return built


def _check_video_windows(video: Path, windows: list[_Window]) -> None:
    if not video.is_file():
        example = windows[0]
        raise FileNotFoundError(f"{video}: full-scale video not found (video_uid {example.video_uid}, needed by "
                                f"{len(windows)} window(s) of {example.source}, e.g. {example.unique_id})")
    info = media.video_info(video)
    for window in windows:
        if window.start < 0 or window.end > info["num_frames"] - 1:
            raise ValueError(
                f"{window.source}: window {window.unique_id} (parent_start_frame {window.start}, parent_end_frame "
                f"{window.end}) lies outside its video {video}, which has {info['num_frames']} frames "
                f"(frames 0..{info['num_frames'] - 1}, {info['duration']:.2f} s at {info['fps']:g} fps)")


# --------------------------------------------------------------------------------------------------- clip jobs

def _resize_clip(job: dict) -> bool:
    """Re-encode one canonical clip at short side 320 (never upscaled), even size, no audio; True when built."""
    source, target = Path(job["source"]), Path(job["target"])
    if is_done(target, job["fingerprint"]):
        return False
    frames = [_pad_even(resize_short_side(frame, CLIP_SHORT_SIDE)) for frame in media.iter_video_frames(source)]
    if len(frames) != job["num_frames"]:
        raise media.MediaError(f"{source}: decoded {len(frames)} frames, the container says {job['num_frames']}")
    media.write_video(target, np.stack(frames), fps=job["fps"], crf=CLIP_CRF)
    mark_done(target, job["fingerprint"])
    return True


def _check_clip(clip: Path, clip_uid: str, items: list[tuple[str, int, dict]]) -> dict:
    if not clip.is_file():
        source, position, _ = items[0]
        raise FileNotFoundError(f"{clip}: canonical clip not found (clip_uid {clip_uid}, needed by {len(items)} "
                                f"action(s), e.g. {source} clips[{position}])")
    info = media.video_info(clip)
    tolerance = 1.0 / info["fps"]
    for source, position, item in items:
        if item["action_clip_start_sec"] < 0 or item["action_clip_end_sec"] > info["duration"] + tolerance:
            raise ValueError(
                f"{source}: clips[{position}] ({clip_uid}, action_idx {item['action_idx']}): action window "
                f"{item['action_clip_start_sec']}..{item['action_clip_end_sec']} s (action_clip_start_sec/"
                f"action_clip_end_sec) lies outside the clip {clip}, which lasts {info['duration']:.2f} s "
                f"({info['num_frames']} frames)")
    return info


# ------------------------------------------------------------------------------------------------------- entry

def prepare_fho(raw_dir, out_dir, tasks: Iterable[str] = HOI_TASKS, workers: int = 1,
                progress: Optional[bool] = None) -> dict:
    """Build the HOI training layouts from an FHO download.

    Args:
        raw_dir: the download root (``raw_dir/v1/...``) or its ``v1`` folder.
        out_dir: the data root of the HOI tasks (``fho/`` and ``lta/`` are written below it).
        tasks: any of ``pnr, oscc`` (frame folders of the oscc-pnr windows) and ``ar, lta`` (320p clips).
        workers: parallel processes (videos/clips are the units of work); results do not depend on it.
        progress: show progress bars (None: only on a terminal).

    Returns:
        counts of what this run built and skipped: ``{"windows_built", "windows_total", "clips_built",
        "clips_total"}``.

    Raises:
        FileNotFoundError: an annotation file, full-scale video or clip is missing.
        ValueError: an annotation field is missing or wrong, a label is outside the taxonomy, or a window lies
            outside its video.
    """
    tasks = tuple(tasks)
    unknown = sorted(set(tasks) - set(HOI_TASKS))
    if unknown:
        raise ValueError(f"prepare_fho: unknown task(s) {unknown}; choose from {','.join(HOI_TASKS)}")
    download = find_download(raw_dir)
    annotation_dir = download / "annotations"
    out_dir = Path(out_dir)
    summary = {"windows_built": 0, "windows_total": 0, "clips_built": 0, "clips_total": 0}

    if set(tasks) & {"pnr", "oscc"}:
        windows, raw = _oscc_windows(annotation_dir)
        by_video: dict[str, list[_Window]] = defaultdict(list)
        for window in windows:
            by_video[window.video_uid].append(window)
        jobs = []
        for video_uid in sorted(by_video):
            video = download / "full_scale" / f"{video_uid}.mp4"
            _check_video_windows(video, by_video[video_uid])
            jobs.append({"video": str(video), "windows": [
                {"unique_id": w.unique_id, "source": w.source, "start": w.start, "end": w.end,
                 "folder": str(out_dir / "fho" / w.folder / w.unique_id),
                 "fingerprint": _window_fingerprint(video, w)} for w in by_video[video_uid]]})
        _copy_annotations(raw, out_dir / "fho" / "annotations")
        for folder in ("pos_clips", "neg_clips", "test_clips"):
            remove_stale_staging(out_dir / "fho" / folder)
        built = run_jobs(_extract_video, jobs, workers=workers, desc="fho windows", progress=progress)
        summary["windows_built"], summary["windows_total"] = sum(built), len(windows)

    if set(tasks) & {"ar", "lta"}:
        items, raw = _lta_items(annotation_dir)
        by_clip: dict[str, list] = defaultdict(list)
        for entry in items:
            by_clip[entry[2]["clip_uid"]].append(entry)
        jobs = []
        for clip_uid in sorted(by_clip):
            source = download / "clips" / f"{clip_uid}.mp4"
            info = _check_clip(source, clip_uid, by_clip[clip_uid])
            target = out_dir / "lta" / "clips" / f"{clip_uid}.mp4"
            jobs.append({"source": str(source), "target": str(target), "num_frames": info["num_frames"],
                         "fps": int(round(info["fps"])),
                         "fingerprint": fingerprint("lta-clip", _FORMAT, file_identity(source), CLIP_SHORT_SIDE,
                                                    CLIP_CRF)})
        _copy_annotations(raw, out_dir / "lta" / "annotations")
        built = run_jobs(_resize_clip, jobs, workers=workers, desc="lta clips", progress=progress)
        summary["clips_built"], summary["clips_total"] = sum(built), len(jobs)
    return summary
