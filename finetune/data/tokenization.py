"""Tokenize datasets with the model's fast tokenizer; no padding is stored.

Texts longer than ``max_length`` tokens keep their start (``head``), their end
(``tail``) or both (``head+tail``: a quarter of the budget from the start, the
rest from the end, after Sun et al., 2019, "How to Fine-Tune BERT for Text
Classification?"), or are read whole (``windows``: one row per window of
``max_length`` tokens, neighbours sharing ``stride`` tokens, at most ``max_windows``
per text, by contract.window_starts). Windowed rows carry a ``document`` column, the
index of their text in its split, so each window keeps its document's label and every
figure can be computed per document, and where the window lies in the text, in characters.
Padding happens per batch at training time.

Each split is tokenized by one process per usable core (``datasets``' ``num_proc``; the
tokenizer's own threads stay off in each). The saved bytes do not depend on the number of
processes: the same inputs give the same Arrow files, so DVC sees nothing to rerun.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc

from finetune.core.contract import WINDOWS, Windows, special_ids, token_rows, window_starts
from finetune.core.cores import usable_cores
from finetune.core.errors import UserError
from finetune.data.documents import DOCUMENT_COLUMN, WINDOW_COLUMNS, WINDOW_END, WINDOW_START

# Part of every tokenized split's fingerprint: raise it when the same inputs should give other token ids.
ENCODING_VERSION = 1
FINGERPRINT_BATCH = 10_000  # rows read at a time to fingerprint a split
ROWS_PER_PROCESS = 1000  # fewer rows than this per process and starting it costs more than it saves


def worker_count(rows: int, cores: int | None = None) -> int:
    """Processes to tokenize ``rows`` rows with: one per usable core, each with ROWS_PER_PROCESS rows at least."""
    return max(1, min(cores or usable_cores(), rows // ROWS_PER_PROCESS))


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special-token ids the tokenizer puts before and after one sequence (e.g. [CLS] and [SEP])."""
    return special_ids(tokenizer("hello", add_special_tokens=True)["input_ids"],
                       tokenizer("hello", add_special_tokens=False)["input_ids"])


class WindowSettingsError(UserError, ValueError):
    """The token budget or the window settings leave no room for text, or windows that cannot move on."""


