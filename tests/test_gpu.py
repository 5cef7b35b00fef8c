"""On a CUDA GPU: a tiny model trains with mixed precision and predicts on the GPU like on the CPU.

Skipped without CUDA (the CI machine has none); run on a GPU machine with ``pytest -m gpu``.
"""

import datasets
import numpy as np
import pytest
import torch

from finetune.core.params import TrainParams
from finetune.data.tokenization import tokenize_dataset
from finetune.export.model_folder import export_model
from finetune.serving.torch_predictor import TorchPredictor
from finetune.training.models import load_classifier, load_tokenizer
from finetune.training.trainer import build_trainer, detect_hardware, save_model, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available())")]

TEXTS = {"neg": ["awful", "boring and slow", "a waste of time", "terrible acting", "dull plot", "I hated it"],
         "pos": ["wonderful", "great fun", "a delight to watch", "superb acting", "lovely story", "I loved it"]}


def test_a_tiny_model_trains_in_mixed_precision_and_predicts_on_the_gpu(tiny_model, tmp_path):
    from transformers import set_seed

    hardware = detect_hardware()
    assert hardware.device == "cuda" and (hardware.bf16 or hardware.fp16), hardware.describe()
    names = list(TEXTS)
    rows = [(text, names.index(label)) for label, texts in TEXTS.items() for text in texts]
    data = datasets.Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]},
                                      features=datasets.Features({"text": datasets.Value("string"),
                                                                  "label": datasets.ClassLabel(names=names)}))
    tokenizer = load_tokenizer(str(tiny_model))
    tokenized = tokenize_dataset(datasets.DatasetDict(train=data, validation=data), tokenizer, 16, "head")
    set_seed(7)
    model = load_classifier(str(tiny_model), names)
    params = TrainParams(learning_rate=1e-3, batch_size=4, epochs=2)
    trainer = build_trainer(model, tokenizer, tokenized, params, 7, tmp_path / "run", hardware)
    trained = train(trainer, tmp_path / "run")
    assert next(trained.parameters()).device.type == "cuda"
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert losses and all(np.isfinite(losses))
    save_model(trained, tokenizer, tmp_path / "model")
    export_model(tmp_path / "model", tmp_path / "export", 1.0, {"finetune_max_length": 16})

    texts = [t for t, _ in rows]
    cpu = TorchPredictor(tmp_path / "export")
    gpu = TorchPredictor(tmp_path / "export")
    gpu.model.to("cuda")
    assert next(gpu.model.parameters()).device.type == "cuda"
    assert np.abs(gpu.logits(texts) - cpu.logits(texts)).max() < 1e-2  # TF32 matmuls on the GPU
    assert [p.predicted for p in gpu.predict(texts)] == [p.predicted for p in cpu.predict(texts)]
    bf16 = TorchPredictor(tmp_path / "export", precision="bf16")
    bf16.model.to("cuda")
    assert np.abs(bf16.logits(texts) - cpu.logits(texts)).max() < 0.1
