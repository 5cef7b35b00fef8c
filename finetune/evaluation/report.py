"""The written report: reports/report.md, and an HTML rendering with its pictures embedded."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pandas as pd

from finetune.core.contract import LABEL_SET_SEPARATOR, WINDOWS

EXAMPLES = 5  # wrong examples shown
LABEL_ISSUES_SHOWN = 10
ISSUE_EXCERPT_CHARS = 160
EXCERPT_CHARS = 400


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def confusion_in_words(confusion: dict[str, Any]) -> str:
    """True and false positives and negatives for two classes; the largest confusions otherwise."""
    names, counts = confusion["labels"], confusion["counts"]
    if len(names) == 2:
        (tn, fp), (fn, tp) = counts
        neg, pos = names
        return (f"Taking `{pos}` as the positive class: {tp} `{pos}` texts were recognised (true positives) and "
                f"{fn} were called `{neg}` (false negatives); {tn} `{neg}` texts were recognised (true negatives) "
                f"and {fp} were called `{pos}` (false positives). The model errs more often towards "
                f"`{pos if fp > fn else neg}`.")
    pairs = sorted(((counts[i][j], names[i], names[j]) for i in range(len(names)) for j in range(len(names))
                    if i != j and counts[i][j]), reverse=True)[:3]
    right = ", ".join(f"{counts[i][i]} of {sum(counts[i])} `{name}`" for i, name in enumerate(names))
    worst = "; ".join(f"{n} `{t}` texts were called `{p}`" for n, t, p in pairs) or "none"
    return f"Recognised: {right}. The largest confusions: {worst}."


def training_in_words(training: dict[str, Any]) -> str:
    sentence = (f"Training ran {training.get('epochs_run')} epochs; the best by validation loss was epoch "
                f"{training.get('best_epoch')}")
    if training.get("early_stopped"):
        sentence += " (early stopping fired)"
    if training.get("overfitting"):
        sentence += "; validation loss rose while training loss fell: overfitting, which keeping the best epoch undoes"
    trained = trained_parameters(training)
    if not trained:
        return sentence + "."
    batch = f"; each update saw {training['effective_batch']:,} texts" if training.get("effective_batch") else ""
    return f"{sentence}. It trained {trained}{batch}."


def trained_parameters(training: dict[str, Any]) -> str:
    """How many of the model's parameters training updated, all or LoRA's adapters and the head (the report's and
    the model card's words), from the train stage's summary; empty for a summary without the counts."""
    trainable, total = training.get("trainable_parameters"), training.get("total_parameters")
    if not trainable or not total:
        return ""
    what = "every parameter" if trainable == total else "LoRA adapters and the head"
    return f"{trainable:,} of the model's {total:,} parameters ({100 * trainable / total:.2f}%: {what})"


def reading_sentence(tokenize: dict[str, Any], aggregation: str) -> str:
    """What the model reads of a long text, as the report and the model card say it: windows, or the part it was
    trained on."""
    if tokenize.get("truncation") == WINDOWS:
        how = "mean" if aggregation == "mean" else "maximum"
        return (f"texts are read whole, in windows of {tokenize.get('max_length')} tokens of which neighbours share "
                f"{tokenize.get('stride')}, at most {tokenize.get('max_windows')} per text (a longer text keeps that "
                f"many, spread evenly over it); the answer comes from the {how} of the windows' logits. It was "
                "trained on such windows, each text weighing the same however many windows it has.")
    return (f"texts longer than {tokenize.get('max_length')} tokens are truncated ({tokenize.get('truncation')}): it "
            "was trained on that part of each text. `predict --windows` (and `serve --windows`) reads a long text "
            "whole in windows of the same size instead, which it was not trained on: measure that before relying "
            "on it.")


def model_and_data(model: str, source: str, split_sizes: dict[str, int], shared_texts: dict[str, int],
                   settings: dict[str, Any], training: dict[str, Any], chosen: str = "the temperature") -> str:
    return f"""## Model and data

- Model: `{model}`, fine-tuned on `{source}`.
- Split sizes: {", ".join(f"{name} {n:,}" for name, n in split_sizes.items())}. The test split is used
  for this report only; the best epoch and {chosen} were chosen on the validation split.
  Texts found in two splits (a leak that flatters scores): {shared_texts.get("train_test", 0)} between train
  and test, {shared_texts.get("train_validation", 0)} between train and validation.
- Settings: {", ".join(f"{k} {v}" for k, v in settings.items())}.
- {training_in_words(training)}{windows_line(settings)}"""


def windows_line(settings: dict[str, Any]) -> str:
    """With windows, how a long text is read (settings: the tokenize settings and evaluate's window_aggregation)."""
    if settings.get("truncation") != WINDOWS:
        return ""
    return "\n- Long texts: " + reading_sentence(settings, settings.get("window_aggregation", "mean"))


def slice_table(slices: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {name} | {row['size']} | {_fmt(row['accuracy'])} | {row['ci_high']:.3f} "
        f"| {'**yes**' if row['significantly_below'] else 'no'} |" for name, row in slices.items())
    return ("| slice | size | accuracy | 95% upper bound | significantly below |\n"
            "| --- | --- | --- | --- | --- |\n" + rows)


def significance_section(significance: dict[str, Any] | None) -> str:
    """Whether the fine-tuned model beats each baseline on these test texts: the paired bootstrap's table."""
    if not significance:
        return ""
    rows = []
    for name, scores in significance.items():
        if name == "resamples":
            continue
        cells = [f"{s['difference']:+.4f} [{s['ci_low']:+.4f}, {s['ci_high']:+.4f}], "
                 + (f"p = {s['p_value']:.3f}" if s["p_value"] > 0 else f"p < {1 / significance['resamples']:g}")
                 for s in scores.values()]
        rows.append(f"| {name.replace('_', ' ')} | " + " | ".join(cells) + " |")
    header = " | ".join(key.replace("_", " ") for key in next(v for k, v in significance.items() if k != "resamples"))
    return f"""
**Better than the baselines, or luckier?** Fine-tuned minus baseline on the same test texts, with the 95%
interval of a paired bootstrap ({significance["resamples"]} resamples of the texts) and the p-value of no
difference; an interval that excludes 0 is a difference another test set of this size would likely show too.

| baseline | {header} |
| --- | --- | --- |
{chr(10).join(rows)}
"""


# Settings that make the data what it is (and so the task): a seed spread measured with other values is not shown.
DATA_SETTINGS = ("data.", "split.")


def seeds_section(seeds: dict[str, Any] | None, changed: list[str]) -> str:
    """How much each test figure moves with the training seed alone (``python -m finetune seeds``), when it was
    measured on this data; with other training settings it is shown and flagged."""
    if seeds is None:
        return ""
    if not seeds.get("seeds"):
        return ("\n**Seed variance.** Not measured: `python -m finetune seeds --n 5` trains these settings with five "
                "training seeds as DVC experiments; `dvc repro` then shows here how much each test figure moves "
                "with the seed alone.\n")
    other_data = [key for key in changed if key == "seed" or key.startswith(DATA_SETTINGS)]
    if other_data:  # a spread measured on other data (and so maybe another task) says nothing about this model
        return (f"\n**Seed variance.** Not measured on this data (the spread in the seeds file was measured with "
                f"other {', '.join(f'`{key}`' for key in other_data)}): `python -m finetune seeds --n 5` trains "
                "these settings with five training seeds as DVC experiments; `dvc repro` then shows it here.\n")
    rows = "\n".join(f"| {key} | {row['mean']:.4f} | {row['std']:.4f} | [{row['ci_low']:.4f}, {row['ci_high']:.4f}] "
                     f"| {', '.join(f'{v:.4f}' for v in row['values'])} |"
                     for key, row in seeds["metrics"].items() if not key.startswith("n_"))
    stale = (f" **Measured with other settings** ({', '.join(f'`{key}`' for key in changed)} differ): rerun "
             "`python -m finetune seeds` for these." if changed else "")
    return f"""
**Seed variance.** The same settings trained with {len(seeds["seeds"])} training seeds ({", ".join(
        map(str, seeds["seeds"]))}; the split stays the same), each a DVC experiment
({", ".join(f"`{name}`" for name in seeds["experiments"])}): the test figures' mean, standard deviation and the
{seeds["confidence"]:.0%} t-interval of the mean.{stale}

| metric | mean | std | {seeds["confidence"]:.0%} interval | per seed |
| --- | --- | --- | --- | --- |
{rows}
"""


def label_issues_section(issues: pd.DataFrame | None, train_rows: int) -> str:
    """The training texts cleanlab flagged: how many, what a flag means, and the worst ten."""
    if issues is None:
        return ""

    def cell(text: str) -> str:  # a pipe (in a text, or joining a label set) would end the table's cell
        return text.replace(LABEL_SET_SEPARATOR, ", ") if text else "none"

    rows = "\n".join(f"| {r.row} | {cell(r.label)} | {cell(r.suggested)} | {r.quality:.3f} | "
                     f"{_excerpt(r.text, ISSUE_EXCERPT_CHARS).replace('|', '/')} |"
                     for r in issues.head(LABEL_ISSUES_SHOWN).itertuples())
    table = ("| train row | given | suggested | quality | text |\n| --- | --- | --- | --- | --- |\n" + rows
             if len(issues) else "")
    return f"""## Possibly mislabeled training texts

cleanlab flagged {len(issues)} of {train_rows} train texts ({pct(len(issues) / max(train_rows, 1))}): their given
label disagrees with the out-of-fold probabilities of a cross-validated TF-IDF + logistic regression. A flag is a
text worth a second look, not a proven error: many flagged texts are hard or ambiguous, and true errors gather at
the top of the list (`label_issues.csv`, lowest label quality first). The first {LABEL_ISSUES_SHOWN}:

{table}
"""


def decision_paragraph(decision: dict[str, Any] | None) -> str:
    """How a tuned decision threshold chose the answers, against the most probable class (empty without one)."""
    if decision is None:
        return ""
    argmax = decision["argmax"]
    return (f"\nAnswers are `{decision['positive_label']}` when its probability reaches {decision['threshold']:.2f} "
            f"(evaluate.decision_threshold tuned: the best F1 of `{decision['positive_label']}` on the validation "
            f"split; baselines use the same rule). Answering the most probable class instead: accuracy "
            f"{argmax['accuracy']:.4f}, F1 {argmax['f1']:.4f}, macro F1 {argmax['f1_macro']:.4f}.\n")


def temperature_sentence(cal: dict[str, Any]) -> str:
    """How the calibration temperature was chosen (calibration.chosen_temperature), in words."""
    fit, texts, temperature = cal.get("temperature_fit", "fitted"), cal.get("validation_texts"), cal["temperature"]
    on = f"the {texts:,} validation texts" if texts else "the validation split"
    if fit == "too_few_texts":
        return (f"Temperature scaling was not applied: the validation split has {texts:,} texts, fewer than "
                f"`evaluate.calibration_min_texts` ({cal['min_texts']:,}), too few to fit it on (T = 1: the "
                "confidences are the model's own). A larger validation split (`split.val_size`) calibrates them.")
    if fit == "at_bound":
        return (f"Temperature scaling on {on} reached its bound, T = {temperature:.3f}: they cannot pin it down "
                "(the model may be right on nearly all of them), so read the confidences with care.")
    direction = "over-confident" if temperature > 1 else "under-confident"
    return f"Temperature scaling on {on} found T = {temperature:.3f} (the raw model was {direction})."


def build_report(*, model: str, source: str, split_sizes: dict[str, int], shared_texts: dict[str, int],
                 settings: dict[str, Any],
                 metrics: dict[str, Any], baselines: dict[str, dict[str, float]], training: dict[str, Any],
                 errors: pd.DataFrame, error_summary: dict[str, Any], figures: dict[str, str],
                 significance: dict[str, Any] | None = None, label_issues: pd.DataFrame | None = None,
                 seeds: dict[str, Any] | None = None, seeds_changed: list[str] | None = None,
                 explanations: dict[str, Any] | None = None) -> str:
    """The report as Markdown; ``figures`` maps a caption to an image path relative to the report."""
    cal, unc = metrics["calibration"], metrics["uncertain"]
    binary = metrics.get("positive_label")
    rows = [("fine-tuned " + model, metrics["accuracy"], metrics["f1_macro"])]
    rows += [(name.replace("_", " "), b["accuracy"], b["f1_macro"]) for name, b in baselines.items()]
    results = "\n".join(f"| {name} | {acc:.4f} | {f1:.4f} |" for name, acc, f1 in rows)
    examples = "\n\n".join(
        f"{i}. **{r.label}** read as **{r.predicted}** (confidence {r.confidence:.3f}; slices: "
        f"{r.slices or 'none'})\n\n   > {_excerpt(r.text)}{driving_window(r)}{driving_words_line(r)}"
        for i, r in enumerate(errors.head(EXAMPLES).itertuples(), start=1))
    pictures = "\n\n".join(f"![{caption}]({path})" for caption, path in figures.items())
    flagged = error_summary["slices_significantly_below"]
    return f"""# Evaluation report

{model_and_data(model, source, split_sizes, shared_texts, settings, training)}

## Results on the test split

| model | accuracy | macro F1 |
| --- | --- | --- |
{results}

Precision {metrics["precision"]:.4f}, recall {metrics["recall"]:.4f}, F1 {metrics["f1"]:.4f}
{f"(of `{binary}`)" if binary else "(macro averages)"}; ROC AUC {metrics["roc_auc"]:.4f}. For imbalanced classes:
balanced accuracy {metrics["balanced_accuracy"]:.4f}, Matthews correlation {metrics["mcc"]:.4f}.
{decision_paragraph(metrics.get("decision"))}
{significance_section(significance)}{seeds_section(seeds, seeds_changed or [])}
**Confusion matrix.** {confusion_in_words(metrics["confusion_matrix"])}

## Calibration and the UNCERTAIN band

{temperature_sentence(cal)}
Expected calibration error on the test split: {cal["ece_before"]:.4f} before, {cal["ece_after"]:.4f} after;
Brier score {cal["brier_before"]:.4f} before, {cal["brier_after"]:.4f} after.

At the threshold {unc["threshold"]}, {pct(unc["uncertain_share"])} of the test texts are answered UNCERTAIN;
the other {pct(unc["coverage"])} are answered with accuracy {pct(unc["accuracy_answered"])}
(against {pct(metrics["accuracy"])} when every text is answered). The risk-coverage curve shows the
trade-off at every threshold.

## Where it fails

{error_summary["n_errors"]} of {error_summary["n_test"]} test texts are wrong. Slices whose accuracy is
significantly below the overall {pct(metrics["accuracy"])} (the upper end of their 95% Wilson interval
is lower): {", ".join(f"`{name}`" for name in flagged) or "none"}.

{slice_table(error_summary["slices"])}

The most confident mistakes:

{examples}

{explanations_paragraph(explanations)}

{label_issues_section(label_issues, split_sizes["train"])}
## Figures

{pictures}
"""


def build_multi_label_report(*, model: str, source: str, split_sizes: dict[str, int], shared_texts: dict[str, int],
                             settings: dict[str, Any], metrics: dict[str, Any], baselines: dict[str, dict[str, float]],
                             training: dict[str, Any], errors: pd.DataFrame, error_summary: dict[str, Any],
                             figures: dict[str, str], significance: dict[str, Any] | None = None,
                             label_issues: pd.DataFrame | None = None, seeds: dict[str, Any] | None = None,
                             seeds_changed: list[str] | None = None, explanations: dict[str, Any] | None = None) -> str:
    """The report of a multi-label model as Markdown: label-set scores, each label, calibration, UNCERTAIN band,
    the weakest labels and the texts they fail on."""
    cal, unc, at_half = metrics["calibration"], metrics["uncertain"], metrics["at_0.5"]
    rows = [("fine-tuned " + model, metrics["f1_macro"], metrics["f1_micro"], at_half["f1_macro"])]
    rows += [(name.replace("_", " "), b["f1_macro"], b["f1_micro"], b["f1_macro_at_0.5"])
             for name, b in baselines.items()]
    results = "\n".join(f"| {name} | {macro:.4f} | {micro:.4f} | {half:.4f} |" for name, macro, micro, half in rows)
    per_label = "\n".join(
        f"| {row['label']} | {row['support']} | {metrics['per_label'][row['label']]['threshold']:.2f} | "
        f"{metrics['per_label'][row['label']]['precision']:.3f} | {metrics['per_label'][row['label']]['recall']:.3f} | "
        f"{metrics['per_label'][row['label']]['f1']:.3f} | {row['missed']} | {row['spurious']} |"
        for row in error_summary["labels_worst_first"])
    swaps = "; ".join(f"{pair} ({n})" for pair, n in list(error_summary["frequent_swaps"].items())[:5]) or "none"
    skipped = metrics["labels_without_both_classes"]
    examples = "\n\n".join(
        f"{i}. missed **{r.missed or '-'}**, spurious **{r.spurious or '-'}** (true: {r.label or 'none'}; "
        f"slices: {r.slices or 'none'})\n\n   > {_excerpt(r.text)}{driving_words_line(r)}"
        for i, r in enumerate(errors.head(EXAMPLES).itertuples(), start=1))
    pictures = "\n\n".join(f"![{caption}]({path})" for caption, path in figures.items())
    return f"""# Evaluation report (multi-label)

{model_and_data(model, source, split_sizes, shared_texts, settings, training,
                "the temperature and each label's threshold")}

## Results on the test split

Each label is given when its probability reaches its own threshold, tuned on the validation split
for that label's F1; the baselines use the same rule.

| model | macro F1 | micro F1 | macro F1 at one 0.5 threshold |
| --- | --- | --- | --- |
{results}

{significance_section(significance)}{seeds_section(seeds, seeds_changed or [])}
F1 weighted {metrics["f1_weighted"]:.4f}, per text (samples) {metrics["f1_samples"]:.4f}; subset accuracy
(the whole label set right) {pct(metrics["subset_accuracy"])}; Hamming loss {metrics["hamming_loss"]:.4f};
label-ranking average precision {metrics["label_ranking_average_precision"]:.4f}; macro ROC AUC
{metrics["roc_auc_macro"]:.4f}{f" (without {', '.join(skipped)}: no test positives or negatives)" if skipped else ""}.

## Calibration and the UNCERTAIN band

{temperature_sentence(cal)} Expected calibration error of
the label decisions on the test split: {cal["ece_before"]:.4f} before, {cal["ece_after"]:.4f} after.
A text with a label whose log-odds lie within {unc["band"]} of its threshold's is answered UNCERTAIN:
{pct(unc["coverage"])} of the test texts are answered, with subset accuracy
{pct(unc["subset_accuracy_answered"])} (against {pct(metrics["subset_accuracy"])} when every text is answered).

## Each label, weakest first

| label | test support | threshold | precision | recall | F1 | missed | spurious |
| --- | --- | --- | --- | --- | --- | --- | --- |
{per_label}

## Where it fails

{error_summary["n_errors"]} of {error_summary["n_test"]} test texts have a wrong label set. The most frequent
swaps (a label missed while another was given instead): {swaps}.

{slice_table(error_summary["slices"])}

Texts whose mistakes involve the weakest labels:

{examples}

{explanations_paragraph(explanations)}

{label_issues_section(label_issues, split_sizes["train"])}
## Figures

{pictures}
"""


def driving_words_line(mistake: Any) -> str:
    """A mistake whose driving words the error analysis weighed: those words, with their weights."""
    drivers = getattr(mistake, "drivers", "")
    if not isinstance(drivers, str) or not drivers:
        return ""
    return f"\n\n   Words that drove the answer (the probability lost without each): {drivers}"


def explanations_paragraph(explanations: dict[str, Any] | None) -> str:
    """How faithful the explanations are, per method (ERASER comprehensiveness), the mistakes' method first."""
    figures = [f for f in (explanations or {}).values() if isinstance(f, dict) and f.get("ratio") is not None]
    if not figures:
        return ""
    used = explanations["mistakes_explained_by"]
    figures.sort(key=lambda f: f["method"] != used)
    share = f"{100 * figures[0]['top_share']:.0f}%"
    measured = "; ".join(f"{f['method']} {f['mean_drop_top']:.3f} against {f['mean_drop_random']:.3f} "
                         f"({f['ratio']:.1f} times)" for f in figures)
    return (f"**Why it answered.** The words under each mistake are weighed by {used}. How faithful such weights "
            f"are, on {figures[0]['texts']} test texts: the probability an answer loses, on average, when the top "
            f"{share} of its text's words by weight are removed, against {share} of its words at random: "
            f"{measured}.\n")


def driving_window(mistake: Any) -> str:
    """A mistake read in windows: the window that agreed most with the wrong answer, quoted."""
    if not hasattr(mistake, "window_text"):
        return ""
    return (f"\n\n   Read in {mistake.windows} windows; window {mistake.window} agreed most with the answer:\n\n"
            f"   > {_excerpt(mistake.window_text)}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _excerpt(text: str, chars: int = EXCERPT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[:chars] + "..."


def to_html(markdown_text: str, base: Path) -> str:
    """The report as one HTML file, its PNG pictures embedded as data URIs."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])

    def embed(match: re.Match[str]) -> str:
        data = base64.b64encode((base / match.group(1)).read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Evaluation report</title>\n"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}"
            "img{max-width:32em;display:block;margin:1em 0}blockquote{color:#444}</style>\n"
            f"</head><body>\n{body}\n</body></html>\n")
