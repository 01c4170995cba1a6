"""The social half of the synthetic Ego4D twin: AV/social annotations, clip videos with audio, split lists and the
LAM/TTM challenge test releases, in the layout of a real Ego4D download (hhi §1.1, §2.1, §3.1).

What a clip shows (the planted signals; ``twin.json`` repeats them for humans)::

    camera wearer (person "0", never visible, loud voice)
    2-3 visible people, each a drawn face in its own horizontal lane, drifting slowly
      gaze   : looking at the wearer  -> frontal head, centred pupils        (LAM positive)
               looking elsewhere      -> head turned, pupils at one side
      speech : mouth opens with the syllables of a voice in the audio track  (ASD positive = voice_segments)
               every person has its own pitch
      TTM    : a speech turn addressed to the wearer is spoken while looking at the wearer; an unaddressed turn
               is spoken looking away. social_segments_talking has target "0"/is_at_me true exactly for the
               addressed turns, so both label modes agree and LAM/ASD evidence carries TTM information.

Noise keeps every task short of perfect: ~10 % of annotated intervals are dropped, shifted or flipped, faces are
sometimes occluded or blurred, boxes jitter, the room is noisy, and people sometimes move their mouth silently.
Tracks have the defects loaders must survive: missing frames inside a track, a box partly outside the frame, and
one person per clip who enters late.

Frame convention (hhi §1.6): annotation frame ``f`` (1-based) is the ``f``-th decoded frame (``img_{f:05d}.jpg``
after extraction) and its audio starts at ``f / 30`` s. All randomness is drawn from
``numpy.random.default_rng`` seeded with ``(seed, stream, clip index)``, so clips render identically in any worker
process and the same seed gives the same bytes.
"""
from __future__ import annotations

import math
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from egot2 import media
from egot2.jobs import run_jobs, write_json_atomic, write_text_atomic
from egot2.synthetic import SOCIAL_TASKS, _draw
from egot2.synthetic._draw import FPS, GAZE_AT_WEARER, GAZE_LEFT, GAZE_RIGHT, SAMPLE_RATE

__all__ = [
    "SOCIAL_TASKS",
    "SocialSize",
    "SOCIAL_SIZES",
    "ClipPlan",
    "plan_social",
    "render_social_clip",
    "synthesize_social",
    "SOCIAL_RULES",
]

CAMERA_WEARER_ID = "0"
_PLAN_STREAM, _CLIP_STREAM = 101, 102  # separate random streams: plan (uids, splits) vs clip content
_SAMPLES_PER_FRAME = SAMPLE_RATE / FPS
_ANNOTATION_DATE = "2022-02-01"  # fixed, so the annotation files are byte-identical across runs

SOCIAL_RULES = [
    "LAM: a person looks at the camera wearer <=> frontal head with centred pupils; social_segments_looking are "
    "the runs of such frames (target '0', is_at_me true), ~10% of them dropped or shifted, a few spurious ones.",
    "ASD: a person speaks <=> the mouth opens and closes with the syllables of a voice of that person's pitch in "
    "the audio; voice_segments are the speech turns (boundaries of ~12% shifted by up to 6 frames). Some people "
    "move the mouth without a voice now and then.",
    "TTM: a speech turn is addressed to the camera wearer <=> it is spoken while looking at the wearer; "
    "social_segments_talking lists every turn: target '0' and is_at_me true when addressed, target null and "
    "is_at_me false otherwise (the camera wearer's own turns have person '0'); ~8% of the targets are flipped.",
    "Tracks: one face track per visible person; a few missing frames inside tracks, one box per clip partly "
    "outside the frame, one person per clip entering late, box jitter, occasional occluded or blurred faces.",
    "Frames: annotation frame f = f-th decoded frame = img_{f:05d}.jpg; its audio starts at f/30 s.",
]


@dataclass(frozen=True)
class SocialSize:
    """How much social data a twin size holds."""

    train_clips: int
    val_clips: int
    test_clips: int  # unannotated clips; the challenge test releases are cut from them
    num_frames: int  # per clip, at 30 fps
    width: int
    height: int
    ttm_test_segments: int
    lam_test_tracks: int
    lam_test_frames: int  # face crops per LAM test track
    clips_per_video: int


SOCIAL_SIZES = {
    "tiny": SocialSize(train_clips=2, val_clips=2, test_clips=1, num_frames=240, width=192, height=144,
                       ttm_test_segments=2, lam_test_tracks=2, lam_test_frames=48, clips_per_video=1),
    "small": SocialSize(train_clips=12, val_clips=6, test_clips=3, num_frames=600, width=192, height=144,
                        ttm_test_segments=8, lam_test_tracks=6, lam_test_frames=90, clips_per_video=2),
}


