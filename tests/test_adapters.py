"""LoRA adapters (train.adapter: lora): only the adapters and the head train; checkpoints resume to the same
adapter; the adapter reloads onto its base to the merged model's logits; what cannot work fails before any stage."""

from __future__ import annotations

import shutil

import datasets
import numpy as np
import pytest
import torch

from finetune.core.params import LoraParams, TrainParams
from finetune.data.tokenization import tokenize_dataset
from finetune.training.adapters import (
    AdapterError,
    add_lora,
    check_lora,
    head_modules,
    merged,
    parameter_counts,
    save_adapter,
    with_adapter,
)
from finetune.training.models import (
    ModelSourceError,
    align_pad_id,
    check_gradient_checkpointing,
    load_classifier,
    load_tokenizer,
    model_structure,
)
from finetune.training.texts import text_logits
from finetune.training.trainer import Hardware, build_trainer, save_model, train
from tests.backbones import make_backbone

TEXTS = {0: ["a dull film", "boring and long", "not good at all", "an awful plot", "too slow", "bad acting"],
         1: ["a fine film", "great and moving", "very good indeed", "a funny story", "moving acting", "great fun"]}
LORA = TrainParams(adapter="lora", learning_rate=1e-2, batch_size=4, epochs=2, lora=LoraParams(rank=4, alpha=8))


def tokenized(tokenizer) -> datasets.DatasetDict:
    rows = [(text, label) for label, texts in TEXTS.items() for text in texts]
    data = datasets.Dataset.from_dict({"text": [t for t, _ in rows], "label": [label for _, label in rows]},
                                      features=datasets.Features({"text": datasets.Value("string"),
                                                                  "label": datasets.ClassLabel(names=["neg", "pos"])}))
    return tokenize_dataset(datasets.DatasetDict({"train": data, "validation": data}), tokenizer, 16, "head", cores=1)


def fit(base, run_dir, params=LORA):
    from transformers import set_seed

    set_seed(7)
    tokenizer = load_tokenizer(str(base))
    model = load_classifier(str(base), ["neg", "pos"])
    align_pad_id(model, tokenizer)
    model = add_lora(model, params)
    trainer = build_trainer(model, tokenizer, tokenized(tokenizer), params, 7, run_dir, Hardware("cpu"))
    return trainer, train(trainer, run_dir), tokenizer


def logits_of(model, tokenizer) -> np.ndarray:
    return text_logits(model, tokenizer, [text for texts in TEXTS.values() for text in texts], 16, "head", 4)


def test_lora_trains_adapters_and_head_resumes_and_reloads_to_the_merged_logits(tiny_model, tmp_path):
    base_head = load_classifier(str(tiny_model)).classifier.weight.detach().clone()
    trainer, model, tokenizer = fit(tiny_model, tmp_path / "run")
    trainable, total = parameter_counts(model)
    assert 0 < trainable < total / 10  # the adapters and the head only
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint-3", "checkpoint-6"]
    assert (tmp_path / "run" / "checkpoint-3" / "adapter_model.safetensors").is_file()
    save_adapter(model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size < 200_000  # small beside the model
    plain = merged(model)
    assert not hasattr(plain, "peft_config") and not (plain.classifier.weight == base_head).all()  # the head trained
    save_model(plain, tokenizer, tmp_path / "model")
    trained = load_classifier(str(tmp_path / "model"))
    reloaded = with_adapter(str(tiny_model), tmp_path / "adapter", trained.config)
    assert np.allclose(logits_of(reloaded, tokenizer), logits_of(trained, tokenizer), atol=1e-5)

    # An interrupted run that kept only its first epoch's checkpoint resumes to the same adapter.
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "run" / "checkpoint-3", tmp_path / "resumed" / "checkpoint-3")
    trainer, again, _ = fit(tiny_model, tmp_path / "resumed")
    assert trainer.state.global_step == 6
    assert np.allclose(logits_of(merged(again), tokenizer), logits_of(trained, tokenizer), atol=1e-6)


