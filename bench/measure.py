"""Single measurements for ``make bench``, each in a fresh process.

Run as ``python -m bench.measure NAME JSON-ARGS``; the last line of stdout is a
JSON object with the figures. A fresh process per measurement gives each its own
peak memory and no caches warmed by another measurement. Each measurement has two
ways: the recipe's (what the Hugging Face examples do) and ours (what the
pipeline's stages do), on the same data and model.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

RECIPE, OURS = "recipe", "ours"
# Prediction: what `predict` loads by default for an export with model.onnx (ONNX Runtime, fp32), and PyTorch.
DEFAULT, TORCH, TORCH_BF16 = "default", "torch", "torch_bf16"


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM of /proc/self/status, in kB. Not getrusage's ru_maxrss,
    which Linux carries over from the parent through fork and exec: under the bench, every measurement
    reported at least the bench process's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status: peak memory is measured on Linux only")


def folder_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def recipe_encode(texts: list[str], tokenizer: Any, max_length: int) -> dict[str, list]:
    """The recipe's tokenization: every text padded to ``max_length``."""
    return dict(tokenizer(texts, truncation=True, padding="max_length", max_length=max_length))


def encode(dataset: Any, tokenizer: Any, max_length: int, way: str) -> Any:
    """Token ids for a dataset of (text, label): padded (recipe) or as the tokenize stage stores them (ours)."""
    import datasets

    from finetune.data.tokenization import tokenize_dataset

    if way == RECIPE:
        return dataset.map(lambda batch: recipe_encode(batch["text"], tokenizer, max_length), batched=True,
                           batch_size=1000, remove_columns=["text"])
    return tokenize_dataset(datasets.DatasetDict(train=dataset), tokenizer, max_length, "head")["train"]


def measure_tokenize(data: str, model: str, max_length: int, way: str) -> dict[str, float]:
    """Tokenize a dataset and save it as Arrow, as the tokenize stage does: seconds, bytes on disk, peak memory."""
    import datasets

    from finetune.training.models import load_tokenizer, resolve_model

    dataset = datasets.load_from_disk(data)
    tokenizer = load_tokenizer(resolve_model(model))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        encode(dataset, tokenizer, max_length, way).save_to_disk(out)
        seconds = time.perf_counter() - start
        size = folder_bytes(out)
    return {"seconds": seconds, "bytes": size, "rows": len(dataset), "peak_rss_mb": peak_rss_mb()}


