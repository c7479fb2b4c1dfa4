"""The seller page's sessions: login, use, logout, reuse refused, expiry, never a key.

Over HTTP (the app with the stand-in service of `test_app.py`) and on `SessionStore`
itself: two stores on one directory stand for two replicas.
"""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import ApiState, ServiceHolder, create_api
from serving.auth import ADMIN_PRINCIPAL, ApiKeyEntry, AuthError, KeyRing, Principal, hash_key
from serving.metrics import Metrics
from serving.sessions import COOKIE, SECRET_ENV, SessionStore
from tests.serving.test_app import ADMIN_KEY, OTHER_KEY, SELLER_KEY, FakeService, auth

SELLER = Principal(seller_id="s1", admin=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def keyring(*keys: tuple[str, str]) -> KeyRing:
    return KeyRing([ApiKeyEntry(key_hash=hash_key(k), seller_id=s) for k, s in keys])


ALL_KEYS = ((SELLER_KEY, "s1"), (OTHER_KEY, "s2"), (ADMIN_KEY, "*"))


def app_with(sessions: SessionStore, keys: KeyRing | None = None) -> TestClient:
    state = ApiState(
        holder=ServiceHolder(service=FakeService(), version="7"),
        keyring=keys or keyring(*ALL_KEYS),
        metrics=Metrics(),
        sessions=sessions,
    )
    return TestClient(create_api(lambda: state), base_url="http://127.0.0.1")


def login(client: TestClient, seller: str = "s1", key: str = SELLER_KEY) -> str:
    done = client.post(f"/sellers/{seller}/login", data={"key": key}, follow_redirects=False)
    assert done.status_code == 303, done.text
    token = client.cookies.get(COOKIE)
    assert token
    return token


def with_cookie(client: TestClient, token: str) -> dict[str, str]:
    client.cookies.clear()
    return {"cookie": f"{COOKIE}={token}"}


# --------------------------------------------------------------------------- over HTTP


def test_the_session_lifecycle(tmp_path: Path) -> None:
    clock = Clock()
    store = SessionStore(tmp_path, ttl=timedelta(hours=8), clock=clock, env={})
    client = app_with(store)
    token = login(client)
    assert SELLER_KEY not in token and hash_key(SELLER_KEY) not in token
    cookie = client.post(
        "/sellers/s1/login", data={"key": SELLER_KEY}, follow_redirects=False
    ).headers["set-cookie"]
    assert f"Max-Age={8 * 3600}" in cookie and "HttpOnly" in cookie

    # Use: the page and the reading routes.
    assert client.get("/sellers/s1").status_code == 200
    assert client.get("/v1/sellers/s1/campaigns").status_code == 200
    csv = client.get("/v1/sellers/s1/campaigns/lapsing.of1/targets.csv")
    assert csv.status_code == 200

    # Logout ends it on the server: a copy of the cookie is refused afterwards.
    copied = client.cookies.get(COOKIE)
    assert copied is not None
    out = client.post("/sellers/s1/logout", follow_redirects=False)
    assert out.status_code == 303 and COOKIE in out.headers["set-cookie"]
    thief = app_with(store)
    page = thief.get("/sellers/s1", headers=with_cookie(thief, copied))
    assert page.status_code == 401 and "signed out" in page.text
    api = thief.get("/v1/sellers/s1/campaigns", headers=with_cookie(thief, copied))
    assert api.status_code == 401 and "signed out" in api.json()["detail"]

    # Expiry: a session is refused once its time is up, even never signed out.
    fresh = login(client)
    assert client.get("/v1/sellers/s1/campaigns").status_code == 200
    clock.now += 8 * 3600 + 1
    expired = client.get("/v1/sellers/s1/campaigns", headers=with_cookie(client, fresh))
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]


