"""From raw (text, label) tables to Arrow datasets: cleaning, label encoding, sampling, splitting.

A table's label is one class name per row (single-label) or a set of label names per row
(multi-label: names joined by ``data.label_separator``, one 0/1 column per label in
``data.label_columns``, or a list in JSON Lines, Parquet or a hub dataset). Multi-label
splits keep every label's share close to train's by iterative stratification
(Sechidis et al., 2011, the ``iterative-stratification`` package).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import datasets
import numpy as np
import pandas as pd
import xxhash
from datasets.utils.stratify import stratified_shuffle_split_generate_indices
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

from finetune.labels import (
    LABEL_COLUMN,
    MULTI_LABEL,
    SINGLE_LABEL,
    Task,
    label_array,
    label_column,
    label_counts,
    label_feature,
    multi_hot,
    task_of,
)
from finetune.labels import label_names as feature_label_names
from finetune.params import DataParams, SplitParams
from finetune.sources import DataSourceError, Frames

log = logging.getLogger(__name__)

BREAK_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)
HASH_BATCH = 50_000  # rows read at a time to hash a split's texts


@dataclass
class CleaningReport:
    """What cleaning removed, per split, for the log and the metrics."""

    empty_dropped: dict[str, int] = field(default_factory=dict)
    duplicates_dropped: dict[str, int] = field(default_factory=dict)


def clean_text(text: str) -> str:
    """IMDB's ``<br />`` tags become line breaks; surrounding blanks go."""
    return BREAK_TAG.sub("\n", text).strip()


def clean_frames(frames: Frames, drop_duplicates: bool,
                 task: Task = SINGLE_LABEL) -> tuple[Frames, CleaningReport]:
    """Clean texts, drop empty ones and (optionally) repeated texts within each split."""
    report, cleaned = CleaningReport(), {}
    for split, frame in frames.items():
        frame = frame.assign(text=frame["text"].fillna("").astype(str).map(clean_text))
        empty = frame["text"] == ""
        frame = frame[~empty]
        duplicated = frame["text"].duplicated() if drop_duplicates else pd.Series(False, index=frame.index)
        frame = frame[~duplicated].reset_index(drop=True)
        if frame.empty:
            raise DataSourceError(f"the {split} split has no rows with text left after cleaning; check data.source "
                                  "and data.text_columns")
        if task == SINGLE_LABEL and (frame["label"].isna().any()
                                     or (frame["label"].astype(str).str.strip() == "").any()):
            raise DataSourceError(f"the {split} split has rows without a label in data.label_column; "
                                  "fill or remove them")
        report.empty_dropped[split] = int(empty.sum())
        report.duplicates_dropped[split] = int(duplicated.sum())
        cleaned[split] = frame
    return cleaned, report


def label_text(value: object) -> str:
    """A label value as its name: a string as written (blanks stripped; "01", "1.0", "True" and "NA" stay as they
    are), any other value (a Parquet or JSON number, a boolean) as Python writes it."""
    return value.strip() if isinstance(value, str) else str(value)


def label_order(names: set[str]) -> list[str]:
    """Numbers numerically (when every name is one), anything else alphabetically."""
    try:
        return sorted(names, key=lambda name: (float(name), name))
    except ValueError:
        return sorted(names)


def is_label_list(value: object) -> bool:
    return isinstance(value, list | tuple | np.ndarray)


def detect_task(frames: Frames, data: DataParams) -> Task:
    """multi_label when the params say so (a separator, 0/1 columns) or the label values are lists."""
    if data.label_separator is not None or data.label_columns is not None:
        return MULTI_LABEL
    kinds = {is_label_list(v) for frame in frames.values() for v in frame["label"] if not is_missing_label(v)}
    if kinds == {True, False}:
        raise DataSourceError(f"data.label_column {data.label_column!r} holds lists of labels in some rows and "
                              "single values in others: make every row a list (multi-label) or a single value")
    return MULTI_LABEL if kinds == {True} else SINGLE_LABEL


def is_missing_label(value: object) -> bool:
    """An empty cell (None, NaN), as opposed to a list of labels, which may be empty."""
    return not is_label_list(value) and bool(pd.isna(value))  # type: ignore[arg-type]


