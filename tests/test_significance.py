"""The paired bootstrap of the fine-tuned model against a baseline, on inline answers."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from finetune.core.contract import answer_matrix
from finetune.evaluation.significance import compare_predictions, compare_with_baselines, paired_bootstrap


def one_hot(ids, classes=3):
    return np.eye(classes, dtype=int)[ids]


def test_the_observed_differences_are_scikit_learns_scores_of_each_model():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 400)
    ours = np.where(rng.random(400) < 0.8, truth, rng.integers(0, 3, 400))
    theirs = np.where(rng.random(400) < 0.6, truth, rng.integers(0, 3, 400))
    result = paired_bootstrap(one_hot(truth), one_hot(ours), one_hot(theirs), resamples=200)
    assert result["accuracy"]["difference"] == pytest.approx(
        accuracy_score(truth, ours) - accuracy_score(truth, theirs), abs=1e-6)
    assert result["f1_macro"]["difference"] == pytest.approx(
        f1_score(truth, ours, average="macro") - f1_score(truth, theirs, average="macro"), abs=1e-6)
    for figures in result.values():  # a clearly better model: the interval excludes 0, a small p-value
        assert 0 < figures["ci_low"] < figures["difference"] < figures["ci_high"] and figures["p_value"] < 0.01


def test_equal_models_get_no_significance_and_reruns_are_identical():
    truth = np.random.default_rng(1).integers(0, 2, 300)
    a, b = truth.copy(), truth.copy()
    a[:90], b[90:180] = 1 - truth[:90], 1 - truth[90:180]  # equally good, wrong on different texts
    result = paired_bootstrap(one_hot(truth, 2), one_hot(a, 2), one_hot(b, 2), resamples=500)
    assert result["accuracy"]["ci_low"] < 0 < result["accuracy"]["ci_high"] and result["accuracy"]["p_value"] > 0.05
    assert paired_bootstrap(one_hot(truth, 2), one_hot(a, 2), one_hot(b, 2), resamples=500) == result
    same = paired_bootstrap(one_hot(truth, 2), one_hot(a, 2), one_hot(a, 2), resamples=50)
    assert same["accuracy"] == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}


def test_label_sets_use_subset_accuracy_and_macro_f1_over_labels():
    names = ["joy", "anger", "fear"]
    truth = answer_matrix(["joy", "joy|fear", "", "anger"], names, multi_label=True)
    ours = answer_matrix(["joy", "joy|fear", "", "fear"], names, multi_label=True)
    theirs = answer_matrix(["joy", "joy", "anger", "fear"], names, multi_label=True)
    assert truth.tolist() == [[1, 0, 0], [1, 0, 1], [0, 0, 0], [0, 1, 0]]
    result = compare_with_baselines(truth, ours, {"tfidf_logreg": theirs}, "subset_accuracy", resamples=100)
    figures = result["tfidf_logreg"]
    assert result["resamples"] == 100 and set(figures) == {"subset_accuracy", "f1_macro"}
    assert figures["subset_accuracy"]["difference"] == pytest.approx(3 / 4 - 1 / 4)
    assert figures["f1_macro"]["difference"] == pytest.approx(
        f1_score(truth, ours, average="macro", zero_division=0) - f1_score(truth, theirs, average="macro",
                                                                           zero_division=0))
    assert answer_matrix(["b", "a"], ["a", "b"], multi_label=False).tolist() == [[0, 1], [1, 0]]


def test_the_stage_tables_pair_each_baselines_answers_by_row():
    ours = pd.DataFrame({"row": [0, 1, 2], "label": ["a", "b", "b"], "predicted": ["a", "b", "b"]})
    theirs = pd.DataFrame({"baseline": ["tfidf_logreg"] * 3, "row": [2, 0, 1], "label": ["b", "a", "b"],
                           "predicted": ["a", "a", "b"]})  # rows out of order: paired by row, not by position
    result = compare_predictions(ours, theirs, ["a", "b"], multi_label=False, resamples=20)
    assert result["tfidf_logreg"]["accuracy"]["difference"] == pytest.approx(1 / 3)
