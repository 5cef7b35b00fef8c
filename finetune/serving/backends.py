"""Load an exported folder as the predictor of a backend: ONNX Runtime (fp32 or int8) or PyTorch (fp32 or bf16).

Each backend's libraries are imported only when it is chosen, so an ONNX deployment needs
onnxruntime, tokenizers and numpy alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from finetune.core.contract import (
    INT8_FILE,
    ONNX_FILE,
    ExportError,
    Predictor,
    check_precision,
    read_model_info,
)

Backend = Literal["auto", "onnx", "torch"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def chosen_backend(folder: Path, backend: str, int8: bool, precision: str) -> str:
    """``onnx`` or ``torch``: ``auto`` is ONNX Runtime when the export has model.onnx (and no PyTorch-only
    option asks otherwise), else PyTorch. Contradictory options are refused before any model loads."""
    if backend not in BACKENDS:
        raise ExportError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    check_precision(precision)
    if int8 and precision != "fp32":
        raise ExportError("--int8 is an ONNX model, --precision bf16 a PyTorch option: choose one")
    if backend == "auto":
        backend = "onnx" if int8 or (precision == "fp32" and (folder / ONNX_FILE).is_file()) else "torch"
    if backend == "onnx" and precision != "fp32":
        raise ExportError(f"--precision {precision} needs --backend torch (for a smaller, faster ONNX model "
                          "use --int8)")
    if backend == "torch" and int8:
        raise ExportError("--int8 needs --backend onnx (or auto)")
    return backend


def load_predictor(model_dir: str | Path, backend: str = "auto", threshold: float | None = None,
                   batch_size: int = 32, precision: str = "fp32", int8: bool = False,
                   windows: bool = False) -> Predictor:
    """The predictor of an exported folder: ONNX Runtime (fp32, or int8) or PyTorch (fp32 or bf16). ``windows``
    reads long texts whole, in windows, even with a model trained on a part of each."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ExportError(f"--model {folder} is no folder: run `dvc repro` or `dvc pull export` first")
    read_model_info(folder, threshold, windows)  # an export's config.json and the options, before a model loads
    if batch_size < 1:
        raise ExportError(f"--batch-size must be at least 1, got {batch_size}")
    if chosen_backend(folder, backend, int8, precision) == "onnx":
        from finetune.serving.onnx_predictor import OnnxPredictor  # onnxruntime, tokenizers and numpy only

        return OnnxPredictor(folder, threshold=threshold, batch_size=batch_size, file=INT8_FILE if int8 else ONNX_FILE,
                             windows=windows)
    from finetune.serving.torch_predictor import TorchPredictor

    return TorchPredictor(folder, threshold=threshold, batch_size=batch_size, precision=precision, windows=windows)
