"""Wrong test predictions with their raw text: most confident mistakes first, or, for label sets, each text's
missed and spurious labels, worst labels first."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from finetune.contract import LABEL_SET_SEPARATOR, label_set_of


def wrong_predictions(predictions: pd.DataFrame, texts: list[str], masks: dict[str, np.ndarray]) -> pd.DataFrame:
    """Every mistake with its text and the slices it falls in, most confident first (ties by row)."""
    member_of = [";".join(name for name, mask in masks.items() if mask[i] and not name.startswith("label="))
                 for i in predictions["row"]]
    table = predictions.assign(text=[texts[i] for i in predictions["row"]], slices=member_of)
    wrong = table[table["label"] != table["predicted"]]
    columns = ["row", "label", "predicted", "confidence", "slices", "text"]
    return wrong.sort_values(["confidence", "row"], ascending=[False, True], kind="stable")[columns]


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


def label_set_scores(predictions: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Per label, from the test predictions: support, missed (false negatives), spurious (false positives), F1;
    worst F1 first (ties: more mistakes first, then by name)."""
    truth = [label_set_of(cell) for cell in predictions["label"]]
    predicted = [label_set_of(cell) for cell in predictions["predicted"]]
    rows = []
    for name in names:
        tp = sum(name in t and name in p for t, p in zip(truth, predicted, strict=True))
        missed = sum(name in t and name not in p for t, p in zip(truth, predicted, strict=True))
        spurious = sum(name in p and name not in t for t, p in zip(truth, predicted, strict=True))
        f1 = 2 * tp / (2 * tp + missed + spurious) if tp + missed + spurious else 1.0
        rows.append({"label": name, "f1": round(f1, 6), "support": tp + missed, "missed": missed,
                     "spurious": spurious})
    table = pd.DataFrame(rows)
    table["mistakes"] = table["missed"] + table["spurious"]
    return table.sort_values(["f1", "mistakes", "label"], ascending=[True, False, True], kind="stable")


def wrong_label_sets(predictions: pd.DataFrame, texts: list[str], masks: dict[str, np.ndarray],
                     worst_first: list[str]) -> pd.DataFrame:
    """Every test text whose label set is wrong: its missed and spurious labels (each list worst label first),
    its worst wrong label, the slices it falls in and its text. Texts whose worst wrong label is the weakest
    label come first; then those with more wrong labels; then by row."""
    rank = {name: i for i, name in enumerate(worst_first)}
    member_of = [";".join(name for name, mask in masks.items() if mask[i] and not name.startswith("label="))
                 for i in predictions["row"]]
    rows = []
    for r, slices in zip(predictions.itertuples(), member_of, strict=True):
        truth, predicted = label_set_of(r.label), label_set_of(r.predicted)
        missed, spurious = sorted(truth - predicted, key=rank.get), sorted(predicted - truth, key=rank.get)
        if missed or spurious:
            worst = min(missed + spurious, key=rank.get)
            rows.append({"row": r.row, "label": r.label, "predicted": r.predicted,
                         "missed": LABEL_SET_SEPARATOR.join(missed), "spurious": LABEL_SET_SEPARATOR.join(spurious),
                         "worst_label": worst, "n_wrong": len(missed) + len(spurious), "slices": slices,
                         "text": texts[r.row], "_rank": rank[worst]})
    columns = ["row", "label", "predicted", "missed", "spurious", "worst_label", "n_wrong", "slices", "text"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows).sort_values(["_rank", "n_wrong", "row"], ascending=[True, False, True], kind="stable")
    return table[columns]


def label_set_masks(predictions: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    """One slice per label: the test texts that carry it."""
    truth = [label_set_of(cell) for cell in predictions["label"]]
    return {f"label={name}": np.array([name in t for t in truth], dtype=bool) for name in names}


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
