"""Batch prediction on a Ray cluster: ``predict --input 's3://bucket/in/*.parquet' --output s3://bucket/out/ --ray``.

Ray Data reads the input's Parquet shards (a local glob or an object-store URL, through fsspec), and
``map_batches`` runs them through a pool of actors, each holding one ONNX predictor of the export
(the prediction contract every backend shares), with as many ONNX Runtime threads as the CPUs Ray
gives it. The export's ONNX files travel through Ray's object store, so the workers of a remote
cluster need no copy of the model folder. Each output row has the input's id columns, the shard it
came from, and the columns of every predictions file (label, predicted, confidence, uncertain, the
probabilities); blank texts are skipped, as single-process ``predict`` skips them.

Nothing partial is left at the output prefix: the shards are written under a temporary prefix
beside it and moved in only once all are written. Without an address, a local Ray starts and stops
with the command. Every check that can fail (the pattern, each shard's schema, the output prefix,
the export, the cluster's address) runs before Ray starts reading.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import uuid
from pathlib import Path
from typing import Any

from finetune.core.contract import INT8_FILE, ONNX_FILE, ExportError, read_model_info
from finetune.core.errors import UserError

log = logging.getLogger(__name__)

SOURCE_COLUMN = "shard"  # each output row's input shard
EXPORT_FILES = ("config.json", "tokenizer.json")  # besides the ONNX model: what an ONNX predictor reads
# What the workers of a local Ray need from this process's environment to reach an S3-compatible store.
PASSED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
              "AWS_ENDPOINT_URL", "TOKENIZERS_PARALLELISM")


class RayPredictError(UserError, ValueError):
    """The input, output, export or cluster cannot be used as asked; the message names the fix."""


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of a local path or object-store URL, and the path within it."""
    import fsspec

    return fsspec.core.url_to_fs(url)


def input_shards(pattern: str) -> tuple[Any, list[str]]:
    """The Parquet shards a glob, a prefix ending in ``/`` or one file names, in name order."""
    store, path = filesystem(pattern)
    try:
        if any(mark in path for mark in "*?["):
            found = store.glob(path)
        elif pattern.endswith("/"):
            found = store.find(path)
        else:
            found = [path] if store.isfile(path) else []
    except Exception as err:  # credentials, endpoint, bucket: botocore's errors are no OSError
        raise RayPredictError(f"--input {pattern}: cannot list it ({type(err).__name__}: {err}); check the path, "
                              "or for S3 the credentials and AWS_ENDPOINT_URL") from None
    shards = sorted(name for name in found if name.endswith(".parquet"))
    if not shards:
        raise RayPredictError(f"--input {pattern} matches no Parquet file: --ray reads Parquet shards, e.g. "
                              "'s3://bucket/in/*.parquet' or 'data/in/*.parquet' (quoted, so the shell keeps the *)")
    return store, shards


def shard_url(store: Any, path: str) -> str:
    """A shard's path as the user would write it (``s3://...`` for an object store)."""
    protocol = store.protocol if isinstance(store.protocol, str) else store.protocol[0]
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def check_shards(store: Any, shards: list[str], text_column: str, id_columns: tuple[str, ...]) -> int:
    """Every shard is Parquet and has the text and id columns (its footer alone is read); their rows in all."""
    import pyarrow.parquet as pq

    total = 0
    for shard in shards:
        try:
            with store.open(shard, "rb") as handle:
                footer = pq.read_metadata(handle)
            names, total = footer.schema.to_arrow_schema().names, total + footer.num_rows
        except Exception as err:
            raise RayPredictError(f"--input shard {shard_url(store, shard)} cannot be read as Parquet "
                                  f"({type(err).__name__}: {err}): repair or remove it") from None
        missing = [name for name in (text_column, *id_columns) if name not in names]
        if missing:
            option = "--text-column" if missing[0] == text_column else "--id-column"
            raise RayPredictError(f"--input shard {shard_url(store, shard)} has no column {missing[0]!r} (columns: "
                                  f"{', '.join(names)}): name it with {option}")
    return total


