"""No work before the key, bounded answers, strict JSON, per-route limits, no caching
(`serving.guards`), over the stand-in service of `test_app.py`.

The amplifying body is the probe's: a /v1/rank/batch body of 500 requests each with 200
empty offer ids (315 KB), which used to be parsed and validated before the key was
checked and answered with 100,000 errors (15.5 MB). Bodies go straight into the ASGI app
here, so the tests see exactly how much of a body the app pulled.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Route

from serving.app import ApiState, ServiceHolder, create_api
from serving.auth import ApiKeyEntry, KeyRing, hash_key
from serving.decision_log import DecisionLog
from serving.guards import API_PREFIX, bounded_errors, strict_json
from serving.metrics import Metrics
from serving.schemas import (
    MAX_BATCH,
    MAX_CAMPAIGN_ID,
    MAX_ECHO,
    MAX_ERRORS,
    MAX_ID,
    MAX_OFFER_IDS,
    MAX_OUTCOMES,
    OUTCOMES_BODY_BYTES,
    RANK_BODY_BYTES,
    SMALL_BODY_BYTES,
)
from tests.serving.test_app import ADMIN_KEY, SELLER_KEY, FakeService, auth

JSON = {"content-type": "application/json"}

PUBLIC = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/static/{name}",
    "/sellers/{seller_id}",
    "/sellers/{seller_id}/login",
    "/sellers/{seller_id}/logout",
}
"""Routes that answer without a key: health, docs, the page's files and its sign-in."""


def amplifying_body() -> bytes:
    """The probe's body: 500 requests x 200 empty offer ids, all in range, all invalid."""
    one = {"buyer_id": "b", "offer_ids": [""] * MAX_OFFER_IDS}
    return json.dumps({"requests": [one] * MAX_BATCH}, separators=(",", ":")).encode()


def make_api(service: Any = None, **limits: int) -> tuple[FastAPI, ApiState]:
    keyring = KeyRing(
        [
            ApiKeyEntry(key_hash=hash_key(SELLER_KEY), seller_id="s1"),
            ApiKeyEntry(key_hash=hash_key(ADMIN_KEY), seller_id="*"),
        ]
    )
    state = ApiState(
        holder=ServiceHolder(service=service or FakeService(), version="7"),
        keyring=keyring,
        metrics=Metrics(),
    )
    return create_api(lambda: state, **limits), state


def call(
    app: FastAPI,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    chunk: int = 65536,
) -> tuple[int, dict[str, str], bytes, int]:
    """Send a request straight into `app`: (status, headers, body, bytes of the request
    body the app pulled). The body streams in chunks, without a Content-Length."""

    async def run() -> tuple[int, dict[str, str], bytes, int]:
        pending = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
        pulled = 0
        status = 0
        answer = b""
        out_headers: dict[str, str] = {}
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal pulled
            if pending:
                part = pending.pop(0)
                pulled += len(part)
                return {"type": "http.request", "body": part, "more_body": bool(pending)}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, answer
            if message["type"] == "http.response.start":
                status = message["status"]
                out_headers.update(
                    {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
                )
            elif message["type"] == "http.response.body":
                answer += message.get("body", b"")
                if not message.get("more_body"):
                    done.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), *(headers or [])],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        await app(scope, receive, send)
        return status, out_headers, answer, pulled

    return asyncio.run(run())


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json")]


def routes_of(app: FastAPI) -> list[tuple[str, str]]:
    out = []
    for route in app.routes:
        if isinstance(route, Route) or hasattr(route, "methods"):
            for method in sorted(getattr(route, "methods", None) or ()):
                if method != "HEAD":
                    out.append((method, route.path))  # type: ignore[attr-defined]
    return out


# --------------------------------------------------------------------------- the key first


def test_every_route_is_public_or_behind_the_gate() -> None:
    app, _ = make_api()
    for _, path in routes_of(app):
        assert path in PUBLIC or path.startswith(API_PREFIX), path


