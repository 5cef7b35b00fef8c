"""Tokenization with the packaged MiniLM's real fast tokenizer: truncation strategies, no stored padding."""

import datasets
import pytest

from finetune.core.contract import keep_tokens
from finetune.core.cores import usable_cores
from finetune.data.tokenization import (
    ROWS_PER_PROCESS,
    encode_batch,
    special_tokens,
    tokenize_dataset,
    truncated_share,
    worker_count,
)
from finetune.training.models import load_tokenizer, resolve_model


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model("minilm"))


@pytest.mark.parametrize(("strategy", "expected"), [
    ("head", [0, 1, 2, 3, 4, 5, 6, 7]),
    ("tail", [12, 13, 14, 15, 16, 17, 18, 19]),
    ("head+tail", [0, 1, 14, 15, 16, 17, 18, 19]),  # a quarter of the budget from the start
])
def test_keep_tokens(strategy, expected):
    assert keep_tokens(list(range(20)), 8, strategy) == expected
    assert keep_tokens([1, 2], 8, strategy) == [1, 2]


def test_special_tokens_frame_the_text(tokenizer):
    assert special_tokens(tokenizer) == ([tokenizer.cls_token_id], [tokenizer.sep_token_id])


@pytest.mark.parametrize("strategy", ["head", "tail", "head+tail"])
def test_strategies_respect_max_length_and_keep_the_right_end(tokenizer, strategy):
    long_text = "start " + "middle " * 200 + "finish"
    encoded = encode_batch([long_text, "short one"], tokenizer, 16, strategy)
    first, second = encoded["input_ids"]
    assert len(first) == 16 and len(second) == 4  # nothing padded
    assert first[0] == tokenizer.cls_token_id and first[-1] == tokenizer.sep_token_id
    words = tokenizer.decode(first, skip_special_tokens=True).split()
    assert (words[0] == "start") == (strategy != "tail")
    assert (words[-1] == "finish") == (strategy != "head")
    assert encoded["attention_mask"][1] == [1, 1, 1, 1] and "token_type_ids" in encoded


def test_manual_strategies_match_the_tokenizer_on_short_texts(tokenizer):
    texts = ["A fine film.", "Not my cup of tea, honestly."]
    native = encode_batch(texts, tokenizer, 64, "head")
    for strategy in ["tail", "head+tail"]:
        assert encode_batch(texts, tokenizer, 64, strategy) == native


def test_tokenize_dataset_drops_text_keeps_label(tokenizer):
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a b", "c " * 50], "label": [0, 1]})})
    tokenized = tokenize_dataset(splits, tokenizer, 10, "head")
    assert tokenized["train"].column_names == ["label", "input_ids", "token_type_ids", "attention_mask"]
    assert [len(ids) for ids in tokenized["train"]["input_ids"]] == [4, 10]
    assert truncated_share(tokenized["train"], 10) == 0.5


def test_the_saved_fingerprint_follows_the_content_not_the_code(tokenizer, tmp_path):
    def saved_state(texts: list[str], max_length: int = 10, truncation: str = "head", name: str = "a") -> str:
        splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts, "label": [0, 1]})})
        tokenize_dataset(splits, tokenizer, max_length, truncation).save_to_disk(tmp_path / name)
        return (tmp_path / name / "train" / "state.json").read_text()

    texts = ["a b", "c " * 50]
    first = saved_state(texts)
    assert saved_state(texts, name="b") == first
    for changed in (saved_state(["a b", "d " * 50], name="c"), saved_state(texts, max_length=12, name="d"),
                    saved_state(texts, truncation="tail", name="e")):
        assert changed != first


def saved_files(folder) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("truncation", ["head", "head+tail"])
def test_the_saved_bytes_are_the_same_whatever_the_number_of_processes(tokenizer, tmp_path, truncation):
    texts = [f"review {i}: " + "a fine film, " * (i % 40) for i in range(2 * ROWS_PER_PROCESS + 321)]
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts, "label": [i % 3 for i in
                                                                                                 range(len(texts))]})})
    for cores in (1, 2, 3):
        tokenize_dataset(splits, tokenizer, 16, truncation, cores=cores).save_to_disk(tmp_path / str(cores))
    one = saved_files(tmp_path / "1")
    assert saved_files(tmp_path / "2") == one and saved_files(tmp_path / "3") == one


def test_one_process_per_core_with_enough_rows_each():
    assert worker_count(500, cores=8) == 1  # too few rows to share
    assert worker_count(2500, cores=8) == 2
    assert worker_count(10**6, cores=8) == 8
    assert worker_count(10**6) == usable_cores() >= 1
