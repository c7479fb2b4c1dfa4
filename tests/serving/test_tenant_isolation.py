"""A seller's key never returns another seller's buyers, offers or campaigns: every route
of the API, over the real `RankingService` on a small fitted marketplace.

The routes are read from the app itself (`api.routes`): a route that `ROUTES` does not
classify fails `test_every_route_is_classified`, so a new endpoint cannot escape the
check, and each classified route has a check of its own below.

Seller A (`s001`) calls with its key (header or the seller page's cookie) and names
seller B (`s002`) every way the API allows: B in the path, B as `seller_id` in a body,
B's offer ids, B's decision ids, B's campaign ids. Each such request is refused (403,
or 404 for a campaign that is not in A's plan), and its answer (body and headers) holds
none of B's ids: B's offer ids, the campaign ids of B's plan, and B's buyers who have no
history at A (a buyer of both sellers is A's buyer too). An id the request itself sent
may be echoed in the refusal, which tells the caller nothing it did not know; every
other id of B must be absent. Requests that name no seller answer with A's offers only.
An admin key may see everything. The public routes (/healthz, /readyz, /metrics, the
OpenAPI schema and docs, static files) answer without a key and hold no seller data.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import polars as pl
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from recsys.features.pairs import seller_id_of_key
from recsys.models.ranker import PromoRanker
from serving.app import ApiState, ServiceHolder, create_api
from serving.auth import ADMIN, ADMIN_PRINCIPAL, ApiKeyEntry, KeyRing, hash_key
from serving.decision_log import DecisionLog
from serving.incrementality import IncrementalityBoard
from serving.metrics import Metrics
from serving.pages import COOKIE
from serving.service import RankingService

A, B = "s001", "s002"
A_KEY = "tenant-a-key-0123456789abcdefghijk"
B_KEY = "tenant-b-key-0123456789abcdefghijk"
ADMIN_KEY = "tenant-admin-key-0123456789abcdefg"
REFUSED = (403, 404)
A_LIFT, B_LIFT = 0.1234567, 0.7654321
"""Each seller's measured profit lift in the fixture's incrementality report."""


def _lift_row(level: str, key: str, lift: float) -> dict[str, Any]:
    return {
        "level": level, "key": key, "metric": "profit", "n_treated": 90, "n_control": 10,
        "treated": 1.0 + lift, "control": 1.0, "lift": lift, "se": 0.1, "low": lift - 0.2,
        "high": lift + 0.2, "relative": lift, "variance_reduction": 0.0,
    }  # fmt: skip


LIFT_REPORT = {
    "generated_at": "2024-05-01T00:00:00+00:00",
    "window_days": 28.0,
    "level": 0.9,
    "units": {"treated": 180, "control": 20},
    "rows": [
        _lift_row("overall", "__all__", 0.5),
        _lift_row("seller", A, A_LIFT),
        _lift_row("seller", B, B_LIFT),
    ],
    "notes": [],
}


@dataclass
class World:
    """The app over the real service, and the ids each seller owns."""

    api: FastAPI
    log: DecisionLog
    offers_of: dict[str | None, set[str]]
    """Every offer id of each seller (None: platform-wide offers)."""
    valid_of: dict[str | None, list[str]]
    """Offer ids valid at the service's clock, per seller."""
    buyers_of: dict[str, set[str]]
    """Buyers a seller's campaigns are planned for (history at the seller)."""
    campaigns_of: dict[str, list[str]]
    """Campaign ids of each seller's plan (as the admin sees it)."""
    buyer: str
    """A buyer whose unscoped ranking holds offers of both A and B."""
    b_only_buyer: str
    b_decision: str
    """A decision made with B's key."""
    b_decision_offer: str

    def client(self) -> TestClient:
        return TestClient(self.api, base_url="http://127.0.0.1")

    def foreign(self) -> set[str]:
        """B's ids that A has no claim on."""
        return (
            self.offers_of[B] | (self.buyers_of[B] - self.buyers_of[A]) | set(self.campaigns_of[B])
        )

    def every_id(self) -> set[str]:
        """Every buyer, offer and campaign id of both sellers."""
        offers = set().union(*self.offers_of.values())
        buyers = self.buyers_of[A] | self.buyers_of[B]
        return offers | buyers | set(self.campaigns_of[A]) | set(self.campaigns_of[B])


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _mentions(text: str, token: str) -> bool:
    """Whether `token` occurs in `text` as a whole id (not inside a longer one)."""
    return re.search(rf"(?<![\w.-]){re.escape(token)}(?![\w-])", text) is not None


