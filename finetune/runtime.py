"""What an application needs to turn a model's logits into answers, with numpy only.

Shared by the PyTorch and the ONNX predictors: the exported config's keys, the
truncation strategies, the softmax and the UNCERTAIN rule. Nothing here imports
torch, transformers or datasets, so the ONNX path runs with onnxruntime,
tokenizers and numpy alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finetune.errors import UserError

UNCERTAIN = "UNCERTAIN"
# Keys the export stage adds to config.json; transformers keeps unknown config keys as attributes.
THRESHOLD_KEY = "uncertain_threshold"
TEMPERATURE_KEY = "calibration_temperature"
MAX_LENGTH_KEY = "finetune_max_length"
TRUNCATION_KEY = "finetune_truncation"
HEAD_SHARE = 0.25  # share of the token budget head+tail gives to the start of the text
# Token budget of an export whose config.json does not say (one written before MAX_LENGTH_KEY existed):
# the position limit of BERT-style encoders.
DEFAULT_MAX_LENGTH = 512


class ExportError(UserError, ValueError):
    """An exported model folder cannot be used as asked; the message names the fix."""


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str  # the predicted label, or UNCERTAIN when confidence < threshold
    predicted: str  # the most probable label, even when uncertain
    confidence: float
    probabilities: dict[str, float]


@dataclass(frozen=True)
class ModelInfo:
    """What config.json of an exported model says about using it."""

    labels: list[str]
    threshold: float
    max_length: int
    truncation: str


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
    if not 0.0 <= chosen <= 1.0:
        raise ExportError(f"--threshold must lie between 0 and 1, got {chosen}")
    return ModelInfo(labels, chosen, int(config.get(MAX_LENGTH_KEY) or DEFAULT_MAX_LENGTH),
                     config.get(TRUNCATION_KEY) or "head")


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


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def answers(texts: list[str], probs: np.ndarray, labels: list[str], threshold: float) -> list[Prediction]:
    """One Prediction per text: the most probable label, or UNCERTAIN when its probability is below threshold."""
    results = []
    for text, row in zip(texts, probs, strict=True):
        best = int(row.argmax())
        confidence = float(row[best])
        label = labels[best] if confidence >= threshold else UNCERTAIN
        results.append(Prediction(text, label, labels[best], confidence,
                                  {name: float(p) for name, p in zip(labels, row, strict=True)}))
    return results
