"""Batch prediction on Ray: Parquet shards in, Parquet shards out, equal to single-process `predict` row for row; on a
local Ray, and on a Ray cluster started apart reading and writing S3 (a moto server); every bad input refused in one
line before Ray starts, and a shard that breaks mid-run leaves the output prefix as it was."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finetune.cli import main
from finetune.export.model_folder import export_model
from finetune.export.onnx_export import export_onnx
from finetune.serving.batch_predict import predict_file
from finetune.serving.loadtest import free_port
from finetune.serving.onnx_predictor import ONNX_FILE, OnnxPredictor
from finetune.serving.ray_predict import predict_on_ray
from tests.conftest import CREDENTIALS, make_tiny_model, offline_env

TEXTS = ["a fine film", "dull and far too long", "", "a moving film " * 40, "  ", "the plot, the acting", "meh."]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    model = make_tiny_model(tmp_path_factory.mktemp("model"), num_labels=3)
    target = tmp_path_factory.mktemp("export") / "export"
    export_model(model, target, 1.0, {"uncertain_threshold": 0.4, "finetune_max_length": 32})
    export_onnx(target, target / ONNX_FILE)
    return target


def write_shards(folder: Path, count: int = 3, rows: int = 40) -> list[Path]:
    """Shards of an id column and texts (blank ones among them), as a crawl or a ticket export would be."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for number in range(count):
        ids = [f"doc-{number}-{i:03d}" for i in range(rows)]
        texts = [TEXTS[(number + i) % len(TEXTS)] + f" {i}" * (i % 3) for i in range(rows)]
        path = folder / f"part-{number:05d}.parquet"
        pq.write_table(pa.table({"id": ids, "text": texts, "extra": list(range(rows))}), path)
        shards.append(path)
    return shards


def corrupt_parquet() -> bytes:
    """A Parquet file whose footer (schema, row counts) reads and whose data does not."""
    import io

    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": [f"x{i}" for i in range(3000)], "text": [f"review {i} of a film" for i in
                                                                            range(3000)]}), buffer)
    data = bytearray(buffer.getvalue())
    middle = len(data) // 2
    data[middle:middle + 300] = bytes(b ^ 0xFF for b in data[middle:middle + 300])
    return bytes(data)


def single_process(exported: Path, shards: list[Path], tmp_path: Path) -> pd.DataFrame:
    """What `predict --input SHARD --output CSV --id-column id` writes for each shard, together."""
    frames = []
    for shard in shards:
        out = tmp_path / f"{shard.stem}.csv"
        predict_file(OnnxPredictor(exported), shard, out, id_columns=("id",), progress=False)
        frames.append(pd.read_csv(out, dtype={"id": str, "label": str, "predicted": str}))
    return pd.concat(frames).drop(columns="row").sort_values("id").reset_index(drop=True)


def read_output(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder).sort_values("id").reset_index(drop=True)


def test_everything_that_can_be_wrong_is_refused_in_one_line_before_ray_starts(exported, tmp_path):
    shards = write_shards(tmp_path / "in", count=1)
    (tmp_path / "in" / "broken.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.parquet").write_bytes(b"results of an earlier run")
    cases = [
        ([str(tmp_path / "nothing" / "*.parquet"), str(tmp_path / "out")], [], "matches no Parquet file"),
        ([str(tmp_path / "in" / "*.parquet"), str(tmp_path / "out")], [], "broken.parquet cannot be read as Parquet"),
        ([str(shards[0]), str(tmp_path / "out")], ["--text-column", "body"], "has no column 'body'"),
        ([str(shards[0]), str(tmp_path / "full")], [], "already holds 1 files: pass --overwrite"),
        ([str(shards[0]), str(tmp_path / "out")], ["--ray=127.0.0.1:1"], "no Ray cluster answers there"),
        ([str(shards[0]), str(tmp_path / "out")], ["--ray=nowhere"], "give the head node as HOST:PORT"),
        ([str(shards[0]), str(tmp_path / "out")], ["--backend", "torch"], "predicts with the export's ONNX model"),
    ]
    for (source, target), extra, message in cases:
        with pytest.raises(SystemExit) as stop:
            main(["predict", "--model", str(exported), "--input", source, "--output", target,
                  *(["--ray"] if not any(a.startswith("--ray=") for a in extra) else []), *extra])
        assert message in str(stop.value) and "\n" not in str(stop.value), (message, str(stop.value))
    with pytest.raises(SystemExit, match=r"broken\.parquet cannot be read as Parquet"):  # single-process too
        main(["predict", "--model", str(exported), "--input", str(tmp_path / "in" / "broken.parquet"), "--output",
              str(tmp_path / "out.csv")])
    assert (tmp_path / "full" / "old.parquet").read_bytes() == b"results of an earlier run"  # untouched
    assert not (tmp_path / "out").exists()


