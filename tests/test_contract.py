"""The prediction contract: one rule for UNCERTAIN, one batching order, one column name, backend choice."""

import json

import numpy as np
import pytest

from finetune.core.contract import (
    ONNX_FILE,
    TRUNCATIONS,
    UNCERTAIN,
    ExportError,
    ModelInfo,
    answers,
    length_batches,
    probability_column,
    read_model_info,
    single_label_decisions,
    uncertain_rows,
)
from finetune.serving.backends import chosen_backend, load_predictor


def test_uncertain_is_a_confidence_below_the_threshold_and_nothing_else():
    probs = np.array([[0.8, 0.2], [0.5, 0.5], [0.1, 0.9]])
    assert uncertain_rows(probs, 0.8).tolist() == [False, True, False]  # equal to the threshold: answered
    assert not uncertain_rows(probs, 0.0).any()
    info = ModelInfo(["UNCERTAIN", "yes"], 0.8, 128, "head")  # a class may even be named UNCERTAIN
    got = answers(["a", "b", "c"], probs, info)
    assert [(p.label, p.predicted, p.uncertain) for p in got] == [
        (UNCERTAIN, "UNCERTAIN", False), (UNCERTAIN, "UNCERTAIN", True), ("yes", "yes", False)]


def test_a_decision_threshold_answers_the_positive_class_from_its_probability_and_confidence_follows():
    probs = np.array([[0.8, 0.2], [0.7, 0.3], [0.1, 0.9]])
    assert single_label_decisions(probs).tolist() == [0, 0, 1]
    assert single_label_decisions(probs, 0.3).tolist() == [0, 1, 1]  # reaching the threshold is enough
    assert uncertain_rows(probs, 0.75, 0.3).tolist() == [False, True, False]  # class 1 at 0.3: not confident
    info = ModelInfo(["neg", "pos"], 0.0, 128, "head", decision_threshold=0.3)
    got = answers(["a", "b", "c"], probs, info)
    assert [(p.label, round(p.confidence, 2)) for p in got] == [("neg", 0.8), ("pos", 0.3), ("pos", 0.9)]
    with pytest.raises(ValueError, match="two classes"):
        single_label_decisions(np.full((2, 3), 1 / 3), 0.5)


def test_length_batches_cover_every_example_once_shortest_first():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    batches = list(length_batches(lengths, 3))
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)
    assert flat[2:4].tolist() == [3, 4]  # equal lengths keep their order (stable)
    with pytest.raises(ValueError, match="batch_size"):
        next(length_batches(lengths, 0))


def test_params_offer_exactly_the_truncations_the_contract_reads():
    from typing import get_args

    from finetune.core.params import TokenizeParams

    assert get_args(TokenizeParams.model_fields["truncation"].annotation) == TRUNCATIONS


def test_probability_columns_have_one_name():
    assert probability_column("positive") == "prob_positive"


def export_folder(tmp_path, onnx: bool):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "neg", "1": "pos"},
                                                      "finetune_truncation": "tail"}))
    if onnx:
        (tmp_path / ONNX_FILE).write_bytes(b"")
    return tmp_path


def test_predict_and_serve_use_onnx_runtime_when_the_export_has_it(tmp_path):
    with_onnx, without = export_folder(tmp_path / "a", True), export_folder(tmp_path / "b", False)
    assert chosen_backend(with_onnx, "auto", False, "fp32") == "onnx"
    assert chosen_backend(without, "auto", False, "fp32") == "torch"
    assert chosen_backend(with_onnx, "auto", False, "bf16") == "torch"  # bf16 is a PyTorch option
    assert chosen_backend(with_onnx, "torch", False, "fp32") == "torch"
    assert chosen_backend(without, "auto", True, "fp32") == "onnx"  # int8 is an ONNX model (missing: its error)
    for backend, int8, precision, message in [("onnx", False, "bf16", "needs --backend torch"),
                                              ("torch", True, "fp32", "--int8 needs --backend onnx"),
                                              ("auto", True, "bf16", "choose one"),
                                              ("auto", False, "fp16", "--precision must be one of fp32, bf16"),
                                              ("tpu", False, "fp32", "--backend must be one of auto, onnx, torch")]:
        with pytest.raises(ExportError, match=message):
            chosen_backend(with_onnx, backend, int8, precision)


def test_bad_options_are_refused_before_a_model_loads(tmp_path):
    folder = export_folder(tmp_path / "x", True)
    assert read_model_info(folder).truncation == "tail"
    with pytest.raises(ExportError, match="--threshold must lie between 0 and 1"):
        load_predictor(folder, threshold=1.5)
    with pytest.raises(ExportError, match="--batch-size must be at least 1"):
        load_predictor(folder, batch_size=0)
    with pytest.raises(ExportError, match="dvc pull export"):
        load_predictor(tmp_path / "missing")
    with pytest.raises(ExportError, match="dvc repro export"):
        load_predictor(tmp_path)  # a folder without config.json
    (folder / "config.json").write_text(json.dumps({"finetune_truncation": "middle"}))
    with pytest.raises(ExportError, match="finetune_truncation is 'middle'"):
        read_model_info(folder)
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "neg", "1": "pos"},
                                                    "finetune_decision_threshold": 0.35}))
    assert read_model_info(folder).decision_threshold == 0.35
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b", "2": "c"},
                                                    "finetune_decision_threshold": 0.35}))
    with pytest.raises(ExportError, match="finetune_decision_threshold needs two labels"):
        read_model_info(folder)
