"""Cleaning, label encoding, stratified sampling and splitting, on inline data."""

import datasets
import pandas as pd
import pytest

from finetune.core.params import DataParams, SplitParams
from finetune.data.dataset import (
    cap_samples,
    check_decision_rule,
    clean_texts,
    split_dataset,
    split_report,
    text_hashes,
)
from finetune.data.sources import DataSourceError
from tests.conftest import build_frames


def frame(texts, labels):
    return pd.DataFrame({"text": texts, "label": labels})


def dataset(texts, labels, names):
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict({"text": texts, "label": [names.index(label) for label in labels]},
                                      features=features)


def names_of(splits: dict) -> list[str]:
    raw, _ = build_frames(splits, DataParams())
    return raw["train"].features["label"].names


def test_the_saved_bytes_do_not_depend_on_how_the_source_was_read_in_chunks(tmp_path, monkeypatch):
    """A file read whole or a few rows at a time gives the same dataset bytes; a repeated text is dropped even
    when its first occurrence was in an earlier chunk."""
    from finetune.data import dataset as data_module
    from finetune.data import sources
    from finetune.data.dataset import build_raw

    csv = tmp_path / "train.csv"
    csv.write_text("text,label\n" + "".join(f"text {i % 2900},{'abc'[i % 3]}\n" for i in range(3000)))
    data = DataParams(source=str(csv))
    monkeypatch.setattr(data_module, "ENCODE_ROWS", 1000)  # rows written at a time: several tables
    saved = {}
    for rows in (100_000, 7):
        monkeypatch.setattr(sources, "CHUNK_BYTES", rows * 16)  # a row is 14 to 17 bytes
        (tmp_path / f"scratch{rows}").mkdir()
        with sources.open_source(data) as chunks:
            raw, report = build_raw(chunks, data, 0, tmp_path / f"scratch{rows}")
            raw.save_to_disk(tmp_path / f"raw{rows}")
        assert report.duplicates_dropped == {"train": 100} and len(raw["train"]) == 2900
        saved[rows] = (tmp_path / f"raw{rows}" / "train" / "data-00000-of-00001.arrow").read_bytes()
    assert saved[100_000] == saved[7]


def test_break_tags_become_line_breaks():
    import re

    import pyarrow as pa

    texts = ["  Great.<br /><br />Really<br>good <BR/> ", "\xa0<bR\u2003/>a\x1c", "<br", None, "\u3000\n"]
    assert clean_texts(pa.array(texts)).to_pylist() == ["Great.\n\nReally\ngood", "a", "<br", "", ""]
    python = [re.sub(r"<br\s*/?>", "\n", text or "", flags=re.IGNORECASE).strip() for text in texts]
    assert clean_texts(pa.array(texts)).to_pylist() == python  # Python's rules for blanks, in Arrow's kernels


def test_empty_and_duplicate_texts_are_dropped_and_counted():
    frames = {"train": frame(["a", " ", "a", "b", "<br />", "c"], ["x", "y", "x", "y", "x", "y"])}
    raw, report = build_frames(frames, DataParams(), seed=0)
    assert raw["train"]["text"] == ["a", "b", "c"]
    assert report.empty_dropped == {"train": 2} and report.duplicates_dropped == {"train": 1}
    raw, _ = build_frames(frames, DataParams(drop_duplicates=False), seed=0)
    assert len(raw["train"]) == 4


@pytest.mark.parametrize(("labels", "expected"), [
    ([10, 2, -1, 2], ["-1", "2", "10"]),  # numbers sort numerically, whatever they start from
    (["3.0", "1", "2", "10"], ["1", "2", "3.0", "10"]),  # names stay as written
    (["01", "1", "True", "NA"], ["01", "1", "NA", "True"]),  # not all numbers: alphabetically
    (["pos", "neg", "neutral"], ["neg", "neutral", "pos"]),  # strings alphabetically
])
def test_label_order(labels, expected):
    assert names_of({"train": frame([f"t{i}" for i in range(len(labels))], labels)}) == expected


def test_given_label_order_is_kept_and_encoded():
    frames = {"train": frame(["a", "b", "c"], ["pos", "neg", "pos"])}
    raw, _ = build_frames(frames, DataParams(labels=["pos", "neg"]), seed=0)
    assert raw["train"].features["label"].names == ["pos", "neg"]
    assert raw["train"]["label"] == [0, 1, 0]
    with pytest.raises(DataSourceError, match=r"data.labels lists.*\['neu'\]"):
        build_frames({"train": frame(["a", "b"], ["pos", "neu"])}, DataParams(labels=["pos", "neg"]), seed=0)


