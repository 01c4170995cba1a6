"""Shared pieces of the social (LAM / TTM / ASD) datasets: face tracks, split lists, ground truth, face crops.

Layout read here (what ``HHI/prepare.py`` writes under a data root, hhi spec §1.2)::

    <root>/<task>/video_imgs/<clip_uid>/img_%05d.jpg      frames; annotation frame f is img_{f:05d}.jpg (§1.6)
    <root>/<task>/wave/<clip_uid>.wav                      16 kHz mono
    <root>/<task>/json_original/<clip_uid>/<track_id>.json per-track box records (§1.4)
    <root>/lam/result_LAM/<clip_uid>.json                  LAM ground-truth segments
    <root>/ttm/result_TTM/<clip_uid>.json                  TTM segments
    <root>/<task>/split/{train,val,test}.list              clip uids

Track cleaning (:func:`clean_track`, §1.5) is the one function LAM, TTM and ASD share: invalid records are dropped,
x/y clamped at 0, corner boxes built, and gaps filled by linear interpolation of the four corners. Face crops cut
the int-truncated tight box (right/bottom are clipped by the slice, as numpy slicing did in the original) and are
resized bilinearly with OpenCV.

Label modes: ``"official"`` builds labels exactly as the official loaders (``is_at_me`` ignored; spec §10.1.1,
needed to reproduce published numbers and to match the released checkpoints); ``"is_at_me"`` uses the
``is_at_me`` flag ``HHI/prepare.py`` stores on every record (the correction argued in social-interactions #24):
a LAM segment counts only when ``is_at_me`` is true, a TTM segment is positive iff ``is_at_me`` is true.

Counted warnings: things the loaders survive (a missing or corrupt frame, an empty crop, a track without a valid
box, an empty wav window) are counted in a :class:`WarningCounter` owned by the dataset and logged once per kind.
Inside DataLoader worker processes each worker counts its own copy.
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import cv2
import numpy as np
import soundfile
import torch

from egot2 import media

__all__ = [
    "LABEL_MODES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FPS",
    "WarningCounter",
    "clean_track",
    "track_boxes",
    "read_json",
    "read_split",
    "load_clip_tracks",
    "read_lam_segments",
    "read_ttm_segments",
    "looking_identifiers",
    "frame_image_path",
    "crop_face",
    "read_face",
    "normalise_frames",
    "rms_normalise",
    "read_wav_window",
    "audio_window",
    "resolve_path",
]

log = logging.getLogger(__name__)

LABEL_MODES = ("official", "is_at_me")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
#: Frame rate of the extracted frames; audio time of annotation frame f is f / FPS seconds (§1.6).
FPS = 30


class WarningCounter(Counter):
    """Counts survivable data problems by kind and logs the first occurrence of each kind (naming the file)."""

    def warn(self, kind: str, detail: str = "") -> None:
        """Count one occurrence of ``kind``; log it when it is the first of its kind."""
        self[kind] += 1
        if self[kind] == 1:
            log.warning("%s%s (further cases are only counted)", kind, f": {detail}" if detail else "")

    def summary(self) -> dict:
        """``{kind: count}`` as a plain dict."""
        return dict(self)


# ---------------------------------------------------------------------------------------------------------------
# Paths and JSON
# ---------------------------------------------------------------------------------------------------------------


def resolve_path(override: Union[str, os.PathLike, None], default: Path) -> Path:
    """``default`` when ``override`` is empty, else ``override`` (a relative path is taken from the repository root).

    Args:
        override: a user-given path (``--img_path``) or ``""``/``None``.
        default: the path under the data root.
    """
    if override is None or str(override) == "":
        return Path(default)
    from egot2.config import repo_path  # noqa: PLC0415  (the data modules need no config otherwise)

    return repo_path(override)


def read_json(path: Union[str, os.PathLike], what: str = "JSON file") -> Any:
    """Parse a JSON file.

    Raises:
        FileNotFoundError: the file does not exist (names it).
        ValueError: the file is not valid JSON (names it, with line and column).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None


