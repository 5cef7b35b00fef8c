"""Hyperparameter search: Optuna picks params, each trial is a real DVC experiment.

``python -m finetune search --trials N`` searches the ranges of ``search.space`` in
params.yaml. Every trial runs the whole pipeline as a DVC experiment (``search-<n>`` in
``dvc exp show``, with its params and every metric) in a temporary copy of the repository,
never in the workspace, and is scored by the validation figure of the model that training
keeps (``eval.<search.metric>`` in reports/training/metrics.json): the test split never
chooses. The study lives in Optuna's storage (``search.storage``: an SQLite file by
default, or a database server that several machines share), so rerunning the command
continues it: finished trials stay, a trial that was running when the search was
interrupted is recorded as failed, and ``--trials`` is the total the study should reach. A
trial that fails, or runs past ``search.trial_timeout_s``, is recorded as failed and the
search goes on. The first trial of a new study is the current params. ``--parallel N``
runs N trials at a time through DVC's queue and stops its workers before returning.
At the end: the best trial, ``paths.search`` (every trial) and, in ``paths.search_plots``,
the trial history and the parameters' importances; ``--apply`` makes the best trial's params the
workspace's (``dvc exp apply``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from finetune.core.errors import UserError
from finetune.core.params import Params, SearchRange
from finetune.experiments.runs import dvc, experiments, queue_log_tail, run_queued, run_temp, show

log = logging.getLogger(__name__)

UID = "study_uid"  # a study's identity, in its user attributes and in the summary written from it
TRAINING_METRICS = "metrics.json"  # in paths.training_log: the kept epoch's validation figures
HEARTBEAT_S = 60  # a running trial's heartbeat; one silent for twice as long was interrupted


class SearchError(UserError, RuntimeError):
    """The search cannot go on; the message says why and what to do."""


def current_value(params: Params, key: str) -> Any:
    section, name = key.split(".", 1)
    return getattr(getattr(params, section), name)


def suggest(trial: optuna.Trial, space: dict[str, SearchRange], params: Params) -> dict[str, Any]:
    """One value per searched key: a choice, or a number of the key's own type (whole numbers for integer keys)."""
    values = {}
    for key, spec in space.items():
        if spec.choices is not None:
            values[key] = trial.suggest_categorical(key, spec.choices)
        elif isinstance(current_value(params, key), int):
            values[key] = trial.suggest_int(key, int(spec.low), int(spec.high), log=spec.log)
        else:
            values[key] = trial.suggest_float(key, spec.low, spec.high, log=spec.log)
    return values


def assignments(values: dict[str, Any]) -> str:
    """A trial's params as a log line reads them: train.learning_rate=3.2e-05, train.epochs=4."""
    return ", ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in values.items())


def trial_name(study: str, number: int) -> str:
    return f"{study}-{number}"


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """No warning that Optuna's heartbeats and matplotlib plots are experimental, or that heartbeats are meant for
    ``optimize``: this module records them itself."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


def open_storage(params: Params, repo: Path, heartbeat_s: float = HEARTBEAT_S) -> optuna.storages.RDBStorage:
    """Optuna's storage at ``search.storage`` (a relative SQLite path is relative to the repository), with
    heartbeats: a running trial whose heartbeat stopped for twice the interval was interrupted (on this machine
    or another sharing the study)."""
    url = params.search.storage
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path = path if path.is_absolute() else repo.resolve() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    with quiet_optuna():
        return optuna.storages.RDBStorage(url, heartbeat_interval=max(1, round(heartbeat_s)),
                                          grace_period=max(2, round(2 * heartbeat_s)))


def open_study(params: Params, storage: optuna.storages.RDBStorage) -> optuna.Study:
    """The study of ``search.study``, created on first use with the current params as its first trial; trials
    left running by an interrupted search are marked failed."""
    study = optuna.create_study(study_name=params.search.study, storage=storage, direction=params.search.direction,
                                load_if_exists=True)
    # seeded, but anew for each run of the command: a resumed search must not draw the same params again
    study.sampler = optuna.samplers.TPESampler(seed=params.seed + len(study.trials))
    with quiet_optuna():
        optuna.storages.fail_stale_trials(study)
    if not study.trials:
        study.enqueue_trial({key: current_value(params, key) for key in params.search.space}, skip_if_exists=True)
    if UID not in study.user_attrs:
        study.set_user_attr(UID, uuid.uuid4().hex)
    return study


def check_summary_target(path: Path, study: optuna.Study, overwrite: bool) -> None:
    """A summary of another study at ``path`` (say, the one committed with the project) is kept, unless
    ``overwrite``: the search stops before it runs a trial. This study's own summary is rewritten as it grows."""
    if overwrite or not path.is_file():
        return
    try:
        written = json.loads(path.read_text(encoding="utf-8")).get(UID)
    except (ValueError, AttributeError):
        written = None
    if written != study.user_attrs.get(UID):
        raise SearchError(f"{path} holds the summary of another search, which this one would overwrite: pass "
                          "--overwrite to replace it (and its plots), or set paths.search and paths.search_plots "
                          "to other files")


