"""DVC experiments on the pipeline: `python -m finetune seeds` and `python -m finetune search` (one at a time and
two at a time through DVC's queue), each running real `dvc exp` commands. One small run (tiny model, 300 reviews) of
their own, so that they run beside test_pipeline.py's tests rather than after them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from finetune.experiments.runs import experiments, worker_pids
from tests.conftest import ROOT, run, set_params, stages_run
from tests.test_pipeline import lock_outs, restore, small_run

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_model) -> Path:
    # no ONNX export: every experiment runs the whole pipeline, and these tests are about experiments
    return small_run(tmp_path_factory.mktemp("experiments") / "repo", tiny_model,
                     **{"export.onnx": False, "export.int8": False})


def test_seeds_train_the_params_with_two_seeds_as_experiments_and_the_report_shows_the_spread(repo):
    """`python -m finetune seeds --n 2`: the workspace's own seed (from the run-cache) and the next, each a DVC
    experiment run in a temporary copy; seeds.json holds each one's test metrics and their spread; the workspace
    keeps its outputs, and `dvc repro` reruns the report alone, which shows the spread."""
    assert "**Seed variance.**" in (repo / "reports/report.md").read_text()  # the project's seeds.json, as copied
    outs = lock_outs(repo)
    try:
        result = run(["python", "-m", "finetune", "seeds", "--n", "2"], repo)
        printed = result.stdout
        assert "accuracy" in printed and "95% interval" in printed
        assert "seed-43: stage train" in result.stderr and "seed-43: epoch 2/2: validation loss" in result.stderr
        seeds = json.loads((repo / "reports/seeds.json").read_text())
        assert seeds["seeds"] == [42, 43] and seeds["experiments"] == ["seed-42", "seed-43"]
        found = experiments(json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout))
        assert [found[name]["params"]["train"]["seed"] for name in seeds["experiments"]] == [42, 43]
        accuracy = seeds["metrics"]["accuracy"]
        assert accuracy["values"] == [found[name]["metrics"]["accuracy"] for name in seeds["experiments"]]
        assert accuracy["values"][0] == json.loads((repo / "reports/metrics.json").read_text())["accuracy"]
        assert accuracy["ci_low"] <= accuracy["mean"] <= accuracy["ci_high"]
        assert run("git status --porcelain", repo).stdout.split() == ["M", "reports/seeds.json"]
        assert lock_outs(repo) == outs  # the workspace's outputs are untouched
        assert stages_run(run(["dvc", "repro"], repo).stdout) == ["report"]
        report = (repo / "reports/report.md").read_text()
        assert "trained with 2 training seeds (42, 43" in report and "other settings" not in report
        set_params(repo, {"train.learning_rate": 0.002})  # the report says the spread was measured otherwise
        run(["dvc", "repro", "-s", "report"], repo)  # the report alone reads the edited params.yaml
        assert "(`train.learning_rate` differ)" in (repo / "reports/report.md").read_text()
    finally:
        restore(repo)


def test_a_search_runs_trials_as_experiments_records_a_failure_resumes_and_applies_the_best(repo):
    """Four trials in two runs of the command: the current params first (restored from the run-cache), a trial
    made to fail (a learning rate check-params refuses) recorded as failed, then two at a time through the queue
    when the search is run again for four; each is an experiment scored on validation; the workspace stays."""
    from finetune.core.params import load_params
    from finetune.experiments.search import open_storage, open_study, quiet_optuna

    set_params(repo, {"search.space": {"train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                                       "train.epochs": {"low": 1, "high": 2}}})
    try:
        params = load_params(repo / "params.yaml")
        with quiet_optuna():
            study = open_study(params, open_storage(params, repo))  # creates the study: trial 0, the current params
            study.enqueue_trial({"train.learning_rate": 5.0, "train.epochs": 1})  # check-params refuses it
        outs, status = lock_outs(repo), run("git status --porcelain", repo).stdout
        first = run(["python", "-m", "finetune", "search", "--trials", "2"], repo)
        assert "best trial search-0" in first.stdout
        resumed = run(["python", "-m", "finetune", "search", "--trials", "4", "--parallel", "2"], repo)  # continues
        # each queued trial's progress, read from the queue's output files while it runs
        assert "search-2 starts: train.learning_rate=" in resumed.stderr
        assert "search-2: epoch 1/" in resumed.stderr and "search-3: epoch 1/" in resumed.stderr, resumed.stderr
        assert "ExperimentalWarning" not in first.stderr + resumed.stderr
        result = json.loads((repo / "reports/search.json").read_text())
        assert [t["state"] for t in result["trials"]] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
        assert "train.learning_rate" in result["trials"][1]["failure"]  # check-params' message, kept
        assert result["trials"][0]["params"] == {"train.learning_rate": 1e-3, "train.epochs": 2}
        drawn = [tuple(t["params"].values()) for t in result["trials"]]
        assert len(set(drawn)) == 4  # the resumed search drew new params
        found = experiments(json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout),
                            "reports/training/metrics.json")
        for trial in result["trials"]:
            if trial["state"] == "COMPLETE":  # the score is the experiment's validation figure; test never scores
                shown = found[trial["experiment"]]
                assert shown["metrics"]["eval"]["f1_macro"] == trial["value"]
                assert shown["params"]["train"]["epochs"] == trial["params"]["train.epochs"]
                # the stage trained with the trial's params.yaml (one or two epochs: too few to stop early)
                assert shown["metrics"]["epochs_run"] == trial["params"]["train.epochs"]
        assert "search-1" not in found or not found["search-1"]["metrics"]
        assert {p.name for p in (repo / "reports/search").iterdir()} == {"history.png", "importances.png"}
        check_side_by_side(repo, found, ["search-2", "search-3"])
        assert not [pid for pid in worker_pids(repo) if pid_alive(pid)]  # no queue worker left running
        assert lock_outs(repo) == outs
        assert set(run("git status --porcelain", repo).stdout.splitlines()) - set(status.splitlines()) == {
            "?? reports/search.json", "?? reports/search/"}
        best = result["best"]
        run(["python", "-m", "finetune", "search", "--trials", "4", "--apply"], repo)  # nothing left to run
        applied = yaml.safe_load((repo / "params.yaml").read_text())["train"]
        assert applied["learning_rate"] == pytest.approx(best["params"]["train.learning_rate"])
    finally:
        shutil.rmtree(repo / ".search", ignore_errors=True)
        restore(repo)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True




def check_side_by_side(repo: Path, found: dict, names: list[str]) -> None:
    """Queued experiments side by side in a normal terminal: `python -m finetune exps`, and docs/experiments.md's
    `dvc exp show` command."""
    table = run(["python", "-m", "finetune", "exps", "--width", "100"], repo).stdout.splitlines()
    assert max(map(len, table)) <= 100 and "…" not in "".join(table)
    metrics = experiments(json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout))
    for name in names:
        row = next(line for line in table if line.startswith(f"{name} ")).split()
        assert f"{metrics[name]['metrics']['accuracy']:.4f}" in row
    documented = next(line for line in (ROOT / "docs/experiments.md").read_text().splitlines()
                      if line.startswith("dvc exp show --"))
    shown = run(documented, repo).stdout.splitlines()
    assert shown[1].split() == ["Experiment", "eval.loss", "accuracy", "f1_macro", "params.yaml:train.learning_rate",
                                "train.epochs"], shown
    assert all(any(f"[{name}]" in line for line in shown) for name in names)