def read_split(path: Union[str, os.PathLike]) -> list[str]:
    """Clip uids of a split list (one per line; blank lines ignored; order kept; duplicates removed).

    Raises:
        FileNotFoundError: the list does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    uids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return list(dict.fromkeys(uids))


def _number(record: Mapping, key: str, where: str) -> float:
    if key not in record:
        raise ValueError(f"{where}: missing field '{key}'")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: field '{key}' must be a number, got {type(value).__name__} {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------------------------
# Tracks (§1.4, §1.5)
# ---------------------------------------------------------------------------------------------------------------


def clean_track(records: Sequence[Mapping], frame_key: str = "frameNumber", check_person: bool = True,
                sort: bool = False, source: str = "track") -> list[dict]:
    """Clean one face track and fill its gaps by linear interpolation (hhi spec §1.5).

    Records with width <= 0, height <= 0, frame number 0 or (with ``check_person``) an empty ``Person ID`` are
    dropped; x and y are clamped at 0 (right/bottom are not). If the surviving frame numbers leave gaps (last -
    first + 1 > count), every corner coordinate is interpolated linearly over each integer frame from the first to
    the last surviving frame; otherwise the records are kept as they are (so duplicate frame numbers survive, as in
    the original). Every output record is a copy of the track's first record with the frame number and box replaced.

    Args:
        records: the track's records (``json_original`` format, or ASD's with ``frame_key="frame"``).
        frame_key: name of the frame-number field.
        check_person: drop records with an empty ``Person ID`` (LAM/TTM; ASD records have no such field).
        sort: sort by frame number first (LAM does; TTM and ASD do not and assume sorted input).
        source: file name for error messages.

    Returns:
        Records with ``frame_key`` (int), ``x``, ``y``, ``width``, ``height`` (float); empty when nothing survives.

    Raises:
        ValueError: a record lacks a field or has a non-numeric one (names ``source``, record index and field).
    """
    if not isinstance(records, (list, tuple)):
        raise ValueError(f"{source}: a track must be a JSON list of records, got {type(records).__name__}")
    indexed = list(enumerate(records))
    if sort:
        for index, record in indexed:
            _number(record, frame_key, f"{source}: record {index}")
        indexed.sort(key=lambda item: item[1][frame_key])
    frames, boxes = [], []
    for index, record in indexed:
        where = f"{source}: record {index}"
        if not isinstance(record, Mapping):
            raise ValueError(f"{where}: must be an object, got {type(record).__name__}")
        x, y = _number(record, "x", where), _number(record, "y", where)
        width, height = _number(record, "width", where), _number(record, "height", where)
        frame = _number(record, frame_key, where)
        if width <= 0 or height <= 0 or frame == 0:
            continue
        if check_person:
            if "Person ID" not in record:
                raise ValueError(f"{where}: missing field 'Person ID'")
            if len(str(record["Person ID"])) == 0:
                continue
        x, y = max(x, 0.0), max(y, 0.0)
        frames.append(int(frame))
        boxes.append((x, y, x + width, y + height))
    if not frames:
        return []
    frame_numbers = np.asarray(frames, dtype=np.int64)
    corners = np.asarray(boxes, dtype=np.float64)
    span = int(frame_numbers[-1] - frame_numbers[0] + 1)
    if span > len(frame_numbers):
        all_frames = np.arange(frame_numbers[0], frame_numbers[-1] + 1)
        if np.any(np.diff(frame_numbers) <= 0):
            # scipy's interp1d sorted the points itself; np.interp needs increasing x.
            order = np.argsort(frame_numbers, kind="stable")
            frame_numbers, corners = frame_numbers[order], corners[order]
        corners = np.stack([np.interp(all_frames, frame_numbers, corners[:, k]) for k in range(4)], axis=1)
        frame_numbers = all_frames
    template = dict(records[0])
    cleaned = []
    for frame, (x1, y1, x2, y2) in zip(frame_numbers.tolist(), corners.tolist()):
        record = dict(template)
        record[frame_key] = int(frame)
        record.update(x=x1, y=y1, width=x2 - x1, height=y2 - y1)
        cleaned.append(record)
    return cleaned


def track_boxes(records: Iterable[Mapping], frame_key: str = "frameNumber") -> "OrderedDict[int, tuple]":
    """``frame -> (x1, y1, x2, y2)`` float corner box of cleaned records (a later duplicate frame wins)."""
    boxes: "OrderedDict[int, tuple]" = OrderedDict()
    for record in records:
        x, y = float(record["x"]), float(record["y"])
        boxes[int(record[frame_key])] = (x, y, x + float(record["width"]), y + float(record["height"]))
    return boxes


def load_clip_tracks(json_dir: Union[str, os.PathLike], clip_uid: str, sort: bool,
                     warnings: Optional[WarningCounter] = None) -> "OrderedDict[str, list[dict]]":
    """Cleaned tracks of one clip: ``track_id -> records`` from ``<json_dir>/<clip_uid>/<track_id>.json``.

    Tracks are read in file-name order (the original used unordered ``glob``). A track left without any valid box
    is dropped with a counted warning. A clip without a track folder has no tracks (counted warning).

    Raises:
        ValueError: a track file is not valid JSON or has malformed records (names the file).
    """
    folder = Path(json_dir) / clip_uid
    tracks: "OrderedDict[str, list[dict]]" = OrderedDict()
    if not folder.is_dir():
        if warnings is not None:
            warnings.warn("clip without face tracks", str(folder))
        return tracks
    for path in sorted(folder.glob("*.json")):
        records = clean_track(read_json(path, "face track"), sort=sort, source=str(path))
        if not records:
            if warnings is not None:
                warnings.warn("track without a valid box (skipped)", str(path))
            continue
        tracks[path.stem] = records
    return tracks


# ---------------------------------------------------------------------------------------------------------------
# Ground truth (§1.4)
# ---------------------------------------------------------------------------------------------------------------


def _check_label_mode(label_mode: str) -> None:
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {list(LABEL_MODES)}, got {label_mode!r}")


def _segment_frames(record: Any, where: str) -> tuple[int, int]:
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: must be an object, got {type(record).__name__}")
    start, end = _number(record, "start_frame", where), _number(record, "end_frame", where)
    return int(start), int(end)


def _is_at_me(record: Mapping, where: str) -> bool:
    if "is_at_me" not in record:
        raise ValueError(f"{where}: missing field 'is_at_me' (needed by label_mode 'is_at_me'; re-run "
                         f"scripts/prepare.py to add it)")
    return bool(record["is_at_me"])


def read_lam_segments(path: Union[str, os.PathLike], label_mode: str = "official") -> list[dict]:
    """LAM ground-truth segments of one clip (``result_LAM/<clip_uid>.json``).

    Returns:
        ``[{"person": str, "start_frame": int, "end_frame": int}]`` -- in ``"is_at_me"`` mode only the segments
        whose ``is_at_me`` is true.

    Raises:
        FileNotFoundError / ValueError: missing file, invalid JSON or a missing field (names the file and field).
    """
    _check_label_mode(label_mode)
    data = read_json(path, "LAM ground-truth file")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of LAM segments, got {type(data).__name__}")
    segments = []
    for index, record in enumerate(data):
        where = f"{path}: segment {index}"
        start, end = _segment_frames(record, where)
        if "label" not in record:
            raise ValueError(f"{where}: missing field 'label'")
        if label_mode == "is_at_me" and not _is_at_me(record, where):
            continue
        segments.append({"person": str(record["label"]), "start_frame": start, "end_frame": end})
    return segments


def looking_identifiers(segments: Iterable[Mapping]) -> set:
    """``{"frame:person"}`` of every frame inside a LAM segment (inclusive bounds), the official positive set."""
    positive = set()
    for segment in segments:
        for frame in range(segment["start_frame"], segment["end_frame"] + 1):
            positive.add(f"{frame}:{segment['person']}")
    return positive


def read_ttm_segments(path: Union[str, os.PathLike], label_mode: str = "official") -> list[dict]:
    """TTM segments of one clip (``result_TTM/<clip_uid>.json``), every entry with its index in the file.

    Returns:
        ``[{"index": int, "person": str, "label": 0/1, "start_frame": int, "end_frame": int}]``; ``label`` is 1 iff
        the entry has ``tags`` (official) or iff its ``is_at_me`` is true (``"is_at_me"`` mode).

    Raises:
        FileNotFoundError / ValueError: missing file, invalid JSON or a missing field (names the file and field).
    """
    _check_label_mode(label_mode)
    data = read_json(path, "TTM ground-truth file")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of TTM segments, got {type(data).__name__}")
    segments = []
    for index, record in enumerate(data):
        where = f"{path}: segment {index}"
        start, end = _segment_frames(record, where)
        if "label" not in record:
            raise ValueError(f"{where}: missing field 'label' (the speaker's person id)")
        person = str(record["label"]).replace("'", "")
        positive = _is_at_me(record, where) if label_mode == "is_at_me" else "tags" in record
        segments.append({"index": index, "person": person, "label": int(positive), "start_frame": start,
                         "end_frame": end})
    return segments


# ---------------------------------------------------------------------------------------------------------------
# Frames and faces
# ---------------------------------------------------------------------------------------------------------------


def frame_image_path(image_dir: Union[str, os.PathLike], clip_uid: str, frame: int) -> Path:
    """The image of annotation frame ``frame``: ``<image_dir>/<clip_uid>/img_{frame:05d}.jpg`` (§1.6)."""
    return Path(image_dir) / clip_uid / f"img_{int(frame):05d}.jpg"


def crop_face(image: np.ndarray, box: Sequence[float], size: int) -> Optional[np.ndarray]:
    """Cut the int-truncated box out of an image and resize it to ``size`` x ``size`` (bilinear).

    Args:
        image: uint8 [H, W, 3] RGB.
        box: (x1, y1, x2, y2) in pixels; truncated to int; parts outside the image are clipped by the slice.
        size: output side.

    Returns:
        uint8 [size, size, 3], or None when the crop is empty (a bad box).
    """
    x1, y1, x2, y2 = (int(value) for value in box)
    face = image[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)]
    if face.shape[0] == 0 or face.shape[1] == 0:
        return None
    return cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR)


def read_face(path: Path, size: int, box: Optional[Sequence[float]] = None,
              warnings: Optional[WarningCounter] = None) -> tuple[Optional[np.ndarray], str]:
    """Read one image and return its face crop, or why there is none.

    Args:
        path: image file.
        size: output side.
        box: (x1, y1, x2, y2) to crop; None = the whole image is the face (challenge releases), resized only when
            it is not already ``size`` x ``size``.
        warnings: counter for missing/corrupt images and empty crops.

    Returns:
        ``(face uint8 [size, size, 3], "ok")``, or ``(None, reason)`` with reason ``"missing"`` (no such file),
        ``"corrupt"`` (undecodable) or ``"empty"`` (the box selects no pixel).
    """
    if not path.is_file():
        if warnings is not None:
            warnings.warn("missing frame image (black frame)", str(path))
        return None, "missing"
    try:
        image = media.read_image(path)
    except media.MediaError as err:
        if warnings is not None:
            warnings.warn("corrupt frame image (black frame)", str(err))
        return None, "corrupt"
    if box is None:
        if image.shape[0] == size and image.shape[1] == size:
            return image, "ok"
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR), "ok"
    face = crop_face(image, box, size)
    if face is None:
        if warnings is not None:
            warnings.warn("empty face crop (black frame)", f"{path} box {tuple(box)}")
        return None, "empty"
    return face, "ok"


def normalise_frames(frames: np.ndarray) -> torch.Tensor:
    """uint8 RGB frames [T, S, S, 3] -> ImageNet-normalised float32 tensor [T, 3, S, S] (ToTensor, then Normalize)."""
    scaled = frames.astype(np.float32) / 255.0
    scaled = (scaled - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(0, 3, 1, 2)))


# ---------------------------------------------------------------------------------------------------------------
# Audio (§3.2)
# ---------------------------------------------------------------------------------------------------------------


def rms_normalise(samples: np.ndarray, target_rms: float = 0.1, eps: float = 1e-4) -> np.ndarray:
    """Scale to RMS ``target_rms`` (scale = target / max(eps, RMS)), computed in float64; empty input stays empty."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size == 0:
        return samples
    rms = max(eps, float(np.sqrt(np.mean(samples ** 2))))
    return samples * (target_rms / rms)


