"""train: fine-tune the classifier with the Hugging Face Trainer.

Reads: paths.tokenized (windowed data: each window weighs 1/its document's window count, and the best epoch is
picked by the documents' validation loss); params model.name, train.* (train.seed: head, shuffling, dropout).
Writes: paths.model (best model by validation loss + tokenizer, safetensors; with train.adapter lora, the adapters
merged into it), paths.adapter (the LoRA adapter and head alone, or a note that there is none),
paths.training_log (per-epoch learning curves in dvclive's layout; metrics.json with the
best epoch and the early-stopping and overfitting flags) and paths.learning_curves (PNG).
Checkpoints go to paths.checkpoints/<run key> (not a DVC output) so an interrupted
run resumes; they are removed once training succeeds. With train.num_processes > 1 the
stage starts itself again under torchrun (data-parallel); process 0 writes the outputs.
"""

import shutil
import subprocess
from pathlib import Path

import datasets

from finetune.core import figures
from finetune.core.params import stage_params
from finetune.core.stage import readable, run, setup
from finetune.data.documents import first_windows
from finetune.data.labels import MULTI_LABEL, label_names, task_of
from finetune.training.adapters import add_lora, merged, parameter_counts, save_adapter
from finetune.training.models import align_pad_id, check_head, load_classifier, load_tokenizer, resolve_model
from finetune.training.trainer import (
    build_trainer,
    check_processes,
    checkpoint_dir,
    cuda_device_count,
    detect_hardware,
    epoch_history,
    launched_by_torchrun,
    save_model,
    start_from_label_priors,
    torchrun_command,
    train,
    training_summary,
    write_history,
)


def main() -> None:
    log = setup("train")
    params = stage_params("train")
    processes = params.train.num_processes
    check_processes(processes, cuda_device_count())
    if processes > 1 and not launched_by_torchrun():
        raise SystemExit(subprocess.run(torchrun_command(processes, "stages.train"), check=False).returncode)
    model_ref = resolve_model(params.model.name)
    tokenized = datasets.load_from_disk(params.paths.tokenized)
    names, task = label_names(tokenized["train"].features), task_of(tokenized["train"].features)
    check_head(model_ref, names)
    run_dir = checkpoint_dir(Path(params.paths.checkpoints), params.train.seed, params.model.name, params.train,
                             Path(params.paths.tokenized))
    hardware = detect_hardware(params.train.compile, processes, params.train.precision)
    log.info("training %s on %s, %d labels (%s), checkpoints in %s", params.model.name, hardware.describe(),
             len(names), task, run_dir)

    from transformers import set_seed

    set_seed(params.train.seed)  # the new classification head's initial weights follow the seed
    tokenizer = load_tokenizer(model_ref)
    model = load_classifier(model_ref, names, hardware.attention, multi_label=task == MULTI_LABEL)
    align_pad_id(model, tokenizer)
    if task == MULTI_LABEL and start_from_label_priors(model, first_windows(tokenized["train"])):
        log.info("the new head's biases start at each label's log-odds in train")
    if params.train.adapter == "lora":
        model = add_lora(model, params.train)
    trainable, total = parameter_counts(model)
    trainer = build_trainer(model, tokenizer, tokenized, params.train, params.train.seed, run_dir, hardware)
    model = train(trainer, run_dir)
    if not trainer.is_world_process_zero():  # data-parallel: one process writes
        return
    save_adapter(model, Path(params.paths.adapter))
    save_model(merged(model), tokenizer, Path(params.paths.model))
    history = epoch_history(trainer.state.log_history)
    summary = training_summary(history, params.train.epochs) | {
        "trainable_parameters": trainable, "total_parameters": total,
        "effective_batch": params.train.batch_size * params.train.gradient_accumulation_steps * trainer.args.world_size}
    write_history(history, summary, Path(params.paths.training_log))
    figures.learning_curves(history, params.paths.learning_curves)
    shutil.rmtree(run_dir)
    log.info("training done over %d process(es): %s", trainer.args.world_size, readable(summary))


if __name__ == "__main__":
    run(main)
