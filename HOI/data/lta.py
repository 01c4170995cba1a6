"""AR and LTA datasets over the prepared FHO-LTA layout (spec hoi.md §2.3, §5.2-§5.4).

Layout read (relative to the data root, as ``HOI.prepare`` writes it)::

    lta/annotations/fho_lta_{train,val,test_unannotated}.json    one item per annotated action
    lta/annotations/fho_lta_taxonomy.json                        {"verbs": [...], "nouns": [...]}, v1: 115 / 478
    lta/clips/<clip_uid>.mp4                                     canonical clips (320p in Ego4D)

Both datasets are ordinary map-style datasets, index → (video, window), so any (distributed) sampler gives "one
sample per annotated action (AR) / per window (LTA) per epoch" — the original wrapped an iterable pytorchvideo
dataset whose ``__getitem__`` ignored the index (§5.4, §11 item 21).

Temporal sampling: a clip of ``NUM_FRAMES × SAMPLING_RATE / TARGET_FPS`` seconds (32 × 2 / 30 = 2.133 s) inside
the action's annotation window: centred for val/test; uniformly random for train, or centred with
``legacy_centre_train`` (what EgoT2 actually did, §11 item 9). Windows are clamped to the container's duration and
every clamp is counted and logged (§11 item 34). The clip's frames are decoded once, at the container's rate, then
subsampled to NUM_FRAMES by :class:`~HOI.data.video_transforms.SlowFastClipTransform`.

LTA windows (§5.3): actions grouped by ``clip_uid`` and sorted by ``action_idx``; a clip with M actions gives the
official windows i = 0 … M − Z − N − 1 (the enumeration of the challenge keys and of the papers' val numbers), plus
window M − Z − N for training with ``extra_train_window`` (§11 item 12). Window i observes actions i … i+N−1 and
forecasts actions i+N … i+N+Z−1; its key is ``<clip_uid>_<action_idx>`` of the last observed action.
"""
from __future__ import annotations

import json
import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from egot2 import media
from HOI.data.video_transforms import SlowFastClipTransform

__all__ = [
    "SPLIT_FILES",
    "V1_NUM_CLASSES",
    "TAXONOMY_FILE",
    "LtaAction",
    "LtaWindow",
    "ClipTiming",
    "annotation_path",
    "load_taxonomy",
    "read_lta_annotations",
    "enumerate_windows",
    "ClipReader",
    "RecognitionDataset",
    "LongTermAnticipationDataset",
    "transform_from_config",
    "dataset_paths_from_config",
]

logger = logging.getLogger(__name__)

#: Split name → suffix of the official annotation file ``fho_lta_<suffix>.json``.
SPLIT_FILES = {"train": "train", "val": "val", "test": "test_unannotated"}
#: Ego4D v1 taxonomy sizes (verbs, nouns); the released checkpoints use them (spec §1, §11 item 26).
V1_NUM_CLASSES = (115, 478)
TAXONOMY_FILE = "fho_lta_taxonomy.json"
PathLike = Union[str, Path]


# ----------------------------------------------------------------------------------------------------- annotations

@dataclass(frozen=True)
class LtaAction:
    """One annotated action of ``fho_lta_<split>.json``.

    Attributes:
        clip_uid: canonical clip; its video is ``<clip_uid>.mp4``.
        action_idx: order of the action in the clip.
        start_sec, end_sec: the action's (≈ 8 s) window inside the clip (``action_clip_start_sec/_end_sec``).
        verb, noun: class indices, -1 when the split is unannotated.
        source: annotation file and item position, for error messages.
    """

    clip_uid: str
    action_idx: int
    start_sec: float
    end_sec: float
    verb: int
    noun: int
    source: str

    @property
    def uid(self) -> str:
        """``<clip_uid>_<action_idx>``, the AR sample id and the LTA window key format."""
        return f"{self.clip_uid}_{self.action_idx}"


@dataclass(frozen=True)
class LtaWindow:
    """N observed actions followed by Z future actions of one clip."""

    observed: Tuple[LtaAction, ...]
    future: Tuple[LtaAction, ...]

    @property
    def clip_uid(self) -> str:
        return self.observed[-1].clip_uid

    @property
    def key(self) -> str:
        """``<clip_uid>_<action_idx>`` of the last observed action: the submission key."""
        return self.observed[-1].uid


