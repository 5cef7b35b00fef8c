"""``make bench``: the pipeline's speed and memory against the recipe's way, as ratios.

Every ratio compares two measurements taken in the same run, on the same data and
model, each in a fresh process (bench/measure.py). Absolute speeds move about
15% between runs on a shared 2-core machine, so the measurements are interleaved
in rounds (recipe, ours, recipe, ours, ...) and each ratio is the median of the
rounds' ratios. Writes ``reports/bench.json`` and prints a table; exits non-zero
when a target is missed.

    python -m bench.bench [--rounds 3] [--imdb PATH] [--model minilm]
                          [--scale-only | --predict-only | --lora-only | --windows-only | --ray-only]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.measure import DEFAULT, OURS, RECIPE, TORCH, TORCH_BF16, drop_cached_pages, memory_cgroup_parent
from finetune.core.cores import usable_cores
from tests.project import ROOT, copy_project

log = logging.getLogger("bench")

DEFAULT_IMDB = ROOT.parent / "shared" / "data" / "aclImdb_v1-labeled.tar.gz"


def environment() -> dict[str, str]:
    """Subprocesses find this interpreter's `python` and `dvc` first (DVC runs stages with `python`), and this
    project's `finetune` from any folder (the commands timed run in temporary ones)."""
    root = str(Path(__file__).resolve().parents[1])
    python_path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": python_path}


@dataclass(frozen=True)
class Target:
    """A figure of the bench and the bound it must meet."""

    key: str
    what: str
    bound: float | None  # None: a figure to report, with no target
    at_least: bool = True  # the figure must be >= bound (else <= bound)
    unit: str = "x"

    def met(self, value: float) -> bool:
        if self.bound is None:
            return True
        return value >= self.bound if self.at_least else value <= self.bound

    def describe(self) -> str:
        return "-" if self.bound is None else f"{'>=' if self.at_least else '<='} {self.bound:g}{self.unit}"


