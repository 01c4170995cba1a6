"""Active speaker detection (ASD) inputs for TalkNet: grey face crops and MFCC rows aligned per video frame.

Layout read here (what ``HHI/prepare.py`` writes under ``<data root>/asd``, hhi spec §4.1)::

    ego4d/csv/active_speaker_{train,val}.csv   one line per track chunk, tab-separated, no header:
                                               chunk id "clip:track:k", n frames, fps, labels "[0, 1, ...]", first frame
    ego4d/bbox/<clip>:<track>:<k>.json         the chunk's raw box records (``frame``, ``x``, ``y``, ``width``,
                                               ``height``)
    video_imgs/<clip>/img_%05d.jpg             frames; annotation frame f is img_{f:05d}.jpg (§1.6)
    wave/<clip>.wav                            16 kHz mono

Per line (§4.2)::

    boxes in [start, start + n) ─ clean / interpolate (HHI.data.social.clean_track, ``frame`` key, no person check)
        ─ half-size s = max(w, h) / 2, median filter (kernel min(n or n + 1, 13)); centres through the
          non-recursive two-tap filter c'[i] = 0.8 c[i-1] + 0.2 c[i]
        ─ per frame: grey image padded by int(1.8 s) with 110, rows [cy - s, cy + 1.8 s),
          cols [cx - 1.4 s, cx + 1.4 s),
          resize 224, keep the centre 112  ─► faces (v, 112, 112)
    wav window [start / 30 s, (start + n) / 30 s) ─ RMS 0.1 ─ (train: mix another line of the batch at U(-5, 5) dB)
        ─ MFCC (python_speech_features parameters, 4 rows per frame) ─ wrap-pad / cut to 4 n  ─► mfcc (4 n, 13)
    labels cut to n; everything cut to the item's visual length m = min(v, n)

Training uses "dynamic batches": :class:`DynamicBatchSampler` sorts the lines by (n, first frame) descending and cuts
consecutive runs of max(frame_budget // n_first, 1) lines; :func:`collate_active_speaker` cuts every item of a batch to
the batch's shortest visual length. Validation reads one line per batch.

Deliberate differences from the original, each one documented where it happens: missing or corrupt frame images
and empty crops are skipped with a counted warning (the original crashed); a chunk without any valid box is left
out of the dataset with a counted warning; an empty wav window gives zeros with a counted warning (as the
original, which did it silently); the audio-mix augmentation mixes in float (``legacy_int16_mix=True`` restores the
original cast to int16, which silences most mixed tracks, spec §10.1.7); ``max_frames`` can cut long tracks for CPU
runs (evaluation keeps a line's first ``max_frames`` frames, training a window of that length at a random offset,
so that every part of a line is seen). Random augmentation draws from a numpy generator seeded from torch's RNG at
every load, so runs seeded with Lightning's ``seed_everything(workers=True)`` repeat exactly.
"""
from __future__ import annotations

import ast
import decimal
import math
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import cv2
import numpy as np
import scipy.fft
import scipy.signal
import torch
from torch.utils.data import BatchSampler, Dataset, DistributedSampler, Sampler

from egot2 import media
from HHI.data.social import (FPS, WarningCounter, clean_track, frame_image_path, read_json, read_wav_window,
                             rms_normalise)

__all__ = [
    "FACE_SIZE",
    "MFCC_PER_FRAME",
    "NUM_MFCC",
    "SAMPLE_RATE",
    "DEFAULT_FRAME_BUDGET",
    "PAD_VALUE",
    "AUGMENTATIONS",
    "AsdLine",
    "TrackGeometry",
    "read_asd_csv",
    "mfcc",
    "talknet_mfcc",
    "fit_mfcc_rows",
    "smooth_track",
    "crop_talknet_face",
    "augment_faces",
    "mix_audio",
    "ActiveSpeakerDataset",
    "DynamicBatchSampler",
    "collate_active_speaker",
]

FACE_SIZE = 112
"""Side of TalkNet's grey face crops."""
MFCC_PER_FRAME = 4
"""MFCC rows per video frame (the 25-fps MFCC timing stretched to 30 fps)."""
NUM_MFCC = 13
"""MFCC coefficients per row."""
SAMPLE_RATE = 16000
"""Sample rate TalkNet's MFCC assumes."""
DEFAULT_FRAME_BUDGET = 1800
"""Frames per training batch (TalkNet and EgoT2; EgoT2-g uses 600)."""
PAD_VALUE = 110
"""Grey level of the border added around a frame before cropping."""
AUGMENTATIONS = ("orig", "flip", "crop", "rotate")
"""Per-track visual augmentations, drawn uniformly in training."""

