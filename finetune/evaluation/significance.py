"""Is the fine-tuned model better than a baseline on this test split, or only luckier? A paired bootstrap.

Both models answered the same test texts. Resampling the texts with replacement (the same
resample for both) and recomputing each score gives the spread of the difference that
another test set of the same size could show: its 95% percentile interval, and a two-sided
p-value (twice the smaller share of resampled differences on either side of zero). Answers
are 0/1 matrices, one row per text and one column per class (one-hot) or label, so one
computation serves both tasks: accuracy counts whole rows right (subset accuracy for label
sets), macro F1 averages the columns' F1 (0 where a column has neither truth nor answer, as
scikit-learn's ``zero_division=0``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from finetune.core.contract import answer_matrix

RESAMPLES = 1000
CHUNK = 100  # resamples weighed at a time: CHUNK x texts counts in memory
SCORES = ("accuracy", "f1_macro")


def weighted_scores(weights: np.ndarray, truth: np.ndarray, answers: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy and macro F1 of ``answers`` for each row of ``weights`` (how often each text was drawn)."""
    right = (truth == answers).all(axis=1).astype(np.float64)
    tp = weights @ (truth & answers).astype(np.float64)
    wrong = weights @ (truth ^ answers).astype(np.float64)  # false positives plus false negatives
    denominator = 2 * tp + wrong
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return {"accuracy": weights @ right / weights.sum(axis=1), "f1_macro": f1.mean(axis=1)}


def paired_bootstrap(truth: np.ndarray, ours: np.ndarray, theirs: np.ndarray, resamples: int = RESAMPLES,
                     seed: int = 0) -> dict[str, dict[str, float]]:
    """For accuracy and macro F1: our score minus theirs on the test texts, its 95% interval over ``resamples``
    paired resamples of the texts, and the p-value of "no difference"."""
    truth, ours, theirs = (np.asarray(m, dtype=bool) for m in (truth, ours, theirs))
    n = len(truth)
    if n == 0:
        raise ValueError("a paired bootstrap needs at least one test text")
    everything = np.ones((1, n))
    mine, other = weighted_scores(everything, truth, ours), weighted_scores(everything, truth, theirs)
    observed = {key: float(mine[key][0] - other[key][0]) for key in SCORES}
    rng = np.random.default_rng(seed)
    differences: dict[str, list[np.ndarray]] = {key: [] for key in SCORES}
    for start in range(0, resamples, CHUNK):
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=min(CHUNK, resamples - start)).astype(np.float64)
        a, b = weighted_scores(weights, truth, ours), weighted_scores(weights, truth, theirs)
        for key in SCORES:
            differences[key].append(a[key] - b[key])
    result = {}
    for key in SCORES:
        spread = np.concatenate(differences[key])
        low, high = np.percentile(spread, [2.5, 97.5])
        p_value = min(1.0, 2 * min(float((spread <= 0).mean()), float((spread >= 0).mean())))
        result[key] = {"difference": round(observed[key], 6), "ci_low": round(float(low), 6),
                       "ci_high": round(float(high), 6), "p_value": round(p_value, 6)}
    return result


def compare_with_baselines(truth: np.ndarray, ours: np.ndarray, baselines: dict[str, np.ndarray],
                           accuracy_name: str = "accuracy", resamples: int = RESAMPLES,
                           seed: int = 0) -> dict[str, Any]:
    """paired_bootstrap against each baseline; ``accuracy_name`` names the accuracy (subset_accuracy for label
    sets)."""
    return {"resamples": resamples, **{
        name: {(accuracy_name if key == "accuracy" else key): figures
               for key, figures in paired_bootstrap(truth, ours, answers, resamples, seed).items()}
        for name, answers in baselines.items()}}


def compare_predictions(ours: pd.DataFrame, theirs: pd.DataFrame, names: list[str], multi_label: bool,
                        resamples: int = RESAMPLES) -> dict[str, Any]:
    """compare_with_baselines from the tables the stages write: the fine-tuned model's predictions (row, label,
    predicted) and the baselines' (baseline, row, label, predicted), answers as class names or label sets."""
    def matrix(cells: pd.Series) -> np.ndarray:
        return answer_matrix(cells.tolist(), names, multi_label)

    baselines = {name: matrix(table.sort_values("row")["predicted"])
                 for name, table in theirs.groupby("baseline", sort=False)}
    return compare_with_baselines(matrix(ours["label"]), matrix(ours["predicted"]), baselines,
                                  "subset_accuracy" if multi_label else "accuracy", resamples)
