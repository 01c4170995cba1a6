"""Looking-At-Me datasets: 7-frame face clips around key frames (hhi spec §2.1, §2.2) and the challenge test release.

Item list (train/val): every frame of every cleaned, interpolated track (tracks sorted by frame first, as the
official LAM loader does) of every clip in the split, in split-list order, tracks in file-name order. Key frames are
every ``stride``-th item of each track (positions 0, 13, 26, ...); the dataset has one sample per key frame and keeps
only the boxes of the other frames.

Clip of key frame f: frames f-3 .. f+3 of the same track, each read from ``img_{frame:05d}.jpg``, cropped to the
int-truncated tight box and resized to ``face_size``. A frame outside the track, a missing or a corrupt image
gives a black frame and marks the clip for edge padding (:func:`pad_clip`); an empty crop gives a black frame
without the mark (so it stays black unless another frame triggers padding). Frames are ImageNet-normalised; there
is no augmentation (the original ignored its train/test transform flag).

Test release (``videos_challenge/<video_id>/<track_id>/<frame>_<unique_id>.jpg``, pre-cropped faces): every image
is a sample (stride 1); its clip is frames f-3 .. f+3 of the same track by frame number, with the same black-frame
and padding rules. Crops that are not ``face_size`` x ``face_size`` are resized.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from HHI.data.social import (LABEL_MODES, WarningCounter, frame_image_path, load_clip_tracks, looking_identifiers,
                             normalise_frames, read_face, read_lam_segments, read_split, resolve_path)

__all__ = ["CLIP_LENGTH", "LAMPaths", "lam_paths", "pad_clip", "LAMDataset", "LAMTestDataset", "build_lam_dataset"]

#: Frames per LAM clip (the key frame and three on each side).
CLIP_LENGTH = 7
_HALF = CLIP_LENGTH // 2
_TEST_NAME = re.compile(r"^(-?\d+)_(.+)$")


@dataclass(frozen=True)
class LAMPaths:
    """Where the LAM data lives (defaults: the prepared layout under ``<root>/lam``)."""

    image_dir: Path
    json_dir: Path
    gt_dir: Path
    test_dir: Path
    split_dir: Path

    def split_file(self, split: str) -> Path:
        """``<split_dir>/<split>.list``."""
        return self.split_dir / f"{split}.list"


def lam_paths(root: Union[str, os.PathLike], source_path: str = "", json_path: str = "", gt_path: str = "",
              test_path: str = "") -> LAMPaths:
    """LAM folders under the data root, each replaceable by an override (the original ``--source_path`` etc.)."""
    base = Path(root) / "lam"
    return LAMPaths(image_dir=resolve_path(source_path, base / "video_imgs"),
                    json_dir=resolve_path(json_path, base / "json_original"),
                    gt_dir=resolve_path(gt_path, base / "result_LAM"),
                    test_dir=resolve_path(test_path, base / "videos_challenge"),
                    split_dir=base / "split")


def pad_clip(frames: np.ndarray, blank: np.ndarray) -> np.ndarray:
    """Edge padding of a clip with blank frames (hhi spec §2.2).

    Every blank frame except the centre one is dropped; the first remaining frame is repeated at the front once per
    blank dropped before the centre, the last remaining frame at the back once per blank dropped after it.

    Args:
        frames: [7, S, S, 3] uint8.
        blank: [7] bool, True where the frame is blank (all black).

    Returns:
        [7, S, S, 3] uint8.
    """
    blank = np.asarray(blank, dtype=bool).copy()
    centre = len(blank) // 2
    blank[centre] = False
    kept = frames[~blank]
    before, after = int(blank[:centre].sum()), int(blank[centre + 1:].sum())
    return np.concatenate([np.repeat(kept[:1], before, axis=0), kept, np.repeat(kept[-1:], after, axis=0)])


def _assemble_clip(faces: list, needs_padding: bool, face_size: int) -> torch.Tensor:
    """Stack 7 faces (None = black), apply edge padding when marked, normalise -> [7, 3, S, S]."""
    black = np.zeros((face_size, face_size, 3), dtype=np.uint8)
    frames = np.stack([black if face is None else face for face in faces])
    if needs_padding:
        # The original marks all-zero frames after assembly, so a genuinely black crop counts as blank too.
        frames = pad_clip(frames, np.all(frames == 0, axis=(1, 2, 3)))
    return normalise_frames(frames)


class LAMDataset(Dataset):
    """Looking-At-Me train/val samples: one 7-frame face clip per key frame.

    Args:
        root: data root holding ``lam/`` (ignored for the folders given in ``paths``).
        split: "train" or "val" (any ``<split>.list`` in the split folder works), or a path to a list file.
        stride: key frame every ``stride``-th frame of a track (13 in the official runs).
        face_size: side of the face crops (224 official; smaller sizes make CPU runs practical).
        label_mode: "official" or "is_at_me" (see :mod:`HHI.data.social`).
        paths: explicit folders (from :func:`lam_paths`); default: the prepared layout under ``root``.

    Sample (dict):
        ``video``: float32 [7, 3, S, S], ImageNet-normalised; ``label``: int (1 = looking at the camera wearer);
        ``clip_uid``: str; ``track_id``: str; ``frame``: int (key frame number); ``box``: int64 [4] int-truncated
        (x1, y1, x2, y2) of the key frame -- together what ``HHI.metrics.lam_map`` needs.

    Raises:
        FileNotFoundError: the split list, a ground-truth file or the image folder is missing.
        ValueError: malformed track or ground-truth files (names the file and field), bad arguments.
    """

    def __init__(self, root: Union[str, os.PathLike], split: str, stride: int = 13, face_size: int = 224,
                 label_mode: str = "official", paths: Optional[LAMPaths] = None) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if face_size < 1:
            raise ValueError(f"face_size must be >= 1, got {face_size}")
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {list(LABEL_MODES)}, got {label_mode!r}")
        self.paths = paths or lam_paths(root)
        self.split = split
        self.stride = stride
        self.face_size = face_size
        self.label_mode = label_mode
        self.warnings = WarningCounter()
        if not self.paths.image_dir.is_dir():
            raise FileNotFoundError(f"LAM image folder not found: {self.paths.image_dir}")
        split_file = Path(split) if split.endswith(".list") else self.paths.split_file(split)
        self.clip_uids = read_split(split_file)
        # samples[i] = (clip_uid, track_id, frame, box (x1, y1, x2, y2) floats, label) of the i-th key frame;
        # boxes[(clip_uid, track_id)][frame] = box of every frame (the neighbours of a key frame)
        self.samples: list[tuple[str, str, int, tuple, int]] = []
        self.boxes: dict[tuple[str, str], dict[int, tuple]] = {}
        for clip_uid in self.clip_uids:
            positive = looking_identifiers(read_lam_segments(self.paths.gt_dir / f"{clip_uid}.json", label_mode))
            tracks = load_clip_tracks(self.paths.json_dir, clip_uid, sort=True, warnings=self.warnings)
            for track_id, records in tracks.items():
                track_boxes = self.boxes.setdefault((clip_uid, track_id), {})
                for position, record in enumerate(records):
                    frame = int(record["frameNumber"])
                    x, y = float(record["x"]), float(record["y"])
                    box = (x, y, x + float(record["width"]), y + float(record["height"]))
                    track_boxes[frame] = box
                    if position % stride == 0:
                        label = int(f"{frame}:{record['Person ID']}" in positive)
                        self.samples.append((clip_uid, track_id, frame, box, label))

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        """Label of every sample (key frame), in sample order."""
        return [sample[4] for sample in self.samples]

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip_uid, track_id, frame, box, label = self.samples[index]
        track = self.boxes[(clip_uid, track_id)]
        faces, needs_padding = [], False
        for neighbour in range(frame - _HALF, frame + _HALF + 1):
            if neighbour not in track:
                faces.append(None)
                needs_padding = True
                continue
            face, status = read_face(frame_image_path(self.paths.image_dir, clip_uid, neighbour), self.face_size,
                                     track[neighbour], self.warnings)
            faces.append(face)
            needs_padding |= status in ("missing", "corrupt")
        return {
            "video": _assemble_clip(faces, needs_padding, self.face_size),
            "label": label,
            "clip_uid": clip_uid,
            "track_id": track_id,
            "frame": frame,
            "box": torch.tensor([int(value) for value in box], dtype=torch.int64),
        }


class LAMTestDataset(Dataset):
    """The LAM challenge test release: one 7-frame clip per pre-cropped face image.

    Args:
        test_dir: ``videos_challenge`` folder (``<video_id>/<track_id>/<frame>_<unique_id>.jpg``).
        face_size: output side (the release's crops are 224 x 224; other sizes are resized).
        stride: sample every ``stride``-th image of a track (1 for a submission: every image needs a score).

    Sample (dict):
        ``video``: float32 [7, 3, S, S]; ``video_id``: str; ``track_id``: str; ``unique_id``: str;
        ``frame``: int.

    Raises:
        FileNotFoundError: ``test_dir`` does not exist.
        ValueError: an image name is not ``<frame>_<unique_id>.jpg`` (names the file), or a frame of a track has
            two images.
    """

    def __init__(self, test_dir: Union[str, os.PathLike], face_size: int = 224, stride: int = 1) -> None:
        self.test_dir = Path(test_dir)
        if not self.test_dir.is_dir():
            raise FileNotFoundError(f"LAM test release not found: {self.test_dir} (expected "
                                    f"videos_challenge/<video_id>/<track_id>/<frame>_<unique_id>.jpg)")
        if stride < 1 or face_size < 1:
            raise ValueError(f"stride and face_size must be >= 1, got {stride} and {face_size}")
        self.face_size = face_size
        self.warnings = WarningCounter()
        # samples: (video_id, track_id, frame, unique_id); files[(video_id, track_id)][frame] = image path
        self.samples: list[tuple[str, str, int, str]] = []
        self.files: dict[tuple[str, str], dict[int, Path]] = {}
        for video_dir in sorted(p for p in self.test_dir.iterdir() if p.is_dir()):
            for track_dir in sorted(p for p in video_dir.iterdir() if p.is_dir()):
                frames: dict[int, Path] = {}
                entries = []
                for image in sorted(track_dir.glob("*.jpg")):
                    match = _TEST_NAME.match(image.stem)
                    if match is None:
                        raise ValueError(f"{image}: LAM test image names must be <frame>_<unique_id>.jpg")
                    frame = int(match.group(1))
                    if frame in frames:
                        raise ValueError(f"{track_dir}: frame {frame} has two images ({frames[frame].name}, "
                                         f"{image.name})")
                    frames[frame] = image
                    entries.append((frame, match.group(2)))
                self.files[(video_dir.name, track_dir.name)] = frames
                entries.sort()
                for position, (frame, unique_id) in enumerate(entries):
                    if position % stride == 0:
                        self.samples.append((video_dir.name, track_dir.name, frame, unique_id))

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def expected_ids(self) -> set:
        """``(video_id, unique_id, track_id)`` of every sample: what a LAM submission must cover."""
        return {(video_id, unique_id, track_id) for video_id, track_id, _, unique_id in self.samples}

    def __getitem__(self, index: int) -> dict[str, Any]:
        video_id, track_id, frame, unique_id = self.samples[index]
        frames = self.files[(video_id, track_id)]
        faces, needs_padding = [], False
        for neighbour in range(frame - _HALF, frame + _HALF + 1):
            if neighbour not in frames:
                faces.append(None)
                needs_padding = True
                continue
            face, status = read_face(frames[neighbour], self.face_size, None, self.warnings)
            faces.append(face)
            needs_padding |= status != "ok"
        return {
            "video": _assemble_clip(faces, needs_padding, self.face_size),
            "video_id": video_id,
            "track_id": track_id,
            "unique_id": unique_id,
            "frame": frame,
        }


def build_lam_dataset(cfg: Any, split: str, root: Optional[Union[str, os.PathLike]] = None) -> Dataset:
    """The LAM dataset of ``split`` ("train", "val" or "test") from a config with the ``LAM`` and ``HHI`` sections.

    Args:
        cfg: merged config (``HHI.FACE_SIZE``, ``HHI.LABEL_MODE``, ``LAM.*``).
        split: "train", "val" or "test" (the challenge release).
        root: data root; default ``egot2.config.resolve_data_root(cfg=cfg)``.
    """
    from egot2.config import resolve_data_root  # noqa: PLC0415

    root = Path(root) if root is not None else resolve_data_root(cfg=cfg)
    lam = cfg.LAM
    paths = lam_paths(root, lam.SOURCE_PATH, lam.JSON_PATH, lam.GT_PATH, lam.TEST_PATH)
    if split == "test":
        return LAMTestDataset(paths.test_dir, face_size=cfg.HHI.FACE_SIZE, stride=lam.TEST_STRIDE)
    split_files = {"train": lam.TRAIN_FILE, "val": lam.VAL_FILE}
    if split not in split_files:
        raise ValueError(f"LAM split must be 'train', 'val' or 'test', got {split!r}")
    split_file = str(resolve_path(split_files[split], paths.split_file(split)))
    stride = lam.TRAIN_STRIDE if split == "train" else lam.VAL_STRIDE
    return LAMDataset(root, split_file, stride=stride, face_size=cfg.HHI.FACE_SIZE, label_mode=cfg.HHI.LABEL_MODE,
                      paths=paths)