def step_timer(first: int, last: int) -> Any:
    """A Trainer callback timing the optimizer steps after ``first`` up to ``last`` (warm-up excluded)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.marks: dict[int, float] = {}

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (first, last):
                self.marks[state.global_step] = time.perf_counter()

        @property
        def seconds(self) -> float:
            return self.marks[last] - self.marks[first]

    return StepTimer()


def measure_train(data: str, model: str, max_length: int, batch_size: int, steps: int, warmup: int,
                  way: str, precision: str = "auto") -> dict[str, float]:
    """Training throughput over ``steps`` optimizer steps after ``warmup``. The recipe: every text padded to
    ``max_length``, random order, the Trainer's default settings. Ours: the train stage's settings (each batch
    padded to its longest text, similar lengths grouped, fused AdamW) with train.precision ``precision``."""
    import datasets
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, default_data_collator, set_seed

    from finetune.core.params import TrainParams
    from finetune.training.models import load_classifier, load_tokenizer, resolve_model
    from finetune.training.trainer import detect_hardware, training_arguments

    dataset = datasets.load_from_disk(data)
    ref = resolve_model(model)
    tokenizer = load_tokenizer(ref)
    encoded = encode(dataset, tokenizer, max_length, way)
    set_seed(0)
    classifier = load_classifier(ref, dataset.features["label"].names)
    timer = step_timer(warmup, warmup + steps)
    with tempfile.TemporaryDirectory() as out:
        if way == RECIPE:  # the recipe's hyperparameters, everything else the Trainer's defaults
            args = TrainingArguments(out, learning_rate=2e-5, per_device_train_batch_size=batch_size,
                                     weight_decay=0.01, fp16=torch.cuda.is_available(), seed=0, report_to="none")
            collator = default_data_collator
        else:  # what the train stage uses
            args = training_arguments(TrainParams(batch_size=batch_size), 0, Path(out),
                                      detect_hardware(precision=precision))
            collator = DataCollatorWithPadding(tokenizer)
        args = replace(args, eval_strategy="no", save_strategy="no", logging_strategy="no",
                       load_best_model_at_end=False, max_steps=warmup + steps, disable_tqdm=True)
        Trainer(model=classifier, args=args, train_dataset=encoded, data_collator=collator,
                callbacks=[timer]).train()
    return {"samples_per_s": steps * batch_size / timer.seconds, "peak_rss_mb": peak_rss_mb()}


def compute_timer() -> Any:
    """A Trainer callback adding up the time of each optimizer step (forward, backward, update): training speed
    without the per-epoch evaluation and checkpoints."""
    from transformers import TrainerCallback

    class ComputeTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds, self.started = 0.0, 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self.started

    return ComputeTimer()


def measure_finetune(tokenized: str, model: str, train: dict[str, Any]) -> dict[str, float]:
    """One fine-tune as the train stage runs it (its Trainer settings, early stopping, the best epoch by validation
    loss, LoRA merged) on a tokenized DatasetDict, with ``train`` as train.*: test accuracy, trained and total
    parameters, training samples/s (optimizer steps only) and peak memory."""
    import datasets
    import numpy as np
    from transformers import set_seed

    from finetune.core.params import TrainParams
    from finetune.data.labels import label_names
    from finetune.training.adapters import add_lora, merged, parameter_counts
    from finetune.training.inference import predict_logits
    from finetune.training.models import align_pad_id, load_classifier, load_tokenizer, resolve_model
    from finetune.training.trainer import build_trainer, detect_hardware
    from finetune.training.trainer import train as fit

    params = TrainParams.model_validate(train)
    data = datasets.load_from_disk(tokenized)
    ref = resolve_model(model)
    set_seed(params.seed)
    tokenizer = load_tokenizer(ref)
    classifier = load_classifier(ref, label_names(data["train"].features))
    align_pad_id(classifier, tokenizer)
    if params.adapter == "lora":
        classifier = add_lora(classifier, params)
    trainable, total = parameter_counts(classifier)
    timer = compute_timer()
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(classifier, tokenizer, data, params, params.seed, Path(out),
                                detect_hardware(precision=params.precision))
        trainer.add_callback(timer)
        trained = merged(fit(trainer, Path(out)))
    epochs = trainer.state.epoch
    inputs = [c for c in tokenizer.model_input_names if c in data["test"].column_names]

    def accuracy(split: str) -> float:
        logits = predict_logits(trained, tokenizer, data[split].select_columns(inputs).to_list(),
                                params.eval_batch_size)
        return float((np.argmax(logits, axis=1) == np.asarray(data[split]["label"])).mean())

    return {"test_accuracy": accuracy("test"), "validation_accuracy": accuracy("validation"),
            "trained_parameters": trainable, "total_parameters": total,
            "epochs_run": epochs, "train_samples_per_s": epochs * len(data["train"]) / timer.seconds,
            "peak_rss_mb": peak_rss_mb()}


def predictor(model_dir: str, way: str) -> Any:
    """The predictor of a prediction way, loaded as the command line loads it."""
    from finetune.serving.backends import load_predictor

    backend, precision = {DEFAULT: ("auto", "fp32"), TORCH: ("torch", "fp32"), TORCH_BF16: ("torch", "bf16")}[way]
    loaded = load_predictor(model_dir, backend, precision=precision)
    if way == DEFAULT and loaded.backend != "onnx":
        raise RuntimeError(f"predict's default for {model_dir} is {loaded.backend}, expected onnx (no model.onnx?)")
    return loaded


def measure_predict(data: str, model_dir: str, texts: int, max_length: int, way: str) -> dict[str, float]:
    """Predict ``texts`` reviews: one ``transformers.pipeline`` call per text (recipe), or our batched,
    length-sorted predictor (same model and max_length) as `predict` loads it by default (ONNX Runtime, fp32),
    or with PyTorch in fp32 or bf16 autocast."""
    import datasets

    batch = datasets.load_from_disk(data)["text"][:texts]
    if way == RECIPE:
        from transformers import pipeline

        classify = pipeline("text-classification", model=model_dir, tokenizer=model_dir)

        def call(texts: list[str]) -> object:
            return [classify(text, truncation=True, max_length=max_length) for text in texts]
    else:
        call = predictor(model_dir, way).predict
    call(batch[:1])  # warm-up
    start = time.perf_counter()
    call(batch)
    seconds = time.perf_counter() - start
    return {"texts_per_s": len(batch) / seconds, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def measure_latency(data: str, model_dir: str, texts: int, way: str) -> dict[str, float]:
    """Single-text latency, as a service answering one request sees it: PyTorch (ours) or ONNX Runtime."""
    import datasets
    import numpy as np

    loaded = predictor(model_dir, way)
    batch = datasets.load_from_disk(data)["text"][:texts]
    loaded.predict(batch[:1])  # warm-up
    seconds = []
    for text in batch:
        start = time.perf_counter()
        loaded.predict([text])
        seconds.append(time.perf_counter() - start)
    return {"p50_ms": float(np.percentile(seconds, 50) * 1000), "p95_ms": float(np.percentile(seconds, 95) * 1000)}


def measure_service(data: str, model_dir: str, requests: int, concurrency: int, max_batch: int) -> dict[str, float]:
    """The service (ONNX backend) under a bounded load of IMDB reviews, one per request; ``max_batch`` 1 turns
    batching across requests off."""
    import datasets

    from finetune.serving.loadtest import http_json, run_load, running_service

    texts = datasets.load_from_disk(data)["text"][:requests]
    with tempfile.TemporaryDirectory() as tmp, running_service(
            ["--model", model_dir, "--max-batch", str(max_batch)], Path(tmp) / "serve.log") as url:
        run_load(url, texts[:concurrency * 4], requests=concurrency * 4, concurrency=concurrency)  # warm-up
        result = run_load(url, texts, requests=requests, concurrency=concurrency)
        batching = http_json(url, "/health")[1]["batching"]
    if result.errors:
        raise RuntimeError(f"{result.errors} requests failed, first: {result.first_error}")
    return {"requests_per_s": result.requests_per_s, "p50_ms": result.p50_ms, "p95_ms": result.p95_ms,
            "mean_batch_texts": batching["texts"] / batching["batches"]}


def measure_command(cmd: list[str], cwd: str) -> dict[str, float]:
    """Peak memory of a command and everything it starts (e.g. ``dvc repro -f -s train``)."""
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "peak_rss_mb": children}


MEMORY_POLL_S = 0.05


def watch_memory(process: subprocess.Popen) -> dict[str, float]:
    """Until ``process`` ends: its peak resident memory (VmHWM) and its peak anonymous memory (RssAnon, sampled
    every MEMORY_POLL_S), in MB. Pages of memory-mapped files count in VmHWM but not in RssAnon: the kernel can
    drop them at any time, so RssAnon is what the process needs."""
    peaks = {"VmHWM": 0, "RssAnon": 0}
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            lines = status.read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError):
            break
        for line in lines:
            key, _, value = line.partition(":")
            if key in peaks:
                peaks[key] = max(peaks[key], int(value.split()[0]))
        time.sleep(MEMORY_POLL_S)
    return {"peak_rss_mb": peaks["VmHWM"] / 1024, "peak_anon_mb": peaks["RssAnon"] / 1024}


def memory_cgroup_parent() -> Path | None:
    """The folder of this process's own memory cgroup (cgroup v1 or v2), where a child group with a memory limit
    can be made; None where there is none or it cannot be written (most containers without privileges)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
        elif controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            folder = Path("/sys/fs/cgroup") / path.lstrip("/")
            if "memory" not in (folder / "cgroup.subtree_control").read_text().split():
                continue  # v2: a child group gets memory.max only where the parent hands the controller down
        else:
            continue
        if os.access(folder, os.W_OK):
            return folder
    return None


