"""The exported model's contract: what an application needs to turn texts into answers, with numpy only.

An export folder holds the model, its tokenizer and a ``config.json`` whose extra keys
(below) say how to use it: the token budget and truncation strategy it was trained with,
and the confidence threshold under which it answers UNCERTAIN. Every backend (PyTorch,
ONNX Runtime) is a :class:`Predictor`: it turns texts into logits, and this module turns
logits into :class:`Prediction` answers by one rule.

A multi-label export (``problem_type`` multi_label_classification) answers a label set:
label j when its sigmoid probability reaches its threshold (``finetune_label_thresholds``,
tuned on validation). Its UNCERTAIN rule: a label whose log-odds lie within
``finetune_uncertain_band`` of its threshold's log-odds is uncertain, and a text with any
uncertain label is answered UNCERTAIN (its label set and the uncertain labels are still
given). Log-odds, not probabilities: thresholds of rare labels sit near 0, where a band of
probability would cover every text.

A single-label export answers its most probable class, unless it is a two-class model with a
decision threshold (``finetune_decision_threshold``, tuned on validation when
``evaluate.decision_threshold`` is ``tuned``): then the second class (id 1, the positive one)
whenever its probability reaches that threshold. Either way it answers UNCERTAIN when the
probability of the class it chose is below ``uncertain_threshold``. Nothing here imports torch,
transformers or datasets at import time, so the ONNX path runs with onnxruntime,
tokenizers and numpy alone.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from finetune.core.errors import UserError

UNCERTAIN = "UNCERTAIN"
# Keys the export stage adds to config.json; transformers keeps unknown config keys as attributes.
THRESHOLD_KEY = "uncertain_threshold"
TEMPERATURE_KEY = "calibration_temperature"
MAX_LENGTH_KEY = "finetune_max_length"
TRUNCATION_KEY = "finetune_truncation"
LABEL_THRESHOLDS_KEY = "finetune_label_thresholds"  # multi-label: one decision threshold per label, in id order
# single-label, two classes, optional: class 1 when its probability reaches this; absent: the most probable class
DECISION_THRESHOLD_KEY = "finetune_decision_threshold"
BAND_KEY = "finetune_uncertain_band"  # multi-label: how close (in log-odds) to its threshold a label is uncertain
MAX_BAND = 10.0
MULTI_LABEL_PROBLEM = "multi_label_classification"  # transformers' problem_type of a sigmoid-per-label model
LABEL_SET_SEPARATOR = "|"  # joins a label set's names in one table cell (predictions, errors, batch output)
# The ONNX files the export stage writes beside the PyTorch weights.
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"

# Which tokens a text longer than the budget keeps: its start, its end, or both; or all of it, in windows.
Truncation = Literal["head", "tail", "head+tail", "windows"]
TRUNCATIONS: tuple[str, ...] = get_args(Truncation)
HEAD_SHARE = 0.25  # share of the token budget head+tail gives to the start of the text
WINDOWS = "windows"
# How the logits of a text's windows become the text's logits (per class, or per label), before any probability.
Aggregation = Literal["mean", "max"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
STRIDE_KEY = "finetune_stride"  # tokens two neighbouring windows share
MAX_WINDOWS_KEY = "finetune_max_windows"  # the most windows read per text
AGGREGATION_KEY = "finetune_window_aggregation"
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
    predicted: str  # the label decided (the most probable, or by the decision threshold), even when uncertain
    confidence: float  # the probability of ``predicted`` (label sets: of the least sure label decision)
    uncertain: bool  # confidence below the threshold: the one rule, in answers() (label sets: label_set_answers())
    probabilities: dict[str, float]
    label_set: tuple[str, ...] = ()  # multi-label: the labels decided, in label order
    uncertain_labels: tuple[str, ...] = ()  # multi-label: labels within the band around their threshold


MULTI_LABEL_FIELDS = ("label_set", "uncertain_labels")  # a Prediction's fields that only label sets fill


def prediction_record(prediction: Prediction, multi_label: bool) -> dict[str, Any]:
    """A prediction as every JSON answer gives it (``predict --json``, the service): the label-set fields for a
    multi-label model only."""
    record = asdict(prediction)
    for key in MULTI_LABEL_FIELDS:
        if multi_label:
            record[key] = list(record[key])
        else:
            del record[key]
    return record


@dataclass(frozen=True)
class Windows:
    """How a text longer than the token budget is read whole: in windows of max_length tokens (special tokens
    included) of which neighbours share ``stride`` tokens, at most ``max_windows`` per text (window_starts)."""

    stride: int
    max_windows: int


@dataclass(frozen=True)
class ModelInfo:
    """What config.json of an exported model says about using it."""

    labels: list[str]
    threshold: float
    max_length: int
    truncation: str
    label_thresholds: tuple[float, ...] | None = None  # multi-label: one per label; None: single-label
    band: float = 0.0  # multi-label: the UNCERTAIN band around each threshold, in log-odds
    decision_threshold: float | None = None  # single-label, two classes: class 1 when its probability reaches it
    windows: Windows | None = None  # set: a text is read in windows, whose logits are aggregated
    aggregation: str = "mean"  # how windows' logits become the text's (AGGREGATIONS)

    @property
    def multi_label(self) -> bool:
        return self.label_thresholds is not None


def probability_column(label: str) -> str:
    """The column that holds a label's probability, in every table the project writes."""
    return f"prob_{label}"


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ExportError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ExportError(f"--threshold must lie between 0 and 1, got {threshold}")


