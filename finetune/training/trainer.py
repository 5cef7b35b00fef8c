"""Fine-tune a classifier with the Hugging Face Trainer.

The Trainer evaluates and checkpoints once per epoch on the validation split,
keeps the best model by validation loss and stops early when it stops
improving. Checkpoints live in a git-ignored folder keyed by a hash of
everything that determines the run, outside DVC's outputs (DVC deletes outputs
before rerunning a stage), so an interrupted ``dvc repro`` resumes where it
stopped; the folder goes once training has succeeded.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from sklearn.utils.class_weight import compute_class_weight

from finetune.core.contract import aggregate_windows
from finetune.core.digest import folder_digest
from finetune.core.errors import UserError
from finetune.core.params import Precision, TrainParams
from finetune.core.stage import progress, readable
from finetune.data.documents import (
    DOCUMENT_COLUMN,
    WINDOW_COLUMNS,
    document_ids,
    document_starts,
    first_windows,
)
from finetune.data.labels import LABEL_COLUMN, MULTI_LABEL, label_names, multi_hot, task_of
from finetune.training.inference import cpu_computes_bf16, emulated_bf16_warning
from finetune.training.models import classification_head, save_tokenizer

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
# Files the Trainer writes last into a checkpoint; without them a checkpoint is incomplete.
CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
WEIGHT_COLUMN = "document_weight"  # windows: the weight of each window in the loss (document_weights)
DOCUMENT_LOSS = "document_loss"  # windows: the validation loss of the documents' logits
CHECKPOINT_WEIGHTS = ("model.safetensors", "adapter_model.safetensors")  # the whole model's, or a LoRA adapter's
HISTORY_KEYS = {"loss": "train/loss", "eval_loss": "eval/loss", "eval_accuracy": "eval/accuracy",
                "eval_f1_macro": "eval/f1_macro", "eval_f1_micro": "eval/f1_micro",
                "learning_rate": "train/learning_rate"}


@dataclass(frozen=True)
class Hardware:
    """What the train stage runs on and how: chosen for the device, but for train.compile and train.precision."""

    device: str
    bf16: bool = False
    fp16: bool = False
    tf32: bool = False  # TensorFloat-32 matmuls for what stays in fp32 (Ampere and newer)
    attention: str | None = None  # attn_implementation; None keeps the library's default
    # One fused kernel for the whole AdamW update, on CPUs too (torch >= 2.4): the step of MiniLM's
    # 22.7M parameters takes 15 ms instead of 56 ms on two cores, a sixth of a short batch's time.
    optimizer: str = "adamw_torch_fused"
    dataloader_workers: int = 0
    pin_memory: bool = False
    compile: bool = False

    def describe(self) -> str:
        precision = "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"
        extras = [name for name, on in [("tf32", self.tf32), ("compiled", self.compile)] if on]
        return ", ".join([self.device, precision, *extras])


class HardwareError(UserError, ValueError):
    """The train params ask for hardware this machine does not have; the message names the fix."""


def pick_hardware(cuda_available: bool, bf16_supported: bool = False, ampere_or_newer: bool = False,
                  cpu_count: int = 1, processes: int = 1, compile: bool = False,
                  precision: Precision = "auto") -> Hardware:
    """On a GPU: TF32 on Ampere and newer, SDPA attention, data loading in worker processes into pinned memory;
    on the CPU none of these apply. Both use fused AdamW; ``compile`` (train.compile) is the user's choice on
    either. ``precision`` (train.precision) ``auto`` is bf16 autocast on a GPU that computes in bfloat16
    (``bf16_supported``), fp16 on an older one, and fp32 on a CPU (bf16 there stays opt-in until it is measured
    faster with the same accuracy on CPUs that compute in it). A named precision the device cannot run is an
    error, not a quiet change."""
    if precision == "auto":
        precision = ("bf16" if bf16_supported else "fp16") if cuda_available else "fp32"
    elif precision == "fp16" and not cuda_available:
        raise HardwareError("train.precision is fp16, which needs a GPU (fp16 autocast on a CPU is slower than "
                            "fp32): set train.precision to auto, bf16 or fp32")
    elif precision == "bf16" and cuda_available and not bf16_supported:
        raise HardwareError("train.precision is bf16 but this GPU does not compute in bfloat16: set "
                            "train.precision to auto (fp16 here), fp16 or fp32")
    elif precision == "bf16" and not bf16_supported:
        log.warning(emulated_bf16_warning("train.precision"))
    mixed = {"bf16": precision == "bf16", "fp16": precision == "fp16"}
    if not cuda_available:
        return Hardware("cpu", **mixed, compile=compile)
    workers = max(1, min(4, cpu_count // max(processes, 1) - 1))  # leave a core per process for the loop
    return Hardware("cuda", **mixed, tf32=ampere_or_newer, attention="sdpa", dataloader_workers=workers,
                    pin_memory=True, compile=compile)


def detect_hardware(compile: bool = False, processes: int = 1, precision: Precision = "auto") -> Hardware:
    import torch

    cuda = torch.cuda.is_available()
    return pick_hardware(cuda, bf16_supported=torch.cuda.is_bf16_supported() if cuda else cpu_computes_bf16(),
                         ampere_or_newer=cuda and torch.cuda.get_device_capability() >= (8, 0),
                         cpu_count=os.cpu_count() or 1, processes=processes, compile=compile, precision=precision)


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (which sets these variables)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def check_processes(processes: int, cuda_devices: int) -> None:
    """Before any work: data-parallel training on GPUs needs one GPU per process."""
    if cuda_devices and processes > cuda_devices:
        raise HardwareError(f"train.num_processes is {processes} but this machine has {cuda_devices} GPUs: "
                            f"set train.num_processes to at most {cuda_devices}")


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def torchrun_command(processes: int, module: str) -> list[str]:
    """PyTorch's own launcher, one machine: ``processes`` copies of ``python -m module``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", module]


