"""Ego4D challenge submission files: one builder, one strict validator and one atomic writer per format.

==========  ===============================================================================================
task        file structure
==========  ===============================================================================================
``ttm``     ``{"version": "1.0", "challenge": "ego4d_talking_to_me", "results": [{"video_id": str,
            "frame_id": str, "label": int, "score": float}, ...]}`` -- one row per face frame of a segment
``lam``     ``{"version": "1.0", "challenge": "ego4d_looking_at_me", "results": [{"video_id": str,
            "unique_id": str, "track_id": str, "label": int, "score": float}, ...]}``
``pnr``     ``[{"unique_id": str, "pnr_frame": float}, ...]`` -- keyframe offset in frames from
            ``parent_start_frame``, one per window of the annotation file
``oscc``    ``[{"unique_id": str, "state_change": bool}, ...]``
``lta``     ``{"<clip_uid>_<action_idx>": {"verb": K x Z ints, "noun": K x Z ints}, ...}`` (K = 5, Z = 20)
==========  ===============================================================================================

Validators return every problem they find (never stop at the first); :func:`write_submission` validates first and
writes atomically only a valid file, so a failed run never leaves a file behind. Command line::

    python -m egot2.submission --task {ttm,lam,pnr,oscc,lta} FILE [--annotations FILE]

prints ``valid`` and exits 0, or lists every problem and exits 1.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from egot2.media import atomic_path

__all__ = [
    "TASKS",
    "SUBMISSION_VERSION",
    "TTM_CHALLENGE",
    "LAM_CHALLENGE",
    "LTA_NUM_SEQUENCES",
    "LTA_NUM_ACTIONS",
    "LTA_NUM_VERBS",
    "LTA_NUM_NOUNS",
    "SubmissionError",
    "validate_submission",
    "validate_ttm",
    "validate_lam",
    "validate_pnr",
    "validate_oscc",
    "validate_lta",
    "write_submission",
    "read_submission",
    "validate_file",
    "annotation_expectations",
    "lta_window_keys",
    "ttm_results",
    "lam_results",
    "pnr_results",
    "oscc_results",
    "lta_results",
    "main",
]

TASKS = ("ttm", "lam", "pnr", "oscc", "lta")
SUBMISSION_VERSION = "1.0"
TTM_CHALLENGE = "ego4d_talking_to_me"
LAM_CHALLENGE = "ego4d_looking_at_me"
#: K: forecast sequences per LTA window.
LTA_NUM_SEQUENCES = 5
#: Z: future actions per LTA sequence.
LTA_NUM_ACTIONS = 20
#: Class counts of the v1 FHO taxonomy.
LTA_NUM_VERBS = 115
LTA_NUM_NOUNS = 478
#: Observed clips per LTA window (N) in the official enumeration.
LTA_NUM_INPUT_CLIPS = 2

_LIST_LIMIT = 20


class SubmissionError(ValueError):
    """A submission failed validation; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[str], path: Optional[Union[str, Path]] = None):
        self.problems = list(problems)
        where = f"{path}: " if path else ""
        shown = "\n".join(f"  - {p}" for p in self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"{where}invalid submission ({len(self.problems)} problems):\n{shown}{more}")


# ---------------------------------------------------------------------------------------------------------------
# Field checks
# ---------------------------------------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def _check_str(value) -> Optional[str]:
    if not isinstance(value, str):
        return f"must be a string, got {_type_name(value)} {value!r}"
    if not value:
        return "must be a non-empty string"
    return None


def _check_label(value) -> Optional[str]:
    if not _is_int(value):
        return f"must be an integer (0 or 1), got {_type_name(value)} {value!r}"
    if value not in (0, 1):
        return f"must be 0 or 1, got {value}"
    return None


def _check_finite(value) -> Optional[str]:
    if not _is_number(value):
        return f"must be a number, got {_type_name(value)} {value!r}"
    if not math.isfinite(value):
        return f"must be finite, got {value}"
    return None


def _check_probability(value) -> Optional[str]:
    problem = _check_finite(value)
    if problem is None and not 0.0 <= value <= 1.0:
        problem = f"must be a probability in [0, 1], got {value}"
    return problem


def _check_frame_offset(value) -> Optional[str]:
    problem = _check_finite(value)
    if problem is None and value < 0:
        problem = f"must be >= 0 (an offset from parent_start_frame), got {value}"
    return problem