def check_output(target: str, overwrite: bool) -> tuple[Any, str]:
    """The output prefix: refused when it already holds files, unless ``overwrite``."""
    store, prefix = filesystem(target)
    prefix = prefix.rstrip("/")
    existing = store.find(prefix) if store.exists(prefix) else []
    if existing and not overwrite:
        raise RayPredictError(f"--output {target} already holds {len(existing)} files: pass --overwrite to replace "
                              "them, or choose another prefix")
    return store, prefix


def check_address(address: str | None) -> None:
    """A cluster address answers before Ray is asked to join it (Ray itself retries for a long time)."""
    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RayPredictError(f"--ray {address}: give the head node as HOST:PORT (e.g. 10.0.0.5:6379) or "
                              "ray://HOST:10001, or no address for a local Ray")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise RayPredictError(f"--ray {address}: no Ray cluster answers there ({err}); start one with "
                              "`ray start --head`, or give no address for a local Ray") from None


def export_payload(model_dir: Path, int8: bool) -> dict[str, bytes]:
    """The export's files an ONNX predictor reads, by name."""
    model = INT8_FILE if int8 else ONNX_FILE
    if not (model_dir / model).is_file():
        raise ExportError(f"{model_dir / model} not found: --ray predicts with the export's ONNX model; export it "
                          "with `dvc repro export` (export.onnx: true)")
    return {name: (model_dir / name).read_bytes() for name in (*EXPORT_FILES, model)}


class ShardPredictor:
    """One Ray actor: an ONNX predictor of the shipped export, answering batches of rows."""

    def __init__(self, payload: list, text_column: str, id_columns: tuple[str, ...], int8: bool,
                 threshold: float | None, windows: bool, batch_size: int, threads: int) -> None:
        import tempfile

        import ray

        from finetune.serving.batch_predict import output_fields
        from finetune.serving.onnx_predictor import OnnxPredictor

        self.folder = Path(tempfile.mkdtemp(prefix="finetune-export-"))
        for name, data in ray.get(payload[0]).items():
            (self.folder / name).write_bytes(data)
        self.predictor = OnnxPredictor(self.folder, threshold=threshold, batch_size=batch_size,
                                       file=INT8_FILE if int8 else ONNX_FILE, threads=threads, windows=windows)
        self.text_column, self.id_columns = text_column, id_columns
        info = self.predictor.info
        self.columns = [*id_columns, SOURCE_COLUMN, *output_fields(info)[1:]]  # output_fields' first is the row

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        from finetune.serving.batch_predict import answer_fields  # pandas: in the worker, not at import

        texts = batch[self.text_column].fillna("").astype(str)
        kept = batch[texts.str.strip() != ""]
        answers = self.predictor.predict(kept[self.text_column].astype(str).tolist())
        rows = [{**{name: record[name] for name in self.id_columns}, SOURCE_COLUMN: Path(record["path"]).name,
                 **answer_fields(answer, self.predictor.info)}
                for record, answer in zip(kept.to_dict("records"), answers, strict=True)]
        return pd.DataFrame(rows, columns=self.columns)  # a batch of blank texts alone: no rows, the same columns


