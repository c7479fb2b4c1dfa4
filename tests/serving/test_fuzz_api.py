"""Schemathesis fuzzes the HTTP API (`serving.app.create_api`) from its own OpenAPI schema.

Every operation gets generated requests, valid and invalid (wrong types, missing and
extra fields, out-of-range numbers, odd strings), sent with a valid seller key and with
a valid admin key to the app with a stand-in service (no Ray, no model). Whatever
arrives, the API must answer with a status below 500, and every 4xx must carry a JSON
`detail` saying what was wrong.

The default run is quick (a few examples per operation, derandomized, so every run
sends the same requests); `make test-reliability` runs a much longer one, and one against
the real `RankingService` on the small fitted marketplace of `conftest.py`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis import GenerationMode

from recsys.models.ranker import PromoRanker
from serving.app import ApiState, ServiceHolder, create_api
from serving.auth import ApiKeyEntry, KeyRing, hash_key
from serving.metrics import Metrics
from serving.service import RankingService
from tests.serving.test_app import ADMIN_KEY, SELLER_KEY, FakeService

QUICK_EXAMPLES = 15
"""Generated requests per operation and mode in the default run (`make test`)."""

LONG_EXAMPLES = 1000
"""Generated requests per operation and mode in the long run (`make test-reliability`)."""

REAL_EXAMPLES = 200
"""Generated requests per operation and mode against the real service (long run)."""

KEYS = [
    ApiKeyEntry(key_hash=hash_key(SELLER_KEY), seller_id="s001"),
    ApiKeyEntry(key_hash=hash_key(ADMIN_KEY), seller_id="*"),
]
"""A seller key (seller s001, as in the fitted marketplace) and an admin key."""


def fuzzed_schema(service: Any, key: str, max_examples: int) -> Any:
    """The API's OpenAPI schema, loaded from a fresh app over `service`, set to call the
    app with `key`."""
    state = ApiState(
        holder=ServiceHolder(service=service, version="7"), keyring=KeyRing(KEYS), metrics=Metrics()
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_api(lambda: state))
    # Config headers win over the `authorization` parameter the schema documents, so
    # every request gets past authentication and reaches validation and the service.
    schema.config.update(headers={"authorization": f"Bearer {key}"})
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=max_examples,
        deterministic=True,
        database="none",
    )
    return schema


def check_answer(case: schemathesis.Case, app: Any = None) -> None:
    """No 5xx, and every 4xx says why in a JSON `detail` (`app`: call it instead)."""
    response = case.call() if app is None else case.call(app=app)
    status = response.status_code
    request = f"{case.method} {case.formatted_path} -> {status}: {response.text[:300]}"
    assert status < 500, request
    if 400 <= status < 500:
        body = json.loads(response.content)
        assert isinstance(body, dict) and body.get("detail"), request


@schemathesis.pytest.parametrize(
    seller=fuzzed_schema(FakeService(), SELLER_KEY, QUICK_EXAMPLES),
    admin=fuzzed_schema(FakeService(), ADMIN_KEY, QUICK_EXAMPLES),
)
def test_fuzzed_requests_get_no_5xx_and_every_4xx_says_why(case: schemathesis.Case) -> None:
    check_answer(case)


@pytest.mark.reliability
@schemathesis.pytest.parametrize(
    seller=fuzzed_schema(FakeService(), SELLER_KEY, LONG_EXAMPLES),
    admin=fuzzed_schema(FakeService(), ADMIN_KEY, LONG_EXAMPLES),
)
def test_long_fuzz_gets_no_5xx_and_every_4xx_says_why(case: schemathesis.Case) -> None:
    check_answer(case)


@pytest.fixture(scope="module")
def real_app(market_ranker: PromoRanker, market_now: datetime) -> FastAPI:
    """The API over the real `RankingService` on the shared fitted marketplace
    (`conftest.py`); its schema is the same as the stand-in's."""
    service = RankingService(market_ranker, "7", clock=lambda: market_now, seed=1)
    state = ApiState(
        holder=ServiceHolder(service=service, version="7"), keyring=KeyRing(KEYS), metrics=Metrics()
    )
    return create_api(lambda: state)


# The schema comes from the stand-in's app (so collecting this module fits no model) and
# the requests go to the real one (`schemathesis.pytest.from_fixture` would load it from
# the fixture, but fails under pytest 9.2: it reads the removed `Function._nodeid`).
@pytest.mark.reliability
@fuzzed_schema(FakeService(), ADMIN_KEY, REAL_EXAMPLES).parametrize()
def test_long_fuzz_of_the_real_service_gets_no_5xx(
    case: schemathesis.Case, real_app: FastAPI
) -> None:
    check_answer(case, real_app)