def _check_bool(value) -> Optional[str]:
    return None if isinstance(value, bool) else f"must be a JSON boolean, got {_type_name(value)} {value!r}"


def _check_entry(entry, where: str, fields: Dict[str, Callable], problems: List[str]) -> bool:
    """Check one result object against ``{field: checker}``; True when all fields are present and well typed."""
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be an object with fields {sorted(fields)}, got {_type_name(entry)}")
        return False
    ok = True
    for name, check in fields.items():
        if name not in entry:
            problems.append(f"{where}: missing field {name!r}")
            ok = False
            continue
        problem = check(entry[name])
        if problem:
            problems.append(f"{where}.{name}: {problem}")
            ok = False
    for name in entry:
        if name not in fields:
            problems.append(f"{where}: unexpected field {name!r}")
    return ok


def _sample(ids: Iterable) -> str:
    ids = sorted(ids, key=str)
    shown = ", ".join(_format_id(i) for i in ids[:_LIST_LIMIT])
    return shown + (f", ... ({len(ids) - _LIST_LIMIT} more)" if len(ids) > _LIST_LIMIT else "")


def _format_id(identifier) -> str:
    return "/".join(str(part) for part in identifier) if isinstance(identifier, tuple) else str(identifier)


def _check_coverage(seen: set, expected_ids, problems: List[str], what: str) -> None:
    if expected_ids is None:
        return
    expected = {_normalise_id(i) for i in expected_ids}
    missing = expected - seen
    unknown = seen - expected
    if missing:
        problems.append(f"missing predictions for {len(missing)} expected {what}: {_sample(missing)}")
    if unknown:
        problems.append(f"{len(unknown)} predicted {what} not in the annotations: {_sample(unknown)}")


def _normalise_id(identifier):
    if isinstance(identifier, (list, tuple)):
        return tuple(str(part) for part in identifier)
    return str(identifier)


def _check_duplicates(ids: List[Tuple[str, object]], problems: List[str], what: str) -> None:
    """``ids`` = [(location, id)]; every repeated id is reported once with all its locations."""
    places = defaultdict(list)
    for where, identifier in ids:
        places[identifier].append(where)
    for identifier, wheres in places.items():
        if len(wheres) > 1:
            problems.append(f"duplicate {what} {_format_id(identifier)} at {', '.join(wheres)}")


# ---------------------------------------------------------------------------------------------------------------
# Validators
# ---------------------------------------------------------------------------------------------------------------


def _validate_challenge_object(obj, challenge: str, fields: Dict[str, Callable], id_fields: Sequence[str],
                               expected_ids, what: str) -> List[str]:
    problems: List[str] = []
    if not isinstance(obj, dict):
        return [f"top level: must be an object with 'version', 'challenge' and 'results', got {_type_name(obj)}"]
    for name in ("version", "challenge", "results"):
        if name not in obj:
            problems.append(f"top level: missing field {name!r}")
    for name in obj:
        if name not in ("version", "challenge", "results"):
            problems.append(f"top level: unexpected field {name!r}")
    if "version" in obj and obj["version"] != SUBMISSION_VERSION:
        problems.append(f"version: must be {SUBMISSION_VERSION!r}, got {obj['version']!r}")
    if "challenge" in obj and obj["challenge"] != challenge:
        problems.append(f"challenge: must be {challenge!r}, got {obj['challenge']!r}")
    results = obj.get("results")
    if "results" in obj and not isinstance(results, list):
        problems.append(f"results: must be a list, got {_type_name(results)}")
        return problems
    if results is None:
        return problems
    if not results:
        problems.append("results: is empty")
    ids = []
    for index, entry in enumerate(results):
        where = f"results[{index}]"
        _check_entry(entry, where, fields, problems)
        if isinstance(entry, dict) and all(isinstance(entry.get(f), str) for f in id_fields):
            ids.append((where, tuple(entry[f] for f in id_fields)))
    _check_duplicates(ids, problems, what)
    _check_coverage({i for _, i in ids}, expected_ids, problems, what + "s")
    return problems


def validate_ttm(obj, expected_ids=None) -> List[str]:
    """Problems of a Talking-To-Me submission (empty list = valid).

    Args:
        obj: the parsed JSON.
        expected_ids: optional ``(video_id, frame_id)`` pairs that must be predicted exactly (see
            :func:`annotation_expectations` for ``seg_info.json``).
    """
    fields = {"video_id": _check_str, "frame_id": _check_str, "label": _check_label, "score": _check_probability}
    return _validate_challenge_object(obj, TTM_CHALLENGE, fields, ("video_id", "frame_id"), expected_ids,
                                      "(video_id, frame_id)")


