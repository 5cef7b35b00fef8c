"""The prediction service: requests and their 4xx answers, batching, a live server under load, the web page."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from finetune.core.contract import UNCERTAIN, Prediction
from finetune.export.model_folder import export_model, model_card
from finetune.export.onnx_export import export_onnx
from finetune.serving.browser import predict_on_page, wait_for_body
from finetune.serving.loadtest import http_json, run_load, running_service
from finetune.serving.onnx_predictor import ONNX_FILE
from finetune.serving.service import EXAMPLES, Batcher, Limits, create_app, read_model_card
from finetune.serving.torch_predictor import TorchPredictor
from tests.conftest import ROOT, chromium_or_skip, make_tiny_model, offline_env

LIMITS = Limits(max_texts=4, max_chars=200, max_body_bytes=2_000, max_batch=8, max_wait_ms=1)
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A tiny model exported like the pipeline does: threshold, model card and ONNX model."""
    model = make_tiny_model(tmp_path_factory.mktemp("model"))
    target = tmp_path_factory.mktemp("export") / "export"
    export_model(model, target, 1.0, {"uncertain_threshold": 0.52, "finetune_max_length": 64})
    card = model_card(base_model="tiny", source="rotten_tomatoes", labels=["LABEL_0", "LABEL_1"],
                      split_sizes={"test": 10}, train={}, tokenize={}, threshold=0.52,
                      metrics={"accuracy": 0.61, "f1": 0.6})
    (target / "README.md").write_text(card, encoding="utf-8")
    export_onnx(target, target / ONNX_FILE)
    return target


@pytest.fixture(scope="module")
def predictor(exported) -> TorchPredictor:
    return TorchPredictor(exported)


@pytest.fixture(scope="module")
def client(exported, predictor):
    with TestClient(create_app(predictor, exported, LIMITS)) as test_client:
        yield test_client


def test_predict_answers_one_text_and_many_in_order(client, predictor):
    texts = ["a fine film", "dull", "a moving film " * 10]
    many = client.post("/predict", json={"texts": texts})
    assert many.status_code == 200, many.text
    answers = many.json()["predictions"]
    expected = predictor.predict(texts)
    assert [a["predicted"] for a in answers] == [p.predicted for p in expected]
    assert [a["confidence"] for a in answers] == pytest.approx([p.confidence for p in expected], abs=1e-6)
    for answer in answers:
        assert set(answer) == {"label", "predicted", "confidence", "uncertain", "probabilities"}  # no label sets
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0)
        assert answer["uncertain"] == (answer["confidence"] < 0.52) == (answer["label"] == UNCERTAIN)
    one = client.post("/predict", json={"text": texts[1]})
    assert one.status_code == 200 and one.json()["predictions"][0]["label"] == answers[1]["label"]
    assert one.json()["predictions"][0]["confidence"] == pytest.approx(answers[1]["confidence"], abs=1e-6)
    assert one.json()["threshold"] == 0.52


