"""The Ray Serve app on loopback, end to end: a registered champion, real HTTP requests,
the decision log on disk, and a champion swapped while requests flow."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import mlflow
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from recsys.data import load_dataset
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.models.ranker import PromoRanker, RankerConfig
from serving.decision_log import read_log
from training.registry import CHAMPION, register
from training.tracking import log_ranker_model

pytestmark = pytest.mark.slow

SELLER_KEY = "serve-test-seller-key-000000000"
ADMIN_KEY = "serve-test-admin-key-0000000000"
MODEL = "promo-ranker"
OTHER_SELLERS = ("s001", "s002", "s003", "s004")
SEND_COST = 0.02
MAX_BODY = 200_000
"""The serve config's body limit here, below the default, to see that replicas apply it."""
BATCHING = {"max_batch_size": 6, "batch_wait_timeout_s": 0.01}
"""The serve config's batching here, not the default, to see that replicas apply it."""
APP_NAME = "promo-test"


def seller_key(seller: str) -> str:
    return SELLER_KEY if seller == "s000" else f"serve-test-key-of-{seller}-00000000"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _register(client: MlflowClient, experiment: str, ranker: PromoRanker, tmp: Path) -> str:
    """Log `ranker` as the pyfunc model of a new run and register it; its version."""
    with mlflow.start_run(experiment_id=experiment) as run:
        model_uri = log_ranker_model(ranker)
    return register(client, MODEL, model_uri, run.info.run_id)


class App:
    def __init__(self, url: str, root: Path, client: MlflowClient, market: Path) -> None:
        self.url, self.root, self.client, self.market = url, root, client, market
        self.experiment = client.create_experiment("serve-test")
        self.log_dir = root / "decisions"

    def post(self, path: str, body: Any, key: str | None = SELLER_KEY) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.post(self.url + path, json=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    import ray
    from ray import serve

    from serving.app import app_builder

    root = tmp_path_factory.mktemp("serve")
    market = root / "market"
    generate(SyntheticConfig(buyers=600, seed=4), market)
    sellers = pl.read_parquet(market / "truth" / "sellers.parquet")
    # Offers valued by response (no policy learned): on 600 buyers the learned policy may
    # rightly send nothing, and the page's campaigns, budget and CSV need a plan to show.
    config = RankerConfig(
        seller_margins=dict(zip(sellers["seller_id"], sellers["margin"], strict=True)),
        learning={"enabled": False},
    )
    ranker = PromoRanker(config).fit(load_dataset(market))

    uri = f"sqlite:///{root / 'm.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    port = _free_port()
    state = App(f"http://127.0.0.1:{port}", root, client, market)
    version = _register(client, state.experiment, ranker, root / "v1")
    client.set_registered_model_alias(MODEL, CHAMPION, version)

    more = ",".join(f"{seller_key(s)}:{s}" for s in OTHER_SELLERS)
    os.environ["RECSYS_API_KEYS"] = f"{SELLER_KEY}:s000,{ADMIN_KEY}:*,{more}"
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, address="local")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        app_builder(
            {
                "model_uri": f"models:/{MODEL}@champion",
                "tracking_uri": uri,
                "poll_seconds": 1.0,
                "decision_log_dir": str(state.log_dir),
                # Decide as of the last campaign of the synthetic history, when offers
                # were valid (they have all ended by the real clock).
                "as_of": _last_campaign(market).isoformat(),
                # Sending costs something (an e-mail, an SMS), so a seller's budget binds
                # even on a plan of reminders.
                "policy": {"send_cost": SEND_COST},
                "max_body_bytes": MAX_BODY,
                "batching": BATCHING,
            }
        ),
        name=APP_NAME,
        route_prefix="/",
    )
    yield state
    serve.shutdown()
    if started:
        ray.shutdown()
    os.environ.pop("RECSYS_API_KEYS", None)


