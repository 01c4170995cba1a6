"""Whole-split HOI metrics: PNR temporal error, OSCC accuracy, AR top-k accuracy, LTA edit distance.

Pure functions over numpy arrays or torch tensors (converted on the way in); no Lightning, no device logic.
Callers gather predictions over the whole split (all processes) first and call these once, so every clip
counts equally. Where the original code averaged per-batch values, the per-clip mean is the default and the
batch-mean variant is kept as a separate legacy function.

Definitions follow the Ego4D / EgoT2 reference code:

* PNR: k = arg-max of the T keyframe logits; predicted offset = (end - start) / T * k frames from the window
  start; error = |predicted - (pnr - start)| / fps, fps = (end - start + 1) / (end_sec - start_sec); clips
  without a state change are excluded.
* OSCC: accuracy of the arg-max over the two state logits (index 1 = state change).
* LTA: for each window, the Levenshtein distance (insert / delete / substitute, no transpositions) of each of
  the K predicted sequences to the labels, divided by the length, minimum over K; computed on prefixes
  z = 1..Z; ED@Z is the mean of the last prefix, AUED the trapezoidal area under ED@1..ED@Z divided by Z - 1.
"""
from __future__ import annotations

from typing import Dict, Iterable, Sequence

import editdistance
import numpy as np
import torch

__all__ = [
    "pnr_keyframe_offset",
    "pnr_error",
    "mean_error",
    "batch_mean_error",
    "pnr_center_baseline_error",
    "oscc_accuracy",
    "topk_accuracy",
    "edit_distance_at_z",
    "aued",
    "action_edit_distance",
    "lta_metrics",
    "most_frequent_baseline",
]


def _to_numpy(values, name: str, dtype=None) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=dtype)
    if array.dtype == object:
        raise ValueError(f"{name}: expected numbers, got an object array (None or ragged values?)")
    return array


def _check_vector(array: np.ndarray, name: str, length: int) -> None:
    if array.shape != (length,):
        raise ValueError(f"{name}: expected shape ({length},), got {array.shape}")


def _keyframe_logits_2d(keyframe_logits) -> np.ndarray:
    logits = _to_numpy(keyframe_logits, "keyframe_logits", np.float64)
    if logits.ndim == 3 and logits.shape[1] == 1:  # the official (N, 1, T) head layout
        logits = logits[:, 0]
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"keyframe_logits: expected shape (N, T) or (N, 1, T), got {logits.shape}")
    return logits


def pnr_keyframe_offset(keyframe_logits, start_frame, end_frame) -> np.ndarray:
    """Predicted PNR offset in frames from the window start (also the ``pnr_frame`` of ``submit_pnr.json``).

    Args:
        keyframe_logits: (N, T) or (N, 1, T) keyframe logits (T = 16 sampled frames).
        start_frame: (N,) ``parent_start_frame``.
        end_frame: (N,) ``parent_end_frame``.

    Returns:
        (N,) float64 ``(end - start) / T * argmax``.
    """
    logits = _keyframe_logits_2d(keyframe_logits)
    num_clips, num_steps = logits.shape
    start = _to_numpy(start_frame, "start_frame", np.float64)
    end = _to_numpy(end_frame, "end_frame", np.float64)
    _check_vector(start, "start_frame", num_clips)
    _check_vector(end, "end_frame", num_clips)
    return (end - start) / num_steps * logits.argmax(axis=1)


def _positive_clip_arrays(pnr_frame, start_frame, end_frame, start_sec, end_sec, state, num_clips: int):
    """Validate the per-clip window arrays; return them with the mask of clips that have a state change."""
    arrays = {}
    for name, values in (("pnr_frame", pnr_frame), ("start_frame", start_frame), ("end_frame", end_frame),
                         ("start_sec", start_sec), ("end_sec", end_sec)):
        arrays[name] = _to_numpy(values, name, np.float64)
        _check_vector(arrays[name], name, num_clips)
    if state is None:
        positive = np.ones(num_clips, dtype=bool)
    else:
        state_array = _to_numpy(state, "state")
        _check_vector(state_array, "state", num_clips)
        positive = state_array.astype(np.int64) == 1
    bad_pnr = positive & ~(arrays["pnr_frame"] >= 0)  # also catches NaN
    if bad_pnr.any():
        index = int(np.flatnonzero(bad_pnr)[0])
        hint = "" if state is not None else "; pass state to exclude clips without a state change"
        raise ValueError(
            f"pnr_frame: clip {index} counts as a state change but has pnr_frame "
            f"{arrays['pnr_frame'][index]} (negatives carry -1){hint}"
        )
    duration = arrays["end_sec"] - arrays["start_sec"]
    if (positive & ~(duration > 0)).any():
        index = int(np.flatnonzero(positive & ~(duration > 0))[0])
        raise ValueError(f"end_sec: clip {index} has end_sec <= start_sec ({arrays['end_sec'][index]} <= "
                         f"{arrays['start_sec'][index]}), fps is undefined")
    return arrays, positive


