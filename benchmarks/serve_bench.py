"""Serving benchmark: the Ray Serve app and its peer, the same app under bare uvicorn
(`benchmarks.bare_app`), on loopback, each loaded in turn by `benchmarks.loadgen` in a
separate process. Prints one JSON line per app and concurrency level, and the ratio of
Serve's throughput to the bare app's measured in the same run.

    python -m benchmarks.serve_bench [--buyers 2000] [--seconds 20] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

KEY = "bench-admin-key-000000000000000000"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buyers", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batch-wait", type=float, default=0.005, help="seconds a batch waits")
    args = parser.parse_args()

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import httpx
    import mlflow
    import polars as pl
    import ray
    from mlflow.tracking import MlflowClient
    from ray import serve

    from recsys.data import load_dataset
    from recsys.data.synthetic import SyntheticConfig, generate
    from recsys.models.ranker import PromoRanker, RankerConfig
    from serving.app import app_builder
    from training.registry import CHAMPION, register
    from training.tracking import log_ranker_model

    with tempfile.TemporaryDirectory(prefix="promo-serve-bench-") as tmp:
        root = Path(tmp)
        generate(SyntheticConfig(buyers=args.buyers, seed=1), root / "market")
        sellers = pl.read_parquet(root / "market" / "truth" / "sellers.parquet")
        margins = dict(zip(sellers["seller_id"], sellers["margin"], strict=True))
        dataset = load_dataset(root / "market")
        ranker = PromoRanker(RankerConfig(seller_margins=margins)).fit(dataset)
        uri = f"sqlite:///{root / 'm.db'}"
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(tracking_uri=uri)
        with mlflow.start_run() as run:
            model_uri = log_ranker_model(ranker)
        version = register(client, "promo-ranker", model_uri, run.info.run_id)
        client.set_registered_model_alias("promo-ranker", CHAMPION, version)
        assert dataset.offers is not None
        last_start = dataset.offers["start_ts"].max()
        assert isinstance(last_start, datetime)
        decide_at = (last_start + timedelta(hours=1)).isoformat()
        buyers_file = root / "buyers.txt"
        buyers = dataset.events["buyer_id"].unique().sort().to_list()
        buyers_file.write_text("\n".join([*buyers, "unknown-1", "unknown-2"]))

        os.environ["RECSYS_API_KEYS"] = f"{KEY}:*"
        port = _free_port()
        ray.init(address="local", include_dashboard=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(
                app_builder(
                    {
                        "tracking_uri": uri,
                        "decision_log_dir": str(root / "decisions"),
                        # The synthetic offers have ended by the real clock: decide at
                        # the last campaign, so every request ranks real offers.
                        "as_of": decide_at,
                        "batching": {"batch_wait_timeout_s": args.batch_wait},
                    }
                ),
                name="bench",
                route_prefix="/",
            )
            bare_port = _free_port()
            ranker.save(root / "model")
            bare = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.bare_app",
                    "--model",
                    str(root / "model"),
                    "--as-of",
                    decide_at,
                    "--port",
                    str(bare_port),
                    "--log-dir",
                    str(root / "bare-decisions"),
                ]
            )
            try:
                _wait_ready(f"http://127.0.0.1:{bare_port}")
                for concurrency in args.concurrency:
                    results = {
                        app: _load(url, buyers_file, args.seconds, concurrency)
                        for app, url in (
                            ("serve", f"http://127.0.0.1:{port}"),
                            ("uvicorn", f"http://127.0.0.1:{bare_port}"),
                        )
                    }
                    serve_rps = float(results["serve"]["rps"])  # type: ignore[arg-type]
                    bare_rps = float(results["uvicorn"]["rps"])  # type: ignore[arg-type]
                    ratio = serve_rps / max(bare_rps, 1e-9)
                    for app, result in results.items():
                        print(json.dumps({"app": app, "buyers": args.buyers, **result}), flush=True)
                    print(json.dumps({"concurrency": concurrency, "serve_over_uvicorn": ratio}))
            finally:
                bare.terminate()
                bare.wait(timeout=30)
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
            print("\n".join(line for line in metrics.splitlines() if "rank_batch" in line))
        finally:
            serve.shutdown()
            ray.shutdown()


def _wait_ready(url: str, timeout_s: float = 120.0) -> None:
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} was not ready within {timeout_s:.0f}s")


def _load(url: str, buyers_file: Path, seconds: float, concurrency: int) -> dict[str, object]:
    """One load-generator run in its own process; its JSON result."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            "--url",
            url,
            "--key",
            KEY,
            "--buyers",
            str(buyers_file),
            "--seconds",
            str(seconds),
            "--concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    main()