def annotation_path(annotation_dir: PathLike, split: str) -> Path:
    """``<annotation_dir>/fho_lta_{train,val,test_unannotated}.json`` for split ``train``/``val``/``test``."""
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown LTA split {split!r}; expected one of {sorted(SPLIT_FILES)}")
    return Path(annotation_dir) / f"fho_lta_{SPLIT_FILES[split]}.json"


def _read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def load_taxonomy(path: PathLike, num_classes: Sequence[int] = V1_NUM_CLASSES) -> Dict[str, List[str]]:
    """Read ``fho_lta_taxonomy.json`` and check that it is the expected version.

    Args:
        path: the taxonomy file.
        num_classes: expected (verbs, nouns); v1 = (115, 478). The v2 file (117, 521) does not fit the v1
            checkpoints: its extra classes would be silently mislabelled.

    Returns:
        ``{"verbs": [...], "nouns": [...]}``.

    Raises:
        FileNotFoundError: no such file. ValueError: a field is missing or the sizes differ (names the field).
    """
    path = Path(path)
    data = _read_json(path)
    taxonomy = {}
    for field, expected in zip(("verbs", "nouns"), num_classes):
        values = data.get(field) if isinstance(data, dict) else None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{path}: field '{field}' missing or not a list of strings")
        if len(values) != expected:
            raise ValueError(
                f"{path}: field '{field}' has {len(values)} classes, the model expects {expected} "
                f"(MODEL.NUM_CLASSES {list(num_classes)}; Ego4D v1 = 115 verbs / 478 nouns, v2 = 117 / 521 — "
                f"use the v1 annotations with the v1 checkpoints)")
        taxonomy[field] = values
    return taxonomy


def _number(item: dict, name: str, where: str) -> float:
    value = item.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problem = "is missing" if name not in item else f"must be a number, got {value!r}"
        raise ValueError(f"{where}: field '{name}' {problem}")
    return float(value)


def _integer(item: dict, name: str, where: str) -> int:
    value = item.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        problem = "is missing" if name not in item else f"must be an integer, got {value!r}"
        raise ValueError(f"{where}: field '{name}' {problem}")
    return value


