"""Validation metrics of the HHI tasks (spec hhi.md §2.6, §3.6, §4.6, §6).

LAM and TTM use the Ego4D social-benchmark metric: a VOC-style interpolated average precision for
the positive class, the same for the negative class (labels and scores flipped), their mean
("mAP"), and the accuracy of ``score >= 0.5``. ASD (as EgoT2 logs it) uses frame accuracy with the
prediction ``round(softmax)[1]``; an AVA-style mAP of the speaking class is offered as well.

Behaviour every function shares:

* Inputs are numpy arrays, torch tensors or plain sequences; nothing reads or writes files.
* Ranking ties keep the input order (a stable sort). The original sorted with pandas' unstable
  default, so its tie order was accidental; the stable order makes results reproducible.
* The AP of a class without a single positive example is undefined: :func:`voc_average_precision`
  returns ``nan`` for it (as the original code did through 0/0), and a mean involving it is ``nan``.
  Empty inputs, labels other than 0/1 and non-finite scores raise ``ValueError``.
* Rows are de-duplicated on their key, first occurrence kept (the original ``drop_duplicates``);
  duplicates must agree on their ground truth (label, and box for LAM), otherwise ``ValueError``.
  Duplicates appear when a distributed sampler pads the last batch.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "BinaryMapResult",
    "voc_average_precision",
    "binary_map",
    "lam_key",
    "lam_map",
    "ttm_segment_scores",
    "ttm_map",
    "asd_frame_accuracy",
    "asd_map",
]

# the social benchmark's box tolerance when matching ground truth and prediction rows
_BOX_TOLERANCE = 1e-9


class BinaryMapResult(NamedTuple):
    """Outcome of the social-benchmark metric over one split.

    Attributes:
        mean_ap: mean of ``ap_positive`` and ``ap_negative`` (the "mAP" the baselines report).
        ap_positive: VOC AP of class 1 ranked by score.
        ap_negative: VOC AP of class 0 ranked by 1 - score.
        accuracy: fraction of rows where ``(score >= 0.5) == label``.
        num_samples: rows scored, after de-duplication.
    """

    mean_ap: float
    ap_positive: float
    ap_negative: float
    accuracy: float
    num_samples: int


def _to_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _check_scores_labels(scores: Any, labels: Any) -> Tuple[np.ndarray, np.ndarray]:
    score_array = _to_numpy(scores)
    label_array = _to_numpy(labels)
    if score_array.ndim != 1 or label_array.ndim != 1:
        raise ValueError(f"scores and labels must be one-dimensional, got shapes {score_array.shape} "
                         f"and {label_array.shape}")
    if score_array.shape != label_array.shape:
        raise ValueError(f"scores and labels differ in length: {score_array.size} vs {label_array.size}")
    if score_array.size == 0:
        raise ValueError("cannot compute a metric over zero samples")
    score_array = score_array.astype(np.float64)
    if not np.all(np.isfinite(score_array)):
        raise ValueError(f"scores contain {int(np.sum(~np.isfinite(score_array)))} non-finite values")
    is_binary = (label_array == 0) | (label_array == 1)
    if not np.all(is_binary):
        raise ValueError(f"labels must be 0 or 1, found {np.unique(label_array[~is_binary])[:5].tolist()}")
    return score_array, label_array.astype(np.int64)


def voc_average_precision(scores: Any, labels: Any) -> float:
    """VOC-style interpolated average precision of the positive class (spec §6, steps 2–3).

    Rows are ranked by descending score (ties in input order). With TP_k the positives among the
    first k rows and P the number of positives, precision_k = TP_k / k and recall_k = TP_k / P.
    Recall is framed by 0 at the start and 1 at the end, precision by 0 and 0; precision is replaced
    by its running maximum from the right, and AP = sum over k where recall changes of
    (recall_k - recall_{k-1}) * precision_k. This differs from sklearn's (non-interpolated)
    ``average_precision_score``.

    Args:
        scores: (N,) real scores, higher means more likely positive.
        labels: (N,) 0/1 ground truth.

    Returns:
        AP in [0, 1], or ``nan`` when no label is 1.

    Raises:
        ValueError: empty input, length mismatch, non-finite scores, labels other than 0/1.
    """
    score_array, label_array = _check_scores_labels(scores, labels)
    num_positives = int(label_array.sum())
    if num_positives == 0:
        return float("nan")
    ranked_labels = label_array[np.argsort(-score_array, kind="stable")]
    true_positives = np.cumsum(ranked_labels)
    precision = true_positives / np.arange(1, ranked_labels.size + 1)
    recall = true_positives / num_positives
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([0.0], precision, [0.0]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    changed = np.nonzero(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[changed] - recall[changed - 1]) * precision[changed]))


def binary_map(scores: Any, labels: Any, threshold: float = 0.5) -> BinaryMapResult:
    """The LAM/TTM metric: mean of the positive- and negative-class VOC APs, plus accuracy.

    Args:
        scores: (N,) probability of class 1, in [0, 1].
        labels: (N,) 0/1 ground truth.
        threshold: a row is predicted positive when ``score >= threshold`` (a tie counts as positive,
            as in the official confusion matrix).

    Returns:
        :class:`BinaryMapResult`; ``mean_ap`` is ``nan`` when all labels are equal.
    """
    score_array, label_array = _check_scores_labels(scores, labels)
    ap_positive = voc_average_precision(score_array, label_array)
    ap_negative = voc_average_precision(1.0 - score_array, 1 - label_array)
    predicted = (score_array >= threshold).astype(np.int64)
    accuracy = float(np.mean(predicted == label_array))
    return BinaryMapResult(
        mean_ap=float((ap_positive + ap_negative) / 2.0),
        ap_positive=ap_positive,
        ap_negative=ap_negative,
        accuracy=accuracy,
        num_samples=int(score_array.size),
    )


def _field(row: Mapping[str, Any], name: str, row_number: int, what: str) -> Any:
    try:
        return row[name]
    except (KeyError, TypeError):
        raise ValueError(f"{what} row {row_number} has no field {name!r} (fields: {_describe_fields(row)})") from None


def _describe_fields(row: Any) -> str:
    return ", ".join(map(str, row.keys())) if isinstance(row, Mapping) else type(row).__name__


def _scalar(value: Any, name: str, row_number: int, what: str) -> float:
    array = _to_numpy(value)
    if array.size != 1:
        raise ValueError(f"{what} row {row_number}: field {name!r} must be a single number, got shape {array.shape}")
    return float(array.reshape(-1)[0])


def _number_field(row: Mapping[str, Any], name: str, row_number: int, what: str) -> float:
    return _scalar(_field(row, name, row_number, what), name, row_number, what)


def _label(value: Any, row_number: int, what: str) -> int:
    label = _scalar(value, "label", row_number, what)
    if label not in (0.0, 1.0):
        raise ValueError(f"{what} row {row_number}: field 'label' must be 0 or 1, got {label}")
    return int(label)


def lam_key(clip_uid: str, frame: int, track_id: str) -> str:
    """The LAM row key "clip_uid:frame:track_id" of the social benchmark."""
    return f"{clip_uid}:{int(frame)}:{track_id}"


def lam_map(rows: Iterable[Mapping[str, Any]], threshold: float = 0.5) -> BinaryMapResult:
    """Looking-At-Me val metric over key frames (spec §2.6).

    Args:
        rows: one mapping per scored key frame with fields ``clip_uid`` (str), ``frame`` (int),
            ``track_id`` (str), ``box`` (x1, y1, x2, y2), ``label`` (0/1 ground truth) and ``score``
            (softmax probability of "looking").
        threshold: accuracy threshold, see :func:`binary_map`.

    Returns:
        :class:`BinaryMapResult` over the rows de-duplicated on "clip:frame:track".

    Raises:
        ValueError: a missing field, or two rows with the same key whose boxes (beyond 1e-9) or
            labels differ; the message names the key.
    """
    first_rows: Dict[str, Tuple[np.ndarray, int, float]] = {}
    for row_number, row in enumerate(rows):
        key = lam_key(_field(row, "clip_uid", row_number, "LAM"), _field(row, "frame", row_number, "LAM"),
                      _field(row, "track_id", row_number, "LAM"))
        box = _to_numpy(_field(row, "box", row_number, "LAM")).astype(np.float64).reshape(-1)
        if box.size != 4:
            raise ValueError(f"LAM row {row_number} ({key}): field 'box' must hold 4 numbers, got {box.size}")
        label = _label(_field(row, "label", row_number, "LAM"), row_number, "LAM")
        score = _number_field(row, "score", row_number, "LAM")
        if key in first_rows:
            kept_box, kept_label, _ = first_rows[key]
            if np.any(np.abs(kept_box - box) > _BOX_TOLERANCE):
                raise ValueError(f"LAM rows with key {key} have different boxes: {kept_box.tolist()} vs {box.tolist()}")
            if kept_label != label:
                raise ValueError(f"LAM rows with key {key} have different labels: {kept_label} vs {label}")
            continue
        first_rows[key] = (box, label, score)
    if not first_rows:
        raise ValueError("LAM metric got no rows")
    labels = np.array([label for _, label, _ in first_rows.values()])
    scores = np.array([score for _, _, score in first_rows.values()])
    return binary_map(scores, labels, threshold)


def ttm_segment_scores(chunks: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Re-assemble TTM chunk predictions into one score per annotation segment (spec §3.6).

    Chunks of the same segment (same ``clip_uid`` and ``index``) have their logits averaged, then
    soft-maxed; the score is the probability of class 1. Unlike the original, which merged only
    *consecutive* chunks of an unshuffled batch-1 loader, chunks may come in any order and batch
    layout. A chunk seen twice (same clip, index, start and end; e.g. distributed padding) counts once.

    Args:
        chunks: one mapping per chunk with fields ``clip_uid`` (str), ``index`` (int, the entry index
            of the annotation in the clip's TTM file), ``start`` and ``end`` (int, chunk frames),
            ``label`` (0/1) and ``logits`` (num_classes,) or (1, num_classes).

    Returns:
        One dict per segment, in order of first appearance, with ``clip_uid``, ``index``,
        ``start`` (min chunk start), ``end`` (max chunk end), ``label`` and ``score`` (float).

    Raises:
        ValueError: a missing field, malformed logits, or chunks of one segment with different labels.
    """
    segments: Dict[Tuple[str, int], Dict[str, Any]] = {}
    for row_number, chunk in enumerate(chunks):
        clip_uid = str(_field(chunk, "clip_uid", row_number, "TTM chunk"))
        index = int(_number_field(chunk, "index", row_number, "TTM chunk"))
        start = int(_number_field(chunk, "start", row_number, "TTM chunk"))
        end = int(_number_field(chunk, "end", row_number, "TTM chunk"))
        label = _label(_field(chunk, "label", row_number, "TTM chunk"), row_number, "TTM chunk")
        logits = _to_numpy(_field(chunk, "logits", row_number, "TTM chunk")).astype(np.float64)
        if logits.ndim == 2 and logits.shape[0] == 1:
            logits = logits[0]
        if logits.ndim != 1 or logits.size < 2 or not np.all(np.isfinite(logits)):
            raise ValueError(f"TTM chunk row {row_number} ({clip_uid}:{index}): field 'logits' must be finite "
                             f"with shape (num_classes,), got {logits.tolist()}")
        segment = segments.setdefault((clip_uid, index), {"label": label, "chunks": {}})
        if segment["label"] != label:
            raise ValueError(f"TTM segment {clip_uid}:{index} has chunks with different labels: "
                             f"{segment['label']} vs {label}")
        segment["chunks"].setdefault((start, end), logits)
    results = []
    for (clip_uid, index), segment in segments.items():
        spans = list(segment["chunks"].keys())
        mean_logits = np.mean(np.stack(list(segment["chunks"].values())), axis=0)
        probabilities = np.exp(mean_logits - mean_logits.max())
        probabilities /= probabilities.sum()
        results.append({
            "clip_uid": clip_uid,
            "index": index,
            "start": min(start for start, _ in spans),
            "end": max(end for _, end in spans),
            "label": segment["label"],
            "score": float(probabilities[1]),
        })
    return results


