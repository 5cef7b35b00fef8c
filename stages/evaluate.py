"""evaluate: score the trained model on the test split (and nothing else).

Reads: paths.model, paths.tokenized (validation for the temperature and thresholds, test for
every figure; windowed data is scored per document, from its windows' logits aggregated by
evaluate.window_aggregation before anything else); params evaluate.*.
Writes: paths.evaluation (single-label, answering the most probable class or, with
evaluate.decision_threshold tuned, class 1 from a probability threshold tuned on validation:
accuracy, precision, recall, F1, macro F1, ROC AUC, per class, confusion matrix, calibration
before and after temperature scaling, the UNCERTAIN trade-off; multi-label: F1
micro/macro/weighted/samples with per-label thresholds tuned on validation and at 0.5,
subset accuracy, Hamming loss, ranking scores, per label, calibration of the label
decisions), paths.metrics (its headline figures: DVC's declared metrics),
paths.predictions (calibrated, per test text; with windows also how many each text was read in and
which agreed most with its answer), paths.plots (data of the DVC plots) and
paths.figures (the same plots as PNG).
"""

import datasets
import numpy as np

from finetune.core.contract import aggregate_windows, decide, single_label_decisions
from finetune.core.files import write_json, write_table
from finetune.core.params import stage_params
from finetune.core.stage import run, setup
from finetune.data.documents import DOCUMENT_COLUMN, document_ids, first_windows
from finetune.data.labels import MULTI_LABEL, label_names, label_targets, task_of
from finetune.evaluation.metrics import (
    evaluate,
    evaluate_multi_label,
    headline,
    multi_label_predictions_table,
    predictions_table,
    window_columns,
    write_multi_label_plots,
    write_plots,
)
from finetune.training.inference import predict_logits
from finetune.training.models import load_classifier, load_tokenizer


def score_single_label(logits: dict, tokenized: datasets.DatasetDict, names: list[str], params,
                       windows: dict | None) -> str:
    labels = {split: label_targets(first_windows(tokenized[split])) for split in logits}
    threshold = params.evaluate.uncertain_threshold
    result = evaluate(logits["test"], labels["test"], logits["validation"], labels["validation"], names, threshold,
                      tune_decision=params.evaluate.decision_threshold == "tuned",
                      calibration_min_texts=params.evaluate.calibration_min_texts)
    write_json(result.metrics, params.paths.evaluation)
    write_json(headline(result.metrics), params.paths.metrics)
    table = predictions_table(labels["test"], result.probs, names, result.decision_threshold)
    if windows:
        answered = np.eye(len(names), dtype=bool)[single_label_decisions(result.probs, result.decision_threshold)]
        table = table.assign(**window_columns(windows["logits"], windows["documents"], answered, multi_label=False))
    write_table(table, params.paths.predictions)
    write_plots(result, labels["test"], names, threshold, params.paths.plots, params.paths.figures)
    m = result.metrics
    decided = "" if result.decision_threshold is None else (
        f" ({names[1]} from p >= {result.decision_threshold:.2f}, tuned on validation; argmax accuracy "
        f"{m['decision']['argmax']['accuracy']:.4f}, f1 {m['decision']['argmax']['f1']:.4f})")
    return (f"accuracy {m['accuracy']:.4f}, f1 {m['f1']:.4f}, f1_macro {m['f1_macro']:.4f} on {m['n_test']} texts"
            f"{decided}; ECE "
            f"{m['calibration']['ece_before']:.4f} -> {m['calibration']['ece_after']:.4f} (T="
            f"{m['calibration']['temperature']:.3f}); {100 * m['uncertain']['coverage']:.1f}% answered at {threshold}")


def score_multi_label(logits: dict, tokenized: datasets.DatasetDict, names: list[str], params,
                      windows: dict | None) -> str:
    targets = {split: label_targets(first_windows(tokenized[split])) for split in logits}
    result = evaluate_multi_label(logits["test"], targets["test"], logits["validation"], targets["validation"], names,
                                  params.evaluate.uncertain_band, params.evaluate.calibration_min_texts)
    write_json(result.metrics, params.paths.evaluation)
    write_json(headline(result.metrics), params.paths.metrics)
    table = multi_label_predictions_table(targets["test"], result.probs, result.thresholds, names)
    if windows:
        answered = decide(result.probs, result.thresholds).astype(bool)
        table = table.assign(**window_columns(windows["logits"], windows["documents"], answered, multi_label=True))
    write_table(table, params.paths.predictions)
    write_multi_label_plots(result, targets["test"], names, params.paths.plots, params.paths.figures)
    m = result.metrics
    return (f"{len(names)} labels, {m['n_test']} texts: macro F1 {m['f1_macro']:.4f} with tuned thresholds "
            f"({m['at_0.5']['f1_macro']:.4f} at 0.5), micro F1 {m['f1_micro']:.4f}, subset accuracy "
            f"{m['subset_accuracy']:.4f}; ECE of label decisions {m['calibration']['ece_before']:.4f} -> "
            f"{m['calibration']['ece_after']:.4f} (T={m['calibration']['temperature']:.3f}); "
            f"{100 * m['uncertain']['coverage']:.1f}% answered (band {m['uncertain']['band']})")


def main() -> None:
    log = setup("evaluate")
    params = stage_params("evaluate")
    tokenized = datasets.load_from_disk(params.paths.tokenized)
    names, task = label_names(tokenized["test"].features), task_of(tokenized["test"].features)
    model, tokenizer = load_classifier(params.paths.model), load_tokenizer(params.paths.model)
    inputs = [c for c in tokenizer.model_input_names if c in tokenized["test"].column_names]
    logits = {split: predict_logits(model, tokenizer, tokenized[split].select_columns(inputs).to_list(),
                                    params.evaluate.batch_size) for split in ("validation", "test")}
    windows = None
    if DOCUMENT_COLUMN in tokenized["test"].column_names:  # one answer per document, from its windows' logits
        documents = {split: document_ids(tokenized[split]) for split in logits}
        windows = {"logits": logits["test"], "documents": documents["test"]}
        logits = {split: aggregate_windows(rows, documents[split], params.evaluate.window_aggregation)
                  for split, rows in logits.items()}
        log.info("%d test documents read in %d windows, their logits aggregated by %s", len(logits["test"]),
                 len(documents["test"]), params.evaluate.window_aggregation)
    score = score_multi_label if task == MULTI_LABEL else score_single_label
    log.info("test: %s", score(logits, tokenized, names, params, windows))


if __name__ == "__main__":
    run(main)
