"""What the service tells its operators: Prometheus metrics (``GET /metrics``) and one JSON access-log line per
request, each request with an id echoed in the ``X-Request-ID`` header.

The metrics live in a registry of their own per app (prometheus_client), so several services in one process
(tests) do not share counts.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from finetune.core.contract import UNCERTAIN, Prediction

ACCESS_LOG = "finetune.access"  # the logger of the access log's JSON lines
REQUEST_ID_HEADER = "X-Request-ID"
NO_LABEL = "(none)"  # a label set's answer that gives no label, in finetune_answers_total
# A request id a client may choose: short and plain, so it cannot forge log lines or headers.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def request_id(given: str | None) -> str:
    """The client's X-Request-ID when it is a plain token, else a new one."""
    return given if given and CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


@dataclass
class Monitor:
    """The service's Prometheus metrics."""

    model: str
    backend: str
    digest: str
    waiting: Callable[[], int]  # requests waiting for the model now
    multi_label: bool = False  # label sets: each label given is counted, never the set (bounded label values)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("finetune_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("finetune_request_seconds", "time to answer a request, by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.texts = Counter("finetune_texts_predicted", "texts answered by /predict and /explain", registry=r)
        self.answers = Counter("finetune_answers", f"answers by label ({UNCERTAIN} counted apart; label sets: each "
                               f"label given, {NO_LABEL} for an empty set)", ["label"], registry=r)
        self.uncertain = Gauge("finetune_uncertain_share", f"share of the texts answered {UNCERTAIN} since the "
                               "service started", registry=r)
        self.uncertain.set_function(self._uncertain_share)
        self.queue = Gauge("finetune_waiting_requests", "requests waiting for the model", registry=r)
        self.queue.set_function(self.waiting)
        Info("finetune_model", "the model served: its folder, backend and the sha256 of the export's files",
             registry=r).info({"model": self.model, "backend": self.backend, "digest": self.digest})
        self._texts = 0
        self._uncertain = 0

    def _uncertain_share(self) -> float:
        return self._uncertain / self._texts if self._texts else 0.0

    def answered(self, predictions: list[Prediction]) -> None:
        for prediction in predictions:
            if prediction.uncertain or not self.multi_label:
                self.answers.labels(prediction.label).inc()
            else:
                for label in prediction.label_set or (NO_LABEL,):
                    self.answers.labels(label).inc()
            self._uncertain += prediction.uncertain
        self._texts += len(predictions)
        self.texts.inc(len(predictions))

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


def access_line(rid: str, method: str, route: str, status: int, seconds: float,
                texts: list[str] | None, log_texts: bool) -> str:
    """One request as a JSON line: no text content unless ``log_texts``."""
    record: dict[str, Any] = {"time": round(time.time(), 3), "request_id": rid, "method": method, "route": route,
                              "status": status, "ms": round(1000 * seconds, 2)}
    if texts is not None:
        record["texts"] = len(texts)
        if log_texts:
            record["text_content"] = texts
    return json.dumps(record, ensure_ascii=False)


def access_logger() -> logging.Logger:
    """The access log: its JSON lines alone on standard error, whatever format the other logs use."""
    logger = logging.getLogger(ACCESS_LOG)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger
