"""Paired inputs for the EgoT2-s HHI translators: every sample carries what each frozen backbone reads.

TTM as the task of interest (``run_ttm.py --two_loader``; hhi spec §7.2): there is no second loader -- every TTM
chunk additionally gets ASD inputs derived from the **same** chunk::

    TTM chunk (clip, person, start..end) ── frame with a box: one image read ─┬─ tight RGB crop ─► video (T, 3, S, S)
                                                                             └─ grey TalkNet crop ─► faces (D, 112, 112)
    its waveform (RMS 0.1) ─► TalkNet MFCC, wrap-padded / cut to 4 D rows ─► mfcc (4D, 13)

D = the frames where the person has a box (D <= T). The TalkNet crop uses the smoothing and geometry of
:mod:`HHI.data.asd` over the chunk's boxes, without augmentation; a frame whose image is missing or unreadable, or
whose crop is empty, gives a black face; a chunk without any box gives D = T black faces. The challenge test
release has only tight 224 face crops, so there each available face is turned grey, resized to 224 and its centre
112 kept (the original's test-time approximation).

ASD as the task of interest (``run_asd.py --model <translator>``; §7.3): every kept frame of an ASD track chunk gets,
besides the TalkNet face, the tight RGB crop of its unsmoothed box (ImageNet-normalised) for the LAM and TTM
backbones; frames whose RGB crop is empty are dropped from both streams.

Batches keep the plain loaders' conventions: :func:`collate_paired_ttm` is :func:`HHI.data.ttm.collate_truncate`
plus the ragged per-sample ``faces`` / ``mfcc`` lists (the translator encodes each sample over its whole length and
then cuts the tokens to the batch's shortest sample); :func:`collate_paired_asd` is
:func:`HHI.data.asd.collate_active_speaker` plus ``video`` cut to the same m frames.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch

from egot2 import media
from HHI.data.asd import (FACE_SIZE, MFCC_PER_FRAME, NUM_MFCC, ActiveSpeakerDataset, collate_active_speaker,
                          crop_talknet_face, fit_mfcc_rows, smooth_track, talknet_mfcc)
from HHI.data.social import crop_face, frame_image_path, normalise_frames, read_wav_window, rms_normalise
from HHI.data.ttm import TTMDataset, TTMTestDataset, collate_truncate

__all__ = [
    "asd_inputs_from_waveform",
    "PairedTTMDataset",
    "PairedTTMTestDataset",
    "collate_paired_ttm",
    "PairedASDDataset",
    "collate_paired_asd",
]


def _read_rgb(path, warnings, what: str) -> Optional[np.ndarray]:
    if not path.is_file():
        warnings.warn(f"missing frame image ({what})", str(path))
        return None
    try:
        return media.read_image(path)
    except media.MediaError as err:
        warnings.warn(f"corrupt frame image ({what})", str(err))
        return None


def asd_inputs_from_waveform(samples: np.ndarray, num_faces: int) -> np.ndarray:
    """TalkNet MFCC of an RMS-normalised waveform, wrap-padded / cut to ``4 * num_faces`` rows.

    Args:
        samples: (A,) float waveform (may be empty).
        num_faces: D, the number of ASD frames.

    Returns:
        (4D, 13) float32; zeros when the waveform is empty.
    """
    rows = MFCC_PER_FRAME * num_faces
    if samples.size == 0:
        return np.zeros((rows, NUM_MFCC), dtype=np.float32)
    return fit_mfcc_rows(talknet_mfcc(samples), rows).astype(np.float32)


def _black_grey() -> np.ndarray:
    return np.zeros((FACE_SIZE, FACE_SIZE), dtype=np.uint8)


def _centre_grey(face_rgb: np.ndarray) -> np.ndarray:
    grey = cv2.resize(cv2.cvtColor(face_rgb, cv2.COLOR_RGB2GRAY), (2 * FACE_SIZE, 2 * FACE_SIZE),
                      interpolation=cv2.INTER_LINEAR)
    return grey[FACE_SIZE // 2:FACE_SIZE // 2 + FACE_SIZE, FACE_SIZE // 2:FACE_SIZE // 2 + FACE_SIZE]


class PairedTTMDataset(TTMDataset):
    """A :class:`HHI.data.ttm.TTMDataset` whose samples also carry the chunk's ASD inputs (see module docstring).

    Args:
        asd_max_frames: keep only the first ``asd_max_frames`` ASD frames of a chunk (0 = all, the original);
            TalkNet costs about ten frame encoders per frame, so CPU runs cut it.
        Other arguments: as :class:`~HHI.data.ttm.TTMDataset`. Each image is read once for both crops.

    Sample (dict): the TTM sample (``video`` (T, 3, S, S) float32 -- identical to the plain dataset's --, ``audio``
    (A,), ``label``, ``clip_uid``, ``person``, ``index``, ``start``, ``end``, ``chunk_id``) plus ``faces``
    (D, 112, 112) float32 grey values 0..255 and ``mfcc`` (4D, 13) float32.
    """

    def __init__(self, *args: Any, asd_max_frames: int = 0, **kwargs: Any) -> None:
        if asd_max_frames < 0:
            raise ValueError(f"asd_max_frames must be >= 0 (0 = every frame), got {asd_max_frames}")
        self.asd_max_frames = int(asd_max_frames)
        super().__init__(*args, **kwargs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip_uid, person, label, start, end, entry = self.segments[index]
        clip_boxes = self.boxes[clip_uid]
        blank = np.zeros((self.face_size, self.face_size, 3), dtype=np.uint8)
        frames, greys, records = [], {}, []
        for frame in range(start, end + 1):
            box = clip_boxes.get((frame, person))
            face = None
            if box is not None:
                x1, y1, x2, y2 = box
                records.append({"frame": frame, "x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1})
                path = frame_image_path(self.paths.image_dir, clip_uid, frame)
                image = _read_rgb(path, self.warnings, "black frame")
                if image is not None:
                    greys[frame] = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
                    face = crop_face(image, box, self.face_size)
                    if face is None:
                        self.warnings.warn("empty face crop (black frame)", f"{path} box {tuple(box)}")
            frames.append(blank if face is None else face)
        faces = self._talknet_faces(records, greys, end - start + 1, clip_uid)
        samples, _ = read_wav_window(self.paths.wave_dir / f"{clip_uid}.wav", start, end)
        if samples.size == 0:
            self.warnings.warn("empty audio window", f"{clip_uid} frames {start}..{end}")
        audio = rms_normalise(samples)
        return {
            "video": normalise_frames(np.stack(frames)),
            "audio": torch.from_numpy(audio.astype(np.float32)),
            "label": label,
            "clip_uid": clip_uid,
            "person": person,
            "index": entry,
            "start": start,
            "end": end,
            "chunk_id": f"{clip_uid}:{entry}:{start}:{end}",
            "faces": torch.from_numpy(faces.astype(np.float32)),
            "mfcc": torch.from_numpy(asd_inputs_from_waveform(audio, len(faces))),
        }

    def _talknet_faces(self, records: list, greys: dict, num_frames: int, clip_uid: str) -> np.ndarray:
        """(D, 112, 112) uint8 TalkNet faces of the chunk (black where the image is unusable), D cut to
        ``asd_max_frames``; the smoothing always sees the whole chunk's boxes."""
        limit = self.asd_max_frames or None
        if not records:
            return np.zeros((min(num_frames, limit or num_frames), FACE_SIZE, FACE_SIZE), dtype=np.uint8)
        geometry = smooth_track(records, frame_key="frame")
        faces = []
        for frame, centre_x, centre_y, half_size in list(zip(geometry.frames, geometry.centre_x, geometry.centre_y,
                                                             geometry.half_size))[:limit]:
            grey = greys.get(int(frame))
            face = None if grey is None else crop_talknet_face(grey, centre_x, centre_y, half_size)
            if grey is not None and face is None:
                self.warnings.warn("empty TalkNet crop (black face)", f"{clip_uid} frame {int(frame)}")
            faces.append(_black_grey() if face is None else face)
        return np.stack(faces)