def _last_campaign(market: Path) -> datetime:
    offers = pl.read_parquet(market / "offers.parquet")
    start = offers["start_ts"].max()
    assert isinstance(start, datetime)
    return start + timedelta(hours=1)


def _known_buyer(app: App) -> str:
    events = pl.read_parquet(app.market / "events.parquet")
    return str(events.filter(pl.col("event_type") == "purchase")["buyer_id"].sort()[0])


def test_ranks_known_and_unknown_buyers(app: App) -> None:
    for buyer, cold in ((_known_buyer(app), False), ("never-seen-buyer", True)):
        response = app.post("/v1/rank", {"buyer_id": buyer, "k": 3})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == "1"
        assert body["buyer"]["cold_start"] is cold
        assert len(body["offers"]) <= 3
        for offer in body["offers"]:
            assert 0 < offer["propensity"] <= 1
            assert offer["seller_id"] == "s000"  # the key's seller only
            assert offer["reasons"]
        if not body["offers"]:
            assert body["no_offer_reason"]


def test_keys_are_required_and_scoped(app: App) -> None:
    assert app.post("/v1/rank", {"buyer_id": "b"}, key=None).status_code == 401
    response = httpx.get(
        app.url + "/v1/sellers/s001/campaigns",
        headers={"Authorization": f"Bearer {SELLER_KEY}"},
        timeout=60,
    )
    assert response.status_code == 403


def test_the_configured_body_limit_reaches_the_replicas(app: App) -> None:
    requests = [{"buyer_id": f"buyer-{i:020d}", "k": 1} for i in range(8000)]  # ~360 kB
    response = app.post("/v1/rank/batch", {"requests": requests}, key=ADMIN_KEY)
    assert response.status_code == 413
    assert f"{MAX_BODY:,}" in response.text or str(MAX_BODY) in response.text
    small = app.post("/v1/rank/batch", {"requests": requests[:5]}, key=ADMIN_KEY)
    assert small.status_code == 200, small.text


def test_the_configured_batching_reaches_the_replicas(app: App) -> None:
    """The serve config's batching is the deployment's user_config, which the replica's
    `reconfigure` applies to the batch queue of /v1/rank."""
    from ray import serve

    from serving.config import BatchingConfig
    from serving.deployment import DEPLOYMENT_NAME

    handle = serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=APP_NAME)
    assert handle.batching.remote().result(timeout_s=60) == BatchingConfig(**BATCHING)


def test_the_seller_page_in_headless_chromium(app: App, tmp_path: Path) -> None:
    """A seller signs in, sees campaigns with numbers, lowers the budget and sees the plan
    change, downloads a campaign's CSV; another seller's page stays closed."""
    # The demo seller: the one whose unlimited plan spends the most, so a smaller
    # budget must change it.
    spends = {}
    for seller in ("s000", *OTHER_SELLERS):
        answer = httpx.get(
            f"{app.url}/v1/sellers/{seller}/campaigns",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=60,
        )
        if answer.status_code == 200:
            spends[seller] = answer.json()["spend"]
    seller = max(spends, key=lambda s: spends[s])
    assert spends[seller] > 0, f"no seller's plan spends anything: {spends}"
    other = next(s for s in spends if s != seller)
    with chromium() as browser:
        page = browser.new_page(accept_downloads=True)
        first = page.goto(f"{app.url}/sellers/{seller}")
        assert first is not None and first.status == 401
        page.fill("#key", seller_key(seller))
        page.click("#sign-in")
        page.wait_for_selector('body[data-loaded="1"]', timeout=120_000)

        rows = page.locator("#campaigns tbody tr")
        assert rows.count() >= 1
        profit = rows.first.locator("td").nth(7).inner_text()
        assert re.search(r"\d", profit), profit
        spend_before = _money(page.inner_text("#plan-spend .value"))
        assert spend_before == pytest.approx(spends[seller], abs=0.01)
        assert page.locator("#profit-chart rect").count() == rows.count()
        assert page.locator("#gain-chart path.curve").count() == 1
        assert page.locator("#comparison tbody tr[data-kind=coupon_to_all]").count() >= 1

        budget = round(spend_before / 3, 2)
        page.fill("#budget", str(budget))
        page.click("#apply")
        page.wait_for_selector('body[data-loaded="2"]', timeout=120_000)
        spend_after = _money(page.inner_text("#plan-spend .value"))
        assert spend_after <= budget + 0.01
        assert spend_after != spend_before
        assert "a budget of" in page.inner_text("#status")

        with page.expect_download() as download:
            page.locator("#campaigns a.csv").first.click()
        saved = tmp_path / "targets.csv"
        download.value.save_as(saved)
        targets = pl.read_csv(saved)
        assert targets.columns[:2] == ["buyer_id", "offer_id"]
        buyers_cell = page.locator("#campaigns tbody tr").first.locator("td").nth(2)
        assert targets.height == int(buyers_cell.inner_text().split()[0])
        page.screenshot(path=str(SCREENSHOT_DIR / "seller-page.png"), full_page=True)

        refused = page.goto(f"{app.url}/sellers/{other}")
        assert refused is not None and refused.status == 403
        assert page.locator("#campaigns").count() == 0