def pnr_error(keyframe_logits, pnr_frame, start_frame, end_frame, start_sec, end_sec, state=None) -> np.ndarray:
    """Absolute PNR localisation error in seconds for every clip with a state change.

    Example (one clip): window frames 300..540 over 10.0..18.0 s, so fps = 241 / 8 = 30.125; arg-max at 5 gives
    an offset of 240 / 16 * 5 = 75 frames; with the PNR at frame 400 the true offset is 100; error = 25 / 30.125
    = 0.830 s.

    Args:
        keyframe_logits: (N, T) or (N, 1, T) keyframe logits.
        pnr_frame: (N,) ``parent_pnr_frame`` (absolute); negatives may carry -1.
        start_frame: (N,) ``parent_start_frame``.
        end_frame: (N,) ``parent_end_frame``.
        start_sec: (N,) ``parent_start_sec``.
        end_sec: (N,) ``parent_end_sec``.
        state: optional (N,) state-change labels (1 = state change); clips with 0 are excluded. Without it every
            clip must be a positive.

    Returns:
        (P,) float64 errors in seconds of the P positive clips, in input order.

    Raises:
        ValueError: on mismatched shapes, a positive clip without a PNR frame, or an empty time window.
    """
    logits = _keyframe_logits_2d(keyframe_logits)
    arrays, positive = _positive_clip_arrays(
        pnr_frame, start_frame, end_frame, start_sec, end_sec, state, logits.shape[0])
    predicted = pnr_keyframe_offset(logits, arrays["start_frame"], arrays["end_frame"])
    return _offset_error(predicted, arrays, positive)


def _offset_error(predicted_offset: np.ndarray, arrays: Dict[str, np.ndarray], positive: np.ndarray) -> np.ndarray:
    start, end = arrays["start_frame"][positive], arrays["end_frame"][positive]
    fps = (end - start + 1) / (arrays["end_sec"][positive] - arrays["start_sec"][positive])
    true_offset = arrays["pnr_frame"][positive] - start
    return np.abs(predicted_offset[positive] - true_offset) / fps


def pnr_center_baseline_error(pnr_frame, start_frame, end_frame, start_sec, end_sec, state=None) -> np.ndarray:
    """PNR error of always predicting the window centre, offset (end - start) / 2 (= bin 8 of 16).

    Args:
        pnr_frame, start_frame, end_frame, start_sec, end_sec, state: as in :func:`pnr_error`.

    Returns:
        (P,) float64 errors in seconds of the positive clips.
    """
    start = _to_numpy(start_frame, "start_frame", np.float64)
    if start.ndim != 1:
        raise ValueError(f"start_frame: expected shape (N,), got {start.shape}")
    arrays, positive = _positive_clip_arrays(
        pnr_frame, start_frame, end_frame, start_sec, end_sec, state, start.shape[0])
    predicted = (arrays["end_frame"] - arrays["start_frame"]) / 2.0
    return _offset_error(predicted, arrays, positive)


def mean_error(per_clip_errors) -> float:
    """Per-clip mean of errors gathered over the whole split (the default PNR aggregate).

    Args:
        per_clip_errors: (P,) errors, e.g. from :func:`pnr_error`.

    Returns:
        The mean, or NaN when there is no positive clip.
    """
    errors = _to_numpy(per_clip_errors, "per_clip_errors", np.float64).reshape(-1)
    return float(errors.mean()) if errors.size else float("nan")


def batch_mean_error(per_batch_errors: Iterable) -> float:
    """Legacy PNR aggregate of the reference code: the mean over batches of each batch's mean error.

    A batch without any positive clip counts as 0.0, as in the original; with unequal batch sizes this differs
    from :func:`mean_error`.

    Args:
        per_batch_errors: one sequence of per-clip errors per batch.

    Returns:
        Mean of batch means, or NaN when there is no batch.
    """
    batch_means = []
    for batch_index, errors in enumerate(per_batch_errors):
        errors = _to_numpy(errors, f"per_batch_errors[{batch_index}]", np.float64).reshape(-1)
        batch_means.append(float(errors.mean()) if errors.size else 0.0)
    return float(np.mean(batch_means)) if batch_means else float("nan")


