"""Predict a file of any size: read in chunks, each chunk run in length-sorted batches, rows written as they come.

Input: CSV/TSV or Parquet (a text column), JSON Lines (a text field) or plain text (one text per line).
Output: CSV or JSON Lines with, per input row, its row number, the id columns asked for
(``--id-column``, kept as they are written), the label (or UNCERTAIN), the most probable
label, the confidence and the probability of each label. The output is written to a
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

INPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".txt": "txt", ".parquet": "parquet"}
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}


class BatchInputError(UserError, ValueError):
    """The input or output file cannot be used as asked; the message names the fix."""


def file_format(path: Path, formats: dict[str, str], role: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in formats:
        raise BatchInputError(f"{role} {path}: unknown format {suffix or '(no suffix)'}; use "
                              + ", ".join(formats))
    return formats[suffix]


def check_files(source: Path, target: Path, text_column: str, overwrite: bool,
                id_columns: tuple[str, ...] = ()) -> None:
    """Everything that can be checked before the model loads: formats, the text and id columns, the output."""
    if not source.is_file():
        raise BatchInputError(f"--input {source} does not exist")
    kind = file_format(source, INPUT_FORMATS, "--input")
    if target.resolve() == source.resolve():
        raise BatchInputError("--output must not be the --input file")
    file_format(target, OUTPUT_FORMATS, "--output")
    if target.exists() and not overwrite:
        raise BatchInputError(f"--output {target} already exists: pass --overwrite to replace it, "
                              "or choose another file")
    reserved = [name for name in id_columns if name in RESERVED_COLUMNS or name == text_column]
    if reserved:
        raise BatchInputError(f"--id-column {reserved[0]!r} is a column the predictions have (or the text): keep "
                              "ids in columns of other names")
    if kind == "txt" and id_columns:
        raise BatchInputError(f"--input {source} is plain text, one text per line, without columns: --id-column "
                              "needs a CSV, TSV or JSON Lines file (the row number identifies a line)")
    if kind in ("csv", "tsv", "parquet"):
        header = parquet_columns(source) if kind == "parquet" else csv_header(source, kind)
        if text_column not in header:
            raise BatchInputError(f"--input {source} has no column {text_column!r} (columns: {', '.join(header)}); "
                                  "name the text column with --text-column")
        missing = [name for name in id_columns if name not in header]
        if missing:
            raise BatchInputError(f"--input {source} has no column {missing[0]!r} (columns: {', '.join(header)}); "
                                  "name the id columns with --id-column")


def csv_header(source: Path, kind: str) -> list[str]:
    with source.open(encoding="utf-8-sig", newline="") as handle:
        return next(csv.reader(handle, delimiter="\t" if kind == "tsv" else ","), [])


def parquet_columns(source: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(source).names
    except Exception as err:  # not Parquet, or cut short: pyarrow's own error says which
        raise BatchInputError(f"--input {source} cannot be read as Parquet ({err}): repair or replace it") from None


Row = tuple[int, str, dict[str, Any]]  # row number, text, id columns


def read_chunks(source: Path, text_column: str, chunk_rows: int, id_columns: tuple[str, ...] = ()) -> Iterator[
        list[Row]]:
    """(row number, text, ids) in chunks; row numbers count data rows from 1 (a CSV header is not a row)."""
    kind = file_format(source, INPUT_FORMATS, "--input")
    chunk: list[Row] = []
    if kind == "parquet":  # read a row group at a time, never the whole file
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(source).iter_batches(batch_size=chunk_rows, columns=[text_column, *id_columns]):
            columns = batch.to_pydict()
            rows = []
            for i, value in enumerate(columns[text_column]):
                number += 1
                rows.append((number, "" if value is None else str(value), {n: columns[n][i] for n in id_columns}))
            yield rows
        return
    if kind in ("csv", "tsv"):
        csv.field_size_limit(1 << 30)  # reviews can be long: the default limit is 128 kB per field
        with source.open(encoding="utf-8-sig", newline="") as handle:
            for number, record in enumerate(csv.DictReader(handle, delimiter="\t" if kind == "tsv" else ","), 1):
                chunk.append((number, record[text_column] or "", {name: record[name] for name in id_columns}))
                if len(chunk) == chunk_rows:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk
        return
    with source.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            ids: dict[str, Any] = {}
            if kind == "jsonl":
                if not line.strip():
                    continue
                record = json.loads(line)
                for name in (text_column, *id_columns):
                    if not isinstance(record, dict) or name not in record:
                        option = "--text-column" if name == text_column else "--id-column"
                        raise BatchInputError(f"--input {source} line {number} has no field {name!r}; name the "
                                              f"field with {option}")
                value = record[text_column]
                text = "" if value is None else str(value)  # null is a missing text, skipped like a blank one
                ids = {name: record[name] for name in id_columns}
            else:
                text = line.rstrip("\r\n")
            chunk.append((number, text, ids))
            if len(chunk) == chunk_rows:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


RESERVED_COLUMNS = ("row", "label", "predicted", "confidence", "uncertain", "uncertain_labels")


def output_fields(info: ModelInfo, id_columns: tuple[str, ...] = ()) -> list[str]:
    """The output's columns: the id columns after the row number; a label set's uncertain labels too, for a
    multi-label model."""
    return ["row", *id_columns, "label", "predicted", "confidence", "uncertain",
            *(["uncertain_labels"] if info.multi_label else []), *[probability_column(name) for name in info.labels]]


def answer_fields(p: Prediction, info: ModelInfo) -> dict[str, Any]:
    """A prediction as the columns of every predictions file (this one's, Ray's shards)."""
    row = {"label": p.label, "predicted": p.predicted, "confidence": round(p.confidence, 6), "uncertain": p.uncertain}
    if info.multi_label:
        row["uncertain_labels"] = LABEL_SET_SEPARATOR.join(p.uncertain_labels)
    return row | {probability_column(name): round(p.probabilities[name], 6) for name in info.labels}


def output_row(number: int, ids: dict[str, Any], p: Prediction, info: ModelInfo) -> dict[str, Any]:
    return {"row": number, **ids, **answer_fields(p, info)}


def predict_file(predictor: Predictor, source: Path, target: Path, text_column: str = "text",
                 chunk_rows: int = 4096, overwrite: bool = False, progress: bool = True,
                 id_columns: tuple[str, ...] = ()) -> dict[str, int]:
    """Predict every non-blank text of ``source`` into ``target``; counts of rows written and blank rows skipped."""
    from tqdm.auto import tqdm

    check_files(source, target, text_column, overwrite, id_columns)
    kind = file_format(target, OUTPUT_FORMATS, "--output")
    part = target.with_name(target.name + ".part")
    written = skipped = 0
    try:
        with part.open("w", encoding="utf-8", newline="") as handle, tqdm(unit=" texts", disable=not progress) as bar:
            writer = csv.DictWriter(handle, fieldnames=output_fields(predictor.info, id_columns)) \
                if kind == "csv" else None
            if writer:
                writer.writeheader()
            for chunk in read_chunks(source, text_column, chunk_rows, id_columns):
                kept = [row for row in chunk if row[1].strip()]
                skipped += len(chunk) - len(kept)
                if kept:
                    answers = predictor.predict([text for _, text, _ in kept])
                    rows = [output_row(number, ids, answer, predictor.info)
                            for (number, _, ids), answer in zip(kept, answers, strict=True)]
                    if writer:
                        writer.writerows(rows)
                    else:
                        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
                    written += len(rows)
                bar.update(len(chunk))
    except BaseException:
        part.unlink(missing_ok=True)  # no half file left behind; an existing output stays as it was
        raise
    os.replace(part, target)
    if skipped:
        log.warning("%d blank texts skipped (their rows are missing from %s)", skipped, target)
    return {"written": written, "skipped": skipped}
