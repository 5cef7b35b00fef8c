"""Batched forward passes: class logits for tokenized examples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def predict_logits(model: Any, tokenizer: Any, features: Sequence[dict[str, list[int]]],
                   batch_size: int) -> np.ndarray:
    """Logits, one row per example, in the given order.

    Examples are run in order of length so that each padded batch is short,
    then put back in their original order.
    """
    import torch
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    order = np.argsort([len(f["input_ids"]) for f in features], kind="stable")
    device = next(model.parameters()).device
    model.eval()
    logits = np.zeros((len(features), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = collate([{k: features[i][k] for k in tokenizer.model_input_names if k in features[i]}
                             for i in idx])
            logits[idx] = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
    return logits
