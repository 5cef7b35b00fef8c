"""The two tasks and how their labels are stored, defined once.

Single-label data stores each row's class as a ``ClassLabel`` id; multi-label data stores
each row's set of labels as a list of ``ClassLabel`` ids (``List(ClassLabel)``, the layout of
hub datasets such as GoEmotions). Both keep the label names in the Arrow features, so every
stage reads the names and the task from its input's features. The model learns a
multi-label set as a multi-hot vector (one sigmoid per label), made at the last moment.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Task = Literal["single_label", "multi_label"]
SINGLE_LABEL: Task = "single_label"
MULTI_LABEL: Task = "multi_label"
LABEL_COLUMN = "label"
COLUMN_BATCH = 100_000  # rows of a column read at a time


def label_feature(names: list[str], task: Task) -> datasets.ClassLabel | datasets.List:
    """The ``label`` feature for ``names``: a ClassLabel, or a list of them for multi-label data."""
    classes = datasets.ClassLabel(names=names)
    return datasets.List(classes) if task == MULTI_LABEL else classes


def task_of(features: datasets.Features) -> Task:
    """multi_label when the label column holds lists of class ids, else single_label."""
    return MULTI_LABEL if isinstance(features[LABEL_COLUMN], datasets.List) else SINGLE_LABEL


def label_names(features: datasets.Features) -> list[str]:
    """The class (single-label) or label (multi-label) names, in the model's output order."""
    feature = features[LABEL_COLUMN]
    return list((feature.feature if isinstance(feature, datasets.List) else feature).names)


def multi_hot(label_sets: list[list[int]], num_labels: int) -> np.ndarray:
    """Rows of 0/1 floats, one column per label: what a sigmoid-per-label model learns from."""
    matrix = np.zeros((len(label_sets), num_labels), dtype=np.float32)
    for row, ids in enumerate(label_sets):
        matrix[row, ids] = 1.0
    return matrix


def column_chunks(dataset: datasets.Dataset, name: str) -> Iterator[pa.Array]:
    """A column of a split, COLUMN_BATCH rows at a time, as Arrow arrays. Indexing a dataset by column name reads it
    row by row, and reading a whole column of a split that is a selection of rows takes every column's rows."""
    for batch in dataset.select_columns([name]).with_format("arrow").iter(batch_size=COLUMN_BATCH):
        yield batch[name].combine_chunks() if isinstance(batch[name], pa.ChunkedArray) else batch[name]


def label_array(dataset: datasets.Dataset) -> np.ndarray:
    """Single-label: the class id of each row."""
    return np.concatenate([chunk.to_numpy() for chunk in column_chunks(dataset, LABEL_COLUMN)] or [np.zeros(0, int)])


def text_list(dataset: datasets.Dataset) -> list[str]:
    """The texts of a split."""
    return [text for chunk in column_chunks(dataset, "text") for text in chunk.to_pylist()]


def label_column(dataset: datasets.Dataset) -> list[int] | list[list[int]]:
    """Each row's class id, or list of label ids."""
    return [ids for chunk in column_chunks(dataset, LABEL_COLUMN) for ids in chunk.to_pylist()]


def label_targets(dataset: datasets.Dataset) -> np.ndarray:
    """What scores compare predictions with: class ids, or a multi-hot row per text for label sets."""
    if task_of(dataset.features) == MULTI_LABEL:
        return multi_hot(label_column(dataset), len(label_names(dataset.features)))
    return label_array(dataset)


def label_counts(dataset: datasets.Dataset) -> dict[str, int]:
    """How many rows carry each class or label (a multi-label row counts once for each of its labels)."""
    names = label_names(dataset.features)
    multi_label = task_of(dataset.features) == MULTI_LABEL
    counts = np.zeros(len(names), dtype=np.int64)
    for chunk in column_chunks(dataset, LABEL_COLUMN):
        ids = pc.list_flatten(chunk) if multi_label else chunk
        counts += np.bincount(ids.to_numpy(), minlength=len(names))
    return {name: int(n) for name, n in zip(names, counts, strict=True)}


def labels_per_text(dataset: datasets.Dataset) -> dict[str, int]:
    """Multi-label: how many texts have 0, 1, 2, ... labels."""
    sizes = np.concatenate([pc.list_value_length(chunk).to_numpy() for chunk in column_chunks(dataset, LABEL_COLUMN)])
    return {str(n): int(count) for n, count in enumerate(np.bincount(sizes)) if count}
