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

Several machines share a study through a database server (``search.storage`` a PostgreSQL URL) and git and DVC
remotes (``search.git_remote``): each worker runs the command in its own clone, draws trials from the shared study,
and pushes each finished trial's experiment (``dvc exp push``); a worker that died leaves a trial whose heartbeat
stops, which the next worker to look records as failed; a worker that loses the database stops its trial and exits.
``--collect`` on any clone pulls every completed trial's experiment and writes the summary and plots
(docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.engine
import sqlalchemy.exc
from dvc.repo import Repo
from optuna.trial import TrialState

from finetune.core.errors import UserError
from finetune.core.params import Params, SearchRange
from finetune.experiments.runs import (
    dvc,
    experiments,
    git,
    pull_experiments,
    push_experiment,
    queue_log_tail,
    run_queued,
    run_temp,
    show,
)

log = logging.getLogger(__name__)

UID = "study_uid"  # a study's identity, in its user attributes and in the summary written from it
METRIC = "metric"  # the validation figure a study was created to optimize, in its user attributes
COMMIT = "commit"  # a shared study's git commit, which every worker's clone must be at
TRAINING_METRICS = "metrics.json"  # in paths.training_log: the kept epoch's validation figures
# what a lost or unreachable database raises: SQLAlchemy's errors, and Optuna's wrapper of a failed commit
DATABASE_ERRORS = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)
CONNECT_TIMEOUT_S = 10  # a database server that does not answer fails the connection after this long
SCHEMA_ATTEMPTS = 3  # tries to open a storage whose tables another worker is creating at the same moment
DEAD_WORKER = "its worker stopped answering: the machine or the command died"  # why a stale trial failed


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


def storage_url(params: Params, repo: Path) -> str:
    """``search.storage`` as SQLAlchemy takes it: a relative SQLite path lies in the repository; ``postgresql://``
    (and ``postgres://``) use psycopg 3, the driver of the ``distributed`` extra."""
    url = params.search.storage
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path = path if path.is_absolute() else repo.resolve() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


def shown_url(url: str) -> str:
    """The storage URL as messages show it: without its password."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def reason(error: BaseException) -> str:
    """The first line of what the database driver said."""
    cause = getattr(error, "orig", None) or error.__cause__ or error
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


def say_worker_died(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Optuna calls this for each running trial it records as failed because its heartbeat stopped."""
    log.warning("trial %s failed: %s", trial_name(study.study_name, trial.number), DEAD_WORKER)


