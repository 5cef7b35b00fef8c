"""HTTP prediction service: ``python -m finetune serve --model models/export``.

A FastAPI app around one predictor (ONNX Runtime or PyTorch), loaded once:

- ``POST /predict`` takes ``{"text": "..."}`` or ``{"texts": [...]}`` and answers, per text, the label
  (or UNCERTAIN), the most probable label, its confidence and every label's probability;
- ``POST /explain`` takes the same body (fewer texts) and answers each prediction with the words that
  drove it (occlusion: finetune/core/explain.py), word and weight pairs;
- ``GET /health`` (the process answers), ``GET /ready`` (the model answered its warm-up and the
  service is not stopping: 503 otherwise) and ``GET /metadata`` (labels, threshold, limits, model card metrics);
- ``GET /metrics``: Prometheus metrics (finetune/serving/monitoring.py);
- ``GET /`` a small web page, ``GET /openapi.json`` the OpenAPI spec.

Texts of concurrent requests are predicted together: a single model thread takes every request
waiting in the queue (up to ``max_batch`` texts) as one batch. Bad requests are refused with a
4xx and a message before they reach the model; when more than ``max_waiting`` requests already
wait for it, a request is answered 503 with Retry-After at once. Every request gets an id (the
X-Request-ID header) and one JSON line in the access log. On SIGTERM or SIGINT the service stops
accepting connections, answers every request it accepted, and exits 0 (DrainingServer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from finetune.core.contract import UNCERTAIN, Prediction, Predictor, prediction_record
from finetune.core.digest import folder_digest
from finetune.core.explain import DEFAULT_MAX_WORDS, Explanation, explain
from finetune.serving.monitoring import REQUEST_ID_HEADER, Monitor, access_line, access_logger, request_id

log = logging.getLogger(__name__)

PAGE = Path(__file__).parent / "web" / "index.html"
# Shown on the web page to click, and the default texts of the load test.
EXAMPLES = [
    "A moving, beautifully acted film with a script that never talks down to its audience.",
    "Dull, overlong and badly edited; I checked my watch three times and still it would not end.",
    "The first half drags, but the last twenty minutes almost make up for it.",
    "It is a film about a family, and it has actors in it.",
]


@dataclass(frozen=True)
class Limits:
    """What one request may send, and how requests are batched."""

    max_texts: int = 64  # texts per request
    max_chars: int = 20_000  # characters per text; the longest IMDB review has 13,704
    max_body_bytes: int = 1_048_576
    max_batch: int = 64  # texts per model call, across requests
    max_wait_ms: float = 2.0  # how long a lone request waits for others to join its batch
    max_explain_texts: int = 8  # texts per /explain request: each costs a model call per word
    max_waiting: int = 256  # requests waiting for the model; beyond, 503 with Retry-After at once
    max_explain_words: int = DEFAULT_MAX_WORDS  # a longer text is explained in this many spans of words

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0 or (value == 0 and name != "max_wait_ms"):
                raise ValueError(f"serve: {name} must be positive, got {value}")


# What /predict and /explain answer instead, for their OpenAPI spec.
TEXT_REQUEST_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "not JSON"}, 413: {"description": "body too large"},
    415: {"description": "not application/json"}, 422: {"description": "empty, non-string, too many or too long texts"},
    503: {"description": "too many requests waiting: retry after Retry-After seconds"}}


class PredictRequest(BaseModel):
    """One text or a list of texts (strict: numbers or nulls are refused, not turned into strings)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": EXAMPLES[:2]}]})
    text: StrictStr | None = None
    texts: list[StrictStr] | None = None


class PredictionOut(BaseModel):
    label: str  # the most probable label (label sets: joined by "|"), or UNCERTAIN
    predicted: str  # the most probable label (the label set), even when uncertain
    confidence: float
    uncertain: bool
    probabilities: dict[str, float]
    label_set: list[str] | None = None  # multi-label only: the labels given
    uncertain_labels: list[str] | None = None  # multi-label only: labels within the UNCERTAIN band of their threshold


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]  # in the order of the texts sent
    threshold: float


class AttributionOut(BaseModel):
    word: str  # a word of the text (a span of words when the text has more than max_explain_words)
    weight: float  # the label's probability lost when it is removed (negative: it spoke against the label)
    start: int  # characters of the text
    end: int