def validate_lam(obj, expected_ids=None) -> List[str]:
    """Problems of a Looking-At-Me submission; ``expected_ids`` = ``(video_id, unique_id, track_id)`` triples."""
    fields = {"video_id": _check_str, "unique_id": _check_str, "track_id": _check_str, "label": _check_label,
              "score": _check_probability}
    return _validate_challenge_object(obj, LAM_CHALLENGE, fields, ("video_id", "unique_id", "track_id"),
                                      expected_ids, "(video_id, unique_id, track_id)")


def _validate_window_array(obj, fields: Dict[str, Callable], expected_ids, extra_check=None) -> List[str]:
    if not isinstance(obj, list):
        return [f"top level: must be a list of {{{', '.join(fields)}}} objects, got {_type_name(obj)}"]
    problems: List[str] = []
    if not obj:
        problems.append("top level: the list is empty")
    ids = []
    for index, entry in enumerate(obj):
        where = f"[{index}]"
        ok = _check_entry(entry, where, fields, problems)
        if isinstance(entry, dict) and isinstance(entry.get("unique_id"), str):
            ids.append((where, entry["unique_id"]))
            if ok and extra_check is not None:
                extra_check(entry, where, problems)
    _check_duplicates(ids, problems, "unique_id")
    _check_coverage({i for _, i in ids}, expected_ids, problems, "unique_ids")
    return problems


def validate_pnr(obj, expected_ids=None, frame_limits: Optional[Mapping[str, float]] = None) -> List[str]:
    """Problems of a PNR submission.

    Args:
        obj: the parsed JSON.
        expected_ids: ``unique_id``s that must be predicted exactly (every window of the annotation file).
        frame_limits: optional ``{unique_id: parent_end_frame - parent_start_frame}``; offsets must not exceed it.
    """

    def within_window(entry, where, problems):
        limit = (frame_limits or {}).get(entry["unique_id"])
        if limit is not None and entry["pnr_frame"] > limit:
            problems.append(f"{where}.pnr_frame: {entry['pnr_frame']} is past the window end (offset {limit})")

    fields = {"unique_id": _check_str, "pnr_frame": _check_frame_offset}
    return _validate_window_array(obj, fields, expected_ids, within_window if frame_limits else None)


def validate_oscc(obj, expected_ids=None) -> List[str]:
    """Problems of an OSCC submission; ``expected_ids`` = every ``unique_id`` of the annotation file."""
    return _validate_window_array(obj, {"unique_id": _check_str, "state_change": _check_bool}, expected_ids)


_LTA_KEY = re.compile(r"^.+_\d+$")


def _check_sequences(value, where: str, num_sequences: int, num_actions: int, num_classes: Optional[int],
                     problems: List[str]) -> None:
    if not isinstance(value, list):
        problems.append(f"{where}: must be a list of {num_sequences} lists of {num_actions} integers, "
                        f"got {_type_name(value)}")
        return
    if len(value) != num_sequences:
        problems.append(f"{where}: must hold {num_sequences} sequences, got {len(value)}")
    for k, sequence in enumerate(value):
        if not isinstance(sequence, list):
            problems.append(f"{where}[{k}]: must be a list of {num_actions} integers, got {_type_name(sequence)}")
            continue
        if len(sequence) != num_actions:
            problems.append(f"{where}[{k}]: must hold {num_actions} class indices, got {len(sequence)}")
        for z, label in enumerate(sequence):
            if not _is_int(label):
                problems.append(f"{where}[{k}][{z}]: must be an integer class index, got {_type_name(label)} "
                                f"{label!r}")
            elif label < 0 or (num_classes is not None and label >= num_classes):
                bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
                problems.append(f"{where}[{k}][{z}]: class index {label} out of range {bound}")


