"""Predict a file of any size: read in chunks, each chunk run in length-sorted batches, rows written as they come.

Input: CSV/TSV (a text column), JSON Lines (a text field) or plain text (one text per line).
Output: CSV or JSON Lines with, per input row, its row number, the label (or UNCERTAIN), the most
probable label, the confidence and the probability of each label. The output is written to a
``.part`` file renamed at the end, so an interrupted run never leaves a half file under the
output's name, and an existing output is replaced only by a complete one (with ``--overwrite``).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finetune.core.contract import LABEL_SET_SEPARATOR, ModelInfo, Prediction, Predictor, probability_column
from finetune.core.errors import UserError

log = logging.getLogger(__name__)

INPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".txt": "txt"}
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}


class BatchInputError(UserError, ValueError):
    """The input or output file cannot be used as asked; the message names the fix."""


def file_format(path: Path, formats: dict[str, str], role: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in formats:
        raise BatchInputError(f"{role} {path}: unknown format {suffix or '(no suffix)'}; use "
                              + ", ".join(formats))
    return formats[suffix]


def check_files(source: Path, target: Path, text_column: str, overwrite: bool) -> None:
    """Everything that can be checked before the model loads: formats, the text column, the output."""
    if not source.is_file():
        raise BatchInputError(f"--input {source} does not exist")
    kind = file_format(source, INPUT_FORMATS, "--input")
    if target.resolve() == source.resolve():
        raise BatchInputError("--output must not be the --input file")
    file_format(target, OUTPUT_FORMATS, "--output")
    if target.exists() and not overwrite:
        raise BatchInputError(f"--output {target} already exists: pass --overwrite to replace it, "
                              "or choose another file")
    if kind in ("csv", "tsv"):
        with source.open(encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle, delimiter="\t" if kind == "tsv" else ","), [])
        if text_column not in header:
            raise BatchInputError(f"--input {source} has no column {text_column!r} (columns: {', '.join(header)}); "
                                  "name the text column with --text-column")


def read_chunks(source: Path, text_column: str, chunk_rows: int) -> Iterator[list[tuple[int, str]]]:
    """(row number, text) pairs in chunks; row numbers count data rows from 1 (a CSV header is not a row)."""
    kind = file_format(source, INPUT_FORMATS, "--input")
    chunk: list[tuple[int, str]] = []
    if kind in ("csv", "tsv"):
        csv.field_size_limit(1 << 30)  # reviews can be long: the default limit is 128 kB per field
        with source.open(encoding="utf-8-sig", newline="") as handle:
            for number, record in enumerate(csv.DictReader(handle, delimiter="\t" if kind == "tsv" else ","), 1):
                chunk.append((number, record[text_column] or ""))
                if len(chunk) == chunk_rows:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk
        return
    with source.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if kind == "jsonl":
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict) or text_column not in record:
                    raise BatchInputError(f"--input {source} line {number} has no field {text_column!r}; "
                                          "name the text field with --text-column")
                value = record[text_column]
                text = "" if value is None else str(value)  # null is a missing text, skipped like a blank one
            else:
                text = line.rstrip("\r\n")
            chunk.append((number, text))
            if len(chunk) == chunk_rows:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def output_fields(info: ModelInfo) -> list[str]:
    """The output's columns: a label set's uncertain labels too, for a multi-label model."""
    return ["row", "label", "predicted", "confidence", "uncertain",
            *(["uncertain_labels"] if info.multi_label else []), *[probability_column(name) for name in info.labels]]


def output_row(number: int, p: Prediction, info: ModelInfo) -> dict[str, Any]:
    row = {"row": number, "label": p.label, "predicted": p.predicted, "confidence": round(p.confidence, 6),
           "uncertain": p.uncertain}
    if info.multi_label:
        row["uncertain_labels"] = LABEL_SET_SEPARATOR.join(p.uncertain_labels)
    return row | {probability_column(name): round(p.probabilities[name], 6) for name in info.labels}


def output_rows(numbers: list[int], predictions: list[Prediction], info: ModelInfo) -> list[dict[str, Any]]:
    return [output_row(number, p, info) for number, p in zip(numbers, predictions, strict=True)]


def predict_file(predictor: Predictor, source: Path, target: Path, text_column: str = "text",
                 chunk_rows: int = 4096, overwrite: bool = False, progress: bool = True) -> dict[str, int]:
    """Predict every non-blank text of ``source`` into ``target``; counts of rows written and blank rows skipped."""
    from tqdm.auto import tqdm

    check_files(source, target, text_column, overwrite)
    kind = file_format(target, OUTPUT_FORMATS, "--output")
    part = target.with_name(target.name + ".part")
    written = skipped = 0
    fields = output_fields(predictor.info)
    try:
        with part.open("w", encoding="utf-8", newline="") as handle, tqdm(unit=" texts", disable=not progress) as bar:
            writer = csv.DictWriter(handle, fieldnames=fields) if kind == "csv" else None
            if writer:
                writer.writeheader()
            for chunk in read_chunks(source, text_column, chunk_rows):
                kept = [(number, text) for number, text in chunk if text.strip()]
                skipped += len(chunk) - len(kept)
                if kept:
                    numbers, texts = zip(*kept, strict=True)
                    rows = output_rows(list(numbers), predictor.predict(list(texts)), predictor.info)
                    if writer:
                        writer.writerows(rows)
                    else:
                        handle.writelines(json.dumps(row) + "\n" for row in rows)
                    written += len(rows)
                bar.update(len(chunk))
    except BaseException:
        part.unlink(missing_ok=True)  # no half file left behind; an existing output stays as it was
        raise
    os.replace(part, target)
    if skipped:
        log.warning("%d blank texts skipped (their rows are missing from %s)", skipped, target)
    return {"written": written, "skipped": skipped}