def window_settings(config: dict[str, Any], path: Path, asked: bool) -> tuple[Windows | None, str]:
    """How an export reads a long text: in windows when it was trained on them, or when ``asked`` (a model
    trained on the head of each text, read whole at prediction time: the export keeps the pipeline's window
    settings for that); else cut by its truncation strategy (None)."""
    aggregation = config.get(AGGREGATION_KEY, "mean")
    if not (asked or config.get(TRUNCATION_KEY) == WINDOWS):
        return None, aggregation
    stride, cap = config.get(STRIDE_KEY), config.get(MAX_WINDOWS_KEY)
    if not (isinstance(stride, int) and isinstance(cap, int) and stride >= 0 and cap >= 1
            and aggregation in AGGREGATIONS):
        raise ExportError(f"{path}: reading texts in windows needs {STRIDE_KEY} (an integer >= 0), {MAX_WINDOWS_KEY} "
                          f"(an integer >= 1) and {AGGREGATION_KEY} ({' or '.join(AGGREGATIONS)}), which this export "
                          "lacks or holds wrong: export the model again with `dvc repro export`")
    return Windows(stride, cap), aggregation


def check_window_fit(info: ModelInfo, specials: int, folder: Path) -> None:
    """A model read in windows needs windows that can move on: a stride below the text a window holds."""
    budget = info.max_length - specials
    if info.windows is not None and info.windows.stride >= budget:
        raise ExportError(f"{folder / 'config.json'}: {STRIDE_KEY} is {info.windows.stride}, not below the {budget} "
                          f"tokens of text a {info.max_length}-token window holds, so windows could not move on: "
                          "export it again with a smaller tokenize.stride, or predict without --windows")


def read_model_info(folder: Path, threshold: float | None = None, windows: bool = False) -> ModelInfo:
    """Labels, threshold (``threshold`` overrides the exported one), max_length and truncation of an export;
    for a multi-label export also its per-label thresholds and UNCERTAIN band. ``windows`` reads long texts in
    windows even when the model was trained on a part of each."""
    if not (folder / "config.json").is_file():
        raise ExportError(f"{folder} is not an exported model folder (it has no config.json): run `dvc repro export` "
                          "or `dvc pull export`, or pass --model with the export's folder")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    # transformers leaves id2label out of config.json when the labels are its defaults (2, LABEL_0 and LABEL_1)
    id2label = {int(i): name for i, name in (config.get("id2label") or {}).items()}
    count = len(id2label) or int(config.get("num_labels", 2))
    labels = [id2label.get(i, f"LABEL_{i}") for i in range(count)]
    truncation = config.get(TRUNCATION_KEY) or "head"
    if truncation not in TRUNCATIONS:
        raise ExportError(f"{folder / 'config.json'}: {TRUNCATION_KEY} is {truncation!r}, not one of "
                          f"{', '.join(TRUNCATIONS)}: export the model again with `dvc repro export`")
    max_length = int(config.get(MAX_LENGTH_KEY) or DEFAULT_MAX_LENGTH)
    reading, aggregation = window_settings(config, folder / "config.json", windows)
    how = {"windows": reading, "aggregation": aggregation}
    if config.get("problem_type") == MULTI_LABEL_PROBLEM:
        if threshold is not None:
            raise ExportError(f"{folder} is a multi-label model with a threshold per label ({LABEL_THRESHOLDS_KEY} "
                              "in config.json): --threshold applies to single-label models only")
        thresholds = config.get(LABEL_THRESHOLDS_KEY) or [0.5] * count
        band = float(config.get(BAND_KEY, 0.0))
        if len(thresholds) != count or not all(0.0 <= t <= 1.0 for t in thresholds) or not 0.0 <= band <= MAX_BAND:
            raise ExportError(f"{folder / 'config.json'}: {LABEL_THRESHOLDS_KEY} needs one value in [0, 1] per "
                              f"label ({count}) and {BAND_KEY} a value in [0, {MAX_BAND}]: export the model again")
        return ModelInfo(labels, 0.0, max_length, truncation, tuple(float(t) for t in thresholds), band, **how)
    chosen = threshold if threshold is not None else float(config.get(THRESHOLD_KEY, 0.5))
    check_threshold(chosen)
    decision = config.get(DECISION_THRESHOLD_KEY)
    if decision is not None and (count != 2 or not 0.0 <= decision <= 1.0):
        raise ExportError(f"{folder / 'config.json'}: {DECISION_THRESHOLD_KEY} needs two labels (it has {count}) and "
                          f"a value in [0, 1] (it is {decision}): export the model again with `dvc repro export`")
    return ModelInfo(labels, chosen, max_length, truncation,
                     decision_threshold=None if decision is None else float(decision), **how)


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


