"""Bad input to the HTTP API (`serving.app.create_api`), with the stand-in service of
`test_app.py` (no Ray, no model) except where the real service's rules are the point.

Each class of bad input gets a 4xx whose `detail` names the limit or the field, never a
5xx, and never reaches the service; a good request sent after it is answered in full.
Bodies are streamed straight into the ASGI app where the test needs to see exactly what
was read (chunked bodies, malformed headers the HTTP client would repair).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, MutableMapping
from datetime import datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from recsys.models.ranker import PromoRanker
from serving.app import ApiState, ServiceHolder, create_api
from serving.auth import ApiKeyEntry, KeyRing, Principal, hash_key
from serving.config import ServeConfig
from serving.metrics import Metrics
from serving.schemas import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    MAX_ID,
    MAX_OFFER_IDS,
    MAX_OUTCOMES,
    OutcomesResponse,
)
from serving.service import RankingService
from tests.serving.test_app import ADMIN_KEY, SELLER_KEY, FakeService, auth

LIMIT = 2000
"""The body limit of the small apps below, in bytes."""

JSON = {"content-type": "application/json"}


class RecordingService(FakeService):
    """The stand-in service, also keeping the outcomes it accepts."""

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: list[Any] = []

    def record_outcomes(self, outcomes: list[Any], who: Principal) -> OutcomesResponse:
        self.outcomes.extend(outcomes)
        return super().record_outcomes(outcomes, who)


def keyring() -> KeyRing:
    return KeyRing(
        [
            ApiKeyEntry(key_hash=hash_key(SELLER_KEY), seller_id="s1"),
            ApiKeyEntry(key_hash=hash_key(ADMIN_KEY), seller_id="*"),
        ]
    )


def make_app(service: Any, **limits: int) -> FastAPI:
    state = ApiState(
        holder=ServiceHolder(service=service, version="7"), keyring=keyring(), metrics=Metrics()
    )
    return create_api(lambda: state, **limits)


@pytest.fixture
def service() -> RecordingService:
    return RecordingService()


@pytest.fixture
def client(service: RecordingService) -> TestClient:
    """The API with the default body limit."""
    return TestClient(make_app(service))


@pytest.fixture
def small(service: RecordingService) -> FastAPI:
    """The API with a body limit of `LIMIT` bytes."""
    return make_app(service, max_body_bytes=LIMIT)


def post(client: TestClient, path: str, body: bytes, key: str = SELLER_KEY) -> Any:
    return client.post(path, content=body, headers={**auth(key), **JSON})


def errors(response: Any, status: int = 422) -> list[dict[str, Any]]:
    """The validation errors of a refused request (FastAPI's `detail` list)."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    return detail


def assert_still_answers(client: TestClient, service: RecordingService, buyer: str) -> None:
    """A good request after refused ones is answered, and it is the only one the service
    has seen since `service.calls` was last cleared: nothing refused got through."""
    response = post(client, "/v1/rank", json.dumps({"buyer_id": buyer}).encode())
    assert response.status_code == 200, response.text
    assert response.json()["decision_id"].endswith(f"-{buyer}")
    assert [[r.buyer_id for r in call] for call in service.calls] == [[buyer]]


def stream(
    app: FastAPI, path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> tuple[int, dict[str, Any], int]:
    """POST `chunks` as one body straight into `app`: (status, JSON answer, chunks the
    app pulled). The headers are sent exactly as given, without a Content-Length
    unless they hold one."""

    async def run() -> tuple[int, dict[str, Any], int]:
        pending = list(chunks)
        pulled = 0
        status = 0
        body = b""
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal pulled
            if pending:
                pulled += 1
                chunk = pending.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
            await done.wait()  # the client stays until it has the answer
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body += message.get("body", b"")
                if not message.get("more_body"):
                    done.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"testserver"),
                (b"authorization", f"Bearer {SELLER_KEY}".encode()),
                (b"content-type", b"application/json"),
                *headers,
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        await app(scope, receive, send)
        return status, json.loads(body), pulled

    return asyncio.run(run())


def batch_body(buyers: int) -> bytes:
    return json.dumps({"requests": [{"buyer_id": f"b{i}"} for i in range(buyers)]}).encode()


# --------------------------------------------------------------------------- body size


def test_a_content_length_over_the_limit_is_413_before_any_of_the_body_is_read(
    small: FastAPI, service: RecordingService
) -> None:
    body = batch_body(200)
    assert len(body) > LIMIT
    status, answer, pulled = stream(
        small,
        "/v1/rank/batch",
        [body[:1000], body[1000:]],
        [(b"content-length", str(len(body)).encode())],
    )
    assert status == 413
    detail = answer["detail"]
    assert f"Content-Length is {len(body)}" in detail
    assert f"at most {LIMIT} bytes" in detail
    assert f"{MAX_BATCH} requests per /v1/rank/batch call" in detail
    assert "max_body_bytes" in detail
    assert pulled == 0 and service.calls == []
    # The same through an HTTP client, then a request that fits is answered.
    client = TestClient(small)
    response = client.post("/v1/rank/batch", content=body, headers={**auth(ADMIN_KEY), **JSON})
    assert response.status_code == 413 and "split the work" in response.json()["detail"]
    assert_still_answers(client, service, "b-after-413")


def test_a_chunked_body_growing_past_the_limit_is_413_without_reading_further(
    small: FastAPI, service: RecordingService
) -> None:
    body = batch_body(200)
    chunks = [body[i : i + 300] for i in range(0, len(body), 300)]
    assert len(chunks) > 10
    status, answer, pulled = stream(small, "/v1/rank/batch", chunks, [])
    assert status == 413
    assert f"more than {LIMIT} bytes were sent" in answer["detail"]
    assert "/v1/rank/batch" in answer["detail"]
    # 300-byte chunks pass 2000 bytes in the 7th: nothing after it was pulled.
    assert pulled == 7
    assert service.calls == []
    # A chunked body within the limit is read whole and answered.
    fits = batch_body(3)
    status, answer, pulled = stream(small, "/v1/rank/batch", [fits[:10], fits[10:]], [])
    assert status == 200, answer
    assert pulled == 2 and [len(c) for c in service.calls] == [3]


@pytest.mark.parametrize(
    "values",
    [[b"abc"], [b"-1"], [b"1.5"], [b""], [b"0x10"], [b"10", b"20"]],
    ids=["text", "negative", "fraction", "empty", "hex", "two-values"],
)
def test_a_content_length_that_is_not_one_non_negative_integer_is_400(
    small: FastAPI, service: RecordingService, values: list[bytes]
) -> None:
    body = b'{"buyer_id": "b1"}'
    headers = [(b"content-length", value) for value in values]
    status, answer, pulled = stream(small, "/v1/rank", [body], headers)
    assert status == 400
    assert "Content-Length header must be one non-negative integer" in answer["detail"]
    assert pulled == 0 and service.calls == []


def test_a_content_length_too_long_to_be_a_number_is_413_not_an_error(small: FastAPI) -> None:
    status, answer, _ = stream(small, "/v1/rank", [b"{}"], [(b"content-length", b"9" * 5000)])
    assert status == 413 and f"at most {LIMIT} bytes" in answer["detail"]


def test_the_same_content_length_twice_is_accepted(small: FastAPI) -> None:
    body = b'{"buyer_id": "b1"}'
    length = str(len(body)).encode()
    status, answer, _ = stream(
        small, "/v1/rank", [body], [(b"content-length", length), (b"content-length", length)]
    )
    assert status == 200, answer


def test_the_largest_valid_batch_fits_the_default_limit_and_one_byte_more_does_not(
    client: TestClient, service: RecordingService
) -> None:
    """`MAX_BODY_BYTES` is meant to fit the biggest body the schema allows, indented."""
    request = {
        "buyer_id": "b" * MAX_ID,
        "seller_id": "s1",
        "context": {"cart_value": 999_999_999_999.99, "channel": "c" * 64, "page": "p" * 128},
        "offer_ids": [f"{i:0{MAX_ID}d}" for i in range(MAX_OFFER_IDS)],
        "k": 20,
    }
    body = json.dumps({"requests": [request] * MAX_BATCH}, indent=2).encode()
    assert 0.8 * MAX_BODY_BYTES < len(body) < MAX_BODY_BYTES
    response = post(client, "/v1/rank/batch", body)
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["responses"]) == MAX_BATCH
    over = body + b" " * (MAX_BODY_BYTES + 1 - len(body))  # still valid JSON
    response = post(client, "/v1/rank/batch", over)
    assert response.status_code == 413
    assert f"at most {MAX_BODY_BYTES} bytes (16 MiB)" in response.json()["detail"]
    assert len(service.calls) == 1