def leaked(response: httpx.Response, ids: Iterable[str], sent: str = "") -> list[str]:
    """The ids in the response's body or headers, except those the request itself sent."""
    text = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return sorted(i for i in ids if _mentions(text, i) and not _mentions(sent, i))


def refused_cleanly(
    w: World, response: httpx.Response, sent: str, statuses: tuple[int, ...] = REFUSED
) -> None:
    assert response.status_code in statuses, (response.status_code, response.text)
    assert leaked(response, w.foreign(), sent) == [], response.text
    assert COOKIE not in response.headers.get("set-cookie", "")


def login(client: TestClient, seller: str, key: str) -> httpx.Response:
    return client.post(f"/sellers/{seller}/login", data={"key": key}, follow_redirects=False)


# --------------------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def world(
    market_ranker: PromoRanker, market_now: datetime, tmp_path_factory: pytest.TempPathFactory
) -> World:
    ranker, now = market_ranker, market_now
    assert ranker.store_ is not None
    log = DecisionLog(tmp_path_factory.mktemp("tenant") / "decision_log")
    service = RankingService(ranker, "promo-ranker/1", decision_log=log, clock=lambda: now, seed=5)
    keyring = KeyRing(
        [
            ApiKeyEntry(key_hash=hash_key(A_KEY), seller_id=A),
            ApiKeyEntry(key_hash=hash_key(B_KEY), seller_id=B),
            ApiKeyEntry(key_hash=hash_key(ADMIN_KEY), seller_id=ADMIN),
        ]
    )
    report = tmp_path_factory.mktemp("tenant") / "incrementality.json"
    report.write_text(json.dumps(LIFT_REPORT))
    state = ApiState(
        holder=ServiceHolder(service=service, version="promo-ranker/1"),
        keyring=keyring,
        metrics=Metrics(),
        incrementality=IncrementalityBoard(report),
    )
    api = create_api(lambda: state)

    offers = ranker.store_.offers.select(
        "offer_id", seller_id_of_key(pl.col("seller_key")).alias("seller_id"), "start_ts", "end_ts"
    )
    offers_of: dict[str | None, set[str]] = {}
    for offer, seller in offers.select("offer_id", "seller_id").iter_rows():
        offers_of.setdefault(seller, set()).add(offer)
    offers_of.setdefault(None, set())
    valid = offers.filter((pl.col("start_ts") <= now) & (now < pl.col("end_ts")))
    valid_of: dict[str | None, list[str]] = {}
    for offer, seller in valid.select("offer_id", "seller_id").sort("offer_id").iter_rows():
        valid_of.setdefault(seller, []).append(offer)
    assert valid_of.get(A) and valid_of.get(B), "both sellers need offers valid now"

    # Read from the feature store, not through the service under test.
    buyer_seller = ranker.store_.buyer_seller
    buyers_of = {
        s: set(buyer_seller.filter(pl.col("seller_key") == s)["buyer_id"].to_list()) for s in (A, B)
    }
    b_only = sorted(buyers_of[B] - buyers_of[A])
    assert b_only, "the fixture marketplace needs buyers of B with no history at A"

    # A buyer worth offers of both sellers: unscoped, the model would give it B's offers,
    # so a seller-scoped answer holding only A's shows the scoping at work.
    pairs = (
        pl.DataFrame({"buyer_id": sorted(buyers_of[A] & buyers_of[B])})
        .join(valid.select("offer_id", "seller_id"), how="cross")
        .filter(pl.col("seller_id").is_in([A, B]))
    )
    positive = (
        ranker.score(pairs.select("buyer_id", "offer_id"))
        .join(pairs, on=["buyer_id", "offer_id"])
        .filter(pl.col("expected_value") > 1e-9)
    )
    both = (
        positive.group_by("buyer_id")
        .agg(pl.col("seller_id").n_unique().alias("sellers"))
        .filter(pl.col("sellers") == 2)
        .sort("buyer_id")
    )
    assert both.height, "no buyer has positive offers of both sellers"

    admin_plans = {s: service.campaigns(s, ADMIN_PRINCIPAL) for s in (A, B)}
    campaigns_of = {s: [c.campaign_id for c in p.campaigns] for s, p in admin_plans.items()}
    assert campaigns_of[A] and campaigns_of[B], "both sellers need campaigns in their plans"

    # Traffic, so that /metrics and the decision log hold something of both sellers.
    client = TestClient(api, base_url="http://127.0.0.1")
    b_answer = None
    for buyer in b_only:
        got = client.post("/v1/rank", json={"buyer_id": buyer, "k": 5}, headers=auth(B_KEY))
        assert got.status_code == 200, got.text
        if got.json()["offers"]:
            b_answer = got.json()
            break
    assert b_answer is not None, "no buyer of B only was given an offer of B"
    assert client.get(f"/v1/sellers/{A}/campaigns", headers=auth(A_KEY)).status_code == 200
    assert client.get(f"/v1/sellers/{B}/campaigns", headers=auth(B_KEY)).status_code == 200
    return World(
        api=api,
        log=log,
        offers_of=offers_of,
        valid_of=valid_of,
        buyers_of=buyers_of,
        campaigns_of=campaigns_of,
        buyer=str(both["buyer_id"][0]),
        b_only_buyer=b_only[0],
        b_decision=b_answer["decision_id"],
        b_decision_offer=b_answer["offers"][0]["offer_id"],
    )