def test_single_class_and_unseen_test_labels_are_refused():
    with pytest.raises(DataSourceError, match="single class"):
        names_of({"train": frame(["a", "b"], ["x", "x"])})
    with pytest.raises(DataSourceError, match=r"\['z'\] occur outside the train split"):
        names_of({"train": frame(["a", "b"], ["x", "y"]), "test": frame(["c"], ["z"])})


def test_empty_split_is_an_error():
    with pytest.raises(DataSourceError, match="test split has no rows"):
        build_frames({"train": frame(["a", "b"], ["x", "y"]), "test": frame(["", " "], ["x", "y"])}, DataParams(), 0)


def test_missing_labels_are_an_error_naming_the_column_the_count_and_the_first_rows():
    """Rows are numbered across the chunks a split is read in (1 = the first row after the header); a row without
    text is dropped, not counted."""
    texts, labels = [f"text {i}" for i in range(12)], ["x", "y"] * 6
    for row in (2, 5, 6, 8, 9, 10, 11):  # rows 3, 6, 7, 9, 10, 11 and 12 counting from 1
        labels[row] = "" if row % 2 else None
    texts[11] = " "  # no text: dropped as empty, whatever its label
    chunks = [frame(texts[:4], labels[:4]), frame(texts[4:], labels[4:])]
    with pytest.raises(DataSourceError) as raised:
        build_frames({"train": chunks}, DataParams(label_column="sentiment"), 0)
    assert str(raised.value) == ("the train split has 6 rows without a label in column 'sentiment' "
                                 "(data.label_column), rows 3, 6, 7, 9, 10, ... (1 = the first row after the header): "
                                 "fill or remove them")


def balanced(n_per_class: int, classes=("a", "b", "c")) -> datasets.Dataset:
    frames = {"train": frame([f"{c} {i}" for c in classes for i in range(n_per_class)],
                             [c for c in classes for _ in range(n_per_class)])}
    return dataset(frames["train"]["text"].tolist(), frames["train"]["label"].tolist(), list(classes))


def test_cap_samples_is_stratified_and_reproducible():
    data = balanced(100)
    sample = cap_samples(data, 30, seed=1)
    assert len(sample) == 30 and sorted(sample["label"]).count(0) == 10
    assert sample["text"] == cap_samples(data, 30, seed=1)["text"]
    assert sample["text"] != cap_samples(data, 30, seed=2)["text"]
    assert cap_samples(data, None, seed=1) is data and cap_samples(data, 1000, seed=1) is data


def test_split_keeps_test_and_stratifies_validation():
    train, test = balanced(50), balanced(5)
    splits = split_dataset(datasets.DatasetDict({"train": train, "test": test}), SplitParams(val_size=0.2), seed=42)
    assert splits["test"]["text"] == test["text"]  # untouched
    assert len(splits["validation"]) == 30 and sorted(splits["validation"]["label"]).count(2) == 10
    assert not set(splits["validation"]["text"]) & set(splits["train"]["text"])
    again = split_dataset(datasets.DatasetDict({"train": train, "test": test}), SplitParams(val_size=0.2), seed=42)
    assert again["validation"]["text"] == splits["validation"]["text"]


def test_split_carves_test_when_the_source_has_none():
    splits = split_dataset(datasets.DatasetDict({"train": balanced(50)}), SplitParams(val_size=0.1, test_size=0.2), 0)
    assert {name: len(d) for name, d in splits.items()} == {"train": 108, "validation": 12, "test": 30}


@pytest.mark.parametrize("size", [0.1, 0.25])
def test_stratified_split_draws_the_rows_datasets_train_test_split_draws(size):
    """The split reads the labels as one column and draws as datasets does: the same rows as its train_test_split
    (so a project split before keeps its split, and its trained model)."""
    unequal = dataset([f"text {i}" for i in range(301)], [["a", "b", "b", "c", "c", "c"][i % 6] for i in range(301)],
                      ["a", "b", "c"])
    test = dataset(["held out"], ["a"], ["a", "b", "c"])
    ours = split_dataset(datasets.DatasetDict({"train": unequal, "test": test}), SplitParams(val_size=size), seed=42)
    theirs = unequal.train_test_split(test_size=size, stratify_by_column="label", seed=42)
    assert ours["train"]["text"] == theirs["train"]["text"]
    assert ours["validation"]["text"] == theirs["test"]["text"]


