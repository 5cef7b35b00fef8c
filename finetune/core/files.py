"""Writers and readers of the files stages hand each other (byte-stable JSON and CSV tables, Arrow datasets),
and file hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

# Columns that hold label names or text: read back as strings, whatever they look like ("1", "01", "True", "NA").
STRING_COLUMNS = ("label", "predicted", "suggested", "text", "slices", "missed", "spurious", "worst_label")


def write_json(data: Any, path: str | Path) -> None:
    """Pretty, key-sorted JSON with a trailing newline: byte-stable and diff-friendly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    """CSV with a fixed float format, so reruns are byte-identical."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format="%.6f", lineterminator="\n")


def read_table(path: str | Path) -> pd.DataFrame:
    """A table written by :func:`write_table`, with label and text columns as strings (pandas would read the
    labels ``1..4`` as integers and ``NA`` as missing)."""
    return pd.read_csv(path, dtype=dict.fromkeys(STRING_COLUMNS, str), keep_default_na=False)


def save_datasets(splits: Any, path: str | Path) -> None:
    """``splits.save_to_disk(path)`` (a datasets DatasetDict) without its "Saving the dataset" bar per split, which
    is noise in a stage's log."""
    import datasets

    shown = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        splits.save_to_disk(str(path))
    finally:
        if shown:
            datasets.enable_progress_bars()


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes, read in chunks (files of any size)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()
