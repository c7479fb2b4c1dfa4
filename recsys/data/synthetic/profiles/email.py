"""`email-experiment`: one e-mail wave, two reminders and a control third.

The shape of issue 17's second export, at its counts by default: ~64,000 customers of
one retailer, each with one or two past purchases over a handful of items (8); buyer
attributes `region_type`, `channel` and `new_customer`; two item-scoped e-mail
reminders (tool `reminder`: no discount, no redemptions table) sent in **one** wave,
with a third of the customers held out as control: every customer has one exposure row,
an offer or none, with propensity 1/3. The outcomes are `view` events without an item
(a click from the e-mail, a visit) and `purchase` events in the two weeks after.

The process, whose parameters are the ground truth. A customer is interested in the
first reminder's items (0-2), the second's (3-5) or neither, and bought one or two of
their items before (new customers: one, in the last 90 days). In the 14 days after the
wave they buy with probability

    p0 = 0.03 + 0.02 [two past purchases] + 0.015 [app] - 0.01 [rural] + 0.01 [new]

without an e-mail, and p0 + tau with one, where (clipped so that 0 <= p <= 1)

    tau_first  = 0.05 [interested in its items] + 0.03 [new] - 0.01 [store]
    tau_second = 0.04 [interested in its items] + 0.03 [store] - 0.005 [new].

The effects are visible in the data: interest through the past purchases of an offer's
items, the rest through the attributes. A purchase is one line of a wanted item (a
caused one of the offer's items); an e-mail is clicked with probability 0.25 and every
buyer views before buying.

Truth (`truth/`): `offers.parquet` has, per customer and reminder, the exact p0, p1 and
incremental profit (margin 0.4 x tau x expected order value - send cost 0.005): which
reminder, if any, to send to whom next; `exposures.parquet` the same for the logged
decision, and `exposure_options.parquet` for every option of it (each reminder and
nothing), so an off-policy estimate on the logged wave can be checked against its exact
value; `buyers.parquet` the latent interest.
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
MARGIN = 0.4
PRICES = np.array([12.0, 15.0, 18.0, 25.0, 30.0, 9.0, 22.0, 40.0])
CATEGORIES = ("garden", "garden", "garden", "kitchen", "kitchen", "kitchen", "bath", "bath")
SCOPES = ((0, 3), (3, 6))
"""Item ranges [start, end) of the two reminders."""
REGIONS = ("urban", "suburban", "rural")
CHANNELS = ("web", "store", "app")
NONE = 2
"""Interest code of a customer interested in neither reminder's items."""
CLICK = 0.25


class EmailConfig(ProfileConfig):
    """Sizes of the email-experiment profile (None: the issue's counts times `scale`)."""

    buyers: int | None = Field(None, ge=3, description="customers (default 64,000)")
    history_days: int = Field(330, ge=100, description="days of purchase history")
    outcome_days: int = Field(14, ge=1, description="days of outcomes after the wave")
    send_cost: float = Field(0.005, ge=0)


