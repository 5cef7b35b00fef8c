"""Test-set evaluation: metrics, calibration, selective prediction and the data behind every plot.

The test split is only ever scored here; the temperature is fitted on the
validation split, so nothing is selected on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import log_softmax
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    classification_report,
    confusion_matrix,
    matthews_corrcoef,
    precision_recall_curve,
    precision_recall_fscore_support,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from finetune.core import figures
from finetune.core.contract import (
    chosen_probability,
    decide,
    label_set_text,
    probability_column,
    single_label_decisions,
    uncertain_labels,
)
from finetune.core.files import write_table
from finetune.data.documents import document_starts
from finetune.evaluation.calibration import (
    brier_score,
    chosen_temperature,
    expected_calibration_error,
    fit_temperature,
    probabilities,
    reliability_bins,
    risk_coverage,
    selective,
)
from finetune.evaluation.multilabel import (
    fit_sigmoid_temperature,
    label_decision_ece,
    label_decisions,
    multi_label_metrics,
    set_scores,
    sigmoid_probabilities,
    tune_decision_threshold,
    tune_thresholds,
)

DIGITS = 6  # metrics are rounded so that reruns and diffs stay readable
CURVE_POINTS = 200  # ROC and PR curves are thinned to about this many points: small plot files


def _round(value: float) -> float:
    return round(float(value), DIGITS)


def rounded(data: Any) -> Any:
    """Every float in a nested structure rounded to DIGITS."""
    if isinstance(data, dict):
        return {k: rounded(v) for k, v in data.items()}
    if isinstance(data, list):
        return [rounded(v) for v in data]
    return _round(data) if isinstance(data, float) else data


def classification_metrics(labels: np.ndarray, probs: np.ndarray, names: list[str],
                           decision_threshold: float | None = None) -> dict[str, Any]:
    """Of the classes answered (single_label_decisions: the most probable, or by ``decision_threshold``):
    accuracy, precision, recall and F1 (of the second label for two classes, macro otherwise),
    macro F1, ROC AUC and average precision, a per-class report and the confusion matrix; for imbalanced classes
    also balanced accuracy (the mean of the per-class recalls), the Matthews correlation and each class's
    average precision (area under its one-vs-rest precision-recall curve; absent when the class is)."""
    preds = single_label_decisions(probs, decision_threshold)
    ids = list(range(len(names)))
    binary = len(names) == 2
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, labels=ids, average="binary" if binary else "macro", pos_label=1, zero_division=0)
    report = classification_report(labels, preds, labels=ids, target_names=names, output_dict=True, zero_division=0)
    counts = confusion_matrix(labels, preds, labels=ids)
    present = len(np.unique(labels)) == len(names)  # AUC needs every class in the test split
    if binary:
        auc = roc_auc_score(labels, probs[:, 1]) if present else float("nan")
        ap = average_precision_score(labels, probs[:, 1]) if present else float("nan")
    else:
        auc = roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=ids) if present else float("nan")
        ap = average_precision_score(np.eye(len(names))[labels], probs, average="macro") if present else float("nan")
    return {
        "accuracy": _round(accuracy_score(labels, preds)),
        "precision": _round(precision),
        "recall": _round(recall),
        "f1": _round(f1),
        "f1_macro": _round(report["macro avg"]["f1-score"]),
        "precision_macro": _round(report["macro avg"]["precision"]),
        "recall_macro": _round(report["macro avg"]["recall"]),
        "roc_auc": _round(auc),
        "average_precision": _round(ap),
        "balanced_accuracy": _round(recall_score(labels, preds, labels=ids, average="macro", zero_division=0)),
        "mcc": _round(matthews_corrcoef(labels, preds)),
        "positive_label": names[1] if binary else None,
        "n_test": len(labels),
        "per_class": {name: {"precision": _round(report[name]["precision"]), "recall": _round(report[name]["recall"]),
                             "f1": _round(report[name]["f1-score"]), "support": int(report[name]["support"]),
                             **class_average_precision(labels, probs, k)}
                      for k, name in enumerate(names)},
        "confusion_matrix": {"labels": names, "counts": counts.tolist(),
                             "normalized": rounded((counts / np.maximum(counts.sum(1, keepdims=True), 1)).tolist())},
    }


def class_average_precision(labels: np.ndarray, probs: np.ndarray, k: int) -> dict[str, float]:
    """Class k's one-vs-rest average precision (PR AUC), or nothing when k is absent from ``labels``."""
    truth = np.asarray(labels) == k
    return {"average_precision": _round(average_precision_score(truth, probs[:, k]))} if truth.any() else {}