@pytest.mark.parametrize("key", [None, "not-a-key-of-anyone-000000"])
def test_no_route_reads_a_byte_of_a_body_before_the_key(key: str | None) -> None:
    """Every /v1 route, with a body and without a valid key: 401 naming the scheme, the
    body never pulled, the service never called."""
    service = FakeService()
    app, _ = make_api(service)
    body = amplifying_body()
    headers = [(b"content-type", b"application/json")]
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    gated = [(m, p) for m, p in routes_of(app) if p.startswith(API_PREFIX)]
    assert len(gated) == 6
    for method, template in gated:
        path = template.replace("{seller_id}", "s1").replace("{campaign_id}", "c1")
        status, out, answer, pulled = call(app, method, path, body, headers)
        assert status == 401, (method, path, answer)
        assert pulled == 0, (method, path)
        assert out["www-authenticate"] == "Bearer" and out["cache-control"] == "no-store"
        assert "Bearer" in json.loads(answer)["detail"]
    assert service.calls == [] and service.plans == []


def test_a_keyless_amplifying_body_is_refused_at_once_and_a_keyed_one_answered_small() -> None:
    app, state = make_api()
    body = amplifying_body()
    assert 300_000 < len(body) < 330_000
    began = time.perf_counter()
    for _ in range(20):
        status, _, answer, pulled = call(app, "POST", "/v1/rank/batch", body)
        assert (status, pulled) == (401, 0) and len(answer) < 300
    keyless = (time.perf_counter() - began) / 20
    # With a key, the body is read and validated (the caller is known), and the answer is
    # bounded: a few errors, how many there were, nothing echoed at length.
    began = time.perf_counter()
    status, _, answer, pulled = call(app, "POST", "/v1/rank/batch", body, bearer(ADMIN_KEY))
    keyed = time.perf_counter() - began
    assert status == 422 and pulled == len(body)
    refused = json.loads(answer)
    assert len(refused["detail"]) == MAX_ERRORS
    assert refused["errors_total"] == MAX_BATCH * MAX_OFFER_IDS
    assert len(answer) < 10_000  # was 15.5 MB
    assert keyless < keyed / 5, (keyless, keyed)
    assert 'route="/v1/rank/batch",status="401"} 20' in state.metrics.render()


def test_a_session_cookie_opens_reading_routes_only() -> None:
    """A cookie (even a valid session's) never authorizes a POST: the gate refuses it
    before the body, like no key at all."""
    app, _ = make_api()
    client = TestClient(app)
    assert client.post("/sellers/s1/login", data={"key": SELLER_KEY}, follow_redirects=False)
    assert client.get("/v1/sellers/s1/campaigns").status_code == 200
    for path in ("/v1/rank", "/v1/rank/batch", "/v1/outcomes"):
        refused = client.post(path, content=amplifying_body(), headers=JSON)
        assert refused.status_code == 401, path


# --------------------------------------------------------------------------- bounded answers


def test_a_422_quotes_a_short_prefix_of_each_input_and_at_most_max_errors() -> None:
    app, _ = make_api()
    client = TestClient(app)
    long_id = "x" * (MAX_ID * 80)
    refused = client.post("/v1/rank", json={"buyer_id": long_id}, headers=auth(SELLER_KEY))
    assert refused.status_code == 422
    (problem,) = refused.json()["detail"]
    assert problem["loc"] == ["body", "buyer_id"]
    assert problem["input"].startswith("x" * MAX_ECHO) and len(problem["input"]) < MAX_ECHO + 40
    assert f"({len(long_id)} characters)" in problem["input"]
    whole = client.post("/v1/rank", json={"k": 3, "offer_ids": ["a"] * 5}, headers=auth(SELLER_KEY))
    (missing,) = whole.json()["detail"]
    assert missing["input"] == "<an object of 2 fields>"  # the body is described, not quoted


def test_bounded_errors_cap_and_count() -> None:
    errors = [{"type": "t", "loc": ["body", i], "msg": "m", "input": "y" * 500} for i in range(99)]
    body = bounded_errors(errors)
    assert len(body["detail"]) == MAX_ERRORS and body["errors_total"] == 99
    assert all(len(e["input"]) < MAX_ECHO + 40 for e in body["detail"])
    assert "errors_total" not in bounded_errors(errors[:3])


