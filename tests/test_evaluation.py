"""Test metrics, calibration, plot data, slices, error analysis and the report, on inline predictions."""

import json

import numpy as np
import pandas as pd
import pytest

from finetune.core.files import read_table, write_table
from finetune.evaluation.calibration import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    probabilities,
    risk_coverage,
    selective,
)
from finetune.evaluation.error_analysis import error_summary, wrong_predictions
from finetune.evaluation.metrics import (
    classification_metrics,
    evaluate,
    evaluate_multi_label,
    headline,
    predictions_table,
    write_plots,
)
from finetune.evaluation.multilabel import tune_decision_threshold
from finetune.evaluation.report import (
    build_report,
    confusion_in_words,
    decision_paragraph,
    temperature_sentence,
    to_html,
)
from finetune.evaluation.slices import SliceInput, slice_masks, slice_report, wilson_interval

NAMES = ["negative", "positive"]
LABELS = np.array([0, 0, 1, 1, 1])
PROBS = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3], [0.05, 0.95]])


def test_binary_metrics_are_those_of_the_second_label():
    metrics = classification_metrics(LABELS, PROBS, NAMES)
    # predictions 0 1 1 0 1: TP=2, FP=1, FN=1, TN=1
    assert metrics["accuracy"] == 0.6
    assert metrics["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["recall"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["positive_label"] == "positive"
    assert metrics["confusion_matrix"]["counts"] == [[1, 1], [1, 2]]
    assert metrics["confusion_matrix"]["normalized"] == [[0.5, 0.5], [0.333333, 0.666667]]
    assert metrics["per_class"]["negative"]["support"] == 2
    assert metrics["f1_macro"] == pytest.approx((0.5 + 2 / 3) / 2, abs=1e-6)
    assert metrics["roc_auc"] == pytest.approx(5 / 6, abs=1e-6)  # 5 of 6 (pos, neg) pairs ranked right


def test_imbalance_figures_balanced_accuracy_mcc_and_each_classes_pr_auc():
    # 8 majority texts all right, 2 minority texts: one right. Accuracy flatters; balanced accuracy does not.
    labels = np.array([0] * 8 + [1, 1, 2])
    probs = np.array([[0.9, 0.05, 0.05]] * 8 + [[0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    metrics = classification_metrics(labels, probs, ["common", "rare", "rarest"])
    assert metrics["accuracy"] == pytest.approx(10 / 11, abs=1e-6)
    assert metrics["balanced_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3, abs=1e-6)
    assert 0 < metrics["mcc"] < 1
    assert metrics["per_class"]["rare"]["average_precision"] == pytest.approx(1.0)  # both rare texts ranked on top
    missing = classification_metrics(labels[:10], probs[:10], ["common", "rare", "rarest"])
    assert "average_precision" not in missing["per_class"]["rarest"]  # absent from these rows: not scored


def test_multiclass_metrics_use_macro_averages():
    labels = np.array([0, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 2]] * 0.9 + 0.1 / 3
    metrics = classification_metrics(labels, probs, ["a", "b", "c"])
    assert metrics["accuracy"] == 0.75 and metrics["positive_label"] is None
    assert metrics["recall"] == pytest.approx((1 + 1 + 0.5) / 3, abs=1e-6)
    assert metrics["f1"] == metrics["f1_macro"]
    assert metrics["confusion_matrix"]["counts"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_selective_prediction_at_a_threshold():
    # 3 of 5 reach 0.8 (0.9, 0.8, 0.95); all three are right
    assert selective(PROBS, LABELS, 0.8) == {"threshold": 0.8, "coverage": 0.6, "uncertain_share": pytest.approx(0.4),
                                             "accuracy_answered": 1.0}
    curve = risk_coverage(PROBS, LABELS, points=5)
    assert [row["coverage"] for row in curve] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert [row["accuracy"] for row in curve] == [1.0, 1.0, 1.0, 0.75, 0.6]


def test_calibration_measures():
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, np.array([0, 1])) == 0.0
    assert brier_score(perfect, np.array([0, 1])) == 0.0
    assert brier_score(perfect, np.array([1, 0])) == 2.0
    # every answer at confidence 0.9 but only half right: a gap of 0.4
    assert expected_calibration_error(np.array([[0.9, 0.1]] * 4), np.array([0, 0, 1, 1])) == pytest.approx(0.4)


def test_temperature_scaling_repairs_overconfidence():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 4000)
    p = 1 / (1 + np.exp(-true_logit))
    labels = (rng.random(4000) < p).astype(int)  # labels drawn from calibrated probabilities ...
    logits = np.stack([np.zeros(4000), true_logit * 3], axis=1)  # ... then made 3x over-confident
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(probabilities(logits), labels)
    after = expected_calibration_error(probabilities(logits, temperature), labels)
    assert after < before / 3


def test_a_tiny_or_all_right_validation_split_cannot_make_every_answer_certain(caplog):
    """24 validation texts all answered right once gave T = 0.05, after which any text got confidence 1.000. Below
    evaluate.calibration_min_texts T stays 1 (warned, recorded, said in the report); above it, T stays within its
    bounds, and a fit at a bound is said too."""
    rng = np.random.default_rng(3)
    test_logits = rng.normal(0, 1, (50, 2))
    test_labels = test_logits.argmax(1)
    val_logits = rng.normal(0, 1, (24, 2))
    few = evaluate(test_logits, test_labels, val_logits, val_logits.argmax(1), NAMES, 0.8, calibration_min_texts=100)
    cal = few.metrics["calibration"]
    assert (cal["temperature"], cal["temperature_fit"], cal["validation_texts"]) == (1.0, "too_few_texts", 24)
    assert np.array_equal(few.probs, few.raw_probs) and "calibration skipped: 24 validation texts" in caplog.text
    sentence = temperature_sentence(cal)
    assert "not applied" in sentence and "`evaluate.calibration_min_texts` (100)" in sentence
    val_logits = rng.normal(0, 1, (400, 2))
    right = evaluate(test_logits, test_labels, val_logits, val_logits.argmax(1), NAMES, 0.8, calibration_min_texts=100)
    assert right.metrics["calibration"]["temperature"] == 0.5
    assert right.metrics["calibration"]["temperature_fit"] == "at_bound" and "at its bound 0.5" in caplog.text
    assert "reached its bound, T = 0.500" in temperature_sentence(right.metrics["calibration"])
    sets = (rng.random((24, 2)) < 0.5).astype(float)
    label_sets = evaluate_multi_label(rng.normal(0, 1, (50, 2)), sets[:1].repeat(50, 0), rng.normal(0, 1, (24, 2)),
                                      sets, ["x", "y"], band=0.5, calibration_min_texts=100)
    assert label_sets.metrics["calibration"]["temperature"] == 1.0


def test_evaluate_fits_on_validation_and_keeps_predictions():
    rng = np.random.default_rng(1)
    val_logits, test_logits = rng.normal(0, 4, (200, 3)), rng.normal(0, 4, (100, 3))
    val_labels, test_labels = val_logits.argmax(1), test_logits.argmax(1)
    val_labels[:40] = (val_labels[:40] + 1) % 3  # some mistakes
    result = evaluate(test_logits, test_labels, val_logits, val_labels, ["a", "b", "c"], 0.8)
    assert (result.probs.argmax(1) == result.raw_probs.argmax(1)).all()  # scaling never changes the label
    assert result.metrics["calibration"]["temperature"] == pytest.approx(fit_temperature(val_logits, val_labels),
                                                                         abs=1e-6)
    assert result.metrics["accuracy"] == 1.0
    top = headline(result.metrics)  # the declared metrics: flat, a dozen columns, no per-class detail
    assert top["accuracy"] == 1.0 and top["ece"] == result.metrics["calibration"]["ece_after"]
    assert top["answered"] == result.metrics["uncertain"]["coverage"]
    assert len(top) <= 13 and all(isinstance(v, int | float) for v in top.values())


def test_plot_data_is_small_and_complete(tmp_path):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 5000)
    logits = np.stack([np.zeros(5000), rng.normal(0, 1, 5000) + (labels * 2 - 1)], axis=1)
    result = evaluate(logits, labels, logits, labels, NAMES, 0.8)
    write_plots(result, labels, NAMES, 0.8, tmp_path / "plots", tmp_path / "figures")
    confusion = pd.read_csv(tmp_path / "plots/confusion.csv")
    assert len(confusion) == 4 and confusion["count"].sum() == 5000  # aggregated: not one row per text
    roc = pd.read_csv(tmp_path / "plots/roc/positive.csv")
    assert len(roc) <= 200 and roc.iloc[0].tolist() == [0, 0] and roc.iloc[-1].tolist() == [1, 1]
    assert len(pd.read_csv(tmp_path / "plots/reliability_after.csv")) <= 15
    assert pd.read_csv(tmp_path / "plots/confidence.csv")[["right", "wrong"]].to_numpy().sum() == 5000
    assert pd.read_csv(tmp_path / "plots/label_f1.csv")["label"].tolist() == NAMES
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "confidence.png", "confusion.png", "label_f1.png", "precision_recall.png", "reliability.png",
        "risk_coverage.png", "roc.png"]
    first = (tmp_path / "figures/roc.png").read_bytes()
    write_plots(result, labels, NAMES, 0.8, tmp_path / "plots", tmp_path / "figures")
    assert (tmp_path / "figures/roc.png").read_bytes() == first  # byte-stable


def test_wilson_interval():
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_slices_flag_significantly_worse_groups():
    texts = ["I did not like it but fine"] * 40 + ["great film with a fine cast and a good story too"] * 160
    labels = ["negative"] * 40 + ["positive"] * 160
    predicted = ["positive"] * 30 + ["negative"] * 10 + ["positive"] * 160  # negation texts mostly wrong
    predictions = pd.DataFrame({"row": range(200), "label": labels, "predicted": predicted,
                                "confidence": np.linspace(0.99, 0.6, 200)})
    masks = slice_masks(SliceInput(texts, np.array([7] * 40 + [12] * 160), max_length=12), labels)
    assert masks["negation"].sum() == 40 and masks["contrast"].sum() == 40 and masks["truncated"].sum() == 160
    report = slice_report(predictions, texts, masks)
    assert report["negation"]["significantly_below"] and not report["truncated"]["significantly_below"]
    assert report["label=negative"]["accuracy"] == 0.25 and len(report["negation"]["worst"]) == 3
    assert report["negation"]["worst"][0]["confidence"] >= report["negation"]["worst"][1]["confidence"]
    errors = wrong_predictions(predictions, texts, masks)
    assert len(errors) == 30 and errors.iloc[0]["slices"] == "very_short;negation;contrast"
    summary = error_summary(predictions, errors, report)
    assert summary["slices_significantly_below"] == ["very_short", "negation", "contrast", "label=negative"]
    assert summary["confusions"] == {"negative -> positive": 30}


def test_tables_are_byte_stable(tmp_path):
    table = predictions_table(LABELS, PROBS, NAMES)
    assert table.columns.tolist() == ["row", "label", "predicted", "confidence", "prob_negative", "prob_positive"]
    write_table(table, tmp_path / "p.csv")
    first = (tmp_path / "p.csv").read_bytes()
    write_table(table, tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_bytes() == first and b"0.950000" in first


@pytest.mark.parametrize("names", [["1", "2"], ["01", "1.0"], ["True", "False"], ["NA", "null"]])
def test_label_names_that_look_like_numbers_or_missing_values_read_back_as_written(tmp_path, names):
    write_table(predictions_table(LABELS, PROBS, names), tmp_path / "p.csv")
    table = read_table(tmp_path / "p.csv")
    assert set(table["label"]) == set(names) and set(table["predicted"]) <= set(names)
    errors = table[table["label"] != table["predicted"]].assign(text="t", slices="")
    json.dumps(error_summary(table, errors, {}))  # label names are str keys, never numpy integers


def test_confusion_in_words():
    text = confusion_in_words({"labels": NAMES, "counts": [[50, 10], [5, 35]]})
    assert "35 `positive` texts were recognised (true positives)" in text and "5 were called `negative`" in text
    assert "10 were called `positive` (false positives)" in text
    three = confusion_in_words({"labels": ["a", "b", "c"], "counts": [[5, 2, 0], [0, 4, 1], [3, 0, 6]]})
    assert "3 `c` texts were called `a`" in three


def test_report_markdown_and_html(tmp_path):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    logits = np.stack([np.zeros(300), rng.normal(0, 2, 300) + (labels * 2 - 1)], axis=1)
    result = evaluate(logits, labels, logits, labels, NAMES, 0.8)
    write_plots(result, labels, NAMES, 0.8, tmp_path / "plots", tmp_path / "figures")
    predictions = predictions_table(labels, result.probs, NAMES)
    texts = [f"text {i}" for i in range(300)]
    masks = slice_masks(SliceInput(texts, np.full(300, 5), 128), predictions["label"].tolist())
    slices = slice_report(predictions, texts, masks)
    errors = wrong_predictions(predictions, texts, masks)
    text = build_report(model="minilm", source="rotten_tomatoes", split_sizes={"train": 10, "test": 300},
                        shared_texts={"train_test": 7, "train_validation": 0},
                        settings={"max_length": 128}, metrics=result.metrics,
                        baselines={"tfidf_logreg": {"accuracy": 0.7, "f1_macro": 0.69}},
                        training={"epochs_run": 3, "best_epoch": 2, "early_stopped": False, "overfitting": True},
                        errors=errors, error_summary=error_summary(predictions, errors, slices),
                        figures={"ROC": "figures/roc.png"},
                        significance={"resamples": 1000, "tfidf_logreg": {
                            "accuracy": {"difference": 0.05, "ci_low": 0.02, "ci_high": 0.08, "p_value": 0.001},
                            "f1_macro": {"difference": 0.04, "ci_low": -0.01, "ci_high": 0.09, "p_value": 0.12}}})
    assert f"| fine-tuned minilm | {result.metrics['accuracy']:.4f} |" in text and "| tfidf logreg | 0.7000 |" in text
    assert "true positives" in text and "overfitting" in text and text.count("read as") == 5
    assert "T = " in text and "UNCERTAIN" in text and "7 between train\n  and test" in text
    assert "| tfidf logreg | +0.0500 [+0.0200, +0.0800], p = 0.001 | +0.0400 [-0.0100, +0.0900], p = 0.120 |" in text
    html = to_html(text, tmp_path)
    assert 'src="data:image/png;base64,' in html and "<table>" in html
    json.dumps(result.metrics)  # the metrics are plain JSON


def test_a_tuned_decision_threshold_comes_from_validation_and_argmax_figures_stand_beside():
    rng = np.random.default_rng(4)
    # imbalanced: 1 in 10 positive, and the model under-rates the positives, so argmax misses many of them
    val_labels, test_labels = (rng.random(2000) < 0.1).astype(int), (rng.random(2000) < 0.1).astype(int)
    def logits(labels):
        return np.stack([np.zeros(len(labels)), rng.normal(0, 1, len(labels)) + 2.0 * labels - 2.5], axis=1)
    val_logits, test_logits = logits(val_labels), logits(test_labels)
    plain = evaluate(test_logits, test_labels, val_logits, val_labels, NAMES, 0.8)
    assert "decision" not in plain.metrics and plain.decision_threshold is None  # argmax runs stay as they were
    tuned = evaluate(test_logits, test_labels, val_logits, val_labels, NAMES, 0.8, tune_decision=True)
    cut = tuned.decision_threshold
    assert cut < 0.5 and tuned.metrics["decision"]["threshold"] == cut
    calibrated_val = probabilities(val_logits, tuned.metrics["calibration"]["temperature"])
    assert cut == tune_decision_threshold(calibrated_val, val_labels)  # fitted on validation, never on test
    assert tuned.metrics["f1"] > plain.metrics["f1"]  # the positive class is found more often
    assert tuned.metrics["decision"]["argmax"]["f1"] == plain.metrics["f1"]
    table = predictions_table(test_labels, tuned.probs, NAMES, cut)
    assert (table["predicted"] == np.where(tuned.probs[:, 1] >= cut, "positive", "negative")).all()
    assert (table["confidence"] < 0.5).any()  # a positive answered below 0.5 reports its own probability
    assert "evaluate.decision_threshold tuned" in decision_paragraph(tuned.metrics["decision"])
    assert decision_paragraph(plain.metrics.get("decision")) == ""
    with pytest.raises(ValueError, match="two classes"):
        tune_decision_threshold(np.full((3, 3), 1 / 3), np.array([0, 1, 2]))
