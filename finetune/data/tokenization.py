"""Tokenize datasets with the model's fast tokenizer; no padding is stored.

Texts longer than ``max_length`` tokens keep their start (``head``), their end
(``tail``) or both (``head+tail``: a quarter of the budget from the start, the
rest from the end, after Sun et al., 2019, "How to Fine-Tune BERT for Text
Classification?"). Padding happens per batch at training time.

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

from finetune.core.contract import keep_tokens, special_ids
from finetune.core.cores import usable_cores

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


def encode_batch(texts: list[str], tokenizer: Any, max_length: int, truncation: str) -> dict[str, list]:
    """Token ids (and masks) for a batch of texts, unpadded."""
    if truncation == "head":  # the tokenizer's own truncation does exactly this, in Rust
        return dict(tokenizer(texts, truncation=True, max_length=max_length))
    prefix, suffix = special_tokens(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    bodies = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    input_ids = [prefix + keep_tokens(ids, budget, truncation) + suffix for ids in bodies]
    encoded: dict[str, list] = {"input_ids": input_ids, "attention_mask": [[1] * len(ids) for ids in input_ids]}
    if "token_type_ids" in tokenizer.model_input_names:
        encoded["token_type_ids"] = [[0] * len(ids) for ids in input_ids]
    return encoded


def tokenizer_digest(tokenizer: Any) -> str:
    """A hash of the tokenizer's vocabulary and rules. Its truncation and padding settings are left out: a call
    with ``truncation=True`` stores them in the tokenizer, so they depend on what ran before in the process."""
    rules = json.loads(tokenizer.backend_tokenizer.to_str())
    rules.pop("truncation", None)
    rules.pop("padding", None)
    return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()


def content_fingerprint(split: datasets.Dataset, tokenizer: Any, max_length: int, truncation: str) -> str:
    """A fingerprint of what the tokenized split holds: its texts and labels, the tokenizer's vocabulary and
    rules, max_length and truncation. ``datasets`` would hash the map function's code instead, so that a
    refactor of this module changed the saved bytes and DVC retrained an identical model. Read in batches, so
    memory stays flat however large the split."""
    digest = hashlib.sha256()
    for batch in split.select_columns(["text", "label"]).iter(batch_size=FINGERPRINT_BATCH):
        for text in batch["text"]:
            digest.update(text.encode("utf-8") + b"\0")
        digest.update(json.dumps(batch["label"]).encode())
    settings = {"version": ENCODING_VERSION, "max_length": max_length, "truncation": truncation,
                "features": str(split.features), "tokenizer": tokenizer_digest(tokenizer)}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def tokenize_dataset(splits: datasets.DatasetDict, tokenizer: Any, max_length: int, truncation: str,
                     cores: int | None = None) -> datasets.DatasetDict:
    """Replace the text column by token ids, on ``cores`` processes (default: every usable core); the label
    column stays."""
    tokenized = {}
    for name, split in splits.items():
        processes = worker_count(len(split), cores)
        tokenized[name] = split.map(
            lambda batch: encode_batch(batch["text"], tokenizer, max_length, truncation), batched=True,
            batch_size=1000, remove_columns=["text"], desc=f"tokenize {name}",
            num_proc=processes if processes > 1 else None,
            new_fingerprint=content_fingerprint(split, tokenizer, max_length, truncation))
    return datasets.DatasetDict(tokenized)


def token_lengths(dataset: datasets.Dataset) -> np.ndarray:
    """The number of tokens of each row, read from Arrow (no Python list per row)."""
    return pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_numpy()


def truncated_share(dataset: datasets.Dataset, max_length: int) -> float:
    """Share of rows that hit the token budget (their text was probably cut)."""
    if len(dataset) == 0:
        return 0.0
    return float(np.mean(token_lengths(dataset) >= max_length))