def validate_lta(obj, expected_ids=None, num_sequences: int = LTA_NUM_SEQUENCES, num_actions: int = LTA_NUM_ACTIONS,
                 num_verbs: Optional[int] = None, num_nouns: Optional[int] = None) -> List[str]:
    """Problems of a long-term-anticipation submission.

    Args:
        obj: the parsed JSON.
        expected_ids: window keys ``<clip_uid>_<action_idx>`` that must be predicted exactly (see
            :func:`lta_window_keys`).
        num_sequences: K sequences per head.
        num_actions: Z actions per sequence.
        num_verbs, num_nouns: class counts to range-check against (``LTA_NUM_VERBS``/``LTA_NUM_NOUNS`` for v1).
    """
    if not isinstance(obj, dict):
        return [f"top level: must be an object keyed by '<clip_uid>_<action_idx>', got {_type_name(obj)}"]
    problems: List[str] = []
    if not obj:
        problems.append("top level: the object is empty")
    for key, entry in obj.items():
        where = f"[{key!r}]"
        if not _LTA_KEY.match(key):
            problems.append(f"{where}: key must look like '<clip_uid>_<action_idx>'")
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be an object with 'verb' and 'noun', got {_type_name(entry)}")
            continue
        for head, num_classes in (("verb", num_verbs), ("noun", num_nouns)):
            if head not in entry:
                problems.append(f"{where}: missing field {head!r}")
            else:
                _check_sequences(entry[head], f"{where}.{head}", num_sequences, num_actions, num_classes, problems)
        for name in entry:
            if name not in ("verb", "noun"):
                problems.append(f"{where}: unexpected field {name!r}")
    _check_coverage(set(obj), expected_ids, problems, "window keys")
    return problems


_VALIDATORS = {"ttm": validate_ttm, "lam": validate_lam, "pnr": validate_pnr, "oscc": validate_oscc,
               "lta": validate_lta}


def validate_submission(task: str, obj, **expect) -> List[str]:
    """Every problem of ``obj`` as a submission for ``task`` (empty list = valid).

    Args:
        task: one of :data:`TASKS`.
        obj: the parsed JSON object.
        **expect: the task validator's options (``expected_ids``, ``frame_limits``, ``num_verbs``, ...).
    """
    if task not in _VALIDATORS:
        raise ValueError(f"unknown submission task {task!r}; expected one of {TASKS}")
    return _VALIDATORS[task](obj, **expect)


# ---------------------------------------------------------------------------------------------------------------
# Reading and writing
# ---------------------------------------------------------------------------------------------------------------


