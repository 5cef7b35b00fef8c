"""Word attributions by integrated gradients (captum), the second method where PyTorch is present.

The path runs from a baseline text whose every token is padding (the special tokens kept) to
the text, in the input embeddings; the gradient of the explained label's probability is summed
along it, so a text's token attributions add up to its probability less the baseline's. Each
word's weight is the sum over its tokens; tokens the model does not read (cut by truncation)
weigh nothing. A text read in windows is explained by occlusion: its answer mixes several model
calls, which one path through one input cannot follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from finetune.core.contract import WINDOWS, token_rows
from finetune.core.explain import (
    DEFAULT_MAX_WORDS,
    INTEGRATED_GRADIENTS,
    OCCLUSION,
    ExplainError,
    Span,
    check_explainable,
    units,
)
from finetune.data.tokenization import special_tokens

DEFAULT_STEPS = 32  # points on the path; captum's convergence delta says whether they suffice


def check_one_call(windows: bool) -> None:
    """Integrated gradients follow one model call per text: refused for texts read in windows."""
    if windows:
        raise ExplainError(f"{INTEGRATED_GRADIENTS} follows one model call, and a text read in windows takes "
                           f"several: explain it by {OCCLUSION}")


def read_tokens(tokenizer: Any, text: str, max_length: int, truncation: str) -> tuple[list[int], list[Span | None]]:
    """The token ids the model reads for ``text`` (the pipeline's truncation rule, token_rows) and each token's
    characters in the text (None for special tokens)."""
    check_one_call(truncation == WINDOWS)
    body = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    prefix, suffix = special_tokens(tokenizer)
    # token_rows on positions (specials as -1) tells which of the body's tokens the rule keeps
    rows, _ = token_rows([list(range(len(body["input_ids"])))], [-1] * len(prefix), [-1] * len(suffix), max_length,
                         truncation)
    positions = rows[0]
    ids = prefix + [body["input_ids"][p] for p in positions[len(prefix):len(positions) - len(suffix)]] + suffix
    spans: list[Span | None] = [None if p < 0 else tuple(body["offset_mapping"][p]) for p in positions]
    return ids, spans


def integrated_gradients(model: Any, tokenizer: Any, text: str, targets: Sequence[int], max_length: int,
                         truncation: str, multi_label: bool, max_words: int = DEFAULT_MAX_WORDS,
                         steps: int = DEFAULT_STEPS) -> tuple[np.ndarray, np.ndarray, list[Span], int]:
    """Integrated-gradients weights of ``text``'s units for each target label, in the shape occlusion gives:
    (weights [units, targets], the text's probabilities, the units, words per unit)."""
    # captum (and the matplotlib it loads) only when asked: predict and serve start without it
    from captum.attr import LayerIntegratedGradients

    if steps < 2:
        raise ExplainError(f"integrated gradients needs at least 2 steps, got {steps}")
    spans = check_explainable(text)
    chosen, per_unit = units(spans, max_words)
    ids, token_spans = read_tokens(tokenizer, text, max_length, truncation)
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    baseline = torch.tensor([[i if s is None else pad for i, s in zip(ids, token_spans, strict=True)]],
                            device=device)
    mask = torch.ones_like(input_ids)

    def probabilities(tokens: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=tokens, attention_mask=attention).logits.float()
        return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)

    model.eval()
    with torch.no_grad():
        full = probabilities(input_ids, mask)[0].cpu().numpy().astype(np.float64)
    explainer = LayerIntegratedGradients(probabilities, model.get_input_embeddings())
    # the unit each token overlaps (a sentencepiece token may begin with the space before its word); specials none
    owner = np.full(len(ids), -1)
    for t, span in enumerate(token_spans):
        if span is not None:
            owner[t] = next((u for u, (start, end) in enumerate(chosen) if start < span[1] and span[0] < end), -1)
    weights = np.zeros((len(chosen), len(targets)))
    for column, target in enumerate(targets):
        tokens = explainer.attribute(input_ids, baselines=baseline, target=int(target), n_steps=steps,
                                     internal_batch_size=steps, additional_forward_args=(mask,))
        per_token = tokens.sum(dim=-1)[0].detach().cpu().numpy().astype(np.float64)
        for t, unit in enumerate(owner):
            if unit >= 0:
                weights[unit, column] += per_token[t]
    return weights, full, chosen, per_unit
