"""The serving benchmark's ceilings: endpoints that answer `/v1/rank` with a fixed answer.

What the stack alone can do on this machine, measured in the same run as the real apps,
so every rate of theirs reads as a share of its stack's ceiling:

- :func:`noop_api`: a FastAPI app under bare uvicorn (the bare app's stack);
- :func:`noop_deployment`: a Ray Serve deployment (the Serve app's stack), run by
  `benchmarks.serve_host` beside the real app under the route prefix :data:`PREFIX`.

Both answer any path: `/readyz` and `/metrics` are 200 with an empty body, a POST is a
`RankResponse`-shaped JSON answer with a fresh decision id.

    python -m benchmarks.noop_app --port 8002
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotations, and
# `Request` is imported inside `noop_api` (nothing at import time).
import argparse
import uuid
from typing import Any

PREFIX = "/noop"
"""Route prefix of the no-op Serve application."""

ANSWER: dict[str, Any] = {
    "model_version": "noop",
    "buyer": {"journey_stage": None, "cold_start": True},
    "offers": [],
    "no_offer_reason": "a no-op endpoint ranks nothing",
    "explored": False,
}


def answer() -> dict[str, Any]:
    """The fixed answer with a new decision id."""
    return {"decision_id": uuid.uuid4().hex, **ANSWER}


def noop_api() -> Any:
    """The no-op FastAPI app."""
    from fastapi import FastAPI, Request, Response

    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def anything(path: str, request: Request) -> Any:
        if request.method == "GET":
            return Response(status_code=200)
        await request.body()
        return answer()

    return app


def noop_deployment() -> Any:
    """The no-op Ray Serve application (bound, ready for `serve.run`)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    @serve.deployment(name="noop")
    class Noop:
        async def __call__(self, request: Request) -> Response:
            if request.method == "GET":
                return Response(status_code=200)
            await request.body()
            return JSONResponse(answer())

    return Noop.bind()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    import uvicorn

    uvicorn.run(noop_api(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
