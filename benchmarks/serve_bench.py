"""Serving benchmark: the Ray Serve app on loopback, loaded by `benchmarks.loadgen` in a
separate process. Prints the load generator's JSON line per concurrency level.

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
from datetime import timedelta
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
                        "as_of": (last_start + timedelta(hours=1)).isoformat(),
                        "batching": {"batch_wait_timeout_s": args.batch_wait},
                    }
                ),
                name="bench",
                route_prefix="/",
            )
            for concurrency in args.concurrency:
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.loadgen",
                        "--url",
                        f"http://127.0.0.1:{port}",
                        "--key",
                        KEY,
                        "--buyers",
                        str(buyers_file),
                        "--seconds",
                        str(args.seconds),
                        "--concurrency",
                        str(concurrency),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result = json.loads(done.stdout.strip().splitlines()[-1])
                print(json.dumps({"buyers": args.buyers, **result}), flush=True)
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
            print("\n".join(line for line in metrics.splitlines() if "rank_batch" in line))
        finally:
            serve.shutdown()
            ray.shutdown()


if __name__ == "__main__":
    main()
