"""A load generator for /v1/rank (and /v1/rank/batch), run in its own process.

Two ways to load the server:

- closed loop (`--concurrency N`): N clients, each sending its next request as soon as
  the last one is answered, for T seconds; throughput is what the server sustains at N
  requests in flight.
- open loop (`--rate R`): requests are *sent* on a Poisson schedule of R per second,
  whatever the server does (at most `--max-inflight` at once), and each latency counts
  from the request's scheduled time, so a server falling behind shows up as latency
  rather than as a slower schedule (no coordinated omission). The schedule depends only
  on R and the seed: two apps loaded at the same rate get the same arrival times.

With `--batch B`, each request is a `/v1/rank/batch` of B buyers. The client is aiohttp
(a third of httpx's CPU per request): on a small machine the generator shares the cores
with the server it loads.

    python -m benchmarks.loadgen --url http://127.0.0.1:8000 --key KEY \\
        --buyers buyers.txt --seconds 20 (--concurrency 16 | --rate 200) [--batch 100]

Prints one JSON line: requests, errors, requests per second, latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

P99_TARGET_MS = 50.0


@dataclass(frozen=True)
class Load:
    """One load-generator window: what `run` returns, typed."""

    mode: str
    concurrency: int
    offered_rps: float
    batch: int
    requests: int
    errors: int
    seconds: float
    rps: float
    buyers_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float = float("nan")
    send_lag_p99_ms: float = 0.0
    first_error: str = ""
    windows: int = 1
    """How many windows this is the median of (`median_load`)."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Load:
        """From `run`'s dict or `asdict` (a None float, from strict JSON, is NaN)."""
        names = {f.name for f in fields(cls)}
        kept: dict[str, Any] = {
            k: float("nan") if v is None else v for k, v in raw.items() if k in names
        }
        return cls(**kept)

    def meets(self, p99_ms: float = P99_TARGET_MS) -> bool:
        """No errors, and p99 latency within `p99_ms`."""
        return self.errors == 0 and self.requests > 0 and self.p99_ms <= p99_ms


def median_load(loads: Sequence[Load]) -> Load:
    """The median of repeated windows, figure by figure; errors and requests summed."""
    if len(loads) == 1:
        return loads[0]

    def med(name: str) -> float:
        return statistics.median(getattr(x, name) for x in loads)

    first = loads[0]
    return Load(
        mode=first.mode,
        concurrency=first.concurrency,
        offered_rps=first.offered_rps,
        batch=first.batch,
        requests=sum(x.requests for x in loads),
        errors=sum(x.errors for x in loads),
        seconds=sum(x.seconds for x in loads),
        rps=med("rps"),
        buyers_per_s=med("buyers_per_s"),
        p50_ms=med("p50_ms"),
        p90_ms=med("p90_ms"),
        p99_ms=med("p99_ms"),
        max_ms=max(x.max_ms for x in loads),
        send_lag_p99_ms=med("send_lag_p99_ms"),
        first_error=next((x.first_error for x in loads if x.first_error), ""),
        windows=sum(x.windows for x in loads),
    )


@dataclass
class Tally:
    """What one measured window saw."""

    latencies: list[float] = field(default_factory=list)
    send_lags: list[float] = field(default_factory=list)
    """Open loop: how late each request left against its schedule (client saturation)."""
    errors: int = 0
    first_error: str = ""

    def error(self, text: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or text[:300]


class Requests:
    """Request bodies for random buyers, drawn from a seeded stream."""

    def __init__(self, buyers: list[str], batch: int, seed: int) -> None:
        self.buyers, self.batch, self.rng = buyers, batch, random.Random(seed)

    def next(self) -> dict[str, Any]:
        if self.batch:
            picks = self.rng.choices(self.buyers, k=self.batch)
            return {"requests": [{"buyer_id": b, "k": 3} for b in picks]}
        return {"buyer_id": self.rng.choice(self.buyers), "k": 3}


async def _send(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], since: float, tally: Tally
) -> None:
    """POST `body`; record the latency from `since` (a perf_counter time)."""
    try:
        async with http.post(url, json=body) as response:
            await response.read()
            if response.status != 200:
                tally.error(f"HTTP {response.status}: {(await response.text())[:200]}")
    except (TimeoutError, aiohttp.ClientError) as exc:
        tally.error(repr(exc))
    tally.latencies.append(time.perf_counter() - since)


