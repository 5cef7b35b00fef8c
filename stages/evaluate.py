"""evaluate: score the trained model on the test split (and nothing else).

Reads: paths.model, paths.tokenized (test); params evaluate.*.
Writes: paths.metrics (accuracy, precision, recall, F1, macro F1, per class, confusion
matrix, coverage at the UNCERTAIN threshold), paths.predictions (per test row),
paths.confusion (rows for DVC's confusion plot) and paths.confusion_png.
"""

import datasets
import numpy as np

from finetune.evaluation import classification_metrics, plot_confusion, predictions_table, write_table
from finetune.inference import predict_proba
from finetune.models import load_classifier, load_tokenizer
from finetune.params import stage_params
from finetune.stage import setup, write_json


def main() -> None:
    log = setup("evaluate")
    params = stage_params("evaluate")
    test = datasets.load_from_disk(params.paths.tokenized)["test"]
    names = test.features["label"].names
    model, tokenizer = load_classifier(params.paths.model), load_tokenizer(params.paths.model)
    features = test.select_columns([c for c in tokenizer.model_input_names if c in test.column_names]).to_list()
    probs = predict_proba(model, tokenizer, features, params.evaluate.batch_size)
    labels = np.asarray(test["label"])
    metrics = classification_metrics(labels, probs, names, params.evaluate.uncertain_threshold)
    write_json(metrics, params.paths.metrics)
    table = predictions_table(labels, probs, names)
    write_table(table, params.paths.predictions)
    write_table(table[["label", "predicted"]].rename(columns={"label": "actual"}), params.paths.confusion)
    plot_confusion(metrics["confusion_matrix"]["counts"], names, params.paths.confusion_png)
    log.info("test: accuracy %.4f, f1_macro %.4f on %d texts; %.1f%% answered at threshold %.2f",
             metrics["accuracy"], metrics["f1_macro"], len(labels), 100 * metrics["uncertain"]["coverage"],
             params.evaluate.uncertain_threshold)


if __name__ == "__main__":
    main()
