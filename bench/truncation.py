"""What each truncation strategy keeps of long texts, for the bench's table (not used by any stage)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from finetune.core.contract import HEAD_SHARE, TRUNCATIONS, WINDOWS
from finetune.data.tokenization import special_tokens

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def kept_ends(opening: int, closing: int, total: int, budget: int, truncation: str) -> tuple[bool, bool]:
    """Whether a text's first sentence (``opening`` tokens) and last sentence (``closing`` tokens) survive
    when its ``total`` tokens are cut to ``budget`` by the truncation strategy."""
    if total <= budget:
        return True, True
    head = {"head": budget, "tail": 0, "head+tail": int(budget * HEAD_SHARE)}[truncation]
    return opening <= head, closing <= budget - head


def truncation_coverage(texts: list[str], tokenizer: Any, max_length: int) -> dict[str, dict[str, float]]:
    """What each strategy keeps of the texts: the share cut, the mean share of tokens kept, and the share whose
    first and whose last sentence stay whole (a review's verdict is often in its last sentence)."""
    prefix, suffix = special_tokens(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    sentences = [SENTENCE_END.split(text.strip()) for text in texts]

    def count(parts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(parts, add_special_tokens=False, verbose=False)["input_ids"]]

    totals = np.array(count(texts))
    openings, closings = count([s[0] for s in sentences]), count([s[-1] for s in sentences])
    kept_share = float(np.mean(np.minimum(1.0, budget / np.maximum(totals, 1))))
    table = {}
    for strategy in (t for t in TRUNCATIONS if t != WINDOWS):  # windows keep everything: nothing to count
        ends = [kept_ends(o, c, t, budget, strategy) for o, c, t in zip(openings, closings, totals, strict=True)]
        table[strategy] = {"truncated": float(np.mean(totals > budget)), "tokens_kept": kept_share,
                           "first_sentence_kept": float(np.mean([first for first, _ in ends])),
                           "last_sentence_kept": float(np.mean([last for _, last in ends]))}
    return table