@pytest.mark.parametrize(("headers", "body", "status", "message"), [
    ({"Content-Type": "text/plain"}, "a fine film", 415, "Content-Type is text/plain"),
    ({}, b"", 415, "Content-Type is missing"),
    (JSON, "{not json", 400, "not valid JSON"),
    (JSON, "[]", 422, "body: Input should be an object"),
    (JSON, json.dumps({}), 422, "got neither"),
    (JSON, json.dumps({"text": "a", "texts": ["b"]}), 422, "got both"),
    (JSON, json.dumps({"texts": []}), 422, '"texts" is empty'),
    (JSON, json.dumps({"text": "   "}), 422, "text 0 is empty"),
    (JSON, json.dumps({"texts": ["fine", 3]}), 422, "texts[1]: Input should be a valid string"),
    (JSON, json.dumps({"text": None}), 422, "got neither"),
    (JSON, json.dumps({"texts": "one string"}), 422, "texts: Input should be a valid array"),
    (JSON, json.dumps({"texts": ["a"], "lang": "en"}), 422, "lang: Extra inputs are not permitted"),
    (JSON, json.dumps({"texts": ["a"] * 5}), 422, "5 texts in one request, at most 4"),
    (JSON, json.dumps({"text": "x" * 201}), 422, "text 0 has 201 characters, at most 200"),
    (JSON, json.dumps({"texts": ["word " * 39] * 4}) + " " * 1500, 413, "at most 2000"),
])
def test_bad_requests_get_a_4xx_that_says_what_to_fix(client, headers, body, status, message):
    response = client.post("/predict", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_a_chunked_body_is_cut_off_at_the_limit(client):
    def chunks():  # no Content-Length: the service counts while it reads
        yield b'{"texts": ["'
        for _ in range(50):
            yield b"word " * 20

    response = client.post("/predict", content=chunks(), headers=JSON)
    assert response.status_code == 413 and "over 2000 bytes" in response.json()["detail"]


def test_health_metadata_openapi_and_page(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["backend"] == "torch" and health["batching"]["batches"] >= 1
    metadata = client.get("/metadata").json()
    assert metadata["labels"] == ["LABEL_0", "LABEL_1"] and metadata["threshold"] == 0.52
    assert metadata["model_card"] == {"dataset": "rotten_tomatoes", "metrics": {"accuracy": 0.61, "f1": 0.6}}
    assert metadata["limits"]["max_texts"] == 4 and metadata["examples"] == EXAMPLES
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"text", "texts"}
    assert {"200", "413", "415", "422"} <= set(spec["paths"]["/predict"]["post"]["responses"])
    assert {"/health", "/metadata"} <= set(spec["paths"])
    page = client.get("/")
    assert page.status_code == 200 and 'id="predict"' in page.text and "http" not in page.text.split("<script>")[1]


def test_a_model_card_without_front_matter_gives_none(tmp_path):
    assert read_model_card(tmp_path) is None
    (tmp_path / "README.md").write_text("# a model\n")
    assert read_model_card(tmp_path) is None


def fake_answers(texts: list[str]) -> list[Prediction]:
    return [Prediction(t, "a", "a", 1.0, False, {"a": 1.0}) for t in texts]


def test_the_batcher_merges_concurrent_requests_and_keeps_their_order():
    calls: list[int] = []

    def model(texts: list[str]) -> list[Prediction]:
        calls.append(len(texts))
        time.sleep(0.02)  # while the model works, more requests queue up
        return fake_answers(texts)

    async def scenario():
        batcher = Batcher(model, max_batch=6, max_wait_s=0.005)
        await batcher.start()
        requests = [[f"r{i}-t{k}" for k in range(1 + i % 3)] for i in range(12)] + [[f"big{k}" for k in range(9)]]
        answers = await asyncio.gather(*(batcher.submit(texts) for texts in requests))
        await batcher.stop()
        return requests, answers, batcher.stats

    requests, answers, stats = asyncio.run(scenario())
    assert [[p.text for p in answer] for answer in answers] == requests
    assert sum(calls) == sum(map(len, requests)) == stats.texts and stats.requests == len(requests)
    assert len(calls) < len(requests) and stats.largest_batch_requests > 1
    assert 9 in calls and all(size <= 6 for size in calls if size != 9)  # a request over max_batch goes alone


def test_a_failing_batch_fails_its_requests_and_the_service_goes_on():
    def model(texts: list[str]) -> list[Prediction]:
        if "boom" in texts:
            raise RuntimeError("model failed")
        return fake_answers(texts)

    async def scenario():
        batcher = Batcher(model, max_batch=1, max_wait_s=0)
        await batcher.start()
        failed, fine = await asyncio.gather(batcher.submit(["boom"]), batcher.submit(["ok"]), return_exceptions=True)
        await batcher.stop()
        return failed, fine

    failed, fine = asyncio.run(scenario())
    assert isinstance(failed, RuntimeError) and [p.text for p in fine] == ["ok"]


def test_wrong_service_settings_fail_before_the_model_loads(tmp_path):
    with pytest.raises(ValueError, match="max_batch must be positive"):
        Limits(max_batch=0)
    missing = subprocess.run([sys.executable, "-m", "finetune", "serve", "--model", str(tmp_path)], cwd=ROOT,
                             env=offline_env(), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "dvc repro export" in missing.stderr
    assert missing.stderr.startswith("error: ") and len(missing.stderr.strip().splitlines()) == 1  # no traceback
    (tmp_path / "config.json").write_text("{}")  # an export without its ONNX model
    predict = subprocess.run([sys.executable, "-m", "finetune", "predict", "--backend", "onnx", "--model",
                              str(tmp_path), "some text"], cwd=ROOT, env=offline_env(), capture_output=True, text=True,
                             timeout=60)
    assert predict.returncode == 1 and predict.stderr.startswith("error: ") and "model.onnx" in predict.stderr
    assert len(predict.stderr.strip().splitlines()) == 1


# A live service on 127.0.0.1, started the way a user starts it, on the ONNX stack alone.
SERVE_WITHOUT_TRAINING_STACK = (
    "import sys\n"
    "for name in ('torch', 'transformers', 'datasets', 'sklearn', 'pandas'):\n"
    "    sys.modules[name] = None  # importing any of them now fails\n"
    "from finetune.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n")


@pytest.fixture(scope="module")
def service(exported, tmp_path_factory):
    log = tmp_path_factory.mktemp("service") / "serve.log"
    with running_service(["--model", str(exported), "--max-wait-ms", "10"], log,
                         launcher=["-c", SERVE_WITHOUT_TRAINING_STACK], env=offline_env()) as url:
        yield url


def test_a_bounded_load_test_gets_every_answer(service, artifacts):
    result = run_load(service, EXAMPLES, requests=400, concurrency=8)
    artifacts.append(f"service load test (tiny model, ONNX): {result.summary()}")
    assert result.errors == 0, result.first_error
    assert http_json(service, "/health")[1]["backend"] == "onnx"  # the default for an export with model.onnx
    assert 0 < result.p50_ms <= result.p95_ms <= result.max_ms and result.requests_per_s > 0
    batching = http_json(service, "/health")[1]["batching"]
    assert batching["requests"] >= 400 and batching["largest_batch_requests"] > 1  # concurrent requests merged
    cli = subprocess.run([sys.executable, "-m", "finetune", "loadtest", "--url", service, "--requests", "40",
                          "--concurrency", "4", "--json"], cwd=ROOT, env=offline_env(), capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["errors"] == 0 and json.loads(cli.stdout)["requests"] == 40


def test_the_load_test_counts_failed_requests(service):
    result = run_load(service, ["x" * 30_000], requests=5, concurrency=2)  # over the service's max_chars
    assert result.errors == 5 and "HTTP 422" in result.first_error


@pytest.mark.browser
def test_the_web_page_predicts_a_typed_review_and_a_clicked_example(service, browser, tmp_path, artifacts):
    from selenium.webdriver.common.by import By

    review = "An uneven film, but the cast is wonderful and the ending moved me."
    predict_on_page(browser, service, review)
    model = browser.find_element(By.ID, "model").text
    assert "Below 52.0% confidence the answer is UNCERTAIN" in model and "test accuracy 61.0%" in model
    expected = http_json(service, "/predict", {"text": review})[1]["predictions"][0]
    assert browser.find_element(By.ID, "label").text == expected["label"]
    assert browser.find_element(By.ID, "confidence").text == f"{100 * expected['confidence']:.1f}%"
    assert browser.find_element(By.ID, "band").get_attribute("style") == "width: 52%;"
    why = http_json(service, "/explain", {"text": review})[1]["results"][0]["explanations"][0]
    shown = browser.find_element(By.ID, "why")
    assert shown.find_element(By.CLASS_NAME, "legend").text.startswith(f"Why {expected['predicted']} (")
    words = shown.find_elements(By.CSS_SELECTOR, "span.w")  # every word shaded by its weight, in text order
    assert [(w.text, float(w.get_attribute("data-weight"))) for w in words] == [
        (a["word"], pytest.approx(a["weight"])) for a in why["attributions"]]
    screenshot = tmp_path / "web-page.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    artifacts.append(f"web page screenshot: {screenshot}")

    examples = browser.find_elements(By.CLASS_NAME, "example")
    assert [e.text for e in examples] == EXAMPLES
    examples[1].click()
    wait_for_body(browser, "answers", "2")
    assert browser.find_element(By.ID, "text").get_attribute("value") == EXAMPLES[1]
    expected = http_json(service, "/predict", {"text": EXAMPLES[1]})[1]["predictions"][0]
    assert browser.find_element(By.ID, "label").text == expected["label"]

    browser.find_element(By.ID, "text").clear()
    browser.find_element(By.ID, "predict").click()
    wait_for_body(browser, "answers", "3")
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and "text 0 is empty" in error.text
    assert not browser.find_element(By.ID, "result").is_displayed()


@pytest.mark.browser
def test_the_readme_screenshot_command_answers_a_review(exported, tmp_path):
    from finetune.serving.browser import main

    chromium_or_skip()
    assert main(["--model", str(exported), "--out", str(tmp_path / "page.png")]) == 0
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Watching and stopping the service: metrics, request ids and the access log, readiness, backpressure, SIGTERM.

def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus' text format read with its own parser: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_texts_and_answers_and_name_the_model(exported, predictor):
    from finetune.core.digest import folder_digest

    with TestClient(create_app(predictor, exported, LIMITS)) as fresh:
        texts = ["a fine film", "dull and long"]
        for _ in range(3):
            assert fresh.post("/predict", json={"texts": texts}).status_code == 200
        assert fresh.post("/predict", json={"texts": []}).status_code == 422
        assert fresh.get("/nowhere/42").status_code == 404
        answers = [p.label for p in predictor.predict(texts)] * 3
        scraped = fresh.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    samples = metric_samples(scraped.text)
    assert samples[("finetune_requests_total", (("route", "/predict"), ("status", "200")))] == 3
    assert samples[("finetune_requests_total", (("route", "/predict"), ("status", "422")))] == 1
    assert samples[("finetune_requests_total", (("route", "unmatched"), ("status", "404")))] == 1  # no raw paths
    assert samples[("finetune_request_seconds_count", (("route", "/predict"),))] == 4
    assert samples[("finetune_texts_predicted_total", ())] == 6
    for label in set(answers):
        assert samples[("finetune_answers_total", (("label", label),))] == answers.count(label)
    assert samples[("finetune_uncertain_share", ())] == pytest.approx(answers.count(UNCERTAIN) / 6)
    assert samples[("finetune_waiting_requests", ())] == 0
    info = dict(next(labels for (name, labels) in samples if name == "finetune_model_info"))
    assert info == {"model": str(exported), "backend": "torch", "digest": folder_digest(exported)}


def test_label_sets_are_counted_label_by_label_so_the_answers_metric_stays_bounded():
    from finetune.serving.monitoring import NO_LABEL, Monitor

    monitor = Monitor("m", "onnx", "0" * 64, lambda: 0, multi_label=True)
    monitor.answered([Prediction("a", "joy|love", "joy|love", 0.9, False, {}, ("joy", "love")),
                      Prediction("b", "", "", 0.9, False, {}, ()),
                      Prediction("c", UNCERTAIN, "joy", 0.5, True, {}, ("joy",), ("joy",))])
    samples = metric_samples(monitor.exposition().decode())
    counted = {dict(labels)["label"]: value for (name, labels), value in samples.items()
               if name == "finetune_answers_total"}
    assert counted == {"joy": 1, "love": 1, NO_LABEL: 1, UNCERTAIN: 1}
    assert samples[("finetune_texts_predicted_total", ())] == 3
    assert samples[("finetune_uncertain_share", ())] == pytest.approx(1 / 3)


def test_each_request_has_an_id_and_one_json_access_line_without_its_text(exported, predictor, caplog):
    import logging

    from finetune.serving.monitoring import ACCESS_LOG

    logging.getLogger(ACCESS_LOG).addHandler(caplog.handler)
    try:
        with TestClient(create_app(predictor, exported, LIMITS)) as fresh:
            mine = fresh.post("/predict", json={"text": "secret words"}, headers={"X-Request-ID": "job-7.a"})
            forged = fresh.post("/predict", json={"text": "x"}, headers={"X-Request-ID": "bad id\r\nX-Evil: 1"})
        with TestClient(create_app(predictor, exported, LIMITS, log_texts=True)) as logging_texts:
            logging_texts.post("/predict", json={"texts": ["asked to log"]})
    finally:
        logging.getLogger(ACCESS_LOG).removeHandler(caplog.handler)
    assert mine.headers["X-Request-ID"] == "job-7.a"
    assert len(forged.headers["X-Request-ID"]) == 32 and "Evil" not in forged.headers["X-Request-ID"]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOG]
    predicts = [line for line in lines if line["route"] == "/predict"]
    assert [line["request_id"] for line in predicts[:2]] == ["job-7.a", forged.headers["X-Request-ID"]]
    assert predicts[0]["status"] == 200 and predicts[0]["texts"] == 1 and predicts[0]["ms"] >= 0
    assert "secret" not in json.dumps(predicts[:2]) and "text_content" not in predicts[0]
    assert predicts[2]["text_content"] == ["asked to log"]


class SlowPredictor(TorchPredictor):
    """The tiny export, taking ``delay`` seconds a model call: requests pile up behind it."""

    def __init__(self, folder: Path, delay: float, fail: bool = False) -> None:
        super().__init__(folder)
        self.delay, self.fail = delay, fail

    def logits(self, texts: list[str]):
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the model cannot run")
        return super().logits(texts)


def test_ready_only_once_the_warm_up_answered_and_never_while_stopping(exported):
    with TestClient(create_app(SlowPredictor(exported, 0.5), exported, LIMITS)) as fresh:
        assert fresh.get("/health").status_code == 200
        waiting = fresh.get("/ready")
        assert waiting.status_code == 503 and waiting.json()["reason"] == "warming up"
        deadline = time.monotonic() + 10
        while fresh.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fresh.get("/ready").json() == {"status": "ready"}
        fresh.app.state.stopping = True  # what SIGTERM does (DrainingServer.handle_exit)
        assert fresh.get("/ready").json()["reason"] == "stopping"
    with TestClient(create_app(SlowPredictor(exported, 0.0, fail=True), exported, LIMITS)) as broken:
        deadline = time.monotonic() + 10
        while "failed" not in broken.get("/ready").json()["reason"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "the warm-up prediction failed: RuntimeError: the model cannot run" in broken.get("/ready").text
        assert broken.get("/health").status_code == 200


def wait_until_ready(url: str, seconds: float, process: subprocess.Popen | None = None) -> None:
    """Until the service at ``url`` says /ready (or its process ended, or ``seconds`` passed: the test then fails
    on its first request)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        try:
            if http_json(url, "/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)


def test_a_burst_over_the_bound_gets_503_at_once_and_the_service_stays_healthy(exported, tmp_path):
    import threading

    import uvicorn

    from finetune.serving.loadtest import free_port

    limits = Limits(max_batch=1, max_wait_ms=0, max_waiting=2)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(SlowPredictor(exported, 0.3), exported, limits),
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, 30)
    answers: list[tuple[int, str | None, float]] = []

    def send() -> None:
        import http.client

        start = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/predict", json.dumps({"text": "a fine film"}), JSON)
        response = connection.getresponse()
        response.read()
        answers.append((response.status, response.getheader("Retry-After"), time.perf_counter() - start))
        connection.close()

    try:
        burst = [threading.Thread(target=send) for _ in range(10)]
        for client_thread in burst:
            client_thread.start()
        for client_thread in burst:
            client_thread.join()
        statuses = sorted(status for status, _, _ in answers)
        assert set(statuses) == {200, 503} and statuses.count(200) >= 3, statuses
        assert all(retry == "1" and seconds < 0.3 for status, retry, seconds in answers if status == 503)  # at once
        assert http_json(url, "/health")[0] == 200 and http_json(url, "/ready")[0] == 200
        assert http_json(url, "/predict", {"text": "after the burst"})[0] == 200
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_sigterm_mid_load_answers_every_accepted_request_then_exits_0(exported, tmp_path):
    import http.client
    import signal
    import threading

    from finetune.serving.loadtest import free_port

    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "finetune", "serve", "--model", str(exported), "--port",
                                    str(port), "--max-wait-ms", "100", "--drain-timeout", "20"], cwd=ROOT,
                                   env=offline_env(), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, 120, process)
        answered: list[tuple[int, float]] = []  # (status, when the answer came)
        refused: list[str] = []
        stop_sent = threading.Event()

        def client() -> None:
            while len(refused) < 50:
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    connection.request("POST", "/predict", json.dumps({"text": "a fine film"}), JSON)
                    response = connection.getresponse()
                    response.read()
                    answered.append((response.status, time.monotonic()))
                    connection.close()
                except OSError as err:  # not accepted: the service no longer listens
                    refused.append(type(err).__name__)
                    if stop_sent.is_set():
                        time.sleep(0.01)

        clients = [threading.Thread(target=client) for _ in range(6)]
        for client_thread in clients:
            client_thread.start()
        time.sleep(2)
        sent_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stop_sent.set()
        code = process.wait(timeout=30)
        for client_thread in clients:
            client_thread.join(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert answered and all(status == 200 for status, _ in answered), answered  # no accepted request dropped
    assert any(when > sent_at for _, when in answered), "no request was in flight when SIGTERM came"
    assert refused and "stopped: every accepted request was answered" in text
    access = [json.loads(line) for line in text.splitlines() if line.startswith('{"time"')]
    assert sum(line["route"] == "/predict" and line["status"] == 200 for line in access) == len(answered)
