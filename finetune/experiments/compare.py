"""Experiments side by side in a normal terminal: ``python -m finetune exps``.

`dvc exp show` prints every param and metric as a column: at 80 to 120 columns it shows
little but ellipses. This prints one row per experiment (and the workspace and its commit):
the params that differ between the rows shown, and the headline figures, the test split's
(reports/metrics.json) and the kept epoch's on validation (reports/training/metrics.json).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

from finetune.experiments.seeds import leaves

# The headline figures, (file, key, column title): test accuracy or, for label sets, micro F1; macro F1 on both.
FIGURES = (("metrics", "accuracy", "test acc"), ("metrics", "f1_micro", "test F1mi"),
           ("metrics", "f1_macro", "test F1ma"), ("training", "eval.loss", "val loss"),
           ("training", "eval.f1_macro", "val F1ma"))


@dataclass
class Row:
    name: str
    params: dict[str, Any]
    figures: dict[str, float]


def rows(shown: list[dict[str, Any]], metrics_file: str, training_file: str) -> list[Row]:
    """The workspace, each commit shown and its experiments, from `dvc exp show --json`, in its order."""
    found = []

    def add(rev: dict[str, Any], name: str) -> None:
        data = rev.get("data") or {}
        metrics = data.get("metrics") or {}
        figures = {}
        for source, key, title in FIGURES:
            path = metrics_file if source == "metrics" else training_file
            value = leaves((metrics.get(path) or {}).get("data") or {}).get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                figures[title] = float(value)
        params = leaves(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
        found.append(Row(name, params, figures))

    for baseline in shown:
        add(baseline, baseline.get("name") or (baseline["rev"] if baseline["rev"] == "workspace" else
                                               baseline["rev"][:7]))
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                add(rev, rev.get("name") or rev["rev"][:7])
    return found


def short(key: str) -> str:
    """A params key without its section where the name says enough: train.learning_rate -> learning_rate."""
    return key.split(".", 1)[1] if key.startswith(("train.", "tokenize.", "evaluate.", "split.")) else key


def value_text(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def table(found: list[Row], width: int | None = None) -> str:
    """The rows as a text table at most ``width`` columns wide: experiment, changed params, figures. Params that
    are the same in every row are left out; a column of figures no row has is too."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    keys = sorted({key for row in found for key in row.params
                   if len({repr(other.params.get(key)) for other in found}) > 1 and not key.startswith("paths.")})
    titles = [title for _, _, title in FIGURES if any(title in row.figures for row in found)]
    lines = [["experiment", "changed params", *titles]]
    for row in found:
        changed = " ".join(f"{short(key)}={value_text(row.params.get(key))}" for key in keys) or "-"
        lines.append([row.name, changed, *(f"{row.figures[t]:.4f}" if t in row.figures else "-" for t in titles)])
    sizes = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    room = width - sum(sizes) - 2 * (len(sizes) - 1)
    if room < 0:  # the params column gives way; its full text is in `dvc exp show`
        sizes[1] = max(len("changed params"), sizes[1] + room)
    out = []
    for line in lines:
        cells = [cell if len(cell) <= size else cell[:size - 3] + "..." for cell, size in zip(line, sizes, strict=True)]
        out.append("  ".join(cell.ljust(size) if i < 2 else cell.rjust(size)
                             for i, (cell, size) in enumerate(zip(cells, sizes, strict=True))).rstrip())
    return "\n".join(out)