MEMORY_LIMIT_MB = 1536  # the data stages' memory bound at the scale section's large size
TARGETS = [
    Target("train_speedup_rotten_tomatoes", "training samples/s, ours / recipe, Rotten Tomatoes", 4.0, True),
    Target("train_speedup_imdb", "training samples/s, ours / recipe, IMDB at 128 tokens", 0.9, True),
    Target("train_bf16_speedup", "training samples/s, ours in bf16 autocast / ours in fp32, Rotten Tomatoes",
           None),
    Target("tokenized_size_rotten_tomatoes", "tokenized Arrow bytes, ours / recipe, Rotten Tomatoes", 0.3, False),
    Target("tokenize_time_imdb", "tokenize time, ours / recipe, IMDB train (25,000)", 1.1, False),
    Target("noop_repro_scale", "no-op `dvc repro`, IMDB-sized outputs / the small pipeline's", 1.1, False),
    Target("predict_speedup", "prediction texts/s, `predict`'s default (ONNX Runtime fp32) / pipeline() per text, "
           "1,000 IMDB reviews", 1.5, True),
    Target("predict_speedup_torch", "prediction texts/s, PyTorch fp32 / pipeline() per text (fp32)", None),
    Target("tokenize_peak_memory_mb", "peak memory tokenizing IMDB train", 1536, False, " MB"),
    Target("train_stage_peak_memory_mb", "peak memory of the train stage, MiniLM", 4096, False, " MB"),
    Target("predict_speedup_bf16", "prediction texts/s, PyTorch bf16 autocast / pipeline() per text (fp32)", None),
    Target("noop_repro_seconds", "no-op `dvc repro`, IMDB-sized outputs", None, unit=" s"),
    Target("onnx_latency_p50", "single-text latency p50, ONNX Runtime / PyTorch", None),
    Target("predict_command_speedup", "one `predict` command with one text, wall time, --backend torch / the default "
           "(ONNX Runtime: no torch import)", None),
    Target("predict_command_seconds", "the same, the default's wall time", None, unit=" s"),
    Target("service_batching", "service requests/s, batching across requests / one text per model call", None),
    Target("service_requests_per_s", "service requests/s (ONNX, 8 clients, one IMDB review each)", None,
           unit=" req/s"),
    Target("service_p50_ms", "service latency p50", None, unit=" ms"),
    Target("service_p95_ms", "service latency p95", None, unit=" ms"),
    # The data stages at scale, on synthetic CSVs (bench/synthetic.py) of Sizes.scale_rows rows.
    Target("scale_peak_rss_mb", "largest peak resident memory of a data stage (download, split, tokenize), large "
           "size", MEMORY_LIMIT_MB, False, " MB"),
    Target("scale_peak_rss_growth", "largest growth of a data stage's peak resident memory, large / small size",
           1.25, False),
    Target("scale_stages_within_limit", "data stages (of 3) that finish at the large size inside a memory cgroup "
           f"of {MEMORY_LIMIT_MB} MB, page cache included", 3, True),
    Target("scale_limited_slowdown", "largest slowdown of a data stage in that memory cgroup, large size", None),
    Target("scale_peak_anon_mb", "largest peak anonymous memory of a data stage (no memory-mapped file pages), "
           "large size", None, unit=" MB"),
    Target("scale_peak_anon_growth", "largest growth of a data stage's peak anonymous memory, large / small size",
           None),
    Target("scale_time_per_row_growth", "largest growth of a data stage's time per row, large / small size", 1.2,
           False),
    Target("scale_download_vs_floor", "download stage time / pyarrow.csv read + datasets save_to_disk, small size",
           4.0, False),
    Target("scale_split_vs_download", "split stage time / download stage time, large size", 1.0, False),
    Target("scale_tokenize_cores", "tokenize stage speed on every core / on one core, small size", 1.6, True),
    # LoRA against full fine-tuning on the default data, over training seeds (--lora-only).
    Target("full_test_accuracy_mean", "full fine-tuning: test accuracy, mean over seeds", None, unit=""),
    Target("full_test_accuracy_std", "full fine-tuning: test accuracy, standard deviation over seeds", None, unit=""),
    Target("lora_test_accuracy_mean", "LoRA: test accuracy, mean over seeds", None, unit=""),
    Target("lora_test_accuracy_std", "LoRA: test accuracy, standard deviation over seeds", None, unit=""),
    Target("lora_accuracy_gap_points", "LoRA's mean test accuracy - full fine-tuning's, in points", -1.0, True,
           " points"),
    Target("full_trained_parameters", "full fine-tuning: parameters trained", None, unit=""),
    Target("lora_trained_parameters", "LoRA: parameters trained (adapters and head)", None, unit=""),
    Target("lora_trained_share", "LoRA: share of the model's parameters trained", None, unit=""),
    Target("full_train_samples_per_s", "full fine-tuning: training samples/s (optimizer steps only)", None,
           unit=" samples/s"),
    Target("lora_train_samples_per_s", "LoRA: training samples/s (optimizer steps only)", None, unit=" samples/s"),
    Target("lora_train_speedup", "training samples/s, LoRA / full fine-tuning", 1.0, True),
    Target("full_peak_rss_mb", "full fine-tuning: peak memory of the training process", None, unit=" MB"),
    Target("lora_peak_rss_mb", "LoRA: peak memory of the training process", None, unit=" MB"),
    Target("lora_peak_memory_ratio", "peak memory, LoRA / full fine-tuning", None),
    Target("scale_tokenize_vs_encode_batch", "tokenize stage time / the bare tokenizer's encode_batch on every "
           "core, small size", 1.3, False),
    # Long documents on an IMDB sample (--windows-only): windows against head+tail, test accuracy in points.
    Target("windows_gain_points_128", "test accuracy, windows (the better aggregation) - head+tail, 128 tokens",
           1.0, True, " points"),
    # Batch prediction on Ray (--ray-only): 2 workers against 1, and 1 worker against single-process predict.
    Target("ray_2_workers_speedup", "texts/s, predict --ray with 2 workers / with 1 worker", 1.6),
    Target("ray_1_worker_against_single_process", "texts/s, predict --ray with 1 worker (Ray's start included) / "
           "single-process predict on every core", None),
    Target("ray_overhead_same_cores", "texts/s, predict --ray with 1 worker of every core / single-process predict "
           "on every core: what Ray itself costs", None),
    Target("windows_gain_points_256", "test accuracy, windows (the better aggregation) - head+tail, 256 tokens",
           None, unit=" points"),
]


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does; ``quick`` is for the smoke test, not for figures."""

    steps: int = 40
    warmup: int = 3
    imdb_train_rows: int = 4000  # the pool training samples batches from (tokenized untimed)
    imdb_tokenize_rows: int | None = None  # None: all 25,000
    predict_texts: int = 1000
    latency_texts: int = 200
    coverage_texts: int = 2000
    repo_samples: int = 400  # rows per split of the small pipeline the no-op repro runs on
    imdb_repo_samples: int | None = None  # rows per split of the IMDB-sized one (None: all 25,000 + 25,000)
    imdb_reviews_per_folder: int | None = None  # a sample of the archive, same layout (None: the whole archive)
    noop_pairs: int = 5  # no-op repros per round, small and IMDB-sized back to back (each about a second)
    service_requests: int = 1000
    service_clients: int = 8
    scale_rows: tuple[int, int] = (1_000_000, 4_000_000)  # rows of the synthetic CSVs of the scale section


QUICK = Sizes(steps=2, warmup=1, imdb_train_rows=64, imdb_tokenize_rows=200, predict_texts=16, latency_texts=8,
              coverage_texts=50, repo_samples=60, noop_pairs=1, service_requests=24,
              imdb_reviews_per_folder=150, scale_rows=(2_000, 8_000))


def median_ratio(numerators: list[float], denominators: list[float]) -> float:
    """The median over rounds of each round's ratio (pairs measured back to back)."""
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


