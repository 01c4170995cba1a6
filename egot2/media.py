"""Reading and writing the media Ego4D is made of: mp4 clips (PyAV), JPEG frames (OpenCV) and WAV audio (soundfile).

Every array crossing this module is in one convention: images and video frames are ``uint8`` RGB with shape
``[H, W, 3]`` / ``[T, H, W, 3]``; audio is mono ``float32`` in ``[-1, 1]`` with shape ``[S]``. Every writer goes
through a temporary file in the destination folder and an atomic rename, so an interrupted run never leaves a
truncated file behind under the final name.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import av
import cv2
import numpy as np
import soundfile

__all__ = [
    "MediaError",
    "atomic_path",
    "read_video_frames",
    "iter_video_frames",
    "video_info",
    "write_video",
    "read_wav",
    "write_wav",
    "extract_audio",
    "read_image",
    "write_image",
]


_UMASK = os.umask(0)
os.umask(_UMASK)


class MediaError(RuntimeError):
    """A media file is missing, unreadable or shorter than asked for; the message names the file."""


@contextlib.contextmanager
def atomic_path(path, suffix: Optional[str] = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and move it onto ``path`` only if the block succeeds.

    Args:
        path: final destination; its parent folder is created.
        suffix: extension of the temporary file (defaults to the destination's, so encoders pick the right format).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates owner-only files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _open(path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: video file not found")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: cannot open video ({err})") from err


def video_info(path) -> dict:
    """Container facts of a video file.

    Returns:
        dict with ``fps`` (float), ``num_frames`` (int, counted from the stream header or by decoding),
        ``width``, ``height``, ``duration`` (seconds) and ``has_audio`` (bool).
    """
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 30)
        num_frames = stream.frames
        if not num_frames:
            num_frames = sum(1 for _ in container.decode(stream))
        duration = float(stream.duration * stream.time_base) if stream.duration else num_frames / fps
        return {
            "fps": fps,
            "num_frames": int(num_frames),
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "duration": duration,
            "has_audio": bool(container.streams.audio),
        }


def iter_video_frames(path, start: Optional[int] = None, end: Optional[int] = None) -> Iterator[np.ndarray]:
    """Decode frames ``start`` … ``end - 1`` (0-based decode order) of a video, one RGB array at a time.

    Seeks to the keyframe before ``start`` instead of decoding from the beginning, so reading a short window of a
    long video costs about the window, not the whole file.
    """
    start = 0 if start is None else int(start)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = stream.average_rate or stream.guessed_rate or Fraction(30)
        first_pts = stream.start_time or 0
        if start > 0:
            target = first_pts + int(Fraction(start) / fps / stream.time_base)
            container.seek(target, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            index = int(round(float((frame.pts - first_pts) * stream.time_base * fps))) if frame.pts is not None else start
            if index < start:
                continue
            if end is not None and index >= end:
                break
            yield _to_rgb(frame)


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    # OpenCV's planar YUV conversion is about twice as fast as swscale's rgb24 path for the common yuv420p case.
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
    return frame.to_ndarray(format="rgb24")


def read_video_frames(path, start: Optional[int] = None, end: Optional[int] = None) -> np.ndarray:
    """Decode frames ``[start, end)`` of a video into one array.

    Returns:
        uint8 array ``[T, H, W, 3]`` (RGB).

    Raises:
        MediaError: the file is missing or corrupt, or it holds fewer frames than ``end``.
    """
    try:
        frames = list(iter_video_frames(path, start, end))
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: corrupt video ({err})") from err
    first = 0 if start is None else start
    if end is not None and len(frames) < end - first:
        raise MediaError(f"{path}: asked for frames {first}..{end - 1} but the video has only "
                         f"{first + len(frames)} frames")
    if not frames:
        raise MediaError(f"{path}: no frames decoded in [{start}, {end})")
    return np.stack(frames)


def write_video(path, frames, fps: int = 30, audio: Optional[np.ndarray] = None,
                sample_rate: int = 16000, crf: int = 23, gop: Optional[int] = None) -> None:
    """Encode RGB frames (and optionally mono audio) as H.264 (+ AAC) mp4.

    Args:
        frames: uint8 ``[T, H, W, 3]``, or an iterable of uint8 ``[H, W, 3]`` frames (encoded as they come, so a
            long video never has to sit in memory); H and W must be even (yuv420p).
        fps: frame rate (integer).
        audio: float32 ``[S]`` in [-1, 1], or None for a silent (audio-less) file.
        crf: x264 quality (lower = better).
        gop: keyframe interval in frames (1 = every frame a keyframe, as Ego4D clip cutting does; default x264's).
    """
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    first = _check_frame(path, first)
    height, width = first.shape[:2]
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # Deterministic bytes: single-threaded x264 without run-dependent metadata.
        stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
        if gop:
            stream.codec_context.gop_size = gop
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate)
            audio_stream.layout = "mono"
        for image in itertools.chain([first], frames):
            image = _check_frame(path, image, (height, width))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            samples = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
            chunk = 1024
            for offset in range(0, len(samples), chunk):
                piece = samples[offset:offset + chunk][None, :]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="flt", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = offset
                for packet in audio_stream.encode(frame):
                    container.mux(packet)
            for packet in audio_stream.encode():
                container.mux(packet)


def _check_frame(path, image, size: Optional[tuple] = None) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{path}: frames must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if size is None and (image.shape[0] % 2 or image.shape[1] % 2):
        raise ValueError(f"{path}: frame size {image.shape[1]}x{image.shape[0]} must be even for yuv420p")
    if size is not None and image.shape[:2] != size:
        raise ValueError(f"{path}: frame size changed from {size} to {image.shape[:2]}")
    return image


def extract_audio(video_path, wav_path, sample_rate: int = 16000) -> int:
    """Decode a video's audio track to a mono 16-bit WAV at ``sample_rate`` (what ``ffmpeg -ac 1 -ar 16000`` does).

    Returns:
        number of samples written.
    """
    with _open(video_path) as container:
        if not container.streams.audio:
            raise MediaError(f"{video_path}: no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        pieces = []
        try:
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as err:
            raise MediaError(f"{video_path}: corrupt audio ({err})") from err
    samples = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    write_wav(wav_path, samples, sample_rate)
    return len(samples)


def read_wav(path) -> tuple[np.ndarray, int]:
    """Read a WAV file as mono float32 in [-1, 1].

    Returns:
        (samples ``[S]`` float32, sample rate).
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: wav file not found")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise MediaError(f"{path}: unreadable wav ({err})") from err
    return samples.mean(axis=1), int(rate)


def write_wav(path, samples: np.ndarray, sample_rate: int = 16000) -> None:
    """Write mono float samples as 16-bit PCM WAV, atomically."""
    samples = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    with atomic_path(path) as tmp:
        soundfile.write(str(tmp), samples, sample_rate, subtype="PCM_16", format="WAV")


def read_image(path) -> np.ndarray:
    """Read an image file as uint8 RGB ``[H, W, 3]``.

    Raises:
        MediaError: the file is missing or cannot be decoded (e.g. a truncated JPEG).
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: image not found")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError(f"{path}: corrupt or unreadable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_image(path, rgb: np.ndarray, quality: int = 95) -> None:
    """Write a uint8 RGB image; the format follows the extension (JPEG quality ``quality``)."""
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".jpg", cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2BGR),
                               [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise MediaError(f"{path}: image encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
