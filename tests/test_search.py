"""Search: Optuna's study in its storage, the first trial is the current params, trials suggest typed values."""

import time

import pytest
from optuna.trial import TrialState

from finetune.core.params import Params, ParamsError, parse_params
from finetune.experiments.search import (
    Heartbeat,
    SearchError,
    open_storage,
    open_study,
    quiet_optuna,
    run_search,
    suggest,
    summary,
)


def params_with(tmp_path, **search) -> Params:
    return Params.model_validate({"search": {"storage": "sqlite:///study/optuna.db", **search}})  # in tmp_path


def test_the_first_trial_is_the_current_params_and_values_have_the_keys_types(tmp_path):
    params = params_with(tmp_path)
    study = open_study(params, open_storage(params, tmp_path))
    first = study.ask()
    values = suggest(first, params.search.space, params)
    assert values == {"train.learning_rate": 2e-5, "train.epochs": 3, "train.batch_size": 16,
                      "train.weight_decay": 0.01}
    second = suggest(study.ask(), params.search.space, params)
    assert isinstance(second["train.epochs"], int) and 2 <= second["train.epochs"] <= 5
    assert 1e-5 <= second["train.learning_rate"] <= 1e-4 and second["train.batch_size"] in (16, 32)


def test_a_reopened_study_keeps_its_trials_and_fails_the_ones_left_running(tmp_path):
    params = params_with(tmp_path)
    storage = open_storage(params, tmp_path, heartbeat_s=1)
    study = open_study(params, storage)
    done = study.ask()
    suggest(done, params.search.space, params)
    study.tell(done, 0.8)
    with quiet_optuna():
        interrupted, running = study.ask(), study.ask()
    with Heartbeat(storage, [interrupted, running], interval=1):
        time.sleep(1.5)
    # the search was killed while `interrupted` ran; another machine still runs `running`
    with Heartbeat(storage, [running], interval=1):
        time.sleep(3)
        again = open_study(params, open_storage(params, tmp_path, heartbeat_s=1))
        assert [t.state for t in again.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING]
    assert again.trials[0].params["train.epochs"] == 3  # the current params' trial, enqueued once
    assert (tmp_path / "study" / "optuna.db").is_file()  # a relative SQLite path lies in the repository


def test_summary_names_each_trials_experiment_and_the_best(tmp_path):
    params = params_with(tmp_path, direction="maximize")
    study = open_study(params, open_storage(params, tmp_path))
    for value in (0.7, None, 0.9):
        trial = study.ask()
        suggest(trial, params.search.space, params)
        study.tell(trial, value) if value is not None else study.tell(trial, state=TrialState.FAIL)
    result = summary(study, params)
    assert [t["state"] for t in result["trials"]] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert result["best"]["experiment"] == "search-2" and result["best"]["value"] == 0.9
    assert result["metric"] == "validation f1_macro"


def test_a_summary_of_another_search_is_kept_unless_overwrite_is_asked(tmp_path):
    """The project commits reports/search.json from its own search: a new study stops before its first trial
    rather than overwrite it; a study rewrites its own summary as it grows."""
    import json

    from finetune.core.files import write_json
    from finetune.experiments.search import SearchError, check_summary_target

    params = params_with(tmp_path)
    study = open_study(params, open_storage(params, tmp_path))
    target = tmp_path / "search.json"
    check_summary_target(target, study, overwrite=False)  # nothing there yet
    target.write_text(json.dumps({"study": "search", "trials": []}))  # committed, written by another study
    with pytest.raises(SearchError, match=r"search\.json holds the summary of another search.*--overwrite"):
        check_summary_target(target, study, overwrite=False)
    check_summary_target(target, study, overwrite=True)
    write_json(summary(study, params), target)
    again = open_study(params, open_storage(params, tmp_path))  # the same study, reopened: its own summary
    check_summary_target(target, again, overwrite=False)


@pytest.mark.parametrize("space, message", [
    ({"train.lr": {"low": 1, "high": 2}}, "are no params keys"),
    ({"train.epochs": {"low": 5, "high": 2}}, "low < high"),
    ({"train.learning_rate": {"low": 0, "high": 1, "log": True}}, "log range needs low > 0"),
    ({"train.batch_size": {"choices": [16], "low": 1}}, "either choices or low/high"),
])
def test_a_bad_search_space_fails_when_params_are_read(space, message):
    with pytest.raises(ParamsError, match=message):
        parse_params({"search": {"space": space}})


def test_no_trials_is_refused(tmp_path):
    with pytest.raises(SearchError, match="at least 1"):
        run_search(tmp_path, params_with(tmp_path), trials=0)




def test_storage_urls_use_psycopg_for_postgresql_and_messages_hide_the_password(tmp_path):
    from finetune.experiments.search import shown_url, storage_url

    def url(storage: str) -> str:
        return storage_url(Params.model_validate({"search": {"storage": storage}}), tmp_path)

    assert url("postgresql://u:pw@db:5432/optuna") == "postgresql+psycopg://u:pw@db:5432/optuna"
    assert url("postgres://u@db/optuna") == "postgresql+psycopg://u@db/optuna"
    assert url("postgresql+psycopg2://u@db/optuna") == "postgresql+psycopg2://u@db/optuna"  # a driver named is kept
    assert url("sqlite:///rel/optuna.db") == f"sqlite:///{tmp_path.resolve()}/rel/optuna.db"
    assert shown_url("postgresql+psycopg://u:pw@db:5432/optuna") == "postgresql+psycopg://u:***@db:5432/optuna"


def test_a_storage_whose_driver_is_missing_names_the_extra(tmp_path):
    params = Params.model_validate({"search": {"storage": "mysql://u:pw@127.0.0.1/optuna"}})
    with pytest.raises(SearchError, match=r"needs the database driver MySQLdb.*pip install '\.\[distributed\]'"):
        open_storage(params, tmp_path)


def test_a_study_made_for_another_metric_or_direction_is_refused(tmp_path):
    params = params_with(tmp_path)
    open_study(params, open_storage(params, tmp_path))  # maximize validation f1_macro
    for other in ({"direction": "minimize"}, {"metric": "accuracy"}):
        changed = params_with(tmp_path, **other)
        with pytest.raises(SearchError, match=r"created to maximize validation f1_macro; params\.yaml asks to "):
            open_study(changed, open_storage(changed, tmp_path))


def test_trials_running_on_other_workers_count_and_a_dead_workers_trial_says_why(tmp_path):
    from finetune.experiments.search import counted

    params = params_with(tmp_path, heartbeat_s=1)
    storage = open_storage(params, tmp_path)
    study = open_study(params, storage)
    done = study.ask()
    study.tell(done, 0.5)
    with quiet_optuna():
        elsewhere = study.ask()  # another worker's trial: it counts towards --trials while it runs
    with Heartbeat(storage, [elsewhere], interval=1):
        assert counted(study) == 2
    time.sleep(3.5)  # that worker died: its heartbeat stopped (SQLite's clock counts whole seconds)
    again = open_study(params, open_storage(params, tmp_path))
    assert [t.state for t in again.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert "no heartbeat for 2 s" in summary(again, params)["trials"][1]["failure"]
