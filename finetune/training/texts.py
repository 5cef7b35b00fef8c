"""Logits of raw texts, read as the pipeline reads them: the one path from a string to a trained model's logits
(the PyTorch backend, the export's merge check, the error analysis's explanations)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from finetune.core.contract import Windows, aggregate_windows
from finetune.data.documents import DOCUMENT_COLUMN
from finetune.data.tokenization import encode_batch
from finetune.training.inference import predict_logits


def text_logits(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, truncation: str,
                batch_size: int, precision: str = "fp32", windows: Windows | None = None,
                aggregation: str = "mean") -> np.ndarray:
    """Logits of raw texts, tokenized as the pipeline tokenizes (``max_length``, ``truncation``); with
    ``windows`` each text is read in windows, whose logits are aggregated (``aggregation``) into the text's."""
    encoded = encode_batch(list(texts), tokenizer, max_length, truncation, windows)
    inputs = [key for key in tokenizer.model_input_names if key in encoded]
    features = [{key: encoded[key][i] for key in inputs} for i in range(len(encoded["input_ids"]))]
    logits = predict_logits(model, tokenizer, features, batch_size, precision)
    return logits if windows is None else aggregate_windows(logits, encoded[DOCUMENT_COLUMN], aggregation)
