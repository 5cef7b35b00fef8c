"""Wrong test predictions with their raw text, most confident mistakes first."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


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