# TalkNet crops a square of side 2.8 s around the box centre, shifted down (rows [cy - s, cy + 1.8 s)).
_CROP_SCALE = 0.4
_MEDIAN_KERNEL_MAX = 13
# The previous frame's centre dominates the two-tap filter.
_PREVIOUS_WEIGHT, _CURRENT_WEIGHT = 0.8, 0.2


# ---------------------------------------------------------------------------------------------------------------
# CSV lines
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AsdLine:
    """One line of ``active_speaker_<split>.csv``: a chunk of at most 300 frames of one face track.

    Attributes:
        chunk_id: "clip_uid:track_id:chunk_index" (also the box file's stem).
        clip_uid: the first 36 characters of ``chunk_id``.
        num_frames: n, the chunk's frame count.
        fps: frame rate of the line (30.0).
        labels: n per-frame 0/1 speaking labels.
        start_frame: annotation frame number of the chunk's first frame.
        source: "file:line" for error messages.
    """

    chunk_id: str
    clip_uid: str
    num_frames: int
    fps: float
    labels: tuple
    start_frame: int
    source: str


def _csv_int(text: str, field: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{where}: field '{field}' must be an integer, got {text!r}") from None


def read_asd_csv(path: Union[str, os.PathLike]) -> list[AsdLine]:
    """Parse an ASD csv (tab-separated, no header, 5 columns; spec §4.1).

    Args:
        path: ``active_speaker_<split>.csv``.

    Returns:
        The lines in file order (blank lines ignored).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed line; the message names the file, line number and field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ASD csv not found: {path}")
    lines = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        columns = text.split("\t")
        if len(columns) != 5:
            raise ValueError(f"{where}: expected 5 tab-separated fields (chunk id, n, fps, labels, first frame), "
                             f"found {len(columns)}")
        chunk_id, count, fps_text, label_text, start_text = columns
        if len(chunk_id) < 36 or chunk_id.count(":") < 2:
            raise ValueError(f"{where}: field 'chunk id' must look like '<clip_uid>:<track_id>:<chunk>', "
                             f"got {chunk_id!r}")
        num_frames = _csv_int(count, "n", where)
        start_frame = _csv_int(start_text, "first frame", where)
        try:
            fps = float(fps_text)
        except ValueError:
            raise ValueError(f"{where}: field 'fps' must be a number, got {fps_text!r}") from None
        if fps != FPS:
            raise ValueError(f"{where}: field 'fps' is {fps}, but frames and audio are aligned at {FPS} fps")
        try:
            labels = ast.literal_eval(label_text.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"{where}: field 'labels' must be a list literal like [0, 1], got "
                             f"{label_text[:40]!r}") from None
        if not isinstance(labels, list) or any(type(label) is not int or label not in (0, 1) for label in labels):
            raise ValueError(f"{where}: field 'labels' must be a list of 0/1 integers")
        if num_frames < 1 or len(labels) != num_frames:
            raise ValueError(f"{where}: field 'n' is {num_frames} but 'labels' has {len(labels)} entries")
        lines.append(AsdLine(chunk_id, chunk_id[:36], num_frames, fps, tuple(labels), start_frame, where))
    return lines


# ---------------------------------------------------------------------------------------------------------------
# MFCC (python_speech_features 0.6, as TalkNet calls it)
# ---------------------------------------------------------------------------------------------------------------


def _round_half_up(value: float) -> int:
    return int(decimal.Decimal(value).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def _mel_filterbank(num_filters: int, nfft: int, sample_rate: int) -> np.ndarray:
    """(num_filters, nfft // 2 + 1) triangular filters on FFT bins floor((nfft + 1) · hz / sr), 0 Hz .. sr / 2."""
    mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), num_filters + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mel_points) / sample_rate)
    bank = np.zeros((num_filters, nfft // 2 + 1))
    for index in range(num_filters):
        left, centre, right = bins[index], bins[index + 1], bins[index + 2]
        for fft_bin in range(int(left), int(centre)):
            bank[index, fft_bin] = (fft_bin - left) / (centre - left)
        for fft_bin in range(int(centre), int(right)):
            bank[index, fft_bin] = (right - fft_bin) / (right - centre)
    bank.setflags(write=False)
    return bank


def mfcc(
    signal: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    window_seconds: float = 0.025,
    step_seconds: float = 0.010,
    num_coefficients: int = NUM_MFCC,
    num_filters: int = 26,
    nfft: int = 512,
    preemphasis: float = 0.97,
    lifter: int = 22,
) -> np.ndarray:
    """MFCC exactly as ``python_speech_features.mfcc`` computes it (version 0.6, rectangular window).

    Pre-emphasis → frames of round-half-up(window · sr) samples every round-half-up(step · sr) samples, the last
    one zero-padded → power spectrum |rfft(frame, nfft)|² / nfft → mel filterbank → log → orthonormal
    DCT-II →
    first ``num_coefficients`` → sinusoidal lifter → coefficient 0 replaced by the log frame energy (sum of the
    power spectrum). Zeros become float64 eps before the logs.

    Args:
        signal: (S,) samples (any real dtype; computed in float64). At least one sample.
        sample_rate: Hz.
        window_seconds, step_seconds: frame length and hop.
        num_coefficients, num_filters, nfft, preemphasis, lifter: the usual MFCC parameters.

    Returns:
        (1 + ceil((S - L) / H), num_coefficients) float64 (one row when S <= L).
    """
    signal = np.asarray(signal, dtype=np.float64).reshape(-1)
    if signal.size == 0:
        raise ValueError("mfcc: the signal is empty")
    emphasised = np.concatenate([signal[:1], signal[1:] - preemphasis * signal[:-1]])
    frame_length = _round_half_up(window_seconds * sample_rate)
    frame_step = _round_half_up(step_seconds * sample_rate)
    if len(emphasised) <= frame_length:
        num_frames = 1
    else:
        num_frames = 1 + int(math.ceil((len(emphasised) - frame_length) / frame_step))
    padded = np.zeros((num_frames - 1) * frame_step + frame_length)
    padded[: len(emphasised)] = emphasised
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::frame_step]
    power = np.square(np.abs(np.fft.rfft(frames, nfft))) / nfft
    eps = np.finfo(np.float64).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    filtered = power @ _mel_filterbank(num_filters, nfft, sample_rate).T
    filtered = np.where(filtered == 0, eps, filtered)
    cepstra = scipy.fft.dct(np.log(filtered), type=2, axis=1, norm="ortho")[:, :num_coefficients]
    if lifter > 0:
        cepstra = cepstra * (1.0 + (lifter / 2.0) * np.sin(np.pi * np.arange(num_coefficients) / lifter))
    cepstra[:, 0] = np.log(energy)
    return cepstra


def talknet_mfcc(samples: np.ndarray, fps: float = FPS) -> np.ndarray:
    """TalkNet's MFCC: 13 coefficients, window 0.025·25/fps s, step 0.010·25/fps s (333 / 133 samples at 30 fps).

    Args:
        samples: (S,) 16 kHz audio.
        fps: video frame rate (about 4 MFCC rows per frame).

    Returns:
        (rows, 13) float64.
    """
    return mfcc(samples, SAMPLE_RATE, window_seconds=0.025 * 25 / fps, step_seconds=0.010 * 25 / fps)


def fit_mfcc_rows(features: np.ndarray, num_rows: int) -> np.ndarray:
    """Wrap-pad ``features`` (R, C) to at least ``num_rows`` rows (repeating from the top), then cut to ``num_rows``."""
    if features.shape[0] < num_rows:
        features = np.pad(features, ((0, num_rows - features.shape[0]), (0, 0)), mode="wrap")
    return features[:num_rows]


# ---------------------------------------------------------------------------------------------------------------
# Face geometry
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackGeometry:
    """Smoothed crop geometry of one chunk, one entry per cleaned frame (in track order).

    Attributes:
        frames: (v,) int64 annotation frame numbers.
        centre_x, centre_y: (v,) float64 crop centres after the two-tap filter.
        half_size: (v,) float64 half box size s after the median filter.
    """

    frames: np.ndarray
    centre_x: np.ndarray
    centre_y: np.ndarray
    half_size: np.ndarray


def smooth_track(records: Sequence[dict], frame_key: str = "frame") -> TrackGeometry:
    """TalkNet's box smoothing over cleaned records (hhi §4.2).

    s = max(width, height) / 2 is median-filtered (scipy ``medfilt``, zero-padded ends) with kernel
    min(n if n is odd else n + 1, 13); the centres go through c'[0] = c[0], c'[i] = 0.8·c[i-1] + 0.2·c[i]
    computed from the unfiltered values (the form the released checkpoints were trained with, not an EMA).

    Args:
        records: cleaned records with ``frame_key``, ``x``, ``y``, ``width``, ``height``.
        frame_key: name of the frame-number field.
    """
    count = len(records)
    frames = np.array([int(record[frame_key]) for record in records], dtype=np.int64)
    x1 = np.array([float(record["x"]) for record in records])
    y1 = np.array([float(record["y"]) for record in records])
    width = np.array([float(record["width"]) for record in records])
    height = np.array([float(record["height"]) for record in records])
    half_size = np.maximum(height, width) / 2
    if count:
        with warnings.catch_warnings():
            # A kernel longer than the track zero-pads it; that is the original's behaviour, not a problem.
            warnings.filterwarnings("ignore", message="kernel_size exceeds volume extent")
            half_size = scipy.signal.medfilt(half_size, kernel_size=min(count - count % 2 + 1, _MEDIAN_KERNEL_MAX))
    centre_x, centre_y = x1 + width / 2, y1 + height / 2
    for centre in (centre_x, centre_y):
        centre[1:] = _PREVIOUS_WEIGHT * centre[:-1] + _CURRENT_WEIGHT * centre[1:]
    return TrackGeometry(frames, centre_x, centre_y, half_size)


def crop_talknet_face(grey: np.ndarray, centre_x: float, centre_y: float, half_size: float) -> Optional[np.ndarray]:
    """TalkNet's face crop from a grey frame (hhi §4.2).

    Same pixels as padding the frame by b = int(1.8 s) with 110 on every side and slicing rows
    [int(cy + b - s), int(cy + b + 1.8 s)) and columns [int(cx + b - 1.4 s), int(cx + b + 1.4 s)) of the padded
    frame, then resizing to 224×224 (bilinear) and keeping rows/columns 56..167; only the part of the border that
    the crop touches is built.

    Args:
        grey: (H, W) uint8 frame.
        centre_x, centre_y, half_size: smoothed geometry of the frame (pixels).

    Returns:
        (112, 112) uint8, or None when the crop is empty.
    """
    height, width = grey.shape[:2]
    border = int(half_size * (1 + 2 * _CROP_SCALE))
    centre_y, centre_x = centre_y + border, centre_x + border
    spans = []
    for low, high, size in ((centre_y - half_size, centre_y + half_size * (1 + 2 * _CROP_SCALE), height),
                            (centre_x - half_size * (1 + _CROP_SCALE), centre_x + half_size * (1 + _CROP_SCALE),
                             width)):
        # int() truncates toward zero as the original's slice bounds; a slice is clipped to the padded frame.
        padded = size + 2 * border
        start, stop = min(max(int(low), 0), padded), min(max(int(high), 0), padded)
        spans.append((start, max(stop, start)))
    (top, bottom), (left, right) = spans
    if bottom <= top or right <= left:
        return None
    face = np.full((bottom - top, right - left), PAD_VALUE, dtype=np.uint8)
    source_top, source_bottom = max(top - border, 0), min(bottom - border, height)
    source_left, source_right = max(left - border, 0), min(right - border, width)
    if source_bottom > source_top and source_right > source_left:
        face[source_top + border - top:source_bottom + border - top,
             source_left + border - left:source_right + border - left] = grey[source_top:source_bottom,
                                                                              source_left:source_right]
    face = cv2.resize(face, (2 * FACE_SIZE, 2 * FACE_SIZE), interpolation=cv2.INTER_LINEAR)
    return face[FACE_SIZE // 2:FACE_SIZE // 2 + FACE_SIZE, FACE_SIZE // 2:FACE_SIZE // 2 + FACE_SIZE]


def augment_faces(faces: np.ndarray, kind: str, crop_side: int = FACE_SIZE, crop_x: int = 0, crop_y: int = 0,
                  angle: float = 0.0) -> np.ndarray:
    """Apply one track-level augmentation to every face of a track (TalkNet's visual augmentation).

    Args:
        faces: (v, 112, 112) uint8.
        kind: "orig", "flip" (horizontal), "crop" (square of side ``crop_side`` at column ``crop_x``, row
            ``crop_y``, resized back to 112) or "rotate" (by ``angle`` degrees about the centre, black corners).

    Returns:
        (v, 112, 112) uint8.
    """
    if kind == "orig" or len(faces) == 0:
        return faces
    if kind == "flip":
        return np.ascontiguousarray(faces[:, :, ::-1])
    if kind == "crop":
        return np.stack([cv2.resize(face[crop_y:crop_y + crop_side, crop_x:crop_x + crop_side], (FACE_SIZE, FACE_SIZE),
                                    interpolation=cv2.INTER_LINEAR) for face in faces])
    if kind == "rotate":
        matrix = cv2.getRotationMatrix2D((FACE_SIZE / 2, FACE_SIZE / 2), angle, 1)
        return np.stack([cv2.warpAffine(face, matrix, (FACE_SIZE, FACE_SIZE)) for face in faces])
    raise ValueError(f"augment_faces: kind must be one of {AUGMENTATIONS}, got {kind!r}")


def mix_audio(audio: np.ndarray, noise: np.ndarray, snr_db: float, legacy_int16: bool = False) -> np.ndarray:
    """Mix ``noise`` into ``audio`` at ``snr_db`` (TalkNet's audio augmentation).

    The noise is wrap-padded or cut to the audio's length and scaled so that
    10·log10(mean(audio²) + 1e-4) − 10·log10(mean(noise²) + 1e-4) equals ``snr_db``, then added.

    Args:
        audio, noise: (S,), (S') RMS-normalised float audio.
        snr_db: signal-to-noise ratio in dB.
        legacy_int16: cast the mix to int16 as the original did. The inputs have RMS 0.1, so the cast truncates
            almost every sample to 0 and the track's audio is nearly silenced (spec §10.1.7); only for parity runs.

    Returns:
        (S,) float64, or int16 with ``legacy_int16``.
    """
    audio = np.asarray(audio, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if len(audio) == 0 or len(noise) == 0:
        return audio.astype(np.int16) if legacy_int16 else audio
    if len(noise) < len(audio):
        noise = np.pad(noise, (0, len(audio) - len(noise)), mode="wrap")
    else:
        noise = noise[: len(audio)]
    noise_db = 10 * np.log10(np.mean(np.abs(noise ** 2)) + 1e-4)
    clean_db = 10 * np.log10(np.mean(np.abs(audio ** 2)) + 1e-4)
    mixed = audio + np.sqrt(10 ** ((clean_db - noise_db - snr_db) / 10)) * noise
    return mixed.astype(np.int16) if legacy_int16 else mixed


# ---------------------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------------------


class ActiveSpeakerDataset(Dataset):
    """TalkNet samples of one split of ``<root>/asd`` (see the module docstring for the pipeline).

    A sample (``dataset[i]``) is a dict:

    - ``faces``: (m, 112, 112) float32 grey face crops, values 0..255 (TalkNet normalises them itself);
    - ``mfcc``: (4m, 13) float32 MFCC rows aligned with the faces;
    - ``labels``: (m,) int64, 1 = speaking;
    - ``track_id``: str, the chunk id "clip:track:k";
    - ``start_frame``: int, annotation frame number of the sample's first frame (the chunk's first frame, or the
      first frame of the training window);
    - ``index``: int, the line's index in the dataset;

    where m = min(number of readable faces, n, ``max_frames``). ``dataset.__getitems__(indices)`` loads the lines
    of one dynamic batch together: in training, each line's audio is mixed with probability 0.5 with the audio of
    another line of the same batch (TalkNet's audio augmentation). Box files are read and smoothed once, in the
    constructor; chunks without any valid box in their frame range are left out with a counted warning.

    Args:
        root: the ASD folder (``<data root>/asd``).
        split: "train" or "val" (``ego4d/csv/active_speaker_<split>.csv``).
        train: training split: enable the augmentations switched on below.
        max_frames: cut every line to ``max_frames`` frames (None = whole lines); for CPU runs. Evaluation keeps
            the first frames, training a window at a random offset.
        legacy_int16_mix: reproduce the original's int16 cast of mixed audio (see :func:`mix_audio`).
        audio_mix: mix another line's audio in training (with probability 0.5 per line).
        visual_aug: one of none / flip / crop / rotate per track in training.
        csv_path, bbox_dir, image_dir, wave_dir: override the standard locations under ``root``.

    Attributes:
        lines: the :class:`AsdLine` s kept, in csv order (index i of the dataset).
        num_frames: per line, the frames a sample can have at most (n cut to ``max_frames``); the batch sampler's
            lengths.
        warnings: :class:`~HHI.data.social.WarningCounter` of skipped chunks, frames and empty audio windows
            (each DataLoader worker counts its own copy).
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        split: str,
        train: bool = False,
        max_frames: Optional[int] = None,
        legacy_int16_mix: bool = False,
        audio_mix: bool = True,
        visual_aug: bool = True,
        csv_path: Union[str, os.PathLike, None] = None,
        bbox_dir: Union[str, os.PathLike, None] = None,
        image_dir: Union[str, os.PathLike, None] = None,
        wave_dir: Union[str, os.PathLike, None] = None,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be a positive number of frames or None, got {max_frames}")
        root = Path(root)
        self.root = root
        self.split = split
        self.train = bool(train)
        self.max_frames = max_frames
        self.legacy_int16_mix = bool(legacy_int16_mix)
        self.audio_mix = bool(audio_mix)
        self.visual_aug = bool(visual_aug)
        self.csv_path = Path(csv_path) if csv_path else root / "ego4d" / "csv" / f"active_speaker_{split}.csv"
        self.bbox_dir = Path(bbox_dir) if bbox_dir else root / "ego4d" / "bbox"
        self.image_dir = Path(image_dir) if image_dir else root / "video_imgs"
        self.wave_dir = Path(wave_dir) if wave_dir else root / "wave"
        self.warnings = WarningCounter()
        self.lines: list[AsdLine] = []
        self.geometry: list[TrackGeometry] = []
        for line in read_asd_csv(self.csv_path):
            geometry = self._line_geometry(line)
            if geometry is None:
                continue
            self.lines.append(line)
            self.geometry.append(geometry)
        if not self.lines:
            raise ValueError(f"{self.csv_path}: no usable line (every chunk lacks valid boxes, or the file is empty)")
        self.num_frames = [min(line.num_frames, max_frames or line.num_frames) for line in self.lines]
        self.start_frames = [line.start_frame for line in self.lines]

    def _line_geometry(self, line: AsdLine) -> Optional[TrackGeometry]:
        path = self.bbox_dir / f"{line.chunk_id}.json"
        records = read_json(path, f"ASD box file of {line.source}")
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON list of box records, got {type(records).__name__}")
        window = []
        for index, record in enumerate(records):
            frame = record.get("frame") if isinstance(record, dict) else None
            if isinstance(frame, bool) or not isinstance(frame, (int, float)):
                raise ValueError(f"{path}: record {index}: field 'frame' must be a number, got {frame!r}")
            if line.start_frame <= frame < line.start_frame + line.num_frames:
                window.append(record)
        cleaned = clean_track(window, frame_key="frame", check_person=False, sort=False, source=str(path))
        if not cleaned:
            self.warnings.warn("ASD chunk without a valid box in its frame range (skipped)", f"{line.source} {path}")
            return None
        return smooth_track(cleaned, frame_key="frame")

    def __len__(self) -> int:
        return len(self.lines)

    # ----------------------------------------------------------------------------------------------- randomness
    @staticmethod
    def _generator() -> np.random.Generator:
        # Seeded from torch's RNG: per DataLoader worker that is seeded from the base seed (seed_everything with
        # workers=True), in the main process it is the global generator; either way runs repeat exactly.
        return np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,)).item()))

    # ----------------------------------------------------------------------------------------------- loading
    def _audio(self, line: AsdLine) -> np.ndarray:
        """RMS-normalised float64 audio of the line's whole window."""
        path = self.wave_dir / f"{line.clip_uid}.wav"
        if not path.is_file():
            raise FileNotFoundError(f"wav file of {line.source} not found: {path}")
        try:
            samples, rate = read_wav_window(path, line.start_frame, line.start_frame + line.num_frames)
        except media.MediaError as err:
            raise ValueError(f"{line.source}: {err}") from None
        if rate != SAMPLE_RATE:
            raise ValueError(f"{path}: sample rate is {rate} Hz, TalkNet's MFCC needs {SAMPLE_RATE} Hz")
        if samples.size == 0:
            self.warnings.warn("empty wav window (zeros used)", f"{path} frames {line.start_frame}.."
                                                                f"{line.start_frame + line.num_frames - 1}")
            expected = (int(line.start_frame / line.fps * rate),
                        int((line.start_frame + line.num_frames) / line.fps * rate))
            samples = np.zeros(max(expected[1] - expected[0], 1))
        return rms_normalise(samples)

    def _track_boxes(self, index: int, first_frame: int) -> Iterator[tuple]:
        """``(frame, centre_x, centre_y, half_size)`` of the line's smoothed boxes from annotation frame
        ``first_frame`` on, in track order."""
        geometry = self.geometry[index]
        for box in zip(geometry.frames, geometry.centre_x, geometry.centre_y, geometry.half_size):
            if box[0] >= first_frame:
                yield box

    def _faces(self, index: int, limit: int, first_frame: int) -> np.ndarray:
        """Up to ``limit`` (v, 112, 112) uint8 faces of the line from annotation frame ``first_frame`` on, in track
        order; unreadable frames skipped."""
        line = self.lines[index]
        faces = []
        for frame, centre_x, centre_y, half_size in self._track_boxes(index, first_frame):
            if len(faces) == limit:
                break
            path = frame_image_path(self.image_dir, line.clip_uid, int(frame))
            if not path.is_file():
                self.warnings.warn("missing frame image (frame skipped)", str(path))
                continue
            try:
                rgb = media.read_image(path)
            except media.MediaError as err:
                self.warnings.warn("corrupt frame image (frame skipped)", str(err))
                continue
            face = crop_talknet_face(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), centre_x, centre_y, half_size)
            if face is None:
                self.warnings.warn("empty face crop (frame skipped)", f"{path} frame {int(frame)}")
                continue
            faces.append(face)
        if not faces:
            self.warnings.warn("ASD chunk without a readable face (dropped from its batch)", line.source)
            return np.zeros((0, FACE_SIZE, FACE_SIZE), dtype=np.uint8)
        return np.stack(faces)

    def _augmentation(self, rng: np.random.Generator) -> dict:
        side = int(FACE_SIZE * rng.uniform(0.7, 1.0))
        return {"kind": AUGMENTATIONS[int(rng.integers(len(AUGMENTATIONS)))], "crop_side": side,
                "crop_x": int(rng.integers(0, FACE_SIZE - side)), "crop_y": int(rng.integers(0, FACE_SIZE - side)),
                "angle": float(rng.uniform(-15, 15))}

    def _sample(self, index: int, audio: np.ndarray, rng: Optional[np.random.Generator]) -> dict[str, Any]:
        line = self.lines[index]
        limit = self.num_frames[index]
        # Training windows of a cut line start anywhere in it; evaluation keeps its first frames.
        offset = int(rng.integers(line.num_frames - limit + 1)) if rng is not None and limit < line.num_frames else 0
        faces = self._faces(index, limit, line.start_frame + offset)
        if rng is not None and self.visual_aug:
            faces = augment_faces(faces, **self._augmentation(rng))
        features = fit_mfcc_rows(talknet_mfcc(audio, line.fps)[MFCC_PER_FRAME * offset:], MFCC_PER_FRAME * limit)
        length = min(len(faces), limit)
        return {
            "faces": torch.from_numpy(faces[:length].astype(np.float32)),
            "mfcc": torch.from_numpy(features[: MFCC_PER_FRAME * length].astype(np.float32)),
            "labels": torch.tensor(line.labels[offset:offset + length], dtype=torch.int64),
            "track_id": line.chunk_id,
            "start_frame": line.start_frame + offset,
            "index": index,
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One line on its own (no audio mixing: there is no other line to mix with)."""
        rng = self._generator() if self.train else None
        return self._sample(index, self._audio(self.lines[index]), rng)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The lines of one dynamic batch, with TalkNet's in-batch audio mixing in training."""
        indices = [int(index) for index in indices]
        audios = [self._audio(self.lines[index]) for index in indices]
        if not self.train:
            return [self._sample(index, audio, None) for index, audio in zip(indices, audios)]
        rng = self._generator()
        samples = []
        for position, index in enumerate(indices):
            audio = audios[position]
            others = [other for other in range(len(indices)) if indices[other] != index]
            if self.audio_mix and others and rng.integers(2) == 1:
                partner = others[int(rng.integers(len(others)))]
                audio = mix_audio(audio, audios[partner], float(rng.uniform(-5, 5)), self.legacy_int16_mix)
            samples.append(self._sample(index, audio, rng))
        return samples


# ---------------------------------------------------------------------------------------------------------------
# Dynamic batches
# ---------------------------------------------------------------------------------------------------------------


class DynamicBatchSampler(BatchSampler):
    """TalkNet's "dynamic batches" as a batch sampler with a frame budget (hhi §4.2).

    The lines are sorted by (frames, first frame) descending (ties keep dataset order) and cut, once, into
    consecutive runs of max(frame_budget // n_first, 1) lines, n_first being the frame count of the run's first
    (longest) line. Every epoch the order of the batches is shuffled with a generator seeded by ``seed + epoch``
    (Lightning calls :meth:`set_epoch`), so runs and resumed runs repeat exactly.

    Distributed runs: Lightning rebuilds a batch sampler under DDP as ``cls(DistributedSampler(dataset),
    batch_size=..., drop_last=...)``. When ``sampler`` is a ``DistributedSampler``, the batches are built from all
    lines of its dataset and dealt round-robin to the processes after shuffling (the list is padded by repeating its
    first batches, so every process runs the same number of steps); the per-line lengths and, unless given, the
    seed are taken from the sampler (``dataset.num_frames``, ``dataset.start_frames``, ``sampler.seed``). Any other
    sampler only says which lines take part (its order is ignored).

    Args:
        sampler: sampler over the dataset (see above); ``SequentialSampler(dataset)`` for all lines.
        batch_size: the frame budget, frames per batch (the original ``--batch_size``; named as in
            ``BatchSampler`` so that Lightning can rebuild the sampler).
        drop_last: must be False (every line is used); part of the ``BatchSampler`` interface.
        num_frames: per dataset index, the frames of that line; default: the sampler's dataset's ``num_frames``.
        start_frames: per dataset index, the line's first frame (secondary sort key); default: the sampler's
            dataset's ``start_frames``.
        shuffle: shuffle the batch order every epoch.
        seed: base seed of the shuffling; default: a ``DistributedSampler``'s seed, else 0.
    """

    def __init__(self, sampler: Union[Sampler, Sequence[int]], batch_size: int = DEFAULT_FRAME_BUDGET,
                 drop_last: bool = False, *, num_frames: Optional[Sequence[int]] = None,
                 start_frames: Optional[Sequence[int]] = None, shuffle: bool = True,
                 seed: Optional[int] = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size (the frame budget) must be a positive number of frames, got {batch_size!r}")
        if drop_last:
            raise ValueError("DynamicBatchSampler uses every line; drop_last must be False")
        dataset = getattr(sampler, "dataset", None)
        if dataset is None:
            dataset = getattr(sampler, "data_source", None)
        if num_frames is None or start_frames is None:
            if dataset is None or not hasattr(dataset, "num_frames") or not hasattr(dataset, "start_frames"):
                raise ValueError("DynamicBatchSampler needs num_frames and start_frames, or a sampler over a dataset "
                                 "that has them (ActiveSpeakerDataset)")
            num_frames = dataset.num_frames if num_frames is None else num_frames
            start_frames = dataset.start_frames if start_frames is None else start_frames
        if len(num_frames) != len(start_frames):
            raise ValueError(f"num_frames ({len(num_frames)}) and start_frames ({len(start_frames)}) differ in length")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = False
        self.num_frames = [int(frames) for frames in num_frames]
        self.start_frames = [int(frame) for frame in start_frames]
        self.shuffle = bool(shuffle)
        if isinstance(sampler, DistributedSampler):
            self.num_replicas, self.rank = int(sampler.num_replicas), int(sampler.rank)
            self.seed = int(sampler.seed) if seed is None else int(seed)
            members = range(len(self.num_frames))
        else:
            self.num_replicas, self.rank = 1, 0
            self.seed = 0 if seed is None else int(seed)
            members = sorted(set(int(index) for index in sampler))
        self.epoch = 0
        self.batches = self._build(members)

    @property
    def frame_budget(self) -> int:
        """Frames per batch (``batch_size``)."""
        return self.batch_size

    def _build(self, members: Sequence[int]) -> list[list[int]]:
        ordered = sorted(members, key=lambda index: (self.num_frames[index], self.start_frames[index]), reverse=True)
        batches, start = [], 0
        while start < len(ordered):
            size = max(self.batch_size // max(self.num_frames[ordered[start]], 1), 1)
            batches.append(ordered[start:start + size])
            start += size
        return batches

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling of ``epoch``."""
        self.epoch = int(epoch)

    def _order(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.batches), generator=generator).tolist()
        else:
            order = list(range(len(self.batches)))
        if self.num_replicas > 1 and order:
            total = len(self) * self.num_replicas
            order = (order * math.ceil(total / len(order)))[:total]
            order = order[self.rank::self.num_replicas]
        return order

    def __iter__(self) -> Iterator[list[int]]:
        for position in self._order():
            yield list(self.batches[position])

    def __len__(self) -> int:
        return math.ceil(len(self.batches) / self.num_replicas)


def collate_active_speaker(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch, every item cut to the batch's shortest visual length m.

    Samples without any face are dropped (the dataset has already counted them).

    Args:
        samples: dataset samples.

    Returns:
        ``faces`` (B, m, 112, 112) float32, ``mfcc`` (B, 4m, 13) float32, ``labels`` (B, m) int64, ``track_id``
        list of B str, ``start_frame`` (B,) int64, ``index`` (B,) int64 and ``num_dropped`` int. When no sample
        has a face, B = 0 and m = 0 (a training step skips such a batch).
    """
    kept = [sample for sample in samples if sample["faces"].shape[0] > 0]
    length = min((sample["faces"].shape[0] for sample in kept), default=0)
    if not kept:
        return {
            "faces": torch.zeros(0, 0, FACE_SIZE, FACE_SIZE),
            "mfcc": torch.zeros(0, 0, NUM_MFCC),
            "labels": torch.zeros(0, 0, dtype=torch.int64),
            "track_id": [],
            "start_frame": torch.zeros(0, dtype=torch.int64),
            "index": torch.zeros(0, dtype=torch.int64),
            "num_dropped": len(samples),
        }
    return {
        "faces": torch.stack([sample["faces"][:length] for sample in kept]),
        "mfcc": torch.stack([sample["mfcc"][: MFCC_PER_FRAME * length] for sample in kept]),
        "labels": torch.stack([sample["labels"][:length] for sample in kept]),
        "track_id": [sample["track_id"] for sample in kept],
        "start_frame": torch.tensor([sample["start_frame"] for sample in kept], dtype=torch.int64),
        "index": torch.tensor([sample["index"] for sample in kept], dtype=torch.int64),
        "num_dropped": len(samples) - len(kept),
    }
