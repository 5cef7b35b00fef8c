"""The exported model: a self-contained folder that ``transformers.pipeline`` loads.

It holds the safetensors weights with the calibration temperature folded into the
classifier's last layer (so every runtime gives calibrated confidences), the
tokenizer, a config with the label names, the UNCERTAIN threshold, the temperature
and the tokenization settings, and a model card.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from finetune.core.contract import (
    BAND_KEY,
    DECISION_THRESHOLD_KEY,
    LABEL_THRESHOLDS_KEY,
    MAX_LENGTH_KEY,
    TEMPERATURE_KEY,
    THRESHOLD_KEY,
    TRUNCATION_KEY,
    WINDOWS,
    Windows,
)
from finetune.core.errors import UserError
from finetune.evaluation.calibration import fold_temperature
from finetune.evaluation.report import reading_sentence, trained_parameters
from finetune.training.models import load_classifier, load_tokenizer, save_tokenizer

__all__ = ["BAND_KEY", "DECISION_THRESHOLD_KEY", "LABEL_THRESHOLDS_KEY", "MAX_LENGTH_KEY", "TEMPERATURE_KEY",
           "THRESHOLD_KEY", "TRUNCATION_KEY",
           "MergeError", "export_model", "merge_parity", "model_card"]


def export_model(model_dir: Path, target: Path, temperature: float, extra_config: dict[str, Any]) -> None:
    """Save the trained model with the temperature folded in, its tokenizer, and ``extra_config`` in config.json."""
    model, tokenizer = load_classifier(str(model_dir)), load_tokenizer(str(model_dir))
    fold_temperature(model, temperature)
    for key, value in {TEMPERATURE_KEY: temperature, **extra_config}.items():
        setattr(model.config, key, value)
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(str(target), safe_serialization=True)
    save_tokenizer(tokenizer, target)


class MergeError(UserError, RuntimeError):
    """The model with its LoRA adapter merged gives other logits than the base with the adapter; nothing exported."""


def merge_parity(model_dir: Path, base: str, adapter_dir: Path, texts: list[str], max_length: int, truncation: str,
                 tolerance: float, windows: Windows | None = None) -> float:
    """The largest difference between the logits of the trained model (its LoRA adapter merged into the weights)
    and of the base model with the adapter applied on the side, on ``texts``; a MergeError beyond ``tolerance``."""
    from finetune.training.adapters import with_adapter
    from finetune.training.texts import text_logits

    merged, tokenizer = load_classifier(str(model_dir)), load_tokenizer(str(model_dir))
    unmerged = with_adapter(base, adapter_dir, merged.config)
    reading = windows if truncation == WINDOWS else None
    error = float(np.abs(text_logits(merged, tokenizer, texts, max_length, truncation, 32, windows=reading)
                         - text_logits(unmerged, tokenizer, texts, max_length, truncation, 32, windows=reading)).max())
    if not error <= tolerance:  # also catches NaN
        raise MergeError(f"the model with its LoRA adapter merged differs from the base with the adapter by up to "
                         f"{error:.3g} in its logits on {len(texts)} test texts, more than export.parity_tolerance "
                         f"({tolerance:g}): nothing was exported; retrain (`dvc repro -f train`)")
    return error


CARD_METRICS = ("accuracy", "precision", "recall", "f1", "f1_macro", "roc_auc")
MULTI_LABEL_CARD_METRICS = ("f1_macro", "f1_micro", "f1_samples", "subset_accuracy", "hamming_loss", "roc_auc_macro")


def tuned_rule(decision: dict[str, Any] | None) -> str:
    """The model card's line on a tuned decision threshold of a two-class model (empty without one)."""
    if decision is None:
        return ""
    return f"""- Two classes with a tuned decision threshold: the answer is `{decision["positive_label"]}` when
  its probability reaches **{decision["threshold"]}** (`{DECISION_THRESHOLD_KEY}` in config.json, tuned on
  the validation split for its F1), the other class otherwise; the most probable class would score
  accuracy {decision["argmax"]["accuracy"]} and F1 {decision["argmax"]["f1"]} on the test split.
  `transformers.pipeline` gives the probabilities, not this rule (see the project's README).
"""