def generate_email(config: EmailConfig, out: str, overwrite: bool = False) -> ProfileReport:
    """Simulate the profile (module docstring) and write it under `out`."""
    began = time.perf_counter()
    rng = np.random.default_rng([config.seed, 23])
    n = config.count(64_000, config.buyers, 3)
    people = _customers(rng, n, config)
    wave_s = days(config.history_days + 5)
    p0, tau = true_rates(people)
    arm = rng.integers(0, 3, n)  # 0, 1: a reminder; 2: control
    sent = rng.integers(0, 7200, n)
    treated = arm < 2
    effect = np.where(treated, tau[np.arange(n), np.minimum(arm, 1)], 0.0)
    u = rng.random(n)
    bought = u < p0 + effect
    caused = bought & (u >= p0)
    events = _events(rng, people, arm, bought, caused, wave_s + sent, config)
    report = ProfileReport("email-experiment", Path(out))
    report.notes.append(
        f"{n:,} customers, {int(treated.sum()):,} e-mailed, {int(bought.sum()):,} bought "
        f"in the {config.outcome_days} days after the wave"
    )
    start = config.start
    exposures = pl.DataFrame(
        {"code": np.arange(n), "arm": arm, "ts": timestamps(start, wave_s + sent)}
    ).select(
        ids("e", pl.col("code"), 6).alias("exposure_id"),
        ids("u", pl.col("code"), 6).alias("buyer_id"),
        pl.when(pl.col("arm") < 2)
        .then(ids("r", pl.col("arm") + 1, 1))
        .otherwise(pl.lit(None, pl.String))
        .alias("offer_id"),
        "ts",
        pl.lit(1 / 3).alias("propensity"),
        pl.lit("email_experiment").alias("policy"),
    )
    end = wave_s + days(config.outcome_days)
    offers = pl.DataFrame(
        {
            "offer_id": ["r1", "r2"],
            "tool": ["reminder", "reminder"],
            "seller_id": [SELLER, SELLER],
            "campaign_id": ["email-1", "email-1"],
            "cost": [0.0, 0.0],
            "start_ts": timestamps(start, np.array([wave_s, wave_s])),
            "end_ts": timestamps(start, np.array([end, end])),
        }
    )
    offer_items = pl.DataFrame(
        {
            "offer_id": [f"r{k + 1}" for k, (a, b) in enumerate(SCOPES) for _ in range(a, b)],
            "item_id": [f"i{i}" for a, b in SCOPES for i in range(a, b)],
        }
    )
    items = pl.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(len(PRICES))],
            "seller_id": [SELLER] * len(PRICES),
            "category": list(CATEGORIES),
            "price": PRICES,
        }
    )
    buyers = pl.DataFrame(
        {
            "code": np.arange(n),
            "first_seen": timestamps(start, people["first_seen"]),
            "region": people["region"],
            "channel": people["channel"],
            "new": people["new"],
        }
    ).select(
        ids("u", pl.col("code"), 6).alias("buyer_id"),
        "first_seen",
        pl.col("region").replace_strict(list(range(3)), list(REGIONS)).alias("region_type"),
        pl.col("channel").replace_strict(list(range(3)), list(CHANNELS)).alias("channel"),
        pl.col("new").alias("new_customer"),
    )
    truth = _truth(people, p0, tau, arm, config)
    tables = {
        "items": items,
        "events": events,
        "buyers": buyers,
        "offers": offers,
        "offer_items": offer_items,
        "exposures": exposures,
    }
    report.seconds = time.perf_counter() - began
    return write_dataset(out, tables, truth, report, overwrite)


def _customers(rng: np.random.Generator, n: int, config: EmailConfig) -> dict[str, np.ndarray]:
    history = days(config.history_days)
    new = rng.random(n) < 0.25
    interest = rng.choice(3, n, p=[0.4, 0.35, 0.25])
    region = rng.choice(3, n, p=[0.45, 0.35, 0.2])
    channel = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    n_past = np.where(new, 1, 1 + (rng.random(n) < 0.4))
    # New customers joined in the last 90 days, the others before.
    earliest = np.where(new, history - days(90), 0)
    latest = np.where(new, history - days(1), history - days(91))
    first_seen = earliest + (rng.random(n) * (latest - earliest)).astype(np.int64)
    return {
        "new": new,
        "interest": interest,
        "region": region,
        "channel": channel,
        "n_past": n_past,
        "first_seen": first_seen,
    }


