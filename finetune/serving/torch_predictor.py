"""The PyTorch backend of the prediction contract: an exported folder loaded with transformers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from finetune.core.contract import (
    Predictor,
    check_precision,
    check_window_fit,
    read_model_info,
)
from finetune.core.explain import Span
from finetune.data.tokenization import special_tokens
from finetune.evaluation.integrated_gradients import check_one_call, integrated_gradients
from finetune.training.inference import cpu_computes_bf16, emulated_bf16_warning
from finetune.training.models import check_model_folder, load_classifier, load_tokenizer
from finetune.training.texts import text_logits

log = logging.getLogger(__name__)


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

    def integrated_gradients(self, text: str, targets: list[int],
                             max_words: int) -> tuple[np.ndarray, np.ndarray, list[Span], int]:
        """captum's integrated gradients of ``text`` for the ``targets`` labels (finetune.core.explain.explain)."""
        check_one_call(self.info.windows is not None)
        return integrated_gradients(self.model, self.tokenizer, text, targets, self.max_length, self.truncation,
                                    self.info.multi_label, max_words)

    def logits(self, texts: list[str]) -> np.ndarray:
        return text_logits(self.model, self.tokenizer, texts, self.max_length, self.truncation, self.batch_size,
                           self.precision, self.info.windows, self.info.aggregation)
