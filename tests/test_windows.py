"""Long documents read in windows: the window rule, windowed tokenized data, document weights in training,
validation per document, and one answer per document from every backend."""

from itertools import pairwise

import datasets
import numpy as np
import pytest
import torch

from finetune.core.contract import Windows, aggregate_windows, token_rows, window_starts
from finetune.core.params import TrainParams
from finetune.data.documents import DOCUMENT_COLUMN, document_ids, first_windows, window_counts
from finetune.data.tokenization import (
    WindowSettingsError,
    check_token_budget,
    encode_batch,
    special_tokens,
    tokenize_dataset,
)
from finetune.evaluation.metrics import window_columns
from finetune.training.models import (
    ModelSourceError,
    check_position_limit,
    load_classifier,
    load_tokenizer,
    position_limit,
)
from finetune.training.trainer import (
    WEIGHT_COLUMN,
    Hardware,
    build_trainer,
    document_metrics,
    document_weights,
    epoch_history,
    train,
    with_document_weights,
)

GOOD = "a wonderful film with a moving story and fine acting"
BAD = "a dreadful film with a dull story and wooden acting"


def labelled(texts: list[str], labels: list[int]) -> datasets.Dataset:
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    return datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)


@pytest.mark.parametrize(("length", "budget", "stride", "cap"), [(10, 10, 2, 4), (11, 10, 2, 4), (57, 10, 3, 50),
                                                                  (200, 14, 4, 5), (200, 14, 0, 1), (30, 8, 7, 100)])
def test_windows_cover_the_text_share_at_least_the_stride_and_the_cap_keeps_first_last_and_spread(
        length, budget, stride, cap):
    starts = window_starts(length, budget, stride, cap)
    uncapped = window_starts(length, budget, stride, 10_000)
    assert starts[0] == 0 and all(0 <= s <= max(length - budget, 0) for s in starts)
    assert uncapped[-1] + budget >= length  # the last window ends where the text ends
    covered = np.zeros(length, dtype=bool)
    for start in uncapped:
        covered[start:start + budget] = True
    assert covered.all()
    assert all(b - a <= budget - stride for a, b in pairwise(uncapped))  # overlap >= stride
    if len(uncapped) <= cap:
        assert starts == uncapped
    else:  # the cap: exactly cap windows, the first and the last among them, spread (no two neighbours dropped
        # more than needed)
        assert len(starts) == cap and starts[0] == 0 and (cap == 1 or starts[-1] == uncapped[-1])
        assert set(starts) <= set(uncapped)
        positions = [uncapped.index(s) for s in starts]
        gaps = np.diff(positions)
        assert cap < 3 or gaps.max() - gaps.min() <= 1
    assert window_starts(length, budget, stride, 1) == [0]  # a cap of 1 is the head alone


def test_window_settings_that_cannot_work_are_refused():
    for budget, stride, cap in [(10, 10, 2), (10, 12, 2), (0, 0, 1), (10, 2, 0), (10, -1, 2)]:
        with pytest.raises(ValueError, match="stride"):
            window_starts(50, budget, stride, cap)


