"""A real `dvc repro` on GoEmotions (multi-label, 28 labels), capped to a few hundred comments per split."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import make_repo, make_tiny_model, run, small_params

pytestmark = pytest.mark.pipeline

SHARED_GOEMOTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "goemotions.tar.gz"


@pytest.mark.skipif(not SHARED_GOEMOTIONS.is_file(), reason=f"GoEmotions is not at {SHARED_GOEMOTIONS}")
def test_goemotions_label_sets_train_with_a_sigmoid_per_label_and_score_with_tuned_thresholds(tmp_path):
    model = make_tiny_model(tmp_path / "tiny-28", num_labels=28)
    repo = make_repo(tmp_path / "repo", small_params(model, **{
        "data.source": str(SHARED_GOEMOTIONS), "data.label_column": "labels", "data.label_separator": ",",
        "data.max_samples": 600, "train.class_weights": "balanced"}))
    run(["dvc", "repro", "evaluate"], repo)

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

    rest = run(["dvc", "repro"], repo, check=False)  # the stages after evaluate refuse label sets, clearly
    assert rest.returncode != 0 and "does not handle multi-label data yet" in rest.stderr + rest.stdout
