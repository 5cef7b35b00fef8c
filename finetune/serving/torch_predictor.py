"""The PyTorch backend of the prediction contract: an exported folder loaded with transformers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finetune.core.contract import Predictor, check_precision, read_model_info
from finetune.data.tokenization import encode_batch
from finetune.training.inference import cpu_computes_bf16, emulated_bf16_warning, predict_logits
from finetune.training.models import check_model_folder, load_classifier, load_tokenizer

log = logging.getLogger(__name__)


def text_logits(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, truncation: str,
                batch_size: int, precision: str = "fp32") -> np.ndarray:
    """Logits of raw texts, tokenized as the pipeline tokenizes (``max_length``, ``truncation``)."""
    encoded = encode_batch(list(texts), tokenizer, max_length, truncation)
    features = [{key: encoded[key][i] for key in encoded} for i in range(len(texts))]
    return predict_logits(model, tokenizer, features, batch_size, precision)


class TorchPredictor(Predictor):
    """Loads an exported model folder once and predicts batches of texts with PyTorch (fp32 or bf16 autocast)."""

    def __init__(self, model_dir: str | Path, threshold: float | None = None, batch_size: int = 32,
                 precision: str = "fp32") -> None:
        check_precision(precision)  # before the model loads
        model_dir = Path(model_dir)
        check_model_folder(model_dir, "--model")
        self.info, self.batch_size, self.precision = read_model_info(model_dir, threshold), batch_size, precision
        self.backend = "torch" if precision == "fp32" else f"torch {precision}"
        self.tokenizer = load_tokenizer(str(model_dir))
        self.model = load_classifier(str(model_dir))
        if precision == "bf16" and self.model.device.type == "cpu" and not cpu_computes_bf16():
            log.warning(emulated_bf16_warning("--precision"))

    def logits(self, texts: list[str]) -> np.ndarray:
        return text_logits(self.model, self.tokenizer, texts, self.max_length, self.truncation, self.batch_size,
                           self.precision)
