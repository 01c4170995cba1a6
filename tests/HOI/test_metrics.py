"""HOI metrics on hand-computed examples (the arithmetic is in the comments)."""
import math

import numpy as np
import pytest
import torch

from HOI.metrics import (
    action_edit_distance,
    aued,
    batch_mean_error,
    edit_distance_at_z,
    lta_metrics,
    mean_error,
    most_frequent_baseline,
    oscc_accuracy,
    pnr_center_baseline_error,
    pnr_error,
    pnr_keyframe_offset,
    topk_accuracy,
)


def _one_hot_logits(indices, num_steps=16):
    logits = np.full((len(indices), num_steps), -1.0)
    logits[np.arange(len(indices)), indices] = 3.0
    return logits


# Three clips: A and B change state, C does not.
#   A: frames 300..540 over 10..18 s -> fps = 241 / 8 = 30.125; arg-max 5 -> offset 240 / 16 * 5 = 75;
#      true offset 400 - 300 = 100 -> error 25 / 30.125 = 0.829875...
#   B: frames 0..239 over 0..8 s -> fps = 240 / 8 = 30; arg-max 8 -> offset 239 / 16 * 8 = 119.5;
#      true offset 120 -> error 0.5 / 30 = 0.016666...
#   C: negative (pnr -1), excluded.
PNR_CLIPS = dict(
    pnr_frame=[400, 120, -1],
    start_frame=[300, 0, 600],
    end_frame=[540, 239, 840],
    start_sec=[10.0, 0.0, 20.0],
    end_sec=[18.0, 8.0, 28.0],
    state=[1, 1, 0],
)
ERROR_A = 25 / 30.125
ERROR_B = 0.5 / 30


def test_pnr_error_hand_computed():
    logits = _one_hot_logits([5, 8, 0])
    errors = pnr_error(logits, **PNR_CLIPS)
    np.testing.assert_allclose(errors, [ERROR_A, ERROR_B], rtol=1e-12)
    assert mean_error(errors) == pytest.approx((ERROR_A + ERROR_B) / 2)


def test_pnr_error_accepts_official_layout_and_tensors():
    logits = torch.tensor(_one_hot_logits([5, 8, 0]), dtype=torch.float32).unsqueeze(1)  # (N, 1, 16)
    clips = {key: torch.tensor(value) for key, value in PNR_CLIPS.items()}
    np.testing.assert_allclose(pnr_error(logits, **clips), [ERROR_A, ERROR_B], rtol=1e-6)


def test_pnr_keyframe_offset_is_relative_to_window_start():
    offsets = pnr_keyframe_offset(_one_hot_logits([5, 8, 15]), [300, 0, 600], [540, 239, 840])
    np.testing.assert_allclose(offsets, [75.0, 119.5, 225.0])  # 240 / 16 * 15 = 225


def test_pnr_error_rejects_negatives_without_state_and_bad_shapes():
    clips = {key: value for key, value in PNR_CLIPS.items() if key != "state"}
    with pytest.raises(ValueError, match="pnr_frame.*clip 2"):
        pnr_error(_one_hot_logits([5, 8, 0]), **clips)
    with pytest.raises(ValueError, match=r"pnr_frame: expected shape \(2,\), got \(3,\)"):
        pnr_error(_one_hot_logits([5, 8]), **PNR_CLIPS)
    bad_time = dict(PNR_CLIPS, end_sec=[10.0, 8.0, 28.0])
    with pytest.raises(ValueError, match="end_sec"):
        pnr_error(_one_hot_logits([5, 8, 0]), **bad_time)


def test_pnr_center_baseline():
    # A: centre offset 240 / 2 = 120 vs 100 -> 20 / 30.125; B: 239 / 2 = 119.5 vs 120 -> 0.5 / 30.
    errors = pnr_center_baseline_error(**PNR_CLIPS)
    np.testing.assert_allclose(errors, [20 / 30.125, ERROR_B], rtol=1e-12)
    # Predicting bin 8 of 16 is the same as predicting the centre.
    np.testing.assert_allclose(pnr_error(_one_hot_logits([8, 8, 8]), **PNR_CLIPS), errors, rtol=1e-12)


