"""Batch prediction over files: streamed in chunks, rows in input order, refusing to overwrite by default."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from finetune.export.model_folder import export_model
from finetune.serving.batch_predict import BatchInputError, check_files, predict_file
from finetune.serving.torch_predictor import TorchPredictor
from finetune.training.inference import cpu_computes_bf16
from tests.conftest import ROOT, make_tiny_model, offline_env

TEXTS = ["a fine film", "not good at all", "word " * 200, "meh", "an ending, too long", "superb"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    target = tmp_path_factory.mktemp("export") / "export"
    export_model(make_tiny_model(tmp_path_factory.mktemp("model")), target, 1.0,
                 {"uncertain_threshold": 0.5, "finetune_max_length": 32, "finetune_truncation": "head"})
    return target


@pytest.fixture(scope="module")
def predictor(exported):
    return TorchPredictor(exported)


def test_csv_in_csv_out_matches_predicting_the_texts_directly(predictor, tmp_path):
    source = tmp_path / "in.csv"
    pd.DataFrame({"id": range(7), "review": [*TEXTS[:3], "  ", *TEXTS[3:]]}).to_csv(source, index=False)
    counts = predict_file(predictor, source, tmp_path / "out.csv", text_column="review", chunk_rows=3, progress=False)
    assert counts == {"written": 6, "skipped": 1}
    out = pd.read_csv(tmp_path / "out.csv")
    assert out.columns.tolist() == ["row", "label", "predicted", "confidence", "uncertain",
                                    "prob_LABEL_0", "prob_LABEL_1"]
    assert out["row"].tolist() == [1, 2, 3, 5, 6, 7]  # data rows from 1; the blank row 4 is skipped
    direct = predictor.predict(TEXTS)
    assert out["predicted"].tolist() == [p.predicted for p in direct]
    assert out["confidence"].tolist() == pytest.approx([p.confidence for p in direct], abs=1e-6)
    assert (out["prob_LABEL_0"] + out["prob_LABEL_1"]).tolist() == pytest.approx([1.0] * 6, abs=1e-5)
    assert (out["uncertain"] == (out["label"] == "UNCERTAIN")).all()


def test_the_id_columns_asked_for_are_kept_as_written(predictor, tmp_path):
    """--id-column copies a column (or JSON field) into each prediction as it is: ids like 007 stay strings."""
    source = tmp_path / "in.csv"
    source.write_text("ticket,shop,review\n007,north,a fine film\n008,south,  \n009,north,dull\n")
    predict_file(predictor, source, tmp_path / "out.csv", text_column="review", progress=False,
                 id_columns=("ticket", "shop"))
    out = pd.read_csv(tmp_path / "out.csv", dtype=str)
    assert out.columns.tolist()[:4] == ["row", "ticket", "shop", "label"]
    assert out[["row", "ticket", "shop"]].values.tolist() == [["1", "007", "north"], ["3", "009", "north"]]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"id": 12, "text": "superb"}\n{"id": "a-13", "text": "meh"}\n')
    predict_file(predictor, jsonl, tmp_path / "out.jsonl", progress=False, id_columns=("id",))
    assert [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [12, "a-13"]
    with pytest.raises(BatchInputError, match=r"no column 'order'.*--id-column"):
        check_files(source, tmp_path / "x.csv", "review", False, ("order",))
    with pytest.raises(BatchInputError, match=r"--id-column 'label' is a column the predictions have"):
        check_files(source, tmp_path / "x.csv", "review", False, ("label",))
    (tmp_path / "in.txt").write_text("a text\n")
    with pytest.raises(BatchInputError, match="plain text"):
        check_files(tmp_path / "in.txt", tmp_path / "x.csv", "text", False, ("id",))
    jsonl.write_text('{"text": "superb"}\n')
    with pytest.raises(BatchInputError, match=r"line 1 has no field 'id'; name the field with --id-column"):
        predict_file(predictor, jsonl, tmp_path / "y.jsonl", progress=False, id_columns=("id",))


def test_jsonl_and_text_inputs_keep_their_order_across_chunks(predictor, tmp_path):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"body": t, "n": i}) + "\n" for i, t in enumerate(TEXTS)))
    predict_file(predictor, jsonl, tmp_path / "a.jsonl", text_column="body", chunk_rows=2, progress=False)
    text = tmp_path / "in.txt"
    text.write_text("\n".join(TEXTS) + "\n")
    predict_file(predictor, text, tmp_path / "b.jsonl", chunk_rows=4, progress=False)
    a = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [r["row"] for r in a] == [r["row"] for r in b] == [1, 2, 3, 4, 5, 6]
    assert [r["confidence"] for r in a] == [r["confidence"] for r in b]


@pytest.mark.parametrize(("name", "content"), [
    ("in.jsonl", '{"text": "a fine film"}\n{"text": null}\n{"text": "  "}\n{"text": ""}\n{"text": "superb"}\n'),
    ("in.csv", 'text\na fine film\n""\n"  "\n\nsuperb\n'),
    ("in.tsv", 'text\tid\na fine film\t1\n\t2\n  \t3\n\t4\nsuperb\t5\n'),
    ("in.txt", "a fine film\n\n  \n\nsuperb\n"),
])
def test_null_and_blank_texts_are_skipped_and_counted_alike_in_every_format(predictor, tmp_path, name, content):
    source = tmp_path / name
    source.write_text(content)
    counts = predict_file(predictor, source, tmp_path / "out.jsonl", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == counts["written"] == 2
    direct = predictor.predict(["a fine film", "superb"])
    assert [r["confidence"] for r in rows] == pytest.approx([p.confidence for p in direct], abs=1e-6)
    assert counts["skipped"] == (2 if name == "in.csv" else 3)  # csv: the empty line is no row at all


def test_an_existing_output_is_refused_unless_overwrite_and_kept_when_a_run_fails(predictor, tmp_path):
    source, target = tmp_path / "in.txt", tmp_path / "out.csv"
    source.write_text("good\nbad\n")
    target.write_text("precious\n")
    with pytest.raises(BatchInputError, match="already exists: pass --overwrite"):
        predict_file(predictor, source, target, progress=False)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"txt": "no text field"}\n')
    with pytest.raises(BatchInputError, match="line 3 has no field 'text'"):
        predict_file(predictor, broken, target, chunk_rows=1, overwrite=True, progress=False)
    assert target.read_text() == "precious\n" and not list(tmp_path.glob("*.part"))
    predict_file(predictor, source, target, overwrite=True, progress=False)
    assert pd.read_csv(target)["row"].tolist() == [1, 2]


@pytest.mark.parametrize(("name", "content", "output", "message"), [
    ("in.csv", "id,body\n1,x\n", "out.csv", "has no column 'text' \\(columns: id, body\\)"),
    ("in.xlsx", "x", "out.csv", "unknown format .xlsx"),
    ("in.txt", "x\n", "out.parquet", "--output .*unknown format .parquet"),
    ("in.txt", "x\n", "in.txt", "must not be the --input"),
])
def test_bad_files_fail_before_the_model_loads(tmp_path, name, content, output, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(BatchInputError, match=message):
        check_files(tmp_path / name, tmp_path / output, "text", overwrite=False)


def test_cli_predicts_a_file_and_checks_it_before_loading_the_model(predictor, tmp_path):
    source = tmp_path / "reviews.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(source, index=False)
    command = [sys.executable, "-m", "finetune", "predict", "--input", str(source), "--output", str(tmp_path / "p.csv")]
    model = str(predictor.model.name_or_path)
    done = subprocess.run([*command, "--model", model], cwd=ROOT, env=offline_env(), capture_output=True, text=True)
    assert done.returncode == 0 and "6 predictions written" in done.stdout, done.stderr
    again = subprocess.run([*command, "--model", "no/such/model"], cwd=ROOT, env=offline_env(), capture_output=True,
                           text=True)  # the output check comes first: the model is never looked up
    assert again.returncode != 0 and "already exists: pass --overwrite" in again.stderr


def test_bf16_on_a_cpu_without_bf16_instructions_is_allowed_but_said_to_be_slow(exported, caplog):
    bf16 = TorchPredictor(exported, precision="bf16")
    assert [p.predicted for p in bf16.predict(TEXTS[:2])]  # it runs
    assert ("no bfloat16 instructions" in caplog.text) == (not cpu_computes_bf16())