def test_a_local_ray_answers_as_single_process_predict_row_for_row(exported, tmp_path):
    shards = write_shards(tmp_path / "in")
    counts = predict_on_ray(exported, str(tmp_path / "in" / "*.parquet"), str(tmp_path / "out"), id_columns=("id",),
                            workers=2, batch_size=16)
    got, expected = read_output(tmp_path / "out"), single_process(exported, shards, tmp_path)
    assert counts["written"] == len(expected) and counts["skipped"] == 3 * 40 - len(expected) > 0
    assert got.columns.tolist() == ["id", "shard", "label", "predicted", "confidence", "uncertain", "prob_LABEL_0",
                                    "prob_LABEL_1", "prob_LABEL_2"]
    assert got["id"].tolist() == expected["id"].tolist()  # every non-blank row, once
    assert got["shard"].tolist() == [f"part-0000{i.split('-')[1]}.parquet" for i in got["id"]]
    assert (got[["label", "predicted", "uncertain"]] == expected[["label", "predicted", "uncertain"]]).all().all()
    for column in ("confidence", "prob_LABEL_0", "prob_LABEL_1", "prob_LABEL_2"):
        assert got[column].tolist() == pytest.approx(expected[column].tolist(), abs=2e-6)


def test_a_ray_cluster_reads_and_writes_s3(exported, tmp_path, s3_endpoint):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket="crawl")
    shards = write_shards(tmp_path / "in", count=2)
    for shard in shards:
        client.upload_file(str(shard), "crawl", f"in/{shard.name}")
    port = free_port()
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    env = {**offline_env(), "RAY_AUTH_MODE": "disabled"}  # a throwaway cluster: no token authentication
    subprocess.run([*ray, "start", "--head", f"--port={port}", "--num-cpus=3", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True, env=env, timeout=120)
    # a fresh process joins the cluster, as a user's command does (Ray Data keeps per-process state of a cluster
    # this test process left, the local Ray of the test above)
    args = [sys.executable, "-m", "finetune", "predict", "--model", str(exported), "--input", "s3://crawl/in/*.parquet",
            "--output", "s3://crawl/out/", "--ray", f"127.0.0.1:{port}", "--ray-workers", "2", "--id-column", "id"]
    command_env = {**env, **CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint}
    try:
        done = subprocess.run(args, capture_output=True, text=True, env=command_env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        keys = sorted(item["Key"] for item in client.list_objects_v2(Bucket="crawl")["Contents"])
        outputs = {key: client.get_object(Bucket="crawl", Key=key)["Body"].read() for key in keys
                   if key.startswith("out/")}
        assert outputs and all(key.endswith(".parquet") for key in outputs)
        assert not [key for key in keys if ".tmp-" in key]  # the temporary prefix is gone

        # a shard whose footer reads but whose data does not: one line naming it, the earlier output as it was
        client.put_object(Bucket="crawl", Key="in/part-00009.parquet", Body=corrupt_parquet())
        broken = subprocess.run([*args, "--overwrite"], capture_output=True, text=True, env=command_env, timeout=300)
    finally:
        subprocess.run([*ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
    assert broken.returncode == 1
    assert re.fullmatch(r"error: --input shard s3://crawl/in/part-00009\.parquet cannot be read \(OSError: .*\): "
                        r"repair or remove it; nothing was written to s3://crawl/out/", broken.stderr.splitlines()[-1])
    after = sorted(item["Key"] for item in client.list_objects_v2(Bucket="crawl")["Contents"])
    assert after == sorted([*keys, "in/part-00009.parquet"])  # no temporary prefix, the old results in place
    assert {key: client.get_object(Bucket="crawl", Key=key)["Body"].read() for key in outputs} == outputs
    (tmp_path / "got").mkdir()
    for key, data in outputs.items():
        (tmp_path / "got" / Path(key).name).write_bytes(data)
    got, expected = read_output(tmp_path / "got"), single_process(exported, shards, tmp_path)
    assert got["id"].tolist() == expected["id"].tolist() and (got["predicted"] == expected["predicted"]).all()
    assert got["confidence"].tolist() == pytest.approx(expected["confidence"].tolist(), abs=2e-6)
