"""A real `dvc repro` on GoEmotions (multi-label, 28 labels), capped to a few hundred comments per split: every
stage, then the export's label sets from predict (both backends), the service and transformers.pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from finetune.core.contract import UNCERTAIN
from finetune.serving.browser import predict_on_page
from finetune.serving.loadtest import http_json, running_service
from tests.conftest import SHARED_GOEMOTIONS, make_repo, make_tiny_model, offline_env, run, small_params, stages_run
from tests.test_pipeline import ALL_STAGES

pytestmark = [pytest.mark.pipeline, pytest.mark.skipif(not SHARED_GOEMOTIONS.is_file(),
                                                       reason=f"GoEmotions is not at {SHARED_GOEMOTIONS}")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A repo that has run every stage on GoEmotions capped at 600 comments per split, with a tiny 28-label model."""
    folder = tmp_path_factory.mktemp("goemotions")
    model = make_tiny_model(folder / "tiny-28", num_labels=28)
    repo = make_repo(folder / "repo", small_params(model, **{
        "data.source": str(SHARED_GOEMOTIONS), "data.label_column": "labels", "data.label_separator": ",",
        "data.max_samples": 600, "train.class_weights": "balanced"}))
    result = run(["dvc", "repro"], repo)
    assert set(stages_run(result.stdout)) == ALL_STAGES
    return repo