def read_lta_annotations(path: PathLike, num_classes: Sequence[int] = V1_NUM_CLASSES,
                         labelled: bool = True) -> List[LtaAction]:
    """Parse ``fho_lta_<split>.json`` into actions, validating every field the datasets use.

    Args:
        path: the annotation file (an object with a ``clips`` array, as released).
        num_classes: (verbs, nouns); labels must lie in ``[0, n)``.
        labelled: labels required (train/val); False for ``test_unannotated`` (labels become -1).

    Returns:
        The actions in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an object with ``clips``, a field missing or mistyped, a label out of range, an empty
            window or a repeated ``(clip_uid, action_idx)`` — naming the file, the item and the field.
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("clips"), list):
        raise ValueError(f"{path}: field 'clips' missing or not a list (expected the released format, an object "
                         f"with a 'clips' array)")
    actions, seen = [], {}
    for position, item in enumerate(data["clips"]):
        where = f"{path}: clips[{position}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: not an object")
        clip_uid = item.get("clip_uid")
        if not isinstance(clip_uid, str) or not clip_uid:
            raise ValueError(f"{where}: field 'clip_uid' missing or not a string")
        where = f"{where} ({clip_uid})"
        action_idx = _integer(item, "action_idx", where)
        start = _number(item, "action_clip_start_sec", where)
        end = _number(item, "action_clip_end_sec", where)
        if not end > start:
            raise ValueError(f"{where}: action_clip_end_sec {end} is not after action_clip_start_sec {start}")
        verb = noun = -1
        if labelled:
            verb = _integer(item, "verb_label", where)
            noun = _integer(item, "noun_label", where)
            for name, label, count in (("verb_label", verb, num_classes[0]), ("noun_label", noun, num_classes[1])):
                if not 0 <= label < count:
                    raise ValueError(f"{where}: field '{name}' = {label} is outside [0, {count}) (MODEL.NUM_CLASSES "
                                     f"{list(num_classes)}; Ego4D v1 has 115 verbs and 478 nouns)")
        if (clip_uid, action_idx) in seen:
            raise ValueError(f"{where}: action_idx {action_idx} of clip {clip_uid} already appears at "
                             f"clips[{seen[(clip_uid, action_idx)]}]")
        seen[(clip_uid, action_idx)] = position
        actions.append(LtaAction(clip_uid, action_idx, start, end, verb, noun, f"{path.name} clips[{position}]"))
    return actions


def enumerate_windows(actions: Sequence[LtaAction], num_input_clips: int = 2, num_future: int = 20,
                      extra_window: bool = False) -> List[LtaWindow]:
    """LTA windows of every clip, clips in order of first appearance, windows in order.

    A clip with M actions gives windows i = 0 … M − Z − N − 1 (the official enumeration); ``extra_window`` adds
    window M − Z − N, the last one whose future is complete (used for training only, §11 item 12).

    Args:
        actions: all actions of a split.
        num_input_clips: N observed actions.
        num_future: Z forecast actions.
        extra_window: add the window the official enumeration leaves out.
    """
    if num_input_clips < 1 or num_future < 1:
        raise ValueError(f"LTA windows need N >= 1 and Z >= 1, got N={num_input_clips}, Z={num_future}")
    by_clip: "OrderedDict[str, List[LtaAction]]" = OrderedDict()
    for action in actions:
        by_clip.setdefault(action.clip_uid, []).append(action)
    windows = []
    for clip_actions in by_clip.values():
        clip_actions = sorted(clip_actions, key=lambda a: a.action_idx)
        count = len(clip_actions) - num_future - num_input_clips + (1 if extra_window else 0)
        for i in range(max(count, 0)):
            observed = tuple(clip_actions[i:i + num_input_clips])
            future = tuple(clip_actions[i + num_input_clips:i + num_input_clips + num_future])
            windows.append(LtaWindow(observed, future))
    return windows


# ------------------------------------------------------------------------------------------------------- decoding

@dataclass(frozen=True)
class ClipTiming:
    """Where the input clip sits inside an action window.

    Attributes:
        num_frames: frames after temporal subsampling (``DATA.NUM_FRAMES``).
        sampling_rate: stride in frames at ``target_fps`` (``DATA.SAMPLING_RATE``).
        target_fps: frame rate the stride refers to (``DATA.TARGET_FPS``).
    """

    num_frames: int = 32
    sampling_rate: int = 2
    target_fps: float = 30.0

    @property
    def duration(self) -> float:
        """Seconds covered by one input clip: 32 × 2 / 30 = 2.133 s."""
        return self.num_frames * self.sampling_rate / self.target_fps


class ClipReader:
    """Decodes one input clip per action window from ``<video_dir>/<clip_uid>.mp4``.

    Container facts are read once per video and cached; the clip's frames are decoded once per call, seeking to
    the window. Windows reaching past the end of the video are clamped, and the clamps counted (:attr:`clamped`).

    Args:
        video_dir: folder of ``<clip_uid>.mp4`` (``DATA.PATH_PREFIX``).
        timing: input clip length.
    """

    def __init__(self, video_dir: PathLike, timing: ClipTiming) -> None:
        self.video_dir = Path(video_dir)
        self.timing = timing
        self._info: Dict[str, dict] = {}
        #: action uid -> clamps so far (per process: each dataloader worker counts its own samples).
        self.clamped: Counter = Counter()

    def video_path(self, clip_uid: str) -> Path:
        return self.video_dir / f"{clip_uid}.mp4"

    def info(self, clip_uid: str) -> dict:
        """``egot2.media.video_info`` of the clip's video (cached)."""
        if clip_uid not in self._info:
            path = self.video_path(clip_uid)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: video of clip {clip_uid} not found (DATA.PATH_PREFIX "
                                        f"{self.video_dir})")
            self._info[clip_uid] = media.video_info(path)
        return self._info[clip_uid]

    def clip_start(self, action: LtaAction, random: bool, generator: Optional[torch.Generator] = None) -> float:
        """Start second of the input clip inside ``action``'s window (clamped to the video).

        Args:
            action: the action.
            random: uniform position in the window (training); otherwise the centred clip.
            generator: random source.
        """
        duration = self.info(action.clip_uid)["duration"]
        length = self.timing.duration
        if duration < length:
            raise media.MediaError(
                f"{self.video_path(action.clip_uid)}: video lasts {duration:.3f} s, shorter than one input clip "
                f"({length:.3f} s = DATA.NUM_FRAMES x DATA.SAMPLING_RATE / DATA.TARGET_FPS), needed by "
                f"{action.source}")
        start, end = max(action.start_sec, 0.0), min(action.end_sec, duration)
        if (start, end) != (action.start_sec, action.end_sec):
            self._note_clamp(action, duration)
        if random and end - start > length:
            position = start + float(torch.rand((), generator=generator, dtype=torch.float64)) * (end - start - length)
        else:
            position = (start + end - length) / 2.0
        return min(max(position, 0.0), duration - length)

    def _note_clamp(self, action: LtaAction, duration: float) -> None:
        self.clamped[action.uid] += 1
        if self.clamped[action.uid] == 1:
            logger.warning("%s: action window %.3f-%.3f s of %s reaches outside its video (%.3f s); clamped "
                           "(%d window(s) clamped so far)", action.source, action.start_sec, action.end_sec,
                           action.uid, duration, len(self.clamped))

    def read(self, action: LtaAction, random: bool = False, generator: Optional[torch.Generator] = None
             ) -> np.ndarray:
        """Decode the input clip of ``action``.

        Returns:
            uint8 ``[T, H, W, 3]`` with T = the clip's length at the container's frame rate (≈ 64 at 30 fps).

        Raises:
            FileNotFoundError: the video is missing. ``egot2.media.MediaError``: the video is corrupt or too short;
            the message names the file, the action and the window.
        """
        path = self.video_path(action.clip_uid)
        try:
            info = self.info(action.clip_uid)
            start = self.clip_start(action, random, generator)
            fps = info["fps"]
            count = max(1, int(round(self.timing.duration * fps)))
            first = min(int(round(start * fps)), max(info["num_frames"] - count, 0))
            return media.read_video_frames(path, first, first + count)
        except media.MediaError as err:
            raise media.MediaError(f"cannot read the input clip of {action.uid} ({action.source}, window "
                                   f"{action.start_sec:.3f}-{action.end_sec:.3f} s): {err}") from err