def test_the_world_can_tell_a_leak(world: World) -> None:
    """The checks below could fail: unscoped, the buyer gets B's offers; B's decision is
    of B's offer; the leak check finds an id in a body that holds one."""
    client = world.client()
    unscoped = client.post(
        "/v1/rank", json={"buyer_id": world.buyer, "k": 20}, headers=auth(ADMIN_KEY)
    )
    sellers = {o["seller_id"] for o in unscoped.json()["offers"]}
    assert {A, B} <= sellers
    assert world.b_decision_offer in world.offers_of[B]
    b_plan = client.get(f"/v1/sellers/{B}/campaigns", headers=auth(ADMIN_KEY))
    assert leaked(b_plan, world.foreign()) != []


# --------------------------------------------------------------------------- per route


def check_rank(w: World) -> None:
    client = w.client()
    b_offer, a_offer = w.valid_of[B][0], w.valid_of[A][0]
    before = w.log.stats().rows_accepted
    for body in (
        {"buyer_id": w.buyer, "seller_id": B},
        {"buyer_id": w.buyer, "offer_ids": [b_offer]},
        {"buyer_id": w.buyer, "offer_ids": [a_offer, b_offer]},
        {"buyer_id": w.buyer, "seller_id": A, "offer_ids": [b_offer]},
        *({"buyer_id": w.buyer, "offer_ids": [o]} for o in sorted(w.offers_of[None])[:1]),
    ):
        answer = client.post("/v1/rank", json=body, headers=auth(A_KEY))
        refused_cleanly(w, answer, json.dumps(body), statuses=(403,))
    assert w.log.stats().rows_accepted == before  # nothing refused was decided

    for body in (
        {"buyer_id": w.buyer, "k": 20},
        {"buyer_id": w.buyer, "seller_id": A, "k": 20},
        {"buyer_id": w.b_only_buyer, "k": 20},
        {"buyer_id": "never-seen-buyer", "k": 20},
    ):
        answer = client.post("/v1/rank", json=body, headers=auth(A_KEY))
        assert answer.status_code == 200, answer.text
        assert_only_own_offers(w, answer.json())
        assert leaked(answer, w.foreign()) == []
    scoped = client.post("/v1/rank", json={"buyer_id": w.buyer, "k": 20}, headers=auth(A_KEY))
    assert scoped.json()["offers"], "the buyer has offers of A worth giving"

    admin = client.post(
        "/v1/rank", json={"buyer_id": w.buyer, "seller_id": B, "k": 20}, headers=auth(ADMIN_KEY)
    )
    assert admin.status_code == 200
    assert {o["seller_id"] for o in admin.json()["offers"]} == {B}


def assert_only_own_offers(w: World, answer: dict[str, Any]) -> None:
    for offer in answer["offers"]:
        assert offer["seller_id"] == A
        assert offer["offer_id"] in w.offers_of[A]


