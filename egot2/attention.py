"""Where the task translator looks: attention mass per source task, saved per sample and plotted.

The paper's interpretability figure shows, for the task of interest, how much of the translator's attention lands
on each task model's tokens, and how that changes with the label (e.g. a TTM translator leans on LAM tokens when
the person is talking to the camera wearer). :class:`~egot2.translation.TaskTranslator` returns that mass
(``return_attention=True``: [B, S], rows sum to 1); this module writes it down and draws it::

    logs/<task>/<output_dir>/attention/val_attention.csv   sample_id,label,<source 1>,<source 2>,...
    logs/<task>/<output_dir>/attention/attention.png       mean mass per source, one bar per label (grouped bars)
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from egot2.media import atomic_path

__all__ = [
    "ATTENTION_DIRNAME",
    "CSV_NAME",
    "PNG_NAME",
    "write_attention_csv",
    "read_attention_csv",
    "mean_attention_by_label",
    "plot_attention",
    "save_attention",
]

ATTENTION_DIRNAME = "attention"
CSV_NAME = "val_attention.csv"
PNG_NAME = "attention.png"

PathLike = Union[str, os.PathLike]


def _as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def _check(sample_ids: Sequence[str], labels: Sequence[int], mass: np.ndarray, sources: Sequence[str]) -> None:
    if mass.ndim != 2 or mass.shape[1] != len(sources):
        raise ValueError(f"attention mass must be [N, {len(sources)}] (one column per source {list(sources)}), "
                         f"got shape {tuple(mass.shape)}")
    if not (len(sample_ids) == len(labels) == mass.shape[0]):
        raise ValueError(f"attention records disagree in length: {len(sample_ids)} ids, {len(labels)} labels, "
                         f"{mass.shape[0]} mass rows")
    if len(set(sources)) != len(sources) or any(name in ("sample_id", "label") for name in sources):
        raise ValueError(f"source names must be unique and not 'sample_id'/'label', got {list(sources)}")


def write_attention_csv(path: PathLike, sample_ids: Sequence[str], labels: Sequence[int] | torch.Tensor,
                        mass: torch.Tensor | np.ndarray, sources: Sequence[str]) -> Path:
    """Write one row per sample: ``sample_id,label,<mass of each source>`` (atomic).

    Args:
        path: CSV file.
        sample_ids: N ids.
        labels: N integer labels.
        mass: [N, S] attention mass per source.
        sources: S source names in column order.
    """
    mass = _as_numpy(mass)
    labels = [int(label) for label in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
    _check(sample_ids, labels, mass, sources)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["sample_id", "label", *sources])
    for sample_id, label, row in zip(sample_ids, labels, mass):
        writer.writerow([sample_id, label, *(f"{value:.6f}" for value in row)])
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())
    return path


def read_attention_csv(path: PathLike) -> tuple[list[str], list[int], np.ndarray, list[str]]:
    """Read a file written by :func:`write_attention_csv`: ``(sample_ids, labels, mass [N, S], sources)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: wrong header or a bad value (names the file and the row).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"attention file not found: {path}")
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0][:2] != ["sample_id", "label"] or len(rows[0]) < 3:
        raise ValueError(f"{path}: header must be 'sample_id,label,<source>,...', got {rows[0] if rows else []}")
    sources = rows[0][2:]
    sample_ids, labels, mass = [], [], []
    for number, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != len(sources) + 2:
                raise ValueError(f"{len(row)} fields, expected {len(sources) + 2}")
            sample_ids.append(row[0])
            labels.append(int(row[1]))
            mass.append([float(value) for value in row[2:]])
        except ValueError as error:
            raise ValueError(f"{path}: row {number}: {error}") from None
    return sample_ids, labels, np.asarray(mass, dtype=np.float64).reshape(-1, len(sources)), sources


def mean_attention_by_label(labels: Sequence[int], mass: np.ndarray) -> dict[int, np.ndarray]:
    """``{label: mean mass per source [S]}`` over the samples of each label (labels in ascending order)."""
    labels = np.asarray(labels)
    return {int(label): mass[labels == label].mean(axis=0) for label in sorted(set(labels.tolist()))}


def plot_attention(path: PathLike, labels: Sequence[int], mass: torch.Tensor | np.ndarray, sources: Sequence[str],
                   title: str = "", label_names: Mapping[int, str] | None = None) -> Path:
    """Grouped bar chart: for each source, the mean attention mass of the samples of each label (PNG, atomic).

    Args:
        path: PNG file.
        labels: N labels.
        mass: [N, S] attention mass.
        sources: S source names (x axis).
        title: figure title.
        label_names: legend text per label (default "label <k>").
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    mass = _as_numpy(mass)
    labels = [int(label) for label in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
    _check([""] * len(labels), labels, mass, sources)
    if not labels:
        raise ValueError("no attention records to plot")
    means = mean_attention_by_label(labels, mass)
    counts = {label: labels.count(label) for label in means}
    names = dict(label_names or {})
    width = 0.8 / len(means)
    figure, axis = plt.subplots(figsize=(1.6 + 1.4 * len(sources), 3.6), dpi=100)
    positions = np.arange(len(sources))
    for offset, (label, values) in enumerate(means.items()):
        bars = axis.bar(positions + (offset - (len(means) - 1) / 2) * width, values, width,
                        label=f"{names.get(label, f'label {label}')} (n={counts[label]})")
        axis.bar_label(bars, fmt="%.2f", fontsize=8)
    axis.set_xticks(positions, [source.upper() for source in sources])
    axis.set_ylabel("mean attention mass")
    axis.set_ylim(0, max(1e-6, float(max(values.max() for values in means.values()))) * 1.25)
    axis.set_title(title or "Attention per source task")
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path


def save_attention(run_dir: PathLike, sample_ids: Sequence[str], labels: Sequence[int] | torch.Tensor,
                   mass: torch.Tensor | np.ndarray, sources: Sequence[str], title: str = "",
                   label_names: Mapping[int, str] | None = None) -> tuple[Path, Path]:
    """Write ``<run_dir>/attention/val_attention.csv`` and ``<run_dir>/attention/attention.png``.

    Returns:
        (csv path, png path).
    """
    folder = Path(run_dir) / ATTENTION_DIRNAME
    csv_path = write_attention_csv(folder / CSV_NAME, sample_ids, labels, mass, sources)
    png_path = plot_attention(folder / PNG_NAME, labels, mass, sources, title=title, label_names=label_names)
    return csv_path, png_path
