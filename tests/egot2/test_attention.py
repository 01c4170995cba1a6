"""Attention records and the interpretability plot."""
import numpy as np
import pytest
import torch

from egot2.attention import mean_attention_by_label, plot_attention, read_attention_csv, save_attention
from egot2.translation import TaskTranslator


def test_translator_mass_is_written_read_back_and_plotted(tmp_path):
    translator = TaskTranslator([("ttm", 8), ("lam", 8)], dim=16, num_heads=2).eval()
    with torch.no_grad():
        _, mass = translator({"ttm": torch.randn(4, 3, 8), "lam": torch.randn(4, 3, 8)}, return_attention=True)
    ids, labels = [f"clip:{i}" for i in range(4)], torch.tensor([0, 1, 1, 0])
    csv_path, png_path = save_attention(tmp_path / "logs" / "ttm" / "run", ids, labels, mass, ["ttm", "lam"],
                                        title="TTM", label_names={0: "not to me", 1: "to me"})
    assert csv_path == tmp_path / "logs/ttm/run/attention/val_attention.csv"
    assert csv_path.read_text().splitlines()[0] == "sample_id,label,ttm,lam"
    read_ids, read_labels, read_mass, sources = read_attention_csv(csv_path)
    assert read_ids == ids and read_labels == [0, 1, 1, 0] and sources == ["ttm", "lam"]
    np.testing.assert_allclose(read_mass, mass.numpy(), atol=1e-6)
    np.testing.assert_allclose(read_mass.sum(axis=1), 1.0, atol=1e-5)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 2000
    assert not list(png_path.parent.glob(".*"))  # atomic writes leave no temporary files


def test_means_are_split_by_label():
    mass = np.array([[0.2, 0.8], [0.6, 0.4], [0.4, 0.6]])
    means = mean_attention_by_label([1, 0, 1], mass)
    assert list(means) == [0, 1]
    np.testing.assert_allclose(means[0], [0.6, 0.4])
    np.testing.assert_allclose(means[1], [0.3, 0.7])


def test_bad_records_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        plot_attention(tmp_path / "a.png", [0], np.ones((1, 3)), ["ttm", "lam"])
    with pytest.raises(ValueError, match="disagree in length"):
        save_attention(tmp_path, ["a", "b"], [0], np.ones((1, 2)), ["ttm", "lam"])
    bad = tmp_path / "bad.csv"
    bad.write_text("sample_id,label,ttm\nx,notanint,0.5\n")
    with pytest.raises(ValueError, match="bad.csv: row 2"):
        read_attention_csv(bad)
    with pytest.raises(FileNotFoundError):
        read_attention_csv(tmp_path / "none.csv")
