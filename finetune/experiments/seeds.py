"""Seed variance: how much the test figures move with the training seed alone.

``python -m finetune seeds --n 5`` runs the current params as DVC experiments
(``dvc exp run --temp -n seed-<k> -S train.seed=<k>``, finetune.experiments.runs) for train.seed, train.seed + 1, ...:
the data seed, and so the split, stay as they are, and the runs differ only in head
initialisation, shuffling and dropout. The first is the workspace's own seed: when the
workspace is up to date, DVC restores that run from its run-cache. Each experiment runs in a
temporary copy of the repository, so a failed run leaves the workspace as it was, and each
stays in ``dvc exp show``. The command writes paths.seeds: each seed's test metrics and, per
metric, the mean, standard deviation and 95% t-interval of the mean, with the settings they
were measured with; the report stage shows them, and says so when the settings have changed
since.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from finetune.core.errors import UserError
from finetune.core.params import Params
from finetune.experiments.runs import experiments, run_temp, show

log = logging.getLogger(__name__)

CONFIDENCE = 0.95
EXPERIMENT_NAME = "seed-{seed}"


class SeedsError(UserError, RuntimeError):
    """A seed's experiment could not run or be read; the message names it and what to do."""


def settings(params: Params) -> dict[str, Any]:
    """What the seed runs share: every params key that can move a test figure, except train.seed (paths and the
    export's settings cannot)."""
    values: dict[str, Any] = {"seed": params.seed}
    for section in ("data", "split", "model", "tokenize", "train", "evaluate"):
        values[section] = getattr(params, section).model_dump()  # the report stage's view allows whole sections
    values["train"].pop("seed")
    return values


def changed_settings(measured: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ between the settings the seeds were measured with and these. A key
    the measured settings lack was added to the params since, with a default that keeps the behaviour from
    before it: it counts as that default."""
    old, new = leaves(measured or {}), leaves(current)
    if measured:
        old = {**leaves(settings(Params())), **old}
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))


def stale_settings(seeds: dict[str, Any], params: Params) -> list[str]:
    """What changed in the params since the seeds were measured (nothing when none were)."""
    return changed_settings(seeds.get("settings"), settings(params)) if seeds.get("seeds") else []


def seed_values(first: int, n: int) -> list[int]:
    if n < 2:
        raise SeedsError(f"--n {n}: a spread needs at least 2 seeds")
    return list(range(first, first + n))


def leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The leaves of nested mappings, keyed by their dotted path."""
    found: dict[str, Any] = {}
    for key, value in data.items():
        found.update(leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return found


def numbers(data: dict[str, Any]) -> dict[str, float]:
    """The numeric leaves of nested metrics, keyed by their dotted path."""
    return {key: float(value) for key, value in leaves(data).items()
            if isinstance(value, int | float) and not isinstance(value, bool)}


def spread(runs: dict[int, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per metric (those every run has): each seed's value, mean, sample standard deviation and the 95%
    t-interval of the mean."""
    from scipy import stats

    n = len(runs)
    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1))
    keys = sorted(set.intersection(*(set(values) for values in runs.values())))
    summary = {}
    for key in keys:
        values = np.array([runs[seed][key] for seed in sorted(runs)])
        mean, std = float(values.mean()), float(values.std(ddof=1))
        half = t * std / math.sqrt(n)
        summary[key] = {"values": values.tolist(), "mean": round(mean, 6), "std": round(std, 6),
                        "ci_low": round(mean - half, 6), "ci_high": round(mean + half, 6)}
    return summary


def measure_seeds(repo: Path, params: Params, n: int) -> dict[str, Any]:
    """Run ``n`` training seeds from the params' own and collect each one's test metrics."""
    seeds = seed_values(params.train.seed, n)
    for seed in seeds:
        name = EXPERIMENT_NAME.format(seed=seed)
        failure = run_temp(repo, name, {"train.seed": seed})
        if failure:
            raise SeedsError(f"the experiment {name} (train.seed={seed}) failed; the workspace is unchanged. Its "
                             f"output ends:\n{failure}")
    found = experiments(show(repo), params.paths.metrics)
    runs = {}
    for seed in seeds:
        name = EXPERIMENT_NAME.format(seed=seed)
        metrics = numbers(found.get(name, {}).get("metrics", {}))
        if not metrics:
            raise SeedsError(f"the experiment {name} has no metrics in {params.paths.metrics}: see `dvc exp show`")
        runs[seed] = metrics
    return {"seeds": seeds, "experiments": [EXPERIMENT_NAME.format(seed=s) for s in seeds],
            "confidence": CONFIDENCE, "settings": settings(params), "metrics": spread(runs)}