class Heartbeat:
    """While trials run, records their heartbeats in the storage every interval (from a thread), as Optuna's own
    ``optimize`` does; ask-and-tell trials get none otherwise."""

    def __init__(self, storage: optuna.storages.RDBStorage, trials: list[optuna.Trial],
                 interval: float = HEARTBEAT_S) -> None:
        # Trial._trial_id: the storage's id of the trial, which record_heartbeat takes (no public accessor)
        self.storage, self.ids, self.interval = storage, [t._trial_id for t in trials], interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            for trial_id in self.ids:
                self.storage.record_heartbeat(trial_id)
            if self.stop.wait(self.interval):
                return

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def score(found: dict[str, dict[str, Any]], name: str, metric: str) -> float | None:
    """The trial's validation figure from its experiment's training metrics, None when it has none (it failed)."""
    value = found.get(name, {}).get("metrics", {}).get("eval", {}).get(metric)
    return None if value is None else float(value)


def run_batch(repo: Path, study: optuna.Study, storage: optuna.storages.RDBStorage, params: Params,
              size: int) -> None:
    """Ask ``size`` trials, run them as experiments (one in a temporary copy, several through the queue), and tell
    the study each one's score, or that it failed."""
    settings = params.search
    with quiet_optuna():
        trials = [study.ask() for _ in range(size)]
    runs = {trial_name(settings.study, t.number): suggest(t, settings.space, params) for t in trials}
    for name, values in runs.items():
        log.info("%s starts: %s", name, assignments(values))
    failures: dict[str, str] = {}
    with Heartbeat(storage, trials):
        if size == 1:
            name, values = next(iter(runs.items()))
            failure = run_temp(repo, name, values, settings.trial_timeout_s)
            if failure:
                failures[name] = failure
        else:
            run_queued(repo, runs, jobs=size, timeout=settings.trial_timeout_s)  # the batch's trials side by side
    found = experiments(show(repo), f"{params.paths.training_log}/{TRAINING_METRICS}")
    for trial, name in zip(trials, runs, strict=True):
        value = None if name in failures else score(found, name, settings.metric)
        if value is None:
            why = failures.get(name) or queue_log_tail(repo, name) or "its experiment has no training metrics"
            log.warning("trial %s failed: %s", name, why)
            trial.set_user_attr("failure", why[-2000:])
            study.tell(trial, state=TrialState.FAIL)
        else:
            log.info("%s: validation %s %.4f with %s", name, settings.metric, value, assignments(runs[name]))
            study.tell(trial, value)


def finished(study: optuna.Study) -> int:
    return sum(t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED) for t in study.trials)


def open_search(repo: Path, params: Params) -> tuple[optuna.storages.RDBStorage, optuna.Study]:
    """The storage and the study of ``search.storage`` and ``search.study`` (created on first use)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log line per trial says what matters
    storage = open_storage(params, repo)
    return storage, open_study(params, storage)


def run_search(repo: Path, params: Params, trials: int, parallel: int = 1,
               storage: optuna.storages.RDBStorage | None = None, study: optuna.Study | None = None) -> optuna.Study:
    """Run trials until the study has ``trials`` finished ones (rerunning continues an interrupted study)."""
    if trials < 1 or parallel < 1:
        raise SearchError(f"--trials {trials} and --parallel {parallel} must be at least 1")
    if storage is None or study is None:
        storage, study = open_search(repo, params)
    while (left := trials - finished(study)) > 0:
        run_batch(repo, study, storage, params, min(parallel, left))
    return study


def summary(study: optuna.Study, params: Params) -> dict[str, Any]:
    """Every trial (number, experiment, state, params, validation score) and the best one."""
    rows = [{"number": t.number, "experiment": trial_name(params.search.study, t.number), "state": t.state.name,
             "params": t.params, "value": t.value, "failure": t.user_attrs.get("failure")} for t in study.trials]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best = None if not complete else {"number": study.best_trial.number, "value": study.best_value,
                                      "params": study.best_params,
                                      "experiment": trial_name(params.search.study, study.best_trial.number)}
    return {"study": params.search.study, UID: study.user_attrs.get(UID),
            "metric": f"validation {params.search.metric}", "direction": params.search.direction, "best": best,
            "trials": rows}


def plot(study: optuna.Study, folder: Path) -> list[Path]:
    """The trials' history and, once two trials have finished, each parameter's importance (fANOVA), as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    folder.mkdir(parents=True, exist_ok=True)
    drawn = {"history.png": plot_optimization_history}
    if sum(t.state == TrialState.COMPLETE for t in study.trials) >= 2:
        drawn["importances.png"] = plot_param_importances
    paths = []
    for name, draw in drawn.items():
        with quiet_optuna():  # Optuna's matplotlib plots are marked experimental
            axes = draw(study)
        axes.figure.set_size_inches(8, 4.5)
        axes.figure.tight_layout()
        axes.figure.savefig(folder / name, dpi=100)
        plt.close(axes.figure)
        paths.append(folder / name)
    return paths


def apply_best(repo: Path, study: optuna.Study, params: Params) -> str:
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise SearchError("no trial finished: nothing to apply")
    name = trial_name(params.search.study, study.best_trial.number)
    applied = dvc(repo, "exp", "apply", name)
    if applied.returncode:
        raise SearchError(f"`dvc exp apply {name}` failed: {applied.stderr.strip()}")
    return name
