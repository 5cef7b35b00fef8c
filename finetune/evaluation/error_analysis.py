"""Wrong test predictions with their raw text: most confident mistakes first, or, for label sets, each text's
missed and spurious labels, worst labels first."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import multilabel_confusion_matrix

from finetune.core.contract import LABEL_SET_SEPARATOR, answer_matrix, label_set_of
from finetune.evaluation.slices import SliceInput, slice_masks, slice_report


def wrong_predictions(predictions: pd.DataFrame, texts: list[str], masks: dict[str, np.ndarray]) -> pd.DataFrame:
    """Every mistake with its text and the slices it falls in, most confident first (ties by row)."""
    member_of = [";".join(name for name, mask in masks.items() if mask[i] and not name.startswith("label="))
                 for i in predictions["row"]]
    table = predictions.assign(text=[texts[i] for i in predictions["row"]], slices=member_of)
    wrong = table[table["label"] != table["predicted"]]
    columns = ["row", "label", "predicted", "confidence", "slices", *window_columns(predictions), "text"]
    return wrong.sort_values(["confidence", "row"], ascending=[False, True], kind="stable")[columns]


def window_columns(predictions: pd.DataFrame) -> list[str]:
    """The columns of texts read in windows (how many, which agreed most with the answer and its text), where
    the predictions have them."""
    return [c for c in ("windows", "window", "window_text") if c in predictions.columns]


def quoted_windows(predictions: pd.DataFrame, texts: list[str], starts: np.ndarray, ends: np.ndarray,
                   first_rows: np.ndarray) -> pd.DataFrame:
    """Windows: the predictions with the text of each document's window that agreed most with its answer
    (``window_text``), cut from the document by the window's character offsets (``starts``, ``ends`` per
    tokenized row; ``first_rows``: each document's first row)."""
    rows = first_rows[predictions["row"].to_numpy()] + predictions["window"].to_numpy() - 1
    return predictions.assign(window_text=[texts[doc][starts[r]:ends[r]]
                                           for doc, r in zip(predictions["row"], rows, strict=True)])


def error_summary(predictions: pd.DataFrame, errors: pd.DataFrame, slices: dict[str, Any]) -> dict[str, Any]:
    """Counts of mistakes overall, per true class and per (true, predicted) pair; each slice's figures."""
    per_class = dict.fromkeys(predictions["label"].unique(), 0) | errors.groupby("label").size().to_dict()
    pairs = errors.groupby(["label", "predicted"]).size()
    return {
        "n_test": len(predictions),
        "n_errors": len(errors),
        "error_rate": round(len(errors) / max(len(predictions), 1), 6),
        "errors_per_true_label": {k: int(v) for k, v in sorted(per_class.items())},
        "confusions": {f"{t} -> {p}": int(n) for (t, p), n in sorted(pairs.items())},
        "mean_confidence_of_errors": round(float(errors["confidence"].mean()), 6) if len(errors) else 0.0,
        "slices": {name: {k: row[k] for k in ("size", "accuracy", "ci_high", "significantly_below")}
                   for name, row in slices.items()},
        "slices_significantly_below": [name for name, row in slices.items() if row["significantly_below"]],
    }


