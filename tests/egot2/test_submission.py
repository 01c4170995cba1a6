"""egot2.submission: builders, strict validators (every rejection), coverage, atomic writing and the CLI."""
import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from egot2.config import REPO_ROOT
from egot2.submission import (
    LTA_NUM_NOUNS,
    LTA_NUM_VERBS,
    SubmissionError,
    annotation_expectations,
    lam_results,
    lta_results,
    lta_window_keys,
    main,
    oscc_results,
    pnr_results,
    read_submission,
    ttm_results,
    validate_file,
    validate_submission,
    write_submission,
)


def _ttm():
    return ttm_results({"seg_b": 0.25, "seg_a": 0.9}, {"seg_a": [3, 1, 2], "seg_b": [0, 5]})


def _lam():
    return lam_results([("vid1", "120", "3", 0.7), ("vid1", "133", "3", 0.1), ("vid2", "13", "1", 1)])


def _pnr():
    return pnr_results({"w1": 105.0, "w2": 60, "w3": np.float32(7.5)})


def _oscc():
    return oscc_results({"w1": True, "w2": np.bool_(False), "w3": torch.tensor(1)})


def _lta(num_windows=2):
    generator = torch.Generator().manual_seed(0)
    predictions = {
        f"clip{i}_{i + 1}": (torch.randint(0, LTA_NUM_VERBS, (5, 20), generator=generator),
                             np.random.default_rng(i).integers(0, LTA_NUM_NOUNS, (5, 20)))
        for i in range(num_windows)
    }
    return lta_results(predictions)


VALID = {"ttm": _ttm, "lam": _lam, "pnr": _pnr, "oscc": _oscc, "lta": _lta}


# ------------------------------------------------------------------------------------------------ builders


def test_builders_produce_the_official_structures():
    ttm = _ttm()
    assert (ttm["version"], ttm["challenge"]) == ("1.0", "ego4d_talking_to_me")
    assert ttm["results"][:4] == [
        {"video_id": "seg_b", "frame_id": "0", "label": 1, "score": 0.25},
        {"video_id": "seg_b", "frame_id": "5", "label": 1, "score": 0.25},
        {"video_id": "seg_a", "frame_id": "1", "label": 1, "score": 0.9},
        {"video_id": "seg_a", "frame_id": "2", "label": 1, "score": 0.9},
    ]
    lam = _lam()
    assert lam["challenge"] == "ego4d_looking_at_me"
    assert lam["results"][2] == {"video_id": "vid2", "unique_id": "13", "track_id": "1", "label": 1, "score": 1.0}
    assert _pnr() == [{"unique_id": "w1", "pnr_frame": 105.0}, {"unique_id": "w2", "pnr_frame": 60.0},
                      {"unique_id": "w3", "pnr_frame": 7.5}]
    assert [entry["state_change"] for entry in _oscc()] == [True, False, True]
    assert all(type(entry["state_change"]) is bool for entry in _oscc())
    lta = _lta()
    assert set(lta) == {"clip0_1", "clip1_2"}
    assert all(type(v) is int for seq in lta["clip0_1"]["noun"] for v in seq)
    with pytest.raises(ValueError, match="seg_c"):
        ttm_results({"seg_c": 0.5}, {})


@pytest.mark.parametrize("task", sorted(VALID))
def test_valid_submissions_are_accepted_and_written(tmp_path, task):
    obj = VALID[task]()
    assert validate_submission(task, obj) == []
    path = write_submission(task, obj, tmp_path / "out" / f"submit_{task}.json")
    assert json.loads(path.read_text()) == obj
    assert validate_file(task, path) == []
    assert sorted(p.name for p in path.parent.iterdir()) == [f"submit_{task}.json"]


def test_an_int_score_is_fine_for_a_float_field():
    obj = _ttm()
    obj["results"][0]["score"] = 1
    assert validate_submission("ttm", obj) == []


# ------------------------------------------------------------------------------------------------ rejections


@pytest.mark.parametrize("task, wrong", [
    ("ttm", []), ("ttm", "x"), ("lam", [{}]), ("pnr", {"w1": 1.0}), ("oscc", {"results": []}), ("lta", []),
])
def test_wrong_top_level_type(task, wrong):
    problems = validate_submission(task, wrong)
    assert len(problems) == 1 and problems[0].startswith("top level: must be")


