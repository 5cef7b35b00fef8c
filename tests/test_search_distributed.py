"""A search shared by several machines: the study on a throwaway PostgreSQL server, each trial's experiment pushed to
a bare git repository and a local DVC remote, workers in their own clones, one of them killed; a third clone
collects. Also what a worker does when the database goes away or it is stopped, and the one-line refusals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from optuna.trial import TrialState

from finetune.experiments.runs import experiments
from finetune.experiments.search import storage_url
from tests.conftest import ROOT, free_port, make_repo, offline_env, run, set_params, small_params

pytestmark = pytest.mark.pipeline

PG_STUDY = "shared"


def study_of(url: str, name: str = PG_STUDY) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=url.replace("postgresql://", "postgresql+psycopg://"))


def wait_for(condition, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def worker(repo: Path, *args: str, log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """`python -m finetune search ARGS --repo REPO` (from ``cwd``, the repository by default), its output in ``log``
    (a file: the test reads it as it grows)."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "finetune", "search", *args, "--repo", str(repo)],
                                cwd=cwd or repo, env=offline_env(), stdout=out, stderr=subprocess.STDOUT, text=True)


def wait_for_stage(process: subprocess.Popen, marker: str, log: Path) -> None:
    """Until the sleeper's stage runs; a worker that ended first fails the test with its output."""
    def running() -> bool:
        assert process.poll() is None, log.read_text()
        return bool(processes_running(marker))

    wait_for(running, 120, "the trial's stage to start")


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a worker and everything it started, as when its machine dies: nothing gets to clean up."""
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    for member in tree:
        member.kill()
    process.wait()


def processes_running(marker: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]


# --- a worker on its own: refusals, a lost database, a stop --------------------------------------------------------


@pytest.fixture(scope="module")
def sleeper(tmp_path_factory) -> tuple[Path, str]:
    """A DVC project whose one stage sleeps (a long trial) under the project's params.yaml: what a worker does while
    a trial runs, without training anything. The marker finds the stage's process."""
    repo = tmp_path_factory.mktemp("sleeper") / "repo"
    repo.mkdir()
    marker = f"finetune-sleeper-{uuid.uuid4().hex[:8]}"
    (repo / "params.yaml").write_text((Path(__file__).parents[1] / "params.yaml").read_text())
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {
        "cmd": f"python -c \"import time; time.sleep(600)  # {marker}\"", "params": ["train.learning_rate"]}}}))
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    run("git add -A && git commit -q -m init", repo)
    return repo, marker