def test_windowed_rows_are_the_text_in_order_each_wrapped_in_special_tokens(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    prefix, suffix = special_tokens(tokenizer)
    text = " ".join(f"word{i}" for i in range(60))
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    encoded = encode_batch([text, "short"], tokenizer, 16, "windows", Windows(stride=4, max_windows=100))
    rows, owners = encoded["input_ids"], encoded[DOCUMENT_COLUMN]
    assert owners == sorted(owners) and owners[-1] == 1 and owners.count(1) == 1
    budget = 16 - len(prefix) - len(suffix)
    rebuilt: list[int] = []
    for row, start in zip(rows[:-1], window_starts(len(body), budget, 4, 100), strict=True):
        assert len(row) <= 16 and row[:len(prefix)] == prefix and row[len(row) - len(suffix):] == suffix
        rebuilt[start:] = row[len(prefix):len(row) - len(suffix)]
    assert rebuilt == body  # nothing lost, nothing added
    assert encoded["attention_mask"] == [[1] * len(row) for row in rows]
    quoted = [[text, "short"][owner][start:end]
              for owner, start, end in zip(owners, encoded["window_start"], encoded["window_end"], strict=True)]
    assert quoted[0].startswith("word0 ") and quoted[-2].endswith("word59") and quoted[-1] == "short"
    assert all(tokenizer(q, add_special_tokens=False)["input_ids"] == row[len(prefix):len(row) - len(suffix)]
               for q, row in zip(quoted[:-1], rows[:-1], strict=True))  # each quote is its window's text
    # one window: the same tokens as head truncation
    head = encode_batch(["short"], tokenizer, 16, "head")
    assert rows[-1] == head["input_ids"][0]
    # the rule is contract.token_rows, which the ONNX predictor uses on the Rust tokenizer's ids
    assert token_rows([body], prefix, suffix, 16, "windows", Windows(4, 100))[0] == rows[:-1]


def test_windowed_splits_keep_labels_and_document_ids_and_do_not_depend_on_processes(tiny_model, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model))
    texts = [" ".join([GOOD] * k) for k in range(1, 5)] + [BAD] * 2100  # enough rows for two processes
    labels = [1] * 4 + [0] * 2100
    splits = datasets.DatasetDict(train=labelled(texts, labels), test=labelled([GOOD, BAD * 5], [1, 0]))
    files = {}
    for cores in (1, 2):
        windowed = tokenize_dataset(splits, tokenizer, 16, "windows", cores=cores, windows=Windows(4, 3))
        windowed.save_to_disk(tmp_path / str(cores))
        files[cores] = {p.relative_to(tmp_path / str(cores)): p.read_bytes()
                        for p in (tmp_path / str(cores)).rglob("*") if p.is_file()}
    assert files[1] == files[2]
    train_rows = windowed["train"]
    assert train_rows.features["label"].names == ["neg", "pos"]
    counts = window_counts(train_rows)
    assert len(counts) == len(texts) and counts[:4].tolist() == [1, 2, 3, 3] and set(counts[4:]) == {1}
    assert first_windows(train_rows)["label"] == labels  # each window carries its document's label
    assert np.array_equal(np.asarray(train_rows["label"]), np.asarray(labels)[document_ids(train_rows)])
    # every split numbers its own documents: no document's windows reach into another split
    assert document_ids(windowed["test"]).max() == 1 and window_counts(windowed["test"]).tolist() == [1, 3]
    # the other strategies keep one row per text and no document column
    head = tokenize_dataset(splits, tokenizer, 16, "head", cores=1, windows=Windows(4, 3))
    assert DOCUMENT_COLUMN not in head["train"].column_names and len(head["train"]) == len(texts)


def test_each_document_weighs_the_same_however_many_windows_it_has():
    documents = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 3])  # 1, 10, 1 and 2 windows
    weights = document_weights(documents)
    per_document = np.bincount(documents, weights=weights)
    assert per_document == pytest.approx(np.full(4, per_document[0]))
    assert weights.mean() == pytest.approx(1.0)  # the loss keeps its scale, and the learning rate its meaning
    assert document_weights(np.arange(5)) == pytest.approx(np.ones(5))  # one window each: unweighted


def test_windows_logits_aggregate_per_document_and_one_window_is_unchanged():
    logits = np.array([[1.0, -1.0], [3.0, 0.5], [-2.0, 2.0], [0.25, 0.75]], dtype=np.float32)
    owners = [0, 0, 0, 1]
    assert aggregate_windows(logits, owners, "mean") == pytest.approx(np.array([[2 / 3, 0.5], [0.25, 0.75]]))
    assert aggregate_windows(logits, owners, "max").tolist() == [[3.0, 2.0], [0.25, 0.75]]
    assert aggregate_windows(logits[3:], [0], "mean").tobytes() == logits[3:].tobytes()
    with pytest.raises(ValueError, match="mean, max"):
        aggregate_windows(logits, owners, "median")


