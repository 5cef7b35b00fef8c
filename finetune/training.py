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
import shutil
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from finetune.params import TrainParams

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
# Files the Trainer writes last into a checkpoint; without them a checkpoint is incomplete.
CHECKPOINT_FILES = ("trainer_state.json", "model.safetensors", "optimizer.pt", "scheduler.pt")
HISTORY_KEYS = {"loss": "train/loss", "eval_loss": "eval/loss", "eval_accuracy": "eval/accuracy",
                "eval_f1_macro": "eval/f1_macro", "learning_rate": "train/learning_rate"}


@dataclass(frozen=True)
class Hardware:
    """What the train stage runs on, chosen without user settings."""

    device: str
    bf16: bool = False
    fp16: bool = False


def pick_hardware(cuda_available: bool, bf16_supported: bool) -> Hardware:
    """Mixed precision on a GPU (bf16 where the GPU has it, else fp16); full precision on the CPU."""
    if not cuda_available:
        return Hardware("cpu")
    return Hardware("cuda", bf16=bf16_supported, fp16=not bf16_supported)


def detect_hardware() -> Hardware:
    import torch

    cuda = torch.cuda.is_available()
    return pick_hardware(cuda, cuda and torch.cuda.is_bf16_supported())


def checkpoint_dir(base: Path, seed: int, model_name: str, params: TrainParams, tokenized: Path) -> Path:
    """Where this run's checkpoints go: keyed by a hash of everything that determines the run,
    so a resumed run never picks up checkpoints of other params or data."""
    material = {"seed": seed, "model": model_name, "train": params.model_dump(), "data": folder_digest(tokenized)}
    return base / hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def folder_digest(folder: Path) -> str:
    """Hash of every file's relative path and bytes under ``folder`` (content, never file times)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose files are all there (a run killed mid-save leaves a partial one)."""
    if not run_dir.is_dir():
        return None
    steps = {int(p.name.removeprefix(CHECKPOINT_PREFIX)): p for p in run_dir.glob(f"{CHECKPOINT_PREFIX}*")
             if p.is_dir() and p.name.removeprefix(CHECKPOINT_PREFIX).isdigit()}
    for checkpoint in (steps[step] for step in sorted(steps, reverse=True)):
        if all((checkpoint / name).is_file() and (checkpoint / name).stat().st_size > 0 for name in CHECKPOINT_FILES):
            return checkpoint
        log.warning("skipping incomplete checkpoint %s", checkpoint)
    return None


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """Validation accuracy and macro F1, logged each epoch."""
    logits, labels = eval_pred
    predictions = np.asarray(logits).argmax(axis=-1)
    return {"accuracy": float(accuracy_score(labels, predictions)),
            "f1_macro": float(f1_score(labels, predictions, average="macro"))}


def training_arguments(params: TrainParams, seed: int, output_dir: Path, hardware: Hardware):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=params.learning_rate,
        per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=params.eval_batch_size,
        num_train_epochs=params.epochs,
        weight_decay=params.weight_decay,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        save_total_limit=2,  # the best and the newest: enough to resume and to pick the best
        train_sampling_strategy="group_by_length",  # similar lengths per batch: little padding
        seed=seed,
        data_seed=seed,
        bf16=hardware.bf16,
        fp16=hardware.fp16,
        use_cpu=hardware.device == "cpu",
        report_to="none",  # curves are written from the Trainer's log by write_history
        disable_tqdm=False,
    )


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training stops before anything is saved."""


def checked_trainer_class():
    """The Trainer, checking every step's loss (its logs hide NaN losses: logging_nan_inf_filter)."""
    import torch
    from transformers import Trainer

    class CheckedTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            if not torch.isfinite(loss).all():
                raise NonFiniteLossError(
                    f"the training loss became {loss.item()} at step {self.state.global_step + 1} "
                    f"(epoch {self.state.epoch or 0:.2f}); training stopped and nothing was saved. Lower "
                    "train.learning_rate, or check the model weights and the data")
            return loss

    return CheckedTrainer


def build_trainer(model: Any, tokenizer: Any, tokenized: datasets.DatasetDict, params: TrainParams, seed: int,
                  output_dir: Path, hardware: Hardware):
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback

    return checked_trainer_class()(
        model=model,
        args=training_arguments(params, seed, output_dir, hardware),
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),  # pad each batch to its longest text only
        compute_metrics=compute_metrics,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=params.early_stopping_patience)],
    )


def train(trainer: Any, run_dir: Path) -> Any:
    """Train, resuming from the newest complete checkpoint in ``run_dir`` if there is one."""
    checkpoint = last_complete_checkpoint(run_dir)
    if checkpoint is not None:
        log.info("resuming from %s", checkpoint)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return trainer.model


def epoch_history(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """One row per epoch from the Trainer's log: losses and validation metrics, no timings."""
    rows: dict[int, dict[str, float]] = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        row = rows.setdefault(round(entry["epoch"]), {})
        for key, name in HISTORY_KEYS.items():
            if key in entry:
                row[name] = float(entry[key])
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
    """Learning curves in dvclive's layout (plots/metrics/*.tsv) and metrics.json with ``summary``,
    byte-stable across reruns (no timings)."""
    from dvclive import Live

    shutil.rmtree(folder / "plots", ignore_errors=True)
    # dvcyaml=False and save_dvc_exp=False: dvclive must not edit dvc.yaml or create experiments.
    with Live(str(folder), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for row in history:
            live.step = int(row["epoch"])  # the step axis is the epoch, so curves align on it
            for name, value in row.items():
                if name != "epoch":
                    live.log_metric(name, value)
        live.summary.update(summary)
        live.make_summary()


class DiskFullError(OSError):
    """No space was left to save the model."""


def save_model(model: Any, tokenizer: Any, folder: Path) -> None:
    """Model and tokenizer together, safetensors only; a disk-full failure leaves no half-written folder."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        model.save_pretrained(str(folder), safe_serialization=True)
        tokenizer.save_pretrained(str(folder))
    except Exception as err:
        # safetensors reports a full disk as its own error type, not as an OSError with errno set
        if getattr(err, "errno", None) != errno.ENOSPC and "No space left on device" not in str(err):
            raise
        shutil.rmtree(folder, ignore_errors=True)
        raise DiskFullError(errno.ENOSPC, f"no space left on the device holding {folder} while saving the model; "
                            f"free some space and run `dvc repro` again. The previous model is still in DVC's "
                            f"cache: `dvc checkout {folder}` brings it back") from err
