"""The FHO half of the synthetic Ego4D twin: PNR, OSCC, AR and LTA in the raw download format.

Output, as the Ego4D CLI lays out a download (``out_dir`` = the CLI's output folder)::

    out_dir/v1/annotations/fho_oscc-pnr_{train,val,test_unannotated}.json   (tasks pnr, oscc)
    out_dir/v1/annotations/fho_lta_{train,val,test_unannotated}.json        (tasks ar, lta)
    out_dir/v1/annotations/fho_lta_taxonomy.json                            (tasks ar, lta)
    out_dir/v1/full_scale/<video_uid>.mp4    full-scale videos, 30 fps, no audio (tasks pnr, oscc)
    out_dir/v1/clips/<clip_uid>.mp4          canonical clips = a contiguous frame range of their video (ar, lta)
    out_dir/twin_answers/fho_{oscc-pnr,lta}_test.json   the test split's hidden labels (not in a real download)

The world (see :mod:`egot2.synthetic._fho_draw` for the pixels): each full-scale video is a sequence of actions
of the camera wearer. An action is a **verb** (a motion of the object and the hand) applied to a **noun** (an
object whose *shape* is the class; each noun has its own hue, which 15 % of objects do not follow). Three verbs
(``cut``, ``paint``, ``squash``) change the object's state at one frame, the PNR frame. The order of actions follows
a Markov grammar: every noun has a script of verbs, and when a script ends the next noun is usually the noun's fixed
successor. So

* AR: verb = motion pattern, noun = shape (and, mostly, hue);
* OSCC: a window is positive exactly when a state change happens inside it (windows around state-changing
  actions contain one change, windows around other actions contain none);
* PNR: the change happens at a fixed phase of the tool motion (the bottom of a chopping stroke, ...);
* LTA: the next actions are predictable from the observed ones (script position, noun successor);

and the same videos feed all four tasks. Annotations carry label noise (6 % of verb and of noun labels replaced,
5 % of OSCC labels flipped, PNR frames jittered by a few frames) and the pixels carry visual noise.

Layout facts the loaders rely on: every video is in one split (``train``, ``val`` or ``test``) for all tasks; a
canonical clip holds at least 24 annotated actions (≥ 23 = N + Z + 1 gives an LTA window); oscc-pnr windows are
8 s long (``parent_end_frame − parent_start_frame = 240``) and lie inside their video, positives and all test
windows also inside the canonical clip; train/val negatives carry null clip fields and ``pnr_frame: null`` (test
windows all carry clip fields, so clip-ness does not give their label away); window and action bounds sit on a
0.5-s grid so ``frame = 30 × sec`` holds exactly; LTA action windows are 8 s around the action, truncated at the
clip's start and end. Label ids are v1 (115 verbs, 478 nouns); only a few of them are
used (:data:`VERBS`, :data:`NOUNS`).

Determinism: everything derives from ``numpy.random.SeedSequence([seed, video_index, stream])``, so videos can
be rendered in any order or in parallel with identical bytes; JSON is written with sorted keys.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from egot2 import media
from egot2.jobs import run_jobs, write_json_atomic
from egot2.synthetic import _fho_draw as draw

__all__ = [
    "FHO_TASKS",
    "FHO_RULES",
    "FPS",
    "NUM_VERBS",
    "NUM_NOUNS",
    "WINDOW_FRAMES",
    "VERBS",
    "NOUNS",
    "SCRIPTS",
    "SUCCESSOR",
    "SIZES",
    "FhoSize",
    "Action",
    "VideoPlan",
    "fho_taxonomy",
    "plan_video",
    "render_video",
    "synthesize_fho",
]

FHO_TASKS = ("pnr", "oscc", "ar", "lta")
FPS = 30
NUM_VERBS = 115
NUM_NOUNS = 478
WINDOW_FRAMES = 8 * FPS          # oscc-pnr and LTA action windows: 8 s
GRID = FPS // 2                  # annotation bounds sit on a 0.5-s grid (exact frame = 30 × sec)
FILE_SPLITS = {"train": "train", "val": "val", "test": "test_unannotated"}

# verb key -> (v1 label index, taxonomy name, changes the object's state)
VERBS: dict[str, tuple[int, str, bool]] = {
    "bring": (9, "bring_(approach,_pull_closer)", False),
    "cut": (22, "cut_(slice,_chop)", True),
    "lift": (48, "lift_(raise,_pick_up)", False),
    "lower": (50, "lower_(put_down,_set_down)", False),
    "paint": (64, "paint_(colour,_coat)", True),
    "push_away": (70, "push_away_(withdraw,_move_away)", False),
    "rotate": (76, "rotate_(spin,_twist)", False),
    "slide_right": (82, "slide_right_(shift_right)", False),
    "slide_left": (83, "slide_left_(shift_left)", False),
    "shake": (87, "shake_(jiggle,_wobble)", False),
    "squash": (95, "squash_(crush,_flatten)", True),
}

# noun key (= shape) -> (v1 label index, taxonomy name)
NOUNS: dict[str, tuple[int, str]] = {
    "arrow": (11, "arrow_(pointer)"),
    "bar": (23, "bar_(stick,_rod)"),
    "block": (41, "block_(box,_cube)"),
    "corner": (95, "corner_(L-bracket)"),
    "crescent": (101, "crescent_(moon_shape)"),
    "cross": (102, "cross_(plus_sign)"),
    "disc": (112, "disc_(plate,_coin)"),
    "diamond": (120, "diamond_(rhombus)"),
    "hexagon": (205, "hexagon_(hex_nut_shape)"),
    "ring": (350, "ring_(hoop,_loop)"),
    "star": (400, "star_(sticker)"),
    "wedge": (462, "wedge_(triangle,_doorstop)"),
}

# The grammar. Every script opens with lift or bring, then a noun-specific core verb, then a fixed chain of habits
# (slide_right → slide_left → shake → rotate → lower; cut → shake, paint/squash → rotate), and closes with
# lower or push_away. So the next verb is mostly predictable from the current one, the next noun from the current noun
# (:data:`SUCCESSOR`), and a state change is always followed by at least two more actions on the same object,
# which keeps the changed state in view for a few seconds after the PNR frame.
SCRIPTS: dict[str, tuple[str, ...]] = {
    "disc": ("bring", "paint", "rotate", "lower"),
    "block": ("lift", "cut", "shake", "rotate", "lower"),
    "wedge": ("lift", "slide_right", "slide_left", "shake", "rotate", "lower"),
    "bar": ("bring", "cut", "shake", "rotate", "lower"),
    "ring": ("lift", "paint", "rotate", "lower"),
    "cross": ("lift", "slide_left", "shake", "rotate", "lower"),
    "crescent": ("lift", "squash", "rotate", "lower"),
    "hexagon": ("bring", "squash", "rotate", "lower"),
    "star": ("bring", "shake", "rotate", "push_away"),
    "corner": ("lift", "squash", "rotate", "lower"),
    "diamond": ("lift", "slide_right", "slide_left", "shake", "rotate", "lower"),
    "arrow": ("lift", "shake", "rotate", "push_away"),
}
# A cycle in which plain scripts separate pairs of state-changing ones: the PNR frames of consecutive changes are
# about 9 s apart (room for a positive window around each) and some stretches stay change-free (negatives).
SUCCESSOR: dict[str, str] = {
    "disc": "block", "block": "wedge", "wedge": "bar", "bar": "ring", "ring": "cross", "cross": "crescent",
    "crescent": "hexagon", "hexagon": "star", "star": "corner", "corner": "diamond", "diamond": "arrow",
    "arrow": "disc",
}

FHO_RULES = (
    "noun = shape of the object in view (disc, block, wedge, bar, ring, cross, star, crescent, diamond, hexagon, "
    "arrow, corner); each noun has its own hue (saturation and brightness vary), 15% of objects take a random hue",
    "verb = motion of object and hand: lift/lower move it up/down, slide_left/right sideways, rotate turns it, "
    "shake jiggles it, bring enlarges it, push_away shrinks it; cut (chopping strokes), paint (hand sweeps) and "
    "squash (press, flattens) change its state",
    "state change = the object darkens (and cracks after cut, stays flat after squash) at the PNR frame and keeps "
    "that look until it leaves; OSCC positive iff a change happens inside the 8-s window",
    "PNR = bottom of a chopping stroke (cut), mid-sweep (paint), end of the press (squash)",
    "LTA grammar: every noun has a verb script; after the script the next noun is its fixed successor 95% of the time",
    "label noise: 6% of verb and noun labels replaced, 5% of train/val OSCC labels flipped, PNR frames jittered "
    "(std 3 frames)",
)

# Grammar and noise rates.
P_SUCCESSOR = 0.95       # next noun = the fixed successor (else any other noun)
P_OFF_HUE = 0.15         # an object takes a random hue instead of its noun's
P_REPEAT = 0.07          # a plain verb is done twice in a row
P_SKIP = 0.05            # a script step is skipped
P_VERB_NOISE = 0.06      # annotated verb replaced by another active verb
P_NOUN_NOISE = 0.06
P_OSCC_FLIP = 0.05       # annotated OSCC label flipped
PNR_JITTER = 3.0         # std (frames) of the annotated PNR frame around the true one

_TAXONOMY_SEED = 20220201
# Nouns that share a head word and differ only in the parenthesised part, at the positions the real v1 list has
# them (EgoT2-g's vocabulary builder special-cases exactly these indices).
_NOUN_TRAPS = {19: "bat_(sports)", 20: "bat_(tool)", 84: "chip_(food)", 85: "chip_(wood'_metal),",
               86: "chip_(wood,_metal)", 270: "nut_(food)", 271: "nut_(tool)", 319: "pot", 320: "pot_(planter)"}
# Words that are both a verb and a noun once the parenthesised part is dropped.
_VERB_COLLISIONS = {14: "brush_(scrub,_sweep)", 40: "file_(rasp,_smooth)", 90: "saw_(cut_wood)"}
_NOUN_COLLISIONS = {55: "brush", 150: "file_(tool)", 280: "paint", 360: "saw"}


@dataclass(frozen=True)
class FhoSize:
    """Scale of a twin.

    Attributes:
        width, height: frame size of every video (even numbers).
        splits: split of each full-scale video, in video order.
        clip_actions: inclusive range of annotated actions per canonical clip.
        outside_actions: inclusive range of actions before and after the clip in the full-scale video.
        min_windows: fewest positive and fewest negative oscc-pnr windows (as annotated) per video.
    """

    width: int
    height: int
    splits: tuple[str, ...]
    clip_actions: tuple[int, int]
    outside_actions: tuple[int, int]
    min_windows: int


SIZES: dict[str, FhoSize] = {
    "tiny": FhoSize(128, 96, ("train", "val", "test"), (24, 26), (2, 3), 4),
    "small": FhoSize(160, 120, ("train",) * 10 + ("val",) * 3 + ("test",) * 3, (36, 44), (2, 4), 3),
}


@dataclass
class ObjectInstance:
    """One physical object: it enters with a script and leaves when the script ends."""

    noun: str
    colour: tuple[float, float, float]   # RGB 0-255, before any state change
    radius: float                        # pixels
    angle: float                         # initial orientation, radians
    changed_at: Optional[int] = None     # parent frame of its state change
    change_verb: Optional[str] = None


@dataclass
class Action:
    """One action of the camera wearer; frames are full-scale (parent) frame numbers, ``end`` exclusive."""

    start: int
    end: int
    verb: str
    noun: str
    instance: int
    rest: tuple[float, float]            # object centre at phase 0, pixels
    pnr_phase: float = 0.5               # phase of the state change (state-changing verbs)
    pnr: Optional[int] = None            # true PNR frame
    verb_label: int = -1                 # annotated (noisy) labels
    noun_label: int = -1


@dataclass
class OsccWindow:
    """An 8-s oscc-pnr window, in parent frames (``end = start + 240``, inclusive)."""

    start: int
    in_clip: bool
    state_change: bool                   # annotated (after label noise)
    pnr: Optional[int]                   # annotated PNR frame (None on negatives)

    @property
    def end(self) -> int:
        return self.start + WINDOW_FRAMES


@dataclass
class VideoPlan:
    """Everything about one full-scale video except its pixels (which :func:`render_video` derives from it)."""

    seed: int
    index: int
    split: str
    width: int
    height: int
    num_frames: int
    video_uid: str
    clip_uid: str
    clip_id: int
    clip_start: int                      # parent frame of the clip's first frame (multiple of GRID)
    clip_end: int                        # parent frame one past the clip's last frame (multiple of GRID)
    first_clip_action: int               # index into actions of the clip's action_idx 0
    num_clip_actions: int
    actions: list[Action] = field(default_factory=list)
    instances: list[ObjectInstance] = field(default_factory=list)
    windows: list[OsccWindow] = field(default_factory=list)
    background: tuple[float, float, float] = (150.0, 150.0, 150.0)
    skin: tuple[float, float, float] = (220.0, 170.0, 140.0)


# ----------------------------------------------------------------------------------------------------- taxonomy

def _pseudo_words(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    words: list[str] = []
    while len(words) < count:
        syllables = int(rng.integers(2, 4))
        word = "".join(consonants[rng.integers(len(consonants))] + vowels[rng.integers(len(vowels))]
                       for _ in range(syllables))
        if rng.random() < 0.4:
            word += consonants[rng.integers(len(consonants))]
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


def _fill(slots: list[Optional[str]], rng: np.random.Generator, taken: set[str]) -> list[str]:
    heads = _pseudo_words(rng, 3 * slots.count(None), taken)
    names = []
    for slot in slots:
        if slot is not None:
            names.append(slot)
            continue
        head = heads.pop()
        if rng.random() < 0.35:  # official style: a head word with its synonyms in parentheses
            head += "_(" + ",_".join(heads.pop() for _ in range(int(rng.integers(1, 3)))) + ")"
        names.append(head)
    return names


def fho_taxonomy() -> dict[str, list[str]]:
    """The synthetic v1 taxonomy: 115 verb and 478 noun strings, list position = class index.

    The same for every seed. The planted verbs/nouns sit at the indices of :data:`VERBS`/:data:`NOUNS`; the rest
    are pseudo-words in the official ``head_(synonym,_synonym)`` style, plus the real list's traps: nouns that
    collide once the parentheses are dropped (19/20, 84/85/86 with a stray apostrophe and trailing comma, 270/271,
    319/320) and words that are both a verb and a noun.
    """
    rng = np.random.default_rng(_TAXONOMY_SEED)
    verbs: list[Optional[str]] = [None] * NUM_VERBS
    nouns: list[Optional[str]] = [None] * NUM_NOUNS
    for index, name, _ in VERBS.values():
        verbs[index] = name
    for index, name in NOUNS.values():
        nouns[index] = name
    for slots, fixed in ((verbs, _VERB_COLLISIONS), (nouns, _NOUN_TRAPS), (nouns, _NOUN_COLLISIONS)):
        for index, name in fixed.items():
            if slots[index] is not None:
                raise AssertionError(f"taxonomy slot {index} used twice")
            slots[index] = name
    taken = {name.split("_(")[0] for name in verbs + nouns if name}
    return {"verbs": _fill(verbs, rng, taken), "nouns": _fill(nouns, rng, taken)}


# ----------------------------------------------------------------------------------------------------- planning

def _uid(seed: int, *parts) -> str:
    """A deterministic uuid-shaped string."""
    digest = hashlib.sha256("|".join(["egot2-fho", str(seed), *map(str, parts)]).encode()).hexdigest()
    variant = "89ab"[int(digest[16], 16) % 4]
    return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-{variant}{digest[17:20]}-{digest[20:32]}"


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def _sample_grammar(rng: np.random.Generator, count: int) -> list[tuple[str, str, bool]]:
    """``count`` (verb, noun, new_object) triples from the script grammar."""
    nouns = sorted(SCRIPTS)
    noun, position = nouns[rng.integers(len(nouns))], 0
    sequence = [(SCRIPTS[noun][0], noun, True)]
    while len(sequence) < count:
        script, verb = SCRIPTS[noun], SCRIPTS[noun][position]
        draw_ = rng.random()
        if position + 1 < len(script):
            plain = not VERBS[verb][2]
            if draw_ < P_REPEAT and plain:
                sequence.append((verb, noun, False))
                continue
            # Only plain steps are skipped, never the state change nor the two actions that follow it.
            skippable = (plain and position + 2 < len(script) and not VERBS[script[position + 1]][2]
                         and not any(VERBS[v][2] for v in script[max(position - 1, 0):position + 1]))
            position += 2 if (P_REPEAT <= draw_ < P_REPEAT + P_SKIP and skippable) else 1
            sequence.append((script[position], noun, False))
            continue
        if rng.random() < P_SUCCESSOR:
            noun = SUCCESSOR[noun]
        else:
            others = [other for other in nouns if other != noun]
            noun = others[rng.integers(len(others))]
        position = 0
        sequence.append((SCRIPTS[noun][0], noun, True))
    return sequence


def _pose_at(action: Action, p: float, instance: ObjectInstance, angle: float, squash: float,
             width: int, height: int) -> tuple[draw.Pose, draw.Motion]:
    move = draw.motion(action.verb, p, instance.radius, width, height, action.pnr_phase)
    pose = draw.Pose(action.rest[0] + move.dx, action.rest[1] + move.dy, move.scale, angle + move.dangle,
                     move.squash if move.squash is not None else squash)
    return pose, move


def _noisy_label(rng: np.random.Generator, true_key: str, table: dict, rate: float) -> int:
    if rng.random() < rate:
        others = sorted(key for key in table if key != true_key)
        true_key = others[rng.integers(len(others))]
    return table[true_key][0]


def _free_of(pnrs: Sequence[int], start: int, end: int) -> bool:
    return not any(start <= frame <= end for frame in pnrs)


def plan_video(seed: int, index: int, size: FhoSize | str) -> VideoPlan:
    """Lay out video ``index`` of a twin: its actions, objects, canonical clip, oscc-pnr windows and labels.

    Deterministic in (seed, index, size); independent of the other videos. Plans with fewer than
    ``size.min_windows`` positive or negative oscc-pnr windows are redrawn (from the same generator), so even a
    tiny twin has a few of each per video.
    """
    size = SIZES[size] if isinstance(size, str) else size
    rng = _rng(seed, index, 1)
    for _ in range(200):
        plan = _draw_plan(rng, seed, index, size)
        positives = sum(window.state_change for window in plan.windows)
        if min(positives, len(plan.windows) - positives) >= size.min_windows:
            return plan
    raise RuntimeError(f"plan_video: no plan with {size.min_windows} positive and negative windows in 200 draws "
                       f"(seed {seed}, video {index})")


def _draw_plan(rng: np.random.Generator, seed: int, index: int, size: FhoSize) -> VideoPlan:
    width, height = size.width, size.height
    num_clip = int(rng.integers(size.clip_actions[0], size.clip_actions[1] + 1))
    num_before = int(rng.integers(size.outside_actions[0], size.outside_actions[1] + 1))
    num_after = int(rng.integers(size.outside_actions[0], size.outside_actions[1] + 1))
    grammar = _sample_grammar(rng, num_before + num_clip + num_after)

    # Hues away from skin/orange, so the hand never looks like an object; one per noun, as real objects have
    # typical colours, but not always (P_OFF_HUE), so that the shape stays the defining cue.
    hue_choices = np.linspace(0.17, 0.92, len(SCRIPTS))
    noun_hues = dict(zip(sorted(SCRIPTS), hue_choices))
    instances: list[ObjectInstance] = []
    actions: list[Action] = []
    cursor = int(rng.integers(15, 31))
    angle = squash = 0.0
    end_pose: Optional[draw.Pose] = None   # where the previous action left its object
    for verb, noun, new_object in grammar:
        if new_object:
            hue = hue_choices[rng.integers(len(hue_choices))] if rng.random() < P_OFF_HUE else noun_hues[noun]
            instances.append(ObjectInstance(
                noun=noun, radius=0.15 * height * float(rng.uniform(0.85, 1.15)),
                angle=float(rng.uniform(0, 2 * math.pi)),
                colour=draw.hsv_to_rgb255(float(hue), float(rng.uniform(0.8, 0.95)), float(rng.uniform(0.82, 0.95)))))
            angle, squash = instances[-1].angle, 1.0
        instance = instances[-1]
        x0, x1, y0, y1 = draw.MOTIONS[verb]
        if new_object:
            rest = (float(rng.uniform(x0, x1)) * width, float(rng.uniform(y0, y1)) * height)
        else:
            # Carry on from where the previous action left the object, nudged into this verb's start region.
            rest = (float(np.clip(end_pose.x + rng.normal(0, 0.02 * width), x0 * width, x1 * width)),
                    float(np.clip(end_pose.y + rng.normal(0, 0.02 * height), y0 * height, y1 * height)))
        start = cursor + (int(rng.integers(4, 11)) if actions else 0)
        length = int(rng.integers(54, 79))
        action = Action(start=start, end=start + length, verb=verb, noun=noun, instance=len(instances) - 1, rest=rest)
        if VERBS[verb][2]:
            if verb == "cut":
                action.pnr_phase = 0.2 + 0.7 * (2 * int(rng.integers(3)) + 1) / 6.0
            else:
                action.pnr_phase = float(rng.uniform(0.45, 0.7))
            if instance.changed_at is None:
                action.pnr = start + int(round(action.pnr_phase * (length - 1)))
                instance.changed_at, instance.change_verb = action.pnr, verb
        action.verb_label = _noisy_label(rng, verb, VERBS, P_VERB_NOISE)
        action.noun_label = _noisy_label(rng, noun, NOUNS, P_NOUN_NOISE)
        end_pose, _ = _pose_at(action, 1.0, instance, angle, squash, width, height)
        angle, squash = end_pose.angle, end_pose.squash
        actions.append(action)
        cursor = action.end

    first, last = actions[num_before], actions[num_before + num_clip - 1]
    clip_start = (first.start - int(rng.integers(10, 30))) // GRID * GRID
    clip_end = -(-(last.end + int(rng.integers(10, 30))) // GRID) * GRID
    num_frames = max(actions[-1].end + int(rng.integers(30, 46)), clip_end + 1)

    plan = VideoPlan(
        seed=seed, index=index, split=size.splits[index], width=width, height=height, num_frames=num_frames,
        video_uid=_uid(seed, "video", index), clip_uid=_uid(seed, "clip", index),
        clip_id=int(_uid(seed, "clip_id", index)[:6], 16) % 90000 + 10000 + index,
        clip_start=clip_start, clip_end=clip_end, first_clip_action=num_before, num_clip_actions=num_clip,
        actions=actions, instances=instances,
        background=draw.hsv_to_rgb255(float(rng.uniform(0, 1)), float(rng.uniform(0.04, 0.16)),
                                      float(rng.uniform(0.5, 0.72))),
        skin=draw.hsv_to_rgb255(float(rng.uniform(0.04, 0.09)), float(rng.uniform(0.35, 0.5)),
                                float(rng.uniform(0.72, 0.9))))
    plan.windows = _plan_windows(plan, rng)
    return plan


def _plan_windows(plan: VideoPlan, rng: np.random.Generator) -> list[OsccWindow]:
    """oscc-pnr windows: one per state change inside the clip, about as many change-free windows around plain actions.

    Where possible a window shows one object from its first to its last frame (as annotators choose windows around
    one interaction), so "something changed" is not confused with "another object came into view".
    """
    pnrs = sorted(action.pnr for action in plan.actions if action.pnr is not None)
    spans: dict[int, list[int]] = {}
    for action in plan.actions:
        span = spans.setdefault(action.instance, [action.start, action.end])
        span[1] = action.end
    clip_last = plan.clip_end - 1

    def choose(starts: list[int], instance: int) -> int:
        first, last = spans[instance]
        one_object = [s for s in starts if s >= first and s + WINDOW_FRAMES < last]
        pool = one_object or starts
        return pool[rng.integers(len(pool))]

    positives: list[OsccWindow] = []
    for action in plan.actions:
        if action.pnr is None:
            continue
        # The change falls between 1.5 s and 6.5 s into the window; no other change is inside it.
        low = -(-(action.pnr - 195) // GRID) * GRID
        starts = [s for s in range(low, action.pnr - 45 + 1, GRID)
                  if s >= plan.clip_start and s + WINDOW_FRAMES <= clip_last
                  and _free_of([f for f in pnrs if f != action.pnr], s, s + WINDOW_FRAMES)]
        if starts:
            positives.append(OsccWindow(choose(starts, action.instance), True, True, action.pnr))
    only_clip = plan.split == "test"  # test windows all carry clip fields (null ones would give the label away)
    low, high = (plan.clip_start, clip_last) if only_clip else (0, plan.num_frames - 1)
    one_object, several = [], []
    for position in rng.permutation(len(plan.actions)):
        action = plan.actions[int(position)]
        if VERBS[action.verb][2]:
            continue
        centre = (action.start + action.end) // 2
        starts = [s for s in range(-(-(centre - 180) // GRID) * GRID, centre - 60 + 1, GRID)
                  if s >= low and s + WINDOW_FRAMES <= high and _free_of(pnrs, s, s + WINDOW_FRAMES)]
        first, last = spans[action.instance]
        inside = [s for s in starts if s >= first and s + WINDOW_FRAMES < last]
        if inside:
            one_object.append(inside)
        elif starts:
            several.append(starts)
    negatives: list[OsccWindow] = []
    for starts in one_object + several:
        starts = [s for s in starts if all(abs(s - other.start) >= 90 for other in negatives)]
        if len(negatives) < max(len(positives), 2) and starts:
            s = starts[rng.integers(len(starts))]
            negatives.append(OsccWindow(s, s >= plan.clip_start and s + WINDOW_FRAMES <= clip_last, False, None))
    windows = sorted(positives + negatives, key=lambda w: (w.start, w.state_change))
    for window in windows:
        if window.pnr is not None:
            window.pnr = int(np.clip(round(window.pnr + rng.normal(0, PNR_JITTER)), window.start, window.end))
        if plan.split == "test" or rng.random() >= P_OSCC_FLIP:
            continue
        if window.state_change:
            window.state_change, window.pnr = False, None
        elif window.in_clip:
            window.state_change, window.pnr = True, window.start + int(rng.integers(45, 196))
    return windows


# -------------------------------------------------------------------------------------------------- annotations

def _sec(frame: int) -> float:
    return float(frame) / FPS


def _oscc_items(plan: VideoPlan, labelled: bool) -> list[dict]:
    items = []
    for k, window in enumerate(plan.windows):
        item = {
            "unique_id": _uid(plan.seed, "oscc", plan.index, k),
            "video_uid": plan.video_uid,
            "parent_start_sec": _sec(window.start), "parent_end_sec": _sec(window.end),
            "parent_start_frame": window.start, "parent_end_frame": window.end,
        }
        with_clip = window.state_change or plan.split == "test"
        start, end = window.start - plan.clip_start, window.end - plan.clip_start
        item.update({
            "clip_uid": plan.clip_uid if with_clip else None,
            "clip_id": str(plan.clip_id) if with_clip else None,
            "clip_start_sec": _sec(start) if with_clip else None,
            "clip_end_sec": _sec(end) if with_clip else None,
            "clip_start_frame": start if with_clip else None,
            "clip_end_frame": end if with_clip else None,
        })
        if labelled:
            item["state_change"] = window.state_change
            if window.state_change:
                item["parent_pnr_frame"] = window.pnr
                item["clip_pnr_frame"] = window.pnr - plan.clip_start
            else:
                item["pnr_frame"] = None
        items.append(item)
    return items


def _lta_items(plan: VideoPlan, taxonomy: dict[str, list[str]], labelled: bool) -> list[dict]:
    clip_frames = plan.clip_end - plan.clip_start
    shared = {
        "video_uid": plan.video_uid, "clip_uid": plan.clip_uid, "clip_id": plan.clip_id,
        "clip_parent_start_sec": _sec(plan.clip_start), "clip_parent_end_sec": _sec(plan.clip_end),
        "clip_parent_start_frame": plan.clip_start, "clip_parent_end_frame": plan.clip_end,
        "interval_start_sec": 0.0, "interval_end_sec": _sec(clip_frames),
        "interval_start_frame": 0, "interval_end_frame": clip_frames,
    }
    items = []
    for action_idx in range(plan.num_clip_actions):
        action = plan.actions[plan.first_clip_action + action_idx]
        centre = (action.start + action.end) / 2.0 - plan.clip_start
        start = int(round((centre - WINDOW_FRAMES / 2) / GRID)) * GRID
        start, end = max(start, 0), min(start + WINDOW_FRAMES, clip_frames)
        item = dict(shared)
        item.update({
            "action_clip_start_sec": _sec(start), "action_clip_end_sec": _sec(end),
            "action_clip_start_frame": start, "action_clip_end_frame": end,
            "action_idx": action_idx,
        })
        if labelled:
            item.update({"verb": taxonomy["verbs"][action.verb_label], "noun": taxonomy["nouns"][action.noun_label],
                         "verb_label": action.verb_label, "noun_label": action.noun_label})
        items.append(item)
    return items


def _annotation_file(kind: str, split: str, seed: int, size: str, clips: list[dict]) -> dict:
    return {
        "version": "1",
        "date": "2022-02-01",
        "description": f"Synthetic Ego4D twin, FHO {kind} (size {size}, seed {seed})",
        "split": FILE_SPLITS[split],
        "clips": clips,
    }


# ----------------------------------------------------------------------------------------------------- rendering

def _scene_track(plan: VideoPlan) -> tuple[list[int], list[draw.Pose], list[Optional[tuple[float, float]]]]:
    """Per frame: which object is in view, its pose, and where the hand is (None = out of view)."""
    width, height = plan.width, plan.height
    hand_rest = (0.92 * width, 1.25 * height)
    objects: list[int] = [0] * plan.num_frames
    poses: list[Optional[draw.Pose]] = [None] * plan.num_frames
    hands: list[Optional[tuple[float, float]]] = [None] * plan.num_frames
    state: dict[int, tuple[float, float]] = {}
    previous_end: Optional[tuple[Action, draw.Pose]] = None
    for action in plan.actions:
        instance = plan.instances[action.instance]
        angle, squash = state.get(action.instance, (instance.angle, 1.0))
        length = action.end - action.start
        start_pose, _ = _pose_at(action, 0.0, instance, angle, squash, width, height)
        gap_from = previous_end[0].end if previous_end else 0
        for t in range(gap_from, action.start):
            pose = start_pose
            if previous_end and previous_end[0].instance == action.instance:
                w = (t - gap_from + 1) / (action.start - gap_from + 1)
                last = previous_end[1]
                pose = draw.Pose(last.x + w * (start_pose.x - last.x), last.y + w * (start_pose.y - last.y),
                                 last.scale + w * (start_pose.scale - last.scale), angle, squash)
            objects[t], poses[t] = action.instance, pose
        for t in range(action.start, action.end):
            p = (t - action.start) / (length - 1)
            pose, move = _pose_at(action, p, instance, angle, squash, width, height)
            engaged = draw.ease(p / 0.18) * draw.ease((1.0 - p) / 0.15)
            target = (pose.x + move.hand[0], pose.y + move.hand[1])
            objects[t], poses[t] = action.instance, pose
            hands[t] = (hand_rest[0] + engaged * (target[0] - hand_rest[0]),
                        hand_rest[1] + engaged * (target[1] - hand_rest[1]))
        state[action.instance] = (pose.angle, pose.squash)
        previous_end = (action, pose)
    for t in range(plan.actions[-1].end, plan.num_frames):
        objects[t], poses[t] = plan.actions[-1].instance, previous_end[1]
    return objects, poses, hands


def render_video(plan: VideoPlan) -> np.ndarray:
    """Draw every frame of a planned full-scale video.

    Returns:
        uint8 RGB frames ``[num_frames, height, width, 3]``.
    """
    rng = _rng(plan.seed, plan.index, 2)
    width, height, margin = plan.width, plan.height, 4
    table = draw.table_texture(rng, height + 2 * margin, width + 2 * margin, plan.background)
    for _ in range(int(rng.integers(1, 4))):  # static grey distractors near the table's edges
        shape = sorted(draw.SHAPES)[rng.integers(len(draw.SHAPES))]
        x = float(rng.choice([rng.uniform(0.05, 0.2), rng.uniform(0.8, 0.95)])) * width + margin
        pose = draw.Pose(x, float(rng.uniform(0.1, 0.9)) * height + margin, angle=float(rng.uniform(0, 6.3)))
        mask, origin = draw.shape_mask(shape, pose, 0.1 * height, height + 2 * margin, width + 2 * margin)
        grey = draw.hsv_to_rgb255(float(rng.uniform()), float(rng.uniform(0.0, 0.15)), float(rng.uniform(0.3, 0.85)))
        draw.composite(table, mask, origin, grey)

    frames_t = np.arange(plan.num_frames)
    phases = rng.uniform(0, 2 * math.pi, 4)
    wave = lambda period, phase: np.sin(2 * math.pi * frames_t / period + phase)  # noqa: E731
    shake_x = 2.2 * wave(97.0, phases[0]) + 1.2 * wave(23.0, phases[1])   # head motion: slow sway plus jitter
    shake_y = 1.8 * wave(131.0, phases[2]) + 1.0 * wave(29.0, phases[3])
    offsets_x = np.clip(np.round(shake_x), -margin, margin).astype(int)
    offsets_y = np.clip(np.round(shake_y), -margin, margin).astype(int)
    gain = 1.0 + 0.035 * np.sin(2 * math.pi * frames_t / 173.0 + float(rng.uniform(0, 6.3)))
    noise_bank = np.round(rng.normal(0.0, 4.0, (6, height, width, 3))).astype(np.float32)
    noise_pick = rng.integers(0, len(noise_bank), plan.num_frames)

    objects, poses, hands = _scene_track(plan)
    video = np.empty((plan.num_frames, height, width, 3), np.uint8)
    for t in range(plan.num_frames):
        ox, oy = int(offsets_x[t]), int(offsets_y[t])
        frame = table[margin - oy:margin - oy + height, margin - ox:margin - ox + width].copy()
        instance = plan.instances[objects[t]]
        pose = poses[t]
        pose = draw.Pose(pose.x + ox, pose.y + oy, pose.scale, pose.angle, pose.squash)
        changed = instance.changed_at is not None and t >= instance.changed_at
        colour = tuple(c * draw.CHANGED_BRIGHTNESS for c in instance.colour) if changed else instance.colour
        mask, origin = draw.shape_mask(instance.noun, pose, instance.radius, height, width)
        draw.composite(frame, mask, origin, colour)
        if changed and instance.change_verb == "cut":
            draw.draw_crack(frame, mask, origin, pose, instance.radius, tuple(0.3 * c for c in colour))
        if hands[t] is not None:
            draw.draw_hand(frame, hands[t][0] + ox, hands[t][1] + oy, plan.skin, height, width)
        video[t] = np.clip(frame.astype(np.float32) * gain[t] + noise_bank[noise_pick[t]] + 0.5, 0, 255)
    return video


# ------------------------------------------------------------------------------------------------------ writing

def _render_job(job: tuple) -> None:
    out_dir, size, seed, index, write_full, write_clip = job
    plan = plan_video(seed, index, size)
    video = render_video(plan)
    root = Path(out_dir) / "v1"
    if write_full:
        media.write_video(root / "full_scale" / f"{plan.video_uid}.mp4", video, fps=FPS)
    if write_clip:
        media.write_video(root / "clips" / f"{plan.clip_uid}.mp4", video[plan.clip_start:plan.clip_end], fps=FPS)


def synthesize_fho(out_dir, size: str = "tiny", seed: int = 0, tasks: Iterable[str] = FHO_TASKS,
                   workers: int = 1, progress: Optional[bool] = None) -> dict:
    """Write the FHO part of the synthetic Ego4D download under ``out_dir/v1``.

    Args:
        out_dir: the download root (the Ego4D CLI's ``--output_directory``).
        size: ``"tiny"`` (tests: 3 videos at 128×96, one per split) or ``"small"`` (demo/benchmarks: 16 videos at
            160×120, 10/3/3 per split).
        seed: data seed; the same seed gives the same bytes.
        tasks: subset of ``("pnr", "oscc", "ar", "lta")``: pnr/oscc write the oscc-pnr files and the full-scale
            videos, ar/lta the LTA files, the taxonomy and the canonical clips. The content does not depend on
            this choice.
        workers: processes rendering videos in parallel (results do not depend on it).
        progress: show a progress bar (None: only on a terminal).

    Besides the download, writes the test split's hidden labels (same schema as the train/val files) to
    ``out_dir/twin_answers/fho_oscc-pnr_test.json`` and ``fho_lta_test.json``; no real download has them.

    Returns:
        a JSON-able summary: the planted rules (:data:`FHO_RULES`) and how many videos/windows/actions per split.
    """
    tasks = set(tasks)
    unknown = tasks - set(FHO_TASKS)
    if unknown:
        raise ValueError(f"synthesize_fho: unknown FHO tasks {sorted(unknown)}; choose from {FHO_TASKS}")
    if size not in SIZES:
        raise ValueError(f"synthesize_fho: unknown size {size!r}; choose from {sorted(SIZES)}")
    if not tasks:
        return
    want_oscc, want_lta = bool(tasks & {"pnr", "oscc"}), bool(tasks & {"ar", "lta"})
    spec = SIZES[size]
    plans = [plan_video(seed, index, spec) for index in range(len(spec.splits))]
    out_dir = Path(out_dir)
    annotations = out_dir / "v1" / "annotations"
    taxonomy = fho_taxonomy()
    summary: dict = {"rules": list(FHO_RULES), "videos": {}}
    for split in FILE_SPLITS:
        chosen = [plan for plan in plans if plan.split == split]
        summary["videos"][split] = len(chosen)
        labelled = split != "test"
        if want_oscc:
            clips = [item for plan in chosen for item in _oscc_items(plan, labelled)]
            write_json_atomic(annotations / f"fho_oscc-pnr_{FILE_SPLITS[split]}.json",
                              _annotation_file("OSCC-PNR", split, seed, size, clips), sort_keys=True)
            summary[f"oscc_pnr_windows_{split}"] = len(clips)
            if not labelled:
                answers = [item for plan in chosen for item in _oscc_items(plan, True)]
                write_json_atomic(out_dir / "twin_answers" / "fho_oscc-pnr_test.json",
                                  _annotation_file("OSCC-PNR", split, seed, size, answers), sort_keys=True)
        if want_lta:
            clips = [item for plan in chosen for item in _lta_items(plan, taxonomy, labelled)]
            write_json_atomic(annotations / f"fho_lta_{FILE_SPLITS[split]}.json",
                              _annotation_file("LTA", split, seed, size, clips), sort_keys=True)
            summary[f"lta_actions_{split}"] = len(clips)
            if not labelled:
                answers = [item for plan in chosen for item in _lta_items(plan, taxonomy, True)]
                write_json_atomic(out_dir / "twin_answers" / "fho_lta_test.json",
                                  _annotation_file("LTA", split, seed, size, answers), sort_keys=True)
    if want_lta:
        write_json_atomic(annotations / "fho_lta_taxonomy.json", taxonomy, sort_keys=True)
    jobs = [(str(out_dir), size, seed, index, want_oscc, want_lta) for index in range(len(spec.splits))]
    run_jobs(_render_job, jobs, workers=workers, desc="synthetic FHO videos", progress=progress)
    return summary