def read_submission(path: Union[str, Path]) -> Tuple[object, List[str]]:
    """Parse a submission JSON file, noting what ``json.load`` would hide.

    Returns:
        ``(obj, problems)``: the parsed object and the repeated keys found inside any JSON object (JSON keeps only
        the last; for LTA those are duplicate window ids).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not valid JSON (names the file, line and column).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"submission file not found: {path}")
    repeated: List[str] = []

    def note_repeats(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                repeated.append(f"duplicate key {key!r} in one JSON object (only its last value would count)")
            seen.add(key)
        return dict(pairs)

    try:
        with open(path, encoding="utf-8") as handle:
            obj = json.load(handle, object_pairs_hook=note_repeats)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None
    return obj, repeated


def validate_file(task: str, path: Union[str, Path], **expect) -> List[str]:
    """Every problem of the submission file ``path`` (unreadable JSON is reported as a problem, not raised)."""
    try:
        obj, problems = read_submission(path)
    except (FileNotFoundError, ValueError) as err:
        return [str(err)]
    return problems + validate_submission(task, obj, **expect)


def write_submission(task: str, obj, path: Union[str, Path], **expect) -> Path:
    """Validate ``obj`` and write it to ``path`` atomically; nothing is written when it is invalid.

    Args:
        task: one of :data:`TASKS`.
        obj: the submission object (e.g. from :func:`ttm_results`).
        path: destination JSON file (its folder is created).
        **expect: validator options (``expected_ids``, ...), e.g. ``**annotation_expectations(task, ann_file)``.

    Raises:
        SubmissionError: listing every problem.
    """
    problems = validate_submission(task, obj, **expect)
    if problems:
        raise SubmissionError(problems, path)
    path = Path(path)
    text = json.dumps(obj, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Expected ids from annotation files
# ---------------------------------------------------------------------------------------------------------------


def _load_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None


def _annotation_items(data, path: Path) -> list:
    """The items of an Ego4D FHO annotation file (``{"clips": [...]}``; a bare list is accepted too)."""
    items = data.get("clips") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected an object with a 'clips' list (Ego4D FHO annotation format)")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: clips[{index}] is a {_type_name(item)}, expected an object")
    return items


def _field(item: dict, name: str, index: int, path: Path, kind: type):
    if name not in item:
        raise ValueError(f"{path}: clips[{index}] has no field {name!r}")
    value = item[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{path}: clips[{index}].{name} has the wrong type ({_type_name(value)})")
    return value


def lta_window_keys(annotation, num_input_clips: int = LTA_NUM_INPUT_CLIPS, num_actions: int = LTA_NUM_ACTIONS,
                    include_last_window: bool = False, source: str = "annotations") -> List[str]:
    """Keys ``<clip_uid>_<action_idx>`` of the windows the official LTA enumeration produces.

    Items are grouped by ``clip_uid`` and sorted by ``action_idx``; a clip with M actions gives windows
    i = 0 ... M - Z - N - 1 (the challenge's enumeration; ``include_last_window`` adds the window the later
    forecasting code also creates), each keyed by its last observed action i + N - 1.

    Args:
        annotation: the parsed ``fho_lta_<split>.json`` (or its ``clips`` list).
        num_input_clips: N observed actions per window.
        num_actions: Z forecast actions per window.
        include_last_window: use M - Z - N + 1 windows instead.
        source: file name for error messages.
    """
    path = Path(source)
    by_clip: Dict[str, list] = defaultdict(list)
    for index, item in enumerate(_annotation_items(annotation, path)):
        clip_uid = _field(item, "clip_uid", index, path, str)
        by_clip[clip_uid].append(_field(item, "action_idx", index, path, int))
    keys = []
    for clip_uid, action_indices in by_clip.items():
        action_indices.sort()
        num_windows = len(action_indices) - num_actions - num_input_clips + (1 if include_last_window else 0)
        for window in range(max(num_windows, 0)):
            keys.append(f"{clip_uid}_{action_indices[window + num_input_clips - 1]}")
    return keys


def annotation_expectations(task: str, path: Union[str, Path], num_input_clips: int = LTA_NUM_INPUT_CLIPS,
                            num_actions: int = LTA_NUM_ACTIONS, include_last_window: bool = False) -> dict:
    """Validator options (``expected_ids``, and ``frame_limits`` for PNR) read from an annotation file.

    Accepted files: ``pnr``/``oscc``: ``fho_oscc-pnr_<split>.json`` (every ``unique_id``); ``ttm``: ``seg_info.json``
    (every ``frame_list`` entry of every segment); ``lta``: ``fho_lta_<split>.json`` (windows of
    :func:`lta_window_keys`). Any task also accepts a JSON list of expected ids (strings, or lists for the TTM
    ``[video_id, frame_id]`` and LAM ``[video_id, unique_id, track_id]`` keys).
    """
    path = Path(path)
    data = _load_json(path)
    if isinstance(data, list) and all(isinstance(i, (str, list)) for i in data):
        return {"expected_ids": {_normalise_id(i) for i in data}}
    if task in ("pnr", "oscc"):
        expected, limits = set(), {}
        for index, item in enumerate(_annotation_items(data, path)):
            unique_id = _field(item, "unique_id", index, path, str)
            expected.add(unique_id)
            start, end = item.get("parent_start_frame"), item.get("parent_end_frame")
            if _is_number(start) and _is_number(end):
                limits[unique_id] = end - start
        return {"expected_ids": expected, "frame_limits": limits} if task == "pnr" else {"expected_ids": expected}
    if task == "ttm":
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected seg_info.json (an object keyed by segment id)")
        expected = set()
        for segment_id, info in data.items():
            frames = info.get("frame_list") if isinstance(info, dict) else None
            if not isinstance(frames, list) or not all(_is_int(f) for f in frames):
                raise ValueError(f"{path}: {segment_id}.frame_list must be a list of integer frame ids")
            expected.update((segment_id, str(frame)) for frame in frames)
        return {"expected_ids": expected}
    if task == "lta":
        keys = lta_window_keys(data, num_input_clips, num_actions, include_last_window, source=str(path))
        return {"expected_ids": set(keys)}
    raise ValueError(f"{path}: task {task!r} has no annotation format; give a JSON list of expected ids")


# ---------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------


def _plain(value):
    """Tensors / numpy arrays and scalars as plain Python (lists, ints, floats)."""
    return value.tolist() if hasattr(value, "tolist") else value


def ttm_results(scores_by_segment: Mapping[str, float], frame_lists: Mapping[str, Sequence[int]],
                label: int = 1) -> dict:
    """TTM submission object: each segment's score repeated for every face frame of that segment.

    Args:
        scores_by_segment: ``{segment_id: P(talking to me)}`` (chunk logits already averaged and softmaxed), in the
            order rows should appear.
        frame_lists: ``{segment_id: frame ids}`` (``seg_info.json``'s ``frame_list``); rows go in ascending frame order.
        label: the label written on every row (the official writer always uses 1).
    """
    results = []
    for segment_id, score in scores_by_segment.items():
        if segment_id not in frame_lists:
            raise ValueError(f"ttm_results: segment {segment_id!r} has a score but no frame list")
        for frame in sorted(int(f) for f in frame_lists[segment_id]):
            results.append({"video_id": str(segment_id), "frame_id": str(frame), "label": int(label),
                            "score": float(_plain(score))})
    return {"version": SUBMISSION_VERSION, "challenge": TTM_CHALLENGE, "results": results}


def lam_results(rows: Iterable[Tuple[str, object, object, float]], label: int = 1) -> dict:
    """LAM submission object from ``(video_id, unique_id, track_id, score)`` rows (label 1 as the official CSV)."""
    results = [
        {"video_id": str(video_id), "unique_id": str(unique_id), "track_id": str(track_id), "label": int(label),
         "score": float(_plain(score))}
        for video_id, unique_id, track_id, score in rows
    ]
    return {"version": SUBMISSION_VERSION, "challenge": LAM_CHALLENGE, "results": results}


def pnr_results(pnr_frames: Mapping[str, float]) -> list:
    """PNR submission list from ``{unique_id: keyframe offset in frames from parent_start_frame}``."""
    return [{"unique_id": str(uid), "pnr_frame": float(_plain(frame))} for uid, frame in pnr_frames.items()]


def oscc_results(state_changes: Mapping[str, bool]) -> list:
    """OSCC submission list from ``{unique_id: state change predicted}``."""
    return [{"unique_id": str(uid), "state_change": bool(_plain(change))} for uid, change in state_changes.items()]


def lta_results(predictions: Mapping[str, Tuple[object, object]]) -> dict:
    """LTA submission object from ``{window key: (verb K x Z, noun K x Z)}`` (lists, arrays or tensors)."""
    results = {}
    for key, (verbs, nouns) in predictions.items():
        results[str(key)] = {
            "verb": [[int(v) for v in sequence] for sequence in _plain(verbs)],
            "noun": [[int(n) for n in sequence] for sequence in _plain(nouns)],
        }
    return results


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m egot2.submission --task TASK FILE [--annotations FILE]``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m egot2.submission",
                                     description="Validate an Ego4D challenge submission file.")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("file", help="submission JSON")
    parser.add_argument("--annotations", default=None,
                        help="annotation file to check coverage against (fho_oscc-pnr JSON for pnr/oscc, "
                             "seg_info.json for ttm, fho_lta JSON for lta, or a JSON list of expected ids)")
    parser.add_argument("--num_verbs", type=int, default=None, help=f"LTA verb classes ({LTA_NUM_VERBS} in v1)")
    parser.add_argument("--num_nouns", type=int, default=None, help=f"LTA noun classes ({LTA_NUM_NOUNS} in v1)")
    parser.add_argument("--num_sequences", type=int, default=LTA_NUM_SEQUENCES, help="LTA K")
    parser.add_argument("--num_actions", type=int, default=LTA_NUM_ACTIONS, help="LTA Z")
    parser.add_argument("--num_input_clips", type=int, default=LTA_NUM_INPUT_CLIPS, help="LTA N (window keys)")
    args = parser.parse_args(argv)

    expect: dict = {}
    if args.task == "lta":
        expect.update(num_sequences=args.num_sequences, num_actions=args.num_actions, num_verbs=args.num_verbs,
                      num_nouns=args.num_nouns)
    if args.annotations:
        try:
            expect.update(annotation_expectations(args.task, args.annotations, num_input_clips=args.num_input_clips,
                                                  num_actions=args.num_actions))
        except (FileNotFoundError, ValueError) as err:
            print(f"cannot read annotations: {err}")
            return 1
    problems = validate_file(args.task, args.file, **expect)
    if not problems:
        print("valid")
        return 0
    print(f"{args.file}: invalid {args.task} submission, {len(problems)} problem(s):")
    for problem in problems:
        print(f"  - {problem}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