# -------------------------------------------------------------------------------------------------------- datasets

def _check_taxonomy(annotation_dir: Path, num_classes: Sequence[int]) -> None:
    taxonomy = annotation_dir / TAXONOMY_FILE
    if taxonomy.is_file():
        load_taxonomy(taxonomy, num_classes)


class _LtaBase(Dataset):
    def __init__(self, annotation_dir: PathLike, video_dir: PathLike, split: str, transform: SlowFastClipTransform,
                 timing: ClipTiming, num_classes: Sequence[int], legacy_centre_train: bool,
                 labelled: Optional[bool]) -> None:
        self.annotation_dir = Path(annotation_dir)
        self.split = split
        self.annotation_file = annotation_path(self.annotation_dir, split)
        self.num_classes = tuple(int(n) for n in num_classes)
        _check_taxonomy(self.annotation_dir, self.num_classes)
        self.labelled = split != "test" if labelled is None else labelled
        self.actions = read_lta_annotations(self.annotation_file, self.num_classes, self.labelled)
        self.transform = transform
        self.reader = ClipReader(video_dir, timing)
        # Temporal jitter only in training, and not when reproducing EgoT2's centred training clips.
        self.random_position = split == "train" and not legacy_centre_train

    def _clips(self, actions: Sequence[LtaAction]) -> Tuple[torch.Tensor, torch.Tensor]:
        clips = [self.reader.read(action, random=self.random_position) for action in actions]
        shapes = {clip.shape[1:] for clip in clips}
        if len(shapes) != 1:
            raise media.MediaError(f"{self.reader.video_dir}: clips of one window have different frame sizes "
                                   f"{sorted(shapes)} ({', '.join(a.uid for a in actions)})")
        return self.transform(clips)


