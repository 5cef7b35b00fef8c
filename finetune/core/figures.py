"""PNG figures for the report (DVC renders the same data interactively from dvc.yaml's plots)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def figure(path: str | Path, size: tuple[float, float] = (5.0, 4.0)) -> Iterator[Any]:
    """A matplotlib axis saved to ``path`` on exit, without a version stamp (byte-stable reruns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    try:
        yield ax
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)


def confusion(counts: list[list[int]], names: list[str], path: str | Path) -> None:
    """Counts, and each true class's share in brackets (the normalised matrix) as the colour."""
    matrix = np.asarray(counts)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = 2.5 + 0.6 * len(names)
    with figure(path, (side, side)) as ax:
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test)")
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, f"{count}\n({shares[i, j]:.0%})", ha="center", va="center",
                    color="white" if shares[i, j] > 0.5 else "black")


def learning_curves(history: list[dict[str, float]], path: str | Path) -> None:
    """Train and validation loss per epoch (left axis) and validation accuracy (right axis; macro F1 for
    multi-label data, which has no accuracy per epoch)."""
    epochs = [row["epoch"] for row in history]
    score, score_name = (("eval/accuracy", "accuracy") if any("eval/accuracy" in row for row in history)
                         else ("eval/f1_macro", "macro F1"))
    with figure(path, (6.0, 4.0)) as ax:
        for key, label in (("train/loss", "train loss"), ("eval/loss", "validation loss")):
            ax.plot(epochs, [row.get(key, np.nan) for row in history], marker="o", label=label)
        ax.set(xlabel="epoch", ylabel="loss", title="Learning curves")
        ax.set_xticks(epochs)
        right = ax.twinx()
        right.plot(epochs, [row.get(score, np.nan) for row in history], color="tab:green", marker="s",
                   label=f"validation {score_name}")
        right.set_ylabel(score_name)
        lines = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(lines, [line.get_label() for line in lines], loc="center right")


def curves(series: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, xlabel: str, ylabel: str,
           title: str, diagonal: bool = False) -> None:
    """Several named (x, y) curves on one axis: ROC, precision-recall, risk-coverage."""
    with figure(path) as ax:
        for name, (x, y) in series.items():
            ax.plot(x, y, label=name)
        if diagonal:
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(loc="lower right" if diagonal else "lower left")


def reliability(bins_before: list[dict], bins_after: list[dict], path: str | Path) -> None:
    """Accuracy against mean confidence per bin, before and after temperature scaling."""
    with figure(path) as ax:
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
        for bins, label in ((bins_before, "before scaling"), (bins_after, "after scaling")):
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label=label)
        ax.set(xlabel="confidence", ylabel="accuracy", title="Reliability diagram (test)", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left")


def confidence_histogram(confidence: np.ndarray, correct: np.ndarray, threshold: float, path: str | Path) -> None:
    """How confident the model is on right and on wrong answers, with the UNCERTAIN threshold."""
    edges = np.linspace(confidence.min(initial=0.0) if len(confidence) else 0.0, 1.0, 21)
    with figure(path) as ax:
        ax.hist([confidence[correct], confidence[~correct]], bins=edges, stacked=True, label=["right", "wrong"])
        ax.axvline(threshold, color="black", linestyle="--", label=f"UNCERTAIN below {threshold}")
        ax.set(xlabel="confidence (calibrated)", ylabel="test texts", title="Confidence histogram")
        ax.legend(loc="upper left")


def label_scores(scores: dict[str, float], path: str | Path, what: str = "F1") -> None:
    """One horizontal bar per class or label, worst at the bottom: where the model is weak."""
    ordered = sorted(scores.items(), key=lambda item: item[1])
    with figure(path, (6.0, 1.5 + 0.25 * len(ordered))) as ax:
        ax.barh([name for name, _ in ordered], [value for _, value in ordered], color="tab:blue")
        ax.set(xlabel=f"{what} (test)", xlim=(0, 1), title=f"{what} per label (test)")