def test_goemotions_label_sets_train_with_a_sigmoid_per_label_and_score_with_tuned_thresholds(repo):
    data = json.loads((repo / "reports/data.json").read_text())
    assert data["task"] == "multi_label" and len(data["labels"]) == 28
    assert data["train_label_counts"]["neutral"] == max(data["train_label_counts"].values())
    assert set(data["train_labels_per_text"]) >= {"1", "2"}
    split = json.loads((repo / "reports/split.json").read_text())
    assert abs(split["rows"]["train"] - 600) <= 10  # iterative stratification's sizes are approximate
    assert split["labels"]["validation"]["neutral"] > 0

    config = json.loads((repo / "models/model/config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and len(config["id2label"]) == 28

    evaluation = json.loads((repo / "reports/evaluation.json").read_text())
    assert {"f1_micro", "f1_macro", "f1_weighted", "f1_samples", "subset_accuracy", "hamming_loss",
            "label_ranking_average_precision", "roc_auc_macro", "at_0.5", "calibration"} <= set(evaluation)
    assert set(evaluation["per_label"]) == set(data["labels"])
    assert all(0 < row["threshold"] < 1 for row in evaluation["per_label"].values())
    # a capped sample leaves some of the rarest labels without test positives: named, not scored, no failure
    absent = [name for name, row in evaluation["per_label"].items() if row["support"] == 0]
    assert evaluation["labels_without_both_classes"] == absent
    headline = json.loads((repo / "reports/metrics.json").read_text())
    assert headline["f1_macro"] == evaluation["f1_macro"] and headline["n_test"] == evaluation["n_test"]

    predictions = pd.read_csv(repo / "reports/predictions.csv", dtype=str, keep_default_na=False)
    assert predictions.columns[:3].tolist() == ["row", "label", "predicted"] and len(predictions.columns) == 31
    assert all(name in data["labels"] for cell in predictions["label"] for name in cell.split("|") if cell)
    f1 = pd.read_csv(repo / "reports/plots/label_f1.csv", dtype={"label": str})
    assert sorted(f1["label"]) == sorted(data["labels"])
    assert (repo / "reports/figures/label_f1.png").stat().st_size > 0

    errors = pd.read_csv(repo / "reports/errors.csv", dtype=str, keep_default_na=False)
    assert errors.columns.tolist() == ["row", "label", "predicted", "missed", "spurious", "worst_label", "n_wrong",
                                       "slices", "drivers", "text"]
    assert all(row.missed or row.spurious for row in errors.itertuples())
    for row in errors.head(20).itertuples():  # per label given (or the most probable), the words behind it
        explained = [part.split(": ")[0] for part in row.drivers.split(" | ")]
        assert explained == (row.predicted.split("|") if row.predicted else explained[:1])
        assert all(name in data["labels"] for name in explained)
    figure = json.loads((repo / "reports/explanations.json").read_text())["occlusion"]
    assert figure["texts"] == min(200, evaluation["n_test"])
    summary = json.loads((repo / "reports/error_summary.json").read_text())
    worst = [row["f1"] for row in summary["labels_worst_first"]]
    assert worst == sorted(worst) and summary["n_errors"] == len(errors)
    baselines = json.loads((repo / "reports/baselines.json").read_text())
    assert set(baselines) == {"tfidf_logreg", "frozen_encoder_logreg"}
    assert all({"f1_macro", "f1_micro", "f1_macro_at_0.5"} <= set(b) for b in baselines.values())
    report = (repo / "reports/report.md").read_text()
    assert "Each label, weakest first" in report and "UNCERTAIN" in report

    export = repo / "models/export"
    exported = json.loads((export / "config.json").read_text())
    thresholds = exported["finetune_label_thresholds"]
    assert thresholds == [evaluation["per_label"][name]["threshold"] for name in data["labels"]]
    assert exported["problem_type"] == "multi_label_classification" and "uncertain_threshold" not in exported
    figures = json.loads((repo / "reports/export.json").read_text())
    assert figures["parity_max_abs_error_micro"] <= figures["parity_tolerance_micro"]
    assert 0 <= figures["fp32_accuracy"] <= 1 and "int8_accuracy" in figures

    texts = ["Thank you so much, this made my day!", "I am so angry and disappointed right now.",
             "What do you mean by that?"]
    answers = {backend: [json.loads(line) for line in run(
        ["python", "-m", "finetune", "predict", "--model", str(export), "--backend", backend, "--json", *texts],
        repo).stdout.splitlines()] for backend in ("torch", "onnx")}
    for torch_answer, onnx_answer in zip(answers["torch"], answers["onnx"], strict=True):
        assert torch_answer["label_set"] == onnx_answer["label_set"]
        given = [name for name, t in zip(data["labels"], thresholds, strict=True)
                 if torch_answer["probabilities"][name] >= t]
        assert torch_answer["label_set"] == given
        assert torch_answer["label"] == ("UNCERTAIN" if torch_answer["uncertain"] else "|".join(given))

    # transformers.pipeline gives the same per-label probabilities; the README's lines make the same label sets
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(export), top_k=None)
    config = classify.model.config
    for text, answer in zip(texts, answers["torch"], strict=True):
        scores = classify(text)[0]  # one list of {label, score} per text
        assert {s["label"]: pytest.approx(s["score"], abs=1e-5) for s in scores} == answer["probabilities"]
        thresholds_of = config.finetune_label_thresholds  # the README's lines
        labels = [s["label"] for s in scores if s["score"] >= thresholds_of[config.label2id[s["label"]]]]
        assert sorted(labels, key=config.label2id.get) == answer["label_set"]

    from fastapi.testclient import TestClient

    from finetune.serving.backends import load_predictor
    from finetune.serving.service import create_app

    with TestClient(create_app(load_predictor(export), export)) as client:
        metadata = client.get("/metadata").json()
        assert metadata["multi_label"] and metadata["label_thresholds"] == thresholds
        served = client.post("/predict", json={"texts": texts}).json()["predictions"]
    assert [p["label_set"] for p in served] == [a["label_set"] for a in answers["onnx"]]


@pytest.mark.browser
def test_the_web_page_shows_the_label_set_and_each_labels_probability_against_its_threshold(repo, browser,
                                                                                           tmp_path):
    from selenium.webdriver.common.by import By

    export = repo / "models/export"
    thresholds = json.loads((export / "config.json").read_text())["finetune_label_thresholds"]
    text = "Thank you so much, this made my day!"
    with running_service(["--model", str(export)], tmp_path / "serve.log", env=offline_env()) as url:
        served = http_json(url, "/predict", {"texts": [text]})[1]["predictions"][0]
        predict_on_page(browser, url, text)
    assert "Labels (any number per text)" in browser.find_element(By.ID, "model").text
    shown = browser.find_element(By.ID, "label").text
    assert shown == (UNCERTAIN if served["uncertain"] else ", ".join(served["label_set"]) or "(no label)")
    rows = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in browser.find_elements(By.CSS_SELECTOR, "#probabilities tr")]
    labels = list(served["probabilities"])
    assert len(rows) == 28 and sorted(row[0] for row in rows) == sorted(labels)
    probs = [row[1] for row in rows]
    assert probs == sorted(probs, key=lambda p: -float(p.rstrip("%")))  # most probable first
    for name, shown_p, shown_t, state in rows:
        assert shown_t == f"threshold {100 * thresholds[labels.index(name)]:.1f}%"
        assert state == ("unsure" if name in served["uncertain_labels"] else
                         "given" if name in served["label_set"] else "")
        assert shown_p == f"{100 * served['probabilities'][name]:.1f}%"