def measure(name: str, **kwargs: Any) -> dict[str, float]:
    """One measurement in a fresh Python process (see finetune/measure.py)."""
    result = subprocess.run([sys.executable, "-m", "bench.measure", name, json.dumps(kwargs)],
                            capture_output=True, text=True, cwd=ROOT, env=environment())
    if result.returncode != 0:
        raise RuntimeError(f"measurement {name} {kwargs} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def sample_imdb_archive(archive: Path, target: Path, per_folder: int) -> Path:
    """The first ``per_folder`` reviews of each of train/test x pos/neg, in an archive of the same layout (read
    in one streaming pass): quick runs exercise every code path without reading 50,000 reviews twice."""
    taken: dict[str, int] = {}
    with tarfile.open(archive, "r|gz") as source, tarfile.open(target, "w:gz") as sample:
        for member in source:
            folder = member.name.rsplit("/", 1)[0]
            if member.isfile() and member.name.endswith(".txt") and folder.count("/") == 2:
                if taken.get(folder, 0) >= per_folder:
                    continue
                taken[folder] = taken.get(folder, 0) + 1
            sample.addfile(member, source.extractfile(member) if member.isfile() else None)
    return target


def prepare_data(work: Path, imdb: Path, sizes: Sizes, seed: int) -> dict[str, str]:
    """Arrow copies of the benchmark data: Rotten Tomatoes train, IMDB train (all and a sample), IMDB test."""
    from finetune.core.params import DataParams
    from finetune.data.dataset import build_raw
    from finetune.data.sources import open_source

    if not imdb.is_file():
        raise FileNotFoundError(f"the IMDB archive is not at {imdb}: pass --imdb PATH to aclImdb_v1-labeled.tar.gz")
    paths = {}
    for name, source in [("rotten_tomatoes", "rotten_tomatoes"), ("imdb", str(imdb))]:
        data = DataParams(source=source)
        scratch = work / f"{name}-scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        with open_source(data) as chunks:
            raw, _ = build_raw(chunks, data, seed, scratch)
        for split, dataset in raw.items():
            paths[f"{name}_{split}"] = str(work / f"{name}_{split}")
            dataset.shuffle(seed=seed).flatten_indices().save_to_disk(paths[f"{name}_{split}"])
    import datasets

    imdb_train = datasets.load_from_disk(paths["imdb_train"])
    for key, rows in [("imdb_train_pool", sizes.imdb_train_rows), ("imdb_tokenize", sizes.imdb_tokenize_rows)]:
        paths[key] = str(work / key)
        imdb_train.select(range(rows or len(imdb_train))).save_to_disk(paths[key])
    return paths


def prediction_model(work: Path, model: str, max_length: int, seed: int) -> str:
    """The model both prediction ways load: the encoder with a new two-class head, saved as the export stage
    does (speed does not depend on trained weights)."""
    from transformers import set_seed

    from finetune.core.contract import MAX_LENGTH_KEY, ONNX_FILE, TRUNCATION_KEY
    from finetune.export.onnx_export import export_onnx
    from finetune.training.models import load_classifier, load_tokenizer, resolve_model

    set_seed(seed)
    ref = resolve_model(model)
    classifier = load_classifier(ref, ["negative", "positive"])
    setattr(classifier.config, MAX_LENGTH_KEY, max_length)
    setattr(classifier.config, TRUNCATION_KEY, "head")
    folder = work / "predict-model"
    classifier.save_pretrained(folder, safe_serialization=True)
    load_tokenizer(ref).save_pretrained(folder)
    export_onnx(folder, folder / ONNX_FILE)
    return str(folder)


def set_params(repo: Path, section: str, **values: Any) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def small_pipeline(work: Path, model: str, samples: int) -> Path:
    """A git + DVC copy of the project that has run the whole pipeline once on ``samples`` rows per split."""
    repo = copy_project(work / "repo")
    set_params(repo, "model", name=model)
    set_params(repo, "data", max_samples=samples)
    set_params(repo, "train", epochs=1)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=bench", "-c",
                "user.email=bench@localhost", "commit", "-q", "-m", "bench"], ["dvc", "repro", "-q"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True, env=environment())
    return repo


def imdb_sized_pipeline(work: Path, small: Path, imdb: Path, samples: int | None) -> Path:
    """A copy of the small pipeline whose data stages have run on IMDB (25,000 + 25,000 reviews downloaded,
    split and tokenized for real). The later stages' outputs (the model, reports) are the small run's, recorded
    for the new data with `dvc commit`: a model's size does not depend on the data it saw, and training one on
    IMDB would take the bench an hour. `dvc status` must then be clean, like after any finished `dvc repro`."""
    repo = work / "imdb-repo"
    shutil.copytree(small, repo, symlinks=True)
    set_params(repo, "data", source=str(imdb.resolve()), max_samples=samples)
    for cmd in (["dvc", "repro", "-q", "tokenize"], ["dvc", "commit", "-f", "-q"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True, env=environment())
    status = subprocess.run(["dvc", "status", "--json"], cwd=repo, check=True, capture_output=True, text=True,
                            env=environment()).stdout
    if json.loads(status or "{}"):
        raise RuntimeError(f"the IMDB-sized pipeline is not up to date after dvc commit: {status}")
    return repo


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, env=environment())
    return time.perf_counter() - start, result.stdout


def noop_repro(repo: Path) -> float:
    """Seconds of a `dvc repro` that has nothing to do."""
    seconds, output = timed(["dvc", "repro"], repo)
    if "Running stage" in output:
        raise RuntimeError(f"the no-op `dvc repro` in {repo} ran a stage:\n{output}")
    return seconds


DATA_STAGES = ("download", "split", "tokenize")
STAGE_OUTPUT = {"download": "raw", "split": "splits", "tokenize": "tokenized"}  # the paths.* key each writes


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def scale_measurements(work: Path, sizes: tuple[int, int], model: str, seed: int,
                       progress: Callable[[str], None]) -> dict[str, dict[str, float]]:
    """The data stages on a synthetic CSV of each size, each stage in its own process as DVC runs it: seconds and
    peak memory; tokenize again on one core; and the floors of download and tokenize on the same data."""
    from bench.synthetic import write_csv

    measured = {}
    for rows in sizes:
        progress(f"scale: the data stages on {rows:,} synthetic rows")
        csv = write_csv(work / f"synthetic-{rows}.csv", rows, seed)
        repo = copy_project(work / f"scale-{rows}")
        set_params(repo, "data", source=str(csv))
        set_params(repo, "model", name=model)
        subprocess.run([sys.executable, "-m", "stages.check_params"], cwd=repo, check=True, capture_output=True,
                       env=environment())
        paths = yaml.safe_load((repo / "params.yaml").read_text())["paths"]
        for stage in DATA_STAGES:
            measured[f"{stage}_{rows}"] = measure("stage", stage=stage, cwd=str(repo))
            measured[f"{stage}_{rows}"]["output_mb"] = folder_mb(repo / paths[STAGE_OUTPUT[stage]])
        measured[f"source_{rows}"] = {"csv_mb": csv.stat().st_size / 2**20}
        if rows == max(sizes) and memory_cgroup_parent() is not None:
            for stage in DATA_STAGES:  # again, each in a memory cgroup of the resident-memory bound
                shutil.rmtree(repo / paths[STAGE_OUTPUT[stage]])  # as DVC does before it runs a stage
                drop_cached_pages(csv, repo / "data")  # its input's pages, cached by the runs before, count in
                measured[f"{stage}_limited_{rows}"] = measure("stage", stage=stage, cwd=str(repo),
                                                              memory_limit_mb=MEMORY_LIMIT_MB)
        shutil.rmtree(repo / "data" / "tokenized")
        measured[f"tokenize_one_core_{rows}"] = measure("stage", stage="tokenize", cwd=str(repo), cores=1)
        measured[f"csv_to_arrow_{rows}"] = measure("csv_to_arrow", csv=str(csv))
        measured[f"encode_batch_{rows}"] = measure("encode_batch", data=str(repo / "data" / "splits"), model=model,
                                                   max_length=128)
        csv.unlink()
        shutil.rmtree(repo)  # the large size's files take gigabytes
    return measured