def check_rank_batch(w: World) -> None:
    client = w.client()
    own = {"buyer_id": w.buyer, "k": 20}
    before = w.log.stats().rows_accepted
    for bad in (
        {"buyer_id": w.buyer, "seller_id": B},
        {"buyer_id": w.b_only_buyer, "offer_ids": [w.valid_of[B][0]]},
    ):
        body = {"requests": [own, bad]}
        answer = client.post("/v1/rank/batch", json=body, headers=auth(A_KEY))
        refused_cleanly(w, answer, json.dumps(body), statuses=(403,))
    assert w.log.stats().rows_accepted == before

    body = {"requests": [own, {"buyer_id": w.b_only_buyer, "k": 20}]}
    answer = client.post("/v1/rank/batch", json=body, headers=auth(A_KEY))
    assert answer.status_code == 200, answer.text
    responses = answer.json()["responses"]
    assert len(responses) == 2 and responses[0]["offers"]
    for response in responses:
        assert_only_own_offers(w, response)
    assert leaked(answer, w.foreign()) == []


def check_outcomes(w: World) -> None:
    client = w.client()
    mine = client.post("/v1/rank", json={"buyer_id": w.buyer, "k": 3}, headers=auth(A_KEY))
    a_decision = mine.json()["decision_id"]
    before = w.log.stats().rows_accepted
    for outcome in (
        {"decision_id": w.b_decision, "type": "redemption"},  # the decision's own offer: B's
        {"decision_id": w.b_decision, "type": "purchase"},
        {"decision_id": w.b_decision, "type": "redemption", "offer_id": w.valid_of[A][0]},
        {"decision_id": a_decision, "type": "redemption", "offer_id": w.valid_of[B][0]},
    ):
        body = {"outcomes": [outcome]}
        answer = client.post("/v1/outcomes", json=body, headers=auth(A_KEY))
        # B's decision's offer (in w.foreign()) never shows, although the service knows it.
        refused_cleanly(w, answer, json.dumps(body), statuses=(403,))
    assert w.log.stats().rows_accepted == before  # nothing refused was logged

    own = {"decision_id": a_decision, "type": "redemption", "offer_id": w.valid_of[A][0]}
    answer = client.post("/v1/outcomes", json={"outcomes": [own]}, headers=auth(A_KEY))
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    admin = client.post(
        "/v1/outcomes",
        json={"outcomes": [{"decision_id": w.b_decision, "type": "purchase"}]},
        headers=auth(ADMIN_KEY),
    )
    assert admin.status_code == 200 and admin.json()["accepted"] == 1


def check_campaigns(w: World) -> None:
    header, cookie = w.client(), w.client()
    assert login(cookie, A, A_KEY).status_code == 303
    path = f"/v1/sellers/{B}/campaigns"
    for params in ({}, {"budget": 10.0}, {"audience": "taste"}):
        refused_cleanly(w, header.get(path, params=params, headers=auth(A_KEY)), path, (403,))
        refused_cleanly(w, cookie.get(path, params=params), path, (403,))

    for params in ({}, {"budget": 10.0}, {"audience": "taste"}):
        for client, headers in ((header, auth(A_KEY)), (cookie, {})):
            answer = client.get(f"/v1/sellers/{A}/campaigns", params=params, headers=headers)
            assert answer.status_code == 200, answer.text
            plan = answer.json()
            assert plan["seller_id"] == A
            for campaign in plan["campaigns"]:
                assert campaign["offer_id"] in w.offers_of[A]
                assert set(campaign["top_buyer_ids"]) <= w.buyers_of[A]
            for alternative in plan["comparison"]:
                assert alternative["offer_id"] in w.offers_of[A] | {None}
            assert leaked(answer, w.foreign()) == []

    admin = header.get(path, headers=auth(ADMIN_KEY))
    assert admin.status_code == 200
    assert {c["campaign_id"] for c in admin.json()["campaigns"]} == set(w.campaigns_of[B])


def check_targets(w: World) -> None:
    header, cookie = w.client(), w.client()
    assert login(cookie, A, A_KEY).status_code == 303
    b_campaign, a_campaign = w.campaigns_of[B][0], w.campaigns_of[A][0]
    for path in (
        f"/v1/sellers/{B}/campaigns/{b_campaign}/targets.csv",
        f"/v1/sellers/{B}/campaigns/{a_campaign}/targets.csv",
    ):
        refused_cleanly(w, header.get(path, headers=auth(A_KEY)), path, (403,))
        refused_cleanly(w, cookie.get(path), path, (403,))
    path = f"/v1/sellers/{A}/campaigns/{b_campaign}/targets.csv"  # B's campaign in A's plan
    refused_cleanly(w, header.get(path, headers=auth(A_KEY)), path, (404,))
    refused_cleanly(w, cookie.get(path), path, (404,))

    for client, headers in ((header, auth(A_KEY)), (cookie, {})):
        answer = client.get(f"/v1/sellers/{A}/campaigns/{a_campaign}/targets.csv", headers=headers)
        assert answer.status_code == 200, answer.text
        rows = list(csv.DictReader(io.StringIO(answer.text)))
        assert rows
        assert {r["buyer_id"] for r in rows} <= w.buyers_of[A]
        assert {r["offer_id"] for r in rows} <= w.offers_of[A]
        assert leaked(answer, w.foreign()) == []

    admin = header.get(
        f"/v1/sellers/{B}/campaigns/{b_campaign}/targets.csv", headers=auth(ADMIN_KEY)
    )
    assert admin.status_code == 200
    assert {r["offer_id"] for r in csv.DictReader(io.StringIO(admin.text))} <= w.offers_of[B]


