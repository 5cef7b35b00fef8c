"""Training with a tiny randomly initialised model: the Trainer set-up, history, checkpoints and resume."""

import json
import shutil

import datasets
import pytest
from safetensors.torch import load_file

from finetune.core.params import TrainParams
from finetune.data.tokenization import tokenize_dataset
from finetune.training.models import load_classifier, load_tokenizer
from finetune.training.trainer import (
    Hardware,
    HardwareError,
    NonFiniteLossError,
    build_trainer,
    epoch_history,
    last_complete_checkpoint,
    pick_hardware,
    save_model,
    train,
    training_summary,
    write_history,
)

TEXTS = {0: ["awful", "boring and slow", "a waste of time", "terrible acting", "dull plot", "I hated it"],
         1: ["wonderful", "great fun", "a delight to watch", "superb acting", "lovely story", "I loved it"]}


def test_cpu_gets_none_of_the_gpu_settings():
    cpu = pick_hardware(cuda_available=False, bf16_supported=False, ampere_or_newer=True, cpu_count=16)
    assert cpu == Hardware("cpu") and cpu.describe() == "cpu, fp32"
    assert pick_hardware(cuda_available=False, compile=True) == Hardware("cpu", compile=True)  # opt-in applies


def test_auto_precision_is_fp32_on_a_cpu_and_mixed_on_a_gpu():
    assert pick_hardware(cuda_available=False, bf16_supported=True) == Hardware("cpu")
    assert pick_hardware(cuda_available=True, bf16_supported=True).describe() == "cuda, bf16"
    assert pick_hardware(cuda_available=True, bf16_supported=False).describe() == "cuda, fp16"


def test_a_named_precision_is_kept_or_refused_never_changed(caplog):
    assert pick_hardware(False, bf16_supported=True, precision="bf16") == Hardware("cpu", bf16=True)
    assert "no bfloat16 instructions" not in caplog.text  # the CPU computes in bf16: nothing to say
    assert pick_hardware(False, bf16_supported=False, precision="bf16").describe() == "cpu, bf16"
    assert "no bfloat16 instructions" in caplog.text  # allowed, but said to be slow
    gpu = pick_hardware(True, bf16_supported=True, ampere_or_newer=True, precision="fp16")
    assert (gpu.bf16, gpu.fp16, gpu.tf32) == (False, True, True)
    fp32_gpu = pick_hardware(True, bf16_supported=True, precision="fp32")
    assert not fp32_gpu.bf16 and not fp32_gpu.fp16
    with pytest.raises(HardwareError, match=r"fp16, which needs a GPU.*auto, bf16 or fp32"):
        pick_hardware(False, bf16_supported=True, precision="fp16")
    with pytest.raises(HardwareError, match=r"does not compute in bfloat16.*fp16 or fp32"):
        pick_hardware(True, bf16_supported=False, precision="bf16")


def test_a_recent_gpu_gets_bf16_tf32_sdpa_fused_adamw_and_pinned_workers():
    gpu = pick_hardware(cuda_available=True, bf16_supported=True, ampere_or_newer=True, cpu_count=16)
    assert (gpu.bf16, gpu.fp16, gpu.tf32) == (True, False, True)
    assert (gpu.attention, gpu.optimizer, gpu.pin_memory, gpu.compile) == ("sdpa", "adamw_torch_fused", True, False)
    assert gpu.dataloader_workers == 4 and gpu.describe() == "cuda, bf16, tf32"


def test_an_older_gpu_gets_fp16_without_tf32():
    gpu = pick_hardware(cuda_available=True, bf16_supported=False, ampere_or_newer=False, cpu_count=4)
    assert (gpu.bf16, gpu.fp16, gpu.tf32) == (False, True, False)


def test_loader_workers_share_the_cores_between_processes():
    assert pick_hardware(True, True, True, cpu_count=16, processes=8).dataloader_workers == 1
    assert pick_hardware(True, True, True, cpu_count=32, processes=4).dataloader_workers == 4
    assert pick_hardware(True, True, True, cpu_count=2).dataloader_workers == 1


def test_training_arguments_carry_the_hardware_choice(tmp_path):
    from finetune.training.trainer import training_arguments

    args = training_arguments(TrainParams(), 1, tmp_path, Hardware("cpu"))
    assert (args.optim.value, args.dataloader_num_workers, args.torch_compile, args.ddp_backend) == \
        ("adamw_torch_fused", 0, False, None)
    assert args.train_sampling_strategy == "group_by_length" and not args.bf16 and not args.fp16


