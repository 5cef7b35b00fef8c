"""Shared fixtures: a tiny randomly initialised model, small real data, and repo copies for real `dvc` runs."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from finetune.serving.browser import CHROMEDRIVER, headless_chromium

ROOT = Path(__file__).resolve().parents[1]
SHARED_IMDB = ROOT.parent / "shared" / "data" / "aclImdb_v1-labeled.tar.gz"
SHARED_GOEMOTIONS = SHARED_IMDB.parent / "goemotions.tar.gz"
# Two test workers share the machine's cores: a torch process per worker that spreads over every core makes both
# wait on each other's spinning OpenMP threads, which slows a small model's training several times over.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
S3_BUCKET = "models"


def offline_env() -> dict[str, str]:
    """The environment for subprocesses: this venv first, the hub switched off, quiet libraries, one torch thread
    (ONE_THREAD)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com", **ONE_THREAD)
    return env


@pytest.fixture(autouse=True, scope="session")
def _offline() -> None:
    """No test reaches the network: the hub libraries are told so before any import. One torch thread (ONE_THREAD)."""
    for key, value in offline_env().items():
        if key.startswith(("HF_", "TRANSFORMERS_", "TOKENIZERS_")) or key in ONE_THREAD:
            os.environ[key] = value
    import torch

    torch.set_num_threads(1)


def make_tiny_model(folder: Path, num_labels: int = 2) -> Path:
    """A 2-layer BERT with random weights and the packaged MiniLM's real tokenizer, saved as safetensors."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, set_seed

    from finetune.training.models import resolve_model

    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=num_labels)
    BertForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def run(cmd: list[str] | str, cwd: Path, check: bool = True, env: dict[str, str] | None = None,
        **kwargs) -> subprocess.CompletedProcess:
    """Run a command with the offline environment (plus ``env``); on failure show its output."""
    result = subprocess.run(cmd, cwd=cwd, env={**offline_env(), **(env or {})}, capture_output=True, text=True,
                            shell=isinstance(cmd, str), **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def build_frames(frames: dict, data, seed: int = 0):
    """finetune.data.dataset.build_raw on whole-split DataFrames (one chunk each; anything else is passed as chunks),
    its rows staged in a fresh temporary folder."""
    import tempfile

    import pandas as pd

    from finetune.data.dataset import build_raw

    chunks = {split: [part] if isinstance(part, pd.DataFrame) else part for split, part in frames.items()}
    return build_raw(chunks, data, seed, Path(tempfile.mkdtemp(prefix="raw-")))


def read_frames(data) -> dict:
    """Every split of a source as one DataFrame (the chunks finetune.data.sources.open_source reads, joined)."""
    import pandas as pd

    from finetune.data.sources import open_source

    with open_source(data) as chunks:
        return {split: pd.concat(list(parts), ignore_index=True) for split, parts in chunks.items()}


def make_repo(folder: Path, params: dict | None = None) -> Path:
    """A git repository holding a copy of the project, with ``params`` merged into params.yaml."""
    from tests.project import copy_project

    copy_project(folder)
    if params:
        set_params(folder, params)
    run(["git", "init", "-q"], folder)
    run("git add -A && git commit -q -m init", folder)
    return folder


def small_params(model: Path, **extra) -> dict:
    """Params for a quick real run: 300 reviews, a tiny model, 2 epochs."""
    return {"model.name": str(model), "data.max_samples": 300, "tokenize.max_length": 32, "train.epochs": 2,
            "train.batch_size": 8, "train.learning_rate": 1e-3, **extra}


def set_params(repo: Path, updates: dict) -> None:
    """Merge ``{"section.key": value}`` updates into the repo's params.yaml."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in updates.items():
        node = params
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def stages_run(output: str) -> list[str]:
    """The stages a `dvc repro` output says it ran."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def pytest_collection_modifyitems(config, items) -> None:
    """Files of pipeline runs first (stable otherwise): the two workers each start on a long file and finish on
    short ones, rather than one worker running the longest file alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("pipeline") is None)


ARTIFACTS: list[str] = []


@pytest.fixture
def artifacts() -> list[str]:
    """Lines (a figure, a file's path) that the test run prints in its summary."""
    return ARTIFACTS


def pytest_sessionfinish(session) -> None:
    """Under pytest-xdist each worker hands its lines to the controller, which prints the summary."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["artifacts"] = list(ARTIFACTS)


def pytest_testnodedown(node, error) -> None:
    ARTIFACTS.extend(getattr(node, "workeroutput", {}).get("artifacts", []))


def pytest_terminal_summary(terminalreporter) -> None:
    if ARTIFACTS:
        terminalreporter.section("figures and files from the tests")
        for line in ARTIFACTS:
            terminalreporter.write_line(line)


def chromium_or_skip() -> None:
    """`make test` and CI require Chromium (FINETUNE_REQUIRE_BROWSER=1); `make test-fast` skips without it."""
    if not CHROMEDRIVER.exists():
        message = f"no {CHROMEDRIVER}: `apt-get install chromium chromium-driver` (`.ci/run` does)"
        if os.environ.get("FINETUNE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium, one per test module."""
    chromium_or_skip()
    driver = headless_chromium(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on a free port of 127.0.0.1 (the real S3 protocol), with the bucket S3_BUCKET."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**offline_env(), **CREDENTIALS}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.2)
    import boto3

    boto3.client("s3", endpoint_url=url, **{k.lower(): v for k, v in CREDENTIALS.items()
                                            if k != "AWS_DEFAULT_REGION"},
                 region_name="us-east-1").create_bucket(Bucket=S3_BUCKET)
    yield url
    server.terminate()
    server.wait(timeout=10)


class Postgres:
    """A throwaway PostgreSQL server (Debian's `postgresql`): `initdb` in a temporary folder, a free port of
    127.0.0.1, trust authentication for the user `finetune`; fsync off, as nothing outlives the test. As root the
    server runs as the `postgres` user (PostgreSQL refuses root). ``stop`` and ``start`` take it down and back."""

    def __init__(self) -> None:
        import pwd
        import shutil
        import tempfile

        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
        if not binaries:
            pytest.fail("no PostgreSQL server: `apt-get install postgresql` (`.ci/run` does)")
        self.bin = binaries[-1].parent
        self.folder = Path(tempfile.mkdtemp(prefix="finetune-postgres-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            shutil.chown(self.folder, account.pw_uid, account.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self._run("initdb", "-D", str(self.folder / "data"), "-U", "finetune", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://finetune@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / program), *args], check=True, capture_output=True,
                       cwd=self.folder)

    def start(self) -> None:
        """Start the server (again); nothing to do while it runs."""
        if (self.folder / "data" / "postmaster.pid").exists():
            return
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "server.log"), "-o", options,
                  "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        import shutil

        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    server = Postgres()
    yield server
    server.remove()