class ExplanationOut(BaseModel):
    label: str  # the label explained: the answer (label sets: each label given, or the most probable)
    probability: float
    method: str
    words: int  # words in the text
    unit_words: int  # words per attribution: 1, or more for a text longer than max_explain_words
    attributions: list[AttributionOut]  # in text order


class ExplainedOut(BaseModel):
    prediction: PredictionOut
    explanations: list[ExplanationOut]


class ExplainResponse(BaseModel):
    results: list[ExplainedOut]  # in the order of the texts sent
    threshold: float
    max_words: int


def request_texts(body: bytes, limits: Limits, max_texts: int | None = None, route: str = "/predict") -> list[str]:
    """The texts of a /predict body, or an HTTPException that says what is wrong and how to fix it."""
    try:
        request = PredictRequest.model_validate_json(body)
    except ValidationError as err:
        first = err.errors()[0]
        if first["type"] == "json_invalid":
            raise HTTPException(400, f"the body is not valid JSON ({first['msg']}); send "
                                     '{"texts": ["first text", ...]} or {"text": "one text"}') from None
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
        raise HTTPException(422, f"{where or 'body'}: {first['msg']}; send {{\"texts\": [\"first text\", ...]}} "
                                 'or {"text": "one text"}, texts as strings') from None
    if (request.text is None) == (request.texts is None):
        got = "both" if request.text is not None else "neither"
        raise HTTPException(422, f'send either "text" (one string) or "texts" (a list of strings); got {got}')
    texts = [request.text] if request.text is not None else request.texts
    if not texts:
        raise HTTPException(422, '"texts" is empty: send at least one text')
    most = limits.max_texts if max_texts is None else max_texts
    if len(texts) > most:
        raise HTTPException(422, f"{len(texts)} texts in one request, at most {most} per {route} request: "
                                 "split them over several requests")
    for i, text in enumerate(texts):
        if not text.strip():
            raise HTTPException(422, f"text {i} is empty: every text needs some non-blank characters")
        if len(text) > limits.max_chars:
            raise HTTPException(422, f"text {i} has {len(text)} characters, at most {limits.max_chars}: "
                                     "shorten it (the model reads only its first tokens anyway)")
    return texts


async def read_body(request: Request, limits: Limits) -> bytes:
    """The body of a JSON request, refused (415, 413) before it is read whole when it cannot be one."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise HTTPException(415, f"Content-Type is {media_type or 'missing'}; send JSON with "
                                 "Content-Type: application/json")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise HTTPException(413, f"the body has {int(declared)} bytes, at most {limits.max_body_bytes}: "
                                 "send fewer or shorter texts per request")
    body = bytearray()
    async for chunk in request.stream():  # a chunked body has no length to check up front
        body += chunk
        if len(body) > limits.max_body_bytes:
            raise HTTPException(413, f"the body is over {limits.max_body_bytes} bytes: "
                                     "send fewer or shorter texts per request")
    return bytes(body)


@dataclass
class BatchStats:
    batches: int = 0
    texts: int = 0
    requests: int = 0
    largest_batch_texts: int = 0
    largest_batch_requests: int = 0


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future


@dataclass
class Batcher:
    """Predicts the texts of concurrent requests together, in one model thread."""

    predict: Callable[[list[str]], list[Prediction]]
    max_batch: int
    max_wait_s: float
    stats: BatchStats = field(default_factory=BatchStats)

    waiting: int = 0  # requests submitted and not yet taken into a batch (explanations: until done)

    async def start(self) -> None:
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._held: _Job | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def call(self, work: Callable[[], Any]) -> Any:
        """Run other model work (an explanation) in the model thread, between batches."""
        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        finally:
            self.waiting -= 1

    async def submit(self, texts: list[str]) -> list[Prediction]:
        job = _Job(texts, asyncio.get_running_loop().create_future())
        self.waiting += 1
        await self._queue.put(job)
        return await job.future

    def _take(self, first: _Job) -> list[_Job]:
        """``first`` and the jobs waiting behind it, up to max_batch texts (a larger job goes alone)."""
        jobs, size = [first], len(first.texts)
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if size + len(job.texts) > self.max_batch:
                self._held = job  # first in the next batch
                break
            jobs.append(job)
            size += len(job.texts)
        return jobs

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first, self._held = self._held or await self._queue.get(), None
            if self.max_wait_s and len(first.texts) < self.max_batch and self._queue.empty():
                await asyncio.sleep(self.max_wait_s)
            taken = self._take(first)
            self.waiting -= len(taken)
            jobs = [job for job in taken if not job.future.done()]  # done: the client left
            texts = [text for job in jobs for text in job.texts]
            if not texts:
                continue
            try:
                predictions = await loop.run_in_executor(self._executor, self.predict, texts)
            except Exception as err:  # the requests of this batch fail (500); the service goes on
                log.exception("prediction failed for a batch of %d texts", len(texts))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            self._count(jobs, len(texts))
            start = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(predictions[start:start + len(job.texts)])
                start += len(job.texts)

    def _count(self, jobs: list[_Job], texts: int) -> None:
        stats = self.stats
        stats.batches += 1
        stats.texts += texts
        stats.requests += len(jobs)
        stats.largest_batch_texts = max(stats.largest_batch_texts, texts)
        stats.largest_batch_requests = max(stats.largest_batch_requests, len(jobs))


def read_model_card(folder: Path) -> dict[str, Any] | None:
    """Dataset and test metrics from the front matter of the export's README.md; None without a card."""
    path = folder / "README.md"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        return None
    front = yaml.safe_load(text[4:text.index("\n---", 4)]) or {}
    card: dict[str, Any] = {"dataset": None, "metrics": {}}
    for entry in front.get("model-index") or []:
        for result in entry.get("results") or []:
            card["dataset"] = (result.get("dataset") or {}).get("name")
            card["metrics"].update({m["type"]: m["value"] for m in result.get("metrics") or []})
    return card


