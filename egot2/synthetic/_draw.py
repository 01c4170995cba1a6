"""Rendering primitives of the social twin: cartoon faces whose gaze and mouth are visible, a room background,
and voices whose loudness follows the mouth.

All functions are pure given their arguments (randomness comes in through a ``numpy.random.Generator``), so a clip
renders to the same pixels and samples in any process.
"""
from __future__ import annotations

import cv2
import numpy as np

FPS = 30
SAMPLE_RATE = 16000
_SHIFT = 4  # cv2 fixed-point bits: faces move by sub-pixel amounts without jumping from pixel to pixel
_SCALE = 1 << _SHIFT

# Gaze codes of a face in one frame.
GAZE_AT_WEARER = 0  # frontal head, pupils centred: the person looks into the camera
GAZE_LEFT = -1  # head turned and pupils shifted to the image's left
GAZE_RIGHT = 1


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _SCALE)), int(round(y * _SCALE))


def _axes(a: float, b: float) -> tuple[int, int]:
    return max(1, int(round(a * _SCALE))), max(1, int(round(b * _SCALE)))


def make_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A static room: a two-colour vertical gradient with a few pieces of furniture and a bright window.

    Returns:
        uint8 ``[H, W, 3]`` RGB.
    """
    top, bottom = rng.uniform(60, 200, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    image = (top[None, None, :] * (1 - ramp) + bottom[None, None, :] * ramp).repeat(width, axis=1)
    image = np.ascontiguousarray(image.astype(np.uint8))
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(height // 3, height - 8))
        x1, y1 = x0 + int(rng.integers(8, width // 3)), y0 + int(rng.integers(8, height // 2))
        colour = tuple(int(c) for c in rng.uniform(30, 170, size=3))
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, thickness=-1)
    x0, y0 = int(rng.integers(0, width - width // 4)), int(rng.integers(0, height // 4))
    cv2.rectangle(image, (x0, y0), (x0 + width // 5, y0 + height // 6), (225, 230, 235), thickness=-1)
    return image


def make_noise_bank(rng: np.random.Generator, width: int, height: int, count: int = 6,
                    sigma: float = 3.0) -> np.ndarray:
    """A few frames of sensor noise that rendering cycles through (drawing fresh noise per frame is slow).

    Returns:
        int16 ``[count, H, W, 3]``.
    """
    return np.round(rng.normal(0.0, sigma, size=(count, height, width, 3))).astype(np.int16)


def draw_face(image: np.ndarray, box: tuple[float, float, float, float], gaze: int, mouth_open: float,
              skin: tuple[int, int, int], hair: tuple[int, int, int], iris: tuple[int, int, int]) -> None:
    """Draw one face into ``image`` (in place) filling the box ``(x, y, width, height)`` (full-frame pixels).

    The gaze is visible twice: a turned head moves eyes and mouth towards the gaze side, and the pupils sit at the
    side of the eyes; a face looking at the camera wearer is frontal with centred pupils. ``mouth_open`` in
    [0, 1] sets the height of the open mouth.
    """
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    turn = float(gaze)
    feature_dx = 0.13 * w * turn
    pupil_dx = 0.075 * w * turn
    face_half_w = 0.46 * w * (1.0 - 0.06 * abs(turn))
    lt = cv2.LINE_AA
    cv2.ellipse(image, _pt(cx, cy - 0.1 * h), _axes(0.5 * w, 0.4 * h), 0, 0, 360, hair, -1, lt, _SHIFT)
    cv2.ellipse(image, _pt(cx + 0.25 * feature_dx, cy + 0.05 * h), _axes(face_half_w, 0.45 * h), 0, 0, 360, skin,
                -1, lt, _SHIFT)
    eye_y = cy - 0.04 * h
    for side in (-1.0, 1.0):
        eye_x = cx + side * 0.19 * w + feature_dx
        cv2.ellipse(image, _pt(eye_x, eye_y), _axes(0.12 * w, 0.08 * h), 0, 0, 360, (245, 245, 245), -1, lt, _SHIFT)
        cv2.circle(image, _pt(eye_x + pupil_dx, eye_y), int(round(0.055 * w * _SCALE)), iris, -1, lt, _SHIFT)
    mouth_x, mouth_y = cx + 0.8 * feature_dx, cy + 0.27 * h
    opening = 0.012 * h + 0.11 * h * float(np.clip(mouth_open, 0.0, 1.0))
    cv2.ellipse(image, _pt(mouth_x, mouth_y), _axes(0.15 * w, opening), 0, 0, 360, (90, 20, 30), -1, lt, _SHIFT)


def occlude(image: np.ndarray, box: tuple[float, float, float, float], kind: int,
            colour: tuple[int, int, int]) -> None:
    """Spoil a face in place: ``kind`` 1 covers its lower or upper part with a hand-like block, 2 blurs it."""
    x, y, w, h = box
    height, width = image.shape[:2]
    x0, y0 = max(0, int(x)), max(0, int(y))
    x1, y1 = min(width, int(x + w)), min(height, int(y + h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    if kind == 1:
        cv2.rectangle(image, (x0, int(y + 0.5 * h)), (x1, y1), colour, thickness=-1)
    elif kind == 2:
        patch = np.ascontiguousarray(image[y0:y1, x0:x1])
        image[y0:y1, x0:x1] = cv2.GaussianBlur(patch, (0, 0), sigmaX=max(1.0, 0.12 * w))
    elif kind == 3:
        cv2.rectangle(image, (x0, y0), (x1, int(y + 0.45 * h)), colour, thickness=-1)


def syllable_envelope(rng: np.random.Generator, num_samples: int, pause_probability: float = 0.08) -> np.ndarray:
    """A speech-like loudness curve: Hann-shaped syllables (0.14–0.32 s, ~3–5 per second), short gaps, rare pauses.

    Returns:
        float32 ``[num_samples]`` in [0, 1].
    """
    envelope = np.zeros(num_samples, np.float32)
    position = int(rng.integers(0, SAMPLE_RATE // 40 + 1))
    while position < num_samples:
        length = int(rng.uniform(0.14, 0.32) * SAMPLE_RATE)
        stop = min(num_samples, position + length)
        if stop - position > 8:
            envelope[position:stop] = rng.uniform(0.55, 1.0) * np.hanning(length)[: stop - position]
        gap = rng.uniform(0.02, 0.08)
        if rng.random() < pause_probability:
            gap += rng.uniform(0.2, 0.4)
        position = stop + int(gap * SAMPLE_RATE)
    return envelope


def voice(envelope: np.ndarray, start_sample: int, pitch: float, loudness: float,
          rng: np.random.Generator) -> np.ndarray:
    """A harmonic voice (8 partials, slight vibrato) shaped by ``envelope``; ``start_sample`` keeps phases global.

    Returns:
        float32 ``[len(envelope)]``.
    """
    t = (start_sample + np.arange(len(envelope), dtype=np.float64)) / SAMPLE_RATE
    vibrato_rate = rng.uniform(4.0, 6.0)
    phase = 2 * np.pi * pitch * (t - 0.03 / (2 * np.pi * vibrato_rate) * np.cos(2 * np.pi * vibrato_rate * t))
    tone = np.zeros_like(t)
    for harmonic in range(1, 9):
        tone += np.sin(harmonic * phase + rng.uniform(0, 2 * np.pi)) / harmonic ** 1.2
    tone /= np.max(np.abs(tone)) + 1e-9
    return (loudness * envelope * tone).astype(np.float32)


def room_noise(rng: np.random.Generator, num_samples: int) -> np.ndarray:
    """Low background noise: hiss, mains hum and one or two short bursts (a door, a cup).

    Returns:
        float32 ``[num_samples]``.
    """
    t = np.arange(num_samples) / SAMPLE_RATE
    noise = rng.normal(0.0, 0.006, num_samples) + 0.004 * np.sin(2 * np.pi * 50.0 * t)
    for _ in range(int(rng.integers(1, 3))):
        length = int(rng.uniform(0.08, 0.25) * SAMPLE_RATE)
        start = int(rng.integers(0, max(1, num_samples - length)))
        burst = rng.normal(0.0, 0.04, length) * np.hanning(length)
        noise[start:start + length] += burst[: num_samples - start]
    return noise.astype(np.float32)


def crop_face(image: np.ndarray, box: tuple[float, float, float, float], size: int = 224) -> np.ndarray:
    """The face box cut from a frame (clipped to the frame) and resized to ``size``², as the test releases ship.

    Returns:
        uint8 ``[size, size, 3]``.
    """
    height, width = image.shape[:2]
    x, y, w, h = box
    x0, y0 = int(np.clip(x, 0, width - 1)), int(np.clip(y, 0, height - 1))
    x1, y1 = int(np.clip(x + w, x0 + 1, width)), int(np.clip(y + h, y0 + 1, height))
    return cv2.resize(np.ascontiguousarray(image[y0:y1, x0:x1]), (size, size), interpolation=cv2.INTER_LINEAR)
