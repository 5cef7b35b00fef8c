"""baseline: what simpler models reach on the same split, without any training of the transformer.

Reads: paths.splits; params seed, model.name, tokenize.max_length, evaluate.batch_size.
Writes: paths.baselines (test accuracy and macro F1 of TF-IDF + logistic regression and of
logistic regression on the frozen encoder's mean-pooled embeddings; for multi-label data
one regression per label, scored with per-label thresholds tuned on validation, as the
fine-tuned model is).
"""

from functools import partial

import datasets
import numpy as np

from finetune.baselines import frozen_encoder_logreg, label_set_scores, mean_pooled_embeddings, scores, tfidf_logreg
from finetune.files import write_json
from finetune.labels import MULTI_LABEL, label_names, multi_hot, task_of
from finetune.models import load_encoder, load_tokenizer, resolve_model
from finetune.params import stage_params
from finetune.stage import run, setup


def main() -> None:
    log = setup("baseline")
    params = stage_params("baseline")
    splits = datasets.load_from_disk(params.paths.splits)
    features = splits["train"].features
    multi_label = task_of(features) == MULTI_LABEL
    if multi_label:
        targets = {name: multi_hot(split["label"], len(label_names(features))) for name, split in splits.items()}
    else:
        targets = {name: np.asarray(split["label"]) for name, split in splits.items()}
    model_ref = resolve_model(params.model.name)
    encoder, tokenizer = load_encoder(model_ref), load_tokenizer(model_ref)
    embed = partial(mean_pooled_embeddings, encoder, tokenizer, max_length=params.tokenize.max_length,
                    batch_size=params.evaluate.batch_size)
    texts = {name: split["text"] for name, split in splits.items()}
    embeddings = {name: embed(split_texts) for name, split_texts in texts.items()}
    fitted = {"tfidf_logreg": (tfidf_logreg(texts["train"], targets["train"], params.seed, multi_label), texts),
              "frozen_encoder_logreg": (frozen_encoder_logreg(embeddings["train"], targets["train"], params.seed,
                                                              multi_label), embeddings)}
    results = {}
    for name, (model, inputs) in fitted.items():
        if multi_label:
            results[name] = label_set_scores(targets["validation"], model.predict_proba(inputs["validation"]),
                                             targets["test"], model.predict_proba(inputs["test"]))
        else:
            results[name] = scores(targets["test"], model.predict(inputs["test"]))
    write_json(results, params.paths.baselines)
    log.info("baselines on %d test texts: %s", len(targets["test"]), results)


if __name__ == "__main__":
    run(main)