def prediction_out(prediction: Prediction, multi_label: bool) -> PredictionOut:
    record = prediction_record(prediction, multi_label)
    del record["text"]  # the caller sent it
    return PredictionOut(**record)


def create_app(predictor: Predictor, model_dir: Path, limits: Limits | None = None,
               log_texts: bool = False) -> FastAPI:
    """The service around a loaded predictor of any backend. ``log_texts`` puts the texts sent in the access log."""
    limits = limits or Limits()
    page_html = PAGE.read_text(encoding="utf-8")  # read once, not per request
    batcher = Batcher(predictor.predict, limits.max_batch, limits.max_wait_ms / 1000)
    monitor = Monitor(str(model_dir), predictor.backend, folder_digest(Path(model_dir)), lambda: batcher.waiting,
                      predictor.info.multi_label)
    access = access_logger()
    info = predictor.info
    metadata = {
        "labels": list(predictor.labels), "threshold": predictor.threshold, "uncertain_label": UNCERTAIN,
        "multi_label": info.multi_label,
        "label_thresholds": list(info.label_thresholds) if info.label_thresholds is not None else None,
        "uncertain_band": info.band if info.multi_label else None,
        "decision_threshold": info.decision_threshold,  # two classes, tuned: labels[1] from this probability on
        "max_length": predictor.max_length, "truncation": predictor.truncation, "backend": predictor.backend,
        # a long text read whole: its windows and how their logits become its answer (null: cut by truncation)
        "windows": None if info.windows is None else asdict(info.windows) | {"aggregation": info.aggregation},
        "model": str(model_dir), "model_card": read_model_card(Path(model_dir)), "limits": asdict(limits),
        "examples": EXAMPLES,
    }

    async def warm_up(app: FastAPI) -> None:
        """One prediction through the batcher before /ready says yes (the first model call is the slowest)."""
        try:
            await batcher.submit(EXAMPLES[:1])
            app.state.ready = True
        except Exception as err:  # /ready stays 503 and says why; /health still answers
            log.exception("the warm-up prediction failed")
            app.state.warm_up_error = f"{type(err).__name__}: {err}"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        warming = asyncio.create_task(warm_up(app))
        yield
        app.state.ready = False
        await asyncio.gather(warming, return_exceptions=True)
        await batcher.stop()

    app = FastAPI(title="Text classifier", version="1", lifespan=lifespan,
                  description="Labels texts with a fine-tuned classifier; answers UNCERTAIN below the "
                              "confidence threshold.")

    app.state.ready, app.state.stopping, app.state.warm_up_error = False, False, None
    body_schema = {"required": True, "content": {"application/json": {"schema": PredictRequest.model_json_schema()}}}

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable) -> Response:
        """Every request: an id, its metrics and one access-log line."""
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers[REQUEST_ID_HEADER] = rid
            return response
        finally:  # also for a request that failed with an exception (a 500)
            seconds = time.perf_counter() - start
            route = getattr(request.scope.get("route"), "path", "unmatched")  # templates only: bounded labels
            monitor.observe(route, status, seconds)
            access.info(access_line(rid, request.method, route, status, seconds,
                                    getattr(request.state, "texts", None), log_texts))

    def admit(request: Request, texts: list[str]) -> None:
        """Note the texts for the access log; refuse at once (503) when too many requests wait for the model."""
        request.state.texts = texts
        if batcher.waiting >= limits.max_waiting:
            raise HTTPException(503, f"{batcher.waiting} requests are waiting for the model, at most "
                                     f"{limits.max_waiting}: retry after a moment", headers={"Retry-After": "1"})

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True,
              openapi_extra={"requestBody": body_schema},
              responses=TEXT_REQUEST_ERRORS)
    async def predict(request: Request) -> PredictResponse:
        """Label one text (``{"text": ...}``) or several (``{"texts": [...]}``)."""
        texts = request_texts(await read_body(request, limits), limits)
        admit(request, texts)
        predictions = await batcher.submit(texts)
        monitor.answered(predictions)
        return PredictResponse(predictions=[prediction_out(p, predictor.info.multi_label) for p in predictions],
                               threshold=predictor.threshold)

    @app.post("/explain", response_model=ExplainResponse, response_model_exclude_none=True,
              openapi_extra={"requestBody": body_schema},
              responses=TEXT_REQUEST_ERRORS)
    async def explain_texts(request: Request) -> ExplainResponse:
        """Label texts and say which words drove each answer: every word's weight is the probability of the
        label lost without it (occlusion)."""
        texts = request_texts(await read_body(request, limits), limits, limits.max_explain_texts, "/explain")
        admit(request, texts)

        def work() -> list[tuple[Prediction, list[Explanation]]]:
            return list(zip(predictor.predict(texts), explain(predictor, texts, limits.max_explain_words),
                            strict=True))

        explained = await batcher.call(work)
        monitor.answered([prediction for prediction, _ in explained])
        results = [ExplainedOut(prediction=prediction_out(prediction, info.multi_label),
                                explanations=[ExplanationOut(**e.record()) for e in why])
                   for prediction, why in explained]
        return ExplainResponse(results=results, threshold=predictor.threshold, max_words=limits.max_explain_words)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """The service is up and its model loaded; how requests have been batched so far."""
        return {"status": "ok", "backend": predictor.backend, "batching": asdict(batcher.stats)}

    @app.get("/ready", responses={503: {"description": "warming up, stopping, or the warm-up failed"}})
    async def ready() -> JSONResponse:
        """Whether to send this service requests: its model answered the warm-up and it is not stopping."""
        if app.state.ready and not app.state.stopping:
            return JSONResponse({"status": "ready"})
        reason = ("stopping" if app.state.stopping else
                  f"the warm-up prediction failed: {app.state.warm_up_error}" if app.state.warm_up_error
                  else "warming up")
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics, in its text format."""
        return Response(monitor.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/metadata")
    async def get_metadata() -> dict[str, Any]:
        """Labels, threshold, tokenization, limits, the model card's test metrics and example texts."""
        return metadata

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    return app


class DrainingServer(uvicorn.Server):
    """uvicorn's server, stopped by SIGTERM or SIGINT as a deployment expects: /ready turns 503, no new
    connection is accepted, every accepted request is answered (for up to the drain timeout), then the process
    exits 0. uvicorn itself re-raises the signal once it has drained, which ends the process with the
    signal's status, as if it had been killed."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.app.state.stopping = True
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()  # drained: return normally instead of dying by the signal


def serve(model_dir: Path, predictor: Predictor, host: str, port: int, limits: Limits, drain_s: float = 30.0,
          log_texts: bool = False) -> None:
    """Run the service with uvicorn until SIGTERM or SIGINT, then drain (at most ``drain_s`` seconds)."""
    app = create_app(predictor, model_dir, limits, log_texts)
    log.info("serving %s (%s) on http://%s:%d", model_dir, predictor.backend, host, port)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                            timeout_graceful_shutdown=drain_s)
    DrainingServer(config, app).run()
    log.info("stopped: every accepted request was answered")
