"""API keys are stored hashed, compared in constant time and never logged or echoed.

A sequence of requests (a valid key, a wrong key, malformed headers holding real keys,
the seller page's login form) goes through the app over the real `RankingService` and
decision log, with every logger recording at DEBUG; then the raw keys are looked for in
the log records, the printed output, the metrics text, the decision log's rows and files,
the key ring's memory, and every response's body and headers. The one place a raw key
may travel is the login answer's `Set-Cookie`, back to the browser that just typed it
(the seller page's session; `serving.pages`), HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import pickle
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from recsys.models.ranker import PromoRanker
from serving import auth
from serving.app import ApiState, ServiceHolder, create_api, keyring_entries
from serving.auth import ENV_VAR, ApiKeyEntry, AuthError, KeyRing, hash_key
from serving.config import ServeConfig
from serving.decision_log import DecisionLog, read_log
from serving.metrics import Metrics
from serving.pages import COOKIE
from serving.service import RankingService

SELLER = "s001"
# Keys as `generate_key` makes them (fixed here, so a failure is reproducible).
SELLER_KEY = "ipL0NJS9-ZS6PHWqzzvVdNJQftDzhi6BcNQvrP4Q5v4"
ADMIN_KEY = "mRcD_SztQ5Nxz4FWURv9Ogz4RHnxFO-8XUpYCTzmZ40"
ENV_KEY = "suxMrCrY_5vMXXCGEvR255wJ0P1jAswct8OVkOqDNfM"
WRONG_KEY = "2R3TiNzZAZq-kbTO2P1nLPNJ_xF0gLa0LHaja24LM-g"
RAW_KEYS = (SELLER_KEY, ADMIN_KEY, ENV_KEY, WRONG_KEY)
WINDOW = 10
"""Characters of a key that count as a leak: any 10 in a row (a prefix or a piece of a
random 43-character key is as bad as the whole)."""


def _windows(secret: str, width: int) -> set[str]:
    return {secret[i : i + width] for i in range(len(secret) - width + 1)}


def secrets_in(text: str) -> list[str]:
    """Which raw keys (or the hex of their hashes) have a piece in `text`."""
    found = []
    for number, key in enumerate(RAW_KEYS):
        if any(piece in text for piece in _windows(key, WINDOW)):
            found.append(f"key {number}")
        if any(piece in text for piece in _windows(hash_key(key)[7:], 16)):
            found.append(f"hash of key {number}")
    return found


class Everything(logging.Handler):
    """Keeps every record of every logger, formatted with its exception, if any."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + repr(record.args))


@pytest.fixture
def every_log_line() -> Iterator[list[str]]:
    """Every logger (existing and new) at DEBUG into one handler; restored after."""
    handler = Everything()
    root = logging.getLogger()
    loggers = [root] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        if logger is root or not logger.propagate:
            logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled
            logger.removeHandler(handler)