def label_set_scores(truth: np.ndarray, predicted: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Per label: support, missed (false negatives), spurious (false positives), F1 (1 for a label neither
    present nor predicted); worst F1 first (ties: more mistakes first, then by name)."""
    counts = multilabel_confusion_matrix(truth, predicted)  # per label [[tn, fp], [fn, tp]]
    tp, missed, spurious = counts[:, 1, 1], counts[:, 1, 0], counts[:, 0, 1]
    wrong = missed + spurious
    f1 = np.where(tp + wrong > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 1.0)
    table = pd.DataFrame({"label": names, "f1": np.round(f1, 6), "support": tp + missed, "missed": missed,
                          "spurious": spurious, "mistakes": wrong})
    return table.sort_values(["f1", "mistakes", "label"], ascending=[True, False, True], kind="stable")


def wrong_label_sets(predictions: pd.DataFrame, truth: np.ndarray, predicted: np.ndarray, names: list[str],
                     texts: list[str], masks: dict[str, np.ndarray], worst_first: list[str]) -> pd.DataFrame:
    """Every test text whose label set is wrong: its missed and spurious labels (each list worst label first),
    its worst wrong label, the slices it falls in and its text. Texts whose worst wrong label is the weakest
    label come first; then those with more wrong labels; then by row."""
    order = [worst_first.index(name) for name in names]  # each label's rank (column order), weakest 0
    rows = []
    for i, r in enumerate(predictions.itertuples()):
        missed = sorted(np.flatnonzero(truth[i] & ~predicted[i]), key=order.__getitem__)
        spurious = sorted(np.flatnonzero(predicted[i] & ~truth[i]), key=order.__getitem__)
        if missed or spurious:
            worst = min(missed + spurious, key=order.__getitem__)
            rows.append({"row": r.row, "label": r.label, "predicted": r.predicted,
                         "missed": LABEL_SET_SEPARATOR.join(names[j] for j in missed),
                         "spurious": LABEL_SET_SEPARATOR.join(names[j] for j in spurious),
                         "worst_label": names[worst], "n_wrong": len(missed) + len(spurious),
                         "slices": ";".join(name for name, mask in masks.items()
                                            if mask[i] and not name.startswith("label=")),
                         **{c: getattr(r, c) for c in window_columns(predictions)},
                         "text": texts[r.row], "_rank": order[worst]})
    columns = ["row", "label", "predicted", "missed", "spurious", "worst_label", "n_wrong", "slices",
               *window_columns(predictions), "text"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows).sort_values(["_rank", "n_wrong", "row"], ascending=[True, False, True], kind="stable")
    return table[columns]


def label_set_summary(predictions: pd.DataFrame, errors: pd.DataFrame, per_label: pd.DataFrame,
                      slices: dict[str, Any], swaps: int = 20) -> dict[str, Any]:
    """Texts with a wrong label set, every label's mistakes (worst first), the most frequent swaps (a label
    missed while another was predicted instead, on the same text) and each slice's figures."""
    pairs: dict[str, int] = {}
    for r in errors.itertuples():
        for missed in label_set_of(r.missed):
            for spurious in label_set_of(r.spurious):
                key = f"{missed} -> {spurious}"
                pairs[key] = pairs.get(key, 0) + 1
    frequent = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:swaps]
    return {
        "n_test": len(predictions),
        "n_errors": len(errors),
        "error_rate": round(len(errors) / max(len(predictions), 1), 6),
        "labels_worst_first": per_label.drop(columns="mistakes").to_dict(orient="records"),
        "frequent_swaps": dict(frequent),
        "slices": {name: {k: row[k] for k in ("size", "accuracy", "ci_high", "significantly_below")}
                   for name, row in slices.items()},
        "slices_significantly_below": [name for name, row in slices.items() if row["significantly_below"]],
    }


Analysis = tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]  # errors table, slices, summary


def analyse_single_label(predictions: pd.DataFrame, texts: list[str], data: SliceInput) -> Analysis:
    masks = slice_masks(data, predictions["label"].tolist())
    errors = wrong_predictions(predictions, texts, masks)
    slices = slice_report(predictions, texts, masks)
    return errors, slices, error_summary(predictions, errors, slices)


def analyse_label_sets(predictions: pd.DataFrame, texts: list[str], data: SliceInput, names: list[str]) -> Analysis:
    """Label sets: per-label mistakes, the wrong texts worst labels first, and the slices (one per label too),
    scored by subset accuracy."""
    truth, predicted = (answer_matrix(predictions[column].tolist(), names, multi_label=True)
                        for column in ("label", "predicted"))
    masks = slice_masks(data, []) | {f"label={name}": truth[:, j].astype(bool) for j, name in enumerate(names)}
    per_label = label_set_scores(truth, predicted, names)
    errors = wrong_label_sets(predictions, truth, predicted, names, texts, masks, per_label["label"].tolist())
    n_wrong = (truth != predicted).sum(axis=1)
    slices = slice_report(predictions.assign(n_wrong=n_wrong), texts, masks, worst_by="n_wrong")
    return errors, slices, label_set_summary(predictions, errors, per_label, slices)
