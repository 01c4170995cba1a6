"""PNR (keyframe localisation) and OSCC (object state change) samples from the prepared FHO layout.

Input layout (written by ``HOI/prepare.py`` from a real Ego4D download or the synthetic twin), under the data root::

    fho/annotations/fho_oscc-pnr_{train,val,test_unannotated}.json   one item per 8-s window
    fho/pos_clips/<unique_id>/<abs_frame>.jpeg    windows with a PNR frame, frames parent_start..parent_end
    fho/neg_clips/<unique_id>/<abs_frame>.jpeg    windows without one
    fho/test_clips/<unique_id>/<abs_frame>.jpeg   test windows

Sample construction (spec section 5.1), for ``T = SAMPLING_FPS x CLIP_LEN_SEC`` frames (16)::

    window [parent_start_frame, parent_end_frame]
      -> train only: random sub-window (random_clip_window) of 5 s .. the window, keeping the PNR frame inside
      -> pick_frame_indices: T absolute frame numbers divisible by a step of ~n / T (the original picker)
      -> keyframe_one_hot: 1 at the picked frame nearest to the PNR frame (hard label; zeros without a PNR)
      -> JPEGs -> RGB -> bilinear resize to CROP_SIZE x CROP_SIZE (aspect not kept) -> raw 0-255 float32

There is no flip, crop or colour augmentation: the original PNR/OSCC pipeline has none (the always-on flip quirk of
spec section 11, item 10 belongs to the AR/LTA pipeline), so none is offered here. Differences from the original,
all deliberate: the index is a compact list (the original kept json positions and broke on skipped negatives,
section 11 item 5); the random offset is uniform(0, W - L) unless ``legacy_offset`` (item 6); seconds are turned
into frames with the window's own frame rate instead of a fixed 30 (item 7; identical on Ego4D, where frame =
30 x second); the test split carries ``state = -1`` instead of the original's meaningless 1.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from egot2.media import MediaError, read_image
from HOI.data.transforms import frames_to_clip

__all__ = [
    "SPLITS",
    "TASKS",
    "StateChangeRecord",
    "pick_frame_indices",
    "keyframe_one_hot",
    "random_clip_window",
    "read_state_change_annotations",
    "StateChangeDataset",
]

SPLITS = ("train", "val", "test")
#: ``task`` -> whether windows without a state change are kept by default (OSCC needs them, PNR does not).
TASKS = {"pnr": False, "oscc": True}
_CFG_TASKS = {"keyframe_localization": "pnr", "state_change_classification": "oscc"}

PathLike = Union[str, os.PathLike]


def pick_frame_indices(start_frame: int, end_frame: int, num_frames: int) -> np.ndarray:
    """The original frame picker: ``num_frames`` absolute frame numbers in ``[start_frame, end_frame)``.

    With ``n = end_frame - start_frame``, every frame number divisible by ``ceil(n / num_frames)`` is taken if there
    are at least ``num_frames`` of them, else every one divisible by ``floor(n / num_frames)`` (of which there are
    always enough); the first ``num_frames`` are kept. Example: 10..50 with 16 frames -> step 3 gives 13 frames
    (12, 15, ..., 48), too few, so step 2 gives 10, 12, ..., 40.

    Returns:
        int64 ``(num_frames,)`` increasing frame numbers.

    Raises:
        ValueError: when the range holds fewer than ``num_frames`` frames.
    """
    span = int(end_frame) - int(start_frame)
    if num_frames < 1 or span < num_frames:
        raise ValueError(f"pick_frame_indices: frames {start_frame}..{end_frame} hold {span} frames, fewer than the "
                         f"{num_frames} to sample")
    for step in (-(-span // num_frames), span // num_frames):
        first = -(-int(start_frame) // step) * step
        candidates = np.arange(first, int(end_frame), step, dtype=np.int64)
        if len(candidates) >= num_frames:
            return candidates[:num_frames]
    raise AssertionError("unreachable: the floor step always yields enough frames")


def keyframe_one_hot(frame_indices: np.ndarray, pnr_frame: int) -> np.ndarray:
    """Hard keyframe label: 1 at the sampled frame nearest to ``pnr_frame`` (the first of equally near ones).

    Args:
        frame_indices: ``(T,)`` sampled absolute frame numbers.
        pnr_frame: absolute PNR frame, or a negative number for "no state change" (all zeros).

    Returns:
        float32 ``(T,)``.
    """
    label = np.zeros(len(frame_indices), dtype=np.float32)
    if pnr_frame >= 0:
        label[int(np.argmin(np.abs(np.asarray(frame_indices, dtype=np.int64) - int(pnr_frame))))] = 1.0
    return label


def random_clip_window(
    start_frame: int,
    end_frame: int,
    start_sec: float,
    end_sec: float,
    pnr_frame: int,
    length_draw: float,
    offset_draw: float,
    *,
    num_frames: int,
    min_sec: float = 5.0,
    legacy_offset: bool = False,
) -> tuple[int, int]:
    """Training-time random sub-window ("random clipping") of an annotated window.

    With window duration ``W`` seconds: length ``L = min_sec + (W - min_sec) * length_draw`` (uniform in
    ``[min_sec, W)``); offset ``(W - L) * offset_draw`` (uniform in ``[0, W - L)``), or with ``legacy_offset`` the
    original ``np.random.uniform(W - L)``, i.e. uniform between ``W - L`` and 1 s. Seconds become frames with the
    window's rate ``(end_frame - start_frame) / W``; the end is cut at ``end_frame``. If the PNR frame falls after
    the new end, the end goes back to ``end_frame``; if before the new start, the start goes back to ``start_frame``.

    Args:
        start_frame, end_frame, start_sec, end_sec: the annotated window.
        pnr_frame: absolute PNR frame, negative when there is none.
        length_draw, offset_draw: uniform draws in [0, 1) (the caller's random numbers, so tests can pin them).
        num_frames: frames that will be sampled; a sub-window shorter than that falls back to the whole window.
        min_sec: shortest sub-window.
        legacy_offset: use the original offset distribution.

    Returns:
        ``(start, end)`` frame numbers, ``start_frame <= start < end <= end_frame``.
    """
    duration = float(end_sec) - float(start_sec)
    if duration <= min_sec:
        return int(start_frame), int(end_frame)
    length = min_sec + (duration - min_sec) * float(length_draw)
    spare = duration - length
    if legacy_offset:
        offset = spare + (1.0 - spare) * float(offset_draw)
    else:
        offset = spare * float(offset_draw)
    rate = (int(end_frame) - int(start_frame)) / duration
    start = int(start_frame) + int(math.floor(offset * rate))
    end = min(start + int(math.floor(length * rate)), int(end_frame))
    if pnr_frame >= 0:
        if pnr_frame > end:
            end = int(end_frame)
        if pnr_frame < start:
            start = int(start_frame)
    if end - start < num_frames:
        return int(start_frame), int(end_frame)
    return start, end


@dataclass(frozen=True)
class StateChangeRecord:
    """One annotated window.

    Attributes:
        unique_id: window id (frame folder name, submission key).
        video_uid: full-scale video.
        start_frame, end_frame: ``parent_start_frame`` / ``parent_end_frame`` (absolute, inclusive).
        start_sec, end_sec: ``parent_start_sec`` / ``parent_end_sec``.
        state: 1 = state change, 0 = none, -1 = unannotated (test).
        pnr_frame: ``parent_pnr_frame`` (absolute), -1 when there is none.
        folder: frame folder.
    """

    unique_id: str
    video_uid: str
    start_frame: int
    end_frame: int
    start_sec: float
    end_sec: float
    state: int
    pnr_frame: int
    folder: Path

    @property
    def fps(self) -> float:
        """Frame rate of the whole window, ``(end_frame - start_frame + 1) / (end_sec - start_sec)`` (~30.1)."""
        return (self.end_frame - self.start_frame + 1) / (self.end_sec - self.start_sec)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _field(path: Path, position: int, item: dict, name: str, kind: str, required: bool = True):
    label = item.get("unique_id", "?") if isinstance(item, dict) else "?"
    where = f"{path}: clips[{position}] (unique_id {label})"
    if name not in item:
        if required:
            raise ValueError(f"{where}: field '{name}' is missing")
        return None
    value = item[name]
    if value is None and not required:
        return None
    ok = {"str": isinstance(value, str) and value != "",
          "number": _is_number(value),
          "frame": _is_number(value) and float(value) == int(value),
          "bool": isinstance(value, bool)}[kind]
    if not ok:
        expected = {"str": "a non-empty string", "number": "a number", "frame": "a whole frame number",
                    "bool": "true or false"}[kind]
        raise ValueError(f"{where}: field '{name}' must be {expected}, got {value!r}")
    return value


def read_state_change_annotations(
    ann_file: PathLike,
    split: str,
    *,
    pos_dir: PathLike,
    neg_dir: PathLike,
    test_dir: PathLike,
    include_negatives: bool = True,
    num_frames: int = 16,
) -> list[StateChangeRecord]:
    """Read an ``fho_oscc-pnr_<split>.json`` file into a compact list of windows.

    Args:
        ann_file: the annotation file (an object with a ``clips`` array).
        split: "train", "val" or "test" (test items carry no labels).
        pos_dir, neg_dir, test_dir: frame folder roots for windows with a PNR frame, without one, and test windows.
        include_negatives: keep train/val windows with ``state_change: false`` (False for PNR).
        num_frames: frames sampled per window; shorter windows are an error.

    Returns:
        The kept windows, in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid JSON, or an item with a missing or invalid field (file, item and field named).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        document = json.loads(path.read_bytes())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(document, dict) or not isinstance(document.get("clips"), list):
        raise ValueError(f"{path}: field 'clips' is missing or not a list (expected an object with a 'clips' array)")
    records, seen = [], set()
    for position, item in enumerate(document["clips"]):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: clips[{position}] is not an object")
        unique_id = _field(path, position, item, "unique_id", "str")
        if unique_id in seen:
            raise ValueError(f"{path}: clips[{position}]: unique_id {unique_id} appears twice")
        seen.add(unique_id)
        video_uid = _field(path, position, item, "video_uid", "str", required=False) or ""
        start_frame = int(_field(path, position, item, "parent_start_frame", "frame"))
        end_frame = int(_field(path, position, item, "parent_end_frame", "frame"))
        start_sec = float(_field(path, position, item, "parent_start_sec", "number"))
        end_sec = float(_field(path, position, item, "parent_end_sec", "number"))
        where = f"{path}: clips[{position}] (unique_id {unique_id})"
        if end_frame - start_frame < num_frames:
            raise ValueError(f"{where}: window parent_start_frame {start_frame} .. parent_end_frame {end_frame} "
                             f"holds fewer than the {num_frames} frames to sample")
        if end_sec <= start_sec:
            raise ValueError(f"{where}: parent_end_sec {end_sec} is not after parent_start_sec {start_sec}")
        if split == "test":
            state, pnr, folder = -1, -1, Path(test_dir) / unique_id
        else:
            changed = _field(path, position, item, "state_change", "bool")
            pnr_field = "parent_pnr_frame" if item.get("parent_pnr_frame") is not None else "pnr_frame"
            if changed and item.get(pnr_field) is None:
                raise ValueError(f"{where}: field 'parent_pnr_frame' is missing or null, but state_change is true")
            pnr_value = _field(path, position, item, pnr_field, "frame", required=False)
            pnr = -1 if pnr_value is None else int(pnr_value)
            if pnr_value is not None and not start_frame <= pnr <= end_frame:
                raise ValueError(f"{where}: field '{pnr_field}' = {pnr} lies outside the window "
                                 f"{start_frame}..{end_frame}")
            if not changed and not include_negatives:
                continue
            state = int(changed)
            folder = Path(pos_dir if pnr >= 0 else neg_dir) / unique_id
        records.append(StateChangeRecord(unique_id, video_uid, start_frame, end_frame, start_sec, end_sec, state,
                                         pnr, folder))
    return records


class StateChangeDataset(Dataset):
    """PNR / OSCC windows as documented dict samples (one per annotated window).

    Sample (T = ``num_frames``, S = ``crop_size``; after batching every field gains a leading B)::

        frames          float32 (3, T, S, S)   raw RGB 0-255, no normalisation
        keyframe_label  float32 (T,)           one-hot at the frame nearest the PNR; zeros without a PNR
        state           int                    1 state change, 0 none, -1 unannotated (test)
        fps             float                  (end_frame - start_frame + 1) / (end_sec - start_sec)
        unique_id       str
        pnr_frame       int                    absolute parent_pnr_frame, -1 if none
        start_frame     int                    parent_start_frame
        end_frame       int                    parent_end_frame
        start_sec       float                  parent_start_sec
        end_sec         float                  parent_end_sec
        frame_indices   int64 (T,)             the absolute frame numbers sampled

    Nothing is ``None``, so the default collate batches every field.

    Args:
        ann_file: ``fho_oscc-pnr_<split>.json``.
        split: "train", "val" or "test".
        task: "pnr" (windows without a state change skipped in train/val) or "oscc" (kept).
        pos_dir, neg_dir, test_dir: frame folder roots (``fho/pos_clips``, ``fho/neg_clips``, ``fho/test_clips``).
        num_frames: T (SAMPLING_FPS x CLIP_LEN_SEC).
        crop_size: S.
        include_negatives: overrides the task's choice (``DATA_LOADER.IS_NO_STATE_CHANGE``).
        random_clip: random sub-windows; default: in the train split only.
        min_clip_sec: shortest random sub-window.
        legacy_offset: the original random-offset distribution (see :func:`random_clip_window`).
    """

    def __init__(
        self,
        ann_file: PathLike,
        split: str,
        task: str,
        *,
        pos_dir: PathLike,
        neg_dir: PathLike,
        test_dir: PathLike,
        num_frames: int = 16,
        crop_size: int = 225,
        include_negatives: Optional[bool] = None,
        random_clip: Optional[bool] = None,
        min_clip_sec: float = 5.0,
        legacy_offset: bool = False,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
        self.ann_file = Path(ann_file)
        self.split = split
        self.task = task
        self.num_frames = int(num_frames)
        self.crop_size = int(crop_size)
        self.include_negatives = TASKS[task] if include_negatives is None else bool(include_negatives)
        self.random_clip = (split == "train") if random_clip is None else bool(random_clip)
        self.min_clip_sec = float(min_clip_sec)
        self.legacy_offset = bool(legacy_offset)
        self.records = read_state_change_annotations(
            self.ann_file, split, pos_dir=pos_dir, neg_dir=neg_dir, test_dir=test_dir,
            include_negatives=self.include_negatives, num_frames=self.num_frames)

    @classmethod
    def from_config(cls, cfg, split: str, data_root: Optional[PathLike] = None, **overrides) -> "StateChangeDataset":
        """Dataset of ``split`` for a PNR-tree config (``HOI.config.add_pnr_config``).

        Paths ``DATA.ANN_DIR``, ``DATA.CLIPS_SAVE_PATH``, ``DATA.NO_SC_PATH``, ``DATA.TEST_CLIPS_PATH`` are taken
        from the data root (``data_root`` > ``DATA.ROOT`` > ``$EGO4D_DATA`` > ``data/``) unless absolute.
        """
        from egot2.config import resolve_data_root
        from HOI.config import pnr_num_frames

        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        root = resolve_data_root(data_root, cfg)
        data = cfg.DATA
        ann_name = {"train": data.ANN_FILE_TRAIN, "val": data.ANN_FILE_VAL, "test": data.ANN_FILE_TEST}[split]
        settings = dict(
            ann_file=root / data.ANN_DIR / ann_name, split=split, task=_CFG_TASKS[data.TASK],
            pos_dir=root / data.CLIPS_SAVE_PATH, neg_dir=root / data.NO_SC_PATH, test_dir=root / data.TEST_CLIPS_PATH,
            num_frames=pnr_num_frames(cfg), crop_size=data.CROP_SIZE,
            include_negatives=bool(cfg.DATA_LOADER.IS_NO_STATE_CHANGE),
            random_clip=split == "train" and bool(data.TRAIN_RANDOM_CLIP), min_clip_sec=data.RANDOM_CLIP_MIN_SEC,
            legacy_offset=bool(data.LEGACY_OFFSET))
        settings.update(overrides)
        return cls(**settings)

    def __len__(self) -> int:
        return len(self.records)

    def sample_window(self, record: StateChangeRecord) -> tuple[int, int]:
        """Frame range ``[start, end)`` to pick from: the whole window, or a random sub-window when training."""
        if not self.random_clip:
            return record.start_frame, record.end_frame
        # torch's generator: seeded per DataLoader worker, and by Lightning's seed_everything.
        length_draw, offset_draw = torch.rand(2, dtype=torch.float64).tolist()
        return random_clip_window(record.start_frame, record.end_frame, record.start_sec, record.end_sec,
                                  record.pnr_frame, length_draw, offset_draw, num_frames=self.num_frames,
                                  min_sec=self.min_clip_sec, legacy_offset=self.legacy_offset)

    def _read_frames(self, record: StateChangeRecord, frame_indices: np.ndarray) -> list:
        if not record.folder.is_dir():
            raise FileNotFoundError(
                f"{record.folder}: frame folder of window {record.unique_id} ({self.ann_file.name}) not found; "
                f"extract the frames with scripts/prepare.py (HOI/prepare.py) into the data root first")
        frames = []
        for frame in frame_indices:
            path = record.folder / f"{int(frame)}.jpeg"
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: frame {int(frame)} of window {record.unique_id} ({self.ann_file.name}) is missing; "
                    f"the window {record.start_frame}..{record.end_frame} needs it, the folder holds "
                    f"{_frame_range(record.folder)} (does the window lie outside the video, or was extraction cut "
                    f"short?)")
            try:
                frames.append(read_image(path))
            except MediaError as err:
                raise ValueError(f"{err} (window {record.unique_id}, {self.ann_file.name})") from None
        return frames

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        start, end = self.sample_window(record)
        frame_indices = pick_frame_indices(start, end, self.num_frames)
        return {
            "frames": frames_to_clip(self._read_frames(record, frame_indices), self.crop_size),
            "keyframe_label": torch.from_numpy(keyframe_one_hot(frame_indices, record.pnr_frame)),
            "state": record.state,
            "fps": record.fps,
            "unique_id": record.unique_id,
            "pnr_frame": record.pnr_frame,
            "start_frame": record.start_frame,
            "end_frame": record.end_frame,
            "start_sec": record.start_sec,
            "end_sec": record.end_sec,
            "frame_indices": torch.from_numpy(frame_indices),
        }


def _frame_range(folder: Path) -> str:
    numbers = sorted(int(p.stem) for p in folder.glob("*.jpeg") if p.stem.isdigit())
    if not numbers:
        return "no frames"
    return f"frames {numbers[0]}..{numbers[-1]} ({len(numbers)} files)"
