"""From raw (text, label) tables to Arrow datasets: cleaning, label encoding, sampling, splitting.

The source arrives a chunk at a time (finetune.data.sources): each chunk is cleaned and written to an
Arrow file, and memory keeps only a 128-bit hash per row (for de-duplication); labels are encoded
once every split's label names are known, reading those files back in batches. Splits and samples
are drawn from the label ids alone and written by row index, so no stage holds a whole table.

A table's label is one class name per row (single-label) or a set of label names per row
(multi-label: names joined by ``data.label_separator``, one 0/1 column per label in
``data.label_columns``, or a list in JSON Lines, Parquet or a hub dataset). Multi-label
splits keep every label's share close to train's by iterative stratification
(Sechidis et al., 2011, the ``iterative-stratification`` package).
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from datasets.arrow_writer import ArrowWriter
from datasets.table import MemoryMappedTable
from datasets.utils.stratify import stratified_shuffle_split_generate_indices

from finetune.core.files import save_datasets
from finetune.core.params import DataParams, SplitParams
from finetune.data.labels import (
    LABEL_COLUMN,
    MULTI_LABEL,
    SINGLE_LABEL,
    Task,
    column_chunks,
    label_counts,
    label_feature,
    label_targets,
    labels_per_text,
    task_of,
)
from finetune.data.labels import label_names as feature_label_names
from finetune.data.sources import Chunks, DataSourceError

log = logging.getLogger(__name__)

# What Python's str.strip() and the \s of its regular expressions count as blank, for Arrow's kernels.
BLANKS = "".join(chr(code) for code in range(sys.maxunicode + 1) if chr(code).isspace())
BREAK_TAG = "(?i)<br[" + "".join(f"\\x{{{ord(blank):x}}}" for blank in BLANKS) + "]*/?>"  # RE2 syntax
ENCODE_ROWS = 50_000  # rows encoded and written at a time
GATHER_BYTES = 64 * 2**20  # of a selection's rows gathered at a time (about)


@dataclass
class CleaningReport:
    """What cleaning removed, per split, for the log and the metrics."""

    empty_dropped: dict[str, int] = field(default_factory=dict)
    duplicates_dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class StagedSplit:
    """A split's cleaned rows (text and the label as read: a name, or a list of names) in an Arrow file, and the
    rows that stay once repeated texts go."""

    name: str
    path: Path
    keep: np.ndarray
    hashes: np.ndarray  # of the kept rows' texts

    def kept_batches(self) -> Iterator[pa.RecordBatch]:
        """The rows that stay, read a record batch at a time."""
        start = 0
        with pa.OSFile(str(self.path)) as source:
            for batch in pa.ipc.open_stream(source):
                end = start + batch.num_rows
                first, last = np.searchsorted(self.keep, [start, end])
                yield batch.take(pa.array(self.keep[first:last] - start))
                start = end

    def label_values(self, task: Task) -> set[str]:
        """The label names its kept rows hold."""
        values: set[str] = set()
        for batch in self.kept_batches():
            labels = batch.column(LABEL_COLUMN)
            values |= set(pc.unique(pc.list_flatten(labels) if task == MULTI_LABEL else labels).to_pylist())
        return values


def clean_texts(texts: pa.Array) -> pa.Array:
    """IMDB's ``<br />`` tags become line breaks; surrounding blanks go; a missing text is empty."""
    texts = pc.replace_substring_regex(pc.fill_null(texts.cast(pa.string()), ""), pattern=BREAK_TAG,
                                       replacement="\n")
    return pc.utf8_trim(texts, characters=BLANKS)


def clean_chunk(frame: pd.DataFrame, task: Task) -> tuple[pa.Array, list, int, np.ndarray]:
    """Clean texts and drop empty ones: the texts and labels kept, how many rows were dropped, and (single-label)
    the positions in the chunk of rows that have a text but no label."""
    texts = clean_texts(pa.array(frame["text"], from_pandas=True))
    kept = np.flatnonzero(pc.not_equal(texts, "").to_numpy(zero_copy_only=False))
    unlabelled = np.zeros(0, dtype=np.int64)
    if task == SINGLE_LABEL:
        blank = (frame["label"].isna() | (frame["label"].astype(str).str.strip() == "")).to_numpy()
        unlabelled = kept[blank[kept]]
    labels = frame["label"].tolist()
    if len(kept) < len(texts):
        texts, labels = texts.take(pa.array(kept)), [labels[i] for i in kept]
    return texts, labels, len(frame) - len(kept), unlabelled


