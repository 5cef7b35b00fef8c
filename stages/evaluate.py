"""evaluate: score the trained model on the test split (and nothing else).

Reads: paths.model, paths.tokenized (validation for the temperature, test for every
figure); params evaluate.*.
Writes: paths.evaluation (accuracy, precision, recall, F1, macro F1, ROC AUC, per class,
confusion matrix, calibration before and after temperature scaling, the UNCERTAIN
trade-off), paths.metrics (its headline figures: DVC's declared metrics), paths.predictions
(calibrated, per test row), paths.plots (data of the DVC plots) and paths.figures (the same
plots as PNG).
"""

import datasets
import numpy as np

from finetune.evaluation import evaluate, headline, predictions_table, write_plots
from finetune.files import write_json, write_table
from finetune.inference import predict_logits
from finetune.models import load_classifier, load_tokenizer
from finetune.params import stage_params
from finetune.stage import run, setup


def main() -> None:
    log = setup("evaluate")
    params = stage_params("evaluate")
    tokenized = datasets.load_from_disk(params.paths.tokenized)
    names = tokenized["test"].features["label"].names
    model, tokenizer = load_classifier(params.paths.model), load_tokenizer(params.paths.model)
    inputs = [c for c in tokenizer.model_input_names if c in tokenized["test"].column_names]
    logits = {split: predict_logits(model, tokenizer, tokenized[split].select_columns(inputs).to_list(),
                                    params.evaluate.batch_size) for split in ("validation", "test")}
    labels = {split: np.asarray(tokenized[split]["label"]) for split in ("validation", "test")}
    threshold = params.evaluate.uncertain_threshold
    result = evaluate(logits["test"], labels["test"], logits["validation"], labels["validation"], names, threshold)
    write_json(result.metrics, params.paths.evaluation)
    write_json(headline(result.metrics), params.paths.metrics)
    write_table(predictions_table(labels["test"], result.probs, names), params.paths.predictions)
    write_plots(result, labels["test"], names, threshold, params.paths.plots, params.paths.figures)
    m = result.metrics
    log.info("test: accuracy %.4f, f1_macro %.4f on %d texts; ECE %.4f -> %.4f (T=%.3f); %.1f%% answered at %.2f",
             m["accuracy"], m["f1_macro"], m["n_test"], m["calibration"]["ece_before"], m["calibration"]["ece_after"],
             m["calibration"]["temperature"], 100 * m["uncertain"]["coverage"], threshold)


if __name__ == "__main__":
    run(main)