@dataclass(frozen=True)
class ClipPlan:
    """Everything a worker needs to render one clip (picklable, no randomness left to decide elsewhere)."""

    index: int
    split: str  # "train", "val" or "test"
    clip_uid: str
    video_uid: str
    parent_start_sec: float
    num_frames: int
    width: int
    height: int
    seed: int
    force_long_turn: bool  # at least one speech turn longer than 150 frames (exercises TTM chunking)
    ttm_test_segments: int = 0
    lam_test_tracks: int = 0
    lam_test_frames: int = 0
    out_dir: str = ""


def _uid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def plan_social(out_dir, size: str = "tiny", seed: int = 0) -> list[ClipPlan]:
    """Decide uids, splits, parent videos and per-clip test quotas of a twin, in a fixed order.

    Returns:
        one :class:`ClipPlan` per clip: train clips, then val, then test.
    """
    if size not in SOCIAL_SIZES:
        raise ValueError(f"unknown twin size {size!r}; choose one of {sorted(SOCIAL_SIZES)}")
    spec = SOCIAL_SIZES[size]
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    splits = ["train"] * spec.train_clips + ["val"] * spec.val_clips + ["test"] * spec.test_clips
    plans: list[ClipPlan] = []
    video_uid, clips_in_video, previous_split = "", 0, None
    test_rank = 0
    for index, split in enumerate(splits):
        if split != previous_split or clips_in_video >= spec.clips_per_video:
            video_uid, clips_in_video = _uid(rng), 0
        previous_split = split
        # Clips of one parent video lie in consecutive 5-minute blocks, as the Ego4D AV clips do.
        parent_start = 300.0 * (clips_in_video + int(rng.integers(0, 4)) * spec.clips_per_video)
        clips_in_video += 1
        quotas = (0, 0)
        if split == "test":
            quotas = (_share(spec.ttm_test_segments, spec.test_clips, test_rank),
                      _share(spec.lam_test_tracks, spec.test_clips, test_rank))
            test_rank += 1
        plans.append(ClipPlan(
            index=index, split=split, clip_uid=_uid(rng), video_uid=video_uid, parent_start_sec=parent_start,
            num_frames=spec.num_frames, width=spec.width, height=spec.height, seed=int(seed),
            # Tiny clips are short: only every other clip carries a >150-frame turn, leaving room for others.
            force_long_turn=(spec.num_frames >= 400 or index % 2 == 0),
            ttm_test_segments=quotas[0], lam_test_tracks=quotas[1],
            lam_test_frames=spec.lam_test_frames if split == "test" else 0, out_dir=str(out_dir)))
    return plans


def _share(total: int, parts: int, rank: int) -> int:
    return total // parts + (1 if rank < total % parts else 0)


# --------------------------------------------------------------------------------------------------------------
# Scene simulation: who is where, who speaks when, who looks where.


@dataclass
class _Person:
    person_id: str
    track_id: str
    lane: int
    first_index: int  # first visible frame (0-based decode index)
    pitch: float
    loudness: float
    skin: tuple
    hair: tuple
    iris: tuple
    spoil_colour: tuple
    boxes: np.ndarray = None  # [N, 4] float (x, y, w, h) as drawn
    gaze: np.ndarray = None  # [N] int8
    mouth: np.ndarray = None  # [N] float32 in [0, 1]
    spoil: np.ndarray = None  # [N] int8: 0 clean, 1/3 occluded, 2 blurred
    track_frames: list = field(default_factory=list)  # annotation frame numbers present in the track


@dataclass
class _Turn:
    speaker: str
    start: int  # annotation frames, inclusive
    end: int
    addressed: bool = False  # spoken to the camera wearer (visible speakers only)
    listener: Optional[str] = None  # whom the camera wearer addresses (wearer turns only)


@dataclass
class _Scene:
    num_frames: int
    width: int
    height: int
    persons: list
    turns: list
    envelope: dict  # person id -> float32 [S_ext] loudness of the voice
    looking: list  # (person id, start, end) annotated, annotation frames inclusive
    voice: list  # (turn index, start, end) annotated voice boundaries of each turn
    talking_addressed: list  # annotated "addressed" flag per turn (noisy)


def _visible_from(person: _Person) -> int:
    return person.first_index + 1  # annotation frame of the first visible frame


