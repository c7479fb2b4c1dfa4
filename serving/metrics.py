"""Prometheus text-format metrics of one replica, without a global registry.

Counters of requests by route and status, a latency histogram per route, the model
version being served and model-load failures. `render()` is what GET /metrics returns.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from dataclasses import dataclass, field

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


def _escape(value: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
