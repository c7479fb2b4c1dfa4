"""The seller page's measured-lift card in headless Chromium, over the plain FastAPI app
(uvicorn in a thread, a stand-in service, a hand-made incrementality report)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from serving.app import ApiState, ServiceHolder, create_api
from serving.auth import ApiKeyEntry, KeyRing, hash_key
from serving.incrementality import IncrementalityBoard
from serving.metrics import Metrics
from tests.serving.test_app import OTHER_KEY, SELLER_KEY, FakeService
from tests.serving.test_serve_app import SCREENSHOT_DIR, chromium

pytestmark = pytest.mark.slow
THIRD_KEY = "third-key-0123456789abcdefgh"


def _row(key: str, metric: str, lift: float, low: float, high: float) -> dict[str, object]:
    return {
        "level": "seller", "key": key, "metric": metric, "n_treated": 950, "n_control": 50,
        "treated": 1.0 + lift, "control": 1.0, "lift": lift, "se": 0.1, "low": low,
        "high": high, "relative": lift, "variance_reduction": 0.1,
    }  # fmt: skip


REPORT = {
    "generated_at": "2026-05-01T00:00:00+00:00",
    "window_days": 28.0,
    "level": 0.9,
    "units": {"treated": 950, "control": 50},
    "rows": [
        _row("s1", "purchase_rate", 0.0125, 0.001, 0.024),
        _row("s1", "revenue", 3.5, 0.5, 6.5),
        _row("s1", "profit", 0.75, -0.25, 1.75),
        _row("s2", "profit", 9.99, 8.0, 12.0),
    ],
    "notes": [],
}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    report = tmp_path_factory.mktemp("lift") / "incrementality.json"
    report.write_text(json.dumps(REPORT))
    state = ApiState(
        holder=ServiceHolder(service=FakeService(), version="7"),
        keyring=KeyRing(
            [
                ApiKeyEntry(key_hash=hash_key(SELLER_KEY), seller_id="s1"),
                ApiKeyEntry(key_hash=hash_key(OTHER_KEY), seller_id="s2"),
                ApiKeyEntry(key_hash=hash_key(THIRD_KEY), seller_id="s3"),
            ]
        ),
        metrics=Metrics(),
        incrementality=IncrementalityBoard(report),
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_api(lambda: state), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def signed_in(browser: Any, url: str, seller: str, key: str, lift: str) -> Any:
    """A new page on `seller`'s page, signed in with `key`, once its lift card says
    `lift` ("shown" or "none")."""
    page = browser.new_page()
    page.goto(f"{url}/sellers/{seller}")
    page.fill("#key", key)
    page.click("#sign-in")
    page.wait_for_selector(f'body[data-lift="{lift}"]', timeout=60_000)
    return page


def test_the_seller_sees_its_measured_lift_card_and_chart(url: str) -> None:
    with chromium() as browser:
        page = signed_in(browser, url, "s1", SELLER_KEY, "shown")
        assert "vs holdout" in page.inner_text("#lift-section h2")
        profit = page.inner_text("#lift-profit")
        assert "+0.75" in profit and "90% interval" in profit and "holdout 50" in profit
        assert "+1.25 pts" in page.inner_text("#lift-purchase_rate")
        assert "9.99" not in page.inner_text("#lift-section")  # seller s2's figure
        assert page.locator("#lift-chart rect").count() == 3
        page.screenshot(path=str(SCREENSHOT_DIR / "seller-lift-card.png"), full_page=True)
        refused = page.goto(f"{url}/sellers/s2")
        assert refused is not None and refused.status == 403


def test_each_seller_sees_its_own_figures_or_why_there_are_none(url: str) -> None:
    with chromium() as browser:
        page = signed_in(browser, url, "s2", OTHER_KEY, "shown")
        assert "+9.99" in page.inner_text("#lift-profit")
        assert page.locator("#lift-revenue").count() == 0  # s2's report has profit only
        page = signed_in(browser, url, "s3", THIRD_KEY, "none")
        assert page.locator("#lift .card").count() == 0
        assert "no holdout-served buyers" in page.inner_text("#lift-note")
