"""Baselines on the same split: is fine-tuning worth it?

- TF-IDF of word 1-2 grams with logistic regression;
- feature extraction: the frozen pretrained encoder's mean-pooled embeddings
  with logistic regression (no weight of the encoder changes).

Multi-label data gets one logistic regression per label (one-vs-rest) and the fine-tuned
model's decision rule: per-label thresholds tuned on the validation split; so does a two-class
task with a tuned decision threshold (``evaluate.decision_threshold: tuned``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline

from finetune.core.contract import decide, label_set_text, length_batches, single_label_decisions
from finetune.evaluation.multilabel import set_scores, tune_decision_threshold, tune_thresholds

MAX_ITER = 2000


def scores(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    return {"accuracy": round(float(accuracy_score(labels, predictions)), 6),
            "f1_macro": round(float(f1_score(labels, predictions, average="macro")), 6)}


def decided(model: Any, inputs: dict[str, Any], targets: dict[str, np.ndarray], multi_label: bool,
            tune_decision: bool = False) -> tuple[np.ndarray, np.ndarray, Any]:
    """A fitted baseline's test answers by the fine-tuned model's rule, its test probabilities, and the thresholds
    it used: label sets at per-label thresholds tuned on the validation inputs; classes by argmax, or with
    ``tune_decision`` (two classes) by a threshold on class 1 tuned on the validation inputs."""
    test = model.predict_proba(inputs["test"])
    if not (multi_label or tune_decision):
        return single_label_decisions(test), test, None
    validation = model.predict_proba(inputs["validation"])
    if multi_label:
        thresholds = tune_thresholds(validation, targets["validation"])
        return decide(test, thresholds), test, thresholds
    cut = tune_decision_threshold(validation, targets["validation"])
    return single_label_decisions(test, cut), test, cut


def baseline_scores(model: Any, inputs: dict[str, Any], targets: dict[str, np.ndarray], multi_label: bool,
                    tune_decision: bool = False) -> tuple[dict[str, float], np.ndarray]:
    """A fitted baseline's test scores and answers (``decided``): accuracy and macro F1 (with a tuned decision
    also class 1's F1 and the threshold), or for label sets F1 macro and micro and subset accuracy, with macro F1
    at one 0.5 threshold beside."""
    answers, test_probs, thresholds = decided(model, inputs, targets, multi_label, tune_decision)
    truth = targets["test"]
    if multi_label:
        tuned, at_half = set_scores(truth, answers), set_scores(truth, decide(test_probs, 0.5))
        return ({**{key: round(tuned[key], 6) for key in ("f1_macro", "f1_micro", "subset_accuracy")},
                 "f1_macro_at_0.5": round(at_half["f1_macro"], 6)}, answers)
    if thresholds is None:
        return scores(truth, answers), answers
    return ({**scores(truth, answers), "f1": round(float(f1_score(truth, answers)), 6),
             "decision_threshold": thresholds}, answers)


def predictions_table(answers: dict[str, np.ndarray], truth: np.ndarray, names: list[str],
                      multi_label: bool) -> pd.DataFrame:
    """Every baseline's answer to every test text, long: baseline, row, label, predicted (names, or label sets
    joined like the fine-tuned model's predictions)."""
    def cells(values: np.ndarray) -> list[str]:
        return [label_set_text(row, names) for row in values] if multi_label else [names[i] for i in values]

    return pd.concat([pd.DataFrame({"baseline": name, "row": np.arange(len(truth)), "label": cells(truth),
                                    "predicted": cells(values)}) for name, values in answers.items()],
                     ignore_index=True)


def logistic_regression(seed: int, multi_label: bool) -> Any:
    """One model over the classes, or one per label (one-vs-rest) for label sets."""
    model = LogisticRegression(max_iter=MAX_ITER, random_state=seed)
    return OneVsRestClassifier(model) if multi_label else model


def tfidf_pipeline(seed: int, multi_label: bool = False) -> Any:
    """TF-IDF (word 1-2 grams) + logistic regression, not fitted; ``fit`` and ``predict_proba`` take texts."""
    return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                         logistic_regression(seed, multi_label))


def tfidf_logreg(train_texts: list[str], train_labels: np.ndarray, seed: int, multi_label: bool = False) -> Any:
    """The TF-IDF baseline, fitted on the train texts."""
    return tfidf_pipeline(seed, multi_label).fit(train_texts, train_labels)


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


def frozen_encoder_logreg(train_features: np.ndarray, train_labels: np.ndarray, seed: int,
                          multi_label: bool = False) -> Any:
    """Logistic regression on frozen embeddings, fitted; ``predict_proba`` takes embeddings."""
    return logistic_regression(seed, multi_label).fit(train_features, train_labels)