def search_fails(repo: Path, *args: str) -> str:
    """The one line a refused `python -m finetune search` prints, checked to come at once with exit status 1."""
    result = run([sys.executable, "-m", "finetune", "search", *args, "--repo", str(repo)], ROOT, check=False,
                 timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_bad_settings_are_refused_in_one_line_before_any_trial(sleeper, postgres):
    repo, _ = sleeper
    set_params(repo, {"search.storage": f"postgresql://finetune:secret@127.0.0.1:{free_port()}/optuna"})
    line = search_fails(repo, "--trials", "1")
    assert "cannot be reached" in line and "secret" not in line and "***" in line and "search.storage" in line
    set_params(repo, {"search.storage": postgres.url, "search.study": "objective", "search.git_remote": "origin"})
    assert "search.git_remote 'origin' is no git remote" in search_fails(repo, "--trials", "1")
    run(["git", "remote", "add", "origin", str(repo.parent / "nowhere.git")], repo)
    assert "no default DVC remote is set up" in search_fails(repo, "--trials", "1")
    set_params(repo, {"search.git_remote": None})
    assert "there is no study 'objective'" in search_fails(repo, "--collect")
    assert "--trials N to run trials, or --collect" in search_fails(repo, "--trials", "1", "--collect")
    optuna.create_study(study_name="objective", direction="minimize",
                        storage=storage_url_of(postgres.url)).set_user_attr("metric", "loss")
    line = search_fails(repo, "--trials", "1")
    assert "was created to minimize validation loss; params.yaml asks to maximize validation f1_macro" in line
    assert not study_of(postgres.url, "objective").trials  # refused before its first trial


def test_a_worker_that_loses_the_database_stops_its_trial_and_says_so(sleeper, postgres, tmp_path):
    repo, marker = sleeper
    set_params(repo, {"search.storage": postgres.url, "search.study": "lost", "search.heartbeat_s": 1,
                      "search.git_remote": None})
    process = worker(repo, "--trials", "2", log=tmp_path / "worker.log", cwd=ROOT)
    try:
        wait_for_stage(process, marker, tmp_path / "worker.log")
        postgres.stop()
        assert process.wait(timeout=60) == 1
    finally:
        process.kill()
        postgres.start()
    output = (tmp_path / "worker.log").read_text()
    assert output.strip().splitlines()[-1].startswith(
        f"error: this worker lost the study's database at postgresql+psycopg://finetune@127.0.0.1:{postgres.port}"
        "/postgres ("), output
    assert "its trial lost-0 was stopped" in output and "Traceback" not in output
    wait_for(lambda: not processes_running(marker), 10, "the stopped trial's stage to end")
    # the next worker to look records the trial as failed: its heartbeat stopped
    time.sleep(2)
    run([sys.executable, "-m", "finetune", "search", "--collect", "--repo", str(repo)], ROOT, check=False)
    summary = json.loads((repo / "reports/search.json").read_text())
    assert [t["state"] for t in summary["trials"]] == ["FAIL"] and "no heartbeat" in summary["trials"][0]["failure"]


def test_a_stopped_worker_ends_its_trial_and_records_it_failed_at_once(sleeper, tmp_path):
    """`kill` (SIGTERM) or Ctrl-C: the trial's stage ends with it and the study says why, without waiting for the
    heartbeats to lapse."""
    repo, marker = sleeper
    set_params(repo, {"search.storage": "sqlite:///.search/stopped.db", "search.heartbeat_s": 60,
                      "search.study": "stopped"})
    process = worker(repo, "--trials", "1", "--overwrite", log=tmp_path / "worker.log", cwd=ROOT)
    try:
        wait_for_stage(process, marker, tmp_path / "worker.log")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 130
    finally:
        process.kill()
    assert "search stopped: the trial running here was stopped" in (tmp_path / "worker.log").read_text()
    wait_for(lambda: not processes_running(marker), 10, "the stopped trial's stage to end")
    trial = optuna.load_study(study_name="stopped", storage=f"sqlite:///{repo}/.search/stopped.db").trials[0]
    assert trial.state == TrialState.FAIL and trial.user_attrs["failure"] == "the search was interrupted"


def test_a_trial_that_cannot_be_pushed_fails_and_stops_the_worker(tmp_path):
    """A trial is complete only once its experiment is pushed: a git remote that cannot take it fails the trial
    with DVC's words and stops the worker in one line. The project's one stage writes the validation figure the
    search scores (a finished trial in seconds)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    metrics = "reports/training/metrics.json"
    write = ("import json, os; os.makedirs('reports/training', exist_ok=True); "
             f"json.dump({{'eval': {{'f1_macro': 0.5}}}}, open('{metrics}', 'w'))")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {
        "cmd": f'python -c "{write}"', "params": ["train.learning_rate"],
        "metrics": [{metrics: {"cache": False}}]}}}))
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote")], repo)
    run(["git", "remote", "add", "origin", str(tmp_path / "gone.git")], repo)  # never created: pushes fail
    set_params(repo, {"search.storage": "sqlite:///.search/push.db", "search.study": "push",
                      "search.git_remote": "origin"})
    run("git add -A && git commit -q -m init", repo)
    result = run([sys.executable, "-m", "finetune", "search", "--trials", "2", "--repo", str(repo)], ROOT,
                 check=False, timeout=300)
    assert result.returncode == 1, result.stderr
    line = result.stderr.strip().splitlines()[-1]  # the trial's log lines, then the one error line
    assert line.startswith("error: `dvc exp push origin` failed (") and "No git repository was found" in line
    assert "the search stopped" in line and "Traceback" not in result.stderr
    study = optuna.load_study(study_name="push", storage=f"sqlite:///{repo}/.search/push.db")
    assert [t.state for t in study.trials] == [TrialState.FAIL]  # the worker stopped: no second trial
    assert study.trials[0].user_attrs["failure"].startswith("its experiment could not be pushed to origin: ")


def storage_url_of(url: str) -> str:
    from finetune.core.params import Params

    return storage_url(Params.model_validate({"search": {"storage": url}}), Path("."))


# --- two workers on the real pipeline, one killed; a third clone collects ------------------------------------------


def test_two_workers_share_a_study_one_dies_and_a_third_clone_collects_every_trial(tmp_path, tiny_model, postgres):
    """Three trials of a study on PostgreSQL. Workers A and B, each in its own clone of a bare git repository, start
    together and draw a trial each; B is killed with everything it started once its trial's stages run. A finishes its
    trial, records B's as failed (its heartbeat stopped), runs the third, and pushes each finished trial's
    experiment (git commit to the bare repository, outputs to the local DVC remote). A third clone collects: every
    completed trial is there, its metrics the study's, B's trial FAIL, no trial run twice; the best applies with its
    outputs."""
    origin, remote = tmp_path / "origin.git", tmp_path / "dvc-remote"
    run(["git", "init", "-q", "--bare", str(origin)], tmp_path)
    # beside every clone: each trial's temporary copy of its clone reads it by the same relative path
    rows = [(f"review {i} was {'great fun' if i % 2 else 'a bore'}", "good" if i % 2 else "bad") for i in range(120)]
    (tmp_path / "reviews.csv").write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows))
    seed = make_repo(tmp_path / "seed", small_params(
        tiny_model, **{"data.source": "../reviews.csv", "train.epochs": 1, "export.onnx": False,
                       "export.int8": False, "explain.texts": 0,
                       "search.storage": postgres.url, "search.study": PG_STUDY, "search.heartbeat_s": 1,
                       "search.git_remote": "origin",
                       "search.space": {"train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}}))
    run(["dvc", "remote", "add", "-d", "shared", str(remote)], seed)
    run(["git", "remote", "add", "origin", str(origin)], seed)
    run("git commit -q -am 'a shared search' && git push -q origin HEAD", seed)
    clones = {name: tmp_path / name for name in ("a", "b", "c")}
    for clone in clones.values():
        run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)

    a = worker(clones["a"], "--trials", "3", log=tmp_path / "a.log")
    b = worker(clones["b"], "--trials", "3", log=tmp_path / "b.log")
    try:
        started = wait_for(lambda: [line for line in (tmp_path / "b.log").read_text().splitlines()
                                    if " starts: " in line], 180, "worker B's trial to start")
        b_trial = started[0].split(" starts: ")[0].split()[-1]  # search-N
        wait_for(lambda: f"{b_trial}: stage " in (tmp_path / "b.log").read_text(), 300, "B's trial's first stage")
        kill_tree(b)
        assert a.wait(timeout=1200) == 0, (tmp_path / "a.log").read_text()[-3000:]
    finally:
        for process in (a, b):
            if process.poll() is None:
                kill_tree(process)
    a_log = (tmp_path / "a.log").read_text()
    started_by_a = [line.split(" starts: ")[0].split()[-1] for line in a_log.splitlines() if " starts: " in line]
    assert len(started_by_a) == 2 and b_trial not in started_by_a, a_log[-3000:]

    collected = run([sys.executable, "-m", "finetune", "search", "--collect", "--apply"], clones["c"])
    summary = json.loads((clones["c"] / "reports/search.json").read_text())
    trials = {t["experiment"]: t for t in summary["trials"]}
    assert sorted(trials) == sorted([*started_by_a, b_trial])  # three trials, each run by one worker once
    assert trials[b_trial]["state"] == "FAIL" and "no heartbeat" in trials[b_trial]["failure"]
    assert [trials[name]["state"] for name in started_by_a] == ["COMPLETE", "COMPLETE"]
    assert len({json.dumps(t["params"], sort_keys=True) for t in summary["trials"]}) == 3  # no params drawn twice
    assert summary["commit"] == run(["git", "rev-parse", "HEAD"], clones["c"]).stdout.strip()
    shown = experiments(json.loads(run(["dvc", "exp", "show", "--json"], clones["c"]).stdout),
                        "reports/training/metrics.json")
    for name in started_by_a:  # pulled from the remotes, each scored by its own experiment's validation figure
        assert shown[name]["metrics"]["eval"]["f1_macro"] == trials[name]["value"]
        assert shown[name]["params"]["train"]["learning_rate"] == trials[name]["params"]["train.learning_rate"]
    assert b_trial not in shown
    tested = experiments(json.loads(run(["dvc", "exp", "show", "--json"], clones["c"]).stdout))
    assert all(tested[name]["metrics"]["n_test"] == 24 for name in started_by_a)  # 20% of the CSV's 120 rows
    best = summary["best"]["experiment"]
    assert f"applied {best} to the workspace" in collected.stdout
    # the best trial's outputs came from the DVC remote: the applied workspace is complete and up to date
    assert "up to date" in run(["dvc", "status"], clones["c"]).stdout
    assert (clones["c"] / "models").is_dir() and any((clones["c"] / "models").rglob("*.safetensors"))
    applied = yaml.safe_load((clones["c"] / "params.yaml").read_text())["train"]["learning_rate"]
    assert applied == pytest.approx(trials[best]["params"]["train.learning_rate"])