SHOWN_ROWS = 5  # rows an error names as examples


def missing_labels_error(split: str, count: int, rows: list[int], data: DataParams) -> DataSourceError:
    """Rows without a label: the column, how many, and the first few by their number in the source (1 = the first
    row after the header; a split of several files counts on across them in name order)."""
    column = ", ".join(data.label_columns) if data.label_columns else data.label_column
    shown = ", ".join(str(row) for row in rows[:SHOWN_ROWS]) + (", ..." if count > SHOWN_ROWS else "")
    return DataSourceError(f"the {split} split has {count} rows without a label in column {column!r} "
                           f"(data.label_column), rows {shown} (1 = the first row after the header): fill or remove "
                           "them")


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


def declared_multi_label(data: DataParams) -> bool:
    """The params say the data is multi-label: a separator, or 0/1 columns."""
    return data.label_separator is not None or data.label_columns is not None


def chunk_task(frame: pd.DataFrame, data: DataParams, task: Task | None) -> Task | None:
    """The task, as far as the rows read so far tell: multi_label when the label values are lists; None while no
    row had a label. A mix of lists and single values, in a chunk or between chunks, is an error."""
    if isinstance(frame["label"].dtype, pd.StringDtype):  # read as text (CSV, TSV): no lists, no row to look at
        kinds = {False} if frame["label"].notna().any() else set()
    else:
        kinds = {is_label_list(v) for v in frame["label"] if not is_missing_label(v)}
    seen = {task == MULTI_LABEL} if task is not None else set()
    if len(kinds | seen) > 1:
        raise DataSourceError(f"data.label_column {data.label_column!r} holds lists of labels in some rows and "
                              "single values in others: make every row a list (multi-label) or a single value")
    if task is None and kinds:
        return MULTI_LABEL if kinds == {True} else SINGLE_LABEL
    return task


def is_missing_label(value: object) -> bool:
    """An empty cell (None, NaN), as opposed to a list of labels, which may be empty."""
    return not is_label_list(value) and bool(pd.isna(value))  # type: ignore[arg-type]


def label_sets(frame: pd.DataFrame, split: str, data: DataParams) -> tuple[pd.DataFrame, list[int], int]:
    """Multi-label: each row's label becomes a sorted list of distinct names; also the positions of the rows that
    have no value and how many have an empty set (errors the caller raises once the whole split is read)."""
    sets, missing = [], []
    for position, value in enumerate(frame["label"]):
        if is_missing_label(value):
            missing.append(position)
            sets.append([])
            continue
        if is_label_list(value):
            names = [label_text(v) for v in value]
        elif data.label_separator is not None:
            names = str(value).split(data.label_separator)
        else:
            raise DataSourceError(f"the {split} split has a label {value!r} that is no list: set "
                                  "data.label_separator to the character joining its names")
        sets.append(sorted({name.strip() for name in names if name.strip()}))
    empty = sum(not labels for labels in sets) - len(missing)
    return frame.assign(label=pd.Series(sets, index=frame.index, dtype=object)), missing, empty


def check_label_sets(split: str, rows: int, empty: int, data: DataParams) -> None:
    if empty and not data.allow_empty_labels:
        raise DataSourceError(
            f"the {split} split has {empty} of {rows} texts with no label: set data.allow_empty_labels "
            "to true if a text may have none (a 'none of these' answer), or remove those rows")


def label_names(values: dict[str, set[str]], labels: list[str | int] | None, task: Task = SINGLE_LABEL) -> list[str]:
    """The class names in order, from the label names of each split: ``data.labels`` if given, else numbers
    numerically and strings alphabetically. A multi-label model learns every label from train, so each must occur
    there."""
    train_values = values["train"]
    seen = set().union(*values.values())
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