def test_training_on_windows_weighs_documents_and_picks_the_epoch_by_the_documents_loss(tiny_model, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model))
    texts = [GOOD, BAD, " ".join([GOOD] * 6), " ".join([BAD] * 6), "fine acting", "dull story"] * 2
    labels = [1, 0, 1, 0, 1, 0] * 2
    splits = datasets.DatasetDict(train=labelled(texts, labels), validation=labelled(texts[:6], labels[:6]))
    tokenized = tokenize_dataset(splits, tokenizer, 16, "windows", cores=1, windows=Windows(4, 8))
    weighted = with_document_weights(tokenized["train"])
    assert set(weighted.column_names) == {"input_ids", "token_type_ids", "attention_mask", "label", WEIGHT_COLUMN}
    assert np.bincount(document_ids(tokenized["train"]), weights=weighted[WEIGHT_COLUMN]) == pytest.approx(
        np.full(len(texts), len(weighted) / len(texts)))

    from transformers import set_seed

    set_seed(3)
    model = load_classifier(str(tiny_model), ["neg", "pos"])
    params = TrainParams(learning_rate=1e-3, batch_size=4, epochs=2, early_stopping_patience=2)
    trainer = build_trainer(model, tokenizer, tokenized, params, 3, tmp_path / "run", Hardware("cpu"))
    train(trainer, tmp_path / "run")
    history = epoch_history(trainer.state.log_history)
    assert [row["epoch"] for row in history] == [1.0, 2.0]
    logged = [entry for entry in trainer.state.log_history if "eval_document_loss" in entry]
    assert [row["eval/loss"] for row in history] == [entry["eval_document_loss"] for entry in logged]
    assert trainer.args.metric_for_best_model == "eval_document_loss"
    best = min(logged, key=lambda entry: entry["eval_document_loss"])
    assert trainer.state.best_metric == best["eval_document_loss"]
    # validation figures are per document: 6 documents, so accuracy is a multiple of 1/6
    assert all(round(entry["eval_accuracy"] * 6, 6).is_integer() for entry in logged)
    # the documents' loss is that of their mean logits, recomputed here from the kept model
    model = trainer.model.eval()
    with torch.no_grad():
        rows = tokenized["validation"]
        batch = tokenizer.pad([{k: rows[i][k] for k in ("input_ids", "attention_mask", "token_type_ids")}
                               for i in range(len(rows))], return_tensors="pt")
        window_logits = model(**batch).logits.numpy()
    combined = torch.from_numpy(aggregate_windows(window_logits, document_ids(rows), "mean"))
    loss = torch.nn.functional.cross_entropy(combined, torch.tensor(labels[:6])).item()
    assert loss == pytest.approx(trainer.state.best_metric, abs=1e-4)


def test_budgets_without_room_for_text_strides_that_cannot_move_and_budgets_beyond_the_positions_are_refused(
        tiny_model):
    from transformers import AutoConfig

    tokenizer = load_tokenizer(str(tiny_model))
    check_token_budget(tokenizer, 32, "windows", 29)
    check_token_budget(tokenizer, 32, "head", 500)  # the stride matters to windows only
    with pytest.raises(WindowSettingsError, match=r"tokenize.stride: 30 is not below the 30 tokens .* e\.g\. 7"):
        check_token_budget(tokenizer, 32, "windows", 30)
    with pytest.raises(WindowSettingsError, match="max_length: 2 tokens hold no text"):
        check_token_budget(tokenizer, 2, "head", 0)
    bert = AutoConfig.for_model("bert", max_position_embeddings=64)
    check_position_limit(bert, 64)
    with pytest.raises(ModelSourceError, match="max_length: 128 tokens exceed the 64 positions a bert model"):
        check_position_limit(bert, 128)
    roberta = AutoConfig.for_model("roberta", max_position_embeddings=514, pad_token_id=1)  # positions from 2 on
    assert position_limit(roberta) == 512
    assert position_limit(AutoConfig.for_model("deberta-v2", position_biased_input=False)) is None  # relative
    check_position_limit(AutoConfig.for_model("deberta-v2", position_biased_input=False), 4096)


