"""error-analysis: every wrong test prediction with its raw text, and the slices where the model fails.

Reads: paths.splits (test texts), paths.tokenized (test token lengths; windows: each window's place in its
text), paths.predictions; params tokenize.max_length.
Also reads paths.model and paths.evaluation (its calibration temperature) to explain answers: params explain.*,
tokenize.*, evaluate.window_aggregation and evaluate.batch_size, seed.
Writes: paths.errors (row, true and predicted label, confidence, text; with windows also the window count, the
window that agreed most with the answer and its text; most confident first; for label sets: the missed and
spurious labels of each wrong text, worst labels first; for the explain.mistakes most confident, the words that
drove the answer), paths.error_summary (counts, per-label mistakes, and size, accuracy and significance per
slice; with windows a long_document slice, the texts read in several), paths.slices (every slice with its worst
examples) and paths.explanations (per explanation method, ERASER comprehensiveness on the first explain.texts
test texts: the answer's probability lost without the top words against random words, and their ratio).
"""

import datasets

from finetune.core.contract import WINDOWS, Windows, probability_column
from finetune.core.files import read_json, read_table, write_json, write_table
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
from finetune.evaluation.calibration import fold_temperature
from finetune.evaluation.error_analysis import analyse_label_sets, analyse_single_label, quoted_windows
from finetune.evaluation.faithfulness import ReadModel, answered_labels, explain_mistakes, faithfulness_figures
from finetune.evaluation.slices import SliceInput, flagged
from finetune.training.models import load_classifier, load_tokenizer


def read_model(params, labels: list[str], multi_label: bool) -> ReadModel:
    """The trained model as its export reads texts: the calibration temperature folded in."""
    model = load_classifier(params.paths.model)
    fold_temperature(model, read_json(params.paths.evaluation)["calibration"]["temperature"])
    tokenize = params.tokenize
    windows = Windows(tokenize.stride, tokenize.max_windows) if tokenize.truncation == WINDOWS else None
    return ReadModel(model, load_tokenizer(params.paths.model), labels, multi_label, tokenize.max_length,
                     tokenize.truncation, windows, params.evaluate.window_aggregation, params.evaluate.batch_size)


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
    model = read_model(params, label_names(test.features), task_of(test.features) == MULTI_LABEL)
    probs = predictions[[probability_column(name) for name in model.labels]].to_numpy()
    settings = params.explain
    errors = explain_mistakes(errors, probs, model, settings.method, settings.mistakes, settings.max_words,
                              settings.ig_steps)
    measured = min(settings.texts, len(texts))
    targets = [labels[0] for labels in answered_labels(predictions["predicted"].astype(str).tolist()[:measured],
                                                       probs[:measured], model.labels, model.multi_label,
                                                       every_given=False)]
    figures = faithfulness_figures(texts[:measured], targets, model, settings.top_share, settings.random_draws,
                                   settings.max_words, settings.ig_steps, params.seed)
    write_table(errors, params.paths.errors)
    write_json(slices, params.paths.slices)
    write_json(summary, params.paths.error_summary)
    write_json(figures | {"mistakes_explained_by": settings.method}, params.paths.explanations)
    for figure in figures.values():
        if "ratio" in figure:
            log.info("%s: removing the top %.0f%% of words lowers the answer's probability by %.3f, random words by "
                     "%.3f (ratio %s, %d texts)", figure["method"], 100 * figure["top_share"], figure["mean_drop_top"],
                     figure["mean_drop_random"], figure["ratio"], figure["texts"])
    log.info("%d of %d test texts wrong; slices significantly below overall accuracy: %s", len(errors),
             len(predictions), readable(flagged(slices)) or "none")
    for row in errors.head(3).itertuples():
        log.info("mistake (%s as %s): %.200s", row.label, row.predicted, row.text)


if __name__ == "__main__":
    run(main)