def scale_figures(measured: dict[str, dict[str, float]], sizes: tuple[int, int]) -> dict[str, float]:
    small, large = sizes

    def growth(stage: str, key: str) -> float:
        return measured[f"{stage}_{large}"][key] / measured[f"{stage}_{small}"][key]

    limited = {stage: measured[f"{stage}_limited_{large}"] for stage in DATA_STAGES
               if f"{stage}_limited_{large}" in measured}  # none where no memory cgroup can be made
    return {
        **({"scale_stages_within_limit": sum(run["within_limit"] for run in limited.values()),
            "scale_limited_slowdown": max(run["seconds"] / measured[f"{stage}_{large}"]["seconds"]
                                          for stage, run in limited.items())} if limited else {}),
        "scale_peak_rss_mb": max(measured[f"{stage}_{large}"]["peak_rss_mb"] for stage in DATA_STAGES),
        "scale_peak_rss_growth": max(growth(stage, "peak_rss_mb") for stage in DATA_STAGES),
        "scale_peak_anon_mb": max(measured[f"{stage}_{large}"]["peak_anon_mb"] for stage in DATA_STAGES),
        "scale_peak_anon_growth": max(growth(stage, "peak_anon_mb") for stage in DATA_STAGES),
        "scale_time_per_row_growth": max(growth(stage, "seconds") * small / large for stage in DATA_STAGES),
        "scale_download_vs_floor": measured[f"download_{small}"]["seconds"] / measured[f"csv_to_arrow_{small}"][
            "seconds"],
        "scale_split_vs_download": measured[f"split_{large}"]["seconds"] / measured[f"download_{large}"]["seconds"],
        "scale_tokenize_cores": measured[f"tokenize_one_core_{small}"]["seconds"] / measured[f"tokenize_{small}"][
            "seconds"],
        "scale_tokenize_vs_encode_batch": measured[f"tokenize_{small}"]["seconds"] / measured[
            f"encode_batch_{small}"]["seconds"],
    }


