"""Prometheus metrics (PRIVACY row 13): request, image, cache, decode and model figures.

Labels are route templates, status codes, error codes and model ids only: never an account, a
key or a request id (cardinality, and usage per account is personal data). Each app has its own
registry, so several apps in one process (the tests) do not collide.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dupify.context import RequestContext
from dupify.errors import ApiError
from dupify.images.fetch import UrlFetcher
from dupify.inference.backend import InferenceBackend
from dupify.server.middleware import CONTEXT_KEY

# The codes that mean "the bytes were not an image we could decode within the caps".
DECODE_FAILURES = frozenset(
    {
        "invalid_image",
        "image_too_large",
        "too_many_frames",
        "image_decode_timeout",
        "request_too_complex",
        "unsupported_media_type",
    }
)
# A client may send any token as its method; each distinct label value is a series kept forever,
# so anything else is counted as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The counters the HTTP layer updates, plus the model figures read at scrape time."""

    def __init__(
        self,
        backend: Callable[[], InferenceBackend | None],
        fetcher: Callable[[], UrlFetcher | None] = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "dupify_http_requests",
            "HTTP requests by method, route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "dupify_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter(
            "dupify_images_processed",
            "Images in successful image requests, by route template.",
            ("route",),
            registry=self.registry,
        )
        self.cache = Counter(
            "dupify_result_cache_lookups",
            "Per-image result-cache lookups in successful requests: hit or miss.",
            ("result",),
            registry=self.registry,
        )
        self.decode_failures = Counter(
            "dupify_decode_failures",
            "Requests refused because an image could not be decoded, by error code.",
            ("code",),
            registry=self.registry,
        )
        self.registry.register(_ModelCollector(backend))
        self.registry.register(_UrlFetchCollector(fetcher))

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "(no route)"
        method = scope.get("method")
        method = method if method in KNOWN_METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        ctx = scope.get("state", {}).get(CONTEXT_KEY)
        if not isinstance(ctx, RequestContext):
            return
        if ctx.error_code in DECODE_FAILURES:
            self.decode_failures.labels(ctx.error_code).inc()
        if status < 400 and ctx.images:
            self.images.labels(route).inc(ctx.images)
            self.cache.labels("hit").inc(ctx.cached_images)
            self.cache.labels("miss").inc(ctx.images - ctx.cached_images)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ModelCollector(Collector):
    """Batcher figures from the inference backend's `stats()`, read when Prometheus scrapes."""

    def __init__(self, backend: Callable[[], InferenceBackend | None]) -> None:
        self._backend = backend

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        backend = self._backend()
        if backend is None:
            return
        images = CounterMetricFamily(
            "dupify_model_images", "Images run through each model.", labels=["model"]
        )
        batches = CounterMetricFamily(
            "dupify_model_batches", "Inference batches per model.", labels=["model"]
        )
        failed = CounterMetricFamily(
            "dupify_model_failed_batches", "Batches that raised.", labels=["model"]
        )
        rejected = CounterMetricFamily(
            "dupify_model_rejected", "Requests refused: queue full (429/503).", labels=["model"]
        )
        queue = GaugeMetricFamily(
            "dupify_model_queue_depth", "Images waiting for a batch.", labels=["model"]
        )
        busy = CounterMetricFamily(
            "dupify_model_busy_seconds", "Time spent running batches.", labels=["model"]
        )
        sizes = HistogramMetricFamily(
            "dupify_model_batch_size", "Images per inference batch.", labels=["model"]
        )
        for model_id, stats in backend.stats().items():
            images.add_metric([model_id], stats.items)
            batches.add_metric([model_id], stats.batches)
            failed.add_metric([model_id], stats.failed_batches)
            rejected.add_metric([model_id], stats.rejected)
            queue.add_metric([model_id], stats.queue_depth)
            busy.add_metric([model_id], stats.busy_seconds)
            cumulative, buckets = 0, []
            for size, count in sorted(stats.batch_sizes.items()):
                cumulative += count
                buckets.append((str(float(size)), cumulative))
            buckets.append(("+Inf", stats.batches))
            total = sum(size * count for size, count in stats.batch_sizes.items())
            sizes.add_metric([model_id], buckets, sum_value=total)
        yield from (images, batches, failed, rejected, queue, busy, sizes)


class _UrlFetchCollector(Collector):
    """Image URL fetch outcomes (dupify.images.fetch), read when Prometheus scrapes: what the
    SSRF guard refused, by rule, is how an operator sees someone probing the network."""

    def __init__(self, fetcher: Callable[[], UrlFetcher | None]) -> None:
        self._fetcher = fetcher

    def collect(self) -> Iterator[CounterMetricFamily]:
        fetcher = self._fetcher()
        if fetcher is None:
            return
        outcomes = CounterMetricFamily(
            "dupify_image_url_fetches",
            "Image URLs by outcome: ok, or the error code and, for url_forbidden, the rule.",
            labels=["outcome", "rule"],
        )
        for (outcome, rule), count in sorted(fetcher.outcomes.items()):
            outcomes.add_metric([outcome, rule], count)
        yield outcomes


class MetricsMiddleware:
    """Counts every HTTP request once its response has started (pure ASGI, bodies untouched)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") == "/metrics":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            self.metrics.observe(scope, status, time.perf_counter() - started)


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format, only with `Authorization: Bearer <DUPIFY_METRICS_TOKEN>`; without
    a configured token the route does not exist (404), so nothing leaks by default."""
    runtime = request.app.state.runtime
    token = runtime.settings.metrics_token
    if token is None:
        raise ApiError("not_found", "Not found.")
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected):
        raise ApiError(
            "invalid_api_key",
            "Metrics need 'Authorization: Bearer <metrics token>' (DUPIFY_METRICS_TOKEN).",
        )
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
