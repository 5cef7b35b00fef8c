"""report: the written evaluation report, from what the other stages measured.

Reads: paths.evaluation, paths.baselines, paths.predictions and paths.baseline_predictions (the
test answers), paths.training_log (metrics.json), paths.errors, paths.error_summary, paths.explanations,
paths.splits, paths.split_report, paths.label_issues, paths.seeds (written by `python -m finetune
seeds`), the PNGs in paths.figures and paths.learning_curves; params seed, data, split, model,
tokenize, train, evaluate (the settings, and whether paths.seeds was measured with them).
Writes: paths.significance (a paired bootstrap of the fine-tuned model against each baseline on
the test texts: differences in accuracy and macro F1, 95% intervals, p-values; a declared
metric), paths.report (Markdown) and paths.report_html (HTML with the pictures embedded).
"""

import os
from pathlib import Path

import datasets

from finetune.core.files import read_json, read_table, write_json
from finetune.core.params import stage_params
from finetune.core.stage import run, setup
from finetune.data.labels import MULTI_LABEL, label_names, task_of
from finetune.evaluation.report import build_multi_label_report, build_report, to_html
from finetune.evaluation.significance import compare_predictions
from finetune.experiments.seeds import stale_settings

FIGURES = {"Learning curves": None, "Confusion matrix": "confusion.png", "ROC": "roc.png",
           "Precision-recall": "precision_recall.png", "Reliability diagram": "reliability.png",
           "Confidence histogram": "confidence.png", "Risk-coverage": "risk_coverage.png"}
MULTI_LABEL_FIGURES = {"Learning curves": None, "F1 per label": "label_f1.png",
                       "Precision-recall, best and worst labels": "precision_recall.png",
                       "Reliability of the label decisions": "reliability.png"}


def windows_setting(params) -> dict[str, str]:
    """How windows' logits are combined, among the settings where texts are read in windows."""
    return {"window_aggregation": params.evaluate.window_aggregation} if params.tokenize.truncation == "windows" else {}


def main() -> None:
    log = setup("report")
    params = stage_params("report")
    report_path = Path(params.paths.report)
    splits = datasets.load_from_disk(params.paths.splits)
    multi_label = task_of(splits["train"].features) == MULTI_LABEL
    figures = {caption: Path(params.paths.figures) / name if name else Path(params.paths.learning_curves)
               for caption, name in (MULTI_LABEL_FIGURES if multi_label else FIGURES).items()}
    significance = compare_predictions(read_table(params.paths.predictions),
                                       read_table(params.paths.baseline_predictions),
                                       label_names(splits["test"].features), multi_label)
    write_json(significance, params.paths.significance)
    seeds = read_json(params.paths.seeds)
    build = build_multi_label_report if multi_label else build_report
    text = build(
        model=params.model.name, source=params.data.source,
        split_sizes={name: len(split) for name, split in splits.items()},
        shared_texts=read_json(params.paths.split_report)["shared_texts"],
        settings={**params.tokenize.settings(), **windows_setting(params), **params.train.settings()},
        metrics=read_json(params.paths.evaluation), baselines=read_json(params.paths.baselines),
        significance=significance,
        training=read_json(Path(params.paths.training_log) / "metrics.json"),
        errors=read_table(params.paths.errors),
        error_summary=read_json(params.paths.error_summary),
        explanations=read_json(params.paths.explanations),
        label_issues=read_table(params.paths.label_issues),
        seeds=seeds, seeds_changed=stale_settings(seeds, params),
        figures={c: os.path.relpath(p, report_path.parent) for c, p in figures.items()})
    report_path.write_text(text, encoding="utf-8")
    Path(params.paths.report_html).write_text(to_html(text, report_path.parent), encoding="utf-8")
    log.info("report written to %s and %s", report_path, params.paths.report_html)


if __name__ == "__main__":
    run(main)
