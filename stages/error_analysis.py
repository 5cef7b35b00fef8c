"""error-analysis: every wrong test prediction with its raw text, and the slices where the model fails.

Reads: paths.splits (test texts), paths.tokenized (test token lengths), paths.predictions;
params tokenize.max_length.
Writes: paths.errors (row, true and predicted label, confidence, text; most confident
first), paths.error_summary (counts, and size, accuracy and significance per slice) and
paths.slices (every slice with its worst examples).
"""

import datasets
import numpy as np

from finetune.error_analysis import error_summary, wrong_predictions
from finetune.files import read_table, write_json, write_table
from finetune.labels import require_single_label
from finetune.params import stage_params
from finetune.slices import SliceInput, flagged, slice_masks, slice_report
from finetune.stage import run, setup


def main() -> None:
    log = setup("error_analysis")
    params = stage_params("error-analysis")
    test = datasets.load_from_disk(params.paths.splits)["test"]
    require_single_label(test.features, "error-analysis")
    texts = test["text"]
    lengths = np.array([len(ids) for ids in datasets.load_from_disk(params.paths.tokenized)["test"]["input_ids"]])
    predictions = read_table(params.paths.predictions)
    masks = slice_masks(SliceInput(texts, lengths, params.tokenize.max_length), predictions["label"].tolist())
    errors = wrong_predictions(predictions, texts, masks)
    write_table(errors, params.paths.errors)
    slices = slice_report(predictions, texts, masks)
    write_json(slices, params.paths.slices)
    write_json(error_summary(predictions, errors, slices), params.paths.error_summary)
    log.info("%d of %d test texts wrong; slices significantly below overall accuracy: %s", len(errors),
             len(predictions), flagged(slices) or "none")
    for row in errors.head(3).itertuples():
        log.info("confident mistake (%s as %s, %.3f): %.200s", row.label, row.predicted, row.confidence, row.text)


if __name__ == "__main__":
    run(main)