def decision_rule(metrics: dict[str, Any], threshold: float) -> str:
    """The model card's paragraph on how answers are decided (and when they are UNCERTAIN)."""
    if "per_label" not in metrics:
        coverage, tuned = metrics.get("uncertain", {}), tuned_rule(metrics.get("decision"))
        return tuned + (f"""- Predictions whose confidence is below **{threshold}** are answered `UNCERTAIN`
  (`{THRESHOLD_KEY}` in config.json); on the test split that leaves
  {coverage.get("coverage", "n/a")} of the texts answered, with accuracy {coverage.get("accuracy_answered", "n/a")}.""")
    uncertain = metrics["uncertain"]
    thresholds = ", ".join(f"`{name}` {row['threshold']}" for name, row in metrics["per_label"].items())
    return f"""- Multi-label: one sigmoid per label. A text has a label when its probability reaches that label's
  threshold (`{LABEL_THRESHOLDS_KEY}` in config.json, tuned on the validation split for each label's F1):
  {thresholds}.
- A text with a label whose log-odds lie within **{uncertain["band"]}** of its threshold's is answered
  `UNCERTAIN` (`{BAND_KEY}`); on the test split that leaves {uncertain["coverage"]} of the texts answered,
  with subset accuracy (the whole label set right) {uncertain["subset_accuracy_answered"]}.
- `transformers.pipeline("text-classification", model=..., top_k=None)` gives the same per-label
  probabilities (it applies the sigmoid, not the thresholds); the label set is then
  `[p["label"] for p in scores if p["score"] >= thresholds[label2id[p["label"]]]]` with
  `thresholds = config.{LABEL_THRESHOLDS_KEY}` (see the project's README)."""


def trained_line(training: dict[str, Any]) -> str:
    """The model card's line on what training updated (LoRA's adapters are merged into the exported weights)."""
    trained = trained_parameters(training)
    return f"- Trained: {trained}\n" if trained else ""


def model_card(*, base_model: str, source: str, labels: list[str], split_sizes: dict[str, int],
               train: dict[str, Any], tokenize: dict[str, Any], metrics: dict[str, Any], threshold: float,
               training: dict[str, Any] | None = None, aggregation: str = "mean") -> str:
    """A Hugging Face model card (README.md) with data, params, test metrics and calibration."""
    keys = MULTI_LABEL_CARD_METRICS if "per_label" in metrics else CARD_METRICS
    headline = {k: metrics[k] for k in keys if k in metrics}
    front = ["---", "library_name: transformers", "pipeline_tag: text-classification", "model-index:",
             "- name: finetuned-classifier", "  results:", "  - task: {type: text-classification}",
             f"    dataset: {{name: {json.dumps(source)}, type: {json.dumps(source)}, split: test}}", "    metrics:"]
    front += [f"    - {{type: {name}, value: {value}}}" for name, value in headline.items()]
    front.append("---")
    rows = "\n".join(f"| {name} | {value} |" for name, value in headline.items())
    sections = {"tokenize": tokenize, "train": train}
    settings = "\n".join(f"| {section}.{key} | {value} |"
                         for section, values in sections.items() for key, value in values.items())
    calibration = metrics.get("calibration", {})
    return "\n".join(front) + f"""

# Fine-tuned text classifier

Fine-tuned from `{base_model}` on `{source}` with this project's DVC pipeline.

- Labels: {", ".join(f"`{name}`" for name in labels)}
- Split sizes: {", ".join(f"{split} {n}" for split, n in split_sizes.items())}
{trained_line(training or {})}- Confidences are calibrated by temperature scaling fitted on the validation split
  (`{TEMPERATURE_KEY}` = {calibration.get("temperature", "n/a")}, already folded into the weights):
  expected calibration error on the test split {calibration.get("ece_before", "n/a")} before,
  {calibration.get("ece_after", "n/a")} after.
{decision_rule(metrics, threshold)}

## Test metrics

| metric | value |
| --- | --- |
{rows}

{precision_note(labels, metrics)}

## Training settings

| param | value |
| --- | --- |
{settings}

## Use

```python
from transformers import pipeline
classifier = pipeline("text-classification", model="path/to/this/folder")
classifier("A moving, beautifully acted film.")
```

or `python -m finetune predict --model path/to/this/folder "some text"`, which also answers UNCERTAIN.

## Limitations

The model knows only the labels above and the kind of text it was trained on;
{reading_sentence(tokenize, aggregation)}
"""


def precision_note(labels: list[str], metrics: dict[str, Any]) -> str:
    if "per_label" in metrics:
        return ("F1 micro counts every label decision alike, macro every label alike, samples every text alike; "
                "subset accuracy is the share of texts whose whole label set is right.")
    which = labels[-1] if len(labels) == 2 else "macro average"
    return f"For two classes, precision, recall and F1 are those of `{which}`."
