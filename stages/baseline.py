"""baseline: what simpler models reach on the same split, without any training of the transformer.

Reads: paths.splits; params seed, model.name, tokenize.max_length, evaluate.batch_size,
evaluate.decision_threshold.
Writes: paths.baselines (test accuracy and macro F1 of TF-IDF + logistic regression and of
logistic regression on the frozen encoder's mean-pooled embeddings; for multi-label data
one regression per label, scored with per-label thresholds tuned on validation, as the
fine-tuned model is; likewise a threshold on class 1 with evaluate.decision_threshold tuned)
and paths.baseline_predictions (each baseline's answer to each test text, for the report's
paired bootstrap).
"""

import datasets

from finetune.core.files import write_json, write_table
from finetune.core.params import stage_params
from finetune.core.stage import readable, run, setup
from finetune.data.labels import MULTI_LABEL, label_names, label_targets, task_of, text_list
from finetune.evaluation.baselines import (
    baseline_scores,
    frozen_encoder_logreg,
    mean_pooled_embeddings,
    predictions_table,
    tfidf_logreg,
)
from finetune.training.models import load_encoder, load_tokenizer, resolve_model


def main() -> None:
    log = setup("baseline")
    params = stage_params("baseline")
    splits = datasets.load_from_disk(params.paths.splits)
    multi_label = task_of(splits["train"].features) == MULTI_LABEL
    tune_decision = not multi_label and params.evaluate.decision_threshold == "tuned"
    # validation tunes thresholds, as it does the fine-tuned model's
    used = ("train", "validation", "test") if multi_label or tune_decision else ("train", "test")
    texts = {name: text_list(splits[name]) for name in used}
    targets = {name: label_targets(splits[name]) for name in used}
    model_ref = resolve_model(params.model.name)
    encoder, tokenizer = load_encoder(model_ref), load_tokenizer(model_ref)
    embeddings = {name: mean_pooled_embeddings(encoder, tokenizer, split_texts, params.tokenize.max_length,
                                               params.evaluate.batch_size) for name, split_texts in texts.items()}
    fitted = {"tfidf_logreg": (tfidf_logreg(texts["train"], targets["train"], params.seed, multi_label), texts),
              "frozen_encoder_logreg": (frozen_encoder_logreg(embeddings["train"], targets["train"], params.seed,
                                                              multi_label), embeddings)}
    scored = {name: baseline_scores(model, inputs, targets, multi_label, tune_decision)
              for name, (model, inputs) in fitted.items()}
    results = {name: figures for name, (figures, _) in scored.items()}
    write_json(results, params.paths.baselines)
    answers = {name: test_answers for name, (_, test_answers) in scored.items()}
    write_table(predictions_table(answers, targets["test"], label_names(splits["test"].features), multi_label),
                params.paths.baseline_predictions)
    log.info("baselines on %d test texts: %s", len(targets["test"]), readable(results))


if __name__ == "__main__":
    run(main)
