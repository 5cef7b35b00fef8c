"""Multi-label data: each layout read into label sets, bad label sets refused, splits that keep every label's
share, class weights and the multi-hot batches a sigmoid-per-label model learns from. Inline data only."""

import json

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from finetune.core.params import DataParams, ParamsError, SplitParams, parse_params
from finetune.data.dataset import cap_samples, split_dataset, split_report, stratified_rows
from finetune.data.labels import (
    MULTI_LABEL,
    SINGLE_LABEL,
    label_counts,
    label_names,
    label_targets,
    labels_per_text,
    task_of,
)
from finetune.data.sources import DataSourceError, hub_frames, read_table
from finetune.training.models import resolve_model
from finetune.training.trainer import BatchLoss, MultiHotCollator, class_weights
from tests.conftest import build_frames


def frame(texts, labels):
    return pd.DataFrame({"text": texts, "label": labels})


def label_sets(dataset: datasets.Dataset) -> list[list[str]]:
    names = label_names(dataset.features)
    return [[names[i] for i in ids] for ids in dataset["label"]]


def test_names_joined_by_a_separator_become_sorted_distinct_label_sets():
    frames = {"train": frame(["a", "b", "c"], ["joy,love", " love ", "anger, joy,joy"]),
              "test": frame(["d"], ["love"])}
    raw, _ = build_frames(frames, DataParams(label_separator=","), seed=0)
    assert task_of(raw["train"].features) == MULTI_LABEL
    assert label_names(raw["train"].features) == ["anger", "joy", "love"]
    assert label_sets(raw["train"]) == [["joy", "love"], ["love"], ["anger", "joy"]]
    assert label_counts(raw["train"]) == {"anger": 1, "joy": 2, "love": 2}
    assert labels_per_text(raw["train"]) == {"1": 1, "2": 2}


def test_single_label_data_stays_single_label():
    raw, _ = build_frames({"train": frame(["a", "b"], ["x", "y"])}, DataParams(), seed=0)
    assert task_of(raw["train"].features) == SINGLE_LABEL
    assert isinstance(raw["train"].features["label"], datasets.ClassLabel)


def test_one_zero_or_true_false_column_per_label(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("comment,toxic,insult,threat\nyou fool,1,1,0\nnice,0,0,0\nor else,true,False,TRUE\n"
                    "meh,0.0,1.0,0\n")
    [table] = read_table(path, DataParams(text_columns=["comment"], label_columns=["toxic", "insult", "threat"]))
    assert table["label"].tolist() == [["toxic", "insult"], [], ["toxic", "threat"], ["insult"]]
    data = DataParams(label_columns=["toxic", "insult", "threat"], allow_empty_labels=True)
    raw, _ = build_frames({"train": table}, data, seed=0)
    assert label_names(raw["train"].features) == ["toxic", "insult", "threat"]  # the columns' order
    assert label_sets(raw["train"])[1] == []


def test_a_label_column_that_is_not_zero_one_names_the_column_and_values(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,toxic,insult\na,1,2\nb,0,maybe\n")
    with pytest.raises(DataSourceError, match=r"'insult' holds '2', 'maybe'.*0/1 or true/false"):
        list(read_table(path, DataParams(label_columns=["toxic", "insult"])))
    with pytest.raises(DataSourceError, match=r"no column 'threat'.*data.label_columns"):
        list(read_table(path, DataParams(label_columns=["toxic", "threat"])))


def test_json_lines_whose_label_is_a_list(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in [{"text": "a", "label": ["x", "y"]},
                                                          {"text": "b", "label": ["y"]}]) + "\n")
    raw, _ = build_frames({"train": read_table(path, DataParams())}, DataParams(), seed=0)
    assert task_of(raw["train"].features) == MULTI_LABEL and label_sets(raw["train"]) == [["x", "y"], ["y"]]


def test_hub_sequence_of_class_labels_becomes_label_names():
    features = datasets.Features({"text": datasets.Value("string"),
                                  "labels": datasets.List(datasets.ClassLabel(names=["anger", "joy", "love"]))})
    loaded = datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"text": ["a", "b"], "labels": [[1, 2], [0]]}, features=features)})
    frames = hub_frames(loaded, DataParams(label_column="labels"), "google-research-datasets/go_emotions")
    raw, _ = build_frames(frames, DataParams(label_column="labels"), seed=0)
    assert label_sets(raw["train"]) == [["joy", "love"], ["anger"]]


