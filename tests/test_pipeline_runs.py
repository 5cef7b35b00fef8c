"""Pipeline runs that each need a repository of their own: other data, an interrupted or data-parallel training,
a real pretrained model. (The tests that share one small run are in test_pipeline.py.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import (
    SHARED_GOEMOTIONS,
    SHARED_IMDB,
    make_repo,
    make_tiny_model,
    offline_env,
    run,
    small_params,
    stages_run,
)
from tests.test_pipeline import ALL_STAGES, lock_outs

pytestmark = pytest.mark.pipeline


def test_local_csv_touched_gives_identical_outputs(tmp_path, tiny_model):
    source = tmp_path / "reviews.csv"
    rows = [(f"review number {i} was {'great' if i % 2 else 'bad'}", "good" if i % 2 else "bad") for i in range(80)]
    source.write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows))
    repo = make_repo(tmp_path / "repo", small_params(tiny_model, **{"data.source": str(source)}))
    run(["dvc", "repro", "tokenize"], repo)
    before = lock_outs(repo)
    os.utime(source, (1, 1))  # a new file time, same content
    run(["dvc", "repro", "-f", "-s", "download", "split", "tokenize"], repo)
    assert lock_outs(repo) == before
    assert not [p for p in (repo / "data").rglob("cache-*.arrow")]  # datasets wrote no cache files into outputs


def test_kill_9_mid_training_then_repro_resumes_to_the_same_model(tmp_path, tiny_model):
    import signal
    import subprocess
    import time

    from tests.conftest import offline_env

    repo = make_repo(tmp_path / "repo", small_params(tiny_model, **{"train.epochs": 4,
                                                                   "train.early_stopping_patience": 4}))
    run(["dvc", "repro", "train"], repo)
    uninterrupted = lock_outs(repo)["models/model"]
    first = subprocess.Popen(["dvc", "repro", "-f", "train"], cwd=repo, env=offline_env(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        checkpoints = sorted((repo / ".checkpoints").glob("*/checkpoint-*/scheduler.pt"))
        if len(checkpoints) >= 2:  # two epochs saved: kill mid-run
            break
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()  # the rerun must wait for the killed run to be gone (DVC's lock)
    assert first.returncode == -signal.SIGKILL and not (repo / "models/model").exists()
    # Forced: otherwise DVC checks the uninterrupted run's model out of its cache instead of training.
    resumed = run(["dvc", "repro", "-f", "--no-run-cache", "train"], repo)
    assert "resuming from .checkpoints/" in resumed.stdout + resumed.stderr
    assert lock_outs(repo)["models/model"] == uninterrupted  # bit-identical to the uninterrupted run
    assert not list((repo / ".checkpoints").iterdir())


def test_two_data_parallel_processes_train_under_torchrun_with_gloo(tmp_path, tiny_model):
    """train.num_processes: 2 on CPUs: the stage starts itself under torchrun; process 0 writes the outputs. With
    LoRA adapters (DDP over a model with frozen weights) and two batches per update."""
    repo = make_repo(tmp_path / "repo", small_params(tiny_model, **{
        "train.num_processes": 2, "train.adapter": "lora", "train.gradient_accumulation_steps": 2}))
    result = run(["dvc", "repro", "train"], repo)
    log = result.stdout + result.stderr
    assert "training done over 2 process(es)" in log
    assert log.count("checkpoints in .checkpoints/") == 2  # both processes trained
    assert (repo / "models/model/model.safetensors").is_file()
    assert (repo / "models/adapter/adapter_model.safetensors").is_file()
    metrics = json.loads((repo / "reports/training/metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["effective_batch"] == 8 * 2 * 2
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    assert not list((repo / ".checkpoints").iterdir())
    assert "up to date" in run(["dvc", "status", "train"], repo).stdout




def news_like_folder(folder: Path) -> Path:
    """A 4-class data set laid out like AG News (title, description, label 1..4 in train.csv and test.csv):
    GoEmotions comments with exactly one of four emotions, their first words as the title."""
    import tarfile

    classes = {"gratitude": "1", "amusement": "2", "anger": "3", "sadness": "4"}
    folder.mkdir()
    with tarfile.open(SHARED_GOEMOTIONS) as archive:
        for split, rows in (("train", 80), ("test", 20)):
            frame = pd.read_csv(archive.extractfile(f"goemotions/{split}.tsv"), sep="\t", dtype=str,
                                keep_default_na=False)
            frame = frame[frame["labels"].isin(classes)].groupby("labels").head(rows).sort_values("id")
            words = frame["text"].str.split(" ", n=4)
            pd.DataFrame({"title": words.str[:4].str.join(" "), "description": words.str[4:].str.join(" "),
                          "label": frame["labels"].map(classes)}).to_csv(folder / f"{split}.csv", index=False)
    return folder


def zero_one_strings_file(path: Path) -> Path:
    """Rotten Tomatoes reviews as JSON Lines whose labels are the strings "0" and "1"."""
    from finetune.data.sources import read_rotten_tomatoes

    frame = read_rotten_tomatoes()["train"][0].groupby("label").head(100)
    with path.open("w") as handle:
        for text, label in zip(frame["text"], frame["label"], strict=True):
            handle.write(json.dumps({"review": text, "label": "1" if label == "positive" else "0"}) + "\n")
    return path


@pytest.mark.skipif(not SHARED_GOEMOTIONS.is_file(), reason=f"GoEmotions is not at {SHARED_GOEMOTIONS}")
@pytest.mark.parametrize("dataset", ["labels 1..4", "labels '0' and '1' as strings"])
def test_labels_that_look_like_numbers_stay_names_through_every_stage_predict_and_serve(tmp_path, dataset):
    """Label names are strings from download to export, whatever they look like; pandas read "1".."4" back as
    integers once, and error-analysis failed on them."""
    from finetune.serving.loadtest import http_json, running_service

    if dataset == "labels 1..4":  # also the test of more than two classes
        names, model, backends = ["1", "2", "3", "4"], make_tiny_model(tmp_path / "model", 4), ["torch", "onnx"]
        data = {"data.source": str(news_like_folder(tmp_path / "news")), "data.text_columns": ["title", "description"]}
    else:  # PyTorch only, for CI time: the ONNX path reads the same config.json. Trained with LoRA, which the
        # stages carry through: the adapter kept, merged for the export, checked against the base with it
        names, model, backends = ["0", "1"], make_tiny_model(tmp_path / "model", 2), ["torch"]
        data = {"data.source": str(zero_one_strings_file(tmp_path / "reviews.jsonl")), "data.text_columns": ["review"],
                "export.onnx": False, "train.adapter": "lora"}
    repo = make_repo(tmp_path / "repo", small_params(model, **data, **{"train.epochs": 1, "export.int8": False}))
    assert set(stages_run(run(["dvc", "repro"], repo).stdout)) == ALL_STAGES
    assert json.loads((repo / "reports/data.json").read_text())["labels"] == names
    metrics = json.loads((repo / "reports/evaluation.json").read_text())
    assert list(metrics["per_class"]) == names and metrics["confusion_matrix"]["labels"] == names
    assert len(metrics["confusion_matrix"]["counts"]) == len(names) and 0 <= metrics["f1_macro"] <= 1
    if len(names) > 2:
        assert metrics["positive_label"] is None  # macro averages, no positive class
    summary = json.loads((repo / "reports/error_summary.json").read_text())
    assert set(summary["errors_per_true_label"]) <= set(names)
    config = json.loads((repo / "models/export/config.json").read_text())
    assert list(config["id2label"].values()) == names
    training = json.loads((repo / "reports/training/metrics.json").read_text())
    if data.get("train.adapter") == "lora":
        assert (repo / "models/adapter/adapter_model.safetensors").is_file()
        assert json.loads((repo / "reports/export.json").read_text())["adapter_merge_max_abs_error_micro"] <= 100
        assert training["trainable_parameters"] < training["total_parameters"] / 10
        assert "%: LoRA adapters and the head)" in (repo / "reports/report.md").read_text()
        card = (repo / "models/export/README.md").read_text()
        assert "- Trained: " in card and "%: LoRA adapters and the head)" in card
    else:
        assert json.loads((repo / "models/adapter/adapter.json").read_text())["adapter"] == "none"
        assert training["trainable_parameters"] == training["total_parameters"]
    for backend in backends:
        out = run(["python", "-m", "finetune", "predict", "--json", "--threshold", "0", "--backend", backend,
                   "Thank you so much, this made my day"], repo).stdout
        answer = json.loads(out)
        assert answer["label"] in names and list(answer["probabilities"]) == names, backend
    serve = ["--model", str(repo / "models/export"), "--backend", backends[-1]]
    with running_service(serve, tmp_path / "serve.log", env=offline_env()) as url:
        status, answer = http_json(url, "/predict", {"texts": ["I am so sad about this", "How funny"]})
        metadata = http_json(url, "/metadata")[1]
    assert status == 200 and metadata["labels"] == names
    assert all(p["predicted"] in names and list(p["probabilities"]) == names for p in answer["predictions"])


@pytest.mark.skipif(not SHARED_IMDB.is_file(), reason=f"the IMDB archive is not at {SHARED_IMDB}")
def test_long_imdb_reviews_are_read_whole_in_windows_and_answered_per_review_by_every_stage_and_backend(
        tmp_path, tiny_model):
    """The real IMDB archive (long reviews, HTML line breaks) read in windows of 32 tokens: one answer per review
    everywhere, from evaluate to the service, and the export's answers are evaluate's."""
    from finetune.serving.loadtest import http_json, running_service

    windows = {"tokenize.truncation": "windows", "tokenize.stride": 8, "tokenize.max_windows": 4}
    repo = make_repo(tmp_path / "repo", small_params(tiny_model, **windows, **{
        "data.source": str(SHARED_IMDB), "data.max_samples": 80, "train.epochs": 1, "export.int8": False}))
    assert set(stages_run(run(["dvc", "repro"], repo).stdout)) == ALL_STAGES
    report = json.loads((repo / "reports/data.json").read_text())
    assert report["rows"] == {"test": 80, "train": 80} and report["labels"] == ["negative", "positive"]
    assert json.loads((repo / "reports/metrics.json").read_text())["n_test"] == 80  # reviews, not windows
    predictions = pd.read_csv(repo / "reports/predictions.csv", dtype={"label": str, "predicted": str})
    assert len(predictions) == 80 and predictions["windows"].max() == 4 and (predictions["windows"] > 1).mean() > 0.5
    assert ((predictions["window"] >= 1) & (predictions["window"] <= predictions["windows"])).all()
    errors = pd.read_csv(repo / "reports/errors.csv", dtype=str, keep_default_na=False)
    assert "<br />" not in (repo / "reports/errors.csv").read_text()
    assert len(errors) and all(quote in text for quote, text in zip(errors["window_text"], errors["text"], strict=True))
    assert (errors["drivers"].head(20) != "").all()  # occlusion reads the whole review, in its windows
    explained = json.loads((repo / "reports/explanations.json").read_text())
    assert explained["occlusion"]["texts"] == 80 and "windows" in explained["integrated-gradients"]["skipped"]
    slices = json.loads((repo / "reports/slices.json").read_text())
    assert "truncated" not in slices and slices["long_document"]["size"] == int((predictions["windows"] > 1).sum())
    config = json.loads((repo / "models/export/config.json").read_text())
    assert (config["finetune_truncation"], config["finetune_stride"], config["finetune_max_windows"],
            config["finetune_window_aggregation"]) == ("windows", 8, 4, "mean")
    assert json.loads((repo / "reports/export.json").read_text())["parity_long_text_windows"] == 4
    assert "texts are read whole, in windows of 32 tokens" in (repo / "models/export/README.md").read_text()
    assert "- Long texts: texts are read whole" in (repo / "reports/report.md").read_text()

    # the export answers a test review as evaluate did: the same windows, the same aggregated, calibrated logits
    import datasets

    test = datasets.load_from_disk(str(repo / "data/splits"))["test"]
    reviews = [test[i]["text"] for i in range(3)]
    for backend in ("torch", "onnx"):
        out = run(["python", "-m", "finetune", "predict", "--json", "--backend", backend, *reviews], repo).stdout
        answers = [json.loads(line) for line in out.splitlines()]
        for answer, row in zip(answers, predictions.head(3).itertuples(), strict=True):
            assert answer["predicted"] == row.predicted
            assert answer["probabilities"]["positive"] == pytest.approx(row.prob_positive, abs=1e-4), backend
    with running_service(["--model", str(repo / "models/export")], tmp_path / "serve.log", env=offline_env()) as url:
        metadata = http_json(url, "/metadata")[1]
        status, answer = http_json(url, "/predict", {"texts": reviews[:1]})
    assert metadata["windows"] == {"stride": 8, "max_windows": 4, "aggregation": "mean"}
    assert status == 200 and answer["predictions"][0]["predicted"] == predictions["predicted"][0]
