"""The seller page, its login cookie and the CSV route, over a stand-in service."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from serving.app import ApiState, ServiceHolder, create_api
from serving.auth import ApiKeyEntry, KeyRing, hash_key
from serving.metrics import Metrics
from serving.pages import COOKIE
from tests.serving.test_app import ADMIN_KEY, OTHER_KEY, SELLER_KEY, FakeService, auth


@pytest.fixture
def client() -> TestClient:
    keyring = KeyRing(
        [
            ApiKeyEntry(key_hash=hash_key(SELLER_KEY), seller_id="s1"),
            ApiKeyEntry(key_hash=hash_key(OTHER_KEY), seller_id="s2"),
            ApiKeyEntry(key_hash=hash_key(ADMIN_KEY), seller_id="*"),
        ]
    )
    state = ApiState(
        holder=ServiceHolder(service=FakeService(), version="7"),
        keyring=keyring,
        metrics=Metrics(),
    )
    return TestClient(create_api(lambda: state), base_url="http://127.0.0.1")


def login(client: TestClient, seller: str, key: str) -> Any:
    return client.post(f"/sellers/{seller}/login", data={"key": key}, follow_redirects=False)


def test_the_page_asks_for_a_key_first(client: TestClient) -> None:
    page = client.get("/sellers/s1")
    assert page.status_code == 401
    assert '<form method="post" action="/sellers/s1/login">' in page.text
    assert "campaigns" not in client.cookies


def test_login_sets_an_httponly_strict_cookie_and_opens_the_page(client: TestClient) -> None:
    done = login(client, "s1", SELLER_KEY)
    assert done.status_code == 303 and done.headers["location"] == "/sellers/s1"
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = client.get("/sellers/s1")
    assert page.status_code == 200
    assert 'data-seller="s1"' in page.text and "/static/seller.js" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    # The page's script and styles come from this server, not a CDN.
    assert "http" not in page.text.replace("http://www.w3.org", "")
    script = client.get("/static/seller.js")
    assert script.status_code == 200 and "fetch(" in script.text
    assert client.get("/static/../app.py").status_code == 404


def test_a_wrong_key_is_refused_and_sets_no_cookie(client: TestClient) -> None:
    refused = login(client, "s1", "not-a-key-at-all-0000000")
    assert refused.status_code == 401
    assert "unknown API key" in refused.text
    assert COOKIE not in refused.headers.get("set-cookie", "")


def test_a_sellers_key_cannot_open_another_sellers_page(client: TestClient) -> None:
    refused = login(client, "s2", SELLER_KEY)
    assert refused.status_code == 403
    assert "may not access seller 's2'" in html.unescape(refused.text)
    login(client, "s1", SELLER_KEY)
    page = client.get("/sellers/s2")  # with s1's cookie
    assert page.status_code == 403 and "data-seller" not in page.text
    api = client.get("/v1/sellers/s2/campaigns")
    assert api.status_code == 403
    assert login(client, "s2", ADMIN_KEY).status_code == 303  # an admin may


def test_the_cookie_reads_campaigns_but_never_ranks(client: TestClient) -> None:
    login(client, "s1", SELLER_KEY)
    plan = client.get("/v1/sellers/s1/campaigns", params={"budget": 12.5, "audience": "taste"})
    assert plan.status_code == 200, plan.text
    assert plan.json()["budget"] == 12.5 and plan.json()["audience"] == "taste"
    # Changing requests need the header: a cookie alone is not a caller.
    assert client.post("/v1/rank", json={"buyer_id": "b1"}).status_code == 401


def test_budget_and_audience_are_checked(client: TestClient) -> None:
    for params in ({"budget": -1}, {"budget": "lots"}, {"audience": "zodiac"}):
        bad = client.get("/v1/sellers/s1/campaigns", params=params, headers=auth(SELLER_KEY))
        assert bad.status_code == 422
        field = next(iter(params))
        assert field in bad.text


def test_target_list_downloads_as_csv(client: TestClient) -> None:
    path = "/v1/sellers/s1/campaigns/lapsing.of1/targets.csv"
    csv = client.get(path, headers=auth(SELLER_KEY))
    assert csv.status_code == 200
    assert csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv.headers["content-disposition"]
    assert csv.text.splitlines() == ["buyer_id,offer_id", "b1,of1", "b2,of1"]
    missing = client.get(path.replace("lapsing.of1", "nope"), headers=auth(SELLER_KEY))
    assert missing.status_code == 404 and "lapsing.of1" in missing.json()["detail"]
    other = client.get(path.replace("/s1/", "/s2/"), headers=auth(SELLER_KEY))
    assert other.status_code == 403


def test_seller_ids_are_escaped_in_the_page(client: TestClient) -> None:
    evil = '<img src=x onerror=alert(1)>"'
    page = client.get("/sellers/" + quote(evil, safe=""))
    assert page.status_code == 401
    assert "<img" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;&quot;" in page.text


def test_logout_clears_the_cookie(client: TestClient) -> None:
    login(client, "s1", SELLER_KEY)
    out = client.post("/sellers/s1/logout", follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/sellers/s1").status_code == 401


@pytest.mark.parametrize("seller", ["{{message}}", "{{action}}", "x{{who}}y", "{{seller_id}}"])
def test_a_seller_id_shaped_like_a_placeholder_stays_text(client: TestClient, seller: str) -> None:
    """The template is filled in one pass: a value holding `{{message}}` is not filled
    again, so the error's markup lands once, in its paragraph, never in <title>."""
    refused = login(client, quote(seller, safe=""), "not-a-key-at-all-0000000")
    assert refused.status_code == 401
    page = refused.text
    title = page.split("<title>")[1].split("</title>")[0]
    strong = page.split("<strong>")[1].split("</strong>")[0]
    assert title == f"Sign in: campaigns of {html.escape(seller)}"
    assert strong == html.escape(seller)
    assert page.count('<p class="error" role="alert">') == 1
    assert page.count('action="/sellers/') == 1


def test_the_page_without_an_error_has_no_alert(client: TestClient) -> None:
    page = client.get("/sellers/s1").text
    assert "{{" not in page and 'role="alert"' not in page
