"""From raw (text, label) tables to Arrow datasets: cleaning, label encoding, sampling, splitting."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import datasets
import numpy as np
import pandas as pd

from finetune.params import DataParams, SplitParams
from finetune.sources import DataSourceError, Frames

log = logging.getLogger(__name__)

BREAK_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)


@dataclass
class CleaningReport:
    """What cleaning removed, per split, for the log and the metrics."""

    empty_dropped: dict[str, int] = field(default_factory=dict)
    duplicates_dropped: dict[str, int] = field(default_factory=dict)


def clean_text(text: str) -> str:
    """IMDB's ``<br />`` tags become line breaks; surrounding blanks go."""
    return BREAK_TAG.sub("\n", text).strip()


def clean_frames(frames: Frames, drop_duplicates: bool) -> tuple[Frames, CleaningReport]:
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
        if frame["label"].isna().any() or (frame["label"].astype(str).str.strip() == "").any():
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


def label_names(frames: Frames, labels: list[str | int] | None) -> list[str]:
    """The class names in order: ``data.labels`` if given, else numbers numerically and strings alphabetically."""
    train_values = {label_text(v) for v in frames["train"]["label"]}
    seen = set().union(*({label_text(v) for v in f["label"]} for f in frames.values()))
    if labels is not None:
        names = [str(v) for v in labels]
        unknown = sorted(seen - set(names))
        if unknown:
            raise DataSourceError(f"data.labels lists {names}, but the data also has label(s) {unknown}: add them")
    else:
        names = label_order(train_values)
        unseen = sorted(seen - train_values)
        if unseen:
            raise DataSourceError(f"label(s) {unseen} occur outside the train split but never in it; "
                                  "the model cannot learn them: remove those rows or add training examples")
    if len(train_values) < 2:
        raise DataSourceError(f"the train split has a single class ({sorted(train_values)}); "
                              "a classifier needs at least two: check data.label_column")
    return names


def to_dataset_dict(frames: Frames, names: list[str]) -> datasets.DatasetDict:
    """Arrow datasets with a ``text`` column and a ``label`` ClassLabel carrying the names."""
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    index = {name: i for i, name in enumerate(names)}
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict(
            {"text": frame["text"].tolist(), "label": [index[label_text(v)] for v in frame["label"]]},
            features=features, split=split)
        for split, frame in frames.items()
    })


def cap_samples(dataset: datasets.Dataset, max_samples: int | None, seed: int) -> datasets.Dataset:
    """At most ``max_samples`` rows, drawn reproducibly and stratified by label."""
    if max_samples is None or len(dataset) <= max_samples:
        return dataset
    try:
        return dataset.train_test_split(train_size=max_samples, stratify_by_column="label", seed=seed)["train"]
    except ValueError as err:
        raise DataSourceError(f"data.max_samples={max_samples} cannot be drawn stratified from {len(dataset)} rows "
                              f"({err}); raise data.max_samples or set it to null") from None


def build_raw(frames: Frames, data: DataParams, seed: int) -> tuple[datasets.DatasetDict, CleaningReport]:
    """The download stage's work after reading: clean, encode labels, cap each split."""
    cleaned, report = clean_frames(frames, data.drop_duplicates)
    names = label_names(cleaned, data.labels)
    raw = to_dataset_dict(cleaned, names)
    return datasets.DatasetDict({s: cap_samples(d, data.max_samples, seed) for s, d in raw.items()}), report


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
    try:
        return dataset.train_test_split(test_size=size, stratify_by_column="label", seed=seed)
    except ValueError as err:
        raise DataSourceError(f"{key}={size} cannot split {len(dataset)} rows stratified by label ({err}); "
                              "use more data or another size") from None


def split_report(splits: datasets.DatasetDict) -> dict[str, object]:
    """Split sizes and label counts, and the texts that occur in more than one split (a leak to know of)."""
    texts = {name: set(split["text"]) for name, split in splits.items()}
    names = splits["train"].features["label"].names
    return {
        "rows": {name: len(split) for name, split in splits.items()},
        "labels": {name: {names[i]: int(n) for i, n in enumerate(np.bincount(split["label"], minlength=len(names)))}
                   for name, split in splits.items()},
        "shared_texts": {"train_test": len(texts["train"] & texts["test"]),
                         "train_validation": len(texts["train"] & texts["validation"]),
                         "validation_test": len(texts["validation"] & texts["test"])},
    }