def test_equal_texts_have_equal_hashes_and_others_differ():
    hashes = text_hashes(["a", "b", "a", "é", "a "])
    assert hashes[0] == hashes[2] and len(set(hashes.tolist())) == 4 and hashes.dtype.itemsize == 16


def test_split_report_counts_texts_shared_between_splits():
    train, test = balanced(20), balanced(3)  # test texts "a 0".."c 2" also occur in train
    splits = split_dataset(datasets.DatasetDict({"train": train, "test": test}), SplitParams(val_size=0.25), seed=0)
    report = split_report(splits)
    assert report["rows"] == {"train": 45, "validation": 15, "test": 9}
    assert report["labels"]["validation"] == {"a": 5, "b": 5, "c": 5}
    in_train = sum(t in set(splits["train"]["text"]) for t in test["text"])
    assert report["shared_texts"]["train_test"] == in_train > 0 and report["shared_texts"]["train_validation"] == 0


def test_a_tuned_decision_threshold_is_refused_unless_there_are_two_classes():
    two, three = (datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
                  for names in (["neg", "pos"], ["a", "b", "c"]))
    sets = datasets.Features({"text": datasets.Value("string"),
                              "label": datasets.List(datasets.ClassLabel(names=["a", "b"]))})
    check_decision_rule(two, "tuned")
    for features in (three, sets):
        check_decision_rule(features, "argmax")
        with pytest.raises(DataSourceError, match=r"set evaluate\.decision_threshold: argmax"):
            check_decision_rule(features, "tuned")


def many_batches(rows: int, batch_rows: int, multi_label: bool = False) -> datasets.Dataset:
    """A memory-mapped-like dataset whose table is many record batches, as a saved one is read back."""
    import pyarrow as pa

    names = ["a", "b", "c"]
    labels = [[i % 3, (i + 1) % 3] if multi_label else i % 3 for i in range(rows)]
    feature = datasets.Sequence(datasets.ClassLabel(names=names)) if multi_label else datasets.ClassLabel(names=names)
    features = datasets.Features({"text": datasets.Value("string"), "label": feature})
    table = pa.table({"text": [f"text {i} " + "x" * (i % 37) for i in range(rows)], "label": labels})
    whole = datasets.Dataset.from_dict(table.to_pydict(), features=features)
    batches = whole.data.table.to_batches(max_chunksize=batch_rows)
    return datasets.Dataset(datasets.table.InMemoryTable(pa.Table.from_batches(batches)), info=whole.info)


@pytest.mark.parametrize("multi_label", [False, True])
def test_a_gathered_selection_saves_the_bytes_datasets_saves(tmp_path, monkeypatch, multi_label):
    """Splits and samples are selections saved by gathering their rows a block at a time: the saved folder is the
    one datasets writes from the selection itself (rows in the selection's order, fingerprint included)."""
    import numpy as np

    from finetune.data import dataset as data_module
    from finetune.data.dataset import save_dataset_dict

    monkeypatch.setattr(data_module, "GATHER_BYTES", 20_000)  # several blocks, each across record batches
    source = many_batches(3000, 130, multi_label)
    rows = np.random.default_rng(0).permutation(3000)[:2500]
    selections = datasets.DatasetDict({"train": source.select(rows), "validation": source.select([5, 3, 2999]),
                                       "empty": source.select([]), "whole": source})
    selections.save_to_disk(tmp_path / "theirs")
    save_dataset_dict(selections, tmp_path / "ours")
    files = sorted(p.relative_to(tmp_path / "theirs") for p in (tmp_path / "theirs").rglob("*") if p.is_file())
    assert len(files) == 12  # dataset_dict.json, and a split with no rows has no data file
    for name in files:
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "theirs" / name).read_bytes(), name
    assert not list(tmp_path.glob(".gather-*"))  # the scratch folder is gone
    assert datasets.load_from_disk(tmp_path / "ours" / "train")["text"] == [f"text {i} " + "x" * (i % 37)
                                                                         for i in rows]