def test_the_serve_config_sets_the_limit() -> None:
    assert ServeConfig().max_body_bytes == MAX_BODY_BYTES
    assert ServeConfig(max_body_bytes=8192).max_body_bytes == 8192
    field = ServeConfig.model_fields["max_body_bytes"]
    assert field.description and "413" in field.description
    with pytest.raises(ValueError, match="max_body_bytes"):
        ServeConfig.from_dict({"max_body_bytes": -1})


# --------------------------------------------------------------------------- unreadable


def test_a_body_that_is_not_utf8_is_422_naming_the_body(
    client: TestClient, service: RecordingService
) -> None:
    (error,) = errors(post(client, "/v1/rank", b'{"buyer_id": "b\xff1"}'))
    assert error["loc"] == ["body", 15]
    assert "not UTF-8" in error["msg"] and "0xff" in error["msg"]
    assert_still_answers(client, service, "b-after-latin1")


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        (b'{"buyer_id": ', ["body", 13], "JSON decode error"),
        (b'{"buyer_id": "b1",}', ["body", 18], "JSON decode error"),
        (b"[" * 100_000, ["body"], "nests arrays or objects too deeply"),
        (b'{"buyer_id": "b1", "k": 1' + b"0" * 5000 + b"}", ["body"], "4300 digits"),
    ],
    ids=["truncated", "trailing-comma", "deep-nesting", "5001-digit-number"],
)
def test_a_body_that_is_not_json_is_422_naming_the_body(
    client: TestClient, service: RecordingService, body: bytes, loc: list[Any], words: str
) -> None:
    (error,) = errors(post(client, "/v1/rank", body))
    assert error["loc"] == loc
    assert words in json.dumps(error)
    assert_still_answers(client, service, "b-after-bad-json")


