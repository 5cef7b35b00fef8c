"""Seed variance: the spread of each test figure, experiments read from `dvc exp show --json`, stale settings."""

import pytest
from scipy import stats

from finetune.core.params import Params
from finetune.evaluation.report import seeds_section
from finetune.experiments.runs import experiments, queue_environment, yaml_value
from finetune.experiments.seeds import SeedsError, changed_settings, numbers, seed_values, settings, spread


def test_spread_is_the_mean_std_and_t_interval_of_each_metric_every_run_has():
    runs = {42: {"accuracy": 0.80, "n_test": 60.0, "only_here": 1.0}, 43: {"accuracy": 0.84, "n_test": 60.0},
            44: {"accuracy": 0.82, "n_test": 60.0}}
    summary = spread(runs)
    assert set(summary) == {"accuracy", "n_test"}
    accuracy = summary["accuracy"]
    assert accuracy["values"] == [0.80, 0.84, 0.82] and accuracy["mean"] == pytest.approx(0.82)
    assert accuracy["std"] == pytest.approx(0.02)
    half = stats.t.ppf(0.975, 2) * 0.02 / 3 ** 0.5  # 4.30 standard errors for three runs
    assert accuracy["ci_low"] == pytest.approx(0.82 - half, abs=1e-6)
    assert accuracy["ci_high"] == pytest.approx(0.82 + half, abs=1e-6)
    assert summary["n_test"]["std"] == 0 and summary["n_test"]["ci_low"] == summary["n_test"]["ci_high"] == 60


def test_seeds_start_at_the_params_own_and_need_two():
    assert seed_values(42, 3) == [42, 43, 44]
    with pytest.raises(SeedsError, match="at least 2 seeds"):
        seed_values(42, 1)


def test_experiments_and_numbers_read_dvc_exp_show_json():
    shown = [{"rev": "workspace", "name": None, "data": {}, "experiments": None},
             {"rev": "abc", "name": "main", "data": {}, "experiments": [{"revs": [{
                 "rev": "def", "name": "seed-43",
                 "data": {"params": {"params.yaml": {"data": {"train": {"seed": 43}}}},
                          "metrics": {"reports/metrics.json": {"data": {"accuracy": 0.8, "per": {"f1": 0.7},
                                                                        "flag": True, "name": "x"}}}}}]}]}]
    found = experiments(shown)
    assert found["seed-43"]["params"]["train"]["seed"] == 43
    assert numbers(found["seed-43"]["metrics"]) == {"accuracy": 0.8, "per.f1": 0.7}


def test_settings_leave_out_the_training_seed_and_name_what_changed():
    base = Params()
    other_seed = Params.model_validate({"train": {"seed": 7}})
    assert settings(base) == settings(other_seed) and "paths" not in settings(base)
    faster = Params.model_validate({"train": {"learning_rate": 5e-5}, "data": {"max_samples": 100}})
    assert changed_settings(settings(base), settings(faster)) == ["data.max_samples", "train.learning_rate"]
    assert changed_settings(None, settings(base))  # nothing measured yet: everything differs
    before_precision = settings(base)
    del before_precision["train"]["precision"]  # seeds measured before train.precision existed
    assert changed_settings(before_precision, settings(base)) == []
    assert changed_settings(before_precision, settings(Params.model_validate({"train": {"precision": "bf16"}}))) \
        == ["train.precision"]


def test_report_section_says_how_to_measure_shows_the_spread_and_flags_other_settings():
    assert "python -m finetune seeds --n 5" in seeds_section({"seeds": []}, [])
    measured = {"seeds": [42, 43], "experiments": ["seed-42", "seed-43"], "confidence": 0.95,
                "metrics": {"accuracy": {"values": [0.8, 0.84], "mean": 0.82, "std": 0.028284, "ci_low": 0.566,
                                         "ci_high": 1.074}, "n_test": {"values": [60, 60], "mean": 60, "std": 0,
                                                                       "ci_low": 60, "ci_high": 60}}}
    section = seeds_section(measured, [])
    assert "| accuracy | 0.8200 | 0.0283 | [0.5660, 1.0740] | 0.8000, 0.8400 |" in section
    assert "n_test" not in section and "other settings" not in section
    assert "**Measured with other settings** (`train.learning_rate` differ)" in seeds_section(
        measured, ["train.learning_rate"])
    assert seeds_section(None, []) == ""
    other = seeds_section(measured, ["data.label_separator", "data.source", "train.learning_rate"])
    assert "| accuracy |" not in other and "python -m finetune seeds --n 5" in other
    assert "other `data.label_separator`, `data.source`)" in other
    assert "| accuracy |" not in seeds_section(measured, ["seed"])  # the data seed draws other splits


