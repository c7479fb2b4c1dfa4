"""A load generator for /v1/rank: N concurrent clients for T seconds, in its own process.

    python -m benchmarks.loadgen --url http://127.0.0.1:8000 --key KEY \
        --buyers buyers.txt --seconds 20 --concurrency 16

Prints one JSON line: requests, errors, requests per second, latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

import httpx
import numpy as np


async def _client(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    buyers: list[str],
    until: float,
    latencies: list[float],
    errors: list[int],
    seed: int,
) -> None:
    rng = random.Random(seed)
    while time.perf_counter() < until:
        body = {"buyer_id": rng.choice(buyers), "k": 3}
        began = time.perf_counter()
        try:
            response = await http.post(url, json=body, headers=headers)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        latencies.append(time.perf_counter() - began)
        if not ok:
            errors.append(1)


async def run(
    url: str, key: str, buyers: list[str], seconds: float, concurrency: int, warmup: float
) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        if warmup > 0:
            await asyncio.gather(
                *(
                    _client(http, url, headers, buyers, time.perf_counter() + warmup, [], [], i)
                    for i in range(concurrency)
                )
            )
        latencies: list[float] = []
        errors: list[int] = []
        began = time.perf_counter()
        until = began + seconds
        await asyncio.gather(
            *(
                _client(http, url, headers, buyers, until, latencies, errors, 1000 + i)
                for i in range(concurrency)
            )
        )
        elapsed = time.perf_counter() - began
    ms = np.asarray(latencies) * 1000
    return {
        "requests": float(len(latencies)),
        "errors": float(len(errors)),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p90_ms": float(np.percentile(ms, 90)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "concurrency": float(concurrency),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--path", default="/v1/rank")
    parser.add_argument("--key", required=True)
    parser.add_argument("--buyers", type=Path, help="file of buyer ids, one per line")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    buyers = (
        [line.strip() for line in args.buyers.read_text().splitlines() if line.strip()]
        if args.buyers
        else [f"b{i:07d}" for i in range(1000)]
    )
    result = asyncio.run(
        run(args.url + args.path, args.key, buyers, args.seconds, args.concurrency, args.warmup)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