def test_challenge_object_header_is_checked():
    obj = _ttm()
    obj["version"] = "2.0"
    obj["challenge"] = "ego4d_looking_at_me"
    obj["extra"] = 1
    del obj["results"]
    problems = validate_submission("ttm", obj)
    assert "top level: missing field 'results'" in problems
    assert "top level: unexpected field 'extra'" in problems
    assert any(p.startswith("version: must be '1.0'") for p in problems)
    assert any(p.startswith("challenge: must be 'ego4d_talking_to_me'") for p in problems)


def test_missing_fields_and_wrong_value_types_are_all_listed():
    ttm = _ttm()
    del ttm["results"][0]["score"]
    ttm["results"][1]["label"] = True  # bool is not an int
    ttm["results"][2]["frame_id"] = 1  # frame ids are strings
    ttm["results"][3]["score"] = "0.5"
    ttm["results"][4]["note"] = "x"
    problems = validate_submission("ttm", ttm)
    assert problems == [
        "results[0]: missing field 'score'",
        "results[1].label: must be an integer (0 or 1), got bool True",
        "results[2].frame_id: must be a string, got int 1",
        "results[3].score: must be a number, got str '0.5'",
        "results[4]: unexpected field 'note'",
    ]
    lam = _lam()
    lam["results"][0]["track_id"] = 3
    lam["results"][1]["label"] = 2
    assert validate_submission("lam", lam) == ["results[0].track_id: must be a string, got int 3",
                                               "results[1].label: must be 0 or 1, got 2"]
    oscc = _oscc()
    oscc[0]["state_change"] = 1
    del oscc[1]["unique_id"]
    assert validate_submission("oscc", oscc) == ["[0].state_change: must be a JSON boolean, got int 1",
                                                 "[1]: missing field 'unique_id'"]
    pnr = _pnr()
    pnr[0]["pnr_frame"] = "105"
    pnr[1]["pnr_frame"] = -1.0
    pnr[2] = "w3"
    assert validate_submission("pnr", pnr) == [
        "[0].pnr_frame: must be a number, got str '105'",
        "[1].pnr_frame: must be >= 0 (an offset from parent_start_frame), got -1.0",
        "[2]: must be an object with fields ['pnr_frame', 'unique_id'], got str",
    ]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_rejected(bad):
    ttm = _ttm()
    ttm["results"][0]["score"] = bad
    assert validate_submission("ttm", ttm) == [f"results[0].score: must be finite, got {bad}"]
    pnr = _pnr()
    pnr[0]["pnr_frame"] = bad
    assert validate_submission("pnr", pnr) == [f"[0].pnr_frame: must be finite, got {bad}"]


def test_scores_must_be_probabilities():
    lam = _lam()
    lam["results"][0]["score"] = 1.5
    lam["results"][1]["score"] = -0.1
    assert validate_submission("lam", lam) == ["results[0].score: must be a probability in [0, 1], got 1.5",
                                               "results[1].score: must be a probability in [0, 1], got -0.1"]


def test_duplicate_ids_are_rejected(tmp_path):
    ttm = _ttm()
    ttm["results"].append(dict(ttm["results"][0]))
    assert validate_submission("ttm", ttm) == ["duplicate (video_id, frame_id) seg_b/0 at results[0], results[5]"]
    pnr = _pnr() + _pnr()[:1]
    assert validate_submission("pnr", pnr) == ["duplicate unique_id w1 at [0], [3]"]
    lam = _lam()
    lam["results"].append(dict(lam["results"][1], score=0.3))
    assert validate_submission("lam", lam) == ["duplicate (video_id, unique_id, track_id) vid1/133/3 at "
                                               "results[1], results[3]"]
    # JSON objects cannot hold a key twice once parsed, so the file reader reports repeats (LTA window ids).
    entry = json.dumps(_lta(1)["clip0_1"])
    path = tmp_path / "dup.json"
    path.write_text(f'{{"clip0_1": {entry}, "clip0_1": {entry}}}')
    obj, repeats = read_submission(path)
    assert list(obj) == ["clip0_1"]
    assert repeats == ["duplicate key 'clip0_1' in one JSON object (only its last value would count)"]
    assert validate_file("lta", path) == repeats