@pytest.mark.parametrize("family", ["distilbert", "qwen2"])
def test_a_head_of_any_name_trains_in_full_and_comes_back_with_the_adapter(family, tmp_path):
    """DistilBERT's head is two layers (pre_classifier, classifier), Qwen's is `score`: each is saved with the
    adapter, so the base with the adapter gives the merged model's logits, not a random head's."""
    base = make_backbone(family, tmp_path / "base")
    model = load_classifier(str(base), ["neg", "pos"])
    assert set(head_modules(model)) == ({"pre_classifier", "classifier"} if family == "distilbert" else {"score"})
    _, trained, tokenizer = fit(base, tmp_path / "run", LORA.model_copy(update={"epochs": 1}))
    save_adapter(trained, tmp_path / "adapter")
    plain = merged(trained)
    reloaded = with_adapter(str(base), tmp_path / "adapter", plain.config)
    assert np.allclose(logits_of(reloaded, tokenizer), logits_of(plain, tokenizer), atol=1e-5)
    untrained = load_classifier(str(base), ["neg", "pos"])
    align_pad_id(untrained, tokenizer)
    assert not np.allclose(logits_of(untrained, tokenizer), logits_of(plain, tokenizer), atol=1e-3)


def test_what_lora_and_checkpointing_cannot_do_fails_before_any_stage(tiny_model):
    structure = model_structure(str(tiny_model))  # the meta device: no weight is read
    assert structure.classifier.weight.device.type == "meta"
    check_lora(structure, LORA)
    check_lora(structure, LORA.model_copy(update={"lora": LoraParams(target_modules="all-linear")}))
    with pytest.raises(AdapterError, match=r"train.lora.target_modules: BertForSequenceClassification has no layer "
                                           r"named 'q_proj'.*its linear layers: dense, key, query, value\), or"):
        check_lora(structure, LORA.model_copy(update={"lora": LoraParams(target_modules=["q_proj"])}))
    check_gradient_checkpointing(structure, True)

    class Headless(torch.nn.Module):  # a classifier whose head has no name this project knows
        base_model_prefix = "body"
        supports_gradient_checkpointing = False

        def __init__(self) -> None:
            super().__init__()
            self.body, self.projection = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)

    with pytest.raises(ModelSourceError, match=r"train.adapter: lora trains the classification head in full, and "
                                               r"Headless has none named classifier or score"):
        head_modules(Headless())
    with pytest.raises(ModelSourceError, match=r"train.gradient_checkpointing: Headless does not support it"):
        check_gradient_checkpointing(Headless(), True)
    with pytest.raises(ValueError, match="rank"):
        LoraParams(rank=0)


@pytest.mark.parametrize("adapter", ["none", "lora"])
def test_gradient_checkpointing_and_accumulation_train_with_and_without_adapters(adapter, tiny_model, tmp_path):
    """The memory knobs: activations recomputed in the backward pass (with frozen embeddings under LoRA too), and
    two steps' gradients per update: 12 texts at batch 4 make 3 steps and 2 updates an epoch."""
    params = LORA.model_copy(update={"adapter": adapter, "epochs": 1, "gradient_checkpointing": True,
                                     "gradient_accumulation_steps": 2})
    tokenizer = load_tokenizer(str(tiny_model))
    model = load_classifier(str(tiny_model), ["neg", "pos"])
    model = add_lora(model, params) if adapter == "lora" else model
    trainer = build_trainer(model, tokenizer, tokenized(tokenizer), params, 7, tmp_path / "run", Hardware("cpu"))
    assert trainer.args.activation_checkpointing and trainer.args.gradient_accumulation_steps == 2
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    train(trainer, tmp_path / "run")
    assert trainer.state.global_step == 2
    assert any(not torch.equal(before[name], p) for name, p in model.named_parameters() if name in before)


def test_lora_at_a_full_fine_tunes_learning_rate_is_warned(tiny_model, caplog):
    model = load_classifier(str(tiny_model), ["neg", "pos"])
    with caplog.at_level("WARNING"):
        add_lora(model, LORA.model_copy(update={"learning_rate": 2e-5}))
    assert "train.learning_rate 2e-05 is a full fine-tune's rate" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        add_lora(load_classifier(str(tiny_model), ["neg", "pos"]), LORA)
    assert "learning_rate" not in caplog.text
