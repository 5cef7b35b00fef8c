"""The exported model: a self-contained folder that ``transformers.pipeline`` loads.

It holds the safetensors weights, the tokenizer, a config with the label names,
the UNCERTAIN threshold and the tokenization settings, and a model card.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

# Keys added to config.json; predict reads them back.
THRESHOLD_KEY = "uncertain_threshold"
MAX_LENGTH_KEY = "finetune_max_length"
TRUNCATION_KEY = "finetune_truncation"


def export_folder(model_dir: Path, target: Path, extra_config: dict[str, Any]) -> None:
    """Copy the trained model and tokenizer to ``target`` with ``extra_config`` merged into config.json."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(model_dir, target)
    config_path = target / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(extra_config)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def model_card(*, base_model: str, source: str, labels: list[str], split_sizes: dict[str, int],
               train: dict[str, Any], tokenize: dict[str, Any], metrics: dict[str, Any], threshold: float) -> str:
    """A Hugging Face model card (README.md) with data, params and test metrics."""
    headline = {k: metrics[k] for k in ("accuracy", "precision", "recall", "f1", "f1_macro") if k in metrics}
    front = ["---", "library_name: transformers", "pipeline_tag: text-classification", "model-index:",
             "- name: finetuned-classifier", "  results:", "  - task: {type: text-classification}",
             f"    dataset: {{name: {json.dumps(source)}, type: {json.dumps(source)}, split: test}}", "    metrics:"]
    front += [f"    - {{type: {name}, value: {value}}}" for name, value in headline.items()]
    front.append("---")
    rows = "\n".join(f"| {name} | {value} |" for name, value in headline.items())
    sections = {"tokenize": tokenize, "train": train}
    settings = "\n".join(f"| {section}.{key} | {value} |"
                         for section, values in sections.items() for key, value in values.items())
    coverage = metrics.get("uncertain", {})
    return "\n".join(front) + f"""

# Fine-tuned text classifier

Fine-tuned from `{base_model}` on `{source}` with this project's DVC pipeline.

- Labels: {", ".join(f"`{name}`" for name in labels)}
- Split sizes: {", ".join(f"{split} {n}" for split, n in split_sizes.items())}
- Predictions whose confidence is below **{threshold}** are answered `UNCERTAIN`
  (`{THRESHOLD_KEY}` in config.json); on the test split that leaves
  {coverage.get("coverage", "n/a")} of the texts answered, with accuracy {coverage.get("accuracy_answered", "n/a")}.

## Test metrics

| metric | value |
| --- | --- |
{rows}

For two classes, precision, recall and F1 are those of `{labels[-1] if len(labels) == 2 else "macro average"}`.

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

The model knows only the labels above and the kind of text it was trained on; texts
longer than {tokenize.get("max_length")} tokens are truncated ({tokenize.get("truncation")}).
"""
