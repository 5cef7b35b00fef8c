"""Batched forward passes with PyTorch: class logits for tokenized examples."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import DataCollatorWithPadding

from finetune.core.contract import check_precision, length_batches


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX); without them torch emulates bf16,
    many times slower than fp32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def emulated_bf16_warning(setting: str) -> str:
    """What to say when ``setting`` asks for bf16 on a CPU that cannot compute in it: allowed (the user's choice),
    but slow."""
    return (f"{setting} is bf16 but this CPU has no bfloat16 instructions (AVX512-BF16 or AMX): torch emulates "
            f"them, many times slower than fp32 (set {setting} to fp32)")


def predict_logits(model: Any, tokenizer: Any, features: Sequence[dict[str, list[int]]],
                   batch_size: int, precision: str = "fp32") -> np.ndarray:
    """Logits, one row per example, in the given order (computed in length-sorted batches)."""
    check_precision(precision)
    collate = DataCollatorWithPadding(tokenizer)
    device = next(model.parameters()).device
    model.eval()
    logits = np.zeros((len(features), model.config.num_labels), dtype=np.float32)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        for idx in length_batches([len(f["input_ids"]) for f in features], batch_size):
            batch = collate([{k: features[i][k] for k in tokenizer.model_input_names if k in features[i]}
                             for i in idx])
            logits[idx] = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
    return logits