@contextmanager
def memory_cgroup(limit_mb: int) -> Iterator[Path]:
    """A new memory cgroup whose processes may use at most ``limit_mb`` MB, page cache included (the kernel takes
    back clean pages of memory-mapped files before it refuses): its folder (see cgroup_oom_kills)."""
    parent = memory_cgroup_parent()
    if parent is None:
        raise RuntimeError("no writable memory cgroup here: the limited runs need one (root, or a delegated group)")
    group = parent / f"finetune-bench-{os.getpid()}"
    group.mkdir()
    try:
        limit = "memory.limit_in_bytes" if (group / "memory.limit_in_bytes").exists() else "memory.max"
        (group / limit).write_text(str(limit_mb * 2**20))
        yield group
    finally:
        group.rmdir()


def cgroup_oom_kills(group: Path) -> int:
    """Processes of the group the kernel killed for want of memory (v1 memory.oom_control, v2 memory.events)."""
    events = group / ("memory.oom_control" if (group / "memory.oom_control").exists() else "memory.events")
    return int(dict(line.split() for line in events.read_text().splitlines()).get("oom_kill", 0))


def drop_cached_pages(*paths: Path) -> None:
    """Ask the kernel to drop its cached pages of these files (of every file under a folder): a stage started in a
    memory cgroup then reads them into that group, which is charged for them, not into pages charged elsewhere."""
    for path in paths:
        for file in [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]:
            descriptor = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)


