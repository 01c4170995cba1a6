"""The demo end to end on the tiny twin with minimal settings (``--smoke``): results.json and submit_ttm.json."""
import importlib.util
import json

import pytest

from egot2.config import REPO_ROOT
from egot2.submission import validate_file


def _demo():
    spec = importlib.util.spec_from_file_location("demo", REPO_ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_demo_writes_valid_results_and_submission(tmp_path, capsys):
    out = tmp_path / "demo"
    results = _demo().run_demo(out, seed=0, workers=1, profile="smoke")
    written = json.loads((out / "results.json").read_text())
    assert written == json.loads(json.dumps(results))
    for key in ("task_specific", "egot2s_2task", "egot2s_3task"):
        assert 0.0 <= written["ttm"][key] <= 1.0
    assert set(written["timings_s"]) >= {"synthesise_and_prepare", "stage1_lam", "stage1_ttm", "stage1_asd",
                                         "feature_cache", "egot2s_2task", "egot2s_3task", "total"}
    assert validate_file("ttm", out / "submit_ttm.json") == []
    assert (out / "attention.png").read_bytes()[:4] == b"\x89PNG"
    for source in ("lam", "ttm", "asd"):
        assert (out / "pretrained_models" / f"ts_{source}.pth").is_file()
        assert json.loads((out / "features" / "train" / source / "index.json").read_text())["complete"]
    printed = capsys.readouterr().out
    assert "| Task-specific model | EgoT2-s (2 task translation) | EgoT2-s (3 task translation) |" in printed
    assert "TTM Val mAP (%)" in printed


def test_table_is_shaped_like_the_paper():
    table = _demo().format_table({"task_specific": 0.5891, "egot2s_2task": 0.6589, "egot2s_3task": 0.6654})
    header, rule, row = table.splitlines()
    assert header.split("|")[2].strip() == "Task-specific model"
    assert [cell.strip() for cell in row.split("|")[1:-1]] == ["TTM Val mAP (%)", "58.91", "65.89", "66.54"]
    assert set(rule) <= {"|", "-"}