def oscc_accuracy(state_logits, state) -> float:
    """Fraction of clips whose arg-max state logit equals the label.

    Args:
        state_logits: (N, 2) or the official (N, 2, 1) logits (index 1 = state change).
        state: (N,) labels in {0, 1}.

    Returns:
        Accuracy in [0, 1] (NaN for N = 0).
    """
    logits = _to_numpy(state_logits, "state_logits", np.float64)
    if logits.ndim == 3 and logits.shape[2] == 1:
        logits = logits[..., 0]
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise ValueError(f"state_logits: expected shape (N, 2) or (N, 2, 1), got {logits.shape}")
    labels = _to_numpy(state, "state").astype(np.int64)
    _check_vector(labels, "state", logits.shape[0])
    if logits.shape[0] == 0:
        return float("nan")
    return float((logits.argmax(axis=1) == labels).mean())


def topk_accuracy(logits, labels, ks: Sequence[int] = (1, 5)) -> Dict[int, float]:
    """Top-k accuracy (AR verbs or nouns): a sample counts if its label is among the k highest logits.

    Ties between equal logits are broken towards the lower class index.

    Args:
        logits: (N, C) class scores.
        labels: (N,) class indices.
        ks: the k values.

    Returns:
        ``{k: accuracy}`` with accuracies in [0, 1].
    """
    scores = _to_numpy(logits, "logits", np.float64)
    if scores.ndim != 2:
        raise ValueError(f"logits: expected shape (N, C), got {scores.shape}")
    targets = _to_numpy(labels, "labels").astype(np.int64)
    _check_vector(targets, "labels", scores.shape[0])
    num_classes = scores.shape[1]
    if ((targets < 0) | (targets >= num_classes)).any():
        raise ValueError(f"labels: values must lie in [0, {num_classes}), got {targets.min()}..{targets.max()}")
    if any(k < 1 or k > num_classes for k in ks):
        raise ValueError(f"ks: every k must lie in [1, {num_classes}], got {tuple(ks)}")
    ranking = np.argsort(-scores, axis=1, kind="stable")
    hits = ranking == targets[:, None]
    return {int(k): float(hits[:, :k].any(axis=1).mean()) for k in ks}


def _lta_arrays(preds, labels, pred_name: str, label_name: str):
    predictions = _to_numpy(preds, pred_name)
    targets = _to_numpy(labels, label_name)
    if predictions.ndim != 3:
        raise ValueError(f"{pred_name}: expected shape (N, K, Z), got {predictions.shape}")
    if targets.shape != (predictions.shape[0], predictions.shape[2]):
        raise ValueError(f"{label_name}: expected shape (N, Z) = {(predictions.shape[0], predictions.shape[2])}, "
                         f"got {targets.shape}")
    if predictions.shape[1] < 1 or predictions.shape[2] < 1:
        raise ValueError(f"{pred_name}: K and Z must be at least 1, got shape {predictions.shape}")
    if not (np.issubdtype(predictions.dtype, np.integer) and np.issubdtype(targets.dtype, np.integer)):
        raise ValueError(f"{pred_name}, {label_name}: expected integer class indices, "
                         f"got {predictions.dtype} and {targets.dtype}")
    return predictions.astype(np.int64), targets.astype(np.int64)


def edit_distance_at_z(preds, labels) -> np.ndarray:
    """Normalised Levenshtein distance on every prefix length, minimum over the K candidate sequences.

    Args:
        preds: (N, K, Z) integer predictions (K sampled sequences per window).
        labels: (N, Z) integer ground truth.

    Returns:
        (N, Z) float64; entry [n, z - 1] = min over k of Levenshtein(preds[n, k, :z], labels[n, :z]) / z.
        ED@Z of the split = ``result[:, -1].mean()``.
    """
    predictions, targets = _lta_arrays(preds, labels, "preds", "labels")
    num_windows, num_candidates, horizon = predictions.shape
    distances = np.empty((num_windows, horizon), dtype=np.float64)
    for window in range(num_windows):
        target = targets[window].tolist()
        candidates = predictions[window].tolist()
        for z in range(1, horizon + 1):
            best = min(editdistance.eval(candidate[:z], target[:z]) for candidate in candidates)
            distances[window, z - 1] = best / z
    return distances