async def closed_loop(
    http: aiohttp.ClientSession, url: str, requests: Requests, concurrency: int, seconds: float
) -> Tally:
    tally = Tally()
    until = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < until:
            await _send(http, url, requests.next(), time.perf_counter(), tally)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return tally


async def open_loop(
    http: aiohttp.ClientSession,
    url: str,
    requests: Requests,
    rate: float,
    seconds: float,
    max_inflight: int,
    seed: int,
) -> Tally:
    tally = Tally()
    gaps = random.Random(seed)
    slots = asyncio.Semaphore(max_inflight)
    pending: set[asyncio.Task[None]] = set()

    async def one(body: dict[str, Any], scheduled: float) -> None:
        async with slots:
            tally.send_lags.append(time.perf_counter() - scheduled)
            await _send(http, url, body, scheduled, tally)

    began = time.perf_counter()
    at = began + gaps.expovariate(rate)
    while at < began + seconds:
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(requests.next(), at))
        pending.add(task)
        task.add_done_callback(pending.discard)
        at += gaps.expovariate(rate)
    if pending:
        await asyncio.gather(*pending)
    return tally


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


async def run(
    url: str,
    key: str,
    buyers: list[str],
    seconds: float,
    concurrency: int = 0,
    rate: float = 0.0,
    warmup: float = 3.0,
    batch: int = 0,
    max_inflight: int = 256,
    seed: int = 1000,
) -> dict[str, Any]:
    """Warm up, then load `url` closed loop (`concurrency`) or open loop (`rate`)."""
    if (concurrency > 0) == (rate > 0):
        raise ValueError("give exactly one of concurrency (closed loop) or rate (open loop)")
    width = concurrency or max_inflight
    connector = aiohttp.TCPConnector(limit=width, force_close=False)
    headers = {"Authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=60)
    requests = Requests(buyers, batch, seed)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as http:

        async def window(length: float, window_seed: int) -> tuple[Tally, float]:
            began = time.perf_counter()
            if concurrency:
                tally = await closed_loop(http, url, requests, concurrency, length)
            else:
                tally = await open_loop(
                    http, url, requests, rate, length, max_inflight, window_seed
                )
            return tally, time.perf_counter() - began

        if warmup > 0:
            await window(warmup, seed + 1)
        tally, elapsed = await window(seconds, seed)
    n = len(tally.latencies)
    per_request = batch or 1
    return {
        "mode": "closed" if concurrency else "open",
        "concurrency": concurrency,
        "offered_rps": rate,
        "batch": batch,
        "requests": n,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "seconds": elapsed,
        "rps": n / elapsed,
        "buyers_per_s": n * per_request / elapsed,
        "p50_ms": _percentile(tally.latencies, 50),
        "p90_ms": _percentile(tally.latencies, 90),
        "p99_ms": _percentile(tally.latencies, 99),
        "max_ms": _percentile(tally.latencies, 100),
        "send_lag_p99_ms": _percentile(tally.send_lags, 99) if tally.send_lags else 0.0,
    }


def read_buyers(path: Path | None) -> list[str]:
    """Buyer ids of a file, one a line (default: a thousand made-up ones)."""
    if path is None:
        return [f"b{i:07d}" for i in range(1000)]
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--path", help="default: /v1/rank, or /v1/rank/batch with --batch")
    parser.add_argument("--key", required=True)
    parser.add_argument("--buyers", type=Path, help="file of buyer ids, one per line")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    load = parser.add_mutually_exclusive_group(required=True)
    load.add_argument("--concurrency", type=int, default=0, help="closed loop: clients")
    load.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second")
    parser.add_argument("--batch", type=int, default=0, help="buyers per /v1/rank/batch call")
    parser.add_argument("--max-inflight", type=int, default=256, help="open loop cap")
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    path = args.path or ("/v1/rank/batch" if args.batch else "/v1/rank")
    result = _run_loop(
        run(
            args.url + path,
            args.key,
            read_buyers(args.buyers),
            args.seconds,
            concurrency=args.concurrency,
            rate=args.rate,
            warmup=args.warmup,
            batch=args.batch,
            max_inflight=args.max_inflight,
            seed=args.seed,
        )
    )
    print(json.dumps(result))


def _run_loop(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run on uvloop when it is installed (Ray Serve's and uvicorn's loop), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    return uvloop.run(work)


if __name__ == "__main__":
    main()
