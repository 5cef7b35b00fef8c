"""Wrong test predictions with their raw text, most confident mistakes first."""

from __future__ import annotations

from typing import Any

import pandas as pd


def wrong_predictions(predictions: pd.DataFrame, texts: list[str]) -> pd.DataFrame:
    """Every mistake, with its text, sorted by confidence (highest first, then by row for stable ties)."""
    table = predictions.assign(text=[texts[i] for i in predictions["row"]])
    wrong = table[table["label"] != table["predicted"]]
    columns = ["row", "label", "predicted", "confidence", "text"]
    return wrong.sort_values(["confidence", "row"], ascending=[False, True], kind="stable")[columns]


def error_summary(predictions: pd.DataFrame, errors: pd.DataFrame) -> dict[str, Any]:
    """Counts of mistakes overall, per true class and per (true, predicted) pair, and the worst examples."""
    per_class = dict.fromkeys(predictions["label"].unique(), 0) | errors.groupby("label").size().to_dict()
    pairs = errors.groupby(["label", "predicted"]).size()
    return {
        "n_test": len(predictions),
        "n_errors": len(errors),
        "error_rate": round(len(errors) / max(len(predictions), 1), 6),
        "errors_per_true_label": {k: int(v) for k, v in sorted(per_class.items())},
        "confusions": {f"{t} -> {p}": int(n) for (t, p), n in sorted(pairs.items())},
        "mean_confidence_of_errors": round(float(errors["confidence"].mean()), 6) if len(errors) else 0.0,
    }