def ttm_map(segments: Sequence[Mapping[str, Any]], legacy_key: bool = False, threshold: float = 0.5) -> BinaryMapResult:
    """Talking-To-Me val metric over annotation segments (spec §3.6, §6).

    Args:
        segments: the output of :func:`ttm_segment_scores` (fields ``clip_uid``, ``index``,
            ``start``, ``end``, ``label``, ``score``).
        legacy_key: ``False`` (default) keys rows by (clip uid, entry index): every segment counts.
            ``True`` reproduces the published EgoT2/Ego4D numbers: because of a CSV column-name
            mismatch the original keyed rows by "start:end" alone and kept only the first row of each
            key, so segments of different clips or people with identical start and end frames
            collapse into one. The result then depends on the segment order.
        threshold: accuracy threshold, see :func:`binary_map`.

    Returns:
        :class:`BinaryMapResult` over the de-duplicated segments.

    Raises:
        ValueError: a missing field, no segments, or duplicate (clip uid, index) rows with
            different labels.
    """
    kept: Dict[Any, Tuple[int, float]] = {}
    for row_number, segment in enumerate(segments):
        label = _label(_field(segment, "label", row_number, "TTM segment"), row_number, "TTM segment")
        score = _number_field(segment, "score", row_number, "TTM segment")
        if legacy_key:
            start = int(_number_field(segment, "start", row_number, "TTM segment"))
            end = int(_number_field(segment, "end", row_number, "TTM segment"))
            key: Any = f"{start}:{end}"
        else:
            index = _number_field(segment, "index", row_number, "TTM segment")
            key = (str(_field(segment, "clip_uid", row_number, "TTM segment")), int(index))
            if key in kept and kept[key][0] != label:
                raise ValueError(f"TTM segment {key[0]}:{key[1]} appears twice with different labels")
        kept.setdefault(key, (label, score))
    if not kept:
        raise ValueError("TTM metric got no segments")
    labels = np.array([label for label, _ in kept.values()])
    scores = np.array([score for _, score in kept.values()])
    return binary_map(scores, labels, threshold)


