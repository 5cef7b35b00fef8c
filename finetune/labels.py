"""The two tasks and how their labels are stored, defined once.

Single-label data stores each row's class as a ``ClassLabel`` id; multi-label data stores
each row's set of labels as a list of ``ClassLabel`` ids (``List(ClassLabel)``, the layout of
hub datasets such as GoEmotions). Both keep the label names in the Arrow features, so every
stage reads the names and the task from its input's features. The model learns a
multi-label set as a multi-hot vector (one sigmoid per label), made at the last moment.
"""

from __future__ import annotations

from typing import Literal

import datasets
import numpy as np
import pyarrow.compute as pc

Task = Literal["single_label", "multi_label"]
SINGLE_LABEL: Task = "single_label"
MULTI_LABEL: Task = "multi_label"
LABEL_COLUMN = "label"


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


def label_array(dataset: datasets.Dataset) -> np.ndarray:
    """Single-label: the class id of each row, read as one Arrow column (indexing a dataset by column name reads
    it row by row)."""
    return dataset.with_format("arrow")[LABEL_COLUMN].to_numpy()


def text_list(dataset: datasets.Dataset) -> list[str]:
    """The texts of a split, read as one Arrow column."""
    return dataset.with_format("arrow")["text"].to_pylist()


def label_column(dataset: datasets.Dataset) -> list[int] | list[list[int]]:
    """Each row's class id, or list of label ids."""
    return dataset.with_format("arrow")[LABEL_COLUMN].to_pylist()


def label_targets(dataset: datasets.Dataset) -> np.ndarray:
    """What scores compare predictions with: class ids, or a multi-hot row per text for label sets."""
    if task_of(dataset.features) == MULTI_LABEL:
        return multi_hot(label_column(dataset), len(label_names(dataset.features)))
    return label_array(dataset)


def label_counts(dataset: datasets.Dataset) -> dict[str, int]:
    """How many rows carry each class or label (a multi-label row counts once for each of its labels)."""
    names = label_names(dataset.features)
    column = dataset.with_format("arrow")[LABEL_COLUMN]
    ids = pc.list_flatten(column) if task_of(dataset.features) == MULTI_LABEL else column
    counts = np.bincount(ids.to_numpy(), minlength=len(names)) if len(ids) else np.zeros(len(names), dtype=int)
    return {name: int(n) for name, n in zip(names, counts, strict=True)}


def labels_per_text(dataset: datasets.Dataset) -> dict[str, int]:
    """Multi-label: how many texts have 0, 1, 2, ... labels."""
    sizes = np.bincount(pc.list_value_length(dataset.with_format("arrow")[LABEL_COLUMN]).to_numpy())
    return {str(n): int(count) for n, count in enumerate(sizes) if count}