def _make_persons(rng: np.random.Generator, num_frames: int, width: int, height: int) -> list[_Person]:
    count = int(rng.integers(2, 4))
    late = int(rng.integers(count))
    pitches = rng.permutation(np.array([105.0, 140.0, 180.0, 225.0, 265.0]))[:count]
    lane_width = width / count
    persons = []
    for lane in range(count):
        first = int(rng.integers(int(0.15 * num_frames), int(0.35 * num_frames))) if lane == late else 0
        skin = tuple(int(c) for c in rng.uniform([170, 120, 90], [240, 185, 150]))
        person = _Person(
            person_id=str(lane + 1), track_id=_uid(rng), lane=lane, first_index=first,
            pitch=float(pitches[lane] * rng.uniform(0.95, 1.05)), loudness=float(rng.uniform(0.13, 0.2)),
            skin=skin, hair=tuple(int(c) for c in rng.uniform(10, 90, size=3)),
            iris=tuple(int(c) for c in rng.uniform(0, 50, size=3)),
            spoil_colour=tuple(int(c * 0.8) for c in skin))
        face_h = height * rng.uniform(0.30, 0.40)
        face_w = face_h * rng.uniform(0.76, 0.86)
        frames = np.arange(num_frames)
        centre_x = (lane + 0.5 + rng.uniform(-0.08, 0.08)) * lane_width
        centre_y = height * rng.uniform(0.38, 0.56)
        drift = 0.1 * lane_width
        cx = (centre_x + drift * np.sin(2 * np.pi * frames / rng.uniform(150, 400) + rng.uniform(0, 2 * np.pi))
              + 1.2 * np.sin(2 * np.pi * frames / rng.uniform(40, 90) + rng.uniform(0, 2 * np.pi)))
        cy = centre_y + 0.04 * height * np.sin(2 * np.pi * frames / rng.uniform(120, 300) + rng.uniform(0, 6.3))
        scale = 1.0 + 0.05 * np.sin(2 * np.pi * frames / rng.uniform(150, 350) + rng.uniform(0, 6.3))
        w, h = face_w * scale, face_h * scale
        person.boxes = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
        persons.append(person)
    # One edge person leans out of the picture for a moment: its box is partly outside the frame.
    edge = persons[0] if rng.random() < 0.5 else persons[-1]
    start_lo = edge.first_index + 5
    length = int(rng.integers(30, 61))
    start = int(rng.integers(start_lo, max(start_lo + 1, num_frames - length - 5)))
    bump = np.zeros(num_frames)
    stop = min(num_frames, start + length)
    bump[start:stop] = np.hanning(length)[: stop - start]
    x, _, w, _ = edge.boxes.T
    if edge.lane == 0:
        shift = x + 0.35 * w  # moves the left edge 35 % of the width past the border
        edge.boxes[:, 0] = x - bump * shift
    else:
        shift = width - (x + w) + 0.35 * w
        edge.boxes[:, 0] = x + bump * shift
    return persons


def _make_turns(rng: np.random.Generator, persons: list[_Person], num_frames: int,
                force_long: bool) -> list[_Turn]:
    for _ in range(200):
        turns: list[_Turn] = []
        t = int(rng.integers(4, 20))
        long_needed = force_long
        previous: Optional[_Turn] = None
        while True:
            remaining = num_frames - 1 - t
            if remaining < 16:
                break
            candidates = [p.person_id for p in persons if _visible_from(p) + 4 <= t]
            if long_needed and candidates and remaining >= 152:
                speaker = str(rng.choice(candidates))
                length = int(rng.integers(152, min(remaining, 180) + 1))
                long_needed = False
            else:
                speaker = CAMERA_WEARER_ID if (not candidates or rng.random() < 0.22) else str(rng.choice(candidates))
                length = int(rng.integers(16, min(remaining, 110) + 1))
            if previous is not None and previous.speaker == speaker and t <= previous.end:
                t = previous.end + 3  # nobody overlaps their own speech
                continue
            turn = _Turn(speaker=speaker, start=t, end=t + length - 1)
            turns.append(turn)
            previous = turn
            if rng.random() < 0.1:
                t = turn.end - int(rng.integers(4, 12))  # the next speaker cuts in
            else:
                t = turn.end + 1 + int(rng.integers(3, 28))
        visible = [turn for turn in turns if turn.speaker != CAMERA_WEARER_ID]
        if len(visible) >= 2 and not long_needed:
            break
    else:  # pragma: no cover - 200 draws without two visible turns do not happen at the sizes used
        raise RuntimeError("could not draw a conversation with two visible speech turns")
    flags = rng.random(len(visible)) < 0.5
    if flags.all() or not flags.any():
        flags[int(rng.integers(len(flags)))] ^= True  # every clip has addressed and unaddressed speech
    for turn, flag in zip(visible, flags):
        turn.addressed = bool(flag)
    for turn in turns:
        if turn.speaker == CAMERA_WEARER_ID and rng.random() < 0.7:
            turn.listener = str(rng.choice([p.person_id for p in persons]))
    return turns


