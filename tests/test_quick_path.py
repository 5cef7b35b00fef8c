"""The README's quick path, run as written: the real pretrained model learns in a couple of minutes. A file of its own,
so that the test workers can balance it against the other pipeline runs."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import yaml

from tests.conftest import ROOT, make_repo, run


def quick_path() -> list[str]:
    """The README's quick path: its `dvc exp run` and `predict` commands, as written."""
    section = (ROOT / "README.md").read_text().split("## A model in two minutes", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith(("dvc exp run", "python -m finetune predict"))]


def test_the_readmes_quick_path_names_valid_params_and_a_stage():
    """What CI checks of the quick path (its run is in make bench's smoke run): each `-S` setting is a valid
    param, and the target is a stage."""
    from finetune.core.params import parse_params, read_pipeline, read_raw

    experiment, predict = quick_path()
    words = experiment.split()
    assert words[:5] == ["dvc", "exp", "run", "-n", "quick"] and words[5] in read_pipeline(ROOT / "dvc.yaml")
    raw = read_raw(ROOT / "params.yaml")
    settings = [words[i + 1] for i, word in enumerate(words) if word == "-S"]
    for setting in settings:
        key, value = setting.split("=", 1)
        section, name = key.split(".")
        raw[section][name] = yaml.safe_load(value)
    params = parse_params(raw)
    assert params.data.max_samples == 2000 and params.train.epochs == 2 and len(settings) == 5
    assert predict.startswith("python -m finetune predict ")


# A run of a few minutes with the real model: in make bench's smoke run, not in CI.
@pytest.mark.bench
@pytest.mark.slow
@pytest.mark.pipeline
def test_the_readmes_quick_path_learns_a_model_that_answers(tmp_path, artifacts):
    """The README's quick path, run as written in a fresh copy: the pretrained MiniLM on a sample of Rotten
    Tomatoes beats the majority class clearly, and answers most texts rather than UNCERTAIN."""
    experiment, predict = quick_path()
    repo = make_repo(tmp_path / "repo")
    started = time.monotonic()
    run(experiment, repo)
    artifacts.append(f"the README's quick path: {time.monotonic() - started:.0f} s beside the other tests")
    metrics = json.loads((repo / "reports/evaluation.json").read_text())
    majority = max(c["support"] for c in metrics["per_class"].values()) / metrics["n_test"]
    assert metrics["accuracy"] >= majority + 0.15, metrics["accuracy"]
    assert metrics["uncertain"]["coverage"] >= 0.4 and metrics["calibration"]["temperature_fit"] == "fitted"
    answers = [line.split("\t")[0] for line in run(predict, repo).stdout.splitlines()]
    assert answers == ["positive", "negative"], answers
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