def checkpoint_dir(base: Path, seed: int, model_name: str, params: TrainParams, tokenized: Path) -> Path:
    """Where this run's checkpoints go: keyed by a hash of everything that determines the run,
    so a resumed run never picks up checkpoints of other params or data."""
    material = {"seed": seed, "model": model_name, "train": params.model_dump(), "data": folder_digest(tokenized)}
    return base / hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose files are all there (a run killed mid-save leaves a partial one)."""
    if not run_dir.is_dir():
        return None
    steps = {int(p.name.removeprefix(CHECKPOINT_PREFIX)): p for p in run_dir.glob(f"{CHECKPOINT_PREFIX}*")
             if p.is_dir() and p.name.removeprefix(CHECKPOINT_PREFIX).isdigit()}
    for checkpoint in (steps[step] for step in sorted(steps, reverse=True)):
        written = {name for name in (*CHECKPOINT_FILES, *CHECKPOINT_WEIGHTS)
                   if (checkpoint / name).is_file() and (checkpoint / name).stat().st_size > 0}
        if set(CHECKPOINT_FILES) <= written and written & set(CHECKPOINT_WEIGHTS):
            return checkpoint
        log.warning("skipping incomplete checkpoint %s", checkpoint)
    return None


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """Validation accuracy and macro F1, logged each epoch."""
    logits, labels = eval_pred
    predictions = np.asarray(logits).argmax(axis=-1)
    return {"accuracy": float(accuracy_score(labels, predictions)),
            "f1_macro": float(f1_score(labels, predictions, average="macro"))}


def compute_multi_label_metrics(eval_pred: Any) -> dict[str, float]:
    """Validation macro and micro F1 of the label sets at probability 0.5, logged each epoch (the tuned
    thresholds come later, from the validation split, in the evaluate stage)."""
    logits, labels = eval_pred
    predictions = (np.asarray(logits) > 0).astype(int)  # sigmoid(logit) > 0.5
    labels = np.asarray(labels).astype(int)
    return {"f1_macro": float(f1_score(labels, predictions, average="macro", zero_division=0)),
            "f1_micro": float(f1_score(labels, predictions, average="micro", zero_division=0))}


def class_weights(dataset: datasets.Dataset) -> np.ndarray:
    """``balanced`` weights from the train split. Single-label: each class weighs n / (classes x its count), so
    every class adds up to the same total (scikit-learn's rule). Multi-label: each label's positives weigh
    negatives / positives (BCE's pos_weight), so its positives and negatives add up to the same total."""
    num_labels = len(label_names(dataset.features))
    if task_of(dataset.features) == MULTI_LABEL:
        positives = multi_hot(dataset[LABEL_COLUMN], num_labels).sum(axis=0)
        return ((len(dataset) - positives) / np.maximum(positives, 1)).astype(np.float32)
    labels = np.asarray(dataset[LABEL_COLUMN])
    present = np.unique(labels)
    weights = np.ones(num_labels, dtype=np.float32)  # a class absent from train (data.labels) keeps weight 1
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


def document_weights(documents: np.ndarray) -> np.ndarray:
    """Windows: each window of a document read in k windows weighs 1/k, so every document adds the same to the
    loss however long it is; scaled so the weights' mean over the split is 1, which keeps the loss, and so the
    learning rate, on the scale of training without windows."""
    counts = np.bincount(documents)
    return (len(documents) / np.count_nonzero(counts) / counts[documents]).astype(np.float32)


class BatchLoss:
    """The training loss where the model's own cannot serve: class weights, windows' document weights, label sets.
    Single-label: cross-entropy weighted per class (normalized by the batch's class weights, as PyTorch's
    weighted mean is), each row also times its document weight. Label sets: BCE with a pos_weight per label,
    averaged over the labels of a row, times its document weight, averaged over the batch. A mean per batch:
    the Trainer divides it over gradient accumulation steps (``loss_is_scaled_for_ga`` False)."""

    def __init__(self, class_weights: np.ndarray | None, multi_label: bool) -> None:
        import torch

        self.class_weights = None if class_weights is None else torch.tensor(class_weights)
        self.multi_label = multi_label

    def __call__(self, logits: Any, labels: Any, row_weights: Any = None) -> Any:
        import torch
        from torch.nn import functional

        logits = logits.float()
        weights = None if self.class_weights is None else self.class_weights.to(logits.device)
        if row_weights is None:
            row_weights = torch.ones(len(logits), device=logits.device)
        row_weights = row_weights.to(logits.device, logits.dtype)
        if self.multi_label:
            per_row = functional.binary_cross_entropy_with_logits(
                logits, labels.to(logits.dtype), pos_weight=weights, reduction="none").mean(dim=1)
            return (per_row * row_weights).mean()
        per_row = functional.cross_entropy(logits, labels, weight=weights, reduction="none")  # w[y] * loss
        norm = weights[labels].sum() if weights is not None else torch.tensor(float(len(labels)))
        return (per_row * row_weights).sum() / norm.to(logits.device)


def document_metrics(documents: np.ndarray, multi_label: bool):
    """``compute_metrics`` of windowed validation data: the windows' logits averaged per document (evaluate's
    window_aggregation applies later and retrains nothing), then the document-level figures and the loss of the
    document's logits (``document_loss``), which picks the best epoch."""
    import torch

    metrics = compute_multi_label_metrics if multi_label else compute_metrics
    starts = document_starts(documents)

    def compute(eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred
        combined = torch.from_numpy(aggregate_windows(np.asarray(logits), documents, "mean"))
        targets = torch.from_numpy(np.asarray(labels)[starts])
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(combined, targets.float()) if multi_label
                else torch.nn.functional.cross_entropy(combined, targets.long()))
        return metrics((combined.numpy(), targets.numpy())) | {"document_loss": float(loss)}

    return compute


def start_from_label_priors(model: Any, dataset: datasets.Dataset) -> bool:
    """Multi-label with a new head: each label's output bias starts at the label's log-odds in ``dataset``
    (smoothed by half a count), so the first sigmoid outputs are the label frequencies instead of 0.5, and
    training spends its steps on the text rather than on learning how rare each label is. A head whose biases
    are not all zero came trained with the checkpoint and is left alone. Returns whether it set them."""
    import torch

    head = classification_head(model)
    if head.bias is None or bool(torch.count_nonzero(head.bias)):
        return False
    positives = multi_hot(dataset[LABEL_COLUMN], head.out_features).sum(axis=0)
    share = (positives + 0.5) / (len(dataset) + 1.0)
    with torch.no_grad():
        head.bias.copy_(torch.from_numpy(np.log(share / (1 - share))).to(head.bias.dtype))
    return True


class MultiHotCollator:
    """Pads a batch like DataCollatorWithPadding and turns each row's list of label ids into a multi-hot row of
    floats, what a sigmoid-per-label model's loss takes."""

    def __init__(self, tokenizer: Any, num_labels: int) -> None:
        from transformers import DataCollatorWithPadding

        self.pad, self.num_labels = DataCollatorWithPadding(tokenizer), num_labels

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        label_sets = [feature[LABEL_COLUMN] for feature in features]
        batch = self.pad([{k: v for k, v in feature.items() if k != LABEL_COLUMN} for feature in features])
        batch["labels"] = torch.from_numpy(multi_hot(label_sets, self.num_labels))
        return batch


def training_arguments(params: TrainParams, seed: int, output_dir: Path, hardware: Hardware, windows: bool = False):
    """The Trainer's settings; ``windows``: the data are windows with a weight each, and the best epoch is the one
    of the lowest loss of the documents' (aggregated) logits."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=params.learning_rate,
        per_device_train_batch_size=params.batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        activation_checkpointing=params.gradient_checkpointing,  # transformers 5's name for gradient checkpointing
        # non-reentrant: works where the embeddings are frozen (LoRA) without forcing their inputs to need gradients
        activation_checkpointing_kwargs={"use_reentrant": False} if params.gradient_checkpointing else None,
        per_device_eval_batch_size=params.eval_batch_size,
        num_train_epochs=params.epochs,
        weight_decay=params.weight_decay,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_{DOCUMENT_LOSS}" if windows else "eval_loss",
        greater_is_better=False,
        save_total_limit=2,  # the best and the newest: enough to resume and to pick the best
        train_sampling_strategy="group_by_length",  # similar lengths per batch: little padding
        seed=seed,
        data_seed=seed,
        bf16=hardware.bf16,
        fp16=hardware.fp16,
        tf32=hardware.tf32 or None,  # None: leave torch's setting alone (False would switch TF32 off)
        optim=hardware.optimizer,
        dataloader_num_workers=hardware.dataloader_workers,
        dataloader_pin_memory=hardware.pin_memory,
        torch_compile=hardware.compile,
        ddp_find_unused_parameters=False,  # every parameter of a classifier gets a gradient: skip the search
        use_cpu=hardware.device == "cpu",
        # data-parallel on CPUs (as in the tests) needs gloo; a single process must not ask for a backend
        ddp_backend="gloo" if hardware.device == "cpu" and launched_by_torchrun() else None,
        report_to="none",  # curves are written from the Trainer's log by write_history
        remove_unused_columns=not windows,  # windows: each row's weight reaches the loss (BatchLoss)
        disable_tqdm=False,
    )


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite; training stops before anything is saved."""


def checked_trainer_class():
    """The Trainer, checking every step's loss (its logs hide NaN losses: logging_nan_inf_filter)."""
    import torch
    from transformers import Trainer

    class CheckedTrainer(Trainer):
        batch_loss: BatchLoss | None = None  # set: the loss is computed here, not by the model

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.batch_loss is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            weights = inputs.pop(WEIGHT_COLUMN, None)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = self.batch_loss(outputs["logits"], labels, weights)
            return (loss, outputs) if return_outputs else loss

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            if not torch.isfinite(loss).all():
                raise NonFiniteLossError(
                    f"the training loss became {loss.item()} at step {self.state.global_step + 1} "
                    f"(epoch {self.state.epoch or 0:.2f}); training stopped and nothing was saved. Lower "
                    "train.learning_rate, or check the model weights and the data")
            return loss

    return CheckedTrainer


def with_document_weights(dataset: datasets.Dataset) -> datasets.Dataset:
    """Windowed data: the document columns replaced by each window's weight (document_weights)."""
    if DOCUMENT_COLUMN not in dataset.column_names:
        return dataset
    weights = document_weights(document_ids(dataset))
    return dataset.remove_columns(list(WINDOW_COLUMNS)).add_column(WEIGHT_COLUMN, weights.tolist())


def build_trainer(model: Any, tokenizer: Any, tokenized: datasets.DatasetDict, params: TrainParams, seed: int,
                  output_dir: Path, hardware: Hardware):
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback

    features = tokenized["train"].features
    multi_label = task_of(features) == MULTI_LABEL
    windows = DOCUMENT_COLUMN in tokenized["train"].column_names
    weights = class_weights(first_windows(tokenized["train"])) if params.class_weights == "balanced" else None
    if weights is not None:
        log.info("class weights (%s): %s", params.class_weights,
                 readable(dict(zip(label_names(features), np.round(weights, 3).tolist(), strict=True))))
    metrics = (document_metrics(document_ids(tokenized["validation"]), multi_label) if windows
               else compute_multi_label_metrics if multi_label else compute_metrics)
    trainer = checked_trainer_class()(
        model=model,
        args=training_arguments(params, seed, output_dir, hardware, windows),
        train_dataset=with_document_weights(tokenized["train"]),
        eval_dataset=with_document_weights(tokenized["validation"]),
        processing_class=tokenizer,
        # pad each batch to its longest text only
        data_collator=(MultiHotCollator(tokenizer, len(label_names(features))) if multi_label
                       else DataCollatorWithPadding(tokenizer)),
        compute_metrics=metrics,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=params.early_stopping_patience),
                   epoch_progress(params.epochs)],
    )
    if weights is not None or windows or multi_label:
        # the model's own loss has no class or row weights, and for label sets ignores gradient accumulation
        trainer.batch_loss, trainer.loss_is_scaled_for_ga = BatchLoss(weights, multi_label), False
    quiet_log_dicts(trainer)
    return trainer