def predict_on_ray(model_dir: Path, pattern: str, target: str, text_column: str = "text",
                   id_columns: tuple[str, ...] = (), address: str | None = None, workers: int = 1,
                   cpus_per_worker: int = 1, overwrite: bool = False, threshold: float | None = None,
                   int8: bool = False, windows: bool = False, batch_size: int = 256) -> dict[str, int]:
    """Predict every non-blank text of the input's shards into Parquet shards under ``target``; the counts."""
    if workers < 1 or cpus_per_worker < 1:
        raise RayPredictError("--ray-workers and --ray-cpus must be at least 1")
    if {SOURCE_COLUMN, text_column} & set(id_columns):
        raise RayPredictError(f"--id-column: {SOURCE_COLUMN!r} and the text column are columns the output has")
    read_model_info(model_dir, threshold, windows)
    payload = export_payload(model_dir, int8)
    in_store, shards = input_shards(pattern)
    total = check_shards(in_store, shards, text_column, id_columns)
    out_store, prefix = check_output(target, overwrite)
    check_address(address)

    import pyarrow.fs
    import ray

    # Listing, reading and writing the shards are Ray tasks of one CPU each: the actors must leave one free, or
    # they wait for each other forever. A local Ray gets it as a logical CPU beside the actors' (the tasks are I/O).
    needed = workers * cpus_per_worker + 1
    started = not ray.is_initialized()
    if started:
        env = {key: os.environ[key] for key in PASSED_ENV if key in os.environ}
        try:
            ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=False,
                     include_dashboard=False, logging_level=logging.WARNING,
                     num_cpus=None if address else max(os.cpu_count() or 1, needed))
        except (ConnectionError, RuntimeError) as err:  # it answered, but not as a cluster this driver may join
            raise RayPredictError(f"--ray {address}: cannot join the Ray cluster there ({root_cause(err)}); check "
                                  "the address, the Ray version and, with token authentication, RAY_AUTH_TOKEN") \
                from None
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < needed:
        if started:
            ray.shutdown()
        raise RayPredictError(f"the Ray cluster has {cpus} CPUs: --ray-workers {workers} with --ray-cpus "
                              f"{cpus_per_worker} each leaves none for reading and writing the shards; ask for at "
                              f"most {cpus - 1} CPUs in all")
    # Ray Data logs every retry and failure with its stack; a shard that cannot be read gets one line below instead
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    temporary = f"{prefix}.tmp-{uuid.uuid4().hex[:12]}"
    urls = [shard_url(in_store, shard) for shard in shards]
    rows_per_file = max(1, -(-total // len(shards)))  # the output in about as many files as the input
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the same input gives its rows in the same order
        context.enable_progress_bars = False
        source = ray.data.read_parquet(urls, include_paths=True, filesystem=pyarrow.fs.PyFileSystem(
            pyarrow.fs.FSSpecHandler(in_store))).select_columns([text_column, *id_columns, "path"])
        # blocks of one batch, streamed: Ray reads a small input as one block, which one actor would answer alone
        source = source.repartition(target_num_rows_per_block=batch_size)
        answered = source.map_batches(
            ShardPredictor, fn_constructor_kwargs={
                "payload": [ray.put(payload)], "text_column": text_column, "id_columns": tuple(id_columns),
                "int8": int8, "threshold": threshold, "windows": windows, "batch_size": 32,
                "threads": cpus_per_worker},
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker, batch_size=batch_size,
            batch_format="pandas")
        try:
            answered.write_parquet(temporary, filesystem=pyarrow.fs.PyFileSystem(
                pyarrow.fs.FSSpecHandler(out_store)), min_rows_per_file=rows_per_file)
        except Exception as err:
            failed = next((url for url, shard in zip(urls, shards, strict=True) if shard in str(err)), None)
            if failed is None:
                raise
            raise RayPredictError(f"--input shard {failed} cannot be read ({root_cause(err)}): repair or remove it; "
                                  f"nothing was written to {target}") from None
        written = sorted(out_store.find(temporary))
        rows = parquet_rows(out_store, written)
        if out_store.exists(prefix):  # --overwrite: the old results go only now that the new ones are complete
            out_store.rm(prefix, recursive=True)
        out_store.makedirs(prefix, exist_ok=True)
        for path in written:
            out_store.mv(path, f"{prefix}/{path.removeprefix(temporary + '/')}")
    finally:
        if out_store.exists(temporary):
            out_store.rm(temporary, recursive=True)
        if started:
            ray.shutdown()
    skipped = total - rows
    log.info("%d predictions from %d shards written to %s", rows, len(shards), target)
    if skipped:
        log.warning("%d blank texts skipped (their rows are missing from %s)", skipped, target)
    return {"written": rows, "skipped": skipped, "shards": len(shards), "files": len(written)}


def root_cause(err: BaseException) -> str:
    """The worker's own error, as its last "SomeError: message" line (Ray wraps it with its traceback)."""
    found = [line.strip() for line in str(err).splitlines() if re.match(r"\s*\w+(Error|Exception): \S", line)]
    cause = found[-1] if found else f"{type(err).__name__}: {str(err).strip().splitlines()[-1:] or ''}"
    return cause if len(cause) < 200 else cause[:197] + "..."


def parquet_rows(store: Any, paths: list[str]) -> int:
    """Rows in Parquet files, from their footers."""
    import pyarrow.parquet as pq

    total = 0
    for path in paths:
        with store.open(path, "rb") as handle:
            total += pq.read_metadata(handle).num_rows
    return total
