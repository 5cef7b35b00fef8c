"""An S3 remote over the real S3 protocol: a moto server on 127.0.0.1, no credentials outside the test."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CREDENTIALS, S3_BUCKET, make_repo, offline_env, run, small_params

pytestmark = pytest.mark.pipeline
BUCKET = S3_BUCKET


def use_s3(repo: Path, endpoint: str) -> None:
    run(["dvc", "remote", "add", "-f", "-d", "--local", "s3", f"s3://{BUCKET}/store"], repo)
    run(["dvc", "remote", "modify", "--local", "s3", "endpointurl", endpoint], repo)


def bucket_keys(endpoint: str) -> set[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    keys = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


def listed_dirs_are_complete(endpoint: str) -> bool:
    """Every directory manifest (.dir) on the remote has all of its files there too."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    keys = bucket_keys(endpoint)
    for key in (k for k in keys if k.endswith(".dir")):
        listing = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        for entry in listing:
            if f"store/files/md5/{entry['md5'][:2]}/{entry['md5'][2:]}" not in keys:
                return False
    return True


def test_push_kill_push_clone_pull_predict_over_s3(s3_endpoint, tmp_path, tiny_model):
    # what is pushed matters, not how good it is: a quick run without ONNX (predict in the clone uses PyTorch)
    repo = make_repo(tmp_path / "repo", small_params(tiny_model, **{"data.max_samples": 100, "train.epochs": 1,
                                                                    "export.onnx": False, "export.int8": False}))
    run(["dvc", "repro"], repo)
    run("git add -A && git commit -q -m run", repo)
    use_s3(repo, s3_endpoint)
    interrupted = subprocess.Popen(["dvc", "push"], cwd=repo, env={**offline_env(), **CREDENTIALS},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while interrupted.poll() is None and not bucket_keys(s3_endpoint):
        time.sleep(0.02)  # kill as soon as the first objects land
    interrupted.kill()
    interrupted.wait()
    assert listed_dirs_are_complete(s3_endpoint)  # whatever the kill left, no manifest without its files
    run(["dvc", "push"], repo, env=CREDENTIALS)
    assert listed_dirs_are_complete(s3_endpoint) and any(k.endswith(".dir") for k in bucket_keys(s3_endpoint))
    assert "are in sync" in run(["dvc", "status", "--cloud"], repo, env=CREDENTIALS).stdout

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    use_s3(clone, s3_endpoint)
    run(["dvc", "pull", "export"], clone, env=CREDENTIALS)
    out = run(["python", "-m", "finetune", "predict", "--model", "models/export", "--json", "A moving film."],
              clone).stdout
    assert json.loads(out)["predicted"] in {"negative", "positive"}


def test_a_data_source_in_s3_is_a_glob_of_shards_streamed_over_the_s3_protocol(s3_endpoint, monkeypatch):
    """data.source: s3://bucket/prefix/* names Parquet shards of train and a gzipped CSV of test, read through
    fsspec; a pattern that names nothing, and a bucket that does not exist, are refused by check_source (before
    any stage's outputs are deleted)."""
    import gzip
    import io

    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq

    from finetune.core.params import DataParams
    from finetune.data.sources import DataSourceError, check_source
    from tests.conftest import read_frames

    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket="corpus")
    shards = [(["a fine film", "a dull film"], ["pos", "neg"]), (["great acting"], ["pos"])]
    for number, (texts, labels) in enumerate(shards):
        parquet = io.BytesIO()
        pq.write_table(pa.table({"text": texts, "label": labels}), parquet)
        client.put_object(Bucket="corpus", Key=f"reviews/train-{number:05d}-of-00002.parquet", Body=parquet.getvalue())
    client.put_object(Bucket="corpus", Key="reviews/test.csv.gz", Body=gzip.compress(b"text,label\nso boring,neg\n"))
    for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    data = DataParams(source="s3://corpus/reviews/*")
    check_source(data)
    frames = read_frames(data)
    assert frames["train"]["text"].tolist() == ["a fine film", "a dull film", "great acting"]  # shards in order
    assert frames["test"].to_dict("list") == {"text": ["so boring"], "label": ["neg"]}
    with pytest.raises(DataSourceError, match=r"s3://corpus/films/\*\.csv names no data file"):
        check_source(DataParams(source="s3://corpus/films/*.csv"))
    with pytest.raises(DataSourceError, match=r"s3://no-such-bucket/x.csv names no data file.*check the bucket"):
        check_source(DataParams(source="s3://no-such-bucket/x.csv"))