def measure_stage(stage: str, cwd: str, cores: int | None = None,
                  memory_limit_mb: int | None = None) -> dict[str, float]:
    """A stage script as DVC runs it (``python -m stages.<stage>``), on the first ``cores`` usable cores (None: all):
    seconds, and the stage process's peak memory (worker processes it starts are not counted). With
    ``memory_limit_mb``, the stage and every process it starts run in a memory cgroup of that size, and a stage
    the kernel stops for want of memory answers ``within_limit`` 0 instead of failing."""
    def narrow() -> None:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])

    def start_in(group: Path | None) -> None:
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))
        if cores:
            narrow()

    with (memory_cgroup(memory_limit_mb) if memory_limit_mb else nullcontext()) as group, \
            tempfile.TemporaryFile() as log:  # a file, not a pipe: nobody reads it while the stage runs
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=cwd, stdout=log,
                                   stderr=subprocess.STDOUT, preexec_fn=lambda: start_in(group))
        memory = watch_memory(process)
        seconds = time.perf_counter() - start
        code = process.wait()
        if group is not None and cgroup_oom_kills(group):
            return {"seconds": seconds, **memory, "within_limit": 0.0}
        if code:
            log.seek(0)
            raise RuntimeError(f"stage {stage} failed in {cwd}:\n{log.read().decode()[-3000:]}")
    return {"seconds": seconds, **memory, **({"within_limit": 1.0} if memory_limit_mb else {})}


def measure_csv_to_arrow(csv: str) -> dict[str, float]:
    """The floor of the download stage: read a CSV with pyarrow.csv and save the table with datasets, no cleaning,
    no labels."""
    import datasets
    import pyarrow.csv as pacsv

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        datasets.Dataset(pacsv.read_csv(csv)).save_to_disk(out)
        return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}


def measure_encode_batch(data: str, model: str, max_length: int) -> dict[str, float]:
    """The bare fast tokenizer on every core (its own threads): seconds to encode the texts of every split in
    ``data`` (a DatasetDict folder), 1,000 at a time, as the floor of the tokenize stage."""
    import datasets
    from tokenizers import Tokenizer

    from finetune.data.labels import text_list
    from finetune.training.models import resolve_model

    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    tokenizer = Tokenizer.from_file(str(Path(resolve_model(model)) / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    splits = datasets.load_from_disk(data)
    texts = [text for split in splits.values() for text in text_list(split)]
    start = time.perf_counter()
    for first in range(0, len(texts), 1000):
        tokenizer.encode_batch(texts[first:first + 1000])
    return {"seconds": time.perf_counter() - start, "rows": len(texts)}


MEASUREMENTS: dict[str, Callable[..., dict[str, float]]] = {
    "tokenize": measure_tokenize, "train": measure_train, "predict": measure_predict, "latency": measure_latency,
    "service": measure_service, "command": measure_command, "stage": measure_stage,
    "csv_to_arrow": measure_csv_to_arrow, "encode_batch": measure_encode_batch, "finetune": measure_finetune}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    name, raw = (argv if argv is not None else sys.argv[1:])[:2]
    from finetune.core.stage import setup

    setup("measure")
    logging.getLogger().setLevel(logging.WARNING)
    import datasets

    datasets.disable_progress_bars()
    result = MEASUREMENTS[name](**json.loads(raw))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