def stage_split(split: str, frames: Iterable[pd.DataFrame], data: DataParams, task: Task | None, path: Path,
                report: CleaningReport) -> tuple[StagedSplit, Task | None]:
    """Read a split chunk by chunk: parse label sets, clean, write the rows to ``path`` and hash their texts; the
    rows to keep are the first of each text (with data.drop_duplicates). Memory holds one chunk and a 16-byte hash
    per row."""
    hashes, rows, empty, no_label = [], 0, 0, 0
    missing: list[int] = []  # rows without a label, numbered from 1 in the order read
    writer = None
    try:
        for frame in frames:
            if not declared_multi_label(data):
                task = chunk_task(frame, data, task)
            no_value: list[int] = []  # multi-label: rows whose label cell is empty
            if (task or SINGLE_LABEL) == MULTI_LABEL:
                frame, no_value, chunk_empty = label_sets(frame, split, data)
                no_label += chunk_empty
            texts, labels, dropped, unlabelled = clean_chunk(frame, task or SINGLE_LABEL)
            missing.extend(rows + 1 + np.union1d(unlabelled, np.asarray(no_value, dtype=np.int64)))
            rows += len(frame)
            empty += dropped
            if not texts:
                continue
            hashes.append(text_hashes(texts.to_pylist()))
            table = staged_table(texts, labels, task or SINGLE_LABEL)
            writer = writer or pa.ipc.new_stream(str(path), table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    if missing:
        raise missing_labels_error(split, len(missing), [int(row) for row in missing[:SHOWN_ROWS]], data)
    check_label_sets(split, rows, no_label, data)
    every = np.concatenate(hashes) if hashes else text_hashes([])
    keep = np.sort(np.unique(every, return_index=True)[1]) if data.drop_duplicates else np.arange(len(every))
    if len(keep) == 0:
        raise DataSourceError(f"the {split} split has no rows with text left after cleaning; check data.source "
                              "and data.text_columns")
    report.empty_dropped[split] = empty
    report.duplicates_dropped[split] = len(every) - len(keep)
    return StagedSplit(split, path, keep, every[keep]), task


def staged_table(texts: pa.Array, labels: list, task: Task) -> pa.Table:
    """Cleaned rows as written to a staged split: the text, and the label as a name or a list of names."""
    if task == MULTI_LABEL:
        return pa.table({"text": texts, "label": pa.array(labels, pa.list_(pa.string()))})
    return pa.table({"text": texts, "label": pa.array([label_text(v) for v in labels], pa.string())})


def encode_split(staged: StagedSplit, names: list[str], task: Task, path: Path) -> datasets.Dataset:
    """The kept rows with their labels as class ids, written to ``path`` a chunk at a time and memory-mapped."""
    features = datasets.Features({"text": datasets.Value("string"), LABEL_COLUMN: label_feature(names, task)})
    index = {name: i for i, name in enumerate(names)}
    # The fingerprint (saved in state.json) comes from the content: datasets would derive it from the file's path.
    digest = xxhash.xxh3_128(staged.name.encode() + str(features).encode() + staged.hashes.tobytes())
    with ArrowWriter(features=features, path=str(path)) as writer:
        for rows in rechunked(staged.kept_batches(), ENCODE_ROWS):
            if task == MULTI_LABEL:
                ids = pa.array([sorted(index[name] for name in row) for row in rows[LABEL_COLUMN].to_pylist()],
                               pa.list_(pa.int64()))
            else:
                ids = pc.index_in(rows[LABEL_COLUMN], value_set=pa.array(names)).cast(pa.int64())
            writer.write_table(pa.table({"text": rows["text"], LABEL_COLUMN: ids}))
            flat = [pc.list_value_length(ids), pc.list_flatten(ids)] if task == MULTI_LABEL else [ids]
            digest.update(b"".join(column.to_numpy().tobytes() for column in flat))
        writer.finalize()
    return datasets.Dataset(MemoryMappedTable.from_file(str(path)), split=datasets.NamedSplit(staged.name),
                            fingerprint=digest.hexdigest()[:16])


def rechunked(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``rows`` rows (the last may be shorter), each a single chunk in buffers of its own. The
    saved bytes must not depend on where the source's chunks ended: the writer cuts record batches at chunk
    boundaries, and writes a slice of a longer buffer with some of the bytes that follow it."""
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        pending.append(batch)
        size += batch.num_rows
        while size >= rows:
            table = pa.Table.from_batches(pending)
            yield own_buffers(table.slice(0, rows))
            rest = table.slice(rows)
            pending, size = rest.to_batches(), rest.num_rows
    if size:
        yield own_buffers(pa.Table.from_batches(pending))


def own_buffers(table: pa.Table) -> pa.Table:
    """A copy of ``table`` in one chunk whose buffers hold its rows and nothing else."""
    return table.take(pa.array(np.arange(table.num_rows))).combine_chunks()


def gathered_batches(table: pa.Table, rows: np.ndarray) -> Iterator[pa.RecordBatch]:
    """The rows of ``table`` at positions ``rows``, in that order, GATHER_BYTES at a time. pyarrow's ``take`` on a
    table of many record batches first concatenates each string column whole (a copy of the column for every
    call); here each record batch gives up its own rows, and a block of them is put back in order. A block is
    large, so that the calls (one per record batch and block) stay few."""
    batches = table.to_batches()
    starts = np.cumsum([0] + [batch.num_rows for batch in batches])
    block_rows = max(1, GATHER_BYTES * table.num_rows // max(table.nbytes, 1))
    for first in range(0, len(rows), block_rows):
        block = rows[first:first + block_rows]
        owner = np.searchsorted(starts, block, side="right") - 1
        order = np.argsort(owner, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(owner[order])) + 1)
        parts = [batches[owner[group[0]]].take(pa.array(block[group] - starts[owner[group[0]]])) for group in groups]
        by_batch = pa.Table.from_batches(parts).combine_chunks()
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        yield from by_batch.take(pa.array(back)).to_batches()


def flattened(dataset: datasets.Dataset, path: Path) -> datasets.Dataset:
    """A selection (``select``) written to ``path`` as its rows in order, memory-mapped, with the selection's
    features and fingerprint: ``save_to_disk`` writes the same bytes from it as from the selection, whose own
    gather goes a row at a time in Python. A dataset that is no selection comes back as it is."""
    if dataset._indices is None:
        return dataset
    rows = dataset._indices.column(0).to_numpy().astype(np.int64)  # stored as uint64
    with ArrowWriter(features=dataset.features, path=str(path)) as writer:
        # record batches of the size save_to_disk writes, each in buffers of its own, as its gather leaves them
        for table in rechunked(gathered_batches(dataset.data.table, rows), datasets.config.DEFAULT_MAX_BATCH_SIZE):
            writer.write_table(table)
        writer.finalize()
    return datasets.Dataset(MemoryMappedTable.from_file(str(path)), info=dataset.info, split=dataset.split,
                            fingerprint=dataset._fingerprint)


def save_dataset_dict(splits: datasets.DatasetDict, path: Path) -> None:
    """``splits.save_to_disk(path)``, each selection gathered first into a temporary folder beside ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gather-", dir=path.parent) as scratch:
        save_datasets(datasets.DatasetDict({name: flattened(split, Path(scratch) / f"{name}.arrow")
                                            for name, split in splits.items()}), path)


def build_raw(chunks: Chunks, data: DataParams, seed: int, scratch: Path) -> tuple[datasets.DatasetDict,
                                                                                     CleaningReport]:
    """The download stage's work after reading, a chunk at a time: clean, drop repeated texts, encode labels, cap
    each split. Rows wait in Arrow files in ``scratch`` until every split's labels are known; the datasets returned
    are memory-mapped from there, so ``scratch`` must outlive them."""
    task: Task | None = MULTI_LABEL if declared_multi_label(data) else None
    report, staged = CleaningReport(), {}
    for split, frames in chunks.items():
        staged[split], task = stage_split(split, frames, data, task, scratch / f"{split}.staged.arrow", report)
    task = task or SINGLE_LABEL
    values = {split: part.label_values(task) for split, part in staged.items()}
    names = label_names(values, data.labels or data.label_columns, task)
    raw = {split: encode_split(part, names, task, scratch / f"{split}.arrow") for split, part in staged.items()}
    return datasets.DatasetDict({s: cap_samples(d, data.max_samples, seed) for s, d in raw.items()}), report


def raw_report(raw: datasets.DatasetDict, cleaning: CleaningReport, source: str,
               revision: str | None = None) -> dict[str, object]:
    """The download stage's figures: task, labels, each label's count in train, labels per text, rows per split,
    empty and duplicate texts dropped; the commit a hub dataset was read at."""
    task = task_of(raw["train"].features)
    return {
        "source": source,
        **({"revision": revision} if revision else {}),
        "task": task,
        "labels": feature_label_names(raw["train"].features),
        "train_label_counts": label_counts(raw["train"]),
        **({"train_labels_per_text": labels_per_text(raw["train"])} if task == MULTI_LABEL else {}),
        "rows": {split: len(dataset) for split, dataset in raw.items()},
        "empty_dropped": cleaning.empty_dropped,
        "duplicates_dropped": cleaning.duplicates_dropped,
    }


def cap_samples(dataset: datasets.Dataset, max_samples: int | None, seed: int) -> datasets.Dataset:
    """At most ``max_samples`` rows, drawn reproducibly and stratified by label."""
    if max_samples is None or len(dataset) <= max_samples:
        return dataset
    try:
        kept, _ = stratified_rows(label_targets(dataset), np.arange(len(dataset)), len(dataset) - max_samples, seed)
    except ValueError as err:
        raise DataSourceError(f"data.max_samples={max_samples} cannot be drawn stratified from {len(dataset)} rows "
                              f"({err}); raise data.max_samples or set it to null") from None
    return dataset.select(kept)


def stratified_rows(targets: np.ndarray, rows: np.ndarray, test_size: float | int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` (positions in a split) parted into train and test, ``test_size`` of them (a share, rounded up, or a
    count) in test, stratified by ``targets`` (label_targets of the whole split). Single-label: the draw of
    datasets' train_test_split. Multi-label: iterative stratification, each label's share close in both, rare
    labels included (sizes close to, not exactly, test_size), each part in row order."""
    part = targets[rows]
    if part.ndim == 2:
        # imported here: it pulls in scikit-learn, seconds of start-up that single-label data stages never need
        from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        train, test = next(splitter.split(np.zeros((len(part), 1)), part))
        return rows[np.sort(train)], rows[np.sort(test)]
    n_test = test_size if isinstance(test_size, int) else math.ceil(test_size * len(rows))
    train, test = stratified_indices(part, len(rows) - n_test, n_test, seed)
    return rows[train], rows[test]


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
    """train/validation/test: test kept as given (or carved from train), validation stratified from train. The
    rows are drawn from the labels alone, and each split is one selection of the source's rows."""
    train = raw["train"]
    targets, rows = label_targets(train), np.arange(len(train))
    parts = {}
    for name, size, key in [("test", split.test_size, "split.test_size"), ("validation", split.val_size,
                                                                              "split.val_size")]:
        if name in raw:
            parts[name] = raw[name]
            continue
        try:
            rows, carved = stratified_rows(targets, rows, size, seed)
        except ValueError as err:
            raise DataSourceError(f"{key}={size} cannot split {len(rows)} rows stratified by label ({err}); "
                                  "use more data or another size") from None
        parts[name] = train.select(carved)
    train = train if len(rows) == len(train) else train.select(rows)
    return datasets.DatasetDict({"train": train, "validation": parts["validation"], "test": parts["test"]})


def text_hashes(texts: Iterable[str]) -> np.ndarray:
    """A 128-bit hash of each text: equal texts, equal hashes; a set of them costs 16 bytes a text."""
    return np.frombuffer(b"".join([xxhash.xxh3_128_digest(text.encode("utf-8")) for text in texts]), dtype="V16")


def dataset_text_hashes(dataset: datasets.Dataset) -> np.ndarray:
    """The hash of each row's text, read in batches: memory holds the hashes, never the texts."""
    return np.concatenate([text_hashes(chunk.to_pylist()) for chunk in column_chunks(dataset, "text")]
                          or [text_hashes([])])


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
