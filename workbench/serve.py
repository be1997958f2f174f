"""The prediction service: FastAPI on uvicorn, the model loaded once at startup, concurrent requests micro-batched.

    workbench serve runs/sst2/version_0/exports/onnx-int8 --port 8000      # an export: no torch in the process
    workbench serve runs/sst2/version_0 --engine onnx-int8                # a run: exported first if needed
    curl -s 127.0.0.1:8000/v1/predict -H 'content-type: application/json' -d '{"texts": ["a gripping film"]}'

Endpoints: ``POST /v1/predict``, ``GET /health`` (alive), ``GET /ready`` (model loaded), ``GET /metadata``,
``GET /metrics`` (Prometheus) and the OpenAPI page at ``/docs``. Model calls never run on the event loop. With
batching on (the default), they run on one worker thread: requests that arrive while the model is busy (or within
``max_wait_ms``) are gathered into one batch of up to ``max_batch_size`` texts, which the predictor sorts by length
and cuts into engine calls of ``engine_batch_size``; the queue is bounded, and a full queue is answered with 503
and Retry-After. With batching off, each request is its own model call in the thread pool (at most
``max_queue`` at once). Limits on texts per request, characters per text
and body bytes are answered with 413 and a JSON error naming the limit. When the environment variable named by
``api_key_env`` is set, every endpoint but ``/health`` wants ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from workbench import __version__
from workbench.config import ServeConfig
from workbench.errors import WorkbenchError
from workbench.runtime import Predictor

logger = logging.getLogger("workbench.serve")
PREDICT_PATH = "/v1/predict"
OPEN_PATHS = ("/health",)  # answered without the API key: a load balancer's liveness probe has none


class PredictRequest(BaseModel):
    """Texts to classify (and, for a sentence-pair model, one second text per text)."""

    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(
        min_length=1,
        description="The texts, at least one.",
        examples=[["a gripping, funny film", "dull and far too long"]],
    )
    pairs: list[StrictStr] | None = Field(None, description="Second texts, one per text (sentence-pair models only).")


class Prediction(BaseModel):
    label: str | None = Field(description="The predicted label (single-label models; null for multi-label).")
    labels: list[str] = Field(
        description="Every label predicted: the one label, or each class at or over its threshold (multi-label)."
    )
    probabilities: dict[str, float] = Field(description="Probability of each class after temperature scaling.")


class PredictResponse(BaseModel):
    model_version: str
    engine: str
    predictions: list[Prediction]


class ErrorResponse(BaseModel):
    error: str = Field(description="What is wrong and how to fix it.")
    limit: str | None = Field(None, description="The service limit the request went over, if that is the reason.")
    detail: list[dict] | None = Field(None, description="Every problem found in the request body (422).")


class QueueFull(Exception):
    """The micro-batcher holds ``max_queue`` requests already."""


class ServiceMetrics:
    """The service's Prometheus metrics, in a registry of its own (so several apps can live in one process)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "workbench_requests_total", "HTTP requests answered.", ["endpoint", "status"], registry=self.registry
        )
        self.errors = Counter(
            "workbench_request_errors_total",
            "Requests answered with a 4xx or 5xx status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "workbench_request_seconds",
            "Time from request to response.",
            ["endpoint"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "workbench_batch_texts",
            "Texts per model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.model_seconds = Histogram(
            "workbench_model_seconds",
            "Time of one model call.",
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.queue = Gauge("workbench_queue_requests", "Requests waiting for the model.", registry=self.registry)
        self.rejected = Counter(
            "workbench_rejected_total", "Requests refused because the queue was full.", registry=self.registry
        )


@dataclass
class _Job:
    texts: list[str]
    pairs: list[str] | None
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Gathers concurrent requests into one model call on a single worker thread.

    A batch starts with the oldest waiting request and takes others until it holds ``max_batch_size`` texts or
    ``max_wait_s`` has passed since it started; a request is never split, so a batch may end one request over the
    size. While the model runs, new requests wait in a queue of at most ``max_queue`` requests.
    """

    def __init__(
        self, predict: Callable[[list[str], list[str] | None], np.ndarray], config: ServeConfig, metrics: ServiceMetrics
    ):
        self.predict, self.config, self.metrics = predict, config, metrics
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=config.max_queue)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.task.add_done_callback(self._stopped)

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    def _stopped(self, task: asyncio.Task) -> None:
        """The loop ended (shutdown, or a bug): fail what waits instead of leaving it waiting for ever."""
        if not task.cancelled() and task.exception() is not None:
            logger.error("The micro-batcher stopped", exc_info=task.exception())
        while not self.queue.empty():
            job = self.queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("The service's model worker stopped."))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, texts: list[str], pairs: list[str] | None) -> np.ndarray:
        """Probabilities ``(len(texts), K)`` of one request, computed in a shared batch."""
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Job(texts, pairs, future))
        except asyncio.QueueFull:
            raise QueueFull from None
        self.metrics.queue.set(self.queue.qsize())
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        getter: asyncio.Future | None = None  # kept across batches: cancelling a queue.get could drop a job
        wait_s = self.config.max_wait_ms / 1000
        while True:
            if getter is None:
                getter = asyncio.ensure_future(self.queue.get())
            jobs = [await getter]
            getter = None
            size, deadline = len(jobs[0].texts), loop.time() + wait_s
            while size < self.config.max_batch_size:
                try:
                    job = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    getter = asyncio.ensure_future(self.queue.get())
                    done, _ = await asyncio.wait({getter}, timeout=timeout)
                    if not done:
                        break
                    job, getter = getter.result(), None
                jobs.append(job)
                size += len(job.texts)
            self.metrics.queue.set(self.queue.qsize())
            try:
                await self._answer(loop, [job for job in jobs if not job.future.cancelled()])
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # whatever happens to one batch, the loop serves the next
                logger.exception("A batch failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(RuntimeError(f"The batch failed: {exc!r}"))

    async def _answer(self, loop, jobs: list[_Job]) -> None:
        if not jobs:
            return
        texts = [t for job in jobs for t in job.texts]
        pairs = [p for job in jobs for p in job.pairs] if jobs[0].pairs is not None else None  # all or none: checked
        try:
            started = time.perf_counter()
            proba = await loop.run_in_executor(self.executor, self.predict, texts, pairs)
            self.metrics.model_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_size.observe(len(texts))
        except Exception as exc:  # one bad request must not fail the others: answer each on its own
            if len(jobs) == 1:
                if not jobs[0].future.done():
                    jobs[0].future.set_exception(exc if not isinstance(exc, StopIteration) else RuntimeError(repr(exc)))
                return
            for job in jobs:
                await self._answer(loop, [job])
            return
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(proba[start : start + len(job.texts)])
            start += len(job.texts)


def _error(status: int, message: str, limit: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "limit": limit}, status_code=status, headers=headers)


_KNOWN_PATHS = (PREDICT_PATH, "/health", "/ready", "/metadata", "/metrics", "/docs", "/openapi.json")
_ERROR_RESPONSES = {status: {"model": ErrorResponse} for status in (400, 401, 413, 422, 503)}


class PredictionService:
    """One service's state and endpoints: the predictor (once loaded), the micro-batcher, the requests in flight
    without it, and the Prometheus metrics. :func:`create_app` registers the methods as the app's routes.

    Args:
        model: a loaded :class:`~workbench.runtime.Predictor`, or a function that loads one (called at startup).
        config: limits, batching and the API key's environment variable.
    """

    def __init__(self, model: Predictor | Callable[[], Predictor], config: ServeConfig):
        self.model, self.config = model, config
        self.metrics = ServiceMetrics()
        self.api_key = os.environ.get(config.api_key_env) or None
        self.predictor: Predictor | None = None  # None until the lifespan has loaded it: /ready answers 503
        self.version = "unversioned"
        self.batcher: MicroBatcher | None = None
        self.in_flight = 0  # model calls running without the micro-batcher (at most max_queue)

    @asynccontextmanager
    async def lifespan(self, app: FastAPI):
        predictor = self.model if isinstance(self.model, Predictor) else await run_in_threadpool(self.model)
        predictor.batch_size = self.config.engine_batch_size
        self.predictor = predictor
        self.version = str(predictor.meta.get("model_sha256", "unversioned"))[:16]
        if self.config.batching:
            self.batcher = MicroBatcher(predictor.predict_proba, self.config, self.metrics)
            self.batcher.start()
        yield
        if self.batcher is not None:
            await self.batcher.stop()

    async def guard_and_count(self, request: Request, call_next):
        """Middleware: the API key and the body limit before any endpoint, and every answer counted and timed."""
        started = time.perf_counter()
        route = request.scope.get("path", "")
        endpoint = route if route in _KNOWN_PATHS else "other"
        if self.api_key and route not in OPEN_PATHS:
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
                response = _error(
                    401,
                    "Missing or wrong API key: send 'Authorization: Bearer <key>'.",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                return self._count(endpoint, response, started)
        if request.method == "POST":
            limit = self.config.max_body_bytes
            declared = request.headers.get("content-length")
            too_big = declared is not None and declared.isdigit() and int(declared) > limit
            if not too_big and declared is None:
                too_big = len(await request.body()) > limit
            if too_big:
                response = _error(413, f"The request body is over {limit} bytes.", "max_body_bytes")
                return self._count(endpoint, response, started)
        try:
            response = await call_next(request)
        except Exception:  # never a traceback to the client; the server log has it
            logger.exception("Error answering %s %s", request.method, route)
            response = _error(500, "Internal error while answering the request; the server log has the details.")
        return self._count(endpoint, response, started)

    def _count(self, endpoint: str, response: Response, started: float) -> Response:
        status = str(response.status_code)
        self.metrics.requests.labels(endpoint, status).inc()
        if response.status_code >= 400:
            self.metrics.errors.labels(endpoint, status).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    async def predict(self, body: PredictRequest):  # async: it awaits the batcher; the model runs elsewhere
        """Labels and class probabilities of each text."""
        predictor, config = self.predictor, self.config
        if predictor is None:
            return _error(503, "The model is still loading.", headers={"Retry-After": "1"})
        if len(body.texts) > config.max_texts:
            return _error(
                413,
                f"{len(body.texts)} texts in one request; the limit is {config.max_texts}. Split the request.",
                "max_texts",
            )
        for i, text in enumerate([*body.texts, *(body.pairs or [])]):
            if len(text) > config.max_chars:
                return _error(
                    413,
                    f"Text #{i % len(body.texts)} has {len(text)} characters; the limit is {config.max_chars}.",
                    "max_chars",
                )
        predictor.check(body.texts, body.pairs)  # a DataError is a 422 naming the text, before it joins a batch
        try:
            proba = await self._proba(predictor, body.texts, body.pairs)
        except QueueFull:
            self.metrics.rejected.inc()
            return _error(
                503,
                f"The service is at capacity ({config.max_queue} requests waiting); retry shortly.",
                "max_queue",
                headers={"Retry-After": "1"},
            )
        labels = predictor.labels_from_proba(proba)
        names = predictor.label_names
        predictions = [
            Prediction(
                label=None if predictor.multi_label else answer,
                labels=list(answer) if predictor.multi_label else [answer],
                probabilities={name: float(p) for name, p in zip(names, row, strict=True)},
            )
            for answer, row in zip(labels, proba, strict=True)
        ]
        return PredictResponse(model_version=self.version, engine=predictor.engine, predictions=predictions)

    async def _proba(self, predictor: Predictor, texts: list[str], pairs: list[str] | None) -> np.ndarray:
        """Probabilities ``(len(texts), K)``: in the micro-batcher's next batch, else a model call of their own."""
        if self.batcher is not None:
            return await self.batcher.submit(texts, pairs)
        if self.in_flight >= self.config.max_queue:
            raise QueueFull
        self.in_flight += 1
        try:
            return await run_in_threadpool(predictor.predict_proba, texts, pairs)
        finally:
            self.in_flight -= 1

    async def health(self):
        """The process is alive."""
        return {"status": "ok"}

    async def ready(self):
        """The model is loaded and the service answers predictions."""
        if self.predictor is None:
            return _error(503, "The model is still loading.", headers={"Retry-After": "1"})
        if self.batcher is not None and not self.batcher.alive:
            return _error(503, "The model worker stopped; restart the service (its log says why).")
        return {"status": "ready", "engine": self.predictor.engine}

    async def metadata(self):
        """The model: labels, backbone, engine, export parity, the run's metrics, and the service's limits."""
        predictor = self.predictor
        if predictor is None:
            return _error(503, "The model is still loading.", headers={"Retry-After": "1"})
        meta = predictor.meta
        keys = (
            "labels",
            "multi_label",
            "thresholds",
            "temperature",
            "backbone",
            "model_name",
            "pooling",
            "processing",
            "engine",
            "model_format",
            "optimized",
            "quantized",
            "parity",
            "run_metrics",
            "source",
            "exported_at",
            "size_bytes",
            "versions",
        )
        return {
            "model_version": self.version,
            "engine": predictor.engine,
            **{k: meta[k] for k in keys if k in meta and k != "engine"},
            "service": {
                **asdict(self.config),
                "api_key_set": bool(self.api_key),
                "workbench": __version__,
                "torch_imported": "torch" in sys.modules,
            },
        }

    async def prometheus(self):
        """Prometheus metrics: requests and errors by endpoint and status, latency, batch sizes, queue depth."""
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _invalid_body(request: Request, exc: RequestValidationError):
    problems = jsonable_encoder(exc.errors())
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first.get("loc", []))
    return JSONResponse(
        {
            "error": f"{where}: {first.get('msg')}" if where else str(first.get("msg")),
            "limit": None,
            "detail": problems,
        },
        status_code=422,
    )


async def _http_error(request: Request, exc: StarletteHTTPException):  # 404, 405, an unreadable body (400)
    message = exc.detail if exc.status_code != 400 else "The body is not readable JSON (is it UTF-8?)."
    return _error(exc.status_code, str(message), headers=getattr(exc, "headers", None))


async def _bad_input(request: Request, exc: WorkbenchError):
    return _error(422, str(exc))


def create_app(model: Predictor | Callable[[], Predictor], config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI application serving ``model``: a :class:`PredictionService` whose methods are its routes.

    Args:
        model: a loaded :class:`~workbench.runtime.Predictor`, or a function that loads one (called once, at
            startup, off the event loop; ``/ready`` answers 503 until it returns).
        config: limits, batching and the API key's environment variable (:class:`~workbench.config.ServeConfig`).

    Example:
        >>> from fastapi.testclient import TestClient  # doctest: +SKIP
        >>> with TestClient(create_app(load_export("exports/onnx-int8"))) as client:  # doctest: +SKIP
        ...     client.post("/v1/predict", json={"texts": ["a gripping film"]}).json()
    """
    service = PredictionService(model, config or ServeConfig())
    app = FastAPI(
        title="workbench prediction service",
        version=__version__,
        lifespan=service.lifespan,
        description="Text classification by a model trained with workbench. See /metadata for its labels.",
    )
    app.middleware("http")(service.guard_and_count)
    app.add_exception_handler(RequestValidationError, _invalid_body)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(WorkbenchError, _bad_input)
    app.add_api_route(
        PREDICT_PATH, service.predict, methods=["POST"], response_model=PredictResponse, responses=_ERROR_RESPONSES
    )
    app.add_api_route("/health", service.health, methods=["GET"])
    app.add_api_route("/ready", service.ready, methods=["GET"], responses={503: {"model": ErrorResponse}})
    app.add_api_route("/metadata", service.metadata, methods=["GET"], responses={503: {"model": ErrorResponse}})
    app.add_api_route("/metrics", service.prometheus, methods=["GET"], response_class=Response)
    return app


def serve(model: Predictor, config: ServeConfig | None = None) -> None:
    """Run the service on uvicorn until interrupted (``workbench serve``)."""
    config = config or ServeConfig()
    uvicorn.run(create_app(model, config), host=config.host, port=config.port, log_level="info", access_log=False)
