"""`ServedMarket`: the simulator answering an outside policy, checked against its truth."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data import ContractError, load_dataset
from recsys.data.synthetic import SyntheticConfig
from recsys.data.synthetic.served import ServedMarket
from recsys.data.synthetic.truth import expected_outcomes

HISTORY = 8


def market(buyers: int = 400) -> ServedMarket:
    config = SyntheticConfig(
        buyers=buyers, weeks=HISTORY + 2, wave_weeks=(HISTORY, HISTORY + 1), seed=4,
        manual_campaign_week=HISTORY - 2,
    )  # fmt: skip
    out = ServedMarket(config)
    out.run(HISTORY)
    return out


def slot_policy(m: ServedMarket, slot: int = 1) -> Callable[[datetime, pl.DataFrame], pl.DataFrame]:
    """Every request gets its seller's `slot` offer of the week, except every third
    request, held out (so the arms are not random, but the truth is known per buyer)."""

    def decide(at: datetime, requests: pl.DataFrame) -> pl.DataFrame:
        codes = m.offers.for_campaign(m.config.waves.index(m.week - 1))
        by_code = {code: offer for offer, code in m._offer_code.items()}
        seller = [m._seller_code[s] for s in requests["seller_id"]]
        control = np.arange(requests.height) % 3 == 0
        return requests.with_columns(
            pl.Series("exposure_id", [f"d{m.week}-{i}" for i in range(requests.height)]),
            pl.Series(
                "offer_id",
                [
                    None if c else by_code[int(codes[s, slot])]
                    for c, s in zip(control, seller, strict=True)
                ],
                dtype=pl.String,
            ),
            pl.lit(at).alias("ts"),
            pl.Series("propensity", np.where(control, 1 / 3, 2 / 3)),
            pl.lit("test").alias("policy"),
            pl.Series("arm", np.where(control, "control", "treated")),
        )  # fmt: skip

    return decide


def write_log(served: pl.DataFrame, log: Path) -> Path:
    """The served decisions as a decision log directory (one exposures part)."""
    (log / "exposures").mkdir(parents=True)
    served.select(
        "exposure_id", "buyer_id", "offer_id", "ts", "propensity", "policy", "seller_id", "arm"
    ).write_parquet(log / "exposures" / "part-1.parquet")
    return log


def test_served_decisions_become_a_valid_dataset_with_their_redemptions(tmp_path: Path) -> None:
    m = market()
    served = m.serve_week(slot_policy(m))
    assert served.height > 200 and set(served["arm"]) == {"control", "treated"}
    assert (served.filter(pl.col("arm") == "control")["incremental_profit"] == 0).all()
    data = m.write(tmp_path / "data")
    with pytest.raises(ContractError, match="exposure_id"):
        load_dataset(data)  # its served redemptions name the decision log's ids
    ds = load_dataset(data, [write_log(served, tmp_path / "log")])
    assert ds.exposures is not None and ds.redemptions is not None
    decided = set(served["exposure_id"])
    mine = ds.redemptions.filter(pl.col("exposure_id").is_in(list(decided)))
    assert mine.height > 0  # the served offers were redeemed, naming the decisions
    given = served.filter(pl.col("offer_id").is_not_null())
    assert set(mine["offer_id"]) <= set(given["offer_id"])


def test_each_arm_buys_at_its_true_rate(tmp_path: Path) -> None:
    m = market(buyers=10_000)
    served = m.serve_week(slot_policy(m, slot=0))  # store-wide percent off
    ds = load_dataset(m.write(tmp_path / "data"), [write_log(served, tmp_path / "log")])
    at = served["ts"][0]
    bought = (
        ds.events.filter(
            (pl.col("event_type") == "purchase")
            & (pl.col("ts") >= at)
            & (pl.col("ts") < at + timedelta(days=7))
        )
        .join(ds.items.select("item_id", "seller_id"), on="item_id")
        .select("buyer_id", "seller_id")
        .unique()
        .with_columns(pl.lit(1.0).alias("bought"))
    )
    outcome = served.join(bought, on=["buyer_id", "seller_id"], how="left").with_columns(
        pl.col("bought").fill_null(0.0)
    )
    for (arm,), group in outcome.group_by("arm"):
        p = group["p_purchase_treated"].to_numpy()  # = p_purchase_control for control
        observed, expected = group["bought"].mean(), p.mean()
        se = np.sqrt((p * (1 - p)).sum()) / group.height
        assert abs(observed - expected) < 4 * se, (arm, observed, expected)  # type: ignore[operator]
        if arm == "treated":
            # The offers' effect is there: without it the rate would be P(control).
            without = group["p_purchase_control"].mean()
            assert observed - without > 3 * se, (observed, without, se)  # type: ignore[operator]


def test_the_true_value_of_a_choice_is_the_truth_functions() -> None:
    m = market()
    m.serve_week(slot_policy(m))
    codes = m.offers.for_campaign(1)
    ids = {code: offer for offer, code in m._offer_code.items()}
    rows = np.arange(0, 40)
    seller = m.buyers.share[rows].argmax(axis=1)
    choices = pl.DataFrame(
        {
            "buyer_id": [m._buyer_ids[r] for r in rows],
            "offer_id": [
                None if r % 4 == 0 else ids[int(codes[s, 2])]
                for r, s in zip(rows, seller, strict=True)
            ],
        },
        schema={"buyer_id": pl.String, "offer_id": pl.String},
    )  # fmt: skip
    value = m.true_value(choices)
    given = rows % 4 != 0
    truth = expected_outcomes(
        m.buyers, m.catalog, m.offers, rows[given], m.buyers.stage[rows[given]],
        codes[seller[given], 2], m.config.send_cost, m.config.effects,
    )  # fmt: skip
    assert np.all(value[~given] == 0)
    assert np.allclose(value[given], truth.profit_treated - truth.profit_control)


def test_a_week_without_offers_or_a_bad_answer_is_refused() -> None:
    m = ServedMarket(SyntheticConfig(buyers=200, weeks=8, wave_weeks=(7,), seed=1))
    with pytest.raises(ValueError, match="wave_weeks"):
        m.serve_week(lambda at, r: r)
    m.run(7)
    with pytest.raises(ValueError, match="every request"):
        m.serve_week(lambda at, r: r.head(0).with_columns(pl.lit("x").alias("exposure_id")))