def test_a_session_token_is_never_an_api_key() -> None:
    client = app_with(SessionStore(env={}))
    token = login(client, "s1", ADMIN_KEY)  # even an admin's session
    client.cookies.clear()
    for method, path, body in (
        ("POST", "/v1/rank", {"buyer_id": "b1"}),
        ("POST", "/v1/outcomes", {"outcomes": [{"decision_id": "d", "type": "purchase"}]}),
        ("GET", "/v1/sellers/s1/campaigns", None),
    ):
        refused = client.request(method, path, json=body, headers=auth(token))
        assert refused.status_code == 401, (path, refused.text)
        assert "unknown API key" in refused.json()["detail"]


def test_the_cookie_never_holds_a_key_and_a_key_is_no_cookie() -> None:
    client = app_with(SessionStore(env={}))
    client.cookies.set(COOKIE, SELLER_KEY, domain="127.0.0.1")  # the old cookie's form
    assert client.get("/sellers/s1").status_code == 401
    assert client.get("/v1/sellers/s1/campaigns").status_code == 401


def test_a_tampered_or_foreign_session_is_refused(tmp_path: Path) -> None:
    here = app_with(SessionStore(tmp_path / "a", env={}))
    token = login(here)
    elsewhere = app_with(SessionStore(tmp_path / "b", env={}))  # another secret
    foreign = elsewhere.get("/v1/sellers/s1/campaigns", headers=with_cookie(elsewhere, token))
    assert foreign.status_code == 401 and "not valid" in foreign.json()["detail"]
    payload, _, signature = token.rpartition(".")
    forged = payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    refused = here.get("/v1/sellers/s1/campaigns", headers=with_cookie(here, forged))
    assert refused.status_code == 401


def test_a_session_sees_only_its_own_seller() -> None:
    client = app_with(SessionStore(env={}))
    login(client, "s1", SELLER_KEY)
    assert client.get("/v1/sellers/s2/campaigns").status_code == 403
    assert client.get("/sellers/s2").status_code == 403


# --------------------------------------------------------------------------- the store


def test_replicas_sharing_a_directory_share_sessions_and_sign_outs(tmp_path: Path) -> None:
    keys = keyring(*ALL_KEYS)
    one = SessionStore(tmp_path, env={})
    two = SessionStore(tmp_path, env={})
    token = one.issue(SELLER, hash_key(SELLER_KEY))
    assert two.verify(token, keys) == SELLER
    assert two.revoke(token) is True
    with pytest.raises(AuthError, match="signed out"):
        one.verify(token, keys)
    assert one.revoke(token) is False
    secret = tmp_path / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert SELLER_KEY not in "".join(p.read_text() for p in tmp_path.iterdir())


def test_removing_a_key_ends_its_sessions() -> None:
    store = SessionStore(env={})
    token = store.issue(ADMIN_PRINCIPAL, hash_key(ADMIN_KEY))
    assert store.verify(token, keyring(*ALL_KEYS)) == ADMIN_PRINCIPAL
    with pytest.raises(AuthError, match="removed"):
        store.verify(token, keyring((SELLER_KEY, "s1")))


def test_expired_sessions_are_purged_at_the_next_sign_in(tmp_path: Path) -> None:
    clock = Clock()
    store = SessionStore(tmp_path, ttl=timedelta(minutes=5), clock=clock, env={})
    store.issue(SELLER, hash_key(SELLER_KEY))
    clock.now += 301
    store.issue(SELLER, hash_key(SELLER_KEY))
    assert len(list(tmp_path.glob("s-*"))) == 1


def test_the_secret_comes_from_the_environment_when_set(tmp_path: Path) -> None:
    env = {SECRET_ENV: "s" * 40}
    a = SessionStore(tmp_path / "a", env=env)
    b = SessionStore(tmp_path / "a", env=env)
    assert b.verify(a.issue(SELLER, hash_key(SELLER_KEY)), keyring(*ALL_KEYS)) == SELLER
    assert not (tmp_path / "a" / "secret").exists()
    with pytest.raises(ValueError, match=f"{SECRET_ENV} must be at least 32"):
        SessionStore(env={SECRET_ENV: "short"})
