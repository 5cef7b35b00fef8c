"""Multi-label decisions and scores: a sigmoid per label, a threshold per label, metrics of label sets.

Everything that is chosen (the temperature, each label's threshold) is fitted on the
validation split; the test split is only scored. The decision rule: a text has label j
when its calibrated probability of j is at least threshold j.

Thresholds are tuned per label to maximise that label's F1 on validation, over a grid of
0.01 to 0.99 in steps of 0.01; among equally good thresholds the one nearest 0.5 wins,
and a label without positives in validation keeps 0.5.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_expit
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    label_ranking_average_precision_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from finetune.core.contract import decide, sigmoid
from finetune.evaluation.calibration import bounded_minimum, expected_calibration_error

THRESHOLD_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)
DEFAULT_THRESHOLD = 0.5


def sigmoid_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return sigmoid(np.asarray(logits, dtype=np.float64) / temperature)


def fit_sigmoid_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The T (within the calibration bounds) that minimises the binary cross-entropy of ``targets`` under
    sigmoid(logits / T), all labels together (one temperature, like the softmax one)."""
    logits, targets = np.asarray(logits, dtype=np.float64), np.asarray(targets, dtype=np.float64)

    def bce(log_t: float) -> float:
        scaled = logits / np.exp(log_t)
        return -(targets * log_expit(scaled) + (1 - targets) * log_expit(-scaled)).mean()

    return bounded_minimum(bce)


def tune_thresholds(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """One threshold per label, maximising that label's F1 on these (validation) rows (the rule above)."""
    thresholds = np.full(probs.shape[1], DEFAULT_THRESHOLD)
    for j in range(probs.shape[1]):
        truth = targets[:, j].astype(bool)
        if not truth.any():
            continue
        decided = probs[:, j][:, None] >= THRESHOLD_GRID[None, :]  # rows x grid
        tp = (decided & truth[:, None]).sum(axis=0)
        f1 = 2 * tp / (decided.sum(axis=0) + truth.sum())
        best = np.flatnonzero(np.isclose(f1, f1.max()))
        thresholds[j] = THRESHOLD_GRID[best[np.argmin(np.abs(THRESHOLD_GRID[best] - DEFAULT_THRESHOLD))]]
    return thresholds


def tune_decision_threshold(probs: np.ndarray, labels: np.ndarray) -> float:
    """Single-label, two classes: the threshold on class 1's probability that maximises class 1's F1 on these
    (validation) rows, by the rule of tune_thresholds applied to the positive class."""
    if probs.shape[1] != 2:
        raise ValueError(f"a tuned decision threshold needs two classes, got {probs.shape[1]}")
    return float(tune_thresholds(probs[:, [1]], (np.asarray(labels) == 1).astype(int)[:, None])[0])


def label_decisions(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (text, label) decision as a two-class row (no, yes) with its 0/1 answer: the form the calibration
    figures (ECE, reliability bins) take."""
    flat = probs.reshape(-1)
    return np.column_stack([1 - flat, flat]), targets.reshape(-1).astype(int)


def label_decision_ece(probs: np.ndarray, targets: np.ndarray) -> float:
    """ECE over every (text, label) decision: each is a yes/no question whose probability should match how often
    the answer is yes."""
    return expected_calibration_error(*label_decisions(probs, targets))


def set_scores(targets: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    """F1 four ways (micro: every decision counts alike; macro: every label alike; weighted: labels by support;
    samples: every text alike) and subset accuracy (the whole set right) of decided label sets."""
    f1 = {f"f1_{average}": float(f1_score(targets, preds, average=average, zero_division=0))
          for average in ("micro", "macro", "weighted", "samples")}
    return {**f1, "subset_accuracy": float(accuracy_score(targets, preds))}


def ranking_scores(targets: np.ndarray, probs: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Per-label ROC AUC and average precision, and their macro means over the labels that have both positives
    and negatives among these rows; the others are named, not scored (a capped sample can lack a rare label)."""
    per_label, skipped = {}, []
    for j, name in enumerate(names):
        truth = targets[:, j]
        if truth.min() == truth.max():
            skipped.append(name)
            continue
        per_label[name] = {"roc_auc": float(roc_auc_score(truth, probs[:, j])),
                           "average_precision": float(average_precision_score(truth, probs[:, j]))}
    macro = {key: float(np.mean([row[key] for row in per_label.values()])) if per_label else float("nan")
             for key in ("roc_auc", "average_precision")}
    return {"per_label": per_label, "roc_auc_macro": macro["roc_auc"],
            "average_precision_macro": macro["average_precision"], "labels_without_both_classes": skipped}


def multi_label_metrics(targets: np.ndarray, probs: np.ndarray, thresholds: np.ndarray,
                        names: list[str]) -> dict[str, Any]:
    """Scores of the label sets decided at ``thresholds``: :func:`set_scores`, Hamming loss (share of wrong
    decisions), label-ranking average precision, ROC AUC and average precision per label, and precision /
    recall / F1 / support / threshold per label."""
    preds = decide(probs, thresholds)
    precision, recall, label_f1, support = precision_recall_fscore_support(targets, preds, average=None,
                                                                           zero_division=0)
    micro_p, micro_r, _, _ = precision_recall_fscore_support(targets, preds, average="micro", zero_division=0)
    ranking = ranking_scores(targets, probs, names)
    per_label = {name: {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(label_f1[j]),
                        "support": int(support[j]), "threshold": float(thresholds[j]),
                        **ranking["per_label"].get(name, {})} for j, name in enumerate(names)}
    return {
        **set_scores(targets, preds),
        "precision_micro": float(micro_p), "recall_micro": float(micro_r),
        "hamming_loss": float(hamming_loss(targets, preds)),
        "label_ranking_average_precision": float(label_ranking_average_precision_score(targets, probs)),
        "roc_auc_macro": ranking["roc_auc_macro"],
        "average_precision_macro": ranking["average_precision_macro"],
        "labels_without_both_classes": ranking["labels_without_both_classes"],
        "n_test": len(targets),
        "per_label": per_label,
    }