def label_sets(frames: Frames, data: DataParams) -> Frames:
    """Multi-label: each row's label becomes a sorted tuple of distinct names; a missing label, or an empty set
    unless ``data.allow_empty_labels``, is an error that says how many rows and where."""
    parsed = {}
    for split, frame in frames.items():
        sets, missing = [], 0
        for value in frame["label"]:
            if is_missing_label(value):
                missing += 1
                sets.append(())
                continue
            if is_label_list(value):
                names = [label_text(v) for v in value]
            elif data.label_separator is not None:
                names = str(value).split(data.label_separator)
            else:
                raise DataSourceError(f"the {split} split has a label {value!r} that is no list: set "
                                      "data.label_separator to the character joining its names")
            sets.append(tuple(sorted({name.strip() for name in names if name.strip()})))
        if missing:
            raise DataSourceError(f"the {split} split has {missing} rows without a value in data.label_column "
                                  f"{data.label_column!r}; fill or remove them")
        empty = sum(not labels for labels in sets)
        if empty and not data.allow_empty_labels:
            raise DataSourceError(
                f"the {split} split has {empty} of {len(sets)} texts with no label: set data.allow_empty_labels "
                "to true if a text may have none (a 'none of these' answer), or remove those rows")
        parsed[split] = frame.assign(label=pd.Series(sets, index=frame.index, dtype=object))
    return parsed


def label_values(frame: pd.DataFrame, task: Task) -> set[str]:
    if task == MULTI_LABEL:
        return {name for labels in frame["label"] for name in labels}
    return {label_text(v) for v in frame["label"]}


def label_names(frames: Frames, labels: list[str | int] | None, task: Task = SINGLE_LABEL) -> list[str]:
    """The class names in order: ``data.labels`` if given, else numbers numerically and strings alphabetically.
    A multi-label model learns every label from train, so each must occur there."""
    train_values = label_values(frames["train"], task)
    seen = set().union(*(label_values(f, task) for f in frames.values()))
    if labels is not None:
        names = [str(v) for v in labels]
        unknown = sorted(seen - set(names))
        if unknown:
            raise DataSourceError(f"data.labels lists {names}, but the data also has label(s) {unknown}: add them")
        never = [name for name in names if name not in train_values]
        if task == MULTI_LABEL and never:
            raise DataSourceError(f"label(s) {never} never occur in the train split; a multi-label model cannot "
                                  "learn them: add training examples, or drop them from the data and the params")
    else:
        names = label_order(train_values)
        unseen = sorted(seen - train_values)
        if unseen:
            raise DataSourceError(f"label(s) {unseen} occur outside the train split but never in it; "
                                  "the model cannot learn them: remove those rows or add training examples")
    if len(train_values) < 2:
        what = "label" if task == MULTI_LABEL else "class"
        raise DataSourceError(f"the train split has a single {what} ({sorted(train_values)}); "
                              "a classifier needs at least two: check data.label_column")
    return names


def to_dataset_dict(frames: Frames, names: list[str], task: Task = SINGLE_LABEL) -> datasets.DatasetDict:
    """Arrow datasets with a ``text`` column and a ``label`` column of class ids carrying the names (one id per row,
    or a list of ids per row for multi-label data)."""
    features = datasets.Features({"text": datasets.Value("string"), LABEL_COLUMN: label_feature(names, task)})
    index = {name: i for i, name in enumerate(names)}

    def encode(value: object) -> int | list[int]:
        if task == MULTI_LABEL:
            return sorted(index[name] for name in value)  # type: ignore[union-attr]
        return index[label_text(value)]

    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict(
            {"text": frame["text"].tolist(), LABEL_COLUMN: [encode(v) for v in frame["label"]]},
            features=features, split=split)
        for split, frame in frames.items()
    })


def cap_samples(dataset: datasets.Dataset, max_samples: int | None, seed: int) -> datasets.Dataset:
    """At most ``max_samples`` rows, drawn reproducibly and stratified by label."""
    if max_samples is None or len(dataset) <= max_samples:
        return dataset
    if task_of(dataset.features) == MULTI_LABEL:
        return multilabel_split(dataset, len(dataset) - max_samples, seed)["train"]
    try:
        kept, _ = stratified_indices(label_array(dataset), max_samples, len(dataset) - max_samples, seed)
    except ValueError as err:
        raise DataSourceError(f"data.max_samples={max_samples} cannot be drawn stratified from {len(dataset)} rows "
                              f"({err}); raise data.max_samples or set it to null") from None
    return dataset.select(kept)