def _averted_direction(rng: np.random.Generator, person: _Person, count: int) -> int:
    # People mostly look towards the others: the left-most person looks right, the right-most looks left.
    if count == 1:
        towards_right = 0.5
    else:
        towards_right = 0.85 - 0.7 * person.lane / (count - 1)
    return GAZE_RIGHT if rng.random() < towards_right else GAZE_LEFT


def _make_gaze(rng: np.random.Generator, persons: list[_Person], turns: list[_Turn], num_frames: int) -> None:
    wearer_speaking = np.zeros(num_frames, bool)
    for turn in turns:
        if turn.speaker == CAMERA_WEARER_ID:
            wearer_speaking[turn.start - 1:turn.end] = True
    for person in persons:
        gaze = np.empty(num_frames, np.int8)
        i = 0
        while i < num_frames:
            length = int(rng.integers(20, 90))
            middle = min(num_frames - 1, i + length // 2)
            p_look = 0.6 if wearer_speaking[middle] else 0.3
            gaze[i:i + length] = GAZE_AT_WEARER if rng.random() < p_look else _averted_direction(rng, person,
                                                                                                  len(persons))
            i += length
        for turn in turns:
            if turn.speaker != person.person_id:
                continue
            if turn.addressed:
                gaze[max(0, turn.start - 4):turn.end] = GAZE_AT_WEARER  # eye contact just before speaking to you
            else:
                gaze[turn.start - 1:turn.end] = _averted_direction(rng, person, len(persons))
        person.gaze = gaze


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (start, end) index runs where ``mask`` is true."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    changes = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(changes[::2], changes[1::2])]


def _annotate_looking(rng: np.random.Generator, persons: list[_Person], num_frames: int) -> list[tuple]:
    looking = []
    for person in persons:
        first_f = _visible_from(person)
        mask = person.gaze == GAZE_AT_WEARER
        mask[: person.first_index] = False
        segments = [(a + 1, b + 1) for a, b in _runs(mask) if b - a + 1 >= 3]
        for start, end in segments:
            roll = rng.random()
            if roll < 0.05:
                continue  # the annotator missed it
            if roll < 0.13:
                start = int(np.clip(start + rng.integers(-10, 11), first_f, num_frames))
                end = int(np.clip(end + rng.integers(-10, 11), start + 2, num_frames))
            looking.append((person.person_id, start, end))
        averted = [(a + 1, b + 1) for a, b in _runs(~mask) if b - a + 1 >= 40 and a >= person.first_index]
        if averted and rng.random() < 0.3:
            a, b = averted[int(rng.integers(len(averted)))]
            length = int(rng.integers(8, 26))
            start = int(rng.integers(a, b - length + 2))
            looking.append((person.person_id, start, start + length - 1))  # a look that was not there
    looking.sort(key=lambda item: (item[1], int(item[0])))
    return looking


def _make_speech(rng: np.random.Generator, persons: list[_Person], turns: list[_Turn],
                 num_frames: int) -> dict:
    """Voice envelopes (audio) and mouth openness (video) of everyone, silent mouthing included."""
    total = int(math.ceil((num_frames + 2) * _SAMPLES_PER_FRAME))
    envelope = {pid: np.zeros(total, np.float32) for pid in [CAMERA_WEARER_ID] + [p.person_id for p in persons]}
    for turn in turns:
        s0, s1 = _frame_sample(turn.start), _frame_sample(turn.end + 1)
        envelope[turn.speaker][s0:s1] = _draw.syllable_envelope(rng, s1 - s0)
    edges = _frame_samples(np.arange(1, num_frames + 2))
    for person in persons:
        visual = envelope[person.person_id].copy()
        if rng.random() < 0.6:  # moves the mouth without a sound: an ASD trap
            own = np.zeros(num_frames + 2, bool)
            for turn in turns:
                if turn.speaker == person.person_id:
                    own[max(0, turn.start - 5):turn.end + 6] = True
            length = int(rng.integers(15, 41))
            options = [f for f in range(_visible_from(person) + 2, num_frames - length)
                       if not own[f:f + length].any()]
            if options:
                f = options[int(rng.integers(len(options)))]
                s0, s1 = _frame_sample(f), _frame_sample(f + length)
                visual[s0:s1] = _draw.syllable_envelope(rng, s1 - s0)
        # The image of annotation frame f shows the mouth during that frame's audio window [f/30, (f+1)/30).
        window_mean = np.add.reduceat(visual, edges)[:num_frames] / np.diff(edges)
        person.mouth = np.clip(1.4 * window_mean, 0.0, 1.0).astype(np.float32)
    return envelope


def _frame_sample(frame: int) -> int:
    """First audio sample of annotation frame ``frame`` (its audio starts at frame / 30 s)."""
    return int(round(frame * _SAMPLES_PER_FRAME))


def _frame_samples(frames: np.ndarray) -> np.ndarray:
    return np.round(frames * _SAMPLES_PER_FRAME).astype(np.int64)


def _annotate_voice(rng: np.random.Generator, persons: list[_Person], turns: list[_Turn],
                    num_frames: int) -> tuple[list, list]:
    first = {p.person_id: _visible_from(p) for p in persons}
    first[CAMERA_WEARER_ID] = 1
    voice, addressed = [], []
    for index, turn in enumerate(turns):
        start, end = turn.start, turn.end
        if rng.random() < 0.12:
            start = int(np.clip(start + rng.integers(-6, 7), first[turn.speaker], num_frames - 16))
            end = int(np.clip(end + rng.integers(-6, 7), start + 15, num_frames))
        voice.append((index, start, end))
        flag = turn.addressed
        if turn.speaker != CAMERA_WEARER_ID and rng.random() < 0.08:
            flag = not flag
        addressed.append(flag)
    visible = [i for i, turn in enumerate(turns) if turn.speaker != CAMERA_WEARER_ID]
    labels = [addressed[i] for i in visible]
    if all(labels) or not any(labels):  # noise must not remove a class from the clip
        for i in visible:
            if addressed[i] != turns[i].addressed:
                addressed[i] = turns[i].addressed
                break
    return voice, addressed


def _spoil_faces(rng: np.random.Generator, persons: list[_Person], num_frames: int) -> None:
    for person in persons:
        person.spoil = np.zeros(num_frames, np.int8)
        for _ in range(int(rng.integers(1, 3))):
            length = int(rng.integers(5, 15))
            start = int(rng.integers(person.first_index, num_frames - length))
            person.spoil[start:start + length] = int(rng.integers(1, 4))


def _make_tracks(rng: np.random.Generator, persons: list[_Person], num_frames: int) -> None:
    for person in persons:
        frames = list(range(_visible_from(person), num_frames + 1))
        missing: set = set()
        for _ in range(int(rng.integers(1, 3))):  # annotators skipped a few frames: loaders interpolate
            length = int(rng.integers(1, 4))
            start = int(rng.integers(frames[0] + 5, frames[-1] - 5 - length))
            missing.update(range(start, start + length))
        person.track_frames = [f for f in frames if f not in missing]


def simulate_scene(rng: np.random.Generator, num_frames: int, width: int, height: int,
                   force_long_turn: bool) -> _Scene:
    """Draw the people, their conversation, gaze, mouths, annotations and track defects of one clip."""
    persons = _make_persons(rng, num_frames, width, height)
    turns = _make_turns(rng, persons, num_frames, force_long_turn)
    _make_gaze(rng, persons, turns, num_frames)
    envelope = _make_speech(rng, persons, turns, num_frames)
    looking = _annotate_looking(rng, persons, num_frames)
    voice, addressed = _annotate_voice(rng, persons, turns, num_frames)
    _spoil_faces(rng, persons, num_frames)
    _make_tracks(rng, persons, num_frames)
    return _Scene(num_frames=num_frames, width=width, height=height, persons=persons, turns=turns,
                  envelope=envelope, looking=looking, voice=voice, talking_addressed=addressed)


# --------------------------------------------------------------------------------------------------------------
# Rendering.


def render_scene(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and sound of a scene.

    Returns:
        (frames uint8 ``[N, H, W, 3]`` RGB, audio float32 ``[N / 30 * 16000]``).
    """
    background = _draw.make_background(rng, scene.width, scene.height)
    noise = _draw.make_noise_bank(rng, scene.width, scene.height)
    frames = np.empty((scene.num_frames, scene.height, scene.width, 3), np.uint8)
    for i in range(scene.num_frames):
        image = background.copy()
        for person in scene.persons:
            if i < person.first_index:
                continue
            box = tuple(person.boxes[i])
            _draw.draw_face(image, box, int(person.gaze[i]), float(person.mouth[i]), person.skin, person.hair,
                            person.iris)
            if person.spoil[i]:
                _draw.occlude(image, box, int(person.spoil[i]), person.spoil_colour)
        frames[i] = np.clip(image.astype(np.int16) + noise[i % len(noise)], 0, 255).astype(np.uint8)
    num_samples = _frame_sample(scene.num_frames)
    audio = _draw.room_noise(rng, num_samples)
    speakers = {p.person_id: p for p in scene.persons}
    for turn in scene.turns:
        s0, s1 = _frame_sample(turn.start), min(num_samples, _frame_sample(turn.end + 1))
        if s1 <= s0:
            continue
        if turn.speaker == CAMERA_WEARER_ID:
            pitch, loudness = 120.0, 0.3  # the wearer's mouth is next to the microphone
        else:
            pitch, loudness = speakers[turn.speaker].pitch, speakers[turn.speaker].loudness
        audio[s0:s1] += _draw.voice(scene.envelope[turn.speaker][s0:s1], s0, pitch, loudness, rng)
    return frames, np.clip(audio, -0.99, 0.99)


# --------------------------------------------------------------------------------------------------------------
# Annotations in the official AV/social schema.


def _timed(start: int, end: int, video_offset: int) -> dict:
    return {
        "start_frame": int(start), "end_frame": int(end),
        "start_time": round(start / FPS, 5), "end_time": round(end / FPS, 5),
        "video_start_frame": int(video_offset + start), "video_end_frame": int(video_offset + end),
        "video_start_time": round((video_offset + start) / FPS, 5),
        "video_end_time": round((video_offset + end) / FPS, 5),
    }


def clip_annotation(scene: _Scene, plan: ClipPlan, rng: np.random.Generator) -> dict:
    """The clip object of ``av_<split>.json`` for a simulated scene (hhi §1.1 + the public AV schema)."""
    offset = int(round(plan.parent_start_sec * FPS))
    duration = scene.num_frames / FPS
    voice_by_person: dict = {}
    talking, transcriptions = [], []
    for (index, start, end), addressed in zip(scene.voice, scene.talking_addressed):
        turn = scene.turns[index]
        voice_by_person.setdefault(turn.speaker, []).append(dict(_timed(start, end, offset), person=turn.speaker))
        if turn.speaker == CAMERA_WEARER_ID:
            target, is_at_me = turn.listener, False
        else:
            target, is_at_me = (CAMERA_WEARER_ID if addressed else None), bool(addressed)
        talking.append(dict(_timed(start, end, offset), person=turn.speaker, target=target, is_at_me=is_at_me))
        transcriptions.append({
            "transcription": f"<synthetic speech of person {turn.speaker}>",
            "person_id": turn.speaker,
            "start_time_sec": round(start / FPS, 5), "end_time_sec": round(end / FPS, 5),
            "video_start_time": round((offset + start) / FPS, 5), "video_start_frame": offset + start,
            "video_end_time": round((offset + end) / FPS, 5), "video_end_frame": offset + end,
        })
    looking = [dict(_timed(start, end, offset), person=pid, target=CAMERA_WEARER_ID, is_at_me=True)
               for pid, start, end in scene.looking]
    wearer_voice = voice_by_person.get(CAMERA_WEARER_ID, [])
    persons = [{"person_id": CAMERA_WEARER_ID, "camera_wearer": True, "tracking_paths": [],
                "voice_segments": wearer_voice}]
    for person in scene.persons:
        jitter = rng.normal(0.0, [0.8, 0.8, 0.6, 0.6], size=(len(person.track_frames), 4))
        track = []
        for f, (dx, dy, dw, dh) in zip(person.track_frames, jitter):
            x, y, w, h = person.boxes[f - 1]
            track.append({"frame": f, "x": round(float(x + dx), 2), "y": round(float(y + dy), 2),
                          "width": round(float(w + dw), 2), "height": round(float(h + dh), 2),
                          "video_frame": offset + f, "clip_frame": None})
        persons.append({
            "person_id": person.person_id, "camera_wearer": False,
            "tracking_paths": [{"track_id": person.track_id, "track": track, "suspect": False,
                                "unmapped_frames_count": 0, "unmapped_frames": []}],
            "voice_segments": voice_by_person.get(person.person_id, []),
        })
    return {
        "clip_uid": plan.clip_uid, "source_clip_uid": plan.clip_uid, "video_uid": plan.video_uid,
        "fps": float(FPS), "valid": True,
        "parent_start_sec": plan.parent_start_sec, "parent_end_sec": round(plan.parent_start_sec + duration, 5),
        "parent_start_frame": offset, "parent_end_frame": offset + scene.num_frames,
        "video_start_sec": plan.parent_start_sec, "video_end_sec": round(plan.parent_start_sec + duration, 5),
        "video_start_frame": offset, "video_end_frame": offset + scene.num_frames,
        "clip_start_sec": 0, "clip_end_sec": round(duration, 5),
        "clip_start_frame": 0, "clip_end_frame": scene.num_frames,
        "camera_wearer": {"person_id": CAMERA_WEARER_ID, "camera_wearer": True, "voice_segments": wearer_voice},
        "persons": persons,
        "missing_voice_segments": [],
        "transcriptions": transcriptions,
        "social_segments_talking": talking,
        "social_segments_looking": looking,
    }


# --------------------------------------------------------------------------------------------------------------
# Challenge test releases (cut from the unannotated test clips).


def _write_test_releases(scene: _Scene, plan: ClipPlan, frames: np.ndarray, audio: np.ndarray,
                         rng: np.random.Generator, annotation: dict) -> dict:
    test_root = Path(plan.out_dir) / "v1" / "social_test"
    persons = {p.person_id: p for p in scene.persons}
    ttm_segments, lam_crops = {}, []
    # TTM: one segment per annotated speech turn of a visible person, face crops numbered from 0.
    candidates = [(turn_index, start, end, flag) for (turn_index, start, end), flag
                  in zip(scene.voice, scene.talking_addressed)
                  if scene.turns[turn_index].speaker != CAMERA_WEARER_ID]
    order = rng.permutation(len(candidates))[: plan.ttm_test_segments]
    for k in sorted(int(i) for i in order):
        turn_index, start, end, flag = candidates[k]
        person = persons[scene.turns[turn_index].speaker]
        segment_id = _uid(rng)
        present = set(person.track_frames)
        frame_list = []
        for offset, f in enumerate(range(start, end + 1)):
            if f not in present or rng.random() < 0.05:  # the face detector missed it
                continue
            media.write_image(test_root / "final_test_data" / segment_id / "face" / f"{offset}.jpg",
                              _draw.crop_face(frames[f - 1], tuple(person.boxes[f - 1])), quality=90)
            frame_list.append(offset)
        samples = audio[_frame_sample(start):_frame_sample(end + 1)]
        media.write_wav(test_root / "final_test_data" / segment_id / "audio" / "aud.wav", samples, SAMPLE_RATE)
        audio_seconds = len(samples) / SAMPLE_RATE
        frame_num = max(int(audio_seconds * FPS + 1), (max(frame_list) + 1) if frame_list else 0)
        ttm_segments[segment_id] = {"frame_list": frame_list, "frame_num": frame_num, "label": int(flag),
                                    "clip_uid": plan.clip_uid, "person": person.person_id,
                                    "start_frame": start, "end_frame": end}
    # LAM: a window of one face track per chosen person, one 224x224 crop per frame.
    chosen = rng.permutation(len(scene.persons))[: plan.lam_test_tracks]
    for k in sorted(int(i) for i in chosen):
        person = scene.persons[k]
        looking = [(s, e) for pid, s, e in scene.looking if pid == person.person_id]
        frames_in_track = person.track_frames
        length = min(plan.lam_test_frames, len(frames_in_track))
        window = frames_in_track[:length]
        for _ in range(12):  # prefer a window that holds both classes
            first = int(rng.integers(0, len(frames_in_track) - length + 1))
            window = frames_in_track[first:first + length]
            labels = {any(s <= f <= e for s, e in looking) for f in window}
            if len(labels) == 2:
                break
        for f in window:
            unique_id = uuid.UUID(bytes=rng.bytes(16), version=4).hex
            media.write_image(test_root / "videos_challenge" / plan.clip_uid / person.track_id
                              / f"{f}_{unique_id}.jpg",
                              _draw.crop_face(frames[f - 1], tuple(person.boxes[f - 1])), quality=90)
            lam_crops.append({"video_id": plan.clip_uid, "track_id": person.track_id, "frame": f,
                              "unique_id": unique_id, "label": int(any(s <= f <= e for s, e in looking))})
    return {"ttm": ttm_segments, "lam": lam_crops, "annotation": annotation}


# --------------------------------------------------------------------------------------------------------------
# One clip (a worker job) and the whole social twin.


def render_social_clip(plan: ClipPlan) -> dict:
    """Simulate, render and write one clip (``v1/clips/<clip_uid>.mp4``); test clips also write their releases.

    Returns:
        ``{"annotation": clip dict}`` for train/val clips; test clips add ``"ttm"`` (segment id -> seg_info entry
        with the hidden label) and ``"lam"`` (crops with hidden labels).
    """
    rng = np.random.default_rng([plan.seed, _CLIP_STREAM, plan.index])
    scene = simulate_scene(rng, plan.num_frames, plan.width, plan.height, plan.force_long_turn)
    frames, audio = render_scene(rng, scene)
    annotation = clip_annotation(scene, plan, rng)
    media.write_video(Path(plan.out_dir) / "v1" / "clips" / f"{plan.clip_uid}.mp4", frames, fps=FPS, audio=audio,
                      sample_rate=SAMPLE_RATE, crf=20, gop=FPS)
    if plan.split == "test":
        return _write_test_releases(scene, plan, frames, audio, rng, annotation)
    return {"annotation": annotation}


def _av_file(split: str, plans: Sequence[ClipPlan], results: Sequence[dict], seed: int) -> dict:
    videos: list[dict] = []
    for plan, result in zip(plans, results):
        if plan.split != split:
            continue
        if not videos or videos[-1]["video_uid"] != plan.video_uid:
            videos.append({"video_uid": plan.video_uid, "split": split, "clips": []})
        videos[-1]["clips"].append(result["annotation"])
    return {
        "version": "v1",
        "date": _ANNOTATION_DATE,
        "description": f"Synthetic Ego4D twin (egot2.synthetic, seed {seed}): audio-visual diarization and social "
                       f"annotations, {split} split",
        "split": split,
        "videos": videos,
    }


def synthesize_social(out_dir, size: str = "tiny", seed: int = 0, tasks: Sequence[str] = SOCIAL_TASKS,
                      workers: int = 1) -> dict:
    """Write the social part of a twin download under ``out_dir/v1``.

    The three social tasks share one set of annotations and clips, so any non-empty subset of ``tasks`` writes
    all of it.

    Writes:
        ``v1/annotations/av_{train,val}.json``, ``v1/annotations/social_splits/{train,val,test,full}.list``,
        ``v1/clips/<clip_uid>.mp4`` (30 fps, 16 kHz mono AAC; test clips too),
        ``v1/social_test/final_test_data/<segment>/{face/<frame>.jpg, audio/aud.wav}``,
        ``v1/social_test/seg_info.json``, ``v1/social_test/videos_challenge/<video>/<track>/<frame>_<unique>.jpg``,
        and the hidden test labels ``twin_answers/social_test.json`` (not part of a real download).

    Returns:
        the ``social`` section of ``twin.json`` (counts and planted rules).
    """
    unknown = sorted(set(tasks) - set(SOCIAL_TASKS))
    if unknown:
        raise ValueError(f"not social tasks: {unknown}; social tasks are {list(SOCIAL_TASKS)}")
    out_dir = Path(out_dir)
    plans = plan_social(out_dir, size, seed)
    # Loaders list the release folders, so segments of an earlier twin written here must not survive.
    for release in ("final_test_data", "videos_challenge"):
        shutil.rmtree(out_dir / "v1" / "social_test" / release, ignore_errors=True)
    results = run_jobs(render_social_clip, plans, workers=workers, desc="social clips")
    annotations = out_dir / "v1" / "annotations"
    for split in ("train", "val"):
        write_json_atomic(annotations / f"av_{split}.json", _av_file(split, plans, results, seed), sort_keys=True)
    lists = {split: [p.clip_uid for p in plans if p.split == split] for split in ("train", "val", "test")}
    lists["full"] = lists["train"] + lists["val"] + lists["test"]
    for split, uids in lists.items():
        write_text_atomic(annotations / "social_splits" / f"{split}.list", "".join(uid + "\n" for uid in uids))
    seg_info, answers_ttm, answers_lam = {}, {}, []
    for plan, result in zip(plans, results):
        for segment_id, entry in result.get("ttm", {}).items():
            seg_info[segment_id] = {"frame_list": entry["frame_list"], "frame_num": entry["frame_num"]}
            answers_ttm[segment_id] = {k: entry[k] for k in ("label", "clip_uid", "person", "start_frame",
                                                             "end_frame")}
        answers_lam.extend(result.get("lam", []))
    write_json_atomic(out_dir / "v1" / "social_test" / "seg_info.json", seg_info, sort_keys=True)
    write_json_atomic(out_dir / "twin_answers" / "social_test.json",
                      {"ttm": answers_ttm, "lam": answers_lam}, indent=1, sort_keys=True)
    return _summary(plans, results, size)


def _summary(plans: Sequence[ClipPlan], results: Sequence[dict], size: str) -> dict:
    counts = {}
    for split in ("train", "val", "test"):
        clips = [r["annotation"] for p, r in zip(plans, results) if p.split == split]
        talking = [s for c in clips for s in c["social_segments_talking"] if s["person"] != CAMERA_WEARER_ID]
        counts[split] = {
            "clips": len(clips),
            "visible_persons": sum(len(c["persons"]) - 1 for c in clips),
            "looking_segments": sum(len(c["social_segments_looking"]) for c in clips),
            "talking_segments_to_wearer": sum(1 for s in talking if s["target"] is not None),
            "talking_segments_not_to_wearer": sum(1 for s in talking if s["target"] is None),
            "voice_segments": sum(len(p["voice_segments"]) for c in clips for p in c["persons"][1:]),
        }
    spec = SOCIAL_SIZES[size]
    first = plans[0]
    return {
        "frames_per_clip": spec.num_frames,
        "resolution": [first.width, first.height],
        "fps": FPS,
        "audio_sample_rate": SAMPLE_RATE,
        "splits": counts,
        "ttm_test_segments": sum(len(r.get("ttm", {})) for r in results),
        "lam_test_tracks": sum(p.lam_test_tracks for p in plans),
        "lam_test_crops": sum(len(r.get("lam", [])) for r in results),
        "rules": SOCIAL_RULES,
    }
