"""The HTTP adapter (`serving.app.create_api`) with a stand-in service: no Ray, no model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from recsys.campaigns.planner import UnknownCampaignError
from serving.app import ApiState, ServiceHolder, create_api, redacted
from serving.auth import ApiKeyEntry, ForbiddenError, KeyRing, Principal, hash_key
from serving.decision_log import DecisionLogError
from serving.metrics import Metrics
from serving.schemas import (
    BuyerInfo,
    CampaignsResponse,
    OutcomesResponse,
    RankedOffer,
    RankRequest,
    RankResponse,
)
from serving.service import UnknownOffersError

SELLER_KEY = "seller-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdefgh"
ADMIN_KEY = "admin-key-0123456789abcdefgh"


class FakeService:
    """Answers like RankingService: one offer of the request's seller, or nothing."""

    model_version = "7"

    def __init__(self) -> None:
        self.calls: list[list[RankRequest]] = []
        self.plans: list[tuple[str, float | None, str]] = []

    def rank(self, requests: list[RankRequest], who: list[Principal]) -> list[RankResponse]:
        self.calls.append(list(requests))
        out = []
        for request, principal in zip(requests, who, strict=True):
            seller = request.seller_id or principal.seller_id
            if principal.seller_id is not None and seller != principal.seller_id:
                raise ForbiddenError(f"this key may not rank offers of seller {seller}")
            if request.offer_ids and "nope" in request.offer_ids:
                raise UnknownOffersError("unknown offer_ids: nope", ["nope"])
            offers = [
                RankedOffer(
                    offer_id="of1",
                    seller_id=seller,
                    tool="percent_off",
                    score=1.5,
                    expected_value=1.5,
                    p_redeem=0.2,
                    uplift=0.05,
                    propensity=1.0,
                    reasons=["because"],
                    reason_codes=["POSITIVE_UPLIFT"],
                )
            ][: request.k]
            out.append(
                RankResponse(
                    decision_id=f"d{len(self.calls)}-{request.buyer_id}",
                    model_version=self.model_version,
                    buyer=BuyerInfo(journey_stage="repeat", cold_start=False),
                    offers=offers,
                )
            )
        return out

    def record_outcomes(self, outcomes: list[Any], who: Principal) -> OutcomesResponse:
        return OutcomesResponse(accepted=len(outcomes))

    def campaigns(
        self, seller_id: str, who: Principal, budget: float | None = None, audience: str = ""
    ) -> CampaignsResponse:
        self.plans.append((seller_id, budget, audience))
        return CampaignsResponse(
            seller_id=seller_id,
            model_version="7",
            as_of=datetime(2026, 5, 1, tzinfo=UTC),
            audience="taste" if audience == "taste" else "journey_stage",
            budget=budget,
            budget_basis="expected",
            spend=0.0,
            shadow_price=0.0,
            buyers=0,
            campaigns=[],
            comparison=[],
            gain_curve=[],
        )

    def campaign_targets(
        self,
        seller_id: str,
        who: Principal,
        campaign_id: str,
        budget: float | None = None,
        audience: str = "",
    ) -> pl.DataFrame:
        if campaign_id != "lapsing.of1":
            raise UnknownCampaignError(f"no campaign {campaign_id!r}; its campaigns: 'lapsing.of1'")
        return pl.DataFrame({"buyer_id": ["b1", "b2"], "offer_id": ["of1", "of1"]})


@pytest.fixture
def parts() -> tuple[TestClient, ServiceHolder, Metrics]:
    keyring = KeyRing(
        [
            ApiKeyEntry(key_hash=hash_key(SELLER_KEY), seller_id="s1"),
            ApiKeyEntry(key_hash=hash_key(OTHER_KEY), seller_id="s2"),
            ApiKeyEntry(key_hash=hash_key(ADMIN_KEY), seller_id="*"),
        ]
    )
    holder = ServiceHolder(service=FakeService(), version="7")
    metrics = Metrics()
    state = ApiState(holder=holder, keyring=keyring, metrics=metrics)
    return TestClient(create_api(lambda: state)), holder, metrics


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_rank_answers_with_the_contracted_fields(parts: Any) -> None:
    client, _, _ = parts
    response = client.post("/v1/rank", json={"buyer_id": "b1", "k": 2}, headers=auth(SELLER_KEY))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "7"
    assert body["buyer"] == {"journey_stage": "repeat", "cold_start": False}
    offer = body["offers"][0]
    assert set(offer) >= {"offer_id", "tool", "score", "expected_value", "p_redeem", "uplift"}
    assert 0 < offer["propensity"] <= 1


