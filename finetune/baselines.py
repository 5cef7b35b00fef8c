"""Baselines on the same split: is fine-tuning worth it?

- TF-IDF of word 1-2 grams with logistic regression;
- feature extraction: the frozen pretrained encoder's mean-pooled embeddings
  with logistic regression (no weight of the encoder changes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline

from finetune.contract import length_batches

MAX_ITER = 2000


def scores(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    return {"accuracy": round(float(accuracy_score(labels, predictions)), 6),
            "f1_macro": round(float(f1_score(labels, predictions, average="macro")), 6)}


def tfidf_logreg(train_texts: list[str], train_labels: np.ndarray, test_texts: list[str], seed: int) -> np.ndarray:
    """Predicted test labels of TF-IDF (word 1-2 grams) + logistic regression."""
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                          LogisticRegression(max_iter=MAX_ITER, random_state=seed))
    model.fit(train_texts, train_labels)
    return model.predict(test_texts)


def mean_pooled_embeddings(encoder: Any, tokenizer: Any, texts: list[str], max_length: int,
                           batch_size: int = 64) -> np.ndarray:
    """The encoder's last hidden states averaged over the real (unpadded) tokens of each text."""
    import torch

    encoder.eval()
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for idx in length_batches([len(t) for t in texts], batch_size):  # characters: a cheap proxy for tokens
            batch = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length, padding=True,
                              return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[idx] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy()
    return out


def frozen_encoder_logreg(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                          seed: int) -> np.ndarray:
    """Predicted test labels of logistic regression on frozen embeddings."""
    model = LogisticRegression(max_iter=MAX_ITER, random_state=seed)
    model.fit(train_features, train_labels)
    return model.predict(test_features)
