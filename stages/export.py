"""export: a self-contained model folder for applications.

Reads: paths.model, paths.evaluation (the calibration temperature, test metrics for the card), paths.splits,
paths.training_log (the parameters trained, for the card), and with
train.adapter lora paths.adapter and model.name (the merged model is checked against the base with its adapter);
params data.source, model.name, tokenize.*, train.*, evaluate.uncertain_threshold, evaluate.uncertain_band,
evaluate.window_aggregation.
Writes: paths.export (safetensors weights with the temperature folded in, tokenizer, config
with label names, UNCERTAIN threshold, decision thresholds, temperature and tokenization settings (with the
window settings, so a model trained on a part of each text can be asked to read windows), README.md
model card; with export.onnx the ONNX model, checked against PyTorch on test texts and on one long text of
them all joined (several windows where the model reads windows), and
with export.int8 its int8 quantisation) and paths.export_metrics (parity error, int8 and
fp32 test accuracy; with LoRA, the merge's largest logit difference).
"""

from pathlib import Path

import datasets

from finetune.core.contract import AGGREGATION_KEY, MAX_WINDOWS_KEY, STRIDE_KEY, Windows
from finetune.core.files import read_json, write_json
from finetune.core.params import stage_params
from finetune.core.stage import readable, run, setup
from finetune.data.labels import MULTI_LABEL, label_column, label_names, task_of, text_list
from finetune.export.model_folder import (
    BAND_KEY,
    DECISION_THRESHOLD_KEY,
    LABEL_THRESHOLDS_KEY,
    MAX_LENGTH_KEY,
    THRESHOLD_KEY,
    TRUNCATION_KEY,
    export_model,
    merge_parity,
    model_card,
)
from finetune.export.onnx_export import export_checked
from finetune.training.models import resolve_model


def main() -> None:
    log = setup("export")
    params = stage_params("export")
    target, threshold = Path(params.paths.export), params.evaluate.uncertain_threshold
    metrics = read_json(params.paths.evaluation)
    temperature = metrics["calibration"]["temperature"]
    splits = datasets.load_from_disk(params.paths.splits)
    names = label_names(splits["train"].features)
    # the window settings go in every export: a model trained on a part of each text may be asked to read windows
    settings = {MAX_LENGTH_KEY: params.tokenize.max_length, TRUNCATION_KEY: params.tokenize.truncation,
                STRIDE_KEY: params.tokenize.stride, MAX_WINDOWS_KEY: params.tokenize.max_windows,
                AGGREGATION_KEY: params.evaluate.window_aggregation}
    if task_of(splits["train"].features) == MULTI_LABEL:  # a threshold per label, tuned by the evaluate stage
        settings |= {LABEL_THRESHOLDS_KEY: [metrics["per_label"][name]["threshold"] for name in names],
                     BAND_KEY: params.evaluate.uncertain_band}
    else:
        settings |= {THRESHOLD_KEY: threshold}
        if "decision" in metrics:  # evaluate.decision_threshold tuned: class 1 from this probability on
            settings |= {DECISION_THRESHOLD_KEY: metrics["decision"]["threshold"]}
    texts = text_list(splits["test"])
    merge = {}
    if params.train.adapter == "lora":  # the adapters were merged when training ended: check them against the base
        error = merge_parity(Path(params.paths.model), resolve_model(params.model.name), Path(params.paths.adapter),
                             texts[:params.export.parity_texts], params.tokenize.max_length,
                             params.tokenize.truncation, params.export.parity_tolerance,
                             Windows(params.tokenize.stride, params.tokenize.max_windows))
        merge = {"adapter_merge_max_abs_error_micro": round(error * 1e6, 3)}
    export_model(Path(params.paths.model), target, temperature, settings)
    card = model_card(
        base_model=params.model.name, source=params.data.source, labels=names,
        split_sizes={name: len(split) for name, split in splits.items()}, train=params.train.settings(),
        tokenize=params.tokenize.settings(), aggregation=params.evaluate.window_aggregation, metrics=metrics,
        threshold=threshold,
        training=read_json(Path(params.paths.training_log) / "metrics.json"))
    (target / "README.md").write_text(card, encoding="utf-8")
    figures = {"onnx": False}
    if params.export.onnx:
        figures = export_checked(target, texts, label_column(splits["test"]), params.export.parity_texts,
                                 params.export.parity_tolerance, params.export.int8)
    figures |= merge
    write_json(figures, params.paths.export_metrics)
    log.info("exported to %s (temperature %.3f folded in, threshold %.2f): %s", target, temperature, threshold,
             readable(figures))


if __name__ == "__main__":
    run(main)
