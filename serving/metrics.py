"""Prometheus text-format metrics of one replica, without a global registry.

Counters of requests by route and status, a latency histogram per route, the model
version being served and model-load failures. `render()` is what GET /metrics returns.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Latency histogram bucket bounds, seconds."""


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1


class Metrics:
    """Thread-safe counters; cheap enough for the request path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = defaultdict(_Histogram)
        self._gauges: dict[str, float] = {}
        self._labelled: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self.model_version = ""

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(route, status)] += 1
            self._latency[route].observe(seconds)

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self._gauges[name] = value

    def set_labelled(self, name: str, labels: dict[str, str], value: float) -> None:
        """Set gauge `recsys_<name>{labels}` (label values are escaped on render)."""
        with self._lock:
            self._labelled[name][tuple(sorted(labels.items()))] = value

    def inc(self, name: str, by: float = 1.0) -> None:
        with self._lock:
            self._gauges[name] = self._gauges.get(name, 0.0) + by

    def count_batch(self, size: int) -> None:
        """One batch of `size` `/v1/rank` requests ranked together (their ratio, over
        time, is the mean batch size)."""
        self.inc("rank_batches_total")
        self.inc("rank_batched_requests_total", size)

    def render(self) -> str:
        """The Prometheus exposition text."""
        with self._lock:
            lines = [
                "# HELP recsys_requests_total HTTP requests by route and status.",
                "# TYPE recsys_requests_total counter",
            ]
            for (route, status), n in sorted(self._requests.items()):
                lines.append(f'recsys_requests_total{{route="{route}",status="{status}"}} {n}')
            lines += [
                "# HELP recsys_request_seconds Request latency by route.",
                "# TYPE recsys_request_seconds histogram",
            ]
            for route, hist in sorted(self._latency.items()):
                cumulative = 0
                for bound, count in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    lines.append(
                        f'recsys_request_seconds_bucket{{route="{route}",le="{le}"}} {cumulative}'
                    )
                lines.append(f'recsys_request_seconds_sum{{route="{route}"}} {hist.total:.6f}')
                lines.append(f'recsys_request_seconds_count{{route="{route}"}} {hist.n}')
            lines += [
                "# HELP recsys_model_info The model version being served.",
                "# TYPE recsys_model_info gauge",
                f'recsys_model_info{{version="{self.model_version}"}} 1',
            ]
            for name, value in sorted(self._gauges.items()):
                lines.append(f"# TYPE recsys_{name} gauge")
                lines.append(f"recsys_{name} {value:g}")
            for name, series in sorted(self._labelled.items()):
                lines.append(f"# TYPE recsys_{name} gauge")
                for labels, value in sorted(series.items()):
                    text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                    lines.append(f"recsys_{name}{{{text}}} {value:g}")
            return "\n".join(lines) + "\n"


class Measure:
    """Pure ASGI middleware: `observe(scope, status, seconds)` once each HTTP answer has
    been sent (status 500 if the app raised before answering).

    Pure ASGI rather than `@app.middleware("http")`: Starlette's `BaseHTTPMiddleware`
    runs every request through a task group and memory streams, a fixed cost per request
    of the same order as ranking one buyer.
    """

    def __init__(self, app: ASGIApp, observe: Callable[[Scope, int, float], None]) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self.observe(scope, status, time.perf_counter() - began)


def _escape(value: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
