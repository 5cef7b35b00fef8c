"""Predict labels for new text with an exported model, answering UNCERTAIN below the threshold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finetune.calibration import probabilities
from finetune.export import MAX_LENGTH_KEY, THRESHOLD_KEY, TRUNCATION_KEY
from finetune.inference import predict_logits
from finetune.models import check_model_folder, load_classifier, load_tokenizer
from finetune.tokenization import encode_batch

UNCERTAIN = "UNCERTAIN"


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str  # the predicted label, or UNCERTAIN when confidence < threshold
    predicted: str  # the most probable label, even when uncertain
    confidence: float
    probabilities: dict[str, float]


class Predictor:
    """Loads an exported model folder once and predicts batches of texts."""

    def __init__(self, model_dir: str | Path, threshold: float | None = None, batch_size: int = 32) -> None:
        model_dir = Path(model_dir)
        check_model_folder(model_dir, "--model")
        self.tokenizer = load_tokenizer(str(model_dir))
        self.model = load_classifier(str(model_dir))
        config = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        self.threshold = threshold if threshold is not None else float(getattr(config, THRESHOLD_KEY, 0.5))
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"--threshold must lie between 0 and 1, got {self.threshold}")
        self.max_length = int(getattr(config, MAX_LENGTH_KEY, None) or min(self.tokenizer.model_max_length, 512))
        self.truncation = getattr(config, TRUNCATION_KEY, None) or "head"
        self.batch_size = batch_size

    def predict(self, texts: list[str]) -> list[Prediction]:
        if not texts:
            return []
        encoded = encode_batch(list(texts), self.tokenizer, self.max_length, self.truncation)
        features = [{k: encoded[k][i] for k in encoded} for i in range(len(texts))]
        probs = probabilities(predict_logits(self.model, self.tokenizer, features, self.batch_size))
        results = []
        for text, row in zip(texts, probs, strict=True):
            best = int(row.argmax())
            confidence = float(row[best])
            label = self.labels[best] if confidence >= self.threshold else UNCERTAIN
            results.append(Prediction(text, label, self.labels[best], confidence,
                                      {name: float(p) for name, p in zip(self.labels, row, strict=True)}))
        return results
