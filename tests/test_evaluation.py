"""Test metrics, the confusion matrix, its plot and the error analysis, on inline predictions."""

import numpy as np
import pytest

from finetune.error_analysis import error_summary, wrong_predictions
from finetune.evaluation import classification_metrics, plot_confusion, predictions_table, write_table

NAMES = ["negative", "positive"]
LABELS = np.array([0, 0, 1, 1, 1])
PROBS = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3], [0.05, 0.95]])


def test_binary_metrics_are_those_of_the_second_label():
    metrics = classification_metrics(LABELS, PROBS, NAMES, threshold=0.8)
    # predictions 0 1 1 0 1: TP=2, FP=1, FN=1, TN=1
    assert metrics["accuracy"] == 0.6
    assert metrics["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["recall"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["positive_label"] == "positive"
    assert metrics["confusion_matrix"] == {"labels": NAMES, "counts": [[1, 1], [1, 2]]}
    assert metrics["per_class"]["negative"]["support"] == 2
    assert metrics["f1_macro"] == pytest.approx((0.5 + 2 / 3) / 2, abs=1e-6)
    # 3 of 5 reach 0.8 (0.9, 0.8, 0.95); all three are right
    assert metrics["uncertain"] == {"threshold": 0.8, "coverage": 0.6, "accuracy_answered": 1.0}


def test_multiclass_metrics_use_macro_averages():
    labels = np.array([0, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 2]] * 0.9 + 0.1 / 3
    metrics = classification_metrics(labels, probs, ["a", "b", "c"], threshold=0.5)
    assert metrics["accuracy"] == 0.75 and metrics["positive_label"] is None
    assert metrics["recall"] == pytest.approx((1 + 1 + 0.5) / 3, abs=1e-6)
    assert metrics["f1"] == metrics["f1_macro"]
    assert metrics["confusion_matrix"]["counts"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_predictions_and_errors_most_confident_first(tmp_path):
    table = predictions_table(LABELS, PROBS, NAMES)
    assert table.columns.tolist() == ["row", "label", "predicted", "confidence", "prob_negative", "prob_positive"]
    texts = ["t0", "t1", "t2", "t3", "t4"]
    errors = wrong_predictions(table, texts)
    assert errors["text"].tolist() == ["t3", "t1"]  # 0.7 before 0.6
    summary = error_summary(table, errors)
    assert summary["n_errors"] == 2 and summary["errors_per_true_label"] == {"negative": 1, "positive": 1}
    assert summary["confusions"] == {"negative -> positive": 1, "positive -> negative": 1}
    write_table(table, tmp_path / "p.csv")
    first = (tmp_path / "p.csv").read_bytes()
    write_table(table, tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_bytes() == first and b"0.950000" in first


def test_confusion_png_is_written_and_stable(tmp_path):
    plot_confusion([[5, 1], [2, 7]], NAMES, tmp_path / "a.png")
    plot_confusion([[5, 1], [2, 7]], NAMES, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
