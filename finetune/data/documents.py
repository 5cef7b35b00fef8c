"""Documents and their windows: tokenized data read in windows (tokenize.truncation windows) has one row per
window and a ``document`` column, the index in its split of the text each row is a window of. Every figure is
computed per document; these helpers give each row's document, one row per document, and the window counts.
Each window also says where it lies in its document's text (``window_start``, ``window_end``, in characters).
Data without the column has one row per document."""

from __future__ import annotations

import datasets
import numpy as np

DOCUMENT_COLUMN = "document"
WINDOW_START, WINDOW_END = "window_start", "window_end"  # where a window lies in its document, in characters
WINDOW_COLUMNS = (DOCUMENT_COLUMN, WINDOW_START, WINDOW_END)  # what windowed data holds besides tokens and labels


def document_ids(dataset: datasets.Dataset) -> np.ndarray:
    """The document of each row: the ``document`` column of windowed data, else each row its own."""
    if DOCUMENT_COLUMN in dataset.column_names:
        return dataset.with_format("arrow")[DOCUMENT_COLUMN].to_numpy()
    return np.arange(len(dataset))


def document_starts(documents: np.ndarray) -> np.ndarray:
    """The row where each document's windows begin, in document order (a document's windows are contiguous)."""
    documents = np.asarray(documents)
    return np.flatnonzero(np.r_[True, documents[1:] != documents[:-1]]) if len(documents) else np.arange(0)


def first_windows(dataset: datasets.Dataset) -> datasets.Dataset:
    """One row per document (its first window), in document order: what the documents' labels are read from."""
    if DOCUMENT_COLUMN not in dataset.column_names:
        return dataset
    return dataset.select(document_starts(document_ids(dataset)))


def window_counts(dataset: datasets.Dataset) -> np.ndarray:
    """How many rows (windows) each document has, in document order."""
    return np.bincount(document_ids(dataset), minlength=0)