def test_batch_mean_error_legacy_differs_from_per_clip_mean():
    batches = [[0.8, 0.2, 0.2], [0.5], []]
    # Batch means 0.4, 0.5 and 0.0 (a batch without positives counts as 0) -> 0.3; per-clip mean 1.7 / 4.
    assert batch_mean_error(batches) == pytest.approx(0.3)
    assert mean_error(np.concatenate([np.asarray(b, dtype=float) for b in batches])) == pytest.approx(0.425)
    assert math.isnan(mean_error([]))


def test_oscc_accuracy():
    logits = np.array([[0.1, 0.9], [2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])  # arg-max 1, 0, 1, 0
    state = [1, 0, 0, 1]  # hits, hits, misses, misses
    assert oscc_accuracy(logits, state) == pytest.approx(0.5)
    assert oscc_accuracy(torch.tensor(logits)[..., None], torch.tensor(state)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="state_logits"):
        oscc_accuracy(np.zeros((4, 3)), state)


def test_topk_accuracy():
    logits = np.array([
        [0.1, 0.5, 0.2, 0.9, 0.0, 0.3],  # label 1 ranks 2nd (after class 3): top-1 miss, top-5 hit
        [0.0, 0.1, 0.2, 0.9, 0.3, 0.4],  # label 3 ranks 1st
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # label 5 ranks 6th: miss at 5
    ])
    accuracy = topk_accuracy(logits, [1, 3, 5], ks=(1, 2, 5))
    assert accuracy == pytest.approx({1: 1 / 3, 2: 2 / 3, 5: 2 / 3})
    with pytest.raises(ValueError, match="ks"):
        topk_accuracy(logits, [1, 3, 5], ks=(7,))
    with pytest.raises(ValueError, match="labels"):
        topk_accuracy(logits, [1, 3, 6])


# Two windows, K = 2 candidates, Z = 4.
#   window 0, labels [1, 2, 3, 4]:
#     k0 [1, 3, 4, 5]: prefixes z=1: 0; z=2 [1,3]/[1,2]: 1; z=3 [1,3,4]/[1,2,3]: 2; z=4: insert 2 + delete 5 = 2
#     k1 [1, 2, 9, 4]: z=1: 0; z=2: 0; z=3: 1 substitution; z=4: 1
#     min / z -> [0, 0, 1/3, 1/4]
#   window 1, labels [5, 6, 7, 8]:
#     k0 [6, 7, 8, 9]: z=1: 1; z=2 [6,7]/[5,6]: 2; z=3: 2; z=4: delete 5 + insert 9 = 2 (Hamming would say 4)
#     k1 [5, 5, 5, 5]: z=1: 0; z=2: 1; z=3: 2; z=4: 3
#     min / z -> [0, 1/2, 2/3, 2/4]
LTA_PREDS = np.array([[[1, 3, 4, 5], [1, 2, 9, 4]], [[6, 7, 8, 9], [5, 5, 5, 5]]])
LTA_LABELS = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
LTA_ED = np.array([[0, 0, 1 / 3, 1 / 4], [0, 1 / 2, 2 / 3, 2 / 4]])


def test_edit_distance_at_z_hand_computed():
    np.testing.assert_allclose(edit_distance_at_z(LTA_PREDS, LTA_LABELS), LTA_ED, rtol=1e-12)
    np.testing.assert_allclose(edit_distance_at_z(torch.tensor(LTA_PREDS), torch.tensor(LTA_LABELS)), LTA_ED)


def test_edit_distance_is_levenshtein_not_damerau():
    # An adjacent swap costs two substitutions (Damerau-Levenshtein would count one transposition).
    distances = edit_distance_at_z(np.array([[[2, 1]]]), np.array([[1, 2]]))
    np.testing.assert_allclose(distances, [[1.0, 1.0]])


def test_edit_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="labels"):
        edit_distance_at_z(LTA_PREDS, LTA_LABELS[:, :3])
    with pytest.raises(ValueError, match="preds"):
        edit_distance_at_z(LTA_PREDS[0], LTA_LABELS)
    with pytest.raises(ValueError, match="integer"):
        edit_distance_at_z(LTA_PREDS.astype(float), LTA_LABELS)