def check_token_budget(tokenizer: Any, max_length: int, truncation: str, stride: int) -> None:
    """Before any stage runs: a budget that holds some text besides the special tokens and, for windows, a
    stride below the text a window holds (else a window could not move on)."""
    prefix, suffix = special_tokens(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    if budget < 1:
        raise WindowSettingsError(f"tokenize.max_length: {max_length} tokens hold no text once the tokenizer's "
                                  f"{len(prefix) + len(suffix)} special tokens are in: raise tokenize.max_length")
    if truncation == WINDOWS and stride >= budget:
        raise WindowSettingsError(f"tokenize.stride: {stride} is not below the {budget} tokens of text a "
                                  f"{max_length}-token window holds (less {len(prefix) + len(suffix)} special "
                                  f"tokens), so windows could not move on: set tokenize.stride below {budget}, "
                                  f"e.g. {budget // 4}")


def encode_batch(texts: list[str], tokenizer: Any, max_length: int, truncation: str,
                 windows: Windows | None = None) -> dict[str, list]:
    """Token ids (and masks) for a batch of texts, unpadded: one row per text, or with ``windows`` (truncation
    ``windows``) one row per window and a ``document`` list giving each row's text (its index in ``texts``)."""
    if truncation == WINDOWS and windows is None:
        raise ValueError("truncation windows needs the window settings (stride, max_windows)")
    if truncation == "head" and windows is None:  # the tokenizer's own truncation does exactly this, in Rust
        return dict(tokenizer(texts, truncation=True, max_length=max_length))
    prefix, suffix = special_tokens(tokenizer)
    bodies = tokenizer(texts, add_special_tokens=False, verbose=False, return_offsets_mapping=windows is not None)
    input_ids, owners = token_rows(bodies["input_ids"], prefix, suffix, max_length, truncation, windows)
    encoded: dict[str, list] = {"input_ids": input_ids, "attention_mask": [[1] * len(ids) for ids in input_ids]}
    if "token_type_ids" in tokenizer.model_input_names:
        encoded["token_type_ids"] = [[0] * len(ids) for ids in input_ids]
    if windows is not None:
        encoded[DOCUMENT_COLUMN] = owners
        budget = max_length - len(prefix) - len(suffix)
        encoded[WINDOW_START], encoded[WINDOW_END] = window_characters(bodies["offset_mapping"], budget, windows)
    return encoded


def window_characters(offsets: list[list[tuple[int, int]]], budget: int,
                      windows: Windows) -> tuple[list[int], list[int]]:
    """Where each window starts and ends in its text, in characters (from the tokens' offsets), so a report can
    quote the window that drove an answer."""
    starts: list[int] = []
    ends: list[int] = []
    for spans in offsets:
        for first in window_starts(len(spans), budget, windows.stride, windows.max_windows):
            last = min(first + budget, len(spans)) - 1
            starts.append(spans[first][0] if spans else 0)
            ends.append(spans[last][1] if spans else 0)
    return starts, ends


def encode_split_batch(batch: dict[str, list], indices: list[int], tokenizer: Any, max_length: int,
                       truncation: str, windows: Windows | None) -> dict[str, list]:
    """One ``datasets.map`` batch: token ids in place of the texts; with windows, each window with its
    document's index in the split and its document's label."""
    encoded = encode_batch(batch["text"], tokenizer, max_length, truncation, windows)
    if windows is None:
        return encoded
    owners = encoded[DOCUMENT_COLUMN]
    encoded[DOCUMENT_COLUMN] = [indices[i] for i in owners]
    encoded["label"] = [batch["label"][i] for i in owners]
    return encoded


def tokenizer_digest(tokenizer: Any) -> str:
    """A hash of the tokenizer's vocabulary and rules. Its truncation and padding settings are left out: a call
    with ``truncation=True`` stores them in the tokenizer, so they depend on what ran before in the process."""
    rules = json.loads(tokenizer.backend_tokenizer.to_str())
    rules.pop("truncation", None)
    rules.pop("padding", None)
    return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()


def content_fingerprint(split: datasets.Dataset, tokenizer: Any, max_length: int, truncation: str,
                        windows: Windows | None = None) -> str:
    """A fingerprint of what the tokenized split holds: its texts and labels, the tokenizer's vocabulary and
    rules, max_length, truncation and the window settings. ``datasets`` would hash the map function's code
    instead, so that a refactor of this module changed the saved bytes and DVC retrained an identical model.
    Read in batches, so memory stays flat however large the split."""
    digest = hashlib.sha256()
    for batch in split.select_columns(["text", "label"]).iter(batch_size=FINGERPRINT_BATCH):
        for text in batch["text"]:
            digest.update(text.encode("utf-8") + b"\0")
        digest.update(json.dumps(batch["label"]).encode())
    settings = {"version": ENCODING_VERSION, "max_length": max_length, "truncation": truncation,
                "features": str(split.features), "tokenizer": tokenizer_digest(tokenizer)}
    if windows is not None:  # absent otherwise: the fingerprints of earlier runs stay as they were
        settings["windows"] = [windows.stride, windows.max_windows]
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def tokenize_dataset(splits: datasets.DatasetDict, tokenizer: Any, max_length: int, truncation: str,
                     cores: int | None = None, windows: Windows | None = None) -> datasets.DatasetDict:
    """Replace the text column by token ids, on ``cores`` processes (default: every usable core); the label
    column stays. With truncation ``windows`` (and its ``windows`` settings) a text becomes as many rows as it
    has windows, each with a ``document`` column."""
    reading = windows if truncation == WINDOWS else None
    tokenized = {}
    for name, split in splits.items():
        processes = worker_count(len(split), cores)
        tokenized[name] = split.map(
            encode_split_batch, fn_kwargs={"tokenizer": tokenizer, "max_length": max_length,
                                           "truncation": truncation, "windows": reading},
            with_indices=True, batched=True, batch_size=1000,
            # windows: a text becomes several rows, so every column is written anew (the label's type kept)
            remove_columns=split.column_names if reading else ["text"],
            features=windowed_features(split.features, tokenizer) if reading else None,
            desc=f"tokenize {name}", num_proc=processes if processes > 1 else None,
            new_fingerprint=content_fingerprint(split, tokenizer, max_length, truncation, reading))
    return datasets.DatasetDict(tokenized)


def windowed_features(features: datasets.Features, tokenizer: Any) -> datasets.Features:
    """The features of a windowed split: the label's type kept (its class names), the token columns typed as
    ``datasets`` types them for the other strategies, and the document index."""
    columns = {"label": features["label"], "input_ids": datasets.List(datasets.Value("int32"))}
    if "token_type_ids" in tokenizer.model_input_names:
        columns["token_type_ids"] = datasets.List(datasets.Value("int8"))
    columns["attention_mask"] = datasets.List(datasets.Value("int8"))
    return datasets.Features(columns | {name: datasets.Value("int64") for name in WINDOW_COLUMNS})


def token_lengths(dataset: datasets.Dataset) -> np.ndarray:
    """The number of tokens of each row, read from Arrow (no Python list per row)."""
    return pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_numpy()


def truncated_share(dataset: datasets.Dataset, max_length: int) -> float:
    """Share of rows that hit the token budget (their text was probably cut)."""
    if len(dataset) == 0:
        return 0.0
    return float(np.mean(token_lengths(dataset) >= max_length))
