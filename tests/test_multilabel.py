"""Multi-label decisions and scores: thresholds tuned per label, the sigmoid temperature, label-set metrics."""

import numpy as np
import pytest
from scipy.special import expit

from finetune.core.contract import decide
from finetune.evaluation.metrics import evaluate_multi_label, headline, multi_label_predictions_table
from finetune.evaluation.multilabel import (
    fit_sigmoid_temperature,
    label_decision_ece,
    multi_label_metrics,
    tune_thresholds,
)


def test_each_labels_threshold_maximises_its_validation_f1():
    # label 0: positives at 0.3 and 0.35, negatives at 0.1 and 0.2 -> any threshold in (0.2, 0.3] separates them;
    # the one nearest 0.5 is 0.3. label 1: no positives -> 0.5. label 2: positives high, one negative at 0.9.
    probs = np.array([[0.3, 0.2, 0.95], [0.35, 0.1, 0.8], [0.1, 0.3, 0.9], [0.2, 0.4, 0.1]])
    targets = np.array([[1, 0, 1], [1, 0, 1], [0, 0, 0], [0, 0, 0]])
    thresholds = tune_thresholds(probs, targets)
    assert thresholds[0] == pytest.approx(0.3) and thresholds[1] == 0.5
    assert thresholds[2] == pytest.approx(0.5)  # 0.11..0.8 all give F1 0.8; nearest 0.5
    assert decide(probs, thresholds)[:, 0].tolist() == [1, 1, 0, 0]


def test_sigmoid_temperature_recovers_the_one_that_made_the_data():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(20000, 3))
    targets = (rng.random(logits.shape) < expit(logits / 2.0)).astype(float)
    assert fit_sigmoid_temperature(logits, targets) == pytest.approx(2.0, rel=0.05)
    calibrated, overconfident = expit(logits / 2.0), expit(logits)
    assert label_decision_ece(calibrated, targets) < 0.02 < label_decision_ece(overconfident, targets)


def test_label_set_metrics_by_hand():
    targets = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    probs = np.array([[0.9, 0.2, 0.7], [0.4, 0.6, 0.1], [0.8, 0.3, 0.2], [0.1, 0.2, 0.6]])
    metrics = multi_label_metrics(targets, probs, np.array([0.5, 0.5, 0.5]), ["a", "b", "c"])
    # predictions: [1,0,1], [0,1,0], [1,0,0], [0,0,1]: one missed label (row 2, b), no false positive
    assert metrics["subset_accuracy"] == 0.75 and metrics["hamming_loss"] == pytest.approx(1 / 12)
    assert metrics["precision_micro"] == 1.0 and metrics["recall_micro"] == pytest.approx(5 / 6)
    assert metrics["per_label"]["b"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2,
                                                       "threshold": 0.5, "roc_auc": 1.0, "average_precision": 1.0})
    assert metrics["f1_macro"] == pytest.approx((1 + 2 / 3 + 1) / 3) and metrics["n_test"] == 4
    assert metrics["labels_without_both_classes"] == []


def test_a_label_without_positives_in_the_test_rows_is_named_not_scored():
    targets = np.array([[1, 0], [0, 0], [1, 0]])
    probs = np.array([[0.9, 0.1], [0.2, 0.3], [0.7, 0.2]])
    metrics = multi_label_metrics(targets, probs, np.array([0.5, 0.5]), ["common", "rare"])
    assert metrics["labels_without_both_classes"] == ["rare"]
    assert metrics["roc_auc_macro"] == 1.0 and "roc_auc" not in metrics["per_label"]["rare"]


def test_thresholds_and_temperature_come_from_validation_never_from_test():
    rng = np.random.default_rng(1)
    val_logits, test_logits = rng.normal(0, 2, size=(400, 2)), rng.normal(0, 2, size=(400, 2))
    val_targets = (val_logits > 1.0).astype(int)  # validation says: a high bar
    test_targets = (test_logits > -1.0).astype(int)  # test would prefer a low one
    result = evaluate_multi_label(test_logits, test_targets, val_logits, val_targets, ["x", "y"], band=0.5)
    assert (result.thresholds > 0.5).all()
    assert result.metrics["at_0.5"]["f1_macro"] > result.metrics["f1_macro"]  # tuned on validation, not on test
    table = multi_label_predictions_table(test_targets[:3], result.probs[:3], result.thresholds, ["x", "y"])
    assert table.columns.tolist() == ["row", "label", "predicted", "prob_x", "prob_y"]
    assert set(headline(result.metrics)) == {"f1_macro", "f1_micro", "f1_samples", "subset_accuracy", "hamming_loss",
                                             "label_ranking_average_precision", "roc_auc_macro", "n_test",
                                             "f1_macro_at_0.5", "ece", "answered", "subset_accuracy_answered"}
    assert 0 < result.metrics["uncertain"]["coverage"] < 1


def test_error_analysis_lists_missed_and_spurious_labels_worst_labels_first():
    import pandas as pd

    from finetune.evaluation.error_analysis import analyse_label_sets
    from finetune.evaluation.slices import SliceInput

    predictions = pd.DataFrame({"row": [0, 1, 2, 3, 4], "label": ["joy|love", "anger", "joy", "", "anger|joy"],
                                "predicted": ["joy", "anger", "joy|love", "grief", "anger|joy"]})
    texts = ["so happy, love it", "grr", "yay", "ok", "argh yay"]
    names = ["anger", "grief", "joy", "love"]  # column order differs from the worst-first order below
    data = SliceInput(texts, np.array([5, 2, 2, 2, 3]), max_length=128)
    errors, slices, summary = analyse_label_sets(predictions, texts, data, names)
    # love: one missed, one spurious, no hit -> F1 0; grief: one spurious -> 0, fewer mistakes; joy, anger: right
    assert [row["label"] for row in summary["labels_worst_first"]] == ["love", "grief", "anger", "joy"]
    assert {k: summary["labels_worst_first"][0][k] for k in ("support", "missed", "spurious")} == {
        "support": 1, "missed": 1, "spurious": 1}
    assert errors["row"].tolist() == [0, 2, 3]  # love's mistakes first, then grief's
    assert errors[["missed", "spurious", "worst_label"]].values.tolist() == [
        ["love", "", "love"], ["", "love", "love"], ["", "grief", "grief"]]
    assert errors["text"].tolist() == ["so happy, love it", "yay", "ok"]
    assert slices["label=joy"]["size"] == 3 and slices["label=joy"]["accuracy"] == pytest.approx(1 / 3)
    assert slices["label=love"]["worst"][0]["n_wrong"] == 1
    assert summary["n_errors"] == 3 and summary["frequent_swaps"] == {}  # no text both missed and swapped one



def test_the_uncertain_band_is_in_log_odds_so_low_thresholds_do_not_flag_every_text():
    from finetune.core.contract import uncertain_labels

    thresholds = [0.01, 0.5]
    probs = np.array([[0.0005, 0.9], [0.012, 0.9], [0.0005, 0.55]])
    # 0.0005 is far below 0.01 in log-odds (-7.6 against -4.6), though only 0.0095 apart in probability
    assert uncertain_labels(probs, thresholds, 0.5).tolist() == [[False, False], [True, False], [False, True]]
    assert not uncertain_labels(probs, thresholds, 0.0).any()  # a band of 0 answers everything