def open_storage(params: Params, repo: Path, heartbeat_s: float | None = None) -> optuna.storages.RDBStorage:
    """Optuna's storage at ``search.storage``, with heartbeats every ``search.heartbeat_s`` (or ``heartbeat_s``): a
    running trial whose heartbeat stopped for twice as long was interrupted (on this machine or another sharing the
    study). A server that cannot be reached, or a missing driver, is refused in one line."""
    url = storage_url(params, repo)
    interval = params.search.heartbeat_s if heartbeat_s is None else heartbeat_s
    engine: dict[str, Any] = {}
    if url.startswith("postgresql"):
        # pre-ping: a connection the server dropped is replaced, not used; a dead server fails fast
        engine = {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    attempts = 0
    try:
        while True:
            try:
                with quiet_optuna():
                    return optuna.storages.RDBStorage(url, engine_kwargs=engine,
                                                      heartbeat_interval=max(1, round(interval)),
                                                      grace_period=max(2, round(2 * interval)),
                                                      heartbeat_stale_trial_callback=say_worker_died)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # workers started together on an empty database all create Optuna's tables; all but one collide
                # ("duplicate key", "already exists") and find the tables made when they try again
                attempts += 1
                if attempts == SCHEMA_ATTEMPTS:
                    raise
                time.sleep(attempts)
    except ImportError as error:  # Optuna's, over the driver's ModuleNotFoundError
        missing = getattr(error.__cause__, "name", None) or "its driver"
        raise SearchError(f"search.storage {shown_url(url)} needs the database driver {missing}, which is not "
                          "installed: pip install '.[distributed]' (psycopg for PostgreSQL)") from error
    except DATABASE_ERRORS as error:
        raise SearchError(f"the study's database at {shown_url(url)} cannot be reached ({reason(error)}): start it, "
                          "or correct search.storage in params.yaml") from error


def head_commit(repo: Path) -> str:
    found = git(repo, "rev-parse", "HEAD")
    if found.returncode:
        raise SearchError(f"{repo.resolve()} has no git commit to run a shared search from: commit the project, "
                          "and run every worker in a clone of that commit")
    return found.stdout.strip()


def check_objective(study: optuna.Study, params: Params, url: str) -> None:
    """The study optimizes the metric and direction params.yaml asks for, else the trials would be scored apart."""
    settings = params.search
    direction = study.direction.name.lower()
    metric = study.user_attrs.get(METRIC, settings.metric)
    if (metric, direction) != (settings.metric, settings.direction):
        raise SearchError(f"the study '{settings.study}' in {shown_url(url)} was created to {direction} validation "
                          f"{metric}; params.yaml asks to {settings.direction} validation {settings.metric}: set "
                          "search.metric and search.direction back, or name a new study in search.study")


def check_commit(study: optuna.Study, params: Params, commit: str | None) -> None:
    """Every worker of a shared study runs the same code and params: the commit the study was started from."""
    started = study.user_attrs.get(COMMIT)
    if commit is not None and started is not None and commit != started:
        raise SearchError(f"the study '{params.search.study}' runs its trials from commit {started[:12]}; this clone "
                          f"is at {commit[:12]}: `git fetch && git checkout {started[:12]}` here, or name a new study "
                          "in search.study")


def open_study(params: Params, storage: optuna.storages.RDBStorage, commit: str | None = None,
               create: bool = True) -> optuna.Study:
    """The study of ``search.study``, created on first use (unless not ``create``) with the current params as its
    first trial; trials whose heartbeat stopped (their worker died) are marked failed. The worker that creates the
    study records its metric and, for a shared search, its ``commit``; every other worker is checked against them."""
    settings = params.search
    url, created = storage.url, False
    try:
        if create:
            optuna.create_study(study_name=settings.study, storage=storage, direction=settings.direction)
            created = True
    except optuna.exceptions.DuplicatedStudyError:
        pass  # another worker (or an earlier run) created it
    try:
        study = optuna.load_study(study_name=settings.study, storage=storage)
    except KeyError as error:
        raise SearchError(f"there is no study '{settings.study}' in {shown_url(url)}: run `python -m finetune search "
                          "--trials N` first, or set search.study to the study to collect") from error
    if created:
        study.set_user_attr(UID, uuid.uuid4().hex)
        study.set_user_attr(METRIC, settings.metric)
        if commit is not None:
            study.set_user_attr(COMMIT, commit)
        study.enqueue_trial({key: current_value(params, key) for key in settings.space})
    check_objective(study, params, url)
    check_commit(study, params, commit)
    if UID not in study.user_attrs:  # a study made before studies carried their identity
        study.set_user_attr(UID, uuid.uuid4().hex)
    # seeded, but anew for each run of the command: a resumed search must not draw the same params again. Workers
    # sharing a study draw unseeded: two started at once would otherwise draw the same params.
    shared = settings.git_remote is not None
    study.sampler = optuna.samplers.TPESampler(seed=None if shared else params.seed + len(study.trials))
    with quiet_optuna():
        optuna.storages.fail_stale_trials(study)
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
    ``optimize`` does; ask-and-tell trials get none otherwise. When the database stops answering for as long as the
    other workers wait before they record these trials as failed, ``lost`` is set (with the ``error``): the trials
    can no longer be told, so they are stopped."""

    def __init__(self, storage: optuna.storages.RDBStorage, trials: list[optuna.Trial],
                 interval: float) -> None:
        # Trial._trial_id: the storage's id of the trial, which record_heartbeat takes (no public accessor)
        self.storage, self.ids, self.interval = storage, [t._trial_id for t in trials], interval
        self.stop, self.lost = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        answered = time.monotonic()
        while True:
            try:
                for trial_id in self.ids:
                    self.storage.record_heartbeat(trial_id)
                answered = time.monotonic()
            except DATABASE_ERRORS as error:
                self.error = error
                if time.monotonic() - answered >= 2 * self.interval:
                    self.lost.set()
                    return
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


def lost_database(url: str, error: BaseException | None, names: list[str]) -> SearchError:
    stopped = f"; its trial {', '.join(names)} was stopped (the other workers record it as failed)" if names else ""
    return SearchError(f"this worker lost the study's database at {shown_url(url)} "
                       f"({reason(error) if error else 'no answer'}){stopped}: run the command again once the "
                       "database answers")


def push(repo: Path, params: Params, name: str) -> str | None:
    """A finished trial's experiment to the shared remotes (a shared search), else nothing: None when done, else
    why not."""
    settings = params.search
    if settings.git_remote is None:
        return None
    failure = push_experiment(repo, settings.git_remote, settings.dvc_remote, name)
    if failure is None:
        log.info("%s pushed to %s", name, settings.git_remote)
    return failure


def run_batch(repo: Path, study: optuna.Study, storage: optuna.storages.RDBStorage, params: Params,
              size: int) -> None:
    """Ask ``size`` trials, run them as experiments (one in a temporary copy, several through the queue), push each
    finished one (a shared search) and tell the study its score, or that it failed."""
    settings = params.search
    with quiet_optuna():
        trials = [study.ask() for _ in range(size)]
    runs = {trial_name(settings.study, t.number): suggest(t, settings.space, params) for t in trials}
    for name, values in runs.items():
        log.info("%s starts: %s", name, assignments(values))
    failures: dict[str, str] = {}
    try:
        with Heartbeat(storage, trials, settings.heartbeat_s) as heartbeat:
            if size == 1:
                name, values = next(iter(runs.items()))
                failure = run_temp(repo, name, values, settings.trial_timeout_s, stop=heartbeat.lost)
                if failure:
                    failures[name] = failure
            else:  # the batch's trials side by side
                run_queued(repo, runs, jobs=size, timeout=settings.trial_timeout_s, stop=heartbeat.lost)
    except KeyboardInterrupt:  # Ctrl-C: the experiments were stopped; say so now rather than when heartbeats lapse
        for trial in trials:
            trial.set_user_attr("failure", "the search was interrupted")
            study.tell(trial, state=TrialState.FAIL)
        raise
    if heartbeat.lost.is_set():
        raise lost_database(storage.url, heartbeat.error, list(runs))
    found = experiments(show(repo), f"{params.paths.training_log}/{TRAINING_METRICS}")
    unpushed = None  # the first push that failed: the worker stops after this batch
    for trial, name in zip(trials, runs, strict=True):
        value = None if name in failures else score(found, name, settings.metric)
        if value is not None and (failed := push(repo, params, name)) is not None:
            failures[name], value = f"its experiment could not be pushed to {settings.git_remote}: {failed}", None
            unpushed = unpushed or failed
        if value is None:
            why = failures.get(name) or queue_log_tail(repo, name) or "its experiment has no training metrics"
            log.warning("trial %s failed: %s", name, why)
            trial.set_user_attr("failure", why[-2000:])
            study.tell(trial, state=TrialState.FAIL)
        else:
            log.info("%s: validation %s %.4f with %s", name, settings.metric, value, assignments(runs[name]))
            study.tell(trial, value)
    if unpushed is not None:
        raise SearchError(f"`dvc exp push {settings.git_remote}` failed ({unpushed}): the search "
                          "stopped; fix search.git_remote / search.dvc_remote (`git remote -v`, `dvc remote list`) "
                          "and run it again")


def counted(study: optuna.Study) -> int:
    """Trials that count towards ``--trials``: finished ones, and those running here or on other workers."""
    return sum(t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED, TrialState.RUNNING)
               for t in study.trials)


def check_remotes(repo: Path, params: Params) -> None:
    """A shared search's remotes exist in this clone before any trial runs: git's, and DVC's (named or default)."""
    settings = params.search
    if settings.git_remote is None:
        return
    if git(repo, "remote", "get-url", settings.git_remote).returncode:
        raise SearchError(f"search.git_remote '{settings.git_remote}' is no git remote of {repo.resolve()}: "
                          f"`git remote add {settings.git_remote} URL`, or set search.git_remote to one of "
                          "`git remote -v`")
    with Repo(str(repo)) as project:  # DVC's own reading of its config (`dvc remote list` wraps long URLs)
        remotes, default = set(project.config["remote"]), project.config["core"].get("remote")
    wanted = settings.dvc_remote or default
    if not wanted or wanted not in remotes:
        named = f"search.dvc_remote '{wanted}' is" if settings.dvc_remote else "no default DVC remote is"
        raise SearchError(f"{named} set up in {repo.resolve()}, where the trials' outputs would go: "
                          "`dvc remote add -d NAME URL` (and commit .dvc/config), or set search.dvc_remote")


def open_search(repo: Path, params: Params, create: bool = True) -> tuple[optuna.storages.RDBStorage, optuna.Study]:
    """The storage and the study of ``search.storage`` and ``search.study`` (created on first use unless not
    ``create``). A shared search (``search.git_remote`` set) checks its remotes and this clone's commit first."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log line per trial says what matters
    check_remotes(repo, params)
    commit = head_commit(repo) if params.search.git_remote is not None else None
    storage = open_storage(params, repo)
    try:
        return storage, open_study(params, storage, commit, create)
    except DATABASE_ERRORS as error:
        raise lost_database(storage.url, error, []) from error


def run_search(repo: Path, params: Params, trials: int, parallel: int = 1,
               storage: optuna.storages.RDBStorage | None = None, study: optuna.Study | None = None) -> optuna.Study:
    """Run trials until the study has ``trials`` finished or running ones (rerunning continues an interrupted
    study; workers sharing it stop together)."""
    if trials < 1 or parallel < 1:
        raise SearchError(f"--trials {trials} and --parallel {parallel} must be at least 1")
    if storage is None or study is None:
        storage, study = open_search(repo, params)
    try:
        while True:
            with quiet_optuna():
                optuna.storages.fail_stale_trials(study)  # a dead worker's trial counts as failed, not running
            if (left := trials - counted(study)) <= 0:
                return study
            run_batch(repo, study, storage, params, min(parallel, left))
    except DATABASE_ERRORS as error:
        raise lost_database(storage.url, error, []) from error


def collect(repo: Path, params: Params, study: optuna.Study) -> None:
    """Pull every completed trial's experiment of the (shared) study from ``search.git_remote`` (outputs from the
    DVC remote), and check each: its validation figure is the one the study holds."""
    settings = params.search
    complete = {trial_name(settings.study, t.number): t.value for t in study.trials if t.state == TrialState.COMPLETE}
    if settings.git_remote is not None and complete:
        failure = pull_experiments(repo, settings.git_remote, settings.dvc_remote, list(complete))
        if failure is not None:
            raise SearchError(f"`dvc exp pull {settings.git_remote}` failed: {failure}")
    baseline = study.user_attrs.get(COMMIT)
    found = experiments(show(repo, *(["--rev", baseline] if baseline else [])),
                        f"{params.paths.training_log}/{TRAINING_METRICS}")
    for name, value in complete.items():
        if score(found, name, settings.metric) != value:
            raise SearchError(f"the experiment {name} is missing here, or its validation {settings.metric} is not the "
                              f"study's ({value}): pull it (`dvc exp pull {settings.git_remote or 'REMOTE'} {name}`)")
    running = sum(t.state == TrialState.RUNNING for t in study.trials)
    log.info("collected %d completed trials of %d%s", len(complete), len(study.trials),
             f"; {running} still running" if running else "")


def failure_reason(trial: optuna.trial.FrozenTrial, params: Params) -> str | None:
    """Why a trial failed: what its worker recorded, or, when its worker recorded nothing, that its heartbeat
    stopped (every failure a worker tells carries its reason)."""
    if trial.state != TrialState.FAIL or "failure" in trial.user_attrs:
        return trial.user_attrs.get("failure")
    return f"{DEAD_WORKER} (no heartbeat for {2 * params.search.heartbeat_s:g} s)"


def summary(study: optuna.Study, params: Params) -> dict[str, Any]:
    """Every trial (number, experiment, state, params, validation score) and the best one."""
    rows = [{"number": t.number, "experiment": trial_name(params.search.study, t.number), "state": t.state.name,
             "params": t.params, "value": t.value, "failure": failure_reason(t, params)} for t in study.trials]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best = None if not complete else {"number": study.best_trial.number, "value": study.best_value,
                                      "params": study.best_params,
                                      "experiment": trial_name(params.search.study, study.best_trial.number)}
    return {"study": params.search.study, UID: study.user_attrs.get(UID), COMMIT: study.user_attrs.get(COMMIT),
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
