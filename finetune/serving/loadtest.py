"""A bounded load test of the prediction service: ``python -m finetune loadtest --url http://127.0.0.1:8000``.

``concurrency`` clients, each on its own keep-alive connection, send ``requests`` POST /predict
requests in all, as fast as the service answers them. Reports latency percentiles, throughput
and every request that failed. Standard library and numpy only.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


@dataclass(frozen=True)
class LoadResult:
    requests: int
    concurrency: int
    texts_per_request: int
    errors: int
    first_error: str | None
    seconds: float
    requests_per_s: float
    texts_per_s: float
    p50_ms: float
    p95_ms: float
    max_ms: float

    def summary(self) -> str:
        each = f"{self.texts_per_request} text{'s' if self.texts_per_request > 1 else ''} each"
        return (f"{self.requests} requests ({each}) from {self.concurrency} clients "
                f"in {self.seconds:.1f} s: {self.requests_per_s:.1f} requests/s, latency p50 {self.p50_ms:.1f} ms, "
                f"p95 {self.p95_ms:.1f} ms, max {self.max_ms:.1f} ms, {self.errors} errors"
                + (f" (first: {self.first_error})" if self.first_error else ""))


def http_json(url: str, path: str, body: dict | None = None, timeout: float = 10.0) -> tuple[int, dict]:
    """One request to the service (GET, or POST of a JSON body): its status and JSON answer."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        if body is None:
            connection.request("GET", path)
        else:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def run_load(url: str, texts: list[str], requests: int = 1000, concurrency: int = 8, texts_per_request: int = 1,
             timeout: float = 60.0) -> LoadResult:
    """Send ``requests`` predictions from ``concurrency`` threads; texts are taken from ``texts`` in turn."""
    if not texts:
        raise ValueError("the load test needs at least one text")
    if requests < 1 or concurrency < 1 or texts_per_request < 1:
        raise ValueError("requests, concurrency and texts per request must be at least 1")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"--url {url!r}: give the service's address, e.g. http://127.0.0.1:8000")
    bodies = [json.dumps({"texts": [texts[(i * texts_per_request + k) % len(texts)]
                                    for k in range(texts_per_request)]}) for i in range(requests)]
    latencies = np.zeros(requests)
    errors: list[str] = []
    next_index = iter(range(requests))
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            start = time.perf_counter()
            try:
                connection.request("POST", "/predict", bodies[i], {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {answer[:200].decode(errors='replace')}")
                if len(json.loads(answer)["predictions"]) != texts_per_request:
                    raise RuntimeError("the answer has another number of predictions than texts sent")
            except Exception as err:  # counted, not raised: the test reports every failure
                with lock:
                    errors.append(f"request {i}: {err}")
                connection.close()
                connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
            latencies[i] = time.perf_counter() - start
        connection.close()

    threads = [threading.Thread(target=client, name=f"client-{n}") for n in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    ms = latencies * 1000
    return LoadResult(requests, concurrency, texts_per_request, len(errors), errors[0] if errors else None,
                      seconds, requests / seconds, requests * texts_per_request / seconds,
                      float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(ms.max()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_service(serve_args: list[str], log_file: Path, launcher: list[str] | None = None,
                    env: dict[str, str] | None = None, startup_s: float = 120.0, python: str = sys.executable,
                    cwd: Path | None = None) -> Iterator[str]:
    """``python -m finetune serve SERVE_ARGS`` on a free port of 127.0.0.1 until the block ends; yields its URL.

    ``launcher`` replaces ``["-m", "finetune"]`` (e.g. a ``-c`` script that blocks some imports first);
    ``python`` and ``cwd`` run it with another interpreter, from another folder (default: this project's root)."""
    port = free_port()
    command = [python, *(launcher or ["-m", "finetune"]), "serve", *serve_args, "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with log_file.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env or dict(os.environ),
                                   cwd=cwd or Path(__file__).resolve().parents[2])
        try:
            deadline = time.monotonic() + startup_s
            while True:
                try:
                    if http_json(url, "/health")[0] == 200:
                        break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not start:\n{log_file.read_text()[-3000:]}")
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
