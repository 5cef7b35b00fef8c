"""error-analysis: every wrong test prediction with its raw text, most confident first.

Reads: paths.splits (test texts), paths.predictions.
Writes: paths.errors (row, true and predicted label, confidence, text) and
paths.error_summary (counts per true label and per confusion).
"""

import datasets
import pandas as pd

from finetune.error_analysis import error_summary, wrong_predictions
from finetune.evaluation import write_table
from finetune.params import stage_params
from finetune.stage import setup, write_json


def main() -> None:
    log = setup("error_analysis")
    params = stage_params("error-analysis")
    texts = datasets.load_from_disk(params.paths.splits)["test"]["text"]
    predictions = pd.read_csv(params.paths.predictions, keep_default_na=False)
    errors = wrong_predictions(predictions, texts)
    write_table(errors, params.paths.errors)
    summary = error_summary(predictions, errors)
    write_json(summary, params.paths.error_summary)
    log.info("%d of %d test texts wrong; confusions %s", summary["n_errors"], summary["n_test"], summary["confusions"])
    for row in errors.head(3).itertuples():
        log.info("confident mistake (%s as %s, %.3f): %.200s", row.label, row.predicted, row.confidence, row.text)


if __name__ == "__main__":
    main()
