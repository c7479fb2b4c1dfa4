"""`attributes-experiment`: customers known only by attributes, one randomized offer.

The shape of issue 17's third export, at its counts by default: ~126,000 customers in
`buyers.parquet` with seven attributes (`age`, `income_band`, `region`, `tenure_months`,
`channel`, `loyalty_member`, `engagement`) and no purchase history; one store-wide
`percent_off` offer (15 %) randomized 50/50 over ~85,000 of them (an exposure row each:
the offer, or a control row with no offer, propensity 0.5); the only events are the
~1,000 purchases in the week after the campaign, and the redemptions of the offer among
them. The other ~41,000 customers are the ones to decide for.

The process, whose parameters are the ground truth: a customer buys in the week with
probability

    p0 = 0.003 + 0.012 engagement + 0.004 [loyalty member] + 0.002 [income high]

without the offer, and p0 + tau with it, where

    tau = 0.016 [age < 35 and income not high] + 0.008 [channel app]
          + 0.006 engagement [not a loyalty member]

so the effect is learnable from the attributes alone. A treated buyer uses the offer with
probability 0.85; an order is one item at its list price (lognormal over the catalog,
mean about 55), less the discount when the offer is used.

Truth (`truth/`): `offers.parquet` has, for every customer, the exact p0, p1, P(redeem)
and incremental profit of the offer (margin 0.35 x tau x order value - 15 % of the order
x P(redeem) - send cost 0.01); `buyers.parquet` says who was in the experiment (the others
are the ones to decide for) with their true effect; `exposures.parquet` and
`exposure_options.parquet` value the logged decisions.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import Field

from recsys.data.synthetic.profiles.base import (
    ProfileConfig,
    ProfileReport,
    days,
    decision_truth,
    ids,
    sellers_truth,
    timestamps,
    write_dataset,
)

SELLER = "s001"
OFFER = "promo15"
MARGIN = 0.35
DISCOUNT = 0.15
REDEEM = 0.85
ORDER_MU, ORDER_SIGMA = np.log(50.0), 0.45
"""List prices over the catalog: lognormal, mean exp(mu + sigma^2 / 2), about 55."""
INCOMES = ("low", "mid", "high")
REGIONS = ("north", "south", "east", "west")
CHANNELS = ("web", "app", "store")


class AttributesConfig(ProfileConfig):
    """Sizes of the attributes-experiment profile (None: the issue's counts x `scale`)."""

    buyers: int | None = Field(None, ge=4, description="customers (default 126,000)")
    experiment_share: float = Field(
        85_000 / 126_000, gt=0, lt=1, description="share of customers in the experiment"
    )
    treated_share: float = Field(0.5, gt=0, lt=1)
    items: int = Field(50, ge=1, description="items in the catalog")
    outcome_days: int = Field(7, ge=1)
    send_cost: float = Field(0.01, ge=0)


def generate_attributes(
    config: AttributesConfig, out: str, overwrite: bool = False
) -> ProfileReport:
    """Simulate the profile (module docstring) and write it under `out`."""
    began = time.perf_counter()
    rng = np.random.default_rng([config.seed, 29])
    n = config.count(126_000, config.buyers, 4)
    people = _customers(rng, n)
    p0, tau = true_rates(people)
    in_experiment = rng.random(n) < config.experiment_share
    treated = in_experiment & (rng.random(n) < config.treated_share)
    campaign_s = days(28)
    sent = campaign_s + rng.integers(0, 3600, n)
    u = rng.random(n)
    bought = in_experiment & (u < p0 + np.where(treated, tau, 0.0))
    redeemed = bought & treated & (rng.random(n) < REDEEM)
    # An order is one item at its list price (the contract's price x quantity), less the
    # discount when the offer was used.
    prices = np.round(np.exp(rng.normal(ORDER_MU, ORDER_SIGMA, config.items)), 2)
    item = rng.integers(0, config.items, n)
    gross = prices[item]
    paid = np.round(np.where(redeemed, gross * (1 - DISCOUNT), gross), 2)
    buy_s = sent + rng.integers(600, days(config.outcome_days) - 3600, n)
    start = config.start
    codes = np.arange(n)
    who = np.flatnonzero(bought)
    events = pl.DataFrame(
        {
            "code": who,
            "item": item[who],
            "ts": timestamps(start, buy_s[who]),
            "paid": paid[who],
            "qty": np.ones(len(who), dtype=np.int64),
        }
    ).select(
        ids("c", pl.col("code"), 6).alias("buyer_id"),
        ids("i", pl.col("item"), 3).alias("item_id"),
        pl.lit("purchase").alias("event_type"),
        "ts",
        ids("o", pl.col("code"), 6).alias("order_id"),
        pl.col("qty").alias("quantity"),
        pl.col("paid").alias("amount"),
    )
    exp_codes = np.flatnonzero(in_experiment)
    exposures = pl.DataFrame(
        {
            "code": exp_codes,
            "treated": treated[exp_codes],
            "ts": timestamps(start, sent[exp_codes]),
        }
    ).select(
        ids("x", pl.col("code"), 6).alias("exposure_id"),
        ids("c", pl.col("code"), 6).alias("buyer_id"),
        pl.when(pl.col("treated")).then(pl.lit(OFFER)).alias("offer_id"),
        "ts",
        pl.lit(config.treated_share).alias("propensity"),
        pl.lit("ab_test").alias("policy"),
    )
    used = np.flatnonzero(redeemed)
    redemptions = pl.DataFrame(
        {"code": used, "ts": timestamps(start, buy_s[used]), "paid": paid[used]}
    ).select(
        ids("c", pl.col("code"), 6).alias("buyer_id"),
        pl.lit(OFFER).alias("offer_id"),
        "ts",
        ids("x", pl.col("code"), 6).alias("exposure_id"),
        ids("o", pl.col("code"), 6).alias("order_id"),
        pl.col("paid").alias("amount"),
    )
    offers = pl.DataFrame(
        {
            "offer_id": [OFFER],
            "tool": ["percent_off"],
            "seller_id": [SELLER],
            "campaign_id": ["spring"],
            "value": [DISCOUNT],
            "start_ts": timestamps(start, np.array([campaign_s])),
            "end_ts": timestamps(start, np.array([campaign_s + days(config.outcome_days)])),
        }
    )
    items = pl.DataFrame({"code": np.arange(config.items)}).select(
        ids("i", pl.col("code"), 3).alias("item_id"),
        pl.lit(SELLER).alias("seller_id"),
        (pl.lit("k") + (pl.col("code") % 5).cast(pl.String)).alias("category"),
        pl.Series("price", prices),
    )
    signup = campaign_s - (people["tenure_months"] * days(30.4)).astype(np.int64)
    buyers = pl.DataFrame(
        {
            "code": codes,
            "first_seen": timestamps(start, signup),
            "age": people["age"],
            "income": people["income"],
            "region": people["region"],
            "tenure_months": people["tenure_months"],
            "channel": people["channel"],
            "loyalty": people["loyalty"],
            "engagement": people["engagement"],
        }
    ).select(
        ids("c", pl.col("code"), 6).alias("buyer_id"),
        "first_seen",
        "age",
        pl.col("income").replace_strict(list(range(3)), list(INCOMES)).alias("income_band"),
        pl.col("region").replace_strict(list(range(4)), list(REGIONS)).alias("region"),
        pl.col("tenure_months").round(1),
        pl.col("channel").replace_strict(list(range(3)), list(CHANNELS)).alias("channel"),
        pl.when(pl.col("loyalty"))
        .then(pl.lit("yes"))
        .otherwise(pl.lit("no"))
        .alias("loyalty_member"),
        pl.col("engagement").round(3),
    )
    tables = {
        "items": items,
        "events": events,
        "buyers": buyers,
        "offers": offers,
        "exposures": exposures,
        "redemptions": redemptions,
    }
    truth = _truth(codes, p0, tau, in_experiment, treated, config, float(prices.mean()))
    report = ProfileReport("attributes-experiment", Path(out))
    report.notes.append(
        f"{n:,} customers, {int(in_experiment.sum()):,} in the experiment "
        f"({int(treated.sum()):,} offered), {len(who):,} purchases, {len(used):,} redemptions; "
        f"{int((~in_experiment).sum()):,} to decide for"
    )
    report.seconds = time.perf_counter() - began
    return write_dataset(out, tables, truth, report, overwrite)


def _customers(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "age": np.clip(np.round(rng.normal(42, 14, n)), 18, 85).astype(np.int64),
        "income": rng.choice(3, n, p=[0.35, 0.45, 0.2]),
        "region": rng.integers(0, 4, n),
        "tenure_months": rng.gamma(2.0, 14.0, n),
        "channel": rng.choice(3, n, p=[0.5, 0.2, 0.3]),
        "loyalty": rng.random(n) < 0.4,
        "engagement": rng.beta(2, 4, n),
    }


def true_rates(people: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """p0 and tau per customer (module docstring)."""
    loyal = people["loyalty"].astype(float)
    high = (people["income"] == 2).astype(float)
    engagement = people["engagement"]
    p0 = 0.003 + 0.012 * engagement + 0.004 * loyal + 0.002 * high
    young = (people["age"] < 35) & (people["income"] != 2)
    tau = 0.016 * young + 0.008 * (people["channel"] == 1) + 0.006 * engagement * (1 - loyal)
    return p0, tau


def _truth(
    codes: np.ndarray,
    p0: np.ndarray,
    tau: np.ndarray,
    in_experiment: np.ndarray,
    treated: np.ndarray,
    config: AttributesConfig,
    order_value: float,
) -> dict[str, pl.DataFrame]:
    """`order_value`: the expected order (the catalog's mean price: items are bought
    uniformly)."""
    n = len(codes)
    buyer = pl.select(ids("c", pl.Series(codes), 6)).to_series()
    value = np.full(n, order_value)
    p1 = p0 + tau
    p_redeem = REDEEM * p1
    offer = decision_truth(
        buyer,
        pl.Series([OFFER] * n),
        SELLER,
        "percent_off",
        p0,
        p1,
        p_redeem,
        value,
        MARGIN,
        DISCOUNT * value,
        config.send_cost,
    )
    nothing = decision_truth(
        buyer,
        pl.Series([None] * n, dtype=pl.String),
        SELLER,
        "nothing",
        p0,
        p0,
        np.zeros(n),
        value,
        MARGIN,
        np.zeros(n),
        0.0,
    )
    exposure = pl.select(ids("x", pl.Series(codes), 6)).to_series()
    columns = [
        "exposure_id",
        "offer_id",
        "p_purchase_control",
        "p_purchase_treated",
        "p_redeem",
        "profit_control",
        "profit_treated",
        "incremental_profit",
    ]
    keep = pl.Series(in_experiment)
    options = (
        pl.concat([f.with_columns(exposure.alias("exposure_id")) for f in (offer, nothing)])
        .filter(pl.concat([keep, keep]))
        .select(columns)
        .sort("exposure_id", "offer_id", nulls_last=True)
    )
    logged = options.filter(
        pl.col("exposure_id").is_in(exposure.filter(pl.Series(treated)).implode())
        == pl.col("offer_id").is_not_null()
    ).sort("exposure_id")
    buyers = pl.DataFrame(
        {
            "buyer_id": buyer,
            "in_experiment": in_experiment,
            "treated": treated,
            "p_purchase_control": p0,
            "tau": tau,
        }
    )
    return {
        "offers": offer,
        "exposures": logged,
        "exposure_options": options,
        "buyers": buyers,
        "sellers": sellers_truth({SELLER: MARGIN}, config.send_cost),
    }
