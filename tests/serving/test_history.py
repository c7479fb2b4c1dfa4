"""The exposure history behind frequency caps across requests: kept, pruned, bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from serving.history import ExposureHistory

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_each_unit_gets_its_buyer_offers_and_old_ones_are_dropped() -> None:
    history = ExposureHistory(keep=timedelta(days=7))
    history.add(
        [
            ("b1", "o1", "percent_off", T0),
            ("b1", "o2", None, T0 + timedelta(days=5)),
            ("b2", "o3", "fixed_amount", T0 + timedelta(days=6)),
        ]
    )
    day8 = T0 + timedelta(days=8)
    # b1's first offer is older than 7 days at day 8: gone; b9 has nothing.
    assert history.recent("b1", T0, day8) == [("o2", None)]
    assert history.recent("b2", T0, day8) == [("o3", "fixed_amount")]
    assert history.recent("b9", T0, day8) == []
    assert history.recent("b1", T0, T0 + timedelta(days=1)) == []  # forgotten, not hidden
    # The window is [since, until): the offer at day 6 is not in [day 6 + 1 s, day 8).
    assert history.recent("b2", T0 + timedelta(days=6, seconds=1), day8) == []


def test_per_buyer_and_buyer_limits_keep_the_newest() -> None:
    history = ExposureHistory(per_buyer=2, max_buyers=2)
    history.add([("b1", f"o{i}", None, T0 + timedelta(hours=i)) for i in range(3)])
    assert [o for o, _ in history.recent("b1", T0, T0 + timedelta(hours=5))] == ["o1", "o2"]
    history.add([("b2", "o9", None, T0), ("b3", "o9", None, T0)])  # b1 is the oldest
    assert len(history) == 2
    assert history.recent("b1", T0, T0 + timedelta(hours=5)) == []


def test_seed_reads_recent_offers_of_an_exposures_log() -> None:
    exposures = pl.DataFrame(
        {
            "buyer_id": ["b1", "b1", "b2"],
            "offer_id": ["o1", None, "o2"],  # a "nothing" decision is not an offer
            "ts": [T0, T0, T0 - timedelta(days=60)],  # b2's is too old to keep
        },
        schema={"buyer_id": pl.String, "offer_id": pl.String, "ts": pl.Datetime("us", "UTC")},
    )
    history = ExposureHistory(keep=timedelta(days=30))
    assert history.seed(exposures, {"o1": "free_shipping"}, T0 + timedelta(days=1)) == 1
    day1 = T0 + timedelta(days=1)
    assert history.recent("b1", T0 - timedelta(days=60), day1) == [("o1", "free_shipping")]
    assert history.recent("b2", T0 - timedelta(days=60), day1) == []


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="per_buyer"):
        ExposureHistory(per_buyer=0)
