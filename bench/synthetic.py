"""Synthetic text-classification data of any size for the bench's scale section (seeded, written in batches).

Each row is 8 to 60 words drawn from a fixed vocabulary, with a label from four classes of unequal size; one row in
a hundred repeats an earlier text, so de-duplication has work to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

LABELS = np.array(["world", "sports", "business", "science"])
LABEL_SHARES = [0.4, 0.3, 0.2, 0.1]
VOCABULARY = 5000
BATCH_ROWS = 100_000


def words(rng: np.random.Generator) -> np.ndarray:
    """The vocabulary: pronounceable made-up words of 2 to 5 syllables."""
    syllables = np.array([c + v for c in "bcdfghklmnprstvz" for v in "aeiou"])
    counts = rng.integers(2, 6, size=VOCABULARY)
    return np.array(["".join(rng.choice(syllables, size=n)) for n in counts])


def batch(rng: np.random.Generator, vocabulary: np.ndarray, rows: int, previous: list[str]) -> pa.Table:
    lengths = rng.integers(8, 61, size=rows)
    tokens = vocabulary[rng.zipf(1.3, size=int(lengths.sum())) % len(vocabulary)]
    texts = [" ".join(chunk) for chunk in np.split(tokens, np.cumsum(lengths)[:-1])]
    repeats = np.flatnonzero(rng.random(rows) < 0.01)
    for i in repeats:
        if previous:
            texts[i] = previous[rng.integers(len(previous))]
    previous[:] = texts[:: max(1, rows // 1000)]  # a small sample to repeat from: memory stays flat
    return pa.table({"text": texts, "label": rng.choice(LABELS, size=rows, p=LABEL_SHARES)})


def write_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """A CSV of ``rows`` rows (text, label), the same bytes for the same rows and seed."""
    rng = np.random.default_rng(seed)
    vocabulary, previous = words(rng), []
    path.parent.mkdir(parents=True, exist_ok=True)
    with pacsv.CSVWriter(str(path), pa.schema([("text", pa.string()), ("label", pa.string())])) as writer:
        for start in range(0, rows, BATCH_ROWS):
            writer.write_table(batch(rng, vocabulary, min(BATCH_ROWS, rows - start), previous))
    return path
