"""Why a model answered: occlusion's rules, a tiny model trained to depend on one word (its word must come first, by
occlusion with both backends and by integrated gradients), faithfulness, `predict --explain` and `/explain`."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from finetune.cli import main
from finetune.core.contract import ModelInfo, Predictor, Windows
from finetune.core.explain import (
    INTEGRATED_GRADIENTS,
    METHODS,
    OCCLUSION,
    ExplainError,
    check_explainable,
    comprehensiveness,
    explain,
    marked,
    occlusion,
    probabilities_of,
    units,
    without,
    word_spans,
)
from finetune.evaluation.faithfulness import (
    DRIVERS_COLUMN,
    ReadModel,
    answered_labels,
    explain_mistakes,
    faithfulness_figures,
)
from finetune.export.model_folder import export_model
from finetune.export.onnx_export import export_onnx
from finetune.serving.onnx_predictor import ONNX_FILE, OnnxPredictor
from finetune.serving.service import Limits, create_app
from finetune.serving.torch_predictor import TorchPredictor
from finetune.training.models import load_classifier, load_tokenizer
from tests.conftest import make_tiny_model

KEY = "excellent"  # the one word the toy model's answer depends on (one token of MiniLM's vocabulary)
FILLER = ["the", "a", "film", "movie", "story", "plot", "acting", "it", "is", "was", "of", "to", "this", "that",
          "and", "actors", "scene", "music"]


def toy_texts(rng: np.random.Generator, count: int) -> tuple[list[str], list[int]]:
    """Texts of 3 to 29 filler words; in half of them KEY takes one word's place: the label says which."""
    texts, labels = [], []
    for i in range(count):
        words = list(rng.choice(FILLER, size=int(rng.integers(3, 30))))
        if i % 2:
            words[int(rng.integers(0, len(words)))] = KEY
        texts.append(" ".join(words))
        labels.append(i % 2)
    return texts, labels


