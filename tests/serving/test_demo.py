"""The demo's serving step without Ray: its files and keys, the HTTP tour through FastAPI's
test client over a real `RankingService`, and Serve and Ray stopped when a start fails."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from recsys.data import load_dataset
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.models.ranker import PromoRanker
from serving import demo
from serving.app import ApiState, ServiceHolder, create_api
from serving.auth import KeyRing
from serving.decision_log import DecisionLog, read_log
from serving.metrics import Metrics
from serving.service import RankingService
from tests.serving.markets import issuing_config

URI = "sqlite:////somewhere/mlflow.db"
MOMENT = datetime(2026, 5, 25, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo directory with a small synthetic marketplace under data/."""
    root = tmp_path_factory.mktemp("demo")
    generate(SyntheticConfig(buyers=300, weeks=10, seed=3), root / "data")
    return root


def test_market_decides_inside_the_last_campaign(out: Path) -> None:
    market = demo.read_market(out / "data")
    offers = pl.read_parquet(out / "data" / "offers.parquet")
    last = offers.filter(pl.col("start_ts") == offers["start_ts"].max())
    assert last["start_ts"][0] < market.as_of < last["end_ts"].min()
    assert market.sellers == sorted(last["seller_id"].drop_nulls().unique())
    assert market.buyers and market.buyers == sorted(market.buyers)


def test_demo_files_hold_hashes_in_the_config_and_raw_keys_for_the_owner_only(
    tmp_path: Path,
) -> None:
    keys = demo.DemoKeys.new("s001")
    assert keys.admin != keys.seller and len(keys.admin) >= 32
    config = demo.demo_config(tmp_path, URI, keys, as_of=MOMENT)
    keys_path = tmp_path / demo.KEYS_FILE
    keys_path.write_text("stale")
    keys_path.chmod(0o644)  # an old file's mode does not survive
    config_path, written = demo.write_demo_files(tmp_path, config, keys)
    assert written == keys_path

    assert stat.S_IMODE(keys_path.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in keys_path.read_text().splitlines() if "=" in line)
    assert values == {
        "DEMO_ADMIN_KEY": keys.admin,
        "DEMO_SELLER_KEY": keys.seller,
        "DEMO_SELLER_ID": "s001",
    }

    text = config_path.read_text()
    assert keys.admin not in text and keys.seller not in text
    loaded = demo.ServeConfig.from_yaml(config_path)
    assert loaded == config
    assert loaded.tracking_uri == URI and loaded.as_of == MOMENT
    assert loaded.decision_log_dir == (tmp_path / "decision_log").resolve()
    ring = KeyRing(loaded.api_keys)
    assert ring.authenticate(f"Bearer {keys.admin}").admin
    assert ring.authenticate(f"Bearer {keys.seller}").seller_id == "s001"

    steps = demo.next_steps(config_path, keys_path, keys, "b0000001")
    assert f"recsys serve --config {config_path}" in steps
    assert keys.admin in steps and keys.seller in steps and str(keys_path) in steps
    assert "http://127.0.0.1:8000/sellers/s001" in steps


@pytest.fixture(scope="module")
def api(out: Path) -> Iterator[tuple[TestClient, demo.DemoKeys, demo.Market, Path]]:
    """The HTTP API over a real service of a fitted model, as the demo's Serve app is."""
    market = demo.read_market(out / "data")
    keys = demo.DemoKeys.new(market.sellers[0])
    config = demo.demo_config(out, URI, keys, market.as_of)
    ranker = PromoRanker(issuing_config()).fit(load_dataset(out / "data"))
    log = DecisionLog(config.decision_log_dir).start()
    service = RankingService(
        ranker,
        model_version="1",
        decision_log=log,
        policy=config.serving_policy(ranker.config.policy),
        clock=lambda: market.as_of,
    )
    state = ApiState(
        holder=ServiceHolder(service=service, version="1"),
        keyring=KeyRing(config.api_keys),
        metrics=Metrics(),
    )
    with TestClient(create_api(lambda: state)) as http:
        yield http, keys, market, Path(config.decision_log_dir)
    log.close()


def test_tour_calls_every_endpoint_and_reads_the_log(api: Any) -> None:
    http, keys, market, log_dir = api
    lines: list[str] = []
    demo.tour(http, keys, market, log_dir, lines.append, wait_for_log_s=10)
    text = "\n".join(lines)

    assert "GET /readyz: ok, model version 1" in text
    assert f"{demo.BATCH_BUYERS} known buyers in one call" in text
    assert "cold start no" in text and "cold start yes" in text  # known, then unknown
    assert "#1 " in text and "propensity" in text and "expected profit" in text
    assert "1 accepted" in text
    assert f"GET /v1/sellers/{keys.seller_id}/campaigns" in text
    assert "recommended campaigns" in text and "coupon to every customer" in text
    assert f"seller page http://testserver/sellers/{keys.seller_id}: sign-in 303" in text
    assert "page 200" in text
    saved = next(log_dir.parent.glob(f"targets-{keys.seller_id}-*.csv"))
    assert saved.read_text().startswith("buyer_id,offer_id")
    assert f"campaigns (seller {keys.seller_id}'s key): 403" in text
    assert "without a key: 401" in text
    assert "not written yet" not in text

    tables = read_log(log_dir)
    # The batch, the known buyer, the unknown one; the outcome of the known buyer.
    assert tables["exposures"].height == demo.BATCH_BUYERS + 2
    assert tables["redemptions"].height == 1
    assert f"exposures/: {demo.BATCH_BUYERS + 2} decisions" in text
    assert "redemptions/: 1 outcome" in text
    assert keys.admin not in text and keys.seller not in text  # keys print only at the end


def test_serve_and_ray_are_stopped_when_the_app_fails_to_start(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray
    from ray import serve

    calls: list[str] = []

    def failing_run(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the app failed to start")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append("ray.init"))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("ray.shutdown"))
    monkeypatch.setattr(serve, "start", lambda **kwargs: calls.append("serve.start"))
    monkeypatch.setattr(serve, "run", failing_run)
    monkeypatch.setattr(serve, "shutdown", lambda: calls.append("serve.shutdown"))
    level = logging.getLogger("ray.serve").level

    with pytest.raises(RuntimeError, match="failed to start"):
        demo.serve_step(out, lambda line: None, tracking_uri=URI)
    assert calls == ["ray.init", "serve.start", "serve.shutdown", "ray.shutdown"]
    assert logging.getLogger("ray.serve").level == level
    assert (out / demo.CONFIG_FILE).is_file() and (out / demo.KEYS_FILE).is_file()
