"""split: stratified train/validation from train; the test split is kept untouched.

Reads: paths.raw; params split.*, seed, evaluate.decision_threshold (checked against the labels).
Writes: paths.splits (train, validation, test) and paths.split_report (sizes, label counts,
texts shared between splits). A source without a test split gets one carved from train
first (split.test_size).
"""

from pathlib import Path

import datasets

from finetune.core.files import write_json
from finetune.core.params import stage_params
from finetune.core.stage import readable, run, setup
from finetune.data.dataset import check_decision_rule, save_dataset_dict, split_dataset, split_report


def main() -> None:
    log = setup("split")
    params = stage_params("split")
    raw = datasets.load_from_disk(params.paths.raw)
    check_decision_rule(raw["train"].features, params.evaluate.decision_threshold)
    splits = split_dataset(raw, params.split, params.seed)
    save_dataset_dict(splits, Path(params.paths.splits))
    report = split_report(datasets.load_from_disk(params.paths.splits))  # saved: rows in order, quick to read
    write_json(report, params.paths.split_report)
    log.info("split sizes: %s", readable(report["rows"]))
    if report["shared_texts"]["train_test"]:
        log.warning("%d test texts also occur in train: test scores may be optimistic",
                    report["shared_texts"]["train_test"])


if __name__ == "__main__":
    run(main)