def aued(ed_per_z) -> float:
    """Area under the ED@z curve for z = 1..Z (trapezoid rule, unit spacing) divided by Z - 1.

    Args:
        ed_per_z: (Z,) split-level ED@z values, or the (N, Z) per-window output of :func:`edit_distance_at_z`
            (averaged over windows first; the area is linear, so this equals the mean per-window AUED).

    Returns:
        AUED in [0, 1] for normalised distances.
    """
    curve = _to_numpy(ed_per_z, "ed_per_z", np.float64)
    if curve.ndim == 2:
        curve = curve.mean(axis=0)
    if curve.ndim != 1 or curve.shape[0] < 2:
        raise ValueError(f"ed_per_z: expected shape (Z,) or (N, Z) with Z >= 2, got {np.shape(ed_per_z)}")
    area = curve.sum() - 0.5 * (curve[0] + curve[-1])
    return float(area / (curve.shape[0] - 1))


def action_edit_distance(verb_preds, noun_preds, verb_labels, noun_labels) -> np.ndarray:
    """:func:`edit_distance_at_z` on (verb, noun) pairs: a step matches only if both verb and noun match.

    The k-th verb sequence is paired with the k-th noun sequence, as in the Ego4D challenge.

    Args:
        verb_preds, noun_preds: (N, K, Z) integer predictions.
        verb_labels, noun_labels: (N, Z) integer ground truth.

    Returns:
        (N, Z) float64 action edit distances per prefix length.
    """
    verbs, verb_targets = _lta_arrays(verb_preds, verb_labels, "verb_preds", "verb_labels")
    nouns, noun_targets = _lta_arrays(noun_preds, noun_labels, "noun_preds", "noun_labels")
    if verbs.shape != nouns.shape:
        raise ValueError(f"noun_preds: shape {nouns.shape} differs from verb_preds {verbs.shape}")
    for name, array in (("verb", np.concatenate([verbs.ravel(), verb_targets.ravel()])),
                        ("noun", np.concatenate([nouns.ravel(), noun_targets.ravel()]))):
        if array.size and array.min() < 0:
            raise ValueError(f"{name}_preds/{name}_labels: class indices must be >= 0, got {array.min()}")
    # One integer per (verb, noun) pair; the factor exceeds every noun index, so distinct pairs stay distinct.
    noun_range = int(max(nouns.max(initial=0), noun_targets.max(initial=0))) + 1
    return edit_distance_at_z(verbs * noun_range + nouns, verb_targets * noun_range + noun_targets)


def lta_metrics(verb_preds, noun_preds, verb_labels, noun_labels) -> Dict[str, float]:
    """ED@Z and AUED for verbs, nouns and actions over a whole split.

    Args:
        verb_preds, noun_preds: (N, K, Z) integer predictions (K = 5, Z = 20 in Ego4D).
        verb_labels, noun_labels: (N, Z) integer ground truth.

    Returns:
        ``{verb_ED@Z, noun_ED@Z, action_ED@Z, verb_AUED, noun_AUED, action_AUED}`` with Z the horizon
        (``verb_ED@20`` ... for the challenge setting). AUED needs Z >= 2.
    """
    per_head = {
        "verb": edit_distance_at_z(verb_preds, verb_labels),
        "noun": edit_distance_at_z(noun_preds, noun_labels),
        "action": action_edit_distance(verb_preds, noun_preds, verb_labels, noun_labels),
    }
    horizon = per_head["verb"].shape[1]
    metrics: Dict[str, float] = {}
    for name, distances in per_head.items():
        metrics[f"{name}_ED@{horizon}"] = float(distances[:, -1].mean()) if distances.size else float("nan")
    for name, distances in per_head.items():
        metrics[f"{name}_AUED"] = aued(distances)
    return metrics


def most_frequent_baseline(train_labels, Z: int, K: int) -> np.ndarray:
    """Predictions of the "most frequent classes" LTA baseline.

    Candidate k repeats the k-th most frequent training class for all Z steps (ties: lower class index first;
    with fewer than K classes the ranking repeats). Broadcast to a split with
    ``np.broadcast_to(pred, (N, K, Z))``.

    Args:
        train_labels: training class indices of any shape (e.g. every verb of every training action).
        Z: forecast horizon.
        K: number of candidate sequences.

    Returns:
        (K, Z) int64 predictions.
    """
    labels = _to_numpy(train_labels, "train_labels").reshape(-1)
    if labels.size == 0:
        raise ValueError("train_labels: empty, cannot rank classes")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError("train_labels: expected non-negative integer class indices")
    if Z < 1 or K < 1:
        raise ValueError(f"Z and K must be at least 1, got Z={Z}, K={K}")
    counts = np.bincount(labels.astype(np.int64))
    ranking = np.argsort(-counts, kind="stable")[: int((counts > 0).sum())]
    chosen = ranking[np.arange(K) % ranking.size]
    return np.repeat(chosen[:, None], Z, axis=1).astype(np.int64)