@pytest.fixture(scope="module")
def toy_export(tmp_path_factory):
    """A tiny BERT trained until it answers by the rule alone, exported as the pipeline exports (with ONNX)."""
    folder = make_tiny_model(tmp_path_factory.mktemp("toy-model"))
    model, tokenizer = load_classifier(str(folder)), load_tokenizer(str(folder))
    model.config.id2label, model.config.label2id = {0: "without", 1: "with"}, {"without": 0, "with": 1}
    texts, labels = toy_texts(np.random.default_rng(0), 256)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    targets = torch.tensor(labels)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        for start in range(0, len(texts), 32):
            part = slice(start, start + 32)
            loss = model(input_ids=batch["input_ids"][part], attention_mask=batch["attention_mask"][part],
                         labels=targets[part]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.save_pretrained(folder)
    target = tmp_path_factory.mktemp("toy-export") / "export"
    export_model(folder, target, 1.0, {"uncertain_threshold": 0.5, "finetune_max_length": 32,
                                       "finetune_truncation": "head", "finetune_stride": 4,
                                       "finetune_max_windows": 4, "finetune_window_aggregation": "mean"})
    export_onnx(target, target / ONNX_FILE)
    held_out, truth = toy_texts(np.random.default_rng(1), 40)
    answers = [p.predicted for p in TorchPredictor(target).predict(held_out)]
    assert answers == [["without", "with"][label] for label in truth], "the toy model did not learn its rule"
    return target


class RulePredictor(Predictor):
    """A model made of rules, for the contract's side: each label's logit is +4 when its word is in the text."""

    backend = "rules"
    batch_size = 8

    def __init__(self, words: dict[str, str], multi_label: bool) -> None:
        self.words = words
        self.info = ModelInfo(list(words), 0.5, 512, "head", label_thresholds=(0.5,) * len(words) if multi_label
                              else None)
        self.texts_seen = 0

    def logits(self, texts: list[str]) -> np.ndarray:
        self.texts_seen += len(texts)
        return np.array([[4.0 if word in text.split() else -4.0 for word in self.words.values()] for text in texts])


def test_words_units_and_removal_keep_the_rest_of_the_text_as_it_was():
    text = "I didn't like it, not at all!"
    assert [text[s:e] for s, e in word_spans(text)] == ["I", "didn't", "like", "it", ",", "not", "at", "all", "!"]
    spans = word_spans(text)
    grouped, per_unit = units(spans, 4)
    assert per_unit == 3 and [text[s:e] for s, e in grouped] == ["I didn't like", "it, not", "at all!"]
    assert units(spans, 100) == (spans, 1)
    assert without(text, [spans[2], spans[0]]) == " didn't  it, not at all!"
    with pytest.raises(ExplainError, match="empty"):
        check_explainable("  \n")
    with pytest.raises(ExplainError, match="max_words must be at least 1"):
        units(spans, 0)


def test_occlusion_puts_first_the_word_each_label_depends_on():
    rules = RulePredictor({"joy": "happy", "anger": "furious"}, multi_label=True)
    text = "so happy and yet furious about the plot"
    (joy, anger), = explain(rules, [text])
    assert (joy.label, anger.label) == ("joy", "anger")  # both labels given: one explanation each
    assert joy.top(1)[0].word == "happy" and anger.top(1)[0].word == "furious"
    assert joy.top(5) == joy.top(1)  # no other word moves the probability
    assert marked(joy, text, 1) == "so [[happy]] and yet furious about the plot"
    (none,), = explain(rules, ["nothing here"])  # no label given: the most probable is explained
    assert none.label == "joy" and none.top(3) == []
    single = RulePredictor({"neg": "dull", "pos": "great"}, multi_label=False)
    (why,), = explain(single, ["a great cast"])
    assert why.label == "pos" and why.top(1)[0].word == "great" and why.words == 3


def test_a_one_word_text_is_weighed_against_nothing_and_a_long_one_in_bounded_spans():
    rules = RulePredictor({"neg": "dull", "pos": "great"}, multi_label=False)
    (one,), = explain(rules, ["great"])
    assert one.attributions[0].weight == pytest.approx(one.probability - 0.5)  # the empty text scores 0.5
    words = ["word"] * 4999
    words.insert(3210, "great")
    rules.texts_seen = 0
    (long,), = explain(rules, [" ".join(words)], max_words=200)
    assert (long.words, long.unit_words, len(long.attributions)) == (5000, 25, 200)
    assert rules.texts_seen == 1 + 200  # one batch: the text and one removal per span, bounded
    assert "great" in long.top(1)[0].word.split() and long.top(1)[0].start <= 3210 * 5 <= long.top(1)[0].end


def test_the_toy_model_answers_by_its_word_and_every_method_and_backend_puts_it_first(toy_export):
    texts = [f"the plot was {KEY} and the music of this film", f"{KEY} acting", f"a story that is {KEY} to it"]
    torch_backend, onnx_backend = TorchPredictor(toy_export), OnnxPredictor(toy_export)
    by_torch, by_onnx = explain(torch_backend, texts), explain(onnx_backend, texts)
    by_gradients = explain(torch_backend, texts, method=INTEGRATED_GRADIENTS)
    for found in (by_torch, by_onnx, by_gradients):
        assert [why.label for why, in found] == ["with"] * 3
        assert [why.top(1)[0].word for why, in found] == [KEY] * 3
    for (a,), (b,) in zip(by_torch, by_onnx, strict=True):  # one rule, two backends: the same weights
        assert [x.weight for x in a.attributions] == pytest.approx([x.weight for x in b.attributions], abs=1e-4)
    assert by_gradients[0][0].method == INTEGRATED_GRADIENTS
    with pytest.raises(ExplainError, match="needs the PyTorch backend"):
        explain(onnx_backend, texts[:1], method=INTEGRATED_GRADIENTS)
    with pytest.raises(ExplainError, match=r"read in windows.*occlusion"):
        explain(TorchPredictor(toy_export, windows=True), texts[:1], method=INTEGRATED_GRADIENTS)
    long = " ".join(["the film"] * 10 + [KEY] + ["the plot"] * 7)  # 35 tokens: two windows of 30, both hold KEY
    (in_windows,), = explain(OnnxPredictor(toy_export, windows=True), [long])
    assert in_windows.label == "with" and in_windows.top(1)[0].word == KEY


def test_removing_the_top_words_costs_the_answer_more_than_removing_random_ones(toy_export):
    predictor = TorchPredictor(toy_export)
    texts, labels = toy_texts(np.random.default_rng(2), 20)
    rng = np.random.default_rng(0)
    drops = [comprehensiveness(probabilities_of(predictor), text, label, explain(predictor, [text])[0][0], 0.2, 3, rng)
             for text, label in zip(texts, labels, strict=True)]
    top, random = np.mean(drops, axis=0)
    assert top > 2 * random and top > 0.3


def test_the_error_analysis_explains_its_mistakes_and_measures_both_methods(toy_export):
    model = ReadModel(load_classifier(str(toy_export)), load_tokenizer(str(toy_export)), ["without", "with"],
                      False, 32, "head", None, "mean", 8)
    texts, _labels = toy_texts(np.random.default_rng(3), 12)
    probs = model.probabilities(texts)
    errors = pd.DataFrame({"row": [1, 3], "label": ["without", "without"], "predicted": ["with", "with"],
                           "text": [texts[1], texts[3]]})  # as if wrong: the drivers name what the model read
    explained = explain_mistakes(errors, probs, model, OCCLUSION, 1, 200, 8)
    assert explained[DRIVERS_COLUMN].iloc[0].startswith(f"with: {KEY} +") and explained[DRIVERS_COLUMN].iloc[1] == ""
    targets = [t[0] for t in answered_labels([["without", "with"][i] for i in probs.argmax(1)], probs, model.labels,
                                             False, every_given=False)]
    figures = faithfulness_figures(texts, targets, model, 0.2, 3, 200, 8, seed=0)
    assert set(figures) == {OCCLUSION, INTEGRATED_GRADIENTS}
    assert all(f["texts"] == 12 and f["ratio"] > 2 for f in figures.values())
    again = faithfulness_figures(texts, targets, model, 0.2, 3, 200, 8, seed=0)
    assert json.dumps(again) == json.dumps(figures)  # the same inputs give the same bytes
    windows = ReadModel(model.model, model.tokenizer, model.labels, False, 32, "windows", Windows(4, 4), "mean", 8)
    skipped = faithfulness_figures(texts[:2], targets[:2], windows, 0.2, 3, 200, 8, seed=0)
    assert "read in windows" in skipped[INTEGRATED_GRADIENTS]["skipped"] and skipped[OCCLUSION]["texts"] == 2


def test_predict_explain_marks_the_words_and_gives_them_as_json(toy_export, capsys):
    assert main(["predict", "--model", str(toy_export), "--explain", f"the {KEY} film"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("with\t") and out[1].startswith("  why with (") and f"{KEY} +" in out[1]
    assert out[2] == f"  the [[{KEY}]] film"
    assert main(["predict", "--model", str(toy_export), "--explain", "--json", "--backend", "torch",
                 "--explain-method", INTEGRATED_GRADIENTS, f"a {KEY} story"]) == 0
    record = json.loads(capsys.readouterr().out)
    (why,) = record["explanations"]
    assert why["method"] == INTEGRATED_GRADIENTS and [a["word"] for a in why["attributions"]] == ["a", KEY, "story"]
    assert max(why["attributions"], key=lambda a: a["weight"])["word"] == KEY


@pytest.mark.parametrize("args, message", [
    (["--explain", " "], "the text is empty"),
    (["--explain", "--explain-method", INTEGRATED_GRADIENTS, "fine"], "needs the PyTorch backend"),
    (["--explain", "--input", "x.csv", "--output", "y.csv"], "not --input"),
    (["--explain", "--explain-words", "0", "fine"], "--explain-words must be at least 1"),
])
def test_predict_explain_refuses_what_it_cannot_explain_in_one_line(toy_export, args, message):
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--model", str(toy_export), *args])
    assert message in str(stop.value) and "\n" not in str(stop.value)


def test_the_service_explains_within_its_limits(toy_export):
    limits = Limits(max_explain_texts=2, max_explain_words=50)
    with TestClient(create_app(OnnxPredictor(toy_export), toy_export, limits)) as client:
        answer = client.post("/explain", json={"texts": [f"this {KEY} plot", "the film"]})
        assert answer.status_code == 200
        first = answer.json()["results"][0]
        assert first["prediction"]["label"] == "with" and first["explanations"][0]["label"] == "with"
        weights = {a["word"]: a["weight"] for a in first["explanations"][0]["attributions"]}
        assert max(weights, key=weights.get) == KEY and answer.json()["max_words"] == 50
        too_many = client.post("/explain", json={"texts": ["a", "b", "c"]})
        assert too_many.status_code == 422 and "at most 2" in too_many.json()["detail"]
        assert "/explain" in too_many.json()["detail"]
        assert client.post("/explain", json={"text": "  "}).status_code == 422
        assert client.post("/predict", json={"texts": ["a", "b", "c"]}).status_code == 200  # /predict's own limit


def test_params_offer_exactly_the_methods_the_explainer_knows():
    from typing import get_args

    from finetune.core.params import ExplainParams

    assert get_args(ExplainParams.model_fields["method"].annotation) == METHODS


def test_occlusion_weights_are_the_probability_lost_without_each_word():
    def probabilities(texts):
        return np.array([[1 - 0.1 * len(t.split()), 0.1 * len(t.split())] for t in texts])

    weights, full, _chosen, per_unit = occlusion(probabilities, "one two three", [1])
    assert full.tolist() == pytest.approx([0.7, 0.3]) and per_unit == 1
    assert weights[:, 0].tolist() == pytest.approx([0.1, 0.1, 0.1])
