"""DVC experiments on the pipeline: a queued sweep, `python -m finetune seeds` and `python -m finetune search`, each
running real `dvc exp` commands. One small run (tiny model, 300 reviews) of their own, so that they run beside
test_pipeline.py's tests rather than after them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from finetune.experiments.runs import experiments, stop_workers, worker_pids
from tests.conftest import ROOT, offline_env, run, set_params, stages_run
from tests.test_pipeline import lock_outs, restore, small_run

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_model) -> Path:
    # no ONNX export: every experiment runs the whole pipeline, and these tests are about experiments
    return small_run(tmp_path_factory.mktemp("experiments") / "repo", tiny_model,
                     **{"export.onnx": False, "export.int8": False})


def test_queued_experiments_run_two_at_a_time_and_show_their_metrics(repo):
    """A small sweep with `dvc exp run --queue` and `dvc queue start -j 2`. Queued experiments run in a
    temporary copy of the repository; the second reads a CSV outside the repository by a relative path."""
    import time

    rows = [(f"review {i} was {'great fun' if i % 2 else 'a bore'}", "good" if i % 2 else "bad") for i in range(120)]
    (repo.parent / "reviews.csv").write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows))
    run(["dvc", "exp", "run", "--queue", "-n", "lr-high", "-S", "train.learning_rate=0.002"], repo)
    run(["dvc", "exp", "run", "--queue", "-n", "lr-low-csv", "-S", "train.learning_rate=0.0005",
         "-S", "data.source=../reviews.csv"], repo)
    with (repo.parent / "queue-start.log").open("w") as log:  # a file, not a pipe: the workers outlive the command
        subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=repo, env=offline_env(), stdout=log,
                       stderr=subprocess.STDOUT, check=True, timeout=120)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            status = run(["dvc", "queue", "status"], repo).stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
    finally:
        stop_workers(repo)
    assert status.count("Success") == 2, status + run(["dvc", "queue", "logs", "lr-low-csv"], repo, check=False).stdout
    found = experiments(json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout))
    assert found["lr-high"]["params"]["train"]["learning_rate"] == 0.002
    assert found["lr-low-csv"]["params"]["data"]["source"] == "../reviews.csv"
    assert 0 <= found["lr-high"]["metrics"]["accuracy"] <= 1
    assert found["lr-low-csv"]["metrics"]["n_test"] == 24  # 20% of the CSV's 120 rows: it read the CSV
    assert "up to date" in run(["dvc", "status"], repo).stdout  # the workspace was not touched
    # Side by side in a normal terminal: `python -m finetune exps`, and docs/experiments.md's `dvc exp show`
    table = run(["python", "-m", "finetune", "exps", "--width", "100"], repo).stdout.splitlines()
    assert max(map(len, table)) <= 100 and "…" not in "".join(table)
    high = next(line for line in table if line.startswith("lr-high ")).split()
    assert "learning_rate=0.002" in high and f"{found['lr-high']['metrics']['accuracy']:.4f}" in high
    assert any(line.startswith("lr-low-csv ") and "source=../reviews.csv" in line for line in table)
    documented = next(line for line in (ROOT / "docs/experiments.md").read_text().splitlines()
                      if line.startswith("dvc exp show --"))
    shown = run(documented, repo).stdout.splitlines()
    assert shown[1].split() == ["Experiment", "eval.loss", "accuracy", "f1_macro", "params.yaml:train.learning_rate",
                                "train.epochs"], shown
    assert any("[lr-high]" in line and "0.002" in line for line in shown)


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


