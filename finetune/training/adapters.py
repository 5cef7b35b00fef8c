"""LoRA adapters with peft: low-rank updates of the backbone's weights, the classification head trained in full.

With ``train.adapter: lora`` the train stage wraps the classifier (add_lora), trains the adapters and the head,
keeps them alone in ``paths.adapter`` (small: what a bigger backbone's run adds to it), and merges them into the
weights (``merge_and_unload``), so that ``paths.model``, and everything that reads it (evaluate, export, ONNX,
``predict``, ``serve``, ``transformers.pipeline``), sees a plain transformers classifier. The export stage checks
the merged model against the base with its adapter on test texts. check_lora refuses, before any stage runs,
target modules the model lacks and a model whose head cannot be found.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from finetune.core.errors import UserError
from finetune.core.params import TrainParams
from finetune.training.models import HEAD_NAMES, ModelSourceError

log = logging.getLogger(__name__)

ADAPTER_NOTE = "adapter.json"  # written to paths.adapter when training fine-tunes every weight (no adapter)
# peft has a default for most model types (the attention's query and value projections); these complete it.
DEFAULT_TARGETS = {"distilbert": ["q_lin", "v_lin"], "modernbert": ["Wqkv"]}
LORA_LOW_LEARNING_RATE = 1e-4  # below it, LoRA learns too slowly in a few epochs (docs/benchmark.md)


class AdapterError(UserError, ValueError):
    """train.adapter or train.lora cannot be used with this model; the message names the key and the fix."""


def default_targets(model_type: str) -> list[str]:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    targets = DEFAULT_TARGETS.get(model_type) or TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if not targets:
        raise AdapterError(f"train.lora.target_modules: auto has no default for {model_type!r} models: name the "
                           "layers to adapt (e.g. the attention's query and value projections), or use all-linear")
    return list(targets)


def head_modules(model: Any) -> list[str]:
    """The classifier's own top-level modules with weights (not the backbone): they train in full and are saved
    with the adapter (peft's modules_to_save), whatever they are named (DistilBERT's pre_classifier and
    classifier, RoBERTa's classifier, Llama's score, XLNet's sequence_summary and logits_proj)."""
    backbone = model.base_model_prefix
    heads = [name for name, module in model.named_children()
             if name != backbone and any(True for _ in module.parameters())]
    if not any(name in HEAD_NAMES for name in heads):
        raise ModelSourceError(f"train.adapter: lora trains the classification head in full, and "
                               f"{type(model).__name__} has none named {' or '.join(HEAD_NAMES)}: use train.adapter: "
                               "none, or a model with a known head")
    return heads


def lora_config(model: Any, params: TrainParams) -> Any:
    """peft's LoraConfig for ``model`` from train.lora, checked against the model's layers."""
    from peft import LoraConfig, TaskType

    settings = params.lora
    targets: str | list[str] = settings.target_modules
    if targets == "auto":
        targets = default_targets(model.config.model_type)
    if isinstance(targets, list):
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [name for name in targets if name not in names]
        if missing:
            raise AdapterError(f"train.lora.target_modules: {type(model).__name__} has no layer named "
                               f"{', '.join(map(repr, missing))}: name layers it has (its linear layers: "
                               f"{', '.join(linear_layer_names(model))}), or use auto or all-linear")
    return LoraConfig(task_type=TaskType.SEQ_CLS, r=settings.rank, lora_alpha=settings.alpha,
                      lora_dropout=settings.dropout, target_modules=targets, modules_to_save=head_modules(model))


def linear_layer_names(model: Any) -> list[str]:
    """The names LoRA can target: the backbone's linear layers, each name once (the head trains in full)."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and name.split(".")[0] == model.base_model_prefix})


def check_lora(model: Any, params: TrainParams) -> None:
    """Everything about train.adapter that can fail, checked on the model's structure (model_structure: no weights
    read) before any stage runs."""
    if params.adapter == "lora":
        lora_config(model, params)


def add_lora(model: Any, params: TrainParams) -> Any:
    """The classifier wrapped with LoRA adapters: only they and the head train."""
    from peft import get_peft_model

    if params.learning_rate < LORA_LOW_LEARNING_RATE:
        log.warning("train.learning_rate %g is a full fine-tune's rate: LoRA adapters usually need 10x to 100x more "
                    "(docs/backbones.md)", params.learning_rate)
    wrapped = get_peft_model(model, lora_config(model, params))
    trainable, total = parameter_counts(wrapped)
    log.info("LoRA (rank %d) on %s: %s of %s parameters train (%.2f%%)", params.lora.rank,
             ", ".join(sorted(wrapped.peft_config["default"].target_modules)), f"{trainable:,}", f"{total:,}",
             100 * trainable / total)
    return wrapped


def parameter_counts(model: Any) -> tuple[int, int]:
    """Trainable and total parameters."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def save_adapter(model: Any, folder: Path) -> None:
    """The adapter and the head alone (peft's format), or, for a full fine-tune, a note saying there is none."""
    import shutil

    from finetune.core.files import write_json

    shutil.rmtree(folder, ignore_errors=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(str(folder), safe_serialization=True)
    else:
        write_json({"adapter": "none", "note": "train.adapter is none: every weight was fine-tuned; the model is "
                    "the whole of paths.model"}, folder / ADAPTER_NOTE)


def merged(model: Any) -> Any:
    """A plain transformers classifier: the adapters merged into the weights they adapt (a model without adapters
    comes back as it is)."""
    return model.merge_and_unload() if hasattr(model, "peft_config") else model


def with_adapter(base: str, folder: Path, config: Any) -> Any:
    """The base classifier with the adapter of ``folder``, unmerged, shaped like the trained model of ``config``
    (its labels, task and pad id): what the merged model is checked against."""
    from peft import PeftModel

    from finetune.training.models import load_classifier

    names = [config.id2label[i] for i in range(config.num_labels)]
    model = load_classifier(base, names, multi_label=config.problem_type == "multi_label_classification")
    model.config.pad_token_id = config.pad_token_id
    return PeftModel.from_pretrained(model, str(folder)).eval()
