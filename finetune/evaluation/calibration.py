"""Calibration: expected calibration error, Brier score, temperature scaling and selective prediction.

Temperature scaling (Guo et al., 2017) divides the logits by one number T fitted
on the validation split; it changes confidences, never the predicted label. The
export folds T into the classifier's last layer, so every runtime that loads the
exported weights gives calibrated confidences. T is fitted only on a validation split
of at least ``evaluate.calibration_min_texts`` texts, and within TEMPERATURE_BOUNDS: on
a handful of texts that the model gets all right, the likelihood keeps rising as T
falls, and an unbounded fit makes every answer certain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from finetune.core.contract import chosen_probability, single_label_decisions, softmax, uncertain_rows
from finetune.training.models import classification_head

log = logging.getLogger(__name__)

N_BINS = 15  # equal-width confidence bins for ECE and the reliability diagram
# A fitted T outside these says more about the validation split (tiny, or all right) than about the model: one
# below 0.5 would make confidences sharper than training did.
TEMPERATURE_BOUNDS = (0.5, 5.0)


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return softmax(np.asarray(logits, dtype=np.float64) / temperature)


def bounded_minimum(loss: Callable[[float], float]) -> float:
    """The T within TEMPERATURE_BOUNDS that minimises ``loss(log T)``."""
    low, high = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in TEMPERATURE_BOUNDS that minimises the negative log-likelihood of ``labels`` under
    softmax(logits / T)."""
    logits = np.asarray(logits, dtype=np.float64)

    def nll(log_t: float) -> float:
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean()

    return bounded_minimum(nll)


def chosen_temperature(fit: Callable[[], float], texts: int, min_texts: int) -> tuple[float, dict[str, Any]]:
    """The calibration temperature and how it was chosen: fitted on the validation split's ``texts``, or 1 (the
    model's own confidences) when they are fewer than ``min_texts``; a fit at a bound of TEMPERATURE_BOUNDS is
    kept, and said. The evaluate stage writes the record beside the temperature, and the report reads it."""
    record: dict[str, Any] = {"validation_texts": texts, "min_texts": min_texts}
    if texts < min_texts:
        log.warning("calibration skipped: %d validation texts, fewer than evaluate.calibration_min_texts (%d); the "
                    "confidences stay the model's own (T = 1). A larger validation split (split.val_size) "
                    "calibrates them", texts, min_texts)
        return 1.0, record | {"temperature_fit": "too_few_texts"}
    temperature = fit()
    bound = next((b for b in TEMPERATURE_BOUNDS if np.isclose(temperature, b, rtol=1e-3)), None)
    if bound is not None:
        log.warning("the fitted temperature is at its bound %s: the validation split cannot pin it down (the model "
                    "may be right on nearly all of it); confidences may be off", bound)
        return float(bound), record | {"temperature_fit": "at_bound"}
    return temperature, record | {"temperature_fit": "fitted"}


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> list[dict[str, float]]:
    """Per confidence bin: its range, mean confidence, accuracy and size (empty bins left out)."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        members = index == b
        if members.any():
            rows.append({"bin_low": float(edges[b]), "bin_high": float(edges[b + 1]),
                         "confidence": float(confidence[members].mean()), "accuracy": float(correct[members].mean()),
                         "count": int(members.sum())})
    return rows


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Size-weighted mean gap between confidence and accuracy over the bins."""
    bins = reliability_bins(probs, labels, n_bins)
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / max(total, 1))


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared distance between the probability vector and the one-hot truth (summed over classes)."""
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def risk_coverage(probs: np.ndarray, labels: np.ndarray, points: int = 100,
                  decision_threshold: float | None = None) -> list[dict[str, float]]:
    """Answer only the most confident texts: accuracy (and risk) of the answered share at each coverage. A text's
    confidence is the probability of the class it answers (single_label_decisions)."""
    chosen = single_label_decisions(probs, decision_threshold)
    confidence = chosen_probability(probs, chosen)
    order = np.argsort(-confidence, kind="stable")
    correct = (chosen == labels)[order]
    hits = np.cumsum(correct)
    n = len(labels)
    rows = []
    for k in sorted({max(1, round(n * i / points)) for i in range(1, points + 1)}):
        accuracy = float(hits[k - 1] / k)
        rows.append({"coverage": k / n, "accuracy": accuracy, "risk": 1 - accuracy,
                     "threshold": float(confidence[order][k - 1])})
    return rows


def selective(probs: np.ndarray, labels: np.ndarray, threshold: float,
              decision_threshold: float | None = None) -> dict[str, float]:
    """At ``threshold``: the share answered (coverage), the share UNCERTAIN and the accuracy on the answered."""
    answered = ~uncertain_rows(probs, threshold, decision_threshold)
    chosen = single_label_decisions(probs, decision_threshold)
    accuracy = float((chosen[answered] == labels[answered]).mean()) if answered.any() else 0.0
    return {"threshold": threshold, "coverage": float(answered.mean()), "uncertain_share": float(1 - answered.mean()),
            "accuracy_answered": accuracy}


def fold_temperature(model: Any, temperature: float) -> None:
    """Divide the weights and bias of the classification head's output layer by T (logits / T, in place)."""
    import torch

    head = classification_head(model)
    with torch.no_grad():
        head.weight.div_(temperature)
        if head.bias is not None:
            head.bias.div_(temperature)