def test_a_float_given_to_dvc_reads_back_as_a_number():
    import yaml

    assert yaml_value(5e-05) == "5.0e-05" and yaml.safe_load(yaml_value(5e-05)) == 5e-05
    assert yaml_value(0.001) == "0.001" and yaml_value(16) == "16" and yaml_value("head+tail") == '"head+tail"'


def test_queued_experiments_share_the_cores_and_keep_a_thread_count_the_user_set():
    assert queue_environment(2, {"PATH": "/bin"}, cores=8) == {"PATH": "/bin", "OMP_NUM_THREADS": "4",
                                                              "MKL_NUM_THREADS": "4"}
    assert queue_environment(4, {}, cores=2)["OMP_NUM_THREADS"] == "1"  # never zero threads
    assert queue_environment(2, {"OMP_NUM_THREADS": "3"}, cores=8)["OMP_NUM_THREADS"] == "3"


def test_the_progress_of_experiments_is_passed_on_a_line_per_stage_and_epoch(tmp_path, caplog):
    """A queued experiment's output grows in .dvc/tmp/exps/run/<task>/<task>.out; `dvc queue status` names its task
    by the start of its id. Each stage's start and each progress line are logged once, whole lines only."""
    import logging

    from finetune.core.stage import progress_line
    from finetune.experiments.runs import QueueProgress

    assert progress_line("Running stage 'train':\n") == "stage train"
    assert progress_line("2026-12-06 07:27:08,181 INFO finetune.progress: epoch 1/2: validation loss 0.69") == (
        "epoch 1/2: validation loss 0.69")
    assert progress_line("2026-12-06 07:27:08,181 INFO stages.tokenize: test: 60 rows") is None
    run = tmp_path / ".dvc" / "tmp" / "exps" / "run" / "abc1234ffff"
    run.mkdir(parents=True)
    output = run / "abc1234ffff.out"
    output.write_text("Running stage 'train':\n> python -m stages.train\nx INFO finetune.progress: epoch 1/2: ok\n"
                      "x INFO finetune.progress: epoch 2/2: ha")
    status = "Task     Name     Created    Status\nabc1234  lr-high  10:00 AM   Running\n"
    followed = QueueProgress(tmp_path)
    with caplog.at_level(logging.INFO, logger="finetune"):
        followed.poll(status)
        assert [r.getMessage() for r in caplog.records] == ["lr-high: stage train", "lr-high: epoch 1/2: ok"]
        with output.open("a") as handle:
            handle.write("lf done\n")
        followed.poll(status)
    assert caplog.records[-1].getMessage() == "lr-high: epoch 2/2: half done" and len(caplog.records) == 3


def test_experiments_side_by_side_fit_a_normal_terminal():
    """`python -m finetune exps`: a row per experiment, the params that differ, the headline figures; at 80 columns
    the params column gives way."""
    from finetune.experiments.compare import rows, table

    def rev(name, lr, epochs, accuracy, loss):
        return {"rev": "0" * 40, "name": name, "data": {
            "params": {"params.yaml": {"data": {"train": {"learning_rate": lr, "epochs": epochs, "seed": 42},
                                                "paths": {"model": "models/model"}}}},
            "metrics": {"reports/metrics.json": {"data": {"accuracy": accuracy, "f1_macro": accuracy - 0.01}},
                        "reports/training/metrics.json": {"data": {"eval": {"loss": loss, "f1_macro": 0.8}}}}}}

    shown = [{**rev("workspace", 2e-5, 3, 0.8342, 0.396), "rev": "workspace", "name": None},
             {**rev("main", 2e-5, 3, 0.8342, 0.396), "experiments": [
                 {"revs": [rev("lr-high", 2e-3, 3, 0.5, 0.693)]}, {"revs": [rev("longer", 2e-5, 5, 0.84, 0.39)]}]}]
    found = rows(shown, "reports/metrics.json", "reports/training/metrics.json")
    assert [row.name for row in found] == ["workspace", "main", "lr-high", "longer"]
    text = table(found, width=100)
    lines = text.splitlines()
    assert lines[0].split() == ["experiment", "changed", "params", "test", "acc", "test", "F1ma", "val", "loss",
                                "val", "F1ma"]
    assert lines[3].split() == ["lr-high", "epochs=3", "learning_rate=0.002", "0.5000", "0.4900", "0.6930", "0.8000"]
    assert "seed" not in text and "paths" not in text and max(map(len, lines)) <= 100
    narrow = table(found, width=80)
    assert max(map(len, narrow.splitlines())) <= 80 and "..." in narrow
