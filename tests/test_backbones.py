"""The backbone matrix: a tiny random model of each family users bring goes the pipeline's way, with the stages'
own functions, in one process: train -> evaluate -> export (ONNX with its parity check, int8; the first-token
export where the family allows) -> predict with both backends -> serve. Single-label for every family; label
sets for an encoder and a decoder. Decoders come without a pad token, as Llama's and Qwen's do."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from finetune.core.contract import BAND_KEY, LABEL_THRESHOLDS_KEY, MAX_LENGTH_KEY, THRESHOLD_KEY, TRUNCATION_KEY
from finetune.core.params import TrainParams
from finetune.data.labels import label_feature, label_targets
from finetune.data.sources import read_rotten_tomatoes
from finetune.data.tokenization import tokenize_dataset
from finetune.evaluation.metrics import evaluate, evaluate_multi_label
from finetune.export.model_folder import export_model
from finetune.export.onnx_export import export_checked
from finetune.serving.onnx_predictor import OnnxPredictor
from finetune.serving.service import create_app
from finetune.serving.torch_predictor import TorchPredictor
from finetune.training.inference import predict_logits
from finetune.training.models import align_pad_id, load_classifier, load_tokenizer
from finetune.training.trainer import build_trainer, detect_hardware, save_model, train
from tests.backbones import DECODERS, FAMILIES, make_backbone

pytestmark = pytest.mark.slow  # about five seconds a family, most of it the ONNX export
MAX_LENGTH = 32
SHORT, LONG = "A fine film.", "A long, slow and very dull film, with a plot that goes nowhere for two hours."


def splits(multi_label: bool):
    """Rotten Tomatoes reviews, 48 to train and 16 each to validate and test; label sets add "long" to a review of
    more than 80 characters."""
    import datasets

    frame = read_rotten_tomatoes()["train"][0].groupby("label").head(40).sample(frac=1, random_state=0)
    texts, sentiment = frame["text"].tolist(), frame["label"].tolist()
    if multi_label:
        names = ["long", "negative", "positive"]
        labels = [sorted({names.index(s)} | ({0} if len(t) > 80 else set())) for t, s in zip(texts, sentiment,
                                                                                               strict=True)]
    else:
        names = ["negative", "positive"]
        labels = [names.index(s) for s in sentiment]
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": label_feature(names, "multi_label" if multi_label else "single_label")})
    whole = datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)
    parts = {"train": range(48), "validation": range(48, 64), "test": range(64, 80)}
    return datasets.DatasetDict({name: whole.select(rows) for name, rows in parts.items()}), names


def features_of(split, tokenizer):
    return split.select_columns([c for c in tokenizer.model_input_names if c in split.column_names]).to_list()


CASES = [(family, False) for family in FAMILIES] + [("bert", True), ("qwen2", True)]


@pytest.mark.parametrize(("family", "multi_label"), CASES,
                         ids=[f"{family}-{'label-sets' if multi else 'single'}" for family, multi in CASES])
def test_a_backbone_trains_evaluates_exports_predicts_and_serves(family, multi_label, tmp_path):
    data, names = splits(multi_label)
    base = make_backbone(family, tmp_path / "base", len(names))
    tokenizer = load_tokenizer(str(base))
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "right"
    tokenized = tokenize_dataset(data, tokenizer, MAX_LENGTH, "head", cores=1)
    model = load_classifier(str(base), names, multi_label=multi_label)
    align_pad_id(model, tokenizer)
    if family in DECODERS:  # padded with its end-of-sequence token, in config and tokenizer alike
        assert model.config.pad_token_id == tokenizer.pad_token_id == tokenizer.eos_token_id
    params = TrainParams(epochs=1, batch_size=8, learning_rate=1e-3)
    trainer = build_trainer(model, tokenizer, tokenized, params, 0, tmp_path / "checkpoints", detect_hardware())
    save_model(train(trainer, tmp_path / "checkpoints"), tokenizer, tmp_path / "model")

    logits = {split: predict_logits(model, tokenizer, features_of(tokenized[split], tokenizer), 8)
              for split in ("validation", "test")}
    targets = {split: label_targets(tokenized[split]) for split in logits}
    extra = {THRESHOLD_KEY: 0.5, MAX_LENGTH_KEY: MAX_LENGTH, TRUNCATION_KEY: "head"}
    if multi_label:
        result = evaluate_multi_label(logits["test"], targets["test"], logits["validation"], targets["validation"],
                                      names, band=0.5)
        extra |= {LABEL_THRESHOLDS_KEY: result.thresholds.tolist(), BAND_KEY: 0.5}
    else:
        result = evaluate(logits["test"], targets["test"], logits["validation"], targets["validation"], names, 0.5)
    temperature = result.metrics["calibration"]["temperature"]
    assert 0.5 <= temperature <= 5.0

    export = tmp_path / "export"
    export_model(tmp_path / "model", export, temperature, extra)  # the temperature folded into the head
    test_texts = data["test"]["text"]
    figures = export_checked(export, test_texts, data["test"]["label"], 16, 1e-4, True)
    assert figures["parity_max_abs_error_micro"] <= 100 and 0 <= figures["int8_accuracy"] <= 1

    torch_backend, onnx_backend = TorchPredictor(export), OnnxPredictor(export)
    scaled = torch_backend.logits(test_texts)  # the export's logits: the training model's over the temperature
    assert np.allclose(scaled, logits["test"] / temperature, atol=1e-4)
    assert np.allclose(onnx_backend.logits(test_texts), scaled, atol=1e-4)
    for backend in (torch_backend, onnx_backend):  # a short text alone and padded beside a longer one
        alone, padded = backend.logits([SHORT]), backend.logits([SHORT, LONG])
        assert np.allclose(alone[0], padded[0], atol=1e-5), (family, backend.backend)
    answers = [p.predicted for p in onnx_backend.predict(test_texts)]
    assert answers == [p.predicted for p in torch_backend.predict(test_texts)]
    with TestClient(create_app(onnx_backend, export)) as client:
        served = client.post("/predict", json={"texts": [SHORT, LONG]})
    assert served.status_code == 200
    predictions = served.json()["predictions"]
    assert all(set(p["probabilities"]) == set(names) for p in predictions)
    assert ("label_set" in predictions[0]) == multi_label


def test_what_the_pipeline_cannot_train_fails_in_one_line_before_any_stage(tmp_path):
    """check-params loads the model's config and tokenizer (not its weights): a model type without a text
    classifier, and a tokenizer with neither a pad nor an end-of-sequence token, are refused in one line each."""
    import transformers

    from finetune.core.errors import one_line
    from finetune.training.models import ModelSourceError, check_sequence_classifier
    from tests.backbones import word_level_tokenizer

    vision = tmp_path / "vit"
    transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64).save_pretrained(vision)
    with pytest.raises(ModelSourceError) as raised:
        check_sequence_classifier(str(vision))
    assert one_line(raised.value).startswith(f"error: model.name: {vision} is a 'vit' model, which transformers has "
                                             "no text classifier for")
    for family in FAMILIES[:1] + tuple(DECODERS):
        check_sequence_classifier(str(make_backbone(family, tmp_path / family)))
    mute = tmp_path / "mute"
    tokenizer = word_level_tokenizer("</s>")
    tokenizer.eos_token = None
    tokenizer.save_pretrained(mute)
    with pytest.raises(ModelSourceError, match=r"has neither a pad nor an end-of-sequence token"):
        load_tokenizer(str(mute))