# The figures a reader compares across runs and branches (`dvc metrics show`, `dvc metrics diff`, `dvc exp show`):
# the declared metrics file holds these; per-class, confusion and calibration detail stay in evaluation.json.
HEADLINE = ("accuracy", "f1_macro", "precision", "recall", "f1", "roc_auc", "average_precision", "balanced_accuracy",
            "mcc", "n_test")


MULTI_LABEL_HEADLINE = ("f1_macro", "f1_micro", "f1_samples", "subset_accuracy", "hamming_loss",
                        "label_ranking_average_precision", "roc_auc_macro", "n_test")


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline test figures of an evaluation, flat: a few columns in `dvc metrics show`."""
    if "per_label" in metrics:  # multi-label
        return {**{key: metrics[key] for key in MULTI_LABEL_HEADLINE},
                "f1_macro_at_0.5": metrics["at_0.5"]["f1_macro"], "ece": metrics["calibration"]["ece_after"],
                "answered": metrics["uncertain"]["coverage"],
                "subset_accuracy_answered": metrics["uncertain"]["subset_accuracy_answered"]}
    uncertain = metrics["uncertain"]
    return {**{key: metrics[key] for key in HEADLINE}, "ece": metrics["calibration"]["ece_after"],
            "answered": uncertain["coverage"], "accuracy_answered": uncertain["accuracy_answered"]}


@dataclass
class Evaluation:
    """Everything the evaluate stage writes."""

    metrics: dict[str, Any]
    probs: np.ndarray  # calibrated test probabilities
    raw_probs: np.ndarray  # before temperature scaling
    thresholds: np.ndarray | None = None  # multi-label: each label's decision threshold
    decision_threshold: float | None = None  # single-label, two classes, tuned: class 1 from this probability on


ARGMAX_FIGURES = ("accuracy", "precision", "recall", "f1", "f1_macro", "balanced_accuracy", "mcc")


def evaluate(test_logits: np.ndarray, test_labels: np.ndarray, val_logits: np.ndarray, val_labels: np.ndarray,
             names: list[str], threshold: float, tune_decision: bool = False,
             calibration_min_texts: int = 0) -> Evaluation:
    """Metrics on the test split, with the temperature (and, with ``tune_decision``, the threshold on the positive
    class's probability) fitted on the validation split. A tuned run also reports the argmax figures beside."""
    temperature, how = chosen_temperature(lambda: fit_temperature(val_logits, val_labels), len(val_labels),
                                          calibration_min_texts)
    raw, calibrated = probabilities(test_logits), probabilities(test_logits, temperature)
    cut = tune_decision_threshold(probabilities(val_logits, temperature), val_labels) if tune_decision else None
    metrics = classification_metrics(test_labels, calibrated, names, cut)
    if cut is not None:  # only then: an argmax run's evaluation.json stays as it was
        at_argmax = classification_metrics(test_labels, calibrated, names)
        metrics["decision"] = {"rule": "tuned", "positive_label": names[1], "threshold": cut,
                               "argmax": {key: at_argmax[key] for key in ARGMAX_FIGURES}}
    metrics["calibration"] = rounded({
        "temperature": temperature, **how,
        "ece_before": expected_calibration_error(raw, test_labels),
        "ece_after": expected_calibration_error(calibrated, test_labels),
        "brier_before": brier_score(raw, test_labels),
        "brier_after": brier_score(calibrated, test_labels),
    })
    metrics["uncertain"] = rounded(selective(calibrated, test_labels, threshold, cut))
    return Evaluation(metrics, calibrated, raw, decision_threshold=cut)


def evaluate_multi_label(test_logits: np.ndarray, test_targets: np.ndarray, val_logits: np.ndarray,
                         val_targets: np.ndarray, names: list[str], band: float,
                         calibration_min_texts: int = 0) -> Evaluation:
    """Label-set metrics on the test split; the temperature and each label's threshold are fitted on validation.
    The same model's scores at one 0.5 threshold for every label stand beside them, and the UNCERTAIN rule's
    share of texts answered (no label within ``band`` of its threshold, in log-odds) with their subset accuracy."""
    temperature, how = chosen_temperature(lambda: fit_sigmoid_temperature(val_logits, val_targets),
                                          len(val_targets), calibration_min_texts)
    raw, calibrated = sigmoid_probabilities(test_logits), sigmoid_probabilities(test_logits, temperature)
    thresholds = tune_thresholds(sigmoid_probabilities(val_logits, temperature), val_targets)
    metrics = multi_label_metrics(test_targets, calibrated, thresholds, names)
    at_half = set_scores(test_targets, decide(calibrated, 0.5))
    metrics["at_0.5"] = {key: at_half[key] for key in ("f1_macro", "f1_micro", "f1_samples", "subset_accuracy")}
    metrics["calibration"] = {"temperature": temperature, **how, "ece_before": label_decision_ece(raw, test_targets),
                              "ece_after": label_decision_ece(calibrated, test_targets)}
    answered = ~uncertain_labels(calibrated, thresholds, band).any(axis=1)
    right = (decide(calibrated, thresholds) == test_targets).all(axis=1)
    metrics["uncertain"] = {"band": band, "coverage": float(answered.mean()) if len(answered) else 0.0,
                            "subset_accuracy_answered": float(right[answered].mean()) if answered.any() else None}
    return Evaluation(rounded(metrics), calibrated, raw, thresholds)


def multi_label_predictions_table(targets: np.ndarray, probs: np.ndarray, thresholds: np.ndarray,
                                  names: list[str]) -> pd.DataFrame:
    """One row per test text: its true and predicted label sets and every label's probability."""
    preds = decide(probs, thresholds)
    table = pd.DataFrame({"row": np.arange(len(targets)),
                          "label": [label_set_text(row, names) for row in targets],
                          "predicted": [label_set_text(row, names) for row in preds]})
    for j, name in enumerate(names):
        table[probability_column(name)] = probs[:, j]
    return table


def predictions_table(labels: np.ndarray, probs: np.ndarray, names: list[str],
                      decision_threshold: float | None = None) -> pd.DataFrame:
    """One row per test example: true and predicted label, confidence and every class probability."""
    preds = single_label_decisions(probs, decision_threshold)
    table = pd.DataFrame({
        "row": np.arange(len(labels)),
        "label": [names[i] for i in labels],
        "predicted": [names[i] for i in preds],
        "confidence": chosen_probability(probs, preds),
    })
    for i, name in enumerate(names):
        table[probability_column(name)] = probs[:, i]
    return table


def window_columns(window_logits: np.ndarray, documents: np.ndarray, answered: np.ndarray,
                   multi_label: bool) -> dict[str, np.ndarray]:
    """Windows: how many windows each document was read in (``windows``) and which one, counted from 1, agrees
    most with the document's answer (``window``): the one whose own logits give the answered class the highest
    log-probability, or, for label sets, the highest sum of log-odds signed by each label's decision.
    ``answered``: the documents' answers as a boolean matrix (one column per class or label)."""
    window_logits = np.asarray(window_logits, dtype=np.float64)
    per_row = answered[documents]
    if multi_label:
        agreement = np.where(per_row, window_logits, -window_logits).sum(axis=1)
    else:
        agreement = np.where(per_row, log_softmax(window_logits, axis=1), 0.0).sum(axis=1)
    starts = document_starts(documents)
    counts = np.diff(np.r_[starts, len(documents)])
    best = [int(np.argmax(agreement[start:start + count])) + 1 for start, count in zip(starts, counts, strict=True)]
    return {"windows": counts, "window": np.asarray(best)}


def thin(frame: pd.DataFrame, points: int = CURVE_POINTS) -> pd.DataFrame:
    """About ``points`` evenly spaced rows, always keeping the first and the last."""
    if len(frame) <= points:
        return frame
    keep = np.unique(np.linspace(0, len(frame) - 1, points).round().astype(int))
    return frame.iloc[keep]


def curve_classes(names: list[str]) -> list[int]:
    """ROC and PR curves: the positive class for two classes, one-vs-rest for each class otherwise."""
    return [1] if len(names) == 2 else list(range(len(names)))


def write_plots(result: Evaluation, labels: np.ndarray, names: list[str], threshold: float, data_dir: str | Path,
                figure_dir: str | Path) -> None:
    """Data files for dvc.yaml's plots (small: aggregated or thinned) and the same plots as PNG."""
    data_dir, figure_dir = Path(data_dir), Path(figure_dir)
    probs = result.probs
    counts = result.metrics["confusion_matrix"]["counts"]
    write_table(pd.DataFrame([{"actual": names[i], "predicted": names[j], "count": counts[i][j]}
                              for i in range(len(names)) for j in range(len(names))]), data_dir / "confusion.csv")
    figures.confusion(counts, names, figure_dir / "confusion.png")

    roc, pr = {}, {}
    for k in curve_classes(names):
        truth = (labels == k).astype(int)
        if truth.min() == truth.max():
            continue  # a class absent from the test split has no curve
        fpr, tpr, _ = roc_curve(truth, probs[:, k])
        precision, recall, _ = precision_recall_curve(truth, probs[:, k])
        write_table(thin(pd.DataFrame({"fpr": fpr, "tpr": tpr})), data_dir / "roc" / f"{names[k]}.csv")
        write_table(thin(pd.DataFrame({"recall": recall[::-1], "precision": precision[::-1]})),
                    data_dir / "precision_recall" / f"{names[k]}.csv")
        roc[names[k]], pr[names[k]] = (fpr, tpr), (recall, precision)
    figures.curves(roc, figure_dir / "roc.png", "false positive rate", "true positive rate", "ROC (test)", True)
    figures.curves(pr, figure_dir / "precision_recall.png", "recall", "precision", "Precision-recall (test)")

    before, after = reliability_bins(result.raw_probs, labels), reliability_bins(probs, labels)
    for name, bins in (("before", before), ("after", after)):  # before and after temperature scaling
        write_table(pd.DataFrame(bins)[["confidence", "accuracy", "count"]], data_dir / f"reliability_{name}.csv")
    figures.reliability(before, after, figure_dir / "reliability.png")

    preds = single_label_decisions(probs, result.decision_threshold)
    confidence, correct = chosen_probability(probs, preds), preds == labels
    # the answered class's probability is at least 1/classes, unless a decision threshold answers a less likely one
    edges = np.linspace(1 / len(names) if result.decision_threshold is None else 0.0, 1.0, 21)
    right, _ = np.histogram(confidence[correct], bins=edges)
    wrong, _ = np.histogram(confidence[~correct], bins=edges)
    write_table(pd.DataFrame({"confidence": (edges[:-1] + edges[1:]) / 2, "right": right, "wrong": wrong}),
                data_dir / "confidence.csv")
    figures.confidence_histogram(confidence, correct, threshold, figure_dir / "confidence.png")

    write_label_f1(result.metrics["per_class"], names, data_dir, figure_dir)
    curve = pd.DataFrame(risk_coverage(probs, labels, decision_threshold=result.decision_threshold))
    write_table(curve, data_dir / "risk_coverage.csv")
    figures.curves({"accuracy of the answered": (curve["coverage"].to_numpy(), curve["accuracy"].to_numpy())},
                   figure_dir / "risk_coverage.png", "coverage (share answered)", "accuracy", "Risk-coverage (test)")


def write_label_f1(per_label: dict[str, dict[str, float]], names: list[str], data_dir: Path, figure_dir: Path) -> None:
    """Each class's (or label's) test F1, as a table for DVC's bar chart and as a PNG."""
    write_table(pd.DataFrame({"label": names, "f1": [per_label[name]["f1"] for name in names]}),
                data_dir / "label_f1.csv")
    figures.label_scores({name: per_label[name]["f1"] for name in names}, figure_dir / "label_f1.png")


PR_CURVE_LABELS = 3  # multi-label: precision-recall curves of this many best and worst labels


def write_multi_label_plots(result: Evaluation, targets: np.ndarray, names: list[str], data_dir: str | Path,
                            figure_dir: str | Path) -> None:
    """Per-label F1, precision-recall curves of the best and worst labels (by average precision) and the
    reliability of the label decisions before and after temperature scaling."""
    data_dir, figure_dir = Path(data_dir), Path(figure_dir)
    per_label = result.metrics["per_label"]
    write_label_f1(per_label, names, data_dir, figure_dir)
    ranked = sorted((name for name in names if "average_precision" in per_label[name]),
                    key=lambda name: -per_label[name]["average_precision"])
    chosen = ranked if len(ranked) <= 2 * PR_CURVE_LABELS else ranked[:PR_CURVE_LABELS] + ranked[-PR_CURVE_LABELS:]
    pr = {}
    for name in chosen:
        j = names.index(name)
        precision, recall, _ = precision_recall_curve(targets[:, j], result.probs[:, j])
        write_table(thin(pd.DataFrame({"recall": recall[::-1], "precision": precision[::-1]})),
                    data_dir / "precision_recall" / f"{name}.csv")
        pr[name] = (recall, precision)
    figures.curves(pr, figure_dir / "precision_recall.png", "recall", "precision",
                   "Precision-recall, best and worst labels (test)")

    before, after = (reliability_bins(*label_decisions(probs, targets)) for probs in (result.raw_probs, result.probs))
    for name, bins in (("before", before), ("after", after)):
        write_table(pd.DataFrame(bins)[["confidence", "accuracy", "count"]], data_dir / f"reliability_{name}.csv")
    figures.reliability(before, after, figure_dir / "reliability.png")