def test_raw_keys_appear_in_no_log_metric_row_or_answer(
    market_ranker: PromoRanker,
    market_now: datetime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    every_log_line: list[str],
) -> None:
    monkeypatch.setenv(ENV_VAR, f"{ENV_KEY}:{SELLER}")
    config = ServeConfig(
        api_keys=[
            ApiKeyEntry(key_hash=hash_key(SELLER_KEY), seller_id=SELLER),
            ApiKeyEntry(key_hash=hash_key(ADMIN_KEY), seller_id="*"),
        ],
        decision_log_dir=tmp_path / "log",
    )
    keyring = KeyRing(keyring_entries(config))
    log = DecisionLog(config.decision_log_dir).start()  # writes ahead, as a replica's does
    service = RankingService(
        market_ranker, "v1", decision_log=log, clock=lambda: market_now, seed=1
    )
    metrics = Metrics()
    state = ApiState(
        holder=ServiceHolder(service=service, version="v1"), keyring=keyring, metrics=metrics
    )
    client = TestClient(create_api(lambda: state), base_url="http://127.0.0.1")
    answers: list[httpx.Response] = []

    def call(method: str, path: str, status: int, **kwargs: Any) -> httpx.Response:
        answer = client.request(method, path, **kwargs)
        assert answer.status_code == status, (method, path, answer.text)
        answers.append(answer)
        return answer

    rank = {"buyer_id": "b0000002", "k": 3}
    for key in (SELLER_KEY, ENV_KEY):
        decided = call(
            "POST", "/v1/rank", 200, json=rank, headers={"Authorization": f"Bearer {key}"}
        )
    decision = decided.json()["decision_id"]
    call(
        "POST",
        "/v1/rank/batch",
        200,
        json={"requests": [rank, rank]},
        headers={"Authorization": f"bearer {ADMIN_KEY}"},
    )
    outcome = {"outcomes": [{"decision_id": decision, "type": "purchase"}]}
    call(
        "POST", "/v1/outcomes", 200, json=outcome, headers={"Authorization": f"Bearer {SELLER_KEY}"}
    )
    call(
        "GET",
        f"/v1/sellers/{SELLER}/campaigns",
        200,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    # Wrong keys and malformed headers, several of them holding a real key.
    for header in (
        f"Bearer {WRONG_KEY}",
        f"Bearer {SELLER_KEY[:-1]}",
        f"Bearer {SELLER_KEY}x",
        f"Basic {SELLER_KEY}",
        SELLER_KEY,
        f"Bearer {SELLER_KEY} {ADMIN_KEY}",
        f"Bearer{SELLER_KEY}",
        "Bearer",
    ):
        call("POST", "/v1/rank", 401, json=rank, headers={"Authorization": header})
        call("GET", f"/v1/sellers/{SELLER}/campaigns", 401, headers={"Authorization": header})
    call(
        "GET", "/v1/sellers/s002/campaigns", 403, headers={"Authorization": f"Bearer {SELLER_KEY}"}
    )

    # The seller page: a wrong key, another seller's page, then a good login.
    call("POST", f"/sellers/{SELLER}/login", 401, data={"key": WRONG_KEY}, follow_redirects=False)
    call("POST", "/sellers/s002/login", 403, data={"key": SELLER_KEY}, follow_redirects=False)
    login = client.post(
        f"/sellers/{SELLER}/login", data={"key": SELLER_KEY}, follow_redirects=False
    )
    assert login.status_code == 303
    cookie = login.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")  # a session token: the key is in no cookie
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert secrets_in(login.text) == []
    assert secrets_in(str(dict(login.headers.items()))) == []
    call("GET", f"/sellers/{SELLER}", 200)
    call("GET", f"/v1/sellers/{SELLER}/campaigns", 200)
    call("GET", "/sellers/s002", 403)
    call("POST", f"/sellers/{SELLER}/logout", 303, follow_redirects=False)
    metrics_text = call("GET", "/metrics", 200).text
    for path in ("/healthz", "/readyz", "/openapi.json"):
        call("GET", path, 200)

    for answer in answers:
        assert secrets_in(answer.text) == [], (answer.request.url, answer.text)
        headers = "\n".join(f"{k}: {v}" for k, v in answer.headers.multi_items())
        assert secrets_in(headers) == [], (answer.request.url, headers)
    assert "recsys_requests_total" in metrics_text and secrets_in(metrics_text) == []

    def files_hold_no_key() -> int:
        files = [f for f in Path(config.decision_log_dir).rglob("*") if f.is_file()]
        for path in files:
            data = path.read_bytes()
            assert secrets_in(data.decode("latin-1")) == [], path
        return len(files)

    assert files_hold_no_key() > 0  # the write-ahead segments, before they become parts
    log.close()
    assert files_hold_no_key() > 0  # the parts
    tables = read_log(config.decision_log_dir)
    assert tables["exposures"].height >= 4 and tables["redemptions"].height == 0
    for table in tables.values():
        assert secrets_in(str(table.rows())) == []

    assert len(every_log_line) > 0  # the handler did see the run (e.g. the test client)
    assert secrets_in("\n".join(every_log_line)) == []
    printed = capsys.readouterr()
    assert secrets_in(printed.out + printed.err) == []
    # In memory (and pickled, as Ray Serve ships state to replicas) only hashes.
    held = pickle.dumps(keyring)
    assert [f for f in secrets_in(held.decode("latin-1")) if f.startswith("key")] == []
    assert hash_key(ENV_KEY).encode() in held


# --------------------------------------------------------------------------- hashing


def test_env_keys_are_hashed_as_they_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, f" {ENV_KEY}:{SELLER} , {ADMIN_KEY}:* ")
    entries = keyring_entries(ServeConfig())
    assert [(e.key_hash, e.seller_id) for e in entries] == [
        (hash_key(ENV_KEY), SELLER),
        (hash_key(ADMIN_KEY), "*"),
    ]
    assert hash_key(ENV_KEY) == "sha256:" + hashlib.sha256(ENV_KEY.encode()).hexdigest()
    dumped = repr(entries) + str([e.model_dump() for e in entries])
    assert ENV_KEY not in dumped and ADMIN_KEY not in dumped
    ring = KeyRing(entries)
    assert ring.authenticate(f"Bearer {ENV_KEY}").seller_id == SELLER
    assert ring.authenticate(f"Bearer {ADMIN_KEY}").admin