@pytest.mark.parametrize(("frames", "data", "message"), [
    ({"train": frame(["a", "b"], ["x,y", ""])}, DataParams(label_separator=","),
     r"1 of 2 texts with no label: set data.allow_empty_labels"),
    ({"train": frame(["a", "b"], [["x", "y"], None])}, DataParams(),
     r"1 rows without a label in column .label. \(data.label_column\), rows 2 "),
    ({"train": frame(["a", "b"], [["x", "y"], "x"])}, DataParams(), r"lists of labels in some rows"),
    ({"train": frame(["a", "b"], ["x,y", "x"]), "test": frame(["c"], ["x,z"])}, DataParams(label_separator=","),
     r"\['z'\] occur outside the train split"),
    ({"train": frame(["a", "b"], ["x", "x"])}, DataParams(label_separator=","), r"single label \(\['x'\]\)"),
    ({"train": frame(["a", "b"], ["x,y", "x"])}, DataParams(label_separator=",", labels=["x", "y", "z"]),
     r"\['z'\] never occur in the train split"),
])
def test_bad_label_sets_are_refused_before_any_work(frames, data, message):
    with pytest.raises(DataSourceError, match=message):
        build_frames(frames, data, seed=0)


def test_empty_label_sets_are_allowed_when_the_params_say_so():
    raw, _ = build_frames({"train": frame(["a", "b", "c"], ["x,y", "", "y"])},
                       DataParams(label_separator=",", allow_empty_labels=True), seed=0)
    assert label_sets(raw["train"]) == [["x", "y"], [], ["y"]] and labels_per_text(raw["train"]) == {
        "0": 1, "1": 1, "2": 1}


@pytest.mark.parametrize(("data", "message"), [
    ({"label_separator": ",", "label_columns": ["a", "b"]}, "set one of them, not both"),
    ({"label_columns": ["a", "a"]}, "label columns must be distinct"),
    ({"label_columns": ["a", "b"], "labels": ["a", "b"]}, "set data.labels to null"),
    ({"label_separator": ""}, "data.label_separator"),
])
def test_label_layout_params_are_validated(data, message):
    with pytest.raises(ParamsError, match=message):
        parse_params({"data": data})


def rare_label_dataset(rows: int = 2000, seed: int = 0) -> datasets.Dataset:
    """Label sets over 6 labels, from common (half the rows) to rare (1%)."""
    rng = np.random.default_rng(seed)
    shares = [0.5, 0.3, 0.2, 0.1, 0.05, 0.01]
    sets = [[j for j, share in enumerate(shares) if rng.random() < share] or [0] for _ in range(rows)]
    names = [f"l{j}" for j in range(len(shares))]
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.List(datasets.ClassLabel(names=names))})
    return datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(rows)], "label": sets}, features=features)


def test_validation_split_keeps_every_labels_share_rare_ones_included():
    dataset = rare_label_dataset()
    splits = split_dataset(datasets.DatasetDict({"train": dataset, "test": dataset.select(range(10))}),
                           SplitParams(val_size=0.1), seed=42)
    assert abs(len(splits["validation"]) - 200) <= 5  # iterative stratification's sizes are approximate
    assert len(splits["train"]) + len(splits["validation"]) == 2000
    assert not set(splits["train"]["text"]) & set(splits["validation"]["text"])
    report = split_report(splits)
    assert report["largest_share_gap"]["validation"] < 0.01
    assert report["labels"]["validation"]["l5"] >= 1  # the 1% label reaches validation
    again = split_dataset(datasets.DatasetDict({"train": dataset, "test": dataset.select(range(10))}),
                          SplitParams(val_size=0.1), seed=42)
    assert again["validation"]["text"] == splits["validation"]["text"]