class RecognitionDataset(_LtaBase):
    """Action recognition: one sample per annotated action (spec §5.2).

    Sample (a dict; batches collate field by field):

    - ``slow``: float32 ``(3, T/alpha, S, S)`` (8 frames at paper settings), ``fast``: ``(3, T, S, S)`` (32);
    - ``verb``, ``noun``: int class indices (-1 on an unannotated split);
    - ``uid``: ``"<clip_uid>_<action_idx>"``; ``clip_uid``: str; ``action_idx``: int;
    - ``start_sec``, ``end_sec``: float, the annotation window (as EgoT2 returns it for its auxiliary views).

    Args:
        annotation_dir: folder of the ``fho_lta_*.json`` files (``DATA.PATH_TO_DATA_DIR``).
        video_dir: folder of ``<clip_uid>.mp4`` (``DATA.PATH_PREFIX``).
        split: ``train``, ``val`` or ``test`` (``fho_lta_test_unannotated.json``).
        transform: spatial/temporal transform; its ``train`` flag should match the split.
        timing: input clip length.
        num_classes: (verbs, nouns), v1 (115, 478); labels are range-checked, the taxonomy file (if present)
            size-checked.
        legacy_centre_train: centred clips in training too (EgoT2's behaviour) instead of a random position.
        labelled: whether labels are required (default: every split but ``test``).
    """

    def __init__(self, annotation_dir: PathLike, video_dir: PathLike, split: str,
                 transform: SlowFastClipTransform, timing: ClipTiming = ClipTiming(),
                 num_classes: Sequence[int] = V1_NUM_CLASSES, legacy_centre_train: bool = False,
                 labelled: Optional[bool] = None) -> None:
        super().__init__(annotation_dir, video_dir, split, transform, timing, num_classes, legacy_centre_train,
                         labelled)

    @classmethod
    def from_config(cls, cfg, split: str, data_root: Optional[PathLike] = None) -> "RecognitionDataset":
        """The AR dataset of ``split`` configured by ``cfg`` (paths: see :func:`dataset_paths_from_config`)."""
        return cls(**_common_kwargs(cfg, split, data_root))

    def __len__(self) -> int:
        return len(self.actions)

    def __getitem__(self, index: int) -> dict:
        action = self.actions[index]
        slow, fast = self._clips([action])
        return {
            "slow": slow[0], "fast": fast[0], "verb": action.verb, "noun": action.noun, "uid": action.uid,
            "clip_uid": action.clip_uid, "action_idx": action.action_idx,
            "start_sec": action.start_sec, "end_sec": action.end_sec,
        }


