"""The PyTorch backend of the prediction contract: an exported folder loaded with transformers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finetune.core.contract import (
    Predictor,
    Windows,
    aggregate_windows,
    check_precision,
    check_window_fit,
    read_model_info,
)
from finetune.data.documents import DOCUMENT_COLUMN
from finetune.data.tokenization import encode_batch, special_tokens
from finetune.training.inference import cpu_computes_bf16, emulated_bf16_warning, predict_logits
from finetune.training.models import check_model_folder, load_classifier, load_tokenizer

log = logging.getLogger(__name__)


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


class TorchPredictor(Predictor):
    """Loads an exported model folder once and predicts batches of texts with PyTorch (fp32 or bf16 autocast)."""

    def __init__(self, model_dir: str | Path, threshold: float | None = None, batch_size: int = 32,
                 precision: str = "fp32", windows: bool = False) -> None:
        check_precision(precision)  # before the model loads
        model_dir = Path(model_dir)
        check_model_folder(model_dir, "--model")
        self.info = read_model_info(model_dir, threshold, windows)
        self.batch_size, self.precision = batch_size, precision
        self.backend = "torch" if precision == "fp32" else f"torch {precision}"
        self.tokenizer = load_tokenizer(str(model_dir))
        check_window_fit(self.info, sum(map(len, special_tokens(self.tokenizer))), model_dir)
        self.model = load_classifier(str(model_dir))
        if precision == "bf16" and self.model.device.type == "cpu" and not cpu_computes_bf16():
            log.warning(emulated_bf16_warning("--precision"))

    def logits(self, texts: list[str]) -> np.ndarray:
        return text_logits(self.model, self.tokenizer, texts, self.max_length, self.truncation, self.batch_size,
                           self.precision, self.info.windows, self.info.aggregation)