def test_capped_multi_label_sample_is_stratified_and_reproducible():
    dataset = rare_label_dataset()
    sample = cap_samples(dataset, 500, seed=1)
    assert abs(len(sample) - 500) <= 5 and sample["text"] == cap_samples(dataset, 500, seed=1)["text"]
    shares = np.array(list(label_counts(sample).values())) / len(sample)
    full = np.array(list(label_counts(dataset).values())) / len(dataset)
    assert np.abs(shares - full).max() < 0.01
    _, test = stratified_rows(label_targets(dataset), np.arange(len(dataset)), 0.5, seed=3)
    assert len(test) == pytest.approx(1000, abs=5)


def test_balanced_class_weights():
    single = datasets.Dataset.from_dict({"label": [0, 0, 0, 1]},
                                        features=datasets.Features({"label": datasets.ClassLabel(names=["a", "b"])}))
    assert class_weights(single).tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])
    multi = rare_label_dataset(200)
    positives = np.array(list(label_counts(multi).values()))
    assert class_weights(multi) == pytest.approx((200 - positives) / positives)


def test_weighted_losses_are_torchs_weighted_cross_entropy_and_bce_and_rows_weigh_in_unnormalized():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.0]])
    weights = np.array([1.0, 3.0], dtype=np.float32)
    single = BatchLoss(weights, multi_label=False)(logits, torch.tensor([0, 1, 1]))
    per_row = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1]), reduction="none")
    assert single.item() == pytest.approx(((per_row * torch.tensor([1.0, 3.0, 3.0])).sum() / 7).item())
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    multi = BatchLoss(weights, multi_label=True)(logits, targets)
    p = torch.sigmoid(logits)
    manual = -(torch.tensor([1.0, 3.0]) * targets * p.log() + (1 - targets) * (1 - p).log())
    assert multi.item() == pytest.approx(manual.mean().item(), rel=1e-5)
    # row (document) weights scale each row's loss and are not normalized per batch: a batch of windows of
    # long documents (small weights) stays small
    rows = torch.tensor([0.5, 0.5, 2.0])
    assert BatchLoss(None, False)(logits, torch.tensor([0, 1, 1]), rows).item() == pytest.approx(
        ((per_row * rows).sum() / 3).item())
    assert BatchLoss(weights, True)(logits, targets, rows).item() == pytest.approx(
        (manual.mean(dim=1) * rows).mean().item(), rel=1e-5)


def test_multi_hot_collator_pads_texts_and_makes_float_label_rows():
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    rows = [{**tokenizer(text), "label": labels} for text, labels in [("a short one", [0, 2]), ("longer text "
                                                                      "than the first one", [])]]
    batch = MultiHotCollator(tokenizer, 3)(rows)
    assert batch["input_ids"].shape[0] == 2 and batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [[1, 0, 1], [0, 0, 0]]


def test_a_new_multi_label_head_starts_at_the_label_frequencies(tmp_path):
    from finetune.training.models import classification_head, load_classifier
    from finetune.training.trainer import start_from_label_priors
    from tests.conftest import make_tiny_model

    dataset = rare_label_dataset(1000)
    folder = make_tiny_model(tmp_path / "base", num_labels=6)
    model = load_classifier(str(folder), multi_label=True)
    head = classification_head(model)
    head.bias.data.zero_()  # as a new head starts
    assert start_from_label_priors(model, dataset)
    probs = torch.sigmoid(head.bias).detach().numpy()
    shares = np.array(list(label_counts(dataset).values())) / len(dataset)
    assert probs == pytest.approx(shares, abs=0.002)
    assert not start_from_label_priors(model, dataset)  # non-zero biases: a trained head, left alone