def stratified_indices(labels: np.ndarray, n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a stratified draw of ``n_train`` and ``n_test`` rows: the draw of datasets'
    ``train_test_split(stratify_by_column="label", seed=seed)``, made from the label ids alone (that method reads
    the column row by row, minutes for a million rows)."""
    try:
        return next(stratified_shuffle_split_generate_indices(labels, n_train, n_test,
                                                              rng=np.random.default_rng(seed)))
    except ValueError as err:
        if str(err) == "Minimum class count error":
            raise ValueError("the least populated class has a single row; stratifying needs at least two") from None
        raise


def multilabel_split(dataset: datasets.Dataset, test_size: float | int, seed: int) -> datasets.DatasetDict:
    """train/test of a multi-label dataset by iterative stratification: each label's share stays close in both,
    rare labels included. The sizes are close to, not exactly, ``test_size``."""
    matrix = multi_hot(label_column(dataset), len(feature_label_names(dataset.features)))
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    train, test = next(splitter.split(np.zeros((len(matrix), 1)), matrix))
    return datasets.DatasetDict({"train": dataset.select(np.sort(train)), "test": dataset.select(np.sort(test))})


def build_raw(frames: Frames, data: DataParams, seed: int) -> tuple[datasets.DatasetDict, CleaningReport]:
    """The download stage's work after reading: clean, encode labels, cap each split."""
    task = detect_task(frames, data)
    if task == MULTI_LABEL:
        frames = label_sets(frames, data)
    cleaned, report = clean_frames(frames, data.drop_duplicates, task)
    names = label_names(cleaned, data.labels or data.label_columns, task)
    raw = to_dataset_dict(cleaned, names, task)
    return datasets.DatasetDict({s: cap_samples(d, data.max_samples, seed) for s, d in raw.items()}), report


def check_decision_rule(features: datasets.Features, rule: str) -> None:
    """A tuned decision threshold needs single-label data with two classes: refused here, in split, rather than
    after training."""
    names = feature_label_names(features)
    if rule == "tuned" and (task_of(features) == MULTI_LABEL or len(names) != 2):
        kind = "multi-label data (it tunes a threshold per label anyway)" if task_of(features) == MULTI_LABEL else (
            f"{len(names)} classes")
        raise DataSourceError(f"evaluate.decision_threshold: tuned applies to single-label data with two classes, "
                              f"and this data has {kind}: set evaluate.decision_threshold: argmax")


def split_dataset(raw: datasets.DatasetDict, split: SplitParams, seed: int) -> datasets.DatasetDict:
    """train/validation/test: test kept as given (or carved from train), validation stratified from train."""
    train = raw["train"]
    if "test" in raw:
        test = raw["test"]
    else:
        parts = stratified_split(train, split.test_size, seed, "split.test_size")
        train, test = parts["train"], parts["test"]
    if "validation" in raw:
        validation = raw["validation"]
    else:
        parts = stratified_split(train, split.val_size, seed, "split.val_size")
        train, validation = parts["train"], parts["test"]
    return datasets.DatasetDict({"train": train, "validation": validation, "test": test})


def stratified_split(dataset: datasets.Dataset, size: float, seed: int, key: str) -> datasets.DatasetDict:
    """train/test, a ``size`` share of the rows (rounded up) in test, stratified by label."""
    if task_of(dataset.features) == MULTI_LABEL:
        return multilabel_split(dataset, size, seed)
    n_test = math.ceil(size * len(dataset))
    try:
        train, test = stratified_indices(label_array(dataset), len(dataset) - n_test, n_test, seed)
    except ValueError as err:
        raise DataSourceError(f"{key}={size} cannot split {len(dataset)} rows stratified by label ({err}); "
                              "use more data or another size") from None
    return datasets.DatasetDict({"train": dataset.select(train), "test": dataset.select(test)})


def text_hashes(texts: Iterable[str]) -> np.ndarray:
    """A 128-bit hash of each text: equal texts, equal hashes; a set of them costs 16 bytes a text."""
    return np.frombuffer(b"".join([xxhash.xxh3_128_digest(text.encode("utf-8")) for text in texts]), dtype="V16")


def dataset_text_hashes(dataset: datasets.Dataset) -> np.ndarray:
    """The hash of each row's text, read in batches: memory holds the hashes, never the texts."""
    batches = dataset.select_columns(["text"]).with_format("arrow").iter(batch_size=HASH_BATCH)
    return np.concatenate([text_hashes(batch["text"].to_pylist()) for batch in batches] or [text_hashes([])])


def split_report(splits: datasets.DatasetDict) -> dict[str, object]:
    """Split sizes and label counts, and the texts that occur in more than one split (a leak to know of)."""
    texts = {name: np.unique(dataset_text_hashes(split)) for name, split in splits.items()}
    counts = {name: label_counts(split) for name, split in splits.items()}
    shares = {name: np.array(list(c.values())) / max(len(splits[name]), 1) for name, c in counts.items()}
    return {
        "rows": {name: len(split) for name, split in splits.items()},
        "labels": counts,
        # the largest difference between a label's share of a split and its share of train
        "largest_share_gap": {name: round(float(np.abs(shares[name] - shares["train"]).max()), 6)
                              for name in splits if name != "train"},
        "shared_texts": {"train_test": shared(texts["train"], texts["test"]),
                         "train_validation": shared(texts["train"], texts["validation"]),
                         "validation_test": shared(texts["validation"], texts["test"])},
    }


def shared(hashes: np.ndarray, others: np.ndarray) -> int:
    """How many distinct texts two sets of unique text hashes have in common."""
    return len(np.intersect1d(hashes, others, assume_unique=True))