def check_page(w: World) -> None:
    anonymous, cookie = w.client(), w.client()
    path = f"/sellers/{B}"
    refused_cleanly(w, anonymous.get(path), path, (401,))
    assert login(cookie, A, A_KEY).status_code == 303
    page = cookie.get(path)
    refused_cleanly(w, page, path, (403,))
    assert "data-seller" not in page.text
    forged = w.client()
    forged.cookies.set(COOKIE, "not-a-key-of-anyone-0000000000", domain="127.0.0.1")
    refused_cleanly(w, forged.get(path), path, (401,))

    own = cookie.get(f"/sellers/{A}")
    assert own.status_code == 200 and f'data-seller="{A}"' in own.text
    assert leaked(own, w.foreign()) == []
    admin = w.client()
    assert login(admin, B, ADMIN_KEY).status_code == 303
    assert admin.get(path).status_code == 200


def check_login(w: World) -> None:
    client = w.client()
    for seller, key in ((B, A_KEY), (A, B_KEY)):
        answer = login(client, seller, key)
        refused_cleanly(w, answer, f"/sellers/{seller}/login", (403,))
        assert COOKIE not in client.cookies
    assert login(client, A, A_KEY).status_code == 303
    assert COOKIE in client.cookies


def check_logout(w: World) -> None:
    """Logout only clears the caller's own cookie: no data, whichever seller it names."""
    client = w.client()
    login(client, A, A_KEY)
    answer = client.post(f"/sellers/{B}/logout", follow_redirects=False)
    assert answer.status_code == 303
    assert leaked(answer, w.every_id()) == []
    assert COOKIE not in client.cookies


def check_public(path: str) -> Callable[[World], None]:
    """An unauthenticated caller gets the route, and it holds no seller data."""

    def check(w: World) -> None:
        answer = w.client().get(path)
        assert answer.status_code == 200, answer.text
        assert leaked(answer, w.every_id()) == []
        for seller in (A, B):
            assert not _mentions(answer.text, seller), f"{path} names seller {seller}"
        for key in (A_KEY, B_KEY, ADMIN_KEY):
            assert key not in answer.text and hash_key(key)[7:] not in answer.text

    return check


def check_incrementality(w: World) -> None:
    """A's key (header or page cookie) gets A's measured lift only; B's is a 403."""
    header, cookie = w.client(), w.client()
    assert login(cookie, A, A_KEY).status_code == 303
    for client, headers in ((header, auth(A_KEY)), (cookie, {})):
        path = f"/v1/sellers/{B}/incrementality"
        refused = client.get(path, headers=headers)
        refused_cleanly(w, refused, path, (403,))
        assert str(B_LIFT) not in refused.text
        own = client.get(f"/v1/sellers/{A}/incrementality", headers=headers)
        assert own.status_code == 200, own.text
        body = own.json()
        assert body["seller_id"] == A and body["available"]
        assert [f["lift"] for f in body["figures"]] == [A_LIFT]
        assert str(B_LIFT) not in own.text and leaked(own, w.foreign()) == []
    admin = header.get(f"/v1/sellers/{B}/incrementality", headers=auth(ADMIN_KEY))
    assert admin.status_code == 200 and admin.json()["figures"][0]["lift"] == B_LIFT
    # The public /metrics holds the overall figures only.
    metrics = header.get("/metrics").text
    assert 'recsys_incrementality_lift{metric="profit"} 0.5' in metrics
    assert str(A_LIFT) not in metrics and str(B_LIFT) not in metrics


