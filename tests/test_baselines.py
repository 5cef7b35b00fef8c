"""Baselines: TF-IDF + logistic regression, and logistic regression on frozen mean-pooled embeddings."""

import numpy as np

from finetune.evaluation.baselines import (
    baseline_scores,
    frozen_encoder_logreg,
    mean_pooled_embeddings,
    predictions_table,
    scores,
    tfidf_logreg,
)
from finetune.training.models import load_encoder, load_tokenizer

GOOD = ["a great film", "great acting", "a great story", "truly great", "great fun", "great cast"]
BAD = ["an awful film", "awful acting", "an awful story", "truly awful", "awful fun", "awful cast"]


def test_tfidf_learns_words():
    model = tfidf_logreg(GOOD + BAD, np.array([1] * 6 + [0] * 6), seed=0)
    predictions = model.predict(["great, great", "awful, awful"])
    assert predictions.tolist() == [1, 0]
    assert scores(np.array([1, 0]), predictions) == {"accuracy": 1.0, "f1_macro": 1.0}


def test_mean_pooling_ignores_padding(tiny_model):
    encoder, tokenizer = load_encoder(str(tiny_model)), load_tokenizer(str(tiny_model))
    alone = mean_pooled_embeddings(encoder, tokenizer, ["short"], max_length=32)
    together = mean_pooled_embeddings(encoder, tokenizer, ["short", "a much longer text " * 5], max_length=32)
    assert together.shape == (2, encoder.config.hidden_size)
    assert np.allclose(alone[0], together[0], atol=1e-5)


def test_frozen_features_with_logistic_regression():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(1, 0.3, (20, 4)), rng.normal(-1, 0.3, (20, 4))])
    labels = np.array([1] * 20 + [0] * 20)
    assert (frozen_encoder_logreg(features, labels, seed=0).predict(features) == labels).all()


def test_one_regression_per_label_scored_with_thresholds_tuned_on_validation():
    texts = ["great film", "awful film", "great and funny", "awful and funny", "funny", "great", "awful",
             "funny great film", "awful awful", "a funny one"] * 3
    words = ["great", "awful", "funny"]
    targets = np.array([[word in text for word in words] for text in texts], dtype=int)
    model = tfidf_logreg(texts, targets, seed=0, multi_label=True)
    probs = model.predict_proba(texts)
    assert probs.shape == (len(texts), 3)
    result, answers = baseline_scores(model, {"validation": texts, "test": texts},
                                      {"validation": targets, "test": targets}, multi_label=True)
    assert result["f1_macro"] == 1.0 and result["subset_accuracy"] == 1.0  # tuned thresholds separate them
    assert set(result) == {"f1_macro", "f1_micro", "subset_accuracy", "f1_macro_at_0.5"}
    assert (answers == targets).all()
    table = predictions_table({"tfidf_logreg": answers}, targets, words, multi_label=True)
    assert table.columns.tolist() == ["baseline", "row", "label", "predicted"]
    assert table["predicted"].tolist()[:3] == ["great", "awful", "great|funny"]


def test_a_two_class_baseline_takes_the_same_tuned_decision_rule_from_validation():
    rng = np.random.default_rng(1)
    features = np.concatenate([rng.normal(0.4, 1, (30, 4)), rng.normal(-0.4, 1, (270, 4))])  # rare positives
    labels = np.array([1] * 30 + [0] * 270)
    model = frozen_encoder_logreg(features, labels, seed=0)
    inputs, targets = {"validation": features, "test": features}, {"validation": labels, "test": labels}
    plain, _ = baseline_scores(model, inputs, targets, multi_label=False)
    tuned, answers = baseline_scores(model, inputs, targets, multi_label=False, tune_decision=True)
    assert (answers == (model.predict_proba(features)[:, 1] >= tuned["decision_threshold"])).all()
    assert set(plain) == {"accuracy", "f1_macro"}
    assert 0 < tuned["decision_threshold"] < 0.5 and tuned["f1"] > 0
    assert tuned["f1_macro"] > plain["f1_macro"]  # argmax hardly ever answers the rare class