SCREENSHOT_DIR = Path(os.environ.get("RECSYS_SCREENSHOT_DIR", "/tmp"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's headless Chromium under Playwright, with no network beyond loopback."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (make browser)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


def _money(text: str) -> float:
    return float(re.sub(r"[^0-9.\-]", "", text))


def test_decisions_and_outcomes_reach_the_decision_log(app: App) -> None:
    events = pl.read_parquet(app.market / "events.parquet")
    buyers = events["buyer_id"].unique().sort().to_list()
    for buyer in buyers[:200]:  # the first buyer the engine gives an offer to
        ranked = app.post("/v1/rank", {"buyer_id": buyer, "k": 1}).json()
        if ranked["offers"]:
            break
    assert ranked["offers"], "no buyer was offered anything"
    decision = ranked["decision_id"]
    outcome = {"decision_id": decision, "type": "redemption", "amount": 42.0}
    done = app.post("/v1/outcomes", {"outcomes": [outcome]}, key=ADMIN_KEY)
    assert done.status_code == 200, done.text
    assert done.json()["accepted"] == 1
    deadline = time.monotonic() + 30
    while True:
        tables = read_log(app.log_dir)
        exposures, redemptions = tables["exposures"], tables["redemptions"]
        if decision in exposures["exposure_id"].to_list() and redemptions.height:
            break
        assert time.monotonic() < deadline, "decision or outcome never reached the log"
        time.sleep(0.5)
    row = exposures.filter(pl.col("exposure_id") == decision).row(0, named=True)
    assert row["buyer_id"] == buyer and row["policy"] == "1"
    assert 0 < row["propensity"] <= 1
    assert decision in redemptions["exposure_id"].to_list()


def test_a_new_champion_is_swapped_in_while_requests_flow(app: App) -> None:
    failures: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                r = http.post(
                    app.url + "/v1/rank",
                    json={"buyer_id": "b0000001"},
                    headers={"Authorization": f"Bearer {SELLER_KEY}"},
                )
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    versions.append(r.json()["model_version"])

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        dataset = load_dataset(app.market)
        second = PromoRanker(RankerConfig.from_dict({"mf": {"factors": 8}})).fit(dataset)
        version = _register(app.client, app.experiment, second, app.root / "v2")
        app.client.set_registered_model_alias(MODEL, CHAMPION, version)
        deadline = time.monotonic() + 90
        while not versions or versions[-1] != version:
            assert time.monotonic() < deadline, f"still serving {versions[-1:]}"
            time.sleep(0.5)
        time.sleep(1.0)  # keep requests flowing across the swap
    finally:
        stop.set()
        worker.join()
    assert not failures, failures[:3]
    assert "1" in versions and version in versions
