"""DVC experiments from Python: run one in a temporary copy, queue several, read them back.

Shared by ``python -m finetune seeds`` and ``python -m finetune search``. Experiments never
run in the user's workspace: ``dvc exp run --temp`` (one at a time) or the queue (several
at once) work in temporary copies, so a failing run leaves params and outputs as they were.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from finetune.core.cores import usable_cores
from finetune.core.errors import UserError
from finetune.core.stage import progress_line

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0


class ExperimentError(UserError, RuntimeError):
    """DVC could not run or show experiments; the message says what DVC said."""


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True, check=False)


def yaml_value(value: Any) -> str:
    """A params value as ``-S`` takes it. A float always has a dot before its exponent: YAML 1.1 readers
    (PyYAML) read ``5e-05`` as a string, ``5.0e-05`` as a number."""
    text = json.dumps(value)
    if isinstance(value, float) and "e" in text and "." not in text.split("e")[0]:
        text = text.replace("e", ".0e", 1)
    return text


def set_args(values: dict[str, Any]) -> list[str]:
    """``-S key=value`` for each params value."""
    return [arg for key, value in values.items() for arg in ("-S", f"{key}={yaml_value(value)}")]


def remove_named(repo: Path, names: list[str]) -> None:
    """Remove experiments of these names from the current commit (an earlier run of the same command)."""
    existing = set(dvc(repo, "exp", "list", "--name-only").stdout.split())
    stale = [name for name in names if name in existing]
    if stale:
        dvc(repo, "exp", "remove", *stale)


def run_temp(repo: Path, name: str, values: dict[str, Any], timeout: float | None = None,
             stop: threading.Event | None = None) -> str | None:
    """One experiment in a temporary copy of the repository: None when it succeeded, else why it failed (its
    output's last lines, the time limit, or ``stop`` set by the caller). Its progress lines (each stage, each epoch)
    are logged as they come. A run past ``timeout`` seconds, stopped, or left by an exception (Ctrl-C) is ended
    with its children."""
    remove_named(repo, [name])
    command = ["dvc", "exp", "run", "--temp", "-n", name, *set_args(values)]
    log.info("%s", " ".join(command))
    process = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)  # its own process group: ending it ends the stages too
    tail: deque[str] = deque(maxlen=15)

    def follow() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            tail.append(line.rstrip("\n"))
            if (said := progress_line(line)) is not None:
                log.info("%s: %s", name, said)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    stopped, ended = stop or threading.Event(), None
    try:
        while process.poll() is None and ended is None:
            if deadline is not None and time.monotonic() > deadline:
                ended = f"stopped after the time limit of {timeout:g} s"
            elif stopped.wait(POLL_SECONDS / 4):
                ended = "stopped by the search"
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait()
        reader.join()
    return ended or ("\n".join(tail) if process.returncode else None)


def push_experiment(repo: Path, git_remote: str, dvc_remote: str | None, name: str) -> str | None:
    """`dvc exp push`: the experiment's commit to ``git_remote`` and its outputs to the DVC remote. None when it
    worked, else DVC's error."""
    return exchange(repo, ["push"], git_remote, dvc_remote, [name])


def pull_experiments(repo: Path, git_remote: str, dvc_remote: str | None, names: list[str]) -> str | None:
    """`dvc exp pull`: these experiments' commits from ``git_remote`` and their outputs from the DVC remote. None when
    it worked, else DVC's error."""
    return exchange(repo, ["pull", "--force"], git_remote, dvc_remote, names)


def exchange(repo: Path, verb: list[str], git_remote: str, dvc_remote: str | None, names: list[str]) -> str | None:
    done = dvc(repo, "exp", *verb, *(["-r", dvc_remote] if dvc_remote else []), git_remote, *names)
    if done.returncode == 0:
        return None
    said = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    # DVC's own line, not the support link it prints after it
    return next((line.removeprefix("ERROR: ") for line in said if line.startswith("ERROR")), said[-1] if said
                else f"exit status {done.returncode}")


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)