def test_lta_sequence_count_length_type_and_range():
    lta = _lta(1)
    entry = lta["clip0_1"]
    entry["verb"] = entry["verb"][:4]  # 4 sequences instead of 5
    entry["noun"][2] = entry["noun"][2][:19]  # 19 actions instead of 20
    entry["noun"][3][0] = True
    entry["noun"][4][1] = 1.0
    entry["noun"][4][2] = LTA_NUM_NOUNS
    entry["noun"][4][3] = -1
    problems = validate_submission("lta", lta, num_verbs=LTA_NUM_VERBS, num_nouns=LTA_NUM_NOUNS)
    assert problems == [
        "['clip0_1'].verb: must hold 5 sequences, got 4",
        "['clip0_1'].noun[2]: must hold 20 class indices, got 19",
        "['clip0_1'].noun[3][0]: must be an integer class index, got bool True",
        "['clip0_1'].noun[4][1]: must be an integer class index, got float 1.0",
        f"['clip0_1'].noun[4][2]: class index {LTA_NUM_NOUNS} out of range [0, {LTA_NUM_NOUNS})",
        "['clip0_1'].noun[4][3]: class index -1 out of range [0, 478)",
    ]
    # Without class counts only negative indices are out of range.
    assert len(validate_submission("lta", lta)) == 5
    other = _lta(1)
    other["clip0_1"]["noun"] = [[1] * 20] * 6
    del other["clip0_1"]["verb"]
    other["bad key"] = {"verb": 3, "noun": [[0] * 20] * 5}
    assert validate_submission("lta", other) == [
        "['clip0_1']: missing field 'verb'",
        "['clip0_1'].noun: must hold 5 sequences, got 6",
        "['bad key']: key must look like '<clip_uid>_<action_idx>'",
        "['bad key'].verb: must be a list of 5 lists of 20 integers, got int",
    ]
    short = _lta(1)
    assert validate_submission("lta", short, num_actions=10)[0] == "['clip0_1'].verb[0]: must hold 10 class " \
                                                                    "indices, got 20"


@pytest.mark.parametrize("task", sorted(VALID))
def test_empty_submissions_are_rejected(task):
    obj = copy.deepcopy(VALID[task]())
    if task in ("ttm", "lam"):
        obj["results"] = []
    else:
        obj = type(obj)()
    assert len(validate_submission(task, obj)) == 1


# ------------------------------------------------------------------------------------------------ writing


def test_invalid_submissions_raise_and_leave_no_file(tmp_path):
    pnr = _pnr()
    pnr[0]["pnr_frame"] = math.nan
    pnr[1]["unique_id"] = ""
    target = tmp_path / "out" / "submit_pnr.json"
    with pytest.raises(SubmissionError) as info:
        write_submission("pnr", pnr, target)
    assert info.value.problems == ["[0].pnr_frame: must be finite, got nan",
                                   "[1].unique_id: must be a non-empty string"]
    assert "submit_pnr.json" in str(info.value) and "2 problems" in str(info.value)
    assert not target.exists() and not any(tmp_path.rglob("*.json*"))
    # An earlier valid file is left untouched by a failed rewrite.
    write_submission("pnr", _pnr(), target)
    before = target.read_text()
    with pytest.raises(SubmissionError):
        write_submission("pnr", pnr, target)
    assert target.read_text() == before and [p.name for p in target.parent.iterdir()] == ["submit_pnr.json"]
    with pytest.raises(ValueError, match="unknown submission task"):
        write_submission("asd", [], tmp_path / "x.json")


# ------------------------------------------------------------------------------------------------ coverage


def _fho_annotations(tmp_path):
    clips = [
        {"unique_id": "w1", "clip_uid": "c", "parent_start_frame": 100, "parent_end_frame": 340},
        {"unique_id": "w2", "clip_uid": None, "parent_start_frame": 0, "parent_end_frame": 240},
        {"unique_id": "w3", "clip_uid": "c", "parent_start_frame": 30, "parent_end_frame": 270},
        {"unique_id": "w4", "clip_uid": "c", "parent_start_frame": 30, "parent_end_frame": 270},
    ]
    path = tmp_path / "fho_oscc-pnr_test_unannotated.json"
    path.write_text(json.dumps({"version": "1", "date": "2022", "description": "", "split": "test", "clips": clips}))
    return path