class LongTermAnticipationDataset(_LtaBase):
    """Long-term anticipation: one sample per window of N observed and Z future actions (spec §5.3).

    Sample (a dict):

    - ``slow``: float32 ``(N, 3, T/alpha, S, S)``, ``fast``: ``(N, 3, T, S, S)``: the N observed clips, transformed
      jointly (one scale / crop / flip for all);
    - ``forecast_labels``: int64 ``(Z, 2)`` [verb, noun] of the next Z actions (-1 on the test split);
    - ``observed_labels``: int64 ``(N, 2)``;
    - ``key``: ``"<clip_uid>_<action_idx>"`` of the last observed action (the submission key);
    - ``clip_uid``: str; ``last_action_idx``: int.

    Args:
        annotation_dir, video_dir, split, transform, timing, num_classes, legacy_centre_train, labelled: as
            :class:`RecognitionDataset`.
        num_input_clips: N (``FORECASTING.NUM_INPUT_CLIPS``, 2).
        num_future: Z (``FORECASTING.NUM_ACTIONS_TO_PREDICT``, 20).
        extra_train_window: on the train split, also use the window the official enumeration omits.
    """

    def __init__(self, annotation_dir: PathLike, video_dir: PathLike, split: str,
                 transform: SlowFastClipTransform, timing: ClipTiming = ClipTiming(),
                 num_classes: Sequence[int] = V1_NUM_CLASSES, legacy_centre_train: bool = False,
                 labelled: Optional[bool] = None, num_input_clips: int = 2, num_future: int = 20,
                 extra_train_window: bool = True) -> None:
        super().__init__(annotation_dir, video_dir, split, transform, timing, num_classes, legacy_centre_train,
                         labelled)
        self.num_input_clips = num_input_clips
        self.num_future = num_future
        self.windows = enumerate_windows(self.actions, num_input_clips, num_future,
                                         extra_window=extra_train_window and split == "train")
        if not self.windows:
            raise ValueError(f"{self.annotation_file}: no LTA window: every clip has fewer than "
                             f"N + Z + 1 = {num_input_clips + num_future + 1} actions")

    @classmethod
    def from_config(cls, cfg, split: str, data_root: Optional[PathLike] = None) -> "LongTermAnticipationDataset":
        """The LTA dataset of ``split`` configured by ``cfg`` (``FORECASTING.*``: N, Z, the extra train window)."""
        return cls(**_common_kwargs(cfg, split, data_root), num_input_clips=int(cfg.FORECASTING.NUM_INPUT_CLIPS),
                   num_future=int(cfg.FORECASTING.NUM_ACTIONS_TO_PREDICT),
                   extra_train_window=bool(cfg.FORECASTING.EXTRA_TRAIN_WINDOW))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        window = self.windows[index]
        slow, fast = self._clips(window.observed)
        return {
            "slow": slow, "fast": fast,
            "forecast_labels": torch.tensor([[a.verb, a.noun] for a in window.future], dtype=torch.long),
            "observed_labels": torch.tensor([[a.verb, a.noun] for a in window.observed], dtype=torch.long),
            "key": window.key, "clip_uid": window.clip_uid, "last_action_idx": window.observed[-1].action_idx,
        }


# ----------------------------------------------------------------------------------------------------- from config

def dataset_paths_from_config(cfg, data_root: Optional[PathLike] = None) -> Tuple[Path, Path]:
    """``(annotation_dir, video_dir)`` from ``DATA.PATH_TO_DATA_DIR`` / ``DATA.PATH_PREFIX``.

    Relative values are taken from the data root (``--data_dir`` > ``DATA.ROOT`` > ``$EGO4D_DATA`` > ``data/``).
    """
    from egot2.config import resolve_data_root

    root = resolve_data_root(data_dir=data_root, cfg=cfg)
    return root / str(cfg.DATA.PATH_TO_DATA_DIR), root / str(cfg.DATA.PATH_PREFIX)


def transform_from_config(cfg, train: bool) -> SlowFastClipTransform:
    """The SlowFast clip transform of the ``DATA.*`` / ``SLOWFAST.ALPHA`` keys (training or evaluation view)."""
    flip = "none"
    if cfg.DATA.RANDOM_FLIP:
        flip = "always" if cfg.DATA.LEGACY_ALWAYS_FLIP else "random"
    return SlowFastClipTransform(
        num_frames=int(cfg.DATA.NUM_FRAMES), alpha=int(cfg.SLOWFAST.ALPHA), crop_size=int(cfg.DATA.TRAIN_CROP_SIZE),
        jitter_scales=tuple(int(s) for s in cfg.DATA.TRAIN_JITTER_SCALES), mean=tuple(float(m) for m in cfg.DATA.MEAN),
        std=tuple(float(s) for s in cfg.DATA.STD), train=train, flip=flip)


def _common_kwargs(cfg, split: str, data_root: Optional[PathLike]) -> dict:
    annotation_dir, video_dir = dataset_paths_from_config(cfg, data_root)
    return dict(
        annotation_dir=annotation_dir, video_dir=video_dir, split=split,
        transform=transform_from_config(cfg, train=split == "train"),
        timing=ClipTiming(int(cfg.DATA.NUM_FRAMES), int(cfg.DATA.SAMPLING_RATE), float(cfg.DATA.TARGET_FPS)),
        num_classes=tuple(int(n) for n in cfg.MODEL.NUM_CLASSES), legacy_centre_train=bool(cfg.DATA.LEGACY_CENTRE_TRAIN))
