"""Predict with an exported ONNX model, using onnxruntime, tokenizers and numpy only.

The tokenizer is the exported ``tokenizer.json`` run by the Rust ``tokenizers``
library, truncated the way the model was trained (head, tail or head+tail, from
config.json) or read in windows whose logits are aggregated; texts go through the model
in length-sorted batches, each padded to its longest text.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from finetune.core.contract import (
    INT8_FILE,
    ONNX_FILE,
    ExportError,
    Predictor,
    aggregate_windows,
    check_window_fit,
    length_batches,
    read_model_info,
    special_ids,
    token_rows,
)

__all__ = ["INT8_FILE", "ONNX_FILE", "OnnxPredictor"]


class OnnxPredictor(Predictor):
    """Loads an exported folder's ONNX model and tokenizer once and predicts batches of texts."""

    def __init__(self, model_dir: str | Path, threshold: float | None = None, batch_size: int = 32,
                 file: str = ONNX_FILE, threads: int | None = None, windows: bool = False) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        folder = Path(model_dir)
        path = folder / file
        if not path.is_file():
            raise ExportError(f"{path} not found: the export stage writes it (`dvc repro export`, or "
                              "`dvc pull export`); use --backend torch for a folder without it")
        self.info, self.batch_size = read_model_info(folder, threshold, windows), batch_size
        self.backend = "onnx int8" if file == INT8_FILE else "onnx"
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_truncation()  # truncation follows config.json's strategy, below
        self.tokenizer.no_padding()
        self.prefix, self.suffix = special_ids(self.tokenizer.encode("hello").ids,
                                               self.tokenizer.encode("hello", add_special_tokens=False).ids)
        check_window_fit(self.info, len(self.prefix) + len(self.suffix), folder)
        self.pad_id = int(json.loads((folder / "config.json").read_text()).get("pad_token_id") or 0)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [node.name for node in self.session.get_inputs()]

    def encode(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """The rows of token ids the model reads and the text of each (several per text read in windows)."""
        bodies = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return token_rows([body.ids for body in bodies], self.prefix, self.suffix, self.max_length, self.truncation,
                          self.info.windows)

    def logits(self, texts: list[str]) -> np.ndarray:
        ids, owners = self.encode(texts)
        logits = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        for index in length_batches([len(row) for row in ids], self.batch_size):
            width = max(len(ids[i]) for i in index)
            input_ids = np.full((len(index), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(index), width), dtype=np.int64)
            for row, i in enumerate(index):
                input_ids[row, :len(ids[i])] = ids[i]
                mask[row, :len(ids[i])] = 1
            feed = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
            logits[index] = self.session.run(["logits"], {name: feed[name] for name in self.inputs})[0]
        return logits if self.info.windows is None else aggregate_windows(logits, owners, self.info.aggregation)