class PairedTTMTestDataset(TTMTestDataset):
    """The TTM challenge release with ASD inputs from its tight face crops (grey, resized 224, centre 112).

    Args:
        asd_max_frames: as :class:`PairedTTMDataset`.
        Other arguments: as :class:`~HHI.data.ttm.TTMTestDataset`.

    Samples add ``faces`` (D, 112, 112) and ``mfcc`` (4D, 13), D = the chunk's frames that have a face image (T
    black faces when none has).
    """

    def __init__(self, *args: Any, asd_max_frames: int = 0, **kwargs: Any) -> None:
        if asd_max_frames < 0:
            raise ValueError(f"asd_max_frames must be >= 0 (0 = every frame), got {asd_max_frames}")
        self.asd_max_frames = int(asd_max_frames)
        super().__init__(*args, **kwargs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        segment_id, start, end = self.segments[index]
        files = self.face_files[segment_id]
        blank = np.zeros((self.face_size, self.face_size, 3), dtype=np.uint8)
        frames, greys = [], []
        for frame in range(start, end + 1):
            image = _read_rgb(files[frame], self.warnings, "black frame") if frame in files else None
            if image is None:
                frames.append(blank)
                continue
            greys.append(_centre_grey(image))
            if image.shape[:2] != (self.face_size, self.face_size):
                image = cv2.resize(image, (self.face_size, self.face_size), interpolation=cv2.INTER_LINEAR)
            frames.append(image)
        faces = np.stack(greys) if greys else np.zeros((end - start + 1, FACE_SIZE, FACE_SIZE), dtype=np.uint8)
        if self.asd_max_frames:
            faces = faces[:self.asd_max_frames]
        samples, _ = read_wav_window(self.test_dir / segment_id / "audio" / "aud.wav", start, end)
        if samples.size == 0:
            self.warnings.warn("empty audio window", f"test segment {segment_id} frames {start}..{end}")
        audio = rms_normalise(samples)
        return {
            "video": normalise_frames(np.stack(frames)),
            "audio": torch.from_numpy(audio.astype(np.float32)),
            "segment_id": segment_id,
            "start": start,
            "end": end,
            "chunk_id": f"{segment_id}:{start}:{end}",
            "faces": torch.from_numpy(faces.astype(np.float32)),
            "mfcc": torch.from_numpy(asd_inputs_from_waveform(audio, len(faces))),
        }


def collate_paired_ttm(samples: Sequence[dict]) -> dict[str, Any]:
    """:func:`HHI.data.ttm.collate_truncate` plus ``faces`` / ``mfcc`` as lists of B per-sample tensors.

    The ASD inputs stay ragged: the translator runs TalkNet on each sample's whole chunk and cuts the tokens to the
    batch's shortest D afterwards, so a sample's ASD tokens never depend on its batch (what the feature cache
    relies on).
    """
    ragged = {key: [sample[key] for sample in samples] for key in ("faces", "mfcc") if key in samples[0]}
    batch = collate_truncate([{k: v for k, v in sample.items() if k not in ragged} for sample in samples])
    batch.update(ragged)
    return batch


class PairedASDDataset(ActiveSpeakerDataset):
    """An :class:`HHI.data.asd.ActiveSpeakerDataset` whose samples also carry tight RGB crops of the same frames.

    Args:
        face_size: side of the RGB crops for the LAM/TTM backbones (224 official).
        Other arguments: as :class:`~HHI.data.asd.ActiveSpeakerDataset`.

    Sample (dict): the ASD sample (``faces`` (m, 112, 112), ``mfcc`` (4m, 13), ``labels`` (m,), ``track_id``,
    ``start_frame``, ``index``) plus ``video`` (m, 3, S, S) float32, ImageNet-normalised. The RGB crops are not
    augmented (the grey TalkNet faces are, in training, as in the plain dataset).
    """

    def __init__(self, *args: Any, face_size: int = 224, **kwargs: Any) -> None:
        if face_size < 1:
            raise ValueError(f"face_size must be >= 1, got {face_size}")
        self.face_size = int(face_size)
        self._raw_boxes: list[dict[int, tuple]] = []
        super().__init__(*args, **kwargs)

    def _line_geometry(self, line: Any) -> Any:
        from HHI.data.social import clean_track, read_json

        geometry = super()._line_geometry(line)
        if geometry is not None:
            path = self.bbox_dir / f"{line.chunk_id}.json"
            window = [record for record in read_json(path, f"ASD box file of {line.source}")
                      if line.start_frame <= record["frame"] < line.start_frame + line.num_frames]
            cleaned = clean_track(window, frame_key="frame", check_person=False, sort=False, source=str(path))
            self._raw_boxes.append({int(r["frame"]): (float(r["x"]), float(r["y"]), float(r["x"]) + float(r["width"]),
                                                      float(r["y"]) + float(r["height"])) for r in cleaned})
        return geometry

    def _faces(self, index: int, limit: int, first_frame: int) -> np.ndarray:
        """TalkNet faces and, in ``self._last_rgb``, the RGB crops of the same frames (empty RGB crops dropped)."""
        line = self.lines[index]
        boxes = self._raw_boxes[index]
        faces, rgb = [], []
        for frame, centre_x, centre_y, half_size in self._track_boxes(index, first_frame):
            if len(faces) == limit:
                break
            path = frame_image_path(self.image_dir, line.clip_uid, int(frame))
            image = _read_rgb(path, self.warnings, "frame skipped")
            if image is None:
                continue
            face = crop_talknet_face(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), centre_x, centre_y, half_size)
            box = boxes.get(int(frame))
            tight = None if box is None else crop_face(image, box, self.face_size)
            if face is None or tight is None:
                self.warnings.warn("empty face crop (frame skipped)", f"{path} frame {int(frame)}")
                continue
            faces.append(face)
            rgb.append(tight)
        self._last_rgb = (np.stack(rgb) if rgb else
                          np.zeros((0, self.face_size, self.face_size, 3), dtype=np.uint8))
        if not faces:
            self.warnings.warn("ASD chunk without a readable face (dropped from its batch)", line.source)
            return np.zeros((0, FACE_SIZE, FACE_SIZE), dtype=np.uint8)
        return np.stack(faces)

    def _sample(self, index: int, audio: np.ndarray, rng: Optional[np.random.Generator]) -> dict[str, Any]:
        sample = super()._sample(index, audio, rng)
        length = sample["faces"].shape[0]
        sample["video"] = normalise_frames(self._last_rgb[:length])
        return sample


def collate_paired_asd(samples: Sequence[dict]) -> dict[str, Any]:
    """:func:`HHI.data.asd.collate_active_speaker` plus ``video`` (B, m, 3, S, S) cut to the same m frames."""
    kept = [sample for sample in samples if sample["faces"].shape[0] > 0]
    batch = collate_active_speaker(samples)
    length = batch["faces"].shape[1]
    if kept:
        batch["video"] = torch.stack([sample["video"][:length] for sample in kept])
    else:
        size = samples[0]["video"].shape[-1] if samples else 0
        batch["video"] = torch.zeros(0, 0, 3, size, size)
    return batch
