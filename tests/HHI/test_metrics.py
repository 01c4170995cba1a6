"""HHI metrics against hand-computed values (spec hhi.md §6, §3.6, §4.6)."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from HHI.metrics import (
    asd_frame_accuracy,
    asd_map,
    binary_map,
    lam_key,
    lam_map,
    ttm_map,
    ttm_segment_scores,
    voc_average_precision,
)


def test_voc_ap_hand_computed():
    # ranked labels 1 0 1 0 1, P = 3
    # precision 1, 1/2, 2/3, 1/2, 3/5; recall 1/3, 1/3, 2/3, 2/3, 1
    # right-to-left running max of precision at the recall steps: 1, 2/3, 3/5
    # AP = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 = 34/45
    assert voc_average_precision([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 1]) == pytest.approx(34 / 45)


def test_voc_ap_is_interpolated_not_sklearn():
    # ranked labels 0 1 1: precision 0, 1/2, 2/3; recall 0, 1/2, 1
    # interpolated precision at both recall steps is 2/3 -> AP = 2/3; sklearn gives 1/2*1/2 + 1/2*2/3 = 7/12
    scores, labels = [0.9, 0.8, 0.7], [0, 1, 1]
    assert voc_average_precision(scores, labels) == pytest.approx(2 / 3)
    assert average_precision_score(labels, scores) == pytest.approx(7 / 12)


def test_binary_map_hand_computed_and_tie_at_threshold_counts_positive():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 0, 1, 0, 1])
    result = binary_map(scores, labels)
    # negative class: 1 - score ranks the rows 0.5 0.4 0.3 0.2 0.1 with flipped labels 0 1 0 1 0, P = 2
    # precision 0, 1/2, 1/3, 1/2, 2/5; recall 0, 1/2, 1/2, 1, 1 -> AP = 1/2 * 1/2 + 1/2 * 1/2 = 1/2
    assert result.ap_positive == pytest.approx(34 / 45)
    assert result.ap_negative == pytest.approx(0.5)
    assert result.mean_ap == pytest.approx((34 / 45 + 0.5) / 2)
    # every score >= 0.5 -> all predicted positive; the 0.5 row (label 1) is right: 3 of 5
    assert result.accuracy == pytest.approx(0.6)
    assert result.num_samples == 5


def test_tied_scores_keep_input_order():
    # stable ranking: [0, 1] -> precision 0, 1/2 at recall 0, 1 -> AP 1/2; [1, 0] -> precision 1 at recall 1 -> AP 1
    assert voc_average_precision([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert voc_average_precision([0.5, 0.5], [1, 0]) == pytest.approx(1.0)


def test_single_class_inputs_give_nan_for_the_missing_class():
    all_positive = binary_map([0.2, 0.9, 0.6], [1, 1, 1])
    assert all_positive.ap_positive == pytest.approx(1.0)
    assert math.isnan(all_positive.ap_negative) and math.isnan(all_positive.mean_ap)
    assert all_positive.accuracy == pytest.approx(2 / 3)
    all_negative = binary_map([0.2, 0.9, 0.6], [0, 0, 0])
    assert math.isnan(all_negative.ap_positive) and all_negative.ap_negative == pytest.approx(1.0)
    assert math.isnan(voc_average_precision([0.3], [0]))


def test_accepts_tensors():
    result = binary_map(torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]), torch.tensor([1, 0, 1, 0, 1]))
    assert result.ap_positive == pytest.approx(34 / 45)


@pytest.mark.parametrize("scores, labels, message", [
    ([], [], "zero samples"),
    ([0.1, 0.2], [1], "differ in length"),
    ([0.1, float("nan")], [1, 0], "non-finite"),
    ([0.1, 0.2], [1, 2], "0 or 1"),
    ([[0.1, 0.2]], [[1, 0]], "one-dimensional"),
])
def test_bad_metric_input_raises(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        binary_map(scores, labels)


def _lam_row(clip, frame, track, box, label, score):
    return {"clip_uid": clip, "frame": frame, "track_id": track, "box": box, "label": label, "score": score}


def test_lam_map_deduplicates_on_clip_frame_track():
    rows = [
        _lam_row("c1", 13, "t1", (1, 2, 30, 40), 1, 0.9),
        _lam_row("c1", 26, "t1", (1, 2, 30, 40), 0, 0.8),
        _lam_row("c1", 13, "t2", (5, 5, 20, 20), 1, 0.7),
        _lam_row("c2", 13, "t1", (0, 0, 10, 10), 0, 0.6),
        _lam_row("c1", 13, "t1", (1, 2, 30, 40), 1, 0.1),  # distributed padding: same key, first row kept
        _lam_row("c2", 26, "t1", (0, 0, 10, 10), 1, 0.5),
    ]
    result = lam_map(rows)
    expected = binary_map([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 1])
    assert result == expected
    assert lam_key("c1", 13, "t1") == "c1:13:t1"


def test_lam_map_rejects_inconsistent_duplicates_and_missing_fields():
    base = _lam_row("c1", 13, "t1", (1, 2, 30, 40), 1, 0.9)
    with pytest.raises(ValueError, match="c1:13:t1.*different boxes"):
        lam_map([base, _lam_row("c1", 13, "t1", (1, 2, 31, 40), 1, 0.9)])
    with pytest.raises(ValueError, match="c1:13:t1.*different labels"):
        lam_map([base, _lam_row("c1", 13, "t1", (1, 2, 30, 40), 0, 0.9)])
    with pytest.raises(ValueError, match="row 0 has no field 'score'"):
        lam_map([{key: value for key, value in base.items() if key != "score"}])


def _chunk(clip, index, start, end, label, logits):
    return {"clip_uid": clip, "index": index, "start": start, "end": end, "label": label, "logits": logits}


def test_ttm_segment_scores_average_logits_then_softmax():
    chunks = [
        _chunk("c1", 0, 0, 150, 1, torch.tensor([[0.0, 2.0]])),
        _chunk("c1", 3, 500, 520, 0, np.array([1.0, -1.0])),
        _chunk("c1", 0, 150, 300, 1, [1.0, 0.0]),  # same segment, not consecutive
        _chunk("c1", 0, 0, 150, 1, [9.0, -9.0]),  # a repeated chunk (distributed padding) counts once
    ]
    segments = ttm_segment_scores(chunks)
    assert [(s["clip_uid"], s["index"], s["start"], s["end"], s["label"]) for s in segments] == [
        ("c1", 0, 0, 300, 1), ("c1", 3, 500, 520, 0)]
    # mean logits (0.5, 1.0): softmax[1] = 1 / (1 + exp(-0.5)); single chunk (1, -1): 1 / (1 + exp(2))
    assert segments[0]["score"] == pytest.approx(1 / (1 + math.exp(-0.5)))
    assert segments[1]["score"] == pytest.approx(1 / (1 + math.exp(2.0)))


def test_ttm_segment_scores_rejects_label_conflicts():
    with pytest.raises(ValueError, match="c1:0 has chunks with different labels"):
        ttm_segment_scores([_chunk("c1", 0, 0, 150, 1, [0, 1]), _chunk("c1", 0, 150, 300, 0, [0, 1])])


def test_ttm_legacy_start_end_key_collapses_segments_of_different_clips():
    segments = [
        {"clip_uid": "c1", "index": 0, "start": 0, "end": 150, "label": 1, "score": 0.9},
        {"clip_uid": "c2", "index": 0, "start": 0, "end": 150, "label": 0, "score": 0.95},
        {"clip_uid": "c1", "index": 1, "start": 200, "end": 300, "label": 0, "score": 0.3},
    ]
    corrected = ttm_map(segments)
    # ranked by score: c2 (0), c1:0 (1), c1:1 (0): AP+ = 1/2 (first positive at rank 2)
    # by 1 - score: c1:1 (neg), c1:0 (pos), c2 (neg): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    #   -> AP- = 1/2 * 1 + 1/2 * 2/3 = 5/6; mAP = 2/3; accuracy: c2 wrong, others right = 2/3
    assert corrected.num_samples == 3
    assert corrected.ap_positive == pytest.approx(0.5)
    assert corrected.ap_negative == pytest.approx(5 / 6)
    assert corrected.mean_ap == pytest.approx(2 / 3)
    assert corrected.accuracy == pytest.approx(2 / 3)
    legacy = ttm_map(segments, legacy_key=True)
    # "0:150" keeps only the first row (c1:0); c1:0 (0.9, pos) and c1:1 (0.3, neg) are perfectly ranked
    assert legacy.num_samples == 2
    assert legacy.mean_ap == pytest.approx(1.0) and legacy.accuracy == pytest.approx(1.0)


def test_ttm_map_on_aggregated_chunks():
    chunks = [_chunk("c1", 0, 0, 150, 1, [0.0, 3.0]), _chunk("c1", 1, 10, 40, 0, [2.0, 0.0])]
    assert ttm_map(ttm_segment_scores(chunks)).mean_ap == pytest.approx(1.0)


def test_asd_frame_accuracy_half_counts_as_not_speaking():
    logits = torch.tensor([[0.0, 0.0], [0.0, 1.0], [2.0, 0.0]])  # p(speaking) = 0.5, 0.73, 0.12
    assert asd_frame_accuracy(logits, [0, 1, 0]) == pytest.approx(1.0)
    assert asd_frame_accuracy(logits, [1, 1, 0]) == pytest.approx(2 / 3)
    random_logits = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    random_labels = torch.randint(0, 2, (200,), generator=torch.Generator().manual_seed(1))
    talknet_prediction = torch.round(torch.softmax(random_logits, dim=-1))[:, 1]
    expected = (talknet_prediction == random_labels).float().mean().item()
    assert asd_frame_accuracy(random_logits, random_labels) == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        asd_frame_accuracy(torch.zeros(3, 3), [0, 1, 0])


def test_asd_map_is_speaking_class_voc_ap():
    assert asd_map([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 1]) == pytest.approx(34 / 45)
    assert asd_map(np.array([3.0, -1.0, 0.5]), np.array([1, 0, 1])) == pytest.approx(1.0)
