"""The exported model's contract: what an application needs to turn texts into answers, with numpy only.

An export folder holds the model, its tokenizer and a ``config.json`` whose extra keys
(below) say how to use it: the token budget and truncation strategy it was trained with,
and the confidence threshold under which it answers UNCERTAIN. Every backend (PyTorch,
ONNX Runtime) is a :class:`Predictor`: it turns texts into logits, and this module turns
logits into :class:`Prediction` answers by one rule. Nothing here imports torch,
transformers or datasets at import time, so the ONNX path runs with onnxruntime,
tokenizers and numpy alone.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from finetune.errors import UserError

UNCERTAIN = "UNCERTAIN"
# Keys the export stage adds to config.json; transformers keeps unknown config keys as attributes.
THRESHOLD_KEY = "uncertain_threshold"
TEMPERATURE_KEY = "calibration_temperature"
MAX_LENGTH_KEY = "finetune_max_length"
TRUNCATION_KEY = "finetune_truncation"
# The ONNX files the export stage writes beside the PyTorch weights.
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"

# Which tokens a text longer than the budget keeps: its start, its end, or both.
Truncation = Literal["head", "tail", "head+tail"]
TRUNCATIONS: tuple[str, ...] = get_args(Truncation)
HEAD_SHARE = 0.25  # share of the token budget head+tail gives to the start of the text
# Token budget of an export whose config.json does not say (one written before MAX_LENGTH_KEY existed):
# the position limit of BERT-style encoders.
DEFAULT_MAX_LENGTH = 512

# bf16: matrix products in bfloat16 under autocast (PyTorch only). Faster where the hardware computes in
# bf16; logits move a little, so measure the accuracy before serving with it.
Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


class ExportError(UserError, ValueError):
    """An exported model folder cannot be used as asked; the message names the fix."""


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str  # the predicted label, or UNCERTAIN when uncertain
    predicted: str  # the most probable label, even when uncertain
    confidence: float  # the probability of ``predicted``
    uncertain: bool  # confidence below the threshold: the one rule, in answers()
    probabilities: dict[str, float]


@dataclass(frozen=True)
class ModelInfo:
    """What config.json of an exported model says about using it."""

    labels: list[str]
    threshold: float
    max_length: int
    truncation: str


def probability_column(label: str) -> str:
    """The column that holds a label's probability, in every table the project writes."""
    return f"prob_{label}"


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ExportError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ExportError(f"--threshold must lie between 0 and 1, got {threshold}")


def read_model_info(folder: Path, threshold: float | None = None) -> ModelInfo:
    """Labels, threshold (``threshold`` overrides the exported one), max_length and truncation of an export."""
    if not (folder / "config.json").is_file():
        raise ExportError(f"{folder} is not an exported model folder (it has no config.json): run `dvc repro export` "
                          "or `dvc pull export`, or pass --model with the export's folder")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    # transformers leaves id2label out of config.json when the labels are its defaults (2, LABEL_0 and LABEL_1)
    id2label = {int(i): name for i, name in (config.get("id2label") or {}).items()}
    count = len(id2label) or int(config.get("num_labels", 2))
    labels = [id2label.get(i, f"LABEL_{i}") for i in range(count)]
    chosen = threshold if threshold is not None else float(config.get(THRESHOLD_KEY, 0.5))
    check_threshold(chosen)
    truncation = config.get(TRUNCATION_KEY) or "head"
    if truncation not in TRUNCATIONS:
        raise ExportError(f"{folder / 'config.json'}: {TRUNCATION_KEY} is {truncation!r}, not one of "
                          f"{', '.join(TRUNCATIONS)}: export the model again with `dvc repro export`")
    return ModelInfo(labels, chosen, int(config.get(MAX_LENGTH_KEY) or DEFAULT_MAX_LENGTH), truncation)


def special_ids(full: list[int], body: list[int]) -> tuple[list[int], list[int]]:
    """The special-token ids around ``body`` in ``full`` (one text encoded without and with them)."""
    for start in range(len(full) - len(body) + 1):
        if full[start:start + len(body)] == body:
            return full[:start], full[start + len(body):]
    raise ValueError("cannot locate the text between the tokenizer's special tokens")


def keep_tokens(ids: list[int], budget: int, truncation: str) -> list[int]:
    """At most ``budget`` ids, chosen by the truncation strategy (head, tail or head+tail)."""
    if len(ids) <= budget:
        return ids
    if truncation == "head":
        return ids[:budget]
    if truncation == "tail":
        return ids[len(ids) - budget:]
    head = int(budget * HEAD_SHARE)
    return ids[:head] + ids[len(ids) - (budget - head):]


def length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Indices of the examples in batches of similar length (so each padded batch is short), shortest first.
    Callers put each batch's results back at these indices, which keeps the original order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise probabilities of logits, in float64."""
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def uncertain_rows(probs: np.ndarray, threshold: float) -> np.ndarray:
    """The UNCERTAIN rule, for every backend and every report: the most probable label's probability is below
    the threshold (so a threshold of 0 answers everything)."""
    return np.asarray(probs).max(axis=1) < threshold


def answers(texts: list[str], probs: np.ndarray, labels: list[str], threshold: float) -> list[Prediction]:
    """One Prediction per text: the most probable label, or UNCERTAIN by the rule of uncertain_rows."""
    results = []
    for text, row, uncertain in zip(texts, probs, uncertain_rows(probs, threshold), strict=True):
        best = int(row.argmax())
        confidence, uncertain = float(row[best]), bool(uncertain)
        results.append(Prediction(text, UNCERTAIN if uncertain else labels[best], labels[best], confidence,
                                  uncertain, {name: float(p) for name, p in zip(labels, row, strict=True)}))
    return results


class Predictor(ABC):
    """A loaded export that predicts batches of texts; every backend is one.

    A backend sets ``info`` (read_model_info), ``batch_size`` and ``backend`` (its name, as
    /metadata shows it) and implements ``logits``; the answers follow from them alone.
    """

    info: ModelInfo
    batch_size: int
    backend: str

    @abstractmethod
    def logits(self, texts: list[str]) -> np.ndarray:
        """One row of class logits per text, in the order given."""

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    @property
    def threshold(self) -> float:
        return self.info.threshold

    @property
    def max_length(self) -> int:
        return self.info.max_length

    @property
    def truncation(self) -> str:
        return self.info.truncation

    def predict(self, texts: list[str]) -> list[Prediction]:
        if not texts:
            return []
        return answers(list(texts), softmax(self.logits(list(texts))), self.labels, self.threshold)