# --------------------------------------------------------------------------- numbers


MONEY_FIELDS: list[tuple[str, Callable[[str], bytes], list[Any]]] = [
    (
        "/v1/rank",
        lambda v: b'{"buyer_id": "b1", "context": {"cart_value": %s}}' % v.encode(),
        ["body", "context", "cart_value"],
    ),
    (
        "/v1/outcomes",
        lambda v: (
            b'{"outcomes": [{"decision_id": "d1", "type": "purchase", "amount": %s}]}' % v.encode()
        ),
        ["body", "outcomes", 0, "amount"],
    ),
]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e309", "-1e400"])
@pytest.mark.parametrize(("path", "body", "loc"), MONEY_FIELDS, ids=["cart_value", "amount"])
def test_nan_and_infinity_never_reach_the_service_as_money(
    client: TestClient,
    service: RecordingService,
    path: str,
    body: Callable[[str], bytes],
    loc: list[Any],
    value: str,
) -> None:
    (error,) = errors(post(client, path, body(value)))
    assert error["loc"] == loc
    assert error["msg"] == "Input should be a finite number"
    assert error["input"] in {"nan", "inf", "-inf"}  # echoed as text: JSON has no NaN
    assert service.outcomes == []
    assert_still_answers(client, service, "b-after-nan")


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-Infinity", "1e309"])
def test_a_budget_that_is_not_finite_is_422_naming_it(
    client: TestClient, service: RecordingService, value: str
) -> None:
    response = client.get(
        "/v1/sellers/s1/campaigns", params={"budget": value}, headers=auth(SELLER_KEY)
    )
    (error,) = errors(response)
    assert error["loc"] == ["query", "budget"] and "finite" in error["msg"]
    assert service.plans == []
    ok = client.get("/v1/sellers/s1/campaigns", params={"budget": 50}, headers=auth(SELLER_KEY))
    assert ok.status_code == 200 and service.plans == [("s1", 50.0, "journey_stage")]


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        *MONEY_FIELDS,
        ("/v1/rank", lambda v: b'{"buyer_id": "b1", "k": %s}' % v.encode(), ["body", "k"]),
    ],
    ids=["cart_value", "amount", "k"],
)
@pytest.mark.parametrize("value", [str(10**400), "1e300", "1e13"])
def test_huge_numbers_are_422_naming_the_field(
    client: TestClient,
    service: RecordingService,
    path: str,
    body: Callable[[str], bytes],
    loc: list[Any],
    value: str,
) -> None:
    (error,) = errors(post(client, path, body(value)))
    assert error["loc"] == loc
    assert service.outcomes == []
    assert_still_answers(client, service, "b-after-huge")