def test_the_dumped_serve_config_holds_hashes_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `app_builder` hands to the replicas, and what a config file holds."""
    monkeypatch.setenv(ENV_VAR, f"{ENV_KEY}:{SELLER}")
    config = ServeConfig(api_keys=[ApiKeyEntry(key_hash=hash_key(ADMIN_KEY), seller_id="*")])
    config.api_keys = keyring_entries(config)  # as app_builder does
    dumped = config.to_dict()
    text = yaml.safe_dump(dumped) + repr(dumped)
    assert ENV_KEY not in text and ADMIN_KEY not in text
    assert [e["key_hash"] for e in dumped["api_keys"]] == [hash_key(ADMIN_KEY), hash_key(ENV_KEY)]
    assert ServeConfig.from_dict(dumped).api_keys == config.api_keys  # round trip
    # A raw key where a hash belongs is refused, and the refusal does not repeat it.
    with pytest.raises(ValueError) as refused:
        ServeConfig.from_dict({"api_keys": [{"key_hash": ENV_KEY, "seller_id": SELLER}]})
    assert ENV_KEY not in str(refused.value)


# --------------------------------------------------------------------------- comparison


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing(
        [
            ApiKeyEntry(key_hash=hash_key(SELLER_KEY), seller_id=SELLER),
            ApiKeyEntry(key_hash=hash_key(ENV_KEY), seller_id="s002"),
            ApiKeyEntry(key_hash=hash_key(ADMIN_KEY), seller_id="*"),
        ]
    )


@pytest.fixture
def comparisons(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Every `hmac.compare_digest` call `serving.auth` makes, with its arguments."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    return calls


@pytest.mark.parametrize(
    "key", [SELLER_KEY, ENV_KEY, ADMIN_KEY, WRONG_KEY], ids=["first", "second", "last", "none"]
)
def test_every_stored_hash_is_compared_in_constant_time_whatever_the_key(
    ring: KeyRing, comparisons: list[tuple[Any, Any]], key: str
) -> None:
    """The same comparisons, of hashes only, for the first, last or no matching key."""
    try:
        ring.authenticate(f"Bearer {key}")
    except AuthError:
        assert key == WRONG_KEY
    assert len(comparisons) == len(ring) == 3
    stored = {hash_key(k) for k in (SELLER_KEY, ENV_KEY, ADMIN_KEY)}
    assert {str(a) for a, _ in comparisons} == stored
    assert {str(b) for _, b in comparisons} == {hash_key(key)}
    assert not any(key in str(arg) for call in comparisons for arg in call)


def test_authentication_holds_no_raw_key_and_matches_no_prefix(ring: KeyRing) -> None:
    held = pickle.dumps(ring)  # every attribute, dictionaries included
    assert [f for f in secrets_in(held.decode("latin-1")) if f.startswith("key")] == []
    for near in (
        SELLER_KEY[:-1],
        SELLER_KEY + "x",
        SELLER_KEY[:16],
        SELLER_KEY.upper(),
        hash_key(SELLER_KEY),  # the stored hash is not a key
        hash_key(SELLER_KEY)[7:],
    ):
        with pytest.raises(AuthError):
            ring.authenticate(f"Bearer {near}")
    # A key whose hash begins like a stored hash is refused like any other.
    target = hash_key(SELLER_KEY)[7:11]
    twin = next(
        c
        for c in (f"prefix-twin-{i:012d}" for i in itertools.count())
        if hashlib.sha256(c.encode()).hexdigest()[:4] == target
    )
    with pytest.raises(AuthError):
        ring.authenticate(f"Bearer {twin}")
    assert ring.authenticate(f"Bearer {SELLER_KEY}").seller_id == SELLER


# --------------------------------------------------------------------------- the page's cookie


@pytest.mark.parametrize(
    ("base_url", "headers", "secure"),
    [
        ("http://127.0.0.1", {}, False),
        ("https://promo.example.com", {}, True),
        ("http://10.0.0.7", {"X-Forwarded-Proto": "https"}, True),  # TLS ended by a proxy
        ("http://10.0.0.7", {"X-Forwarded-Proto": "https, http"}, True),
        ("http://10.0.0.7", {"X-Forwarded-Proto": "http"}, False),
    ],
)
def test_the_page_cookie_is_secure_whenever_the_browser_used_https(
    ring: KeyRing, base_url: str, headers: dict[str, str], secure: bool
) -> None:
    """The cookie holds a session: a browser must never send it over plain HTTP once it
    reached the page over HTTPS, also when a proxy in front ends TLS."""
    state = ApiState(holder=ServiceHolder(), keyring=ring, metrics=Metrics())
    client = TestClient(create_api(lambda: state), base_url=base_url)
    login = client.post(
        f"/sellers/{SELLER}/login",
        data={"key": SELLER_KEY},
        headers=headers,
        follow_redirects=False,
    )
    assert login.status_code == 303
    attributes = [a.strip().lower() for a in login.headers["set-cookie"].split(";")]
    assert ("secure" in attributes) is secure
    assert {"httponly", "samesite=strict", "path=/"} <= set(attributes)