def test_missing_or_unknown_key_is_401_with_the_scheme_named(parts: Any) -> None:
    client, _, _ = parts
    for headers in ({}, auth("not-a-key-at-all-000000"), {"Authorization": SELLER_KEY}):
        response = client.post("/v1/rank", json={"buyer_id": "b1"}, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "Bearer" in response.json()["detail"]


def test_another_sellers_campaigns_and_offers_are_403(parts: Any) -> None:
    client, _, _ = parts
    assert client.get("/v1/sellers/s2/campaigns", headers=auth(SELLER_KEY)).status_code == 403
    assert client.get("/v1/sellers/s1/campaigns", headers=auth(SELLER_KEY)).status_code == 200
    assert client.get("/v1/sellers/s2/campaigns", headers=auth(ADMIN_KEY)).status_code == 200
    response = client.post(
        "/v1/rank", json={"buyer_id": "b1", "seller_id": "s2"}, headers=auth(SELLER_KEY)
    )
    assert response.status_code == 403


def test_bad_bodies_are_422_naming_the_field(parts: Any) -> None:
    client, _, _ = parts
    cases = [
        ({"k": 2}, "buyer_id"),
        ({"buyer_id": "b1", "k": 0}, "k"),
        ({"buyer_id": "b1", "colour": "red"}, "colour"),
        ({"buyer_id": "b1", "context": {"cart_value": -1}}, "cart_value"),
    ]
    for body, field in cases:
        response = client.post("/v1/rank", json=body, headers=auth(SELLER_KEY))
        assert response.status_code == 422, body
        assert field in response.text
    unknown = client.post(
        "/v1/rank", json={"buyer_id": "b1", "offer_ids": ["nope"]}, headers=auth(SELLER_KEY)
    )
    assert unknown.status_code == 422 and "nope" in unknown.text


def test_batch_ranks_every_request_in_order_with_one_service_call(parts: Any) -> None:
    client, holder, _ = parts
    requests = [{"buyer_id": f"b{i}"} for i in range(5)]
    response = client.post("/v1/rank/batch", json={"requests": requests}, headers=auth(ADMIN_KEY))
    assert response.status_code == 200
    ids = [r["decision_id"].split("-")[1] for r in response.json()["responses"]]
    assert ids == [f"b{i}" for i in range(5)]
    assert len(holder.service.calls) == 1
    too_many = {"requests": [{"buyer_id": "b"}] * 501}
    assert client.post("/v1/rank/batch", json=too_many, headers=auth(ADMIN_KEY)).status_code == 422


def test_health_readiness_and_metrics(parts: Any) -> None:
    client, holder, metrics = parts
    metrics.model_version = "7"
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").status_code == 200
    client.post("/v1/rank", json={"buyer_id": "b1"}, headers=auth(SELLER_KEY))
    text = client.get("/metrics").text
    assert 'recsys_requests_total{route="/v1/rank",status="200"} 1' in text
    assert 'recsys_model_info{version="7"} 1' in text
    assert 'recsys_request_seconds_count{route="/v1/rank"} 1' in text
    holder.service, holder.load_error = None, "still loading"
    assert client.get("/readyz").status_code == 503
    blocked = client.post("/v1/rank", json={"buyer_id": "b1"}, headers=auth(SELLER_KEY))
    assert blocked.status_code == 503
    assert client.post("/v1/rank", json={"buyer_id": "b1"}).status_code == 401
    text = client.get("/metrics").text  # refusals are counted under their route too
    assert 'recsys_requests_total{route="/v1/rank",status="503"} 1' in text
    assert 'recsys_requests_total{route="/v1/rank",status="401"} 1' in text
    assert 'recsys_request_seconds_count{route="/v1/rank"} 3' in text


def test_openapi_documents_the_routes(parts: Any) -> None:
    client, _, _ = parts
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/rank", "/v1/rank/batch", "/v1/outcomes", "/v1/sellers/{seller_id}/campaigns"):
        assert path in paths


def test_a_decision_the_log_cannot_keep_is_503_and_not_acknowledged(parts: Any) -> None:
    client, holder, _ = parts

    def full(requests: list[RankRequest], who: list[Principal]) -> list[RankResponse]:
        raise DecisionLogError("decision-log rows could not be made durable (No space left)")

    holder.service.rank = full
    response = client.post("/v1/rank", json={"buyer_id": "b1"}, headers=auth(SELLER_KEY))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "No space left" in response.json()["detail"]
    assert "decision_id" not in response.text


def test_load_errors_shown_by_readyz_carry_no_credentials() -> None:
    text = redacted(
        "cannot read models:/m@champion: ConnectionError('http://alice:hunter2@h:5000/x')"
    )
    assert "alice" not in text and "hunter2" not in text
    assert "http://***@h:5000/x" in text and "models:/m@champion" in text