def test_more_processes_than_gpus_fail_before_training():
    from finetune.training.trainer import HardwareError, check_processes, torchrun_command

    check_processes(4, cuda_devices=4)
    check_processes(2, cuda_devices=0)  # on CPUs, gloo runs any number of processes
    with pytest.raises(HardwareError, match=r"train\.num_processes is 8 but this machine has 4 GPUs"):
        check_processes(8, cuda_devices=4)
    assert torchrun_command(2, "stages.train")[1:] == ["-m", "torch.distributed.run", "--standalone",
                                                       "--nproc-per-node=2", "-m", "stages.train"]


def test_epoch_history_keeps_losses_and_metrics_without_timings():
    log = [{"loss": 0.7, "grad_norm": 1.0, "learning_rate": 1e-5, "epoch": 1.0, "step": 4},
           {"eval_loss": 0.6, "eval_accuracy": 0.5, "eval_f1_macro": 0.4, "eval_runtime": 0.1, "epoch": 1.0},
           {"loss": 0.5, "learning_rate": 0.0, "epoch": 2.0},
           {"eval_loss": 0.55, "eval_accuracy": 0.75, "eval_f1_macro": 0.7, "epoch": 2.0},
           {"train_runtime": 3.0, "train_samples_per_second": 9.0, "epoch": 2.0}]
    history = epoch_history(log)
    assert history == [
        {"epoch": 1.0, "train/loss": 0.7, "train/learning_rate": 1e-5, "eval/loss": 0.6, "eval/accuracy": 0.5,
         "eval/f1_macro": 0.4},
        {"epoch": 2.0, "train/loss": 0.5, "train/learning_rate": 0.0, "eval/loss": 0.55, "eval/accuracy": 0.75,
         "eval/f1_macro": 0.7}]