def test_aued_trapezoid():
    # Mean curve [0, 1/4, 1/2, 3/8]; trapezoid = 0/2 + 1/4 + 1/2 + 3/16 = 0.9375; / (Z - 1) = 0.3125.
    assert aued(LTA_ED) == pytest.approx(0.3125)
    assert aued(LTA_ED.mean(axis=0)) == pytest.approx(0.3125)
    assert aued([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="Z >= 2"):
        aued([0.5])


# Verbs right in candidate 0, nouns right in candidate 1, but no candidate gets both right everywhere.
#   labels: verbs [1, 2, 3], nouns [10, 11, 12]
#   k0: verbs [1, 2, 3], nouns [10, 99, 12] -> action mismatch at step 2
#   k1: verbs [7, 2, 3], nouns [10, 11, 12] -> action mismatch at step 1
#   action ED: z=1: min(0, 1) = 0; z=2: min(1, 1) / 2; z=3: min(1, 1) / 3
VERB_PREDS = np.array([[[1, 2, 3], [7, 2, 3]]])
NOUN_PREDS = np.array([[[10, 99, 12], [10, 11, 12]]])
VERB_LABELS = np.array([[1, 2, 3]])
NOUN_LABELS = np.array([[10, 11, 12]])


def test_action_edit_distance_needs_verb_and_noun_in_the_same_candidate():
    np.testing.assert_allclose(edit_distance_at_z(VERB_PREDS, VERB_LABELS), [[0, 0, 0]])
    np.testing.assert_allclose(edit_distance_at_z(NOUN_PREDS, NOUN_LABELS), [[0, 0, 0]])
    np.testing.assert_allclose(
        action_edit_distance(VERB_PREDS, NOUN_PREDS, VERB_LABELS, NOUN_LABELS), [[0, 1 / 2, 1 / 3]], rtol=1e-12)


def test_action_pairs_do_not_collide():
    # (verb 1, noun 0) must differ from (verb 0, noun 100): the pair code must exceed every noun index.
    distances = action_edit_distance(np.array([[[1]]]), np.array([[[0]]]), np.array([[0]]), np.array([[100]]))
    np.testing.assert_allclose(distances, [[1.0]])


def test_lta_metrics():
    metrics = lta_metrics(VERB_PREDS, NOUN_PREDS, VERB_LABELS, NOUN_LABELS)
    # action AUED: (0/2 + 1/2 + (1/3)/2) / 2 = 1/3
    assert metrics == pytest.approx({
        "verb_ED@3": 0.0, "noun_ED@3": 0.0, "action_ED@3": 1 / 3,
        "verb_AUED": 0.0, "noun_AUED": 0.0, "action_AUED": 1 / 3,
    })


def test_most_frequent_baseline():
    # counts: class 0: 2, 1: 2, 2: 1, 3: 3 -> ranking 3, 0, 1 (tie broken towards the lower index), 2
    train = np.array([3, 3, 3, 1, 1, 2, 0, 0])
    np.testing.assert_array_equal(most_frequent_baseline(train, Z=2, K=3), [[3, 3], [0, 0], [1, 1]])
    # Unseen classes are never predicted; with fewer seen classes than K the ranking repeats.
    np.testing.assert_array_equal(most_frequent_baseline([5, 5, 4], Z=1, K=3), [[5], [4], [5]])
    with pytest.raises(ValueError, match="train_labels"):
        most_frequent_baseline([], Z=2, K=1)


def test_perfect_forecast_beats_most_frequent_baseline():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=(8, 5))
    baseline = np.broadcast_to(most_frequent_baseline(labels, Z=5, K=2), (8, 2, 5))
    perfect = np.repeat(labels[:, None], 2, axis=1)
    assert edit_distance_at_z(perfect, labels)[:, -1].mean() == 0.0
    assert edit_distance_at_z(baseline, labels)[:, -1].mean() > 0.0
