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
