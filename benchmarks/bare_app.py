"""The serving benchmark's peer: the same FastAPI app and ranking service under bare
uvicorn, one process, no Ray (what a user would run instead of Ray Serve).

    python -m benchmarks.bare_app --model DIR --as-of ISO --port 8001 --log-dir DIR \\
        [--serve-config JSON]

Keys come from RECSYS_API_KEYS, as for the Serve app; `--serve-config` takes the serve
config the Serve app is given (its policy and exploration apply; batching and replicas
are Serve's alone, but `batching.max_batch_size` bounds the batches below). Requests
that arrive while a batch is ranked are ranked together next, in a worker thread, with no
wait (`create_api`'s direct path, `serving.batching.NaturalBatcher`); the decision log is
written as the Serve app writes it.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a saved ranker directory")
    parser.add_argument("--as-of", required=True, help="decision time (ISO), runs at real pace")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument(
        "--serve-config", default="{}", help="serve config as JSON (policy, exploration, ...)"
    )
    args = parser.parse_args()

    import uvicorn

    from recsys.models.ranker import PromoRanker
    from serving.app import (
        ApiState,
        ServiceHolder,
        create_api,
        keyring_from,
        service_for,
        settle_heap,
    )
    from serving.config import ServeConfig
    from serving.decision_log import DecisionLog
    from serving.metrics import Metrics

    config = ServeConfig.from_dict(
        {**json.loads(args.serve_config), "as_of": datetime.fromisoformat(args.as_of)}
    )
    ranker = PromoRanker.load(args.model)
    log = DecisionLog(args.log_dir).start()
    service = service_for(config, ranker, "bare", log)
    service.warm_up()
    settle_heap()
    state = ApiState(
        holder=ServiceHolder(service=service, version="bare"),
        keyring=keyring_from(config),
        metrics=Metrics(),
    )
    try:
        uvicorn.run(
            create_api(lambda: state, max_batch_size=config.batching.max_batch_size),
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
        )
    finally:
        log.close()


if __name__ == "__main__":
    main()
