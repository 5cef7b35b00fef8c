"""error-analysis: every wrong test prediction with its raw text, and the slices where the model fails.

Reads: paths.splits (test texts), paths.tokenized (test token lengths; windows: each window's place in its
text), paths.predictions; params tokenize.max_length.
Writes: paths.errors (row, true and predicted label, confidence, text; with windows also the window count, the
window that agreed most with the answer and its text; most confident first; for label sets: the missed and
spurious labels of each wrong text, worst labels first), paths.error_summary (counts, per-label mistakes, and size,
accuracy and significance per slice; with windows a long_document slice, the texts read in several) and
paths.slices (every slice with its worst examples).
"""

import datasets

from finetune.core.files import read_table, write_json, write_table
from finetune.core.params import stage_params
from finetune.core.stage import readable, run, setup
from finetune.data.documents import (
    DOCUMENT_COLUMN,
    WINDOW_END,
    WINDOW_START,
    document_ids,
    document_starts,
    window_counts,
)
from finetune.data.labels import MULTI_LABEL, label_names, task_of, text_list
from finetune.data.tokenization import token_lengths
from finetune.evaluation.error_analysis import analyse_label_sets, analyse_single_label, quoted_windows
from finetune.evaluation.slices import SliceInput, flagged


def main() -> None:
    log = setup("error_analysis")
    params = stage_params("error-analysis")
    test = datasets.load_from_disk(params.paths.splits)["test"]
    texts = text_list(test)
    tokenized = datasets.load_from_disk(params.paths.tokenized)["test"]
    predictions = read_table(params.paths.predictions)
    if DOCUMENT_COLUMN in tokenized.column_names:  # read in windows: quote the window that drove each answer
        spans = tokenized.select_columns([WINDOW_START, WINDOW_END]).with_format("numpy")
        first_rows = document_starts(document_ids(tokenized))
        predictions = quoted_windows(predictions, texts, spans[WINDOW_START], spans[WINDOW_END], first_rows)
        data = SliceInput(texts, None, params.tokenize.max_length, window_counts(tokenized))
    else:
        data = SliceInput(texts, token_lengths(tokenized), params.tokenize.max_length)
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
