"""baseline: what simpler models reach on the same split, without any training of the transformer.

Reads: paths.splits; params seed, model.name, tokenize.max_length, evaluate.batch_size.
Writes: paths.baselines (test accuracy and macro F1 of TF-IDF + logistic regression and of
logistic regression on the frozen encoder's mean-pooled embeddings).
"""

from functools import partial

import datasets
import numpy as np

from finetune.baselines import frozen_encoder_logreg, mean_pooled_embeddings, scores, tfidf_logreg
from finetune.files import write_json
from finetune.labels import require_single_label
from finetune.models import load_encoder, load_tokenizer, resolve_model
from finetune.params import stage_params
from finetune.stage import run, setup


def main() -> None:
    log = setup("baseline")
    params = stage_params("baseline")
    splits = datasets.load_from_disk(params.paths.splits)
    require_single_label(splits["train"].features, "baseline")
    train, test = splits["train"], splits["test"]
    y_train, y_test = np.asarray(train["label"]), np.asarray(test["label"])
    model_ref = resolve_model(params.model.name)
    encoder, tokenizer = load_encoder(model_ref), load_tokenizer(model_ref)
    embed = partial(mean_pooled_embeddings, encoder, tokenizer, max_length=params.tokenize.max_length,
                    batch_size=params.evaluate.batch_size)
    results = {
        "tfidf_logreg": scores(y_test, tfidf_logreg(train["text"], y_train, test["text"], params.seed)),
        "frozen_encoder_logreg": scores(y_test, frozen_encoder_logreg(embed(train["text"]), y_train,
                                                                      embed(test["text"]), params.seed)),
    }
    write_json(results, params.paths.baselines)
    log.info("baselines on %d test texts: %s", len(y_test), results)


if __name__ == "__main__":
    run(main)
