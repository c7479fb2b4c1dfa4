"""A fitted marketplace shared by the serving tests that need the real `RankingService`
(tenant isolation, key secrecy): the same small synthetic marketplace as
`test_service.py` (300 buyers, 10 weeks, seed 3), fitted once per session."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from recsys.data import load_dataset
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.models.ranker import PromoRanker
from tests.serving.markets import issuing_config


@pytest.fixture(scope="session")
def market_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The marketplace's contract dataset (read only: copy or link it to change it)."""
    out = tmp_path_factory.mktemp("market") / "data"
    generate(SyntheticConfig(buyers=300, weeks=10, seed=3), out)
    return out


@pytest.fixture(scope="session")
def market_ranker(market_data: Path) -> PromoRanker:
    return PromoRanker(issuing_config()).fit(load_dataset(market_data))


@pytest.fixture(scope="session")
def market_now(market_ranker: PromoRanker) -> datetime:
    """An hour after the newest offers start: they are valid, the older ones have ended."""
    assert market_ranker.store_ is not None
    start = market_ranker.store_.offers["start_ts"].max()
    assert isinstance(start, datetime)
    return start + timedelta(hours=1)
