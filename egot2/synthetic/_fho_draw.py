"""Drawing the synthetic FHO world: a table seen from the camera wearer's head, one object at a time, one hand.

What a viewer (or a model) can learn from the pixels, by design:

* the **noun** is the object's *shape* (its hue is the noun's own for most objects, random for the rest);
* the **verb** is the *motion* of the object and of the hand during the action (:data:`MOTIONS`);
* a **state change** darkens the object (and cracks or flattens it) at one frame, the PNR frame, and the object
  keeps its changed look until it leaves the scene.

Everything else is nuisance: a textured table with static grey distractor shapes, head motion (the whole scene
shifts by a few pixels), a flickering exposure and sensor noise. The object is the only strongly saturated
thing in view (table and distractors are grey-ish, the hand is skin-coloured with medium saturation), which is
what the cheap probes in the tests rely on.

Coordinates are pixels of the output frame, x to the right, y down; "phase" ``p`` runs from 0 to 1 over an action.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

# Sub-pixel precision for cv2 polygon drawing (coordinates are scaled by 2**_SHIFT).
_SHIFT = 4
_SCALE = float(1 << _SHIFT)


def _circle(radius: float, sides: int = 32, center=(0.0, 0.0)) -> np.ndarray:
    angles = np.linspace(0.0, 2 * math.pi, sides, endpoint=False)
    return np.stack([center[0] + radius * np.cos(angles), center[1] + radius * np.sin(angles)], axis=1)


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    angles = np.arange(2 * points) * math.pi / points - math.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


# Unit shapes (object frame, radius about 1): a list of (polygon, filled). Unfilled polygons cut holes.
SHAPES: dict[str, list[tuple[np.ndarray, bool]]] = {
    "disc": [(_circle(1.0), True)],
    "block": [(np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]), True)],
    "wedge": [(np.array([[0.0, -1.0], [0.95, 0.75], [-0.95, 0.75]]), True)],
    "bar": [(np.array([[-1.1, -0.3], [1.1, -0.3], [1.1, 0.3], [-1.1, 0.3]]), True)],
    "ring": [(_circle(1.0), True), (_circle(0.55), False)],
    "cross": [(np.array([[-0.3, -1.0], [0.3, -1.0], [0.3, -0.3], [1.0, -0.3], [1.0, 0.3], [0.3, 0.3], [0.3, 1.0],
                         [-0.3, 1.0], [-0.3, 0.3], [-1.0, 0.3], [-1.0, -0.3], [-0.3, -0.3]]), True)],
    "star": [(_star(5, 1.05, 0.45), True)],
    "crescent": [(_circle(1.0), True), (_circle(0.85, center=(0.5, -0.25)), False)],
    "diamond": [(np.array([[0.0, -1.1], [0.62, 0.0], [0.0, 1.1], [-0.62, 0.0]]), True)],
    "hexagon": [(_circle(0.95, sides=6), True)],
    "arrow": [(np.array([[-1.0, -0.2], [0.2, -0.2], [0.2, -0.6], [1.0, 0.0], [0.2, 0.6], [0.2, 0.2],
                         [-1.0, 0.2]]), True)],
    "corner": [(np.array([[-0.8, -1.0], [-0.25, -1.0], [-0.25, 0.45], [0.8, 0.45], [0.8, 1.0], [-0.8, 1.0]]), True)],
}

# Multiplier applied to an object's colour once its state has changed.
CHANGED_BRIGHTNESS = 0.42


def hsv_to_rgb255(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
    """HSV in [0, 1] to an RGB triple in [0, 255]."""
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
    return 255.0 * red, 255.0 * green, 255.0 * blue


def ease(x: float) -> float:
    """Smooth 0 → 1 ramp on [0, 1] (clamped outside)."""
    x = min(max(x, 0.0), 1.0)
    return 0.5 - 0.5 * math.cos(math.pi * x)


@dataclass
class Pose:
    """Where and how an object is drawn in one frame."""

    x: float
    y: float
    scale: float = 1.0      # multiplies the instance radius (the object comes closer / moves away)
    angle: float = 0.0      # radians
    squash: float = 1.0     # vertical flattening in the object frame (1 = intact)


@dataclass
class Motion:
    """Object displacement and hand placement of one verb at phase ``p``.

    ``dx``/``dy`` are in pixels, ``scale``/``squash`` multiply, ``dangle`` adds; ``hand`` is the hand target
    relative to the object's centre, in pixels.
    """

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    dangle: float = 0.0
    squash: Optional[float] = None
    hand: tuple[float, float] = (0.0, 0.0)


def motion(verb: str, p: float, radius: float, width: int, height: int, pnr_phase: float) -> Motion:
    """The planted motion pattern of ``verb`` at phase ``p``.

    Args:
        verb: motion key (see :data:`MOTIONS`).
        p: phase in [0, 1] over the action.
        radius: the object's drawn radius in pixels (the hand grips its border).
        width, height: frame size.
        pnr_phase: phase of the state change for state-changing verbs (ignored by the others).
    """
    r = radius
    if verb == "lift":
        return Motion(dy=-0.26 * height * ease((p - 0.2) / 0.6), hand=(0.0, 0.95 * r))
    if verb == "lower":
        return Motion(dy=0.26 * height * ease((p - 0.1) / 0.6), hand=(0.0, -0.95 * r))
    if verb == "slide_left":
        return Motion(dx=-0.28 * width * ease((p - 0.15) / 0.65), hand=(1.15 * r, 0.0))
    if verb == "slide_right":
        return Motion(dx=0.28 * width * ease((p - 0.15) / 0.65), hand=(-1.15 * r, 0.0))
    if verb == "rotate":
        turn = math.pi * ease((p - 0.1) / 0.8)
        orbit = math.pi / 2 + turn  # the hand turns the object from its rim
        return Motion(dangle=turn, hand=(1.15 * r * math.cos(orbit), 1.15 * r * math.sin(orbit)))
    if verb == "shake":
        envelope = math.sin(math.pi * p)
        return Motion(dx=0.06 * width * math.sin(6 * math.pi * p) * envelope,
                      dy=0.02 * height * math.sin(12 * math.pi * p) * envelope, hand=(0.9 * r, 0.5 * r))
    if verb == "bring":
        grow = 1.0 + 0.55 * ease(p / 0.8)
        return Motion(dy=0.08 * height * ease(p / 0.8), scale=grow, hand=(0.8 * r * grow, 0.9 * r * grow))
    if verb == "push_away":
        shrink = 1.0 - 0.38 * ease(p / 0.8)
        return Motion(dy=-0.08 * height * ease(p / 0.8), scale=shrink, hand=(0.7 * r * shrink, 0.9 * r * shrink))
    q = (p - 0.2) / 0.7  # the tool phase of the state-changing verbs
    if verb == "cut":
        # Three chopping strokes; the change happens at the bottom of one of them.
        lift = 0.16 * height * (0.5 + 0.5 * math.cos(6 * math.pi * min(max(q, 0.0), 1.0)))
        return Motion(hand=(0.0, -r - lift))
    if verb == "paint":
        return Motion(hand=(1.2 * r * math.sin(4 * math.pi * min(max(q, 0.0), 1.0)), -0.3 * r))
    if verb == "squash":
        q_pnr = (pnr_phase - 0.2) / 0.7
        flat = 1.0 - 0.45 * ease((q - (q_pnr - 0.25)) / 0.25)
        press = 0.12 * height * (1.0 - ease(q / q_pnr)) + 0.12 * height * ease((q - q_pnr) / 0.3)
        return Motion(squash=flat, hand=(0.0, -r * flat - press))
    raise ValueError(f"unknown synthetic verb motion {verb!r}")


# Rest regions of the object centre per verb, as (x0, x1, y0, y1) fractions of the frame: every motion starts
# where it can complete without leaving the view.
MOTIONS: dict[str, tuple[float, float, float, float]] = {
    "lift": (0.3, 0.7, 0.58, 0.72),
    "lower": (0.3, 0.7, 0.28, 0.42),
    "slide_left": (0.58, 0.74, 0.35, 0.65),
    "slide_right": (0.26, 0.42, 0.35, 0.65),
    "rotate": (0.3, 0.7, 0.35, 0.65),
    "shake": (0.3, 0.7, 0.35, 0.65),
    "bring": (0.35, 0.65, 0.35, 0.55),
    "push_away": (0.35, 0.65, 0.45, 0.65),
    "cut": (0.3, 0.7, 0.5, 0.68),
    "paint": (0.3, 0.7, 0.45, 0.65),
    "squash": (0.3, 0.7, 0.5, 0.68),
}


def shape_mask(shape: str, pose: Pose, radius: float, height: int, width: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Anti-aliased coverage mask of an object, cropped to its bounding box.

    Returns:
        (uint8 mask ``[h, w]`` with 255 = fully covered, (x0, y0) of the crop in the frame); an empty mask when
        the object is out of view.
    """
    size = radius * pose.scale
    cos_a, sin_a = math.cos(pose.angle), math.sin(pose.angle)
    polygons = []
    for points, filled in SHAPES[shape]:
        local = points * np.array([1.0, pose.squash])
        rotated = np.stack([local[:, 0] * cos_a - local[:, 1] * sin_a, local[:, 0] * sin_a + local[:, 1] * cos_a], 1)
        polygons.append((rotated * size + np.array([pose.x, pose.y]), filled))
    outline = np.concatenate([poly for poly, _ in polygons])
    x0 = max(int(math.floor(outline[:, 0].min())) - 1, 0)
    y0 = max(int(math.floor(outline[:, 1].min())) - 1, 0)
    x1 = min(int(math.ceil(outline[:, 0].max())) + 2, width)
    y1 = min(int(math.ceil(outline[:, 1].max())) + 2, height)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), np.uint8), (0, 0)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for poly, filled in polygons:
        fixed = np.round((poly - np.array([x0, y0])) * _SCALE).astype(np.int32)
        cv2.fillPoly(mask, [fixed], 255 if filled else 0, lineType=cv2.LINE_AA, shift=_SHIFT)
    return mask, (x0, y0)


