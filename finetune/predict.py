"""Predict labels for new text with an exported model, answering UNCERTAIN below the threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finetune.inference import PRECISIONS, predict_logits
from finetune.models import check_model_folder, load_classifier, load_tokenizer
from finetune.runtime import UNCERTAIN, Prediction, answers, read_model_info, softmax
from finetune.tokenization import encode_batch

__all__ = ["UNCERTAIN", "Prediction", "Predictor"]


class Predictor:
    """Loads an exported model folder once and predicts batches of texts with PyTorch."""

    def __init__(self, model_dir: str | Path, threshold: float | None = None, batch_size: int = 32,
                 precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        model_dir = Path(model_dir)
        check_model_folder(model_dir, "--model")
        self.tokenizer = load_tokenizer(str(model_dir))
        self.model = load_classifier(str(model_dir))
        info = read_model_info(model_dir, threshold)
        self.labels, self.threshold = info.labels, info.threshold
        self.max_length, self.truncation, self.batch_size = info.max_length, info.truncation, batch_size
        self.precision = precision

    def logits(self, texts: list[str]) -> np.ndarray:
        encoded = encode_batch(list(texts), self.tokenizer, self.max_length, self.truncation)
        features = [{k: encoded[k][i] for k in encoded} for i in range(len(texts))]
        return predict_logits(self.model, self.tokenizer, features, self.batch_size, self.precision)

    def predict(self, texts: list[str]) -> list[Prediction]:
        if not texts:
            return []
        return answers(list(texts), softmax(self.logits(texts)), self.labels, self.threshold)
