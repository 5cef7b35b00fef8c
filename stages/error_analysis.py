"""error-analysis: every wrong test prediction with its raw text, and the slices where the model fails.

Reads: paths.splits (test texts), paths.tokenized (test token lengths), paths.predictions;
params tokenize.max_length.
Writes: paths.errors (row, true and predicted label, confidence, text; most confident
first; for label sets: the missed and spurious labels of each wrong text, worst labels
first), paths.error_summary (counts, per-label mistakes, and size, accuracy and
significance per slice) and paths.slices (every slice with its worst examples).
"""

import datasets

from finetune.core.files import read_table, write_json, write_table
from finetune.core.params import stage_params
from finetune.core.stage import readable, run, setup
from finetune.data.labels import MULTI_LABEL, label_names, task_of, text_list
from finetune.data.tokenization import token_lengths
from finetune.evaluation.error_analysis import analyse_label_sets, analyse_single_label
from finetune.evaluation.slices import SliceInput, flagged


def main() -> None:
    log = setup("error_analysis")
    params = stage_params("error-analysis")
    test = datasets.load_from_disk(params.paths.splits)["test"]
    texts = text_list(test)
    lengths = token_lengths(datasets.load_from_disk(params.paths.tokenized)["test"])
    predictions = read_table(params.paths.predictions)
    data = SliceInput(texts, lengths, params.tokenize.max_length)
    if task_of(test.features) == MULTI_LABEL:
        errors, slices, summary = analyse_label_sets(predictions, texts, data, label_names(test.features))
    else:
        errors, slices, summary = analyse_single_label(predictions, texts, data)
    write_table(errors, params.paths.errors)
    write_json(slices, params.paths.slices)
    write_json(summary, params.paths.error_summary)
    log.info("%d of %d test texts wrong; slices significantly below overall accuracy: %s", len(errors),
             len(predictions), readable(flagged(slices)) or "none")
    for row in errors.head(3).itertuples():
        log.info("mistake (%s as %s): %.200s", row.label, row.predicted, row.text)


if __name__ == "__main__":
    run(main)