class QueueProgress:
    """Logs the progress lines (each stage, each epoch) of queued experiments as their output files grow. DVC
    writes each running experiment's output to .dvc/tmp/exps/run/<task>/<task>.out; `dvc queue status` names the
    task of each experiment by the start of its id."""

    def __init__(self, repo: Path) -> None:
        self.runs, self.read = repo / ".dvc" / "tmp" / "exps" / "run", {}

    def poll(self, status: str) -> None:
        names = {fields[0]: fields[1] for fields in map(str.split, status.splitlines()[1:]) if len(fields) > 1}
        for output in sorted(self.runs.glob("*/*.out")):
            name = next((name for task, name in names.items() if output.parent.name.startswith(task)), None)
            if name is None:
                continue
            with output.open("rb") as handle:
                handle.seek(self.read.get(output, 0))
                text = handle.read()
            complete = text[:text.rfind(b"\n") + 1]  # whole lines only; the rest waits for the next poll
            self.read[output] = self.read.get(output, 0) + len(complete)
            for line in complete.decode("utf-8", "replace").splitlines():
                if (said := progress_line(line)) is not None:
                    log.info("%s: %s", name, said)


def worker_pids(repo: Path) -> list[int]:
    pids = []
    for record in (repo / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.json"):
        with contextlib.suppress(KeyError, TypeError, ValueError, OSError):
            pids.append(int(json.loads(record.read_text())["pid"]))
    return pids


def stop_workers(repo: Path) -> None:
    """End the queue's workers. Each should exit once the queue is empty, but one whose monitor saw the queue empty
    while its own task still ran can stay up for good (dvc-task's shutdown race)."""
    for pid in worker_pids(repo):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def queue_environment(jobs: int, environ: dict[str, str] | None = None, cores: int | None = None) -> dict[str, str]:
    """The environment of the queue's workers, which their experiments inherit: ``jobs`` experiments at once
    share the cores, each torch process with its share of threads. Left to its default, each one starts a thread
    per core, and their spinning OpenMP threads make every experiment wait on the others'. A thread count the
    user set is kept."""
    env = dict(os.environ if environ is None else environ)
    share = str(max(1, (cores or usable_cores()) // jobs))
    for key in THREAD_VARIABLES:
        env.setdefault(key, share)
    return env


def run_queued(repo: Path, runs: dict[str, dict[str, Any]], jobs: int, timeout: float | None = None,
               stop: threading.Event | None = None) -> None:
    """Several experiments through DVC's queue, ``jobs`` at a time; returns when every one has ended (succeeded,
    failed, or was stopped at ``timeout`` seconds of the whole batch or by ``stop``), with no worker left running."""
    remove_named(repo, list(runs))
    for name, values in runs.items():
        queued = dvc(repo, "exp", "run", "--queue", "-n", name, *set_args(values))
        if queued.returncode:
            raise ExperimentError(f"dvc could not queue {name}: {queued.stderr.strip()}")
    log_file = repo / ".dvc" / "tmp" / "queue-start.log"
    with log_file.open("w") as out:  # a file, not a pipe: the workers outlive `dvc queue start`
        subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, stdout=out, stderr=subprocess.STDOUT,
                       check=False, env=queue_environment(jobs))
    deadline = None if timeout is None else time.monotonic() + timeout
    followed = QueueProgress(repo)
    try:
        while True:
            status = dvc(repo, "queue", "status").stdout
            followed.poll(status)
            if "Queued" not in status and "Running" not in status:
                break
            if (deadline is not None and time.monotonic() > deadline) or (stop is not None and stop.is_set()):
                dvc(repo, "queue", "kill", *runs)
                dvc(repo, "queue", "remove", "--queued")
                break
            time.sleep(POLL_SECONDS)
    finally:
        stop_workers(repo)


def queue_log_tail(repo: Path, name: str, lines: int = 15) -> str:
    """The last lines of a queued experiment's output (`dvc queue logs`), empty when DVC has none."""
    logs = dvc(repo, "queue", "logs", name)
    return "" if logs.returncode else "\n".join(logs.stdout.strip().splitlines()[-lines:])


def show(repo: Path, *options: str) -> list[dict[str, Any]]:
    """`dvc exp show --json` (with ``options``, e.g. ``--all-commits``), parsed."""
    shown = dvc(repo, "exp", "show", "--json", *options)
    if shown.returncode:
        raise ExperimentError(f"`dvc exp show --json` failed: {shown.stderr.strip()}")
    return json.loads(shown.stdout)


def experiments(shown: list[dict[str, Any]], metrics_file: str = "reports/metrics.json") -> dict[str, dict[str, Any]]:
    """Name -> params and the metrics of ``metrics_file`` of each experiment in `dvc exp show --json`."""
    found = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                data = rev.get("data") or {}
                found[rev.get("name") or rev["rev"]] = {
                    "params": data.get("params", {}).get("params.yaml", {}).get("data", {}),
                    "metrics": data.get("metrics", {}).get(metrics_file, {}).get("data", {})}
    return found