def quiet_log_dicts(trainer: Any) -> None:
    """Keep the Trainer's progress bar but not the dict it prints under it at every log (``{'loss': ...}``):
    epoch_progress says the same in one line."""
    from transformers.trainer_callback import ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            return None

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarOnly())


def epoch_progress(planned_epochs: int) -> Any:
    """A Trainer callback that says, once per epoch, how training goes: a progress line, which search and seeds
    pass on from their experiments."""
    from transformers import TrainerCallback

    class EpochProgress(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if not state.is_world_process_zero or not metrics:
                return
            figures = {"validation loss": validation_loss(metrics)}
            for key in ("eval_accuracy", "eval_f1_macro"):
                if key in metrics:
                    figures[key.removeprefix("eval_").replace("_", " ")] = metrics[key]
                    break
            train_loss = next((entry["loss"] for entry in reversed(state.log_history) if "loss" in entry), None)
            if train_loss is not None:
                figures["train loss"] = train_loss
            progress(f"epoch {round(state.epoch or 0)}/{planned_epochs}: {readable(figures)}")

    return EpochProgress()


def train(trainer: Any, run_dir: Path) -> Any:
    """Train, resuming from the newest complete checkpoint in ``run_dir`` if there is one."""
    checkpoint = last_complete_checkpoint(run_dir)
    if checkpoint is not None:
        log.info("resuming from %s", checkpoint)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return trainer.model


def validation_loss(metrics: dict[str, Any]) -> float | None:
    """The validation loss that picks the best epoch: of the documents' logits for windowed data, else the
    Trainer's."""
    return metrics.get(f"eval_{DOCUMENT_LOSS}", metrics.get("eval_loss"))


def epoch_history(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """One row per epoch from the Trainer's log: losses and validation metrics, no timings. Windows: eval/loss
    is the documents' loss (validation_loss), the one that picks the best epoch."""
    rows: dict[int, dict[str, float]] = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        row = rows.setdefault(round(entry["epoch"]), {})
        for key, name in HISTORY_KEYS.items():
            if key in entry:
                row[name] = float(entry[key])
        if f"eval_{DOCUMENT_LOSS}" in entry:
            row["eval/loss"] = float(validation_loss(entry))
    return [{"epoch": float(epoch), **rows[epoch]} for epoch in sorted(rows) if len(rows[epoch]) > 0]


def training_summary(history: list[dict[str, float]], planned_epochs: int) -> dict[str, Any]:
    """The best epoch (lowest validation loss), whether early stopping fired (training ended before its
    last planned epoch) and whether it overfitted (validation loss rose while training loss fell)."""
    losses = [row.get("eval/loss", float("inf")) for row in history]
    best = history[int(np.argmin(losses))] if history else {}
    overfitting = any(after.get("eval/loss", 0) > before.get("eval/loss", 0)
                      and after.get("train/loss", 0) < before.get("train/loss", 0)
                      for before, after in pairwise(history))
    return {"best_epoch": int(best.get("epoch", 0)), "best_eval_loss": best.get("eval/loss"),
            "epochs_run": len(history), "early_stopped": len(history) < planned_epochs, "overfitting": overfitting}


def write_history(history: list[dict[str, float]], summary: dict[str, Any], folder: Path) -> None:
    """Learning curves in dvclive's layout (plots/metrics/*.tsv) and metrics.json with ``summary`` and the
    best epoch's figures (those of the model training keeps), byte-stable across reruns (no timings)."""
    from dvclive import Live

    shutil.rmtree(folder / "plots", ignore_errors=True)
    # dvcyaml=False and save_dvc_exp=False: dvclive must not edit dvc.yaml or create experiments.
    with Live(str(folder), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for row in history:
            live.step = int(row["epoch"])  # the step axis is the epoch, so curves align on it
            for name, value in row.items():
                if name != "epoch":
                    live.log_metric(name, value)
        # The headline train and eval figures are the kept model's (the best epoch's), not the last epoch's.
        for row in history:
            if int(row["epoch"]) == summary["best_epoch"]:
                for name, value in row.items():
                    section, _, metric = name.partition("/")
                    if metric:
                        live.summary.setdefault(section, {})[metric] = value
        live.summary.update(summary)
        live.make_summary()


class DiskFullError(UserError, OSError):
    """No space was left to save the model."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without OSError's "[Errno 28]"


def save_model(model: Any, tokenizer: Any, folder: Path) -> None:
    """Model and tokenizer together, safetensors only; a disk-full failure leaves no half-written folder."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        model.save_pretrained(str(folder), safe_serialization=True)
        save_tokenizer(tokenizer, folder)
    except Exception as err:
        # safetensors reports a full disk as its own error type, not as an OSError with errno set
        if getattr(err, "errno", None) != errno.ENOSPC and "No space left on device" not in str(err):
            raise
        shutil.rmtree(folder, ignore_errors=True)
        raise DiskFullError(errno.ENOSPC, f"no space left on the device holding {folder} while saving the model; "
                            f"free some space and run `dvc repro` again. The previous model is still in DVC's "
                            f"cache: `dvc checkout {folder}` brings it back") from err