def window_starts(length: int, budget: int, stride: int, max_windows: int) -> list[int]:
    """Where the windows of a text of ``length`` tokens (special tokens left out) start: one every
    ``budget - stride`` tokens, each ``budget`` long, the last one moved back to end where the text ends (so it
    is full; it may share more than ``stride`` tokens with the one before). A text of more windows than
    ``max_windows`` keeps ``max_windows`` of them evenly spread over it, the first and the last always among
    them (so 1 keeps the head alone, and the rest dropped are spread, not all at the end)."""
    if budget < 1 or not 0 <= stride < budget or max_windows < 1:
        raise ValueError(f"windows need 0 <= stride < budget and max_windows >= 1; got stride {stride}, budget "
                         f"{budget}, max_windows {max_windows}")
    if length <= budget:
        return [0]
    step = budget - stride
    count = 1 + -(-(length - budget) // step)  # ceiling division
    starts = [min(i * step, length - budget) for i in range(count)]
    if count > max_windows:
        starts = [starts[i] for i in np.linspace(0, count - 1, max_windows).round().astype(int)]
    return starts


def token_rows(bodies: Sequence[Sequence[int]], prefix: list[int], suffix: list[int], max_length: int,
               truncation: str, windows: Windows | None = None) -> tuple[list[list[int]], list[int]]:
    """The rows of token ids a model reads for texts given as their ids without special tokens, and the text
    each row belongs to: one row per text, cut by ``truncation``, or, with ``windows``, one per window. Every
    backend and the tokenize stage cut texts by this rule (the head alone by the tokenizer's own truncation,
    which keeps the same tokens)."""
    budget = max_length - len(prefix) - len(suffix)
    rows: list[list[int]] = []
    owners: list[int] = []
    for index, body in enumerate(bodies):
        ids = list(body)
        pieces = ([ids[start:start + budget] for start in window_starts(len(ids), budget, windows.stride,
                                                                         windows.max_windows)]
                  if windows else [keep_tokens(ids, budget, truncation)])
        rows.extend(prefix + piece + suffix for piece in pieces)
        owners.extend([index] * len(pieces))
    return rows, owners


def aggregate_windows(logits: np.ndarray, owners: Sequence[int] | np.ndarray, aggregation: str) -> np.ndarray:
    """One row of logits per text from the rows of its windows (``owners``: the text of each row, every text
    from 0 on present): their mean, or their maximum, per class or label. Probabilities, calibration and every
    decision come after, from these."""
    owners = np.asarray(owners, dtype=np.int64)
    logits = np.asarray(logits, dtype=np.float32)
    count = int(owners.max()) + 1 if len(owners) else 0
    if aggregation == "mean":
        sums = np.zeros((count, logits.shape[1]), dtype=np.float64)
        np.add.at(sums, owners, logits)
        return (sums / np.bincount(owners, minlength=count)[:, None]).astype(np.float32)
    if aggregation == "max":
        highest = np.full((count, logits.shape[1]), -np.inf, dtype=np.float32)
        np.maximum.at(highest, owners, logits)
        return highest
    raise ValueError(f"window aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")


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


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise probabilities of logits (one per label), in float64."""
    return 0.5 * (1.0 + np.tanh(np.asarray(logits, dtype=np.float64) / 2.0))  # no overflow for large |logits|


def label_set_text(row: np.ndarray, names: list[str]) -> str:
    """A 0/1 row of label decisions as one table cell: the names joined by LABEL_SET_SEPARATOR (empty: none)."""
    return LABEL_SET_SEPARATOR.join(names[j] for j in np.flatnonzero(row))


def label_set_of(cell: str) -> set[str]:
    """The label names in a table cell written by :func:`label_set_text`."""
    return set(cell.split(LABEL_SET_SEPARATOR)) if cell else set()


def answer_matrix(cells: Sequence[str], names: list[str], multi_label: bool) -> np.ndarray:
    """A table column of answers as a boolean matrix, one column per name: a class name per cell (one-hot), or a
    label set per cell (written by :func:`label_set_text`)."""
    index = {name: j for j, name in enumerate(names)}
    matrix = np.zeros((len(cells), len(names)), dtype=bool)
    for row, cell in enumerate(cells):
        matrix[row, [index[name] for name in (label_set_of(cell) if multi_label else [cell])]] = True
    return matrix


def decide(probs: np.ndarray, thresholds: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """The label sets as a 0/1 matrix: label j where its probability reaches its threshold."""
    return (np.asarray(probs) >= np.asarray(thresholds)).astype(int)


def uncertain_labels(probs: np.ndarray, thresholds: Sequence[float], band: float) -> np.ndarray:
    """The UNCERTAIN rule of label sets: a label whose log-odds lie within ``band`` of its threshold's (so a band
    of 0 answers everything)."""
    return np.abs(log_odds(probs) - log_odds(thresholds)) < band


def log_odds(probs: np.ndarray | Sequence[float]) -> np.ndarray:
    clipped = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(clipped / (1 - clipped))


def label_set_answers(texts: list[str], probs: np.ndarray, info: ModelInfo) -> list[Prediction]:
    """One Prediction per text: its label set, or UNCERTAIN when any label is uncertain (uncertain_labels).
    ``confidence`` is the probability that the least sure decision is right (p for a label given, 1 - p for one
    left out: the probabilities are calibrated)."""
    thresholds = np.asarray(info.label_thresholds)
    decided = decide(probs, thresholds).astype(bool)
    unsure = uncertain_labels(probs, thresholds, info.band)
    results = []
    for text, row, yes, doubt in zip(texts, probs, decided, unsure, strict=True):
        chosen = label_set_text(yes, info.labels)
        confidence = float(np.where(yes, row, 1 - row).min())
        results.append(Prediction(
            text, UNCERTAIN if doubt.any() else chosen, chosen, confidence, bool(doubt.any()),
            {name: float(p) for name, p in zip(info.labels, row, strict=True)},
            tuple(info.labels[j] for j in np.flatnonzero(yes)), tuple(info.labels[j] for j in np.flatnonzero(doubt))))
    return results


def single_label_decisions(probs: np.ndarray, decision_threshold: float | None = None) -> np.ndarray:
    """The class id each row answers: the most probable, or, with a decision threshold (two classes only),
    class 1 when its probability reaches the threshold."""
    probs = np.asarray(probs)
    if decision_threshold is None:
        return probs.argmax(axis=1)
    if probs.shape[1] != 2:
        raise ValueError(f"a decision threshold needs two classes, got {probs.shape[1]}")
    return (probs[:, 1] >= decision_threshold).astype(int)


def chosen_probability(probs: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Each row's probability of the class it answers: its confidence."""
    return np.asarray(probs)[np.arange(len(chosen)), chosen]