def test_history_files_are_byte_identical_across_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # dvclive inspects the repository around the working directory
    history = [{"epoch": 1.0, "train/loss": 0.7, "eval/loss": 0.6}, {"epoch": 2.0, "train/loss": 0.5, "eval/loss": 0.5}]
    summary = training_summary(history, planned_epochs=2)
    write_history(history, summary, tmp_path / "a")
    write_history(history, summary, tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert {str(f) for f in files} >= {"metrics.json", "plots/metrics/train/loss.tsv", "plots/metrics/eval/loss.tsv"}
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/plots/metrics/eval/loss.tsv").read_text() == "step\tloss\n1\t0.6\n2\t0.5\n"
    written = json.loads((tmp_path / "a/metrics.json").read_text())
    assert written["best_epoch"] == 2 and written["early_stopped"] is False and written["step"] == 2


def test_the_summary_gives_the_kept_epochs_figures_not_the_last_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    history = [{"epoch": 1.0, "train/loss": 0.7, "eval/loss": 0.5, "eval/accuracy": 0.8},
               {"epoch": 2.0, "train/loss": 0.4, "eval/loss": 0.6, "eval/accuracy": 0.7}]  # overfits: epoch 1 kept
    write_history(history, training_summary(history, planned_epochs=2), tmp_path / "a")
    written = json.loads((tmp_path / "a/metrics.json").read_text())
    assert written["best_epoch"] == 1 and written["eval"] == {"loss": 0.5, "accuracy": 0.8}
    assert written["train"]["loss"] == 0.7


def test_training_summary_flags():
    falling = [{"epoch": 1.0, "train/loss": 0.7, "eval/loss": 0.6}, {"epoch": 2.0, "train/loss": 0.5, "eval/loss": 0.5}]
    assert training_summary(falling, 3) == {"best_epoch": 2, "best_eval_loss": 0.5, "epochs_run": 2,
                                            "early_stopped": True, "overfitting": False}
    rising = [*falling, {"epoch": 3.0, "train/loss": 0.3, "eval/loss": 0.55}]
    assert training_summary(rising, 3)["overfitting"] and not training_summary(rising, 3)["early_stopped"]


def test_incomplete_checkpoints_are_skipped(tmp_path):
    for step in (4, 8, 12):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in ("trainer_state.json", "model.safetensors", "optimizer.pt", "scheduler.pt"):
            (folder / name).write_text("x")
    (tmp_path / "checkpoint-12" / "optimizer.pt").unlink()  # killed while saving
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-8"
    assert last_complete_checkpoint(tmp_path / "absent") is None


@pytest.fixture(scope="module")
def tiny_data(tiny_model):
    rows = [(t, label) for label, texts in TEXTS.items() for t in texts]
    data = datasets.Dataset.from_dict({"text": [t for t, _ in rows], "label": [label for _, label in rows]},
                                      features=datasets.Features({"text": datasets.Value("string"),
                                                                  "label": datasets.ClassLabel(names=["neg", "pos"])}))
    splits = datasets.DatasetDict({"train": data, "validation": data})
    return tokenize_dataset(splits, load_tokenizer(str(tiny_model)), 16, "head")


def fit(tiny_model, tiny_data, run_dir, epochs=2, patience=2):
    from transformers import set_seed

    set_seed(7)
    tokenizer = load_tokenizer(str(tiny_model))
    model = load_classifier(str(tiny_model), ["neg", "pos"])
    params = TrainParams(learning_rate=1e-3, batch_size=4, epochs=epochs, early_stopping_patience=patience)
    trainer = build_trainer(model, tokenizer, tiny_data, params, 7, run_dir, Hardware("cpu"))
    return trainer, train(trainer, run_dir), tokenizer


def test_training_checkpoints_each_epoch_and_resumes_to_the_same_model(tiny_model, tiny_data, tmp_path):
    trainer, model, tokenizer = fit(tiny_model, tiny_data, tmp_path / "run")
    history = epoch_history(trainer.state.log_history)
    assert [row["epoch"] for row in history] == [1.0, 2.0]
    assert all({"train/loss", "eval/loss", "eval/accuracy"} <= set(row) for row in history)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint-3", "checkpoint-6"]
    save_model(model, tokenizer, tmp_path / "full")

    # An interrupted run: only the first epoch's checkpoint survived. Resuming must end at the same weights.
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "run" / "checkpoint-3", tmp_path / "resumed" / "checkpoint-3")
    trainer, model, tokenizer = fit(tiny_model, tiny_data, tmp_path / "resumed")
    assert trainer.state.global_step == 6
    save_model(model, tokenizer, tmp_path / "again")
    full, again = load_file(tmp_path / "full/model.safetensors"), load_file(tmp_path / "again/model.safetensors")
    assert all((full[k] == again[k]).all() for k in full)
    assert (tmp_path / "full/model.safetensors").read_bytes() == (tmp_path / "again/model.safetensors").read_bytes()
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["config.json", "model.safetensors",
                                                                       "tokenizer.json", "tokenizer_config.json"]

    # A run that failed after its last epoch (say, while saving) resumes from the final checkpoint: same files.
    _, model, tokenizer = fit(tiny_model, tiny_data, tmp_path / "run")
    save_model(model, tokenizer, tmp_path / "from-final")
    for name in ["config.json", "model.safetensors"]:
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "from-final" / name).read_bytes(), name


def test_early_stopping_fires_when_validation_loss_keeps_rising(tiny_model, tiny_data, tmp_path):
    # Validation labels flipped: the better the model fits train, the worse validation gets.
    flipped = tiny_data["validation"].map(lambda row: {"label": 1 - row["label"]})
    data = datasets.DatasetDict({"train": tiny_data["train"], "validation": flipped})
    trainer, _, _ = fit(tiny_model, data, tmp_path / "run", epochs=8, patience=2)
    summary = training_summary(epoch_history(trainer.state.log_history), planned_epochs=8)
    assert summary["early_stopped"] and summary["epochs_run"] == summary["best_epoch"] + 2
    assert summary["overfitting"]


def test_non_finite_loss_stops_training_at_once(tiny_model, tiny_data, tmp_path):
    import torch
    from transformers import set_seed

    set_seed(7)
    model = load_classifier(str(tiny_model), ["neg", "pos"])
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))  # corrupted weights: every loss is NaN
    params = TrainParams(learning_rate=1e-3, batch_size=4, epochs=2)
    trainer = build_trainer(model, load_tokenizer(str(tiny_model)), tiny_data, params, 7, tmp_path / "run",
                            Hardware("cpu"))
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 1 .*train.learning_rate"):
        train(trainer, tmp_path / "run")
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir())  # no checkpoint written