def true_rates(people: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """p0 per customer and tau per customer and reminder (n x 2), module docstring."""
    new = people["new"].astype(float)
    two = (people["n_past"] == 2).astype(float)
    app = (people["channel"] == 2).astype(float)
    store = (people["channel"] == 1).astype(float)
    rural = (people["region"] == 2).astype(float)
    p0 = 0.03 + 0.02 * two + 0.015 * app - 0.01 * rural + 0.01 * new
    first = 0.05 * (people["interest"] == 0) + 0.03 * new - 0.01 * store
    second = 0.04 * (people["interest"] == 1) + 0.03 * store - 0.005 * new
    tau = np.stack([first, second], axis=1)
    tau = np.clip(tau, -p0[:, None], 1 - p0[:, None])
    return p0, tau


def _wanted_items(rng: np.random.Generator, interest: np.ndarray) -> np.ndarray:
    """An item a customer of each interest buys: from its reminder's scope, else 6-7."""
    lo = np.array([SCOPES[0][0], SCOPES[1][0], 6])[interest]
    hi = np.array([SCOPES[0][1], SCOPES[1][1], 8])[interest]
    return lo + (rng.random(len(interest)) * (hi - lo)).astype(np.int64)


def _events(
    rng: np.random.Generator,
    people: dict[str, np.ndarray],
    arm: np.ndarray,
    bought: np.ndarray,
    caused: np.ndarray,
    sent: np.ndarray,
    config: EmailConfig,
) -> pl.DataFrame:
    n = len(arm)
    # The past: one or two purchases after the first visit, before the wave.
    who = np.repeat(np.arange(n), people["n_past"])
    first = people["first_seen"][who]
    last = days(config.history_days)
    past_ts = first + (rng.random(len(who)) * (last - first)).astype(np.int64)
    past_item = _wanted_items(rng, people["interest"][who])
    # The outcome window: clicks, then a purchase for those who bought.
    window = days(config.outcome_days)
    clicked = (arm < 2) & (rng.random(n) < CLICK)
    viewers = np.flatnonzero(clicked | bought)
    view_ts = sent[viewers] + (rng.random(len(viewers)) * (window - 7200)).astype(np.int64)
    buyers = np.flatnonzero(bought)
    item = _wanted_items(rng, people["interest"][buyers])
    scope = np.array(SCOPES)[np.minimum(arm[buyers], 1)]
    offer_item = scope[:, 0] + (rng.random(len(buyers)) * (scope[:, 1] - scope[:, 0])).astype(
        np.int64
    )
    item = np.where(caused[buyers], offer_item, item)
    view_of = dict(zip(viewers.tolist(), view_ts.tolist(), strict=True))
    buy_ts = np.array([view_of[b] for b in buyers.tolist()], dtype=np.int64) + rng.integers(
        60, 3600, len(buyers)
    )
    frame = pl.DataFrame(
        {
            "who": np.r_[who, viewers, buyers],
            "item": np.r_[past_item, np.full(len(viewers), -1), item],
            "purchase": np.r_[
                np.ones(len(who), bool), np.zeros(len(viewers), bool), np.ones(len(buyers), bool)
            ],
            "ts": np.r_[past_ts, view_ts, buy_ts],
        }
    ).with_row_index("row")
    return (
        frame.with_columns(timestamps(config.start, frame["ts"].to_numpy()).alias("ts"))
        .sort("who", "ts", "row")
        .select(
            ids("u", pl.col("who"), 6).alias("buyer_id"),
            pl.when(pl.col("item") >= 0)
            .then(pl.lit("i") + pl.col("item").cast(pl.String))
            .alias("item_id"),
            pl.when(pl.col("purchase"))
            .then(pl.lit("purchase"))
            .otherwise(pl.lit("view"))
            .alias("event_type"),
            "ts",
            pl.when(pl.col("purchase")).then(ids("o", pl.col("row"), 7)).alias("order_id"),
            pl.when(pl.col("purchase")).then(pl.lit(1)).alias("quantity"),
            pl.when(pl.col("purchase"))
            .then(pl.col("item").clip(0).replace_strict(list(range(8)), PRICES.tolist()))
            .alias("amount"),
        )
    )


def _order_value(interest: np.ndarray) -> np.ndarray:
    """Expected order value of a purchase (an item wanted by the customer's interest)."""
    mean = np.array([PRICES[a:b].mean() for a, b in (*SCOPES, (6, 8))])
    return mean[interest]


def _truth(
    people: dict[str, np.ndarray],
    p0: np.ndarray,
    tau: np.ndarray,
    arm: np.ndarray,
    config: EmailConfig,
) -> dict[str, pl.DataFrame]:
    n = len(p0)
    codes = pl.Series(np.arange(n))
    buyer = pl.select(ids("u", codes, 6)).to_series()
    value = _order_value(people["interest"])
    per_offer = [
        decision_truth(
            buyer,
            pl.Series([f"r{k + 1}"] * n),
            SELLER,
            "reminder",
            p0,
            p0 + tau[:, k],
            np.zeros(n),
            value,
            MARGIN,
            np.zeros(n),
            config.send_cost,
        )
        for k in range(2)
    ]
    offers = pl.concat(per_offer).sort("buyer_id", "offer_id")
    exposure = pl.select(ids("e", codes, 6)).to_series()
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
    options = (
        pl.concat(
            [frame.with_columns(exposure.alias("exposure_id")) for frame in (*per_offer, nothing)]
        )
        .select(
            "exposure_id",
            "offer_id",
            "p_purchase_control",
            "p_purchase_treated",
            "p_redeem",
            "profit_control",
            "profit_treated",
            "incremental_profit",
        )
        .sort("exposure_id", "offer_id", nulls_last=True)
    )
    logged_offer = pl.Series(
        [f"r{a + 1}" if a < 2 else None for a in arm.tolist()], dtype=pl.String
    )
    logged = options.join(
        pl.DataFrame({"exposure_id": exposure, "offer_id": logged_offer}),
        on=["exposure_id", "offer_id"],
        nulls_equal=True,
    ).sort("exposure_id")
    buyers = pl.DataFrame(
        {
            "buyer_id": buyer,
            "interest": pl.Series(people["interest"]).replace_strict(
                [0, 1, 2], ["r1 items", "r2 items", "neither"]
            ),
            "p_purchase_control": p0,
            "tau_r1": tau[:, 0],
            "tau_r2": tau[:, 1],
        }
    )
    return {
        "offers": offers,
        "exposures": logged,
        "exposure_options": options,
        "buyers": buyers,
        "sellers": sellers_truth({SELLER: MARGIN}, config.send_cost),
    }