def test_coverage_against_fho_annotations(tmp_path):
    annotations = _fho_annotations(tmp_path)
    expect = annotation_expectations("pnr", annotations)
    assert expect["expected_ids"] == {"w1", "w2", "w3", "w4"} and expect["frame_limits"]["w1"] == 240
    pnr = _pnr()
    pnr.append({"unique_id": "w9", "pnr_frame": 1.0})
    pnr[0]["pnr_frame"] = 300.0
    assert validate_submission("pnr", pnr, **expect) == [
        "[0].pnr_frame: 300.0 is past the window end (offset 240)",
        "missing predictions for 1 expected unique_ids: w4",
        "1 predicted unique_ids not in the annotations: w9",
    ]
    oscc = _oscc() + [{"unique_id": "w4", "state_change": False}]
    assert validate_submission("oscc", oscc, **annotation_expectations("oscc", annotations)) == []


def test_ttm_coverage_from_seg_info(tmp_path):
    seg_info = tmp_path / "seg_info.json"
    seg_info.write_text(json.dumps({"seg_a": {"frame_list": [1, 2, 3], "frame_num": 151},
                                    "seg_b": {"frame_list": [0, 5, 6], "frame_num": 151}}))
    expect = annotation_expectations("ttm", seg_info)
    assert validate_submission("ttm", _ttm(), **expect) == ["missing predictions for 1 expected (video_id, frame_id)s: "
                                                            "seg_b/6"]
    bad_info = tmp_path / "bad_seg_info.json"
    bad_info.write_text(json.dumps({"seg_a": {"frame_num": 3}}))
    with pytest.raises(ValueError, match=r"bad_seg_info\.json: seg_a\.frame_list"):
        annotation_expectations("ttm", bad_info)


def test_lta_window_enumeration():
    actions = [{"clip_uid": "A", "action_idx": i} for i in reversed(range(25))]
    actions += [{"clip_uid": "B", "action_idx": i} for i in range(22)]  # too short for one window
    annotation = {"clips": actions}
    assert lta_window_keys(annotation) == ["A_1", "A_2", "A_3"]  # M - Z - N = 3 windows, keyed by the last input
    assert lta_window_keys(annotation, include_last_window=True) == ["A_1", "A_2", "A_3", "A_4", "B_1"]
    assert lta_window_keys(annotation, num_input_clips=1, num_actions=1)[:2] == ["A_0", "A_1"]
    with pytest.raises(ValueError, match=r"clips\[0\]\.action_idx"):
        lta_window_keys({"clips": [{"clip_uid": "A", "action_idx": "3"}]}, source="fho_lta_val.json")


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_exit_codes_and_messages(tmp_path, capsys):
    good = write_submission("oscc", _oscc(), tmp_path / "submit_oscc.json")
    assert main(["--task", "oscc", str(good)]) == 0
    assert capsys.readouterr().out.strip() == "valid"

    annotations = _fho_annotations(tmp_path)
    assert main(["--task", "oscc", str(good), "--annotations", str(annotations)]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s)" in out and "missing predictions for 1 expected unique_ids: w4" in out

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"unique_id": "w1", "state_change": "yes"}, {"state_change": True}]))
    assert main(["--task", "oscc", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "[0].state_change: must be a JSON boolean" in out and "[1]: missing field 'unique_id'" in out

    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    assert main(["--task", "pnr", str(broken)]) == 1
    assert "not valid JSON" in capsys.readouterr().out
    assert main(["--task", "pnr", str(tmp_path / "absent.json")]) == 1
    assert "not found" in capsys.readouterr().out

    lta = write_submission("lta", _lta(1), tmp_path / "submit_lta.json")
    assert main(["--task", "lta", str(lta), "--num_nouns", "10"]) == 1
    assert "out of range [0, 10)" in capsys.readouterr().out


def test_cli_runs_as_a_module(tmp_path):
    good = write_submission("pnr", _pnr(), tmp_path / "submit_pnr.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"w1": 1.0}))
    ok = subprocess.run([sys.executable, "-m", "egot2.submission", "--task", "pnr", str(good)], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=120)
    assert (ok.returncode, ok.stdout.strip()) == (0, "valid")
    failed = subprocess.run([sys.executable, "-m", "egot2.submission", "--task", "pnr", str(bad)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "top level: must be a list" in failed.stdout