def audio_window(start_frame: int, end_frame: int, sample_rate: int) -> tuple[int, int]:
    """Sample range ``[int(start/30*sr), int(end/30*sr))`` of frames start..end (one frame shorter than the video)."""
    return int(start_frame / FPS * sample_rate), int(end_frame / FPS * sample_rate)


def read_wav_window(path: Union[str, os.PathLike], start_frame: int, end_frame: int) -> tuple[np.ndarray, int]:
    """Read only the samples of frames ``start_frame`` .. ``end_frame`` from a mono (or down-mixed) WAV file.

    Same values as slicing the whole file read by ``soundfile`` (what the original did), without decoding five
    minutes of audio per sample.

    Returns:
        (float64 samples [A], sample rate); A is 0 when the window lies beyond the file's end.

    Raises:
        egot2.media.MediaError: the file is missing or unreadable (names it).
    """
    path = Path(path)
    if not path.is_file():
        raise media.MediaError(f"{path}: wav file not found")
    try:
        with soundfile.SoundFile(str(path)) as handle:
            onset, offset = audio_window(start_frame, end_frame, handle.samplerate)
            onset = min(onset, handle.frames)
            handle.seek(onset)
            samples = handle.read(max(min(offset, handle.frames) - onset, 0), dtype="float64", always_2d=True)
            rate = handle.samplerate
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise media.MediaError(f"{path}: unreadable wav ({err})") from err
    return samples.mean(axis=1), int(rate)
