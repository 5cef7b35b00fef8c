"""label-issues: training texts whose given label looks wrong, for a person to check.

Reads: paths.splits (train); params seed, label_issues.folds.
Writes: paths.label_issues (row in the train split, text, given label, the label a
cross-validated TF-IDF + logistic regression suggests, and cleanlab's label quality score;
flagged texts only, worst first).
"""

import datasets

from finetune.core.files import write_table
from finetune.core.params import stage_params
from finetune.core.stage import run, setup
from finetune.data.labels import MULTI_LABEL, label_names, label_targets, task_of, text_list
from finetune.evaluation.label_issues import check_folds, label_issue_table, rare_labels


def main() -> None:
    log = setup("label-issues")
    params = stage_params("label-issues")
    train = datasets.load_from_disk(params.paths.splits)["train"]
    multi_label = task_of(train.features) == MULTI_LABEL
    texts, targets, names, folds = text_list(train), label_targets(train), label_names(train.features), \
        params.label_issues.folds
    check_folds(targets, folds, multi_label)
    rare = rare_labels(targets, names, folds, multi_label)
    if rare:
        log.warning("%s have fewer than label_issues.folds=%d train texts: some fold models never see them, so "
                    "flags on their texts are less reliable", rare, folds)
    table = label_issue_table(texts, targets, names, folds, params.seed, multi_label)
    write_table(table, params.paths.label_issues)
    log.info("%d of %d train texts flagged as possibly mislabeled (%s)", len(table), len(train),
             params.paths.label_issues)


if __name__ == "__main__":
    run(main)