def uncertain_rows(probs: np.ndarray, threshold: float, decision_threshold: float | None = None) -> np.ndarray:
    """The UNCERTAIN rule, for every backend and every report: the probability of the class answered
    (single_label_decisions) is below the threshold (so a threshold of 0 answers everything)."""
    return chosen_probability(probs, single_label_decisions(probs, decision_threshold)) < threshold


def answers(texts: list[str], probs: np.ndarray, info: ModelInfo) -> list[Prediction]:
    """One Prediction per text: the class decided by single_label_decisions, or UNCERTAIN by uncertain_rows."""
    chosen = single_label_decisions(probs, info.decision_threshold)
    flags = uncertain_rows(probs, info.threshold, info.decision_threshold)
    results = []
    for text, row, best, sure, uncertain in zip(texts, probs, chosen, chosen_probability(probs, chosen), flags,
                                                strict=True):
        results.append(Prediction(text, UNCERTAIN if uncertain else info.labels[best], info.labels[best], float(sure),
                                  bool(uncertain), {name: float(p) for name, p in zip(info.labels, row, strict=True)}))
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
        logits = self.logits(list(texts))
        if self.info.multi_label:
            return label_set_answers(list(texts), sigmoid(logits), self.info)
        return answers(list(texts), softmax(logits), self.info)