def composite(frame: np.ndarray, mask: np.ndarray, origin: tuple[int, int], colour) -> None:
    """Alpha-blend a flat colour into ``frame`` (uint8 ``[H, W, 3]``, in place) through a crop mask."""
    if mask.size == 0:
        return
    x0, y0 = origin
    region = frame[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
    alpha = mask[..., None].astype(np.float32) / 255.0
    blended = region.astype(np.float32) * (1.0 - alpha) + np.asarray(colour, np.float32) * alpha
    region[...] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def draw_crack(frame: np.ndarray, mask: np.ndarray, origin: tuple[int, int], pose: Pose, radius: float,
               colour) -> None:
    """Draw the split of a cut object: a dark line through its centre along its own x axis, clipped to it."""
    if mask.size == 0:
        return
    x0, y0 = origin
    line = np.zeros_like(mask)
    half = 1.3 * radius * pose.scale
    dx, dy = half * math.cos(pose.angle + 0.6), half * math.sin(pose.angle + 0.6)
    start = (int(round((pose.x - x0 - dx) * _SCALE)), int(round((pose.y - y0 - dy) * _SCALE)))
    end = (int(round((pose.x - x0 + dx) * _SCALE)), int(round((pose.y - y0 + dy) * _SCALE)))
    thickness = max(1, int(round(0.22 * radius * pose.scale)))
    cv2.line(line, start, end, 255, thickness, lineType=cv2.LINE_AA, shift=_SHIFT)
    composite(frame, np.minimum(line, mask), origin, colour)


def draw_hand(frame: np.ndarray, x: float, y: float, skin, height: int, width: int) -> None:
    """The camera wearer's right hand: a palm at (x, y) with a forearm reaching in from the bottom right."""
    palm_w, palm_h = 0.085 * height, 0.065 * height
    elbow = (x + 0.28 * width, height + 0.35 * height)
    arm = max(2, int(round(0.1 * height)))
    to_fixed = lambda px, py: (int(round(px * _SCALE)), int(round(py * _SCALE)))  # noqa: E731
    shade = tuple(float(c) * 0.85 for c in skin)
    cv2.line(frame, to_fixed(x, y), to_fixed(*elbow), shade, arm, lineType=cv2.LINE_AA, shift=_SHIFT)
    cv2.ellipse(frame, to_fixed(x, y), (int(palm_w * _SCALE), int(palm_h * _SCALE)), -30.0, 0.0, 360.0,
                tuple(float(c) for c in skin), -1, lineType=cv2.LINE_AA, shift=_SHIFT)


def table_texture(rng: np.random.Generator, height: int, width: int, base_rgb) -> np.ndarray:
    """A grey-ish table: smooth blotches plus fine grain around ``base_rgb``.

    Returns:
        uint8 ``[height, width, 3]``.
    """
    coarse = rng.normal(0.0, 1.0, (5, 7, 1)).astype(np.float32)
    blotches = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)[..., None]
    grain = rng.normal(0.0, 1.0, (height, width, 1)).astype(np.float32)
    tint = rng.normal(0.0, 1.0, 3).astype(np.float32)
    image = np.asarray(base_rgb, np.float32) + 10.0 * blotches + 3.0 * grain + 2.0 * tint
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)
