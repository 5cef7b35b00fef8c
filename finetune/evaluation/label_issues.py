"""Likely mislabeled training texts, found with confident learning (``cleanlab``).

A cheap model (the TF-IDF + logistic regression baseline) is cross-validated on the train
split, so every text gets probabilities from a model that never saw it (out of fold).
cleanlab flags a text when those probabilities disagree with its given label by more than
the model's own per-class confidence allows (Northcutt et al., 2021), and scores every
text's label quality (self-confidence: the probability of the given label; for label sets
cleanlab's multi-label score). A flag is a text worth a second look, not a proven error:
many flagged texts are hard or ambiguous, so the table is ranked, worst first.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from cleanlab.multilabel_classification.filter import find_label_issues as find_multi_label_issues
from cleanlab.multilabel_classification.rank import get_label_quality_scores as multi_label_quality
from cleanlab.rank import get_label_quality_scores
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from finetune.core.contract import label_set_text
from finetune.core.errors import UserError
from finetune.evaluation.baselines import tfidf_pipeline

COLUMNS = ["row", "text", "label", "suggested", "quality"]


class LabelIssuesError(UserError, ValueError):
    """The train split is too small to cross-validate with the folds asked for; the message says what to change."""


def check_folds(targets: np.ndarray, folds: int, multi_label: bool = False) -> None:
    """Cross-validation needs a class with at least ``folds`` texts (some label, for label sets)."""
    largest = int(targets.sum(axis=0).max()) if multi_label else int(np.bincount(targets).max())
    if largest < folds:
        raise LabelIssuesError(f"label_issues.folds={folds}, but no {'label' if multi_label else 'class'} of the "
                               f"train split has that many texts (at most {largest}): lower label_issues.folds "
                               "(2 at least) or add examples")


def rare_labels(targets: np.ndarray, names: list[str], folds: int, multi_label: bool = False) -> list[str]:
    """Classes (or labels) with texts in train but fewer than ``folds``: some fold models never see them, so
    their texts' flags are less reliable (the stage warns)."""
    counts = targets.sum(axis=0) if multi_label else np.bincount(targets, minlength=len(names))
    return [name for name, count in zip(names, counts, strict=True) if 0 < count < folds]


def out_of_fold_probabilities(texts: list[str], targets: np.ndarray, folds: int, seed: int,
                              multi_label: bool = False) -> np.ndarray:
    """Each text's class (or label) probabilities from the fold model that did not train on it. Folds keep each
    class's share (each label's, by iterative stratification, for label sets). The columns are the classes that
    occur in ``targets``, in order (every label, for label sets)."""
    splitter = (MultilabelStratifiedKFold if multi_label else StratifiedKFold)(
        n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # rare classes: rare_labels says so once, by name
        warnings.filterwarnings("ignore", message=".*(least populated class|Label not|number of classes).*")
        return cross_val_predict(tfidf_pipeline(seed, multi_label), texts, targets, cv=splitter,
                                 method="predict_proba")


def label_issue_table(texts: list[str], targets: np.ndarray, names: list[str], folds: int, seed: int,
                      multi_label: bool = False) -> pd.DataFrame:
    """The flagged texts, worst first: row (in the train split), text, given label, the label the out-of-fold
    model suggests (for label sets: every label it gives at least 0.5) and the label's quality score (0 to 1,
    low: likely wrong)."""
    if multi_label:
        probabilities = out_of_fold_probabilities(texts, targets, folds, seed, multi_label=True)
        given = [list(np.flatnonzero(row)) for row in targets]
        flagged = find_multi_label_issues(labels=given, pred_probs=probabilities, n_jobs=1)
        quality = multi_label_quality(labels=given, pred_probs=probabilities)
        label = [label_set_text(row, names) for row in targets]
        suggested = [label_set_text(row >= 0.5, names) for row in probabilities]
    else:
        # a class named in data.labels but absent from train has no column: cleanlab sees the classes present
        present, local = np.unique(targets, return_inverse=True)
        probabilities = out_of_fold_probabilities(texts, local, folds, seed)
        flagged = find_label_issues(labels=local, pred_probs=probabilities, n_jobs=1)
        quality = get_label_quality_scores(labels=local, pred_probs=probabilities)
        label = [names[i] for i in targets]
        suggested = [names[present[i]] for i in probabilities.argmax(axis=1)]
    rows = np.flatnonzero(flagged)
    rows = rows[np.lexsort((rows, quality[rows]))]  # worst first; ties by row, so reruns write the same bytes
    return pd.DataFrame({"row": rows, "text": [texts[i] for i in rows], "label": [label[i] for i in rows],
                         "suggested": [suggested[i] for i in rows],
                         "quality": np.round(quality[rows], 6)}, columns=COLUMNS)