def test_a_huge_budget_is_422_naming_it(client: TestClient) -> None:
    for value in (str(10**400), "1e13"):
        response = client.get(
            "/v1/sellers/s1/campaigns", params={"budget": value}, headers=auth(SELLER_KEY)
        )
        assert errors(response)[0]["loc"] == ["query", "budget"]


# --------------------------------------------------------------------------- strings, lists


RANK_FIELDS = [
    ({"buyer_id": ""}, ["body", "buyer_id"], "at least 1 character"),
    ({"buyer_id": "b" * (MAX_ID + 1)}, ["body", "buyer_id"], f"at most {MAX_ID} characters"),
    ({"buyer_id": "b\ud800"}, ["body", "buyer_id"], "unicode"),
    ({"buyer_id": "b1", "seller_id": ""}, ["body", "seller_id"], "at least 1 character"),
    ({"buyer_id": "b1", "offer_ids": []}, ["body", "offer_ids"], "at least 1 item"),
    ({"buyer_id": "b1", "offer_ids": [""]}, ["body", "offer_ids", 0], "at least 1 character"),
    (
        {"buyer_id": "b1", "offer_ids": ["o"] * (MAX_OFFER_IDS + 1)},
        ["body", "offer_ids"],
        f"at most {MAX_OFFER_IDS} items",
    ),
    (
        {"buyer_id": "b1", "context": {"channel": "c" * 65}},
        ["body", "context", "channel"],
        "at most 64 characters",
    ),
    ({"buyer_id": "b1", "context": {"page": "\udfff"}}, ["body", "context", "page"], "Unicode"),
]


@pytest.mark.parametrize(("body", "loc", "words"), RANK_FIELDS)
def test_empty_long_or_broken_strings_and_lists_in_a_rank_request_are_422_naming_the_field(
    client: TestClient, service: RecordingService, body: dict[str, Any], loc: list[Any], words: str
) -> None:
    (error,) = errors(post(client, "/v1/rank", json.dumps(body).encode()))
    assert error["loc"] == loc
    assert words.lower() in error["msg"].lower()
    assert_still_answers(client, service, "b-after-bad-string")


def test_a_batch_over_max_batch_is_422_naming_it(
    client: TestClient, service: RecordingService
) -> None:
    (error,) = errors(post(client, "/v1/rank/batch", batch_body(MAX_BATCH + 1), ADMIN_KEY))
    assert error["loc"] == ["body", "requests"] and f"at most {MAX_BATCH} items" in error["msg"]
    assert service.calls == []


def outcome(**fields: Any) -> dict[str, Any]:
    return {"decision_id": "d1", "type": "purchase", **fields}