def test_the_window_that_drove_an_answer_is_the_one_agreeing_most_with_it():
    documents = np.array([0, 0, 0, 1])
    logits = np.array([[2.0, -1.0], [-3.0, 3.0], [0.0, 0.5], [1.0, 0.0]])
    answered = np.array([[False, True], [True, False]])  # document 0 answered class 1, document 1 class 0
    columns = window_columns(logits, documents, answered, multi_label=False)
    assert columns["windows"].tolist() == [3, 1] and columns["window"].tolist() == [2, 1]
    # label sets: the window whose log-odds, signed by each decision, add up highest
    sets = np.array([[True, False], [False, False]])
    multi = window_columns(np.array([[1.0, 1.0], [2.0, -2.0], [0.5, -3.0], [0.0, 0.0]]), documents, sets, True)
    assert multi["window"].tolist() == [2, 1]  # 2 + 2 beats 0.5 + 3 and 1 - 1


def test_validation_of_windowed_label_sets_is_per_document_with_the_loss_of_their_mean_logits():
    documents = np.array([0, 0, 1, 2, 2, 2])
    logits = np.array([[2.0, -2.0], [0.0, 0.0], [-1.0, 3.0], [1.0, 1.0], [1.0, -1.0], [1.0, -3.0]])
    targets = np.array([[1, 0], [1, 0], [0, 1], [1, 0], [1, 0], [1, 0]], dtype=np.float32)
    figures = document_metrics(documents, multi_label=True)((logits, targets))
    mean = torch.tensor([[1.0, -1.0], [-1.0, 3.0], [1.0, -1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(mean, torch.tensor([[1.0, 0], [0, 1], [1, 0]]))
    assert figures["document_loss"] == pytest.approx(expected.item())
    assert figures["f1_micro"] == 1.0  # every document's label set right from its mean logits


def test_weighted_losses_are_divided_over_gradient_accumulation_like_the_models_own(tiny_model, tmp_path):
    """The Trainer divides a per-batch loss by the accumulation steps unless told it is scaled already; its
    compute_loss_func path counted as scaled, so class-weighted losses were not divided."""
    from transformers import DataCollatorWithPadding

    tokenizer = load_tokenizer(str(tiny_model))
    splits = datasets.DatasetDict(train=labelled([GOOD, BAD, "fine acting", "dull story"], [1, 0, 1, 0]),
                                  validation=labelled([GOOD, BAD], [1, 0]))
    tokenized = tokenize_dataset(splits, tokenizer, 16, "head", cores=1)
    params = TrainParams(batch_size=4, gradient_accumulation_steps=2, class_weights="balanced")
    trainer = build_trainer(load_classifier(str(tiny_model), ["neg", "pos"]), tokenizer, tokenized, params, 3,
                            tmp_path / "run", Hardware("cpu"))
    trainer.current_gradient_accumulation_steps = 2  # what the training loop sets
    batch = DataCollatorWithPadding(tokenizer)(tokenized["train"].to_list())
    with torch.no_grad():
        whole = trainer.batch_loss(trainer.model(**{k: v for k, v in batch.items() if k != "labels"}).logits,
                                   batch["labels"]).item()
    # undivided it would be twice as large; the slack is dropout, on in the training step
    assert trainer.training_step(trainer.model, dict(batch)).item() == pytest.approx(whole / 2, rel=1e-2)
