"""Seller money terms read from a synthetic marketplace's truth, and applied to a config."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recsys.data.seller_terms import (
    SELLERS_TRUTH,
    SellerTerms,
    known_seller_terms,
    seller_terms,
)
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.models.ranker import RankerConfig


def write_sellers(root: Path, frame: pl.DataFrame) -> Path:
    (root / SELLERS_TRUTH).parent.mkdir(parents=True)
    frame.write_parquet(root / SELLERS_TRUTH)
    return root


def test_a_generated_marketplace_names_the_send_cost_its_truth_charges(tmp_path: Path) -> None:
    config = SyntheticConfig.from_dict({"buyers": 60, "seed": 3, "send_cost": 0.07})
    generate(config, tmp_path / "m")
    terms = seller_terms(tmp_path / "m")
    assert terms is not None
    assert terms.send_cost == pytest.approx(0.07)
    assert terms.margins and all(0 < m < 1 for m in terms.margins.values())


def test_real_data_has_no_terms_and_old_truth_no_send_cost(tmp_path: Path) -> None:
    assert seller_terms(tmp_path) is None
    with pytest.raises(FileNotFoundError, match=r"truth/sellers\.parquet is missing"):
        known_seller_terms(tmp_path)
    old = write_sellers(tmp_path / "old", pl.DataFrame({"seller_id": ["s1"], "margin": [0.4]}))
    assert seller_terms(old) == SellerTerms(margins={"s1": 0.4}, send_cost=None)


def test_config_takes_the_terms_unless_it_keeps_what_it_gives() -> None:
    terms = SellerTerms(margins={"s1": 0.4}, send_cost=0.02)
    filled = RankerConfig().with_seller_terms(terms)
    assert (filled.seller_margins, filled.policy.send_cost) == ({"s1": 0.4}, 0.02)
    given = RankerConfig.from_dict({"seller_margins": {"s2": 0.1}, "policy": {"send_cost": 0}})
    assert given.with_seller_terms(terms).policy.send_cost == 0.02
    kept = given.with_seller_terms(terms, keep_given=True)
    assert (kept.seller_margins, kept.policy.send_cost) == ({"s2": 0.1}, 0.0)
    unknown = RankerConfig().with_seller_terms(SellerTerms(margins={}, send_cost=None))
    assert unknown.policy.send_cost == RankerConfig().policy.send_cost
