"""Hosts the Ray Serve app for the serving benchmark, in a process of its own.

A fresh local Ray is started in this process, the app (`serving.app.app_builder`, the
builder `recsys serve` and `serve deploy` use) is run on loopback, and one JSON line is
printed once `/readyz` answers: the proxy's URL, the no-op ceiling's URL (a do-nothing
deployment beside the app, `benchmarks.noop_app`), the replica's own URL when Serve runs
with direct ingress (RAY_SERVE_THROUGHPUT_OPTIMIZED=1), and the start-up seconds. Serve
and Ray are shut down when stdin closes or on SIGTERM. One process per variant means
every variant starts from a clean Ray, with its environment set before Ray starts.

    python -m benchmarks.serve_host --serve-config '{"tracking_uri": ...}' --port 8000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any

APP = "bench"


def wait_ready(url: str, timeout_s: float = 180.0) -> None:
    """Poll `url`/readyz until it answers 200 (a model is loaded), or raise."""
    import httpx

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url + "/readyz", timeout=5)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise RuntimeError(f"{url}/readyz did not answer 200 within {timeout_s:.0f} s ({last})")


def direct_ingress_url(proxy_port: int) -> str | None:
    """The replica's own HTTP address when Serve runs with direct ingress, else None.

    Read from the Serve controller's target groups (the list HAProxy is fed); a private
    API, so any failure means "not known" rather than an error.
    """
    try:
        import ray
        from ray.serve.context import _get_global_client

        client: Any = _get_global_client()
        controller = client._controller
        groups = ray.get(controller.get_target_groups.remote(APP))
        for group in groups:
            if str(getattr(group.protocol, "value", group.protocol)).upper() != "HTTP":
                continue
            for target in group.targets:
                if int(target.port) != proxy_port:
                    return f"http://127.0.0.1:{int(target.port)}"
    except Exception as exc:  # a private API: say so, carry on through the proxy
        print(f"serve_host: direct ingress address unknown ({exc!r})", file=sys.stderr)
    return None


def _stop_on_eof(stop: threading.Event) -> None:
    sys.stdin.read()
    stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-config", required=True, help="serve config, as JSON")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config: dict[str, Any] = json.loads(args.serve_config)

    import ray
    from ray import serve

    from benchmarks.noop_app import PREFIX, noop_deployment
    from serving.app import app_builder

    began = time.perf_counter()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        serve.run(app_builder(config), name=APP, route_prefix="/", blocking=False)
        serve.run(noop_deployment(), name="noop", route_prefix=PREFIX, blocking=False)
        url = f"http://127.0.0.1:{args.port}"
        wait_ready(url)
        wait_ready(url + PREFIX)
        direct = direct_ingress_url(args.port)
        if direct is not None:
            wait_ready(direct)
        info = {
            "url": url,
            "direct_url": direct,
            "noop_url": url + PREFIX,
            "startup_s": time.perf_counter() - began,
            "throughput_optimized": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0"),
            "ray": ray.__version__,
        }
        print(json.dumps(info), flush=True)
        threading.Thread(target=_stop_on_eof, args=(stop,), daemon=True).start()
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