def check_static(w: World) -> None:
    client = w.client()
    for name in ("seller.js", "seller.css", "login.html", "..%2Fapp.py"):
        answer = client.get(f"/static/{name}")
        assert answer.status_code in (200, 404)
        assert leaked(answer, w.every_id()) == []
    assert client.get("/static/seller.js").status_code == 200
    assert client.get("/static/login.html").status_code == 404  # only the listed files


ROUTES: dict[tuple[str, str], Callable[[World], None]] = {
    ("POST", "/v1/rank"): check_rank,
    ("POST", "/v1/rank/batch"): check_rank_batch,
    ("POST", "/v1/outcomes"): check_outcomes,
    ("GET", "/v1/sellers/{seller_id}/campaigns"): check_campaigns,
    ("GET", "/v1/sellers/{seller_id}/campaigns/{campaign_id}/targets.csv"): check_targets,
    ("GET", "/v1/sellers/{seller_id}/incrementality"): check_incrementality,
    ("GET", "/sellers/{seller_id}"): check_page,
    ("POST", "/sellers/{seller_id}/login"): check_login,
    ("POST", "/sellers/{seller_id}/logout"): check_logout,
    ("GET", "/static/{name}"): check_static,
    **{
        ("GET", path): check_public(path)
        for path in (
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/docs",
            "/docs/oauth2-redirect",
            "/redoc",
        )
    },
}
"""Every route of the app and the check that covers it (HEAD goes with GET)."""


def app_routes(api: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route of `api`; a route without methods (a mount, a
    websocket) is listed under its type's name, so it is unclassified too."""
    found: set[tuple[str, str]] = set()
    for route in api.routes:
        path = getattr(route, "path", repr(route))
        methods = getattr(route, "methods", None)
        if not methods:
            found.add((type(route).__name__, path))
        found |= {(m, path) for m in methods or () if m != "HEAD"}
    return found


def test_every_route_is_classified() -> None:
    api = create_api(lambda: None)  # type: ignore[arg-type, return-value]
    routes = app_routes(api)
    assert routes - set(ROUTES) == set(), (
        "a route has no tenant-isolation check: add it to ROUTES with a check of what a "
        "seller's key gets from it when it names another seller"
    )
    assert set(ROUTES) - routes == set(), "ROUTES lists a route the app no longer has"


@pytest.mark.parametrize("route", sorted(ROUTES), ids=" ".join)
def test_a_sellers_key_gets_nothing_of_another_seller(world: World, route: tuple[str, str]) -> None:
    ROUTES[route](world)


def test_the_decision_log_holds_only_what_each_key_may_see(world: World) -> None:
    """Rows written for A's calls are A's decisions; none is of B's offers."""
    from serving.decision_log import read_log

    world.log.flush()
    exposures = read_log(world.log.directory)["exposures"]
    assert exposures.height
    offered = exposures.filter(pl.col("offer_id").is_not_null())
    by_seller = offered.group_by("seller_id").agg(pl.col("offer_id").unique())
    for seller, offer_ids in by_seller.iter_rows():
        assert set(offer_ids) <= world.offers_of[seller]


def test_the_data_routes_need_a_key(world: World) -> None:
    """Without a key (and without the page's cookie) every data route is a 401 that
    holds no data; only the public routes answer."""
    client = world.client()
    for method, path, body in (
        ("POST", "/v1/rank", {"buyer_id": world.buyer}),
        ("POST", "/v1/rank/batch", {"requests": [{"buyer_id": world.buyer}]}),
        (
            "POST",
            "/v1/outcomes",
            {"outcomes": [{"decision_id": world.b_decision, "type": "purchase"}]},
        ),
        ("GET", f"/v1/sellers/{A}/campaigns", None),
        ("GET", f"/v1/sellers/{A}/campaigns/{world.campaigns_of[A][0]}/targets.csv", None),
        ("GET", f"/v1/sellers/{A}/incrementality", None),
    ):
        answer = client.request(method, path, json=body)
        assert answer.status_code == 401, (path, answer.text)
        assert leaked(answer, world.every_id(), path + json.dumps(body)) == []


def test_a_new_route_would_be_unclassified() -> None:
    """The classification check sees a route added to the app (so it can fail)."""
    api = create_api(lambda: None)  # type: ignore[arg-type, return-value]

    @api.get("/v1/sellers/{seller_id}/buyers")
    async def buyers(seller_id: str) -> list[str]:
        return []

    assert app_routes(api) - set(ROUTES) == {("GET", "/v1/sellers/{seller_id}/buyers")}
