"""Named slices of the test set: where does the model fail?

Each slice function takes the test texts with their token lengths and returns a
boolean mask. A slice is flagged when its accuracy is significantly below the
whole test set's: the upper end of its 95% Wilson interval lies under the
overall accuracy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from math import sqrt
from typing import Any

import numpy as np
import pandas as pd

SHORT_WORDS = 8  # a "very short" text has at most this many words
WORST_PER_SLICE = 3
NEGATION = re.compile(r"\b(not|no|never|nothing|nobody|none|neither|nor|cannot|without)\b|n't\b", re.IGNORECASE)
CONTRAST = re.compile(r"\b(but|however|although|though|yet|whereas|despite|nevertheless|nonetheless)\b",
                      re.IGNORECASE)
# Two more places where sentiment models often fail: (rhetorical) questions and hedged judgements.
QUESTION = re.compile(r"\?")
HEDGE = re.compile(r"\b(if only|at least|almost|somewhat|sort of|kind of|might|maybe|perhaps)\b", re.IGNORECASE)


@dataclass(frozen=True)
class SliceInput:
    texts: list[str]
    token_lengths: np.ndarray | None  # tokens each text was cut to; None for texts read whole in windows
    max_length: int
    windows: np.ndarray | None = None  # windows: how many each text was read in


SliceFunction = Callable[[SliceInput], np.ndarray]


def _matches(pattern: re.Pattern[str]) -> SliceFunction:
    return lambda data: np.array([bool(pattern.search(t)) for t in data.texts], dtype=bool)


SLICES: dict[str, SliceFunction] = {
    "truncated": lambda data: data.token_lengths >= data.max_length,
    "very_short": lambda data: np.array([len(t.split()) <= SHORT_WORDS for t in data.texts], dtype=bool),
    "negation": _matches(NEGATION),
    "contrast": _matches(CONTRAST),
    "question": _matches(QUESTION),
    "hedging": _matches(HEDGE),
}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound for small n and for rates near 0 or 1)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def slice_masks(data: SliceInput, labels: list[str]) -> dict[str, np.ndarray]:
    """Every named slice plus one per true class. Texts read whole in windows were not cut: their slice is the
    long documents, read in several windows."""
    if data.windows is None:
        masks = {name: fn(data) for name, fn in SLICES.items()}
    else:
        masks = {"long_document": data.windows > 1} | {name: fn(data) for name, fn in SLICES.items()
                                                       if name != "truncated"}
    true = np.asarray(labels)
    for name in sorted(set(labels)):
        masks[f"label={name}"] = true == name
    return masks


def slice_report(predictions: pd.DataFrame, texts: list[str], masks: dict[str, np.ndarray],
                 worst_by: str = "confidence") -> dict[str, Any]:
    """Size, accuracy (of the whole label set, for multi-label data), Wilson interval, significance and worst
    examples (highest ``worst_by`` first: the most confident mistakes, or the most wrong labels) of each slice."""
    correct = (predictions["label"] == predictions["predicted"]).to_numpy()
    overall = float(correct.mean())
    report = {}
    for name, mask in masks.items():
        n, hits = int(mask.sum()), int(correct[mask].sum())
        low, high = wilson_interval(hits, n)
        wrong = predictions[mask & ~correct].sort_values([worst_by, "row"], ascending=[False, True])
        report[name] = {
            "size": n, "share": round(n / len(correct), 6) if len(correct) else 0.0,
            "accuracy": round(hits / n, 6) if n else None,
            "ci_low": round(low, 6), "ci_high": round(high, 6),
            "significantly_below": bool(n > 0 and high < overall),
            "worst": [{"row": int(r.row), "label": r.label, "predicted": r.predicted,
                       worst_by: round(float(getattr(r, worst_by)), 6), "text": texts[int(r.row)]}
                      for r in wrong.head(WORST_PER_SLICE).itertuples()],
        }
    return report


def flagged(report: dict[str, Any]) -> list[str]:
    return [name for name, row in report.items() if row["significantly_below"]]