@pytest.mark.parametrize(
    ("outcomes", "words"),
    [([], "at least 1 item"), ([outcome()] * (MAX_OUTCOMES + 1), f"at most {MAX_OUTCOMES}")],
    ids=["none", "too-many"],
)
def test_no_outcomes_or_too_many_are_422_naming_the_list(
    client: TestClient, service: RecordingService, outcomes: list[Any], words: str
) -> None:
    body = json.dumps({"outcomes": outcomes}).encode()
    (error,) = errors(post(client, "/v1/outcomes", body))
    assert error["loc"] == ["body", "outcomes"] and words in error["msg"]
    assert service.outcomes == []


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        (outcome(decision_id=""), "decision_id", "at least 1 character"),
        (outcome(offer_id=""), "offer_id", "at least 1 character"),
        (outcome(order_id="o" * (MAX_ID + 1)), "order_id", f"at most {MAX_ID} characters"),
        (outcome(type="refund"), "type", "'redemption' or 'purchase'"),
        (outcome(ts="yesterday"), "ts", "datetime"),
        (outcome(ts="9999-12-31T23:59:59-23:00"), "ts", "out of range once converted to UTC"),
        (outcome(amount=-1), "amount", "greater than or equal to 0"),
    ],
    ids=["empty-decision", "empty-offer", "long-order", "type", "ts", "ts-past-9999", "amount"],
)
def test_a_bad_outcome_is_422_naming_it_and_the_good_one_beside_it_is_not_recorded(
    client: TestClient, service: RecordingService, bad: dict[str, Any], field: str, words: str
) -> None:
    body = json.dumps({"outcomes": [outcome(), bad]}).encode()
    (error,) = errors(post(client, "/v1/outcomes", body))
    assert error["loc"] == ["body", "outcomes", 1, field]
    assert words in error["msg"]
    assert service.outcomes == []  # all or nothing
    good = post(client, "/v1/outcomes", json.dumps({"outcomes": [outcome()]}).encode())
    assert good.status_code == 200 and good.json()["accepted"] == 1
    assert [o.decision_id for o in service.outcomes] == ["d1"]


def test_an_overlong_seller_id_in_the_path_is_422_naming_it(client: TestClient) -> None:
    response = client.get(f"/v1/sellers/{'s' * (MAX_ID + 1)}/campaigns", headers=auth(ADMIN_KEY))
    assert errors(response)[0]["loc"] == ["path", "seller_id"]


# --------------------------------------------------------------------------- unknown ids


def test_unknown_ids_are_answered_as_the_real_service_defines(
    market_ranker: PromoRanker, market_now: datetime
) -> None:
    """Unknown buyer: a cold-start answer. Unknown offer: 422 naming it, nothing logged.
    Unknown decision: 422 naming it, and the known outcome beside it is not stored either
    (never a 200 that drops it). Unknown campaign: 404 naming it."""
    service = RankingService(market_ranker, "v1", clock=lambda: market_now, seed=1)
    client = TestClient(make_app(service))
    admin = {**auth(ADMIN_KEY), **JSON}

    stranger = client.post("/v1/rank", json={"buyer_id": "never-seen"}, headers=admin)
    assert stranger.status_code == 200, stranger.text
    assert stranger.json()["buyer"]["cold_start"] is True

    offer = client.post(
        "/v1/rank", json={"buyer_id": "never-seen", "offer_ids": ["no-such-offer"]}, headers=admin
    )
    assert offer.status_code == 422 and "no-such-offer" in offer.json()["detail"]

    decision = stranger.json()["decision_id"]
    reported = client.post(
        "/v1/outcomes",
        json={
            "outcomes": [
                {"decision_id": decision, "type": "purchase"},
                {"decision_id": "no-such-decision", "type": "purchase"},
            ]
        },
        headers=admin,
    )
    assert reported.status_code == 422, reported.text
    (problem,) = reported.json()["detail"]
    assert problem["loc"] == ["body", "outcomes", 1, "decision_id"]
    assert problem["type"] == "unknown_decision" and "no-such-decision" in problem["msg"]
    alone = {"decision_id": decision, "type": "purchase"}
    reported = client.post("/v1/outcomes", json={"outcomes": [alone]}, headers=admin)
    assert reported.json() == {"accepted": 1, "duplicates": 0}
    # A moment that cannot be held in UTC was an OverflowError (500) in the service.
    late = {"decision_id": decision, "type": "purchase", "ts": "9999-12-31T23:59:59-23:00"}
    reported = client.post("/v1/outcomes", json={"outcomes": [late]}, headers=admin)
    assert reported.status_code == 422 and "ts" in reported.json()["detail"][0]["loc"]

    campaign = client.get(
        "/v1/sellers/s001/campaigns/no-such-campaign/targets.csv", headers=auth(ADMIN_KEY)
    )
    assert campaign.status_code == 404 and "no-such-campaign" in campaign.json()["detail"]
