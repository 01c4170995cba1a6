"""Talking-To-Me datasets (hhi spec §3.1, §3.2, §3.7), the frame-budget batch sampler and the truncating collate.

Segments (train/val): every entry of ``result_TTM/<clip_uid>.json`` gives (person, label, start, end, entry index).
Dropped: length <= 1 frame, person 0 (the camera wearer) and, in the training split only, length < ``min_train_len``
(15). A segment longer than ``chunk_frames`` (150) is cut into floor(length / 150) chunks
[start + 150 i, min(end, start + 150 i + 150)] -- 151 frames each, consecutive chunks sharing their boundary frame --
and the remainder is dropped; every chunk keeps its entry index so that evaluation can re-assemble the segment.

Video: for every frame of the chunk the person's box (from all cleaned tracks of the clip, keyed by frame and person
id), the int-truncated tight crop resized to ``face_size``; a frame without a box, with a missing or corrupt image
or an empty crop is black (counted warning for the last three). No padding trick as in LAM; ImageNet
normalisation. Audio: samples [int(start/30 sr), int(end/30 sr)) of the clip's wav -- one frame shorter than the
video -- RMS-normalised to 0.1. A window past the end of the wav is empty (counted warning); the task skips such
training batches.

Test release (``final_test_data/<segment_id>/face/<frame>.jpg``, ``audio/aud.wav``, ``seg_info.json``): frames
0 .. frame_num - 1 of every segment, chunked the same way; a frame without a face image is black; a segment without
a ``face`` folder is all black (counted warning) instead of the original's crash.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from HHI.data.social import (LABEL_MODES, WarningCounter, frame_image_path, load_clip_tracks, normalise_frames,
                             read_face, read_json, read_split, read_ttm_segments, read_wav_window, resolve_path,
                             rms_normalise)

__all__ = [
    "CHUNK_FRAMES",
    "TTMPaths",
    "ttm_paths",
    "chunk_segment",
    "TTMDataset",
    "TTMTestDataset",
    "FrameBudgetBatchSampler",
    "collate_truncate",
    "build_ttm_dataset",
]

#: Frames between the starts of consecutive chunks (chunks hold CHUNK_FRAMES + 1 frames).
CHUNK_FRAMES = 150


@dataclass(frozen=True)
class TTMPaths:
    """Where the TTM data lives (defaults: the prepared layout under ``<root>/ttm``)."""

    image_dir: Path
    wave_dir: Path
    gt_dir: Path
    json_dir: Path
    test_dir: Path
    seg_info: Path
    split_dir: Path

    def split_file(self, split: str) -> Path:
        """``<split_dir>/<split>.list``."""
        return self.split_dir / f"{split}.list"


def ttm_paths(root: Union[str, os.PathLike], img_path: str = "", wave_path: str = "", gt_path: str = "",
              json_path: str = "", test_data_path: str = "", seg_info: str = "") -> TTMPaths:
    """TTM folders under the data root, each replaceable by an override (the original ``--img_path`` etc.)."""
    base = Path(root) / "ttm"
    return TTMPaths(image_dir=resolve_path(img_path, base / "video_imgs"),
                    wave_dir=resolve_path(wave_path, base / "wave"),
                    gt_dir=resolve_path(gt_path, base / "result_TTM"),
                    json_dir=resolve_path(json_path, base / "json_original"),
                    test_dir=resolve_path(test_data_path, base / "final_test_data"),
                    seg_info=resolve_path(seg_info, base / "seg_info.json"),
                    split_dir=base / "split")


def chunk_segment(start: int, end: int, chunk_frames: int = CHUNK_FRAMES) -> list[tuple[int, int]]:
    """Chunks of the inclusive frame range ``start`` .. ``end`` (hhi spec §3.2).

    A segment of at most ``chunk_frames`` frames is one chunk. A longer one gives floor(length / chunk_frames)
    chunks ``(start + k c, min(end, start + k c + c))``: 151 frames each (the last one shorter only when it reaches
    ``end``), consecutive chunks sharing a frame; frames after the last chunk are dropped.

    Examples: 151 frames -> [(s, s+150)]; 300 -> [(s, s+150), (s+150, s+299)]; 310 -> [(s, s+150), (s+150, s+300)].
    """
    length = end - start + 1
    if length <= chunk_frames:
        return [(start, end)]
    return [(start + k * chunk_frames, min(end, start + k * chunk_frames + chunk_frames))
            for k in range(length // chunk_frames)]


def _black(face_size: int) -> np.ndarray:
    return np.zeros((face_size, face_size, 3), dtype=np.uint8)


def _audio_tensor(samples: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rms_normalise(samples).astype(np.float32))


class TTMDataset(Dataset):
    """Talking-To-Me train/val samples: one face-crop chunk of an annotation segment with its audio.

    Args:
        root: data root holding ``ttm/`` (ignored for the folders given in ``paths``).
        split: "train" or "val", or a path to a list file.
        training: drop segments shorter than ``min_train_len``; default: when "train" is in the split list's file
            name (the original tested the whole path for that substring).
        face_size: side of the face crops (224 official).
        min_train_len: training segments shorter than this are dropped (15).
        label_mode: "official" (positive iff the entry has ``tags``) or "is_at_me".
        chunk_frames: chunk stride (150).
        paths: explicit folders (from :func:`ttm_paths`).

    Sample (dict):
        ``video``: float32 [T, 3, S, S], T = end - start + 1; ``audio``: float32 [A] (A ~ (end - start) / 30 * 16000,
        possibly 0); ``label``: int (1 = talking to the camera wearer); ``clip_uid``: str; ``person``: str;
        ``index``: int (entry index in the clip's ``result_TTM`` file); ``start``, ``end``: int (chunk frames,
        inclusive); ``chunk_id``: str ``"clip_uid:index:start:end"`` (unique per chunk); ``position``: int (the
        sample's index, i.e. the original's unshuffled loader order, which the legacy metric depends on).

    Raises:
        FileNotFoundError: split list, ground truth, a clip's wav or the image folder missing (names it).
        ValueError: malformed ground-truth or track files (names the file and field).
    """

    def __init__(self, root: Union[str, os.PathLike], split: str, face_size: int = 224, min_train_len: int = 15,
                 label_mode: str = "official", chunk_frames: int = CHUNK_FRAMES,
                 paths: Optional[TTMPaths] = None, training: Optional[bool] = None) -> None:
        if face_size < 1 or chunk_frames < 1:
            raise ValueError(f"face_size and chunk_frames must be >= 1, got {face_size} and {chunk_frames}")
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {list(LABEL_MODES)}, got {label_mode!r}")
        self.paths = paths or ttm_paths(root)
        self.split = split
        self.face_size = face_size
        self.label_mode = label_mode
        self.warnings = WarningCounter()
        if not self.paths.image_dir.is_dir():
            raise FileNotFoundError(f"TTM image folder not found: {self.paths.image_dir}")
        split_file = Path(split) if split.endswith(".list") else self.paths.split_file(split)
        is_train = "train" in split_file.name if training is None else training
        self.clip_uids = read_split(split_file)
        # segments[i] = (clip_uid, person, label, start, end, index); boxes[clip][(frame, person)] = box
        self.segments: list[tuple[str, str, int, int, int, int]] = []
        self.boxes: dict[str, dict[tuple[int, str], tuple]] = {}
        for clip_uid in self.clip_uids:
            wav = self.paths.wave_dir / f"{clip_uid}.wav"
            if not wav.is_file():
                raise FileNotFoundError(f"TTM audio of clip {clip_uid} not found: {wav}")
            clip_boxes: dict[tuple[int, str], tuple] = {}
            for records in load_clip_tracks(self.paths.json_dir, clip_uid, sort=False,
                                            warnings=self.warnings).values():
                for record in records:
                    x, y = float(record["x"]), float(record["y"])
                    clip_boxes[(int(record["frameNumber"]), str(record["Person ID"]))] = (
                        x, y, x + float(record["width"]), y + float(record["height"]))
            self.boxes[clip_uid] = clip_boxes
            for segment in read_ttm_segments(self.paths.gt_dir / f"{clip_uid}.json", label_mode):
                start, end, person = segment["start_frame"], segment["end_frame"], segment["person"]
                length = end - start + 1
                if length <= 1 or person == "0" or (is_train and length < min_train_len):
                    continue
                for chunk_start, chunk_end in chunk_segment(start, end, chunk_frames):
                    self.segments.append((clip_uid, person, segment["label"], chunk_start, chunk_end,
                                          segment["index"]))

    def __len__(self) -> int:
        return len(self.segments)

    @property
    def lengths(self) -> list[int]:
        """``end - start`` of every chunk: the length the frame-budget sampler sorts and budgets by."""
        return [end - start for _, _, _, start, end, _ in self.segments]

    @property
    def labels(self) -> list[int]:
        """Label of every chunk."""
        return [segment[2] for segment in self.segments]

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip_uid, person, label, start, end, entry = self.segments[index]
        clip_boxes = self.boxes[clip_uid]
        frames = []
        for frame in range(start, end + 1):
            box = clip_boxes.get((frame, person))
            face = None
            if box is not None:
                face, _ = read_face(frame_image_path(self.paths.image_dir, clip_uid, frame), self.face_size, box,
                                    self.warnings)
            frames.append(_black(self.face_size) if face is None else face)
        samples, _ = read_wav_window(self.paths.wave_dir / f"{clip_uid}.wav", start, end)
        if samples.size == 0:
            self.warnings.warn("empty audio window", f"{clip_uid} frames {start}..{end}")
        return {
            "video": normalise_frames(np.stack(frames)),
            "audio": _audio_tensor(samples),
            "label": label,
            "clip_uid": clip_uid,
            "person": person,
            "index": entry,
            "start": start,
            "end": end,
            "chunk_id": f"{clip_uid}:{entry}:{start}:{end}",
            "position": index,
        }


class TTMTestDataset(Dataset):
    """The TTM challenge test release, chunked like the training segments.

    Args:
        test_dir: ``final_test_data`` folder (``<segment_id>/face/<frame>.jpg``, ``<segment_id>/audio/aud.wav``).
        seg_info: ``seg_info.json`` (``{segment_id: {"frame_list": [...], "frame_num": int}}``).
        face_size: output side (the release's crops are 224 x 224; other sizes are resized).
        chunk_frames: chunk stride (150).

    Sample (dict):
        ``video``: float32 [T, 3, S, S]; ``audio``: float32 [A]; ``segment_id``: str; ``start``, ``end``: int
        (chunk frames, inclusive, 0-based within the segment); ``chunk_id``: str ``"segment_id:start:end"``.

    Raises:
        FileNotFoundError: ``test_dir``, ``seg_info`` or a segment's ``audio/aud.wav`` missing.
        ValueError: ``seg_info.json`` lacks a segment of the release or a field (names both).
    """

    def __init__(self, test_dir: Union[str, os.PathLike], seg_info: Union[str, os.PathLike], face_size: int = 224,
                 chunk_frames: int = CHUNK_FRAMES) -> None:
        self.test_dir = Path(test_dir)
        if not self.test_dir.is_dir():
            raise FileNotFoundError(f"TTM test release not found: {self.test_dir} (expected final_test_data/"
                                    f"<segment_id>/face/<frame>.jpg and audio/aud.wav)")
        self.face_size = face_size
        self.warnings = WarningCounter()
        info = read_json(seg_info, "TTM seg_info.json")
        if not isinstance(info, dict):
            raise ValueError(f"{seg_info}: expected an object keyed by segment id")
        self.frame_lists: dict[str, list[int]] = {}
        self.face_files: dict[str, dict[int, Path]] = {}
        self.segments: list[tuple[str, int, int]] = []
        for segment_dir in sorted(p for p in self.test_dir.iterdir() if p.is_dir()):
            segment_id = segment_dir.name
            entry = info.get(segment_id)
            if not isinstance(entry, dict):
                raise ValueError(f"{seg_info}: no entry for segment {segment_id} of {self.test_dir}")
            frame_num, frame_list = entry.get("frame_num"), entry.get("frame_list")
            if isinstance(frame_num, bool) or not isinstance(frame_num, int) or frame_num < 1:
                raise ValueError(f"{seg_info}: {segment_id}.frame_num must be a positive integer, got {frame_num!r}")
            if not isinstance(frame_list, list):
                raise ValueError(f"{seg_info}: {segment_id}.frame_list must be a list of frame ids")
            if not (segment_dir / "audio" / "aud.wav").is_file():
                raise FileNotFoundError(f"TTM test audio not found: {segment_dir / 'audio' / 'aud.wav'}")
            self.frame_lists[segment_id] = [int(frame) for frame in frame_list]
            face_dir = segment_dir / "face"
            if face_dir.is_dir():
                self.face_files[segment_id] = {int(p.stem): p for p in face_dir.glob("*.jpg") if p.stem.isdigit()}
            else:
                self.warnings.warn("test segment without a face folder (all frames black)", str(face_dir))
                self.face_files[segment_id] = {}
            for start, end in chunk_segment(0, frame_num - 1, chunk_frames):
                self.segments.append((segment_id, start, end))

    def __len__(self) -> int:
        return len(self.segments)

    @property
    def lengths(self) -> list[int]:
        """``end - start`` of every chunk."""
        return [end - start for _, start, end in self.segments]

    def __getitem__(self, index: int) -> dict[str, Any]:
        segment_id, start, end = self.segments[index]
        files = self.face_files[segment_id]
        frames = []
        for frame in range(start, end + 1):
            face = None
            if frame in files:
                face, _ = read_face(files[frame], self.face_size, None, self.warnings)
            frames.append(_black(self.face_size) if face is None else face)
        samples, _ = read_wav_window(self.test_dir / segment_id / "audio" / "aud.wav", start, end)
        if samples.size == 0:
            self.warnings.warn("empty audio window", f"test segment {segment_id} frames {start}..{end}")
        return {
            "video": normalise_frames(np.stack(frames)),
            "audio": _audio_tensor(samples),
            "segment_id": segment_id,
            "start": start,
            "end": end,
            "chunk_id": f"{segment_id}:{start}:{end}",
        }


class FrameBudgetBatchSampler(Sampler):
    """Batches of similar-length segments that fit a frame budget (hhi spec §3.2), without touching the dataset.

    Each epoch (with ``shuffle``): shuffle the sample order, stable-sort by length (descending), cut consecutive
    runs of max(int(frame_budget / L), 1) samples, L being the length of the run's first (longest) sample, then
    shuffle the order inside every batch and the order of the batches. Without ``shuffle`` the runs are cut from the
    dataset order as it is. All randomness comes from ``seed`` and the epoch (``set_epoch``), so an epoch's batches
    are reproducible in any process.

    Distributed training: with ``num_replicas`` > 1 (default: the world size of an initialised
    ``torch.distributed`` group, read when iterating) the epoch's batch list is padded by repeating its first
    batches to a multiple of the number of processes and rank r takes batches r, r + R, ..., so every process runs
    the same number of steps. Use it with ``Trainer(use_distributed_sampler=False)``.

    Args:
        lengths: per-sample length used for sorting and budgeting (``TTMDataset.lengths`` = end - start).
        frame_budget: frames per batch (400 in the official runs: two 151-frame chunks, or 28 15-frame segments).
        shuffle: shuffle as described (train); False keeps the dataset order.
        seed: base seed of the shuffles.
        drop_last: drop the epoch's last run when it holds fewer samples than its budget allows.
        legacy_truncated_epochs: report ``len()`` = int(N / frame_budget) (per process: divided by the number of
            processes, rounded up) as the original sampler did. Lightning ends the epoch after that many batches,
            so each epoch trains on a small random subset of the batches; needed to reproduce the published TTM
            numbers (spec §3.5). Default False: ``len()`` is the real number of batches.
        num_replicas, rank: explicit distributed layout (default: from ``torch.distributed``, else 1 and 0).
    """

    def __init__(self, lengths: Sequence[int], frame_budget: int = 400, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, legacy_truncated_epochs: bool = False,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None) -> None:
        if frame_budget < 1:
            raise ValueError(f"frame_budget must be >= 1, got {frame_budget}")
        if num_replicas is not None and (num_replicas < 1 or rank is None or not 0 <= rank < num_replicas):
            raise ValueError(f"rank must be in [0, num_replicas), got rank={rank} num_replicas={num_replicas}")
        self.lengths = [int(length) for length in lengths]
        self.frame_budget = int(frame_budget)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.legacy_truncated_epochs = legacy_truncated_epochs
        self._num_replicas = num_replicas
        self._rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle ``__iter__`` produces (Lightning calls this every epoch)."""
        self.epoch = int(epoch)

    def _layout(self) -> tuple[int, int]:
        if self._num_replicas is not None:
            return self._num_replicas, int(self._rank)
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def _capacity(self, length: int) -> int:
        return max(int(self.frame_budget / max(length, 1)), 1)

    def all_batches(self) -> list[list[int]]:
        """The epoch's batches over all processes (before sharding)."""
        order = np.arange(len(self.lengths))
        generator = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            generator.shuffle(order)
            order = sorted(order.tolist(), key=lambda i: -self.lengths[i])
        else:
            order = order.tolist()
        batches, start = [], 0
        while start < len(order):
            size = self._capacity(self.lengths[order[start]])
            batch = order[start:start + size]
            if len(batch) < size and self.drop_last:
                break
            batches.append(batch)
            start += size
        if self.shuffle:
            batches = [[batch[i] for i in generator.permutation(len(batch))] for batch in batches]
            batches = [batches[i] for i in generator.permutation(len(batches))]
        return batches

    def _num_batches(self) -> int:
        """Number of batches of an epoch (does not depend on the shuffle: only on the sorted lengths)."""
        lengths = sorted(self.lengths, reverse=True) if self.shuffle else self.lengths
        count, start = 0, 0
        while start < len(lengths):
            size = self._capacity(lengths[start])
            if start + size > len(lengths) and self.drop_last:
                break
            count += 1
            start += size
        return count

    def __iter__(self) -> Iterator[list[int]]:
        replicas, rank = self._layout()
        batches = self.all_batches()
        if replicas > 1 and batches:
            padding = (-len(batches)) % replicas
            batches = batches + [batches[i % len(batches)] for i in range(padding)]
            batches = batches[rank::replicas]
        return iter(batches)

    def __len__(self) -> int:
        replicas, _ = self._layout()
        if self.legacy_truncated_epochs:
            return math.ceil(int(len(self.lengths) / self.frame_budget) / replicas)
        return math.ceil(self._num_batches() / replicas)


def collate_truncate(samples: Sequence[dict]) -> dict[str, Any]:
    """Stack TTM samples, cutting every video to the batch's shortest T and every waveform to the shortest A.

    Args:
        samples: dataset samples with ``video`` [T_i, 3, S, S] and ``audio`` [A_i].

    Returns:
        ``video`` [B, min T, 3, S, S], ``audio`` [B, min A]; int fields as int64 tensors [B]; str fields as lists.
    """
    if not samples:
        raise ValueError("collate_truncate: empty batch")
    frames = min(sample["video"].shape[0] for sample in samples)
    audio_length = min(sample["audio"].shape[0] for sample in samples)
    batch: dict[str, Any] = {
        "video": torch.stack([sample["video"][:frames] for sample in samples]),
        "audio": torch.stack([sample["audio"][:audio_length] for sample in samples]),
    }
    for key in samples[0]:
        if key in batch:
            continue
        values = [sample[key] for sample in samples]
        if isinstance(values[0], (int, np.integer)) and not isinstance(values[0], bool):
            batch[key] = torch.tensor([int(value) for value in values], dtype=torch.int64)
        elif isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch


def build_ttm_dataset(cfg: Any, split: str, root: Optional[Union[str, os.PathLike]] = None) -> Dataset:
    """The TTM dataset of ``split`` ("train", "val" or "test") from a config with the ``TTM`` and ``HHI`` sections.

    Args:
        cfg: merged config (``HHI.FACE_SIZE``, ``HHI.LABEL_MODE``, ``TTM.*``).
        split: "train", "val" or "test" (the challenge release).
        root: data root; default ``egot2.config.resolve_data_root(cfg=cfg)``.
    """
    from egot2.config import resolve_data_root  # noqa: PLC0415

    root = Path(root) if root is not None else resolve_data_root(cfg=cfg)
    ttm = cfg.TTM
    paths = ttm_paths(root, ttm.IMG_PATH, ttm.WAVE_PATH, ttm.GT_PATH, ttm.JSON_PATH, ttm.TEST_DATA_PATH,
                      ttm.SEG_INFO)
    if split == "test":
        return TTMTestDataset(paths.test_dir, paths.seg_info, face_size=cfg.HHI.FACE_SIZE,
                              chunk_frames=ttm.CHUNK_FRAMES)
    split_files = {"train": ttm.TRAIN_FILE, "val": ttm.VAL_FILE}
    if split not in split_files:
        raise ValueError(f"TTM split must be 'train', 'val' or 'test', got {split!r}")
    split_file = str(resolve_path(split_files[split], paths.split_file(split)))
    return TTMDataset(root, split_file, face_size=cfg.HHI.FACE_SIZE, min_train_len=ttm.MIN_TRAIN_LEN,
                      label_mode=cfg.HHI.LABEL_MODE, chunk_frames=ttm.CHUNK_FRAMES, paths=paths,
                      training=split == "train")