def run_bench(model: str, imdb: Path, rounds: int, sizes: Sizes, seed: int = 42,
              progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """All measurements, interleaved over ``rounds``; the figures, their targets and the raw values."""
    from bench.truncation import truncation_coverage
    from finetune.training.inference import cpu_computes_bf16
    from finetune.training.models import load_tokenizer, resolve_model

    raw: dict[str, list[float]] = {}

    def record(key: str, value: float) -> None:
        raw.setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        progress("preparing data, a prediction model, a small pipeline and an IMDB-sized one")
        if sizes.imdb_reviews_per_folder is not None:
            imdb = sample_imdb_archive(imdb, work / "imdb-sample.tar.gz", sizes.imdb_reviews_per_folder)
        scale = scale_measurements(work, sizes.scale_rows, model, seed, progress)
        data = prepare_data(work, imdb, sizes, seed)
        predict_model = prediction_model(work, model, 128, seed)
        repo = small_pipeline(work, model, sizes.repo_samples)
        train_stage = measure("command", cmd=["dvc", "repro", "-f", "-s", "train"], cwd=str(repo))
        imdb_repo = imdb_sized_pipeline(work, repo, imdb, sizes.imdb_repo_samples)
        for folder in (repo, imdb_repo):
            noop_repro(folder)  # untimed: DVC fills its state (file hashes by inode and mtime) of the copy
        for way in (RECIPE, OURS):
            size = measure("tokenize", data=data["rotten_tomatoes_train"], model=model, max_length=128, way=way)
            record(f"rt_tokenized_bytes_{way}", size["bytes"])
        for round_ in range(rounds):
            progress(f"round {round_ + 1} of {rounds}")
            for way in (RECIPE, OURS):
                for corpus, pool in [("rt", "rotten_tomatoes_train"), ("imdb", "imdb_train_pool")]:
                    speed = measure("train", data=data[pool], model=model, max_length=128, batch_size=16,
                                    steps=sizes.steps, warmup=sizes.warmup, way=way)
                    record(f"{corpus}_train_samples_per_s_{way}", speed["samples_per_s"])
                    record(f"{corpus}_train_peak_rss_mb_{way}", speed["peak_rss_mb"])
                tokenized = measure("tokenize", data=data["imdb_tokenize"], model=model, max_length=128, way=way)
                record(f"imdb_tokenize_seconds_{way}", tokenized["seconds"])
                record(f"imdb_tokenize_peak_rss_mb_{way}", tokenized["peak_rss_mb"])
            speed = measure("train", data=data["rotten_tomatoes_train"], model=model, max_length=128, batch_size=16,
                            steps=sizes.steps, warmup=sizes.warmup, way=OURS, precision="bf16")
            record("rt_train_samples_per_s_ours_bf16", speed["samples_per_s"])
            prediction_round(data["imdb_test"], predict_model, sizes.predict_texts, raw)
            for way in (TORCH, DEFAULT):
                latency = measure("latency", data=data["imdb_test"], model_dir=predict_model,
                                  texts=sizes.latency_texts, way=way)
                record(f"latency_p50_ms_{way}", latency["p50_ms"])
                record(f"latency_p95_ms_{way}", latency["p95_ms"])
            for backend in ("auto", "torch"):
                command = measure("command", cmd=["python", "-m", "finetune", "predict", "--model", predict_model,
                                                  "--backend", backend, "A moving, beautifully acted film."],
                                  cwd=str(ROOT))
                record(f"predict_command_seconds_{backend}", command["seconds"])
                record(f"predict_command_peak_rss_mb_{backend}", command["peak_rss_mb"])
            for batching, max_batch in [("batched", 64), ("unbatched", 1)]:
                served = measure("service", data=data["imdb_test"], model_dir=predict_model,
                                 requests=sizes.service_requests, concurrency=sizes.service_clients,
                                 max_batch=max_batch)
                for key, value in served.items():
                    record(f"service_{key}_{batching}", value)
            for _ in range(sizes.noop_pairs):
                for name, folder in [("small", repo), ("imdb", imdb_repo)]:
                    record(f"noop_repro_seconds_{name}", noop_repro(folder))

        import datasets

        texts = datasets.load_from_disk(data["imdb_test"])["text"][:sizes.coverage_texts]
        tokenizer = load_tokenizer(resolve_model(model))
        coverage = {str(length): truncation_coverage(texts, tokenizer, length) for length in (128, 512)}

    figures = {
        "train_speedup_rotten_tomatoes": median_ratio(raw["rt_train_samples_per_s_ours"],
                                                      raw["rt_train_samples_per_s_recipe"]),
        "train_speedup_imdb": median_ratio(raw["imdb_train_samples_per_s_ours"],
                                           raw["imdb_train_samples_per_s_recipe"]),
        "train_bf16_speedup": median_ratio(raw["rt_train_samples_per_s_ours_bf16"],
                                           raw["rt_train_samples_per_s_ours"]),
        "tokenized_size_rotten_tomatoes": raw["rt_tokenized_bytes_ours"][0] / raw["rt_tokenized_bytes_recipe"][0],
        "tokenize_time_imdb": median_ratio(raw["imdb_tokenize_seconds_ours"], raw["imdb_tokenize_seconds_recipe"]),
        "noop_repro_scale": median_ratio(raw["noop_repro_seconds_imdb"], raw["noop_repro_seconds_small"]),
        **prediction_figures(raw),
        "tokenize_peak_memory_mb": max(raw["imdb_tokenize_peak_rss_mb_ours"]),
        "train_stage_peak_memory_mb": train_stage["peak_rss_mb"],
        "noop_repro_seconds": statistics.median(raw["noop_repro_seconds_imdb"]),
        "predict_command_speedup": median_ratio(raw["predict_command_seconds_torch"],
                                                raw["predict_command_seconds_auto"]),
        "predict_command_seconds": statistics.median(raw["predict_command_seconds_auto"]),
        "onnx_latency_p50": median_ratio(raw[f"latency_p50_ms_{DEFAULT}"], raw[f"latency_p50_ms_{TORCH}"]),
        "service_batching": median_ratio(raw["service_requests_per_s_batched"],
                                         raw["service_requests_per_s_unbatched"]),
        "service_requests_per_s": statistics.median(raw["service_requests_per_s_batched"]),
        "service_p50_ms": statistics.median(raw["service_p50_ms_batched"]),
        "service_p95_ms": statistics.median(raw["service_p95_ms_batched"]),
        **scale_figures(scale, sizes.scale_rows),
    }
    return {
        "figures": judged(figures),
        "truncation_coverage": coverage,
        "measurements": {key: [round(v, 3) for v in values] for key, values in sorted(raw.items())},
        "scale_measurements": rounded(scale),
        "setup": {"model": model, "rounds": rounds, "sizes": sizes.__dict__, "max_length": 128, "batch_size": 16,
                  "cpu_bf16_instructions": cpu_computes_bf16()},
    }


def prediction_round(data: str, model_dir: str, texts: int, raw: dict[str, list[float]]) -> None:
    """One round of prediction throughput, back to back: pipeline() once per text, then `predict`'s default
    (ONNX Runtime fp32), PyTorch fp32 and PyTorch bf16 autocast, each in a fresh process."""
    for way in (RECIPE, DEFAULT, TORCH, TORCH_BF16):
        predicted = measure("predict", data=data, model_dir=model_dir, texts=texts, max_length=128, way=way)
        raw.setdefault(f"predict_texts_per_s_{way}", []).append(predicted["texts_per_s"])


def prediction_figures(raw: dict[str, list[float]]) -> dict[str, float]:
    recipe = raw["predict_texts_per_s_recipe"]
    return {"predict_speedup": median_ratio(raw[f"predict_texts_per_s_{DEFAULT}"], recipe),
            "predict_speedup_torch": median_ratio(raw[f"predict_texts_per_s_{TORCH}"], recipe),
            "predict_speedup_bf16": median_ratio(raw[f"predict_texts_per_s_{TORCH_BF16}"], recipe)}


def run_predict_bench(model: str, imdb: Path, rounds: int, sizes: Sizes, seed: int = 42,
                      progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """The prediction section alone (``--predict-only``): its rounds, its figures and the raw values."""
    raw: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        if sizes.imdb_reviews_per_folder is not None:
            imdb = sample_imdb_archive(imdb, work / "imdb-sample.tar.gz", sizes.imdb_reviews_per_folder)
        data = prepare_data(work, imdb, sizes, seed)
        predict_model = prediction_model(work, model, 128, seed)
        for round_ in range(rounds):
            progress(f"round {round_ + 1} of {rounds}")
            prediction_round(data["imdb_test"], predict_model, sizes.predict_texts, raw)
    return {"figures": judged(prediction_figures(raw)),
            "measurements": {key: [round(v, 3) for v in values] for key, values in sorted(raw.items())},
            "setup": {"model": model, "rounds": rounds, "texts": sizes.predict_texts, "max_length": 128}}


def run_scale_bench(model: str, sizes: Sizes, seed: int = 42,
                    progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """The scale section alone (``--scale-only``): the data stages at both sizes, their figures and targets."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        scale = scale_measurements(Path(tmp), sizes.scale_rows, model, seed, progress)
    return {"figures": judged(scale_figures(scale, sizes.scale_rows)), "scale_measurements": rounded(scale),
            "setup": {"model": model, "scale_rows": sizes.scale_rows, "max_length": 128}}


def tokenized_default_data(work: Path, model: str, samples: int | None) -> Path:
    """The default pipeline's tokenized data (Rotten Tomatoes, its splits, max_length 128) for ``model``, from a
    git + DVC copy of the project that ran up to tokenize; ``samples`` rows per split, or all."""
    repo = copy_project(work / "lora-repo")
    set_params(repo, "model", name=model)
    set_params(repo, "data", max_samples=samples)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=bench", "-c",
                "user.email=bench@localhost", "commit", "-q", "-m", "bench"], ["dvc", "repro", "-q", "tokenize"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True, env=environment())
    return repo / yaml.safe_load((repo / "params.yaml").read_text())["paths"]["tokenized"]


def run_lora_bench(model: str, seeds: list[int], lora_learning_rate: float, quick: bool = False,
                   progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """The LoRA section (``--lora-only``): full fine-tuning and LoRA (train.adapter: lora, train.lora as in
    params.yaml, ``lora_learning_rate``) on the default data, one run of each per training seed, interleaved,
    each in a fresh process; everything else is params.yaml's train.*."""
    train = yaml.safe_load((ROOT / "params.yaml").read_text())["train"] | {"num_processes": 1}
    if quick:
        train |= {"epochs": 1}
    ways = {"full": train | {"adapter": "none"},
            "lora": train | {"adapter": "lora", "learning_rate": lora_learning_rate}}
    runs: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        progress("tokenizing the default data")
        tokenized = tokenized_default_data(Path(tmp), model, 100 if quick else None)
        for seed in seeds:
            for way, settings in ways.items():
                progress(f"seed {seed}: {way} fine-tuning")
                result = measure("finetune", tokenized=str(tokenized), model=model, train=settings | {"seed": seed})
                runs[way].append(result | {"seed": seed})
                progress(f"seed {seed}: {way}: test accuracy {result['test_accuracy']:.4f}, "
                         f"{result['train_samples_per_s']:.1f} samples/s")
    return {"figures": judged(lora_figures(runs)), "runs": runs,
            "setup": {"model": model, "seeds": seeds, "full": ways["full"], "lora": ways["lora"]}}


def imdb_reviews(imdb: Path, work: Path, seed: int) -> list[str]:
    """The IMDB archive's test reviews, as the pipeline reads them."""
    from finetune.core.params import DataParams
    from finetune.data.dataset import build_raw
    from finetune.data.sources import open_source

    data = DataParams(source=str(imdb))
    (work / "imdb-scratch").mkdir(parents=True, exist_ok=True)
    with open_source(data) as chunks:
        raw, _ = build_raw(chunks, data, seed, work / "imdb-scratch")
    return raw["test"]["text"]


def run_ray_bench(model: str, imdb: Path, texts: int, quick: bool = False,
                  progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Batch prediction on Ray (``--ray-only``): ``texts`` IMDB-like texts (the test reviews, repeated) in 8
    Parquet shards, answered by `predict --ray` with 1 and with 2 workers of one CPU each (a local Ray, started
    by the command: its start is part of the time), against single-process `predict --input` on the same rows in
    one file (ONNX Runtime on every core, the user's default); and by one worker of every core: Ray's own cost.
    Each way once, in a fresh process, the model an untrained head on the encoder (speed does not depend on the
    weights)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        export = prediction_model(work, model, 128, 42)
        reviews = imdb_reviews(imdb, work, 42)
        rows = 64 if quick else texts
        table = pa.table({"id": [f"t{i:07d}" for i in range(rows)],
                          "text": [reviews[i % len(reviews)] for i in range(rows)]})
        (work / "shards").mkdir()
        per_shard = -(-rows // 8)
        for number in range(8):
            pq.write_table(table.slice(number * per_shard, per_shard), work / "shards" / f"part-{number}.parquet")
        pq.write_table(table, work / "all.parquet")

        def timed(name: str, args: list[str]) -> float:
            progress(f"{rows} texts: {name}")
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "finetune", "predict", "--model", export, "--id-column", "id",
                            *args], check=True, capture_output=True, env=environment(), cwd=work)
            seconds = time.perf_counter() - start
            progress(f"{name}: {rows / seconds:.1f} texts/s")
            return seconds

        seconds = {
            "single_process": timed("single-process predict", ["--input", "all.parquet", "--output", "all.csv"]),
            "ray_1_worker": timed("Ray, 1 worker", ["--input", "shards/*.parquet", "--output", "out-1",
                                                    "--ray", "--ray-workers", "1"]),
            "ray_2_workers": timed("Ray, 2 workers", ["--input", "shards/*.parquet", "--output", "out-2",
                                                      "--ray", "--ray-workers", "2"]),
            "ray_1_worker_every_core": timed("Ray, 1 worker of every core", [
                "--input", "shards/*.parquet", "--output", "out-all", "--ray", "--ray-cpus", str(usable_cores())]),
        }
    figures = {"ray_2_workers_speedup": seconds["ray_1_worker"] / seconds["ray_2_workers"],
               "ray_1_worker_against_single_process": seconds["single_process"] / seconds["ray_1_worker"],
               "ray_overhead_same_cores": seconds["single_process"] / seconds["ray_1_worker_every_core"]}
    return {"figures": judged(figures), "texts_per_s": {way: rows / s for way, s in seconds.items()},
            "seconds": seconds, "setup": {"model": model, "texts": rows, "shards": 8, "max_length": 128,
                                          "cpus_per_worker": 1, "quick": quick}}


WINDOW_STRATEGIES = ("windows", "head+tail", "head")  # the comparison the target names first


def run_windows_bench(model: str, imdb: Path, lengths: list[int], samples: int, quick: bool = False,
                      progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Long documents (``--windows-only``): an IMDB sample (``samples`` reviews per split) through the pipeline's
    own stages (``dvc repro`` up to evaluate, in a git + DVC copy of the project), at each max_length: head,
    head+tail, and windows with the mean and with the max of their logits (one training; the aggregation reruns
    evaluate alone). Per run: test accuracy (per review), epochs, train stage time per epoch, evaluate stage time
    per review scored (validation and test, model loading included), the export's `predict` time per test review;
    for windows also the share of reviews longer than the budget and their windows per review."""
    from finetune.data.documents import window_counts

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        repo = copy_project(Path(tmp) / "windows-repo")
        set_params(repo, "model", name=model)
        set_params(repo, "data", source=str(imdb), max_samples=60 if quick else samples)
        set_params(repo, "export", int8=False)  # predict times the fp32 ONNX model, predict's default
        if quick:
            set_params(repo, "train", epochs=1)
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=bench", "-c",
                    "user.email=bench@localhost", "commit", "-q", "-m", "bench"]):
            subprocess.run(cmd, cwd=repo, check=True, capture_output=True, env=environment())

        def repro(stage: str) -> float:
            start = time.perf_counter()
            subprocess.run(["dvc", "repro", "-q", stage], cwd=repo, check=True, capture_output=True,
                           env=environment())
            return time.perf_counter() - start

        def predict_ms_per_review() -> float:
            """The export (ONNX, fp32) answering the test reviews with `predict --input`: process start and model
            loading included, as a user running it would see."""
            import datasets

            repro("export")
            texts = Path(tmp) / "test-reviews.csv"
            test = datasets.load_from_disk(str(repo / "data/splits"))["test"]
            test.select_columns(["text"]).to_csv(str(texts), index=False)
            start = time.perf_counter()
            subprocess.run(["python", "-m", "finetune", "predict", "--model", "models/export", "--input",
                            str(texts), "--output", str(Path(tmp) / "answers.csv"), "--overwrite"], cwd=repo,
                           check=True, capture_output=True, env=environment())
            return 1000 * (time.perf_counter() - start) / len(test)

        def scored(length: int, strategy: str, train_s: float, evaluate_s: float) -> dict[str, Any]:
            metrics = json.loads((repo / "reports/metrics.json").read_text())
            training = json.loads((repo / "reports/training/metrics.json").read_text())
            evaluation = json.loads((repo / "reports/evaluation.json").read_text())
            scored_reviews = metrics["n_test"] + json.loads((repo / "reports/split.json").read_text())["rows"][
                "validation"]
            row = {"max_length": length, "strategy": strategy, "test_accuracy": metrics["accuracy"],
                   "epochs_run": training["epochs_run"], "train_s_per_epoch": train_s / training["epochs_run"],
                   "evaluate_ms_per_review": 1000 * evaluate_s / scored_reviews,
                   "ece_after": evaluation["calibration"]["ece_after"]}
            progress(f"{length} tokens, {strategy}: test accuracy {row['test_accuracy']:.4f}, "
                     f"{row['train_s_per_epoch']:.0f} s an epoch")
            return row

        runs = []
        for length in lengths:
            for strategy in WINDOW_STRATEGIES:
                progress(f"{length} tokens, {strategy}: tokenize, train, evaluate")
                set_params(repo, "tokenize", max_length=length, truncation=strategy)
                set_params(repo, "evaluate", window_aggregation="mean")
                repro("tokenize")
                train_s, evaluate_s = repro("train"), repro("evaluate")
                if strategy != "windows":
                    runs.append(scored(length, strategy, train_s, evaluate_s)
                                | {"predict_ms_per_review": predict_ms_per_review()})
                    continue
                import datasets

                counts = window_counts(datasets.load_from_disk(str(repo / "data/tokenized"))["test"])
                shape = {"longer_than_budget": float((counts > 1).mean()), "windows_per_review": float(counts.mean()),
                         "predict_ms_per_review": predict_ms_per_review()}  # mean or max: the same work
                runs.append(scored(length, "windows-mean", train_s, evaluate_s) | shape)
                set_params(repo, "evaluate", window_aggregation="max")
                runs.append(scored(length, "windows-max", train_s, repro("evaluate")) | shape)
    return {"figures": judged(windows_figures(runs)), "runs": runs,
            "setup": {"model": model, "samples": samples, "lengths": lengths, "quick": quick,
                      "params": "params.yaml's tokenize.stride, tokenize.max_windows and train.*"}}


def windows_figures(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Per max_length: the better windows aggregation's test accuracy against head+tail's, in points."""
    figures = {}
    for length in sorted({run["max_length"] for run in runs}):
        accuracy = {run["strategy"]: run["test_accuracy"] for run in runs if run["max_length"] == length}
        best = max(accuracy["windows-mean"], accuracy["windows-max"])
        figures[f"windows_gain_points_{length}"] = 100 * (best - accuracy["head+tail"])
    return figures


def lora_figures(runs: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """Means and spreads over seeds; speed and memory as the median of each seed's LoRA / full ratio."""
    def values(way: str, key: str) -> list[float]:
        return [run[key] for run in runs[way]]

    def spread(numbers: list[float]) -> float:
        return statistics.stdev(numbers) if len(numbers) > 1 else 0.0

    figures = {}
    for way in ("full", "lora"):
        accuracy = values(way, "test_accuracy")
        figures |= {f"{way}_test_accuracy_mean": statistics.mean(accuracy),
                    f"{way}_test_accuracy_std": spread(accuracy),
                    f"{way}_trained_parameters": values(way, "trained_parameters")[0],
                    f"{way}_train_samples_per_s": statistics.median(values(way, "train_samples_per_s")),
                    f"{way}_peak_rss_mb": max(values(way, "peak_rss_mb"))}
    return figures | {
        "lora_accuracy_gap_points": 100 * (figures["lora_test_accuracy_mean"] - figures["full_test_accuracy_mean"]),
        "lora_train_speedup": median_ratio(values("lora", "train_samples_per_s"),
                                           values("full", "train_samples_per_s")),
        "lora_peak_memory_ratio": median_ratio(values("lora", "peak_rss_mb"), values("full", "peak_rss_mb")),
        "lora_trained_share": figures["lora_trained_parameters"] / values("lora", "total_parameters")[0]}


def judged(figures: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Each measured figure with what it is, its target and whether it meets it, in the order of TARGETS."""
    return {t.key: {"what": t.what, "value": round(figures[t.key], 3), "target": t.describe(),
                    "met": t.met(figures[t.key])} for t in TARGETS if t.key in figures}


def rounded(scale: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {key: {k: round(v, 3) for k, v in values.items()} for key, values in scale.items()}


def table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table, then what each truncation strategy keeps of IMDB reviews."""
    lines = ["| figure | value | target | met |", "|---|---|---|---|"]
    for target in TARGETS:
        if target.key not in result["figures"]:
            continue
        figure = result["figures"][target.key]
        value = figure["value"]
        shown = f"{int(value):,}" if value == int(value) and abs(value) >= 10_000 else f"{value:g}"
        lines.append(f"| {figure['what']} | {shown}{target.unit} | {figure['target']} | "
                     f"{'-' if target.bound is None else 'yes' if figure['met'] else 'NO'} |")
    if "truncation_coverage" not in result:
        return "\n".join(lines)
    lines += ["", "| IMDB test reviews, max_length | strategy | cut | tokens kept | first sentence kept | "
              "last sentence kept |", "|---|---|---|---|---|---|"]
    for length, strategies in result["truncation_coverage"].items():
        for strategy, row in strategies.items():
            lines.append(f"| {length} | {strategy} | {row['truncated']:.0%} | {row['tokens_kept']:.0%} | "
                         f"{row['first_sentence_kept']:.0%} | {row['last_sentence_kept']:.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", help="packaged name, local folder or hub id (default: minilm)")
    parser.add_argument("--imdb", type=Path, default=DEFAULT_IMDB, help="the aclImdb_v1-labeled.tar.gz archive")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each ratio is their median")
    parser.add_argument("--out", type=Path, help="default: reports/bench.json (reports/bench-scale.json with "
                        "--scale-only, reports/bench-predict.json with --predict-only, reports/bench-lora.json with "
                        "--lora-only, reports/bench-windows.json with --windows-only, reports/bench-ray.json with "
                        "--ray-only)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the bench runs, figures mean nothing")
    parser.add_argument("--scale-only", action="store_true",
                        help="only the data stages on synthetic data at 1M and 4M rows (65 minutes here)")
    parser.add_argument("--lora-only", action="store_true",
                        help="only LoRA against full fine-tuning on the default data, one run each per --seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="training seeds (--lora-only)")
    parser.add_argument("--lora-learning-rate", type=float, default=2e-3,
                        help="LoRA's learning rate (--lora-only; full fine-tuning keeps params.yaml's); the "
                        "default was chosen on validation accuracy (docs/benchmark.md)")
    parser.add_argument("--windows-only", action="store_true",
                        help="only long documents: head, head+tail and windows on an IMDB sample, through the "
                        "pipeline's stages, at each --lengths")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256], help="max_length values "
                        "(--windows-only)")
    parser.add_argument("--samples", type=int, default=3000, help="IMDB reviews per split (--windows-only)")
    parser.add_argument("--ray-only", action="store_true",
                        help="only batch prediction on a local Ray: 1 and 2 workers against single-process predict")
    parser.add_argument("--texts", type=int, default=40_000, help="texts to predict (--ray-only; its time "
                        "on 2 cores is in docs/benchmark.md)")
    parser.add_argument("--predict-only", action="store_true",
                        help="only prediction throughput on IMDB test reviews, `predict`'s ways against pipeline() "
                        "(a few minutes a round)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import datasets

    datasets.disable_progress_bars()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    sizes = QUICK if args.quick else Sizes()
    if args.scale_only + args.predict_only + args.lora_only + args.windows_only + args.ray_only > 1:
        parser.error("--scale-only, --predict-only, --lora-only, --windows-only and --ray-only are sections: run "
                     "them one at a time")
    if args.ray_only:
        result, name = run_ray_bench(args.model, args.imdb, args.texts, args.quick), "bench-ray.json"
    elif args.windows_only:
        result, name = (run_windows_bench(args.model, args.imdb, args.lengths, args.samples, args.quick),
                        "bench-windows.json")
    elif args.lora_only:
        result, name = run_lora_bench(args.model, args.seeds, args.lora_learning_rate, args.quick), "bench-lora.json"
    elif args.scale_only:
        result, name = run_scale_bench(args.model, sizes), "bench-scale.json"
    elif args.predict_only:
        result, name = run_predict_bench(args.model, args.imdb, args.rounds, sizes), "bench-predict.json"
    else:
        result, name = run_bench(args.model, args.imdb, args.rounds, sizes), "bench.json"
    args.out = args.out or ROOT / "reports" / name
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwritten to {args.out}")
    return 0 if all(f["met"] for f in result["figures"].values()) or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