# --------------------------------------------------------------------------- strict JSON


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"buyer_id": "b1", "k": "3"}, "k"),
        ({"buyer_id": "b1", "k": True}, "k"),
        ({"buyer_id": "b1", "k": 3.0}, "k"),
        ({"buyer_id": 42}, "buyer_id"),
        ({"buyer_id": "b1", "context": {"cart_value": "12.5"}}, "cart_value"),
        ({"buyer_id": "b1", "context": {"cart_value": True}}, "cart_value"),
        ({"buyer_id": "b1", "offer_ids": "of1"}, "offer_ids"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_refused_not_converted(
    body: dict[str, Any], field: str
) -> None:
    service = FakeService()
    client = TestClient(make_api(service)[0])
    refused = client.post("/v1/rank", json=body, headers=auth(SELLER_KEY))
    assert refused.status_code == 422, refused.text
    assert field in refused.json()["detail"][0]["loc"]
    assert service.calls == []


@pytest.mark.parametrize(
    ("outcome", "field"),
    [
        ({"type": "redemption", "amount": "30"}, "amount"),
        ({"type": "redemption", "ts": 1773826200}, "ts"),
        ({"type": "redemption", "order_id": 7}, "order_id"),
        ({"type": 1}, "type"),
    ],
)
def test_outcomes_are_validated_strictly(outcome: dict[str, Any], field: str) -> None:
    client = TestClient(make_api()[0])
    body = {"outcomes": [{"decision_id": "d1", **outcome}]}
    refused = client.post("/v1/outcomes", json=body, headers=auth(SELLER_KEY))
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"][-1] == field


@pytest.mark.parametrize(
    "raw",
    [
        b'{"buyer_id": "b1", "buyer_id": "b2"}',
        b'{"buyer_id": "b1", "context": {"cart_value": 1, "cart_value": 900}}',
        b'{"buyer_id": "b1", "k": 1, "k": 1}',
    ],
)
def test_a_key_twice_in_one_object_is_422_naming_it(raw: bytes) -> None:
    service = FakeService()
    client = TestClient(make_api(service)[0])
    refused = client.post("/v1/rank", content=raw, headers={**auth(SELLER_KEY), **JSON})
    assert refused.status_code == 422, refused.text
    (problem,) = refused.json()["detail"]
    assert problem["type"] == "json_duplicate_key" and problem["input"] in raw.decode()
    assert "appears twice" in problem["msg"]
    assert service.calls == []


def test_strict_json_reads_what_plain_json_reads() -> None:
    text = '{"a": [1, 2.5, "x", null, true], "b": {"c": {}}, "d": "\\u00e9"}'
    assert strict_json(text.encode()) == json.loads(text)


# --------------------------------------------------------------------------- body limits


@pytest.mark.parametrize(
    ("path", "limit"),
    [("/v1/rank", RANK_BODY_BYTES), ("/v1/outcomes", OUTCOMES_BODY_BYTES)],
)
def test_each_route_reads_at_most_its_largest_valid_body(path: str, limit: int) -> None:
    app, _ = make_api()
    over = b" " * (limit + 1)
    status, _, answer, pulled = call(app, "POST", path, over, bearer(SELLER_KEY))
    assert status == 413 and pulled <= limit + 65536
    assert f"at most {limit} bytes" in json.loads(answer)["detail"]


def largest_rank() -> dict[str, Any]:
    """The largest valid /v1/rank body: every id and text at its longest, in 4-byte UTF-8
    characters."""
    wide = "\U0001f600"
    return {
        "buyer_id": wide * MAX_ID,
        "seller_id": wide * MAX_ID,
        "context": {"cart_value": 999999999999.99, "channel": wide * 64, "page": wide * 128},
        "offer_ids": [wide * MAX_ID] * MAX_OFFER_IDS,
        "k": 20,
    }


def test_the_largest_valid_rank_and_outcomes_bodies_fit_their_limits() -> None:
    wide = "\U0001f600"
    outcome = {
        "decision_id": wide * MAX_ID,
        "type": "redemption",
        "offer_id": wide * MAX_ID,
        "ts": "2026-03-18T09:30:00.123456+00:00",
        "order_id": wide * MAX_ID,
        "amount": 999999999999.99,
    }
    bodies = {
        "/v1/rank": (largest_rank(), RANK_BODY_BYTES),
        "/v1/outcomes": ({"outcomes": [outcome] * MAX_OUTCOMES}, OUTCOMES_BODY_BYTES),
    }
    for path, (body, limit) in bodies.items():
        size = len(json.dumps(body, indent=2, ensure_ascii=False).encode())
        assert size < limit < 1.3 * size, (path, size, limit)


def test_a_get_or_the_page_routes_take_no_big_body() -> None:
    app, _ = make_api()
    big = b"k" * (SMALL_BODY_BYTES + 1)
    declared = [(b"content-length", str(len(big)).encode())]
    for method, path in (("GET", "/v1/sellers/s1/campaigns"), ("POST", "/sellers/s1/login")):
        status, _, _, pulled = call(app, method, path, big, bearer(SELLER_KEY) + declared)
        assert (status, pulled) == (413, 0), (method, path)
    # Streamed without a length, the login form is cut off as it passes the limit.
    status, _, _, pulled = call(app, "POST", "/sellers/s1/login", big * 4, chunk=1024)
    assert status == 413 and pulled <= SMALL_BODY_BYTES + 1024


# --------------------------------------------------------------------------- paths, caching


@pytest.mark.parametrize(
    "path",
    [
        "/sellers/" + "s" * (MAX_ID + 1),
        "/sellers/" + "s" * (MAX_ID + 1) + "/logout",
        "/v1/sellers/" + "s" * (MAX_ID + 1) + "/campaigns",
        "/v1/sellers/s1/campaigns/" + "c" * (MAX_CAMPAIGN_ID + 1) + "/targets.csv",
        "/static/" + "a" * 65,
    ],
)
def test_an_overlong_id_in_a_path_is_422_quoting_a_prefix_only(path: str) -> None:
    client = TestClient(make_api()[0])
    method = "POST" if path.endswith("/logout") else "GET"
    refused = client.request(method, path, headers=auth(SELLER_KEY))
    assert refused.status_code == 422, refused.text
    assert len(refused.content) < 2000
    assert refused.json()["detail"][0]["loc"][0] == "path"


def test_every_answer_but_static_files_is_no_store() -> None:
    app, _ = make_api()
    client = TestClient(app)
    rank = {"buyer_id": "b1"}
    answers = [
        client.post("/v1/rank", json=rank, headers=auth(SELLER_KEY)),
        client.post("/v1/rank/batch", json={"requests": [rank]}, headers=auth(SELLER_KEY)),
        client.post(
            "/v1/outcomes",
            json={"outcomes": [{"decision_id": "d", "type": "purchase"}]},
            headers=auth(SELLER_KEY),
        ),
        client.get("/v1/sellers/s1/campaigns", headers=auth(SELLER_KEY)),
        client.get("/v1/sellers/s1/campaigns/lapsing.of1/targets.csv", headers=auth(SELLER_KEY)),
        client.get("/v1/sellers/s2/campaigns", headers=auth(SELLER_KEY)),  # 403
        client.post("/v1/rank", json={"k": 1}, headers=auth(SELLER_KEY)),  # 422
        client.post("/v1/rank", json=rank),  # 401
        client.get("/sellers/s1"),
        client.get("/metrics"),
    ]
    for answer in answers:
        assert answer.headers["cache-control"] == "no-store", (answer.request.url, answer.text)
    assert {a.status_code for a in answers} >= {200, 401, 403, 422}
    assert client.get("/static/seller.js").headers["cache-control"] == "max-age=300"


# --------------------------------------------------------------------------- 503s


def test_a_replica_without_a_model_or_shutting_down_answers_503_with_retry_after(
    tmp_path: Path,
) -> None:
    app, state = make_api()
    client = TestClient(app)
    state.holder.service = None  # not loaded yet (a replica restarting, a lost model)
    for answer in (
        client.post("/v1/rank", json={"buyer_id": "b1"}, headers=auth(SELLER_KEY)),
        client.get("/readyz"),
    ):
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    # A replica being stopped closes its decision log while requests may still arrive.
    log = DecisionLog(tmp_path)
    log.close()

    class Closing(FakeService):
        def rank(self, requests: Any, who: Any) -> Any:
            row = {"exposure_id": ["d"], "buyer_id": ["b"], "ts": [datetime.now(UTC)]}
            log.append_exposures(pl.DataFrame(row))

    state.holder.service = Closing()
    answer = client.post(
        "/v1/rank/batch", json={"requests": [{"buyer_id": "b1"}]}, headers=auth(SELLER_KEY)
    )
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert "shutting down" in answer.json()["detail"]
