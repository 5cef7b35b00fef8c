"""Test-set metrics, the confusion matrix and its plots.

The test split is only ever scored here; nothing is selected on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support

DIGITS = 6  # metrics are rounded so that reruns and diffs stay readable


def _round(value: float) -> float:
    return round(float(value), DIGITS)


def classification_metrics(labels: np.ndarray, probs: np.ndarray, names: list[str],
                           threshold: float) -> dict[str, Any]:
    """Accuracy, precision, recall and F1 (of the second label for two classes, macro otherwise),
    macro F1, a per-class report, the confusion matrix and the UNCERTAIN trade-off at ``threshold``."""
    preds = probs.argmax(axis=1)
    ids = list(range(len(names)))
    binary = len(names) == 2
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, labels=ids, average="binary" if binary else "macro", pos_label=1, zero_division=0)
    report = classification_report(labels, preds, labels=ids, target_names=names, output_dict=True, zero_division=0)
    confident = probs.max(axis=1) >= threshold
    return {
        "accuracy": _round(accuracy_score(labels, preds)),
        "precision": _round(precision),
        "recall": _round(recall),
        "f1": _round(f1),
        "f1_macro": _round(report["macro avg"]["f1-score"]),
        "precision_macro": _round(report["macro avg"]["precision"]),
        "recall_macro": _round(report["macro avg"]["recall"]),
        "positive_label": names[1] if binary else None,
        "n_test": len(labels),
        "per_class": {name: {"precision": _round(report[name]["precision"]), "recall": _round(report[name]["recall"]),
                             "f1": _round(report[name]["f1-score"]), "support": int(report[name]["support"])}
                      for name in names},
        "confusion_matrix": {"labels": names,
                             "counts": confusion_matrix(labels, preds, labels=ids).tolist()},
        "uncertain": {
            "threshold": threshold,
            "coverage": _round(confident.mean()) if len(labels) else 0.0,
            "accuracy_answered": _round((preds[confident] == labels[confident]).mean()) if confident.any() else 0.0,
        },
    }


def predictions_table(labels: np.ndarray, probs: np.ndarray, names: list[str]) -> pd.DataFrame:
    """One row per test example: true and predicted label, confidence and every class probability."""
    preds = probs.argmax(axis=1)
    table = pd.DataFrame({
        "row": np.arange(len(labels)),
        "label": [names[i] for i in labels],
        "predicted": [names[i] for i in preds],
        "confidence": probs.max(axis=1),
    })
    for i, name in enumerate(names):
        table[f"prob_{name}"] = probs[:, i]
    return table


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    """CSV with a fixed float format, so reruns are byte-identical."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format="%.6f", lineterminator="\n")


def plot_confusion(counts: list[list[int]], names: list[str], path: str | Path) -> None:
    """A heatmap of the confusion matrix: counts, and each row's share in brackets."""
    path = Path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(counts)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 2.5 + 0.6 * len(names)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, f"{count}\n({shares[i, j]:.0%})", ha="center", va="center",
                color="white" if shares[i, j] > 0.5 else "black")
    ax.set_title("Confusion matrix (test)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: byte-stable reruns
    plt.close(fig)
