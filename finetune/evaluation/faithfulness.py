"""The error analysis's explanations: the trained model's words behind its most confident mistakes, and how
faithful each method's explanations are on test texts (finetune/core/explain.py has the rules).

The model is read as every backend reads its export: the calibration temperature folded in, texts
cut or read in windows by the tokenize params, so a text's probabilities here are the ones in
predictions.csv and the ones `predict --explain` gives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from finetune.core.contract import LABEL_SET_SEPARATOR, Windows, label_set_of
from finetune.core.explain import (
    INTEGRATED_GRADIENTS,
    OCCLUSION,
    Explanation,
    comprehensiveness,
    explanations,
    faithfulness,
    label_probabilities,
    occlusion,
    word_spans,
)
from finetune.evaluation.integrated_gradients import check_one_call, integrated_gradients
from finetune.training.texts import text_logits

DRIVERS_COLUMN = "drivers"  # errors.csv: the words that drove a mistake, with their weights
DRIVERS_SHOWN = 5  # words per label in that column


@dataclass
class ReadModel:
    """A trained classifier with its tokenizer, read as the pipeline reads texts."""

    model: Any
    tokenizer: Any
    labels: list[str]
    multi_label: bool
    max_length: int
    truncation: str
    windows: Windows | None
    aggregation: str
    batch_size: int

    def probabilities(self, texts: list[str]) -> np.ndarray:
        logits = text_logits(self.model, self.tokenizer, texts, self.max_length, self.truncation, self.batch_size,
                             windows=self.windows, aggregation=self.aggregation)
        return label_probabilities(logits, self.multi_label)

    def explain(self, text: str, targets: list[int], method: str, max_words: int, steps: int) -> list[Explanation]:
        if method == OCCLUSION:
            found = occlusion(self.probabilities, text, targets, max_words)
        else:
            check_one_call(self.windows is not None)
            found = integrated_gradients(self.model, self.tokenizer, text, targets, self.max_length, self.truncation,
                                         self.multi_label, max_words, steps)
        return explanations(text, self.labels, targets, *found, method)


def answered_labels(predicted: Sequence[str], probs: np.ndarray, labels: list[str], multi_label: bool,
                    every_given: bool) -> list[list[int]]:
    """The labels explained per text: the class answered; for label sets each label given (``every_given``, the
    most probable when none is) or the most probable alone."""
    index = {name: i for i, name in enumerate(labels)}
    if not multi_label:
        return [[index[cell]] for cell in predicted]
    chosen = []
    for cell, row in zip(predicted, probs, strict=True):
        given = sorted(index[name] for name in label_set_of(cell)) if every_given else []
        chosen.append(given or [int(np.argmax(row))])
    return chosen


def driving_words(explained: list[Explanation]) -> str:
    """One errors.csv cell: per label explained, the words that most raised its probability, with their weights."""
    parts = []
    for explanation in explained:
        words = ", ".join(f"{a.word} {a.weight:+.3f}" for a in explanation.top(DRIVERS_SHOWN)) or "none"
        parts.append(f"{explanation.label}: {words}")
    return f" {LABEL_SET_SEPARATOR} ".join(parts)


def explain_mistakes(errors: pd.DataFrame, probs: np.ndarray, model: ReadModel, method: str, count: int,
                     max_words: int, steps: int) -> pd.DataFrame:
    """errors.csv with a ``drivers`` column filled for its first ``count`` rows (the most confident mistakes)."""
    errors = errors.copy()
    errors.insert(errors.columns.get_loc("text"), DRIVERS_COLUMN, "")  # before the long text, for a reader
    head = errors.head(count)
    targets = answered_labels(head["predicted"].astype(str).tolist(), probs[head["row"].to_numpy()], model.labels,
                              model.multi_label, every_given=True)
    for (position, row), labels in zip(head.iterrows(), targets, strict=True):
        if word_spans(row["text"]):
            errors.at[position, DRIVERS_COLUMN] = driving_words(model.explain(row["text"], labels, method,
                                                                              max_words, steps))
    return errors


def measure_faithfulness(texts: list[str], targets: list[int], weigh: Callable[[str, list[int]], list[Explanation]],
                         probabilities: Callable[[list[str]], np.ndarray], method: str, share: float, draws: int,
                         seed: int) -> dict[str, Any]:
    """ERASER comprehensiveness over ``texts``: per text, the drop of its target label's probability when the
    top ``share`` of its words by ``weigh``'s weights are removed, against as many words drawn at random."""
    rng = np.random.default_rng(seed)
    drops = []
    for text, target in zip(texts, targets, strict=True):
        if word_spans(text):
            explanation = weigh(text, [target])[0]
            drops.append(comprehensiveness(probabilities, text, target, explanation, share, draws, rng))
    return faithfulness(drops, method, share, draws) if drops else {"method": method, "texts": 0}


def faithfulness_figures(texts: list[str], targets: list[int], model: ReadModel, share: float, draws: int,
                         max_words: int, steps: int, seed: int) -> dict[str, Any]:
    """Each method's figure on the same texts: occlusion always; integrated gradients when ``steps`` is set and
    the texts are read in one model call (else why not)."""
    figures: dict[str, Any] = {}
    for method in (OCCLUSION, INTEGRATED_GRADIENTS):
        if method == INTEGRATED_GRADIENTS and (steps == 0 or model.windows is not None):
            figures[method] = {"method": method, "skipped": "explain.ig_steps is 0" if steps == 0 else
                               "texts are read in windows, several model calls a text: occlusion only"}
            continue
        figures[method] = measure_faithfulness(
            texts, targets, lambda text, labels, m=method: model.explain(text, labels, m, max_words, steps),
            model.probabilities, method, share, draws, seed)
    return figures
