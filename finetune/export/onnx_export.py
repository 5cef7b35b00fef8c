"""ONNX export of an exported classifier folder, checked against PyTorch before it is kept.

The ONNX model takes the tokenizer's inputs with dynamic batch and sequence axes and
returns the logits (the calibration temperature is already folded into the weights).
The parity check runs the same texts through PyTorch and ONNX Runtime, each with its
own tokenizer path (transformers and tokenizers), so it checks the tokenization an
application will use as well as the graph. An optional int8 model is quantised
dynamically (weights int8, activations quantised at run time) and scored on the test
texts beside the fp32 one, so what quantisation costs is visible.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from finetune.core.errors import UserError
from finetune.serving.onnx_predictor import INT8_FILE, ONNX_FILE, OnnxPredictor

log = logging.getLogger(__name__)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class ParityError(UserError, RuntimeError):
    """The ONNX model's logits differ from PyTorch's by more than the tolerance; nothing was kept."""


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence what the exporter and the quantiser print for every model: torch's notes on optional
    torchvision ops and a pytree deprecation of its own, and the quantiser's INFO and WARNING lines, which
    it logs on the root logger. Errors still show; a failed export still raises."""
    torch_onnx = logging.getLogger("torch.onnx")
    level = torch_onnx.level
    torch_onnx.setLevel(logging.ERROR)
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                    category=FutureWarning)
            yield
    finally:
        logging.disable(logging.NOTSET)
        torch_onnx.setLevel(level)


def export_onnx(folder: Path, target: Path) -> None:
    """Write ``folder``'s classifier as ONNX (dynamo exporter) with dynamic batch and sequence axes, its last
    encoder layer computed for the first token alone where the architecture allows (finetune/export/first_token.py)."""
    import torch

    from finetune.export.first_token import first_token_only
    from finetune.training.models import load_classifier, load_tokenizer

    model, tokenizer = load_classifier(str(folder)).eval(), load_tokenizer(str(folder))
    first_token_only(model)  # the classifier reads the first token's row of the last layer alone
    names = [name for name in INPUT_NAMES if name in tokenizer.model_input_names]
    sample = tokenizer(["a short text", "a second, somewhat longer text to trace"], padding=True, return_tensors="pt")

    class Logits(torch.nn.Module):  # the graph's output is the logits tensor alone
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits

    dynamic = torch.export.Dim.DYNAMIC
    with torch.no_grad(), quiet_exporter():
        torch.onnx.export(Logits().eval(), (), str(target), kwargs={name: sample[name] for name in names},
                          input_names=names, output_names=["logits"],
                          dynamic_shapes={name: {0: dynamic, 1: dynamic} for name in names},
                          dynamo=True, external_data=False, verbose=False)
    fuse_for_onnx_runtime(target)


def fuse_for_onnx_runtime(path: Path) -> dict[str, int]:
    """Rewrite an exported transformer with ONNX Runtime's fused kernels (attention, skip layer norm, bias GELU):
    ONNX Runtime does not find these in the dynamo exporter's graph by itself. The result runs in ONNX Runtime
    only. Also drops the exporter's debug metadata: per-node Python stack traces with the checkout's absolute
    paths and our line numbers, which would tie the file's bytes to where the repository lives."""
    import onnx_ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    with quiet_exporter():
        model, fused = optimize_for_ort(onnx_ir.load(str(path)), clear_metadata=True)
        onnx_ir.save(model, str(path))
    return {name: count for name, count in fused.items() if count}


def parity_error(folder: Path, texts: list[str], onnx: OnnxPredictor | None = None) -> float:
    """Largest absolute difference between PyTorch's and ONNX Runtime's logits on ``texts``."""
    from finetune.serving.torch_predictor import TorchPredictor

    onnx = onnx or OnnxPredictor(folder)
    return float(np.abs(TorchPredictor(folder).logits(texts) - onnx.logits(texts)).max())


def quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_exporter():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def accuracy(predictor: OnnxPredictor, texts: list[str], labels: list[int] | list[list[int]]) -> float:
    """Share of texts answered right by the export's own rule (UNCERTAIN aside): the class, or the whole label set
    of a multi-label model."""
    answers = predictor.predict(texts)
    if predictor.info.multi_label:
        truth = [{predictor.labels[i] for i in ids} for ids in labels]  # type: ignore[union-attr]
        return float(np.mean([set(p.label_set) == t for p, t in zip(answers, truth, strict=True)]))
    return float(np.mean([p.predicted == predictor.labels[i] for p, i in zip(answers, labels, strict=True)]))


def export_checked(folder: Path, texts: list[str], labels: list[int] | list[list[int]], parity_texts: int,
                   tolerance: float,
                   int8: bool) -> dict[str, Any]:
    """ONNX (and optionally int8) models in ``folder``, kept only if they match PyTorch; their figures."""
    export_onnx(folder, folder / ONNX_FILE)
    onnx = OnnxPredictor(folder)  # one session for the parity check and the fp32 accuracy
    # the parity texts, and all of them joined into one long text: several windows where the model reads windows
    checked = [*texts[:parity_texts], " ".join(texts[:parity_texts])]
    error = parity_error(folder, checked, onnx)
    if not error <= tolerance:  # also catches NaN
        (folder / ONNX_FILE).unlink()
        raise ParityError(f"ONNX logits differ from PyTorch's by up to {error:.3g} on {parity_texts} test texts "
                          f"and their concatenation, more than export.parity_tolerance ({tolerance:g}); the ONNX "
                          "model was not kept")
    # Logit differences in millionths: DVC shows metrics with 5 decimals, which would print 0.0 for 3e-6.
    windows = onnx.encode(checked[-1:])[0] if onnx.info.windows else []
    figures: dict[str, Any] = {"parity_texts": min(parity_texts, len(texts)),
                               **({"parity_long_text_windows": len(windows)} if windows else {}),
                               "parity_max_abs_error_micro": round(error * 1e6, 3),
                               "parity_tolerance_micro": round(tolerance * 1e6, 3),
                               "onnx_mb": round((folder / ONNX_FILE).stat().st_size / 2**20, 2)}
    if int8:
        quantize_int8(folder / ONNX_FILE, folder / INT8_FILE)
        fp32 = accuracy(onnx, texts, labels)
        quantized = accuracy(OnnxPredictor(folder, file=INT8_FILE), texts, labels)
        figures |= {"test_texts": len(texts), "fp32_accuracy": round(fp32, 6), "int8_accuracy": round(quantized, 6),
                    "int8_accuracy_delta": round(quantized - fp32, 6),
                    "int8_mb": round((folder / INT8_FILE).stat().st_size / 2**20, 2)}
    return figures