def asd_frame_accuracy(logits: Any, labels: Any) -> float:
    """ASD frame accuracy as EgoT2/TalkNet log it (spec §4.6).

    The prediction is ``round(softmax(logits))[:, 1]``. ``torch.round`` rounds half to even, so a
    probability of exactly 0.5 becomes 0: a tie counts as *not speaking*; here that is written
    out as ``probability > 0.5``.

    Args:
        logits: (N, 2) float, class 1 = speaking.
        labels: (N,) 0/1 ground truth.

    Returns:
        correct frames / N.
    """
    logit_tensor = torch.as_tensor(_to_numpy(logits), dtype=torch.float32)
    if logit_tensor.dim() != 2 or logit_tensor.shape[1] != 2:
        raise ValueError(f"ASD logits must have shape (N, 2), got {tuple(logit_tensor.shape)}")
    speaking_probability = torch.softmax(logit_tensor, dim=-1)[:, 1].numpy()
    _, label_array = _check_scores_labels(speaking_probability, labels)
    predicted = (speaking_probability > 0.5).astype(np.int64)
    return float(np.mean(predicted == label_array))


def asd_map(scores: Any, labels: Any) -> float:
    """ASD mean average precision of the speaking class (AVA-ActiveSpeaker convention).

    Only the speaking class is ranked (unlike LAM/TTM, which average two classes); the AP is the
    same VOC-interpolated one as :func:`voc_average_precision`.

    Args:
        scores: (N,) speaking scores (probabilities or logits; only their order matters).
        labels: (N,) 0/1 ground truth, 1 = speaking.

    Returns:
        AP in [0, 1], ``nan`` when no frame is speaking.
    """
    return voc_average_precision(scores, labels)
