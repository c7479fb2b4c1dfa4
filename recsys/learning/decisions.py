"""Logged decisions, the actions each could have taken, their outcomes, and folds.

A *decision* is a logged exposure whose propensity is known: logged by the policy that
decided, or -- in a snapshot (day) that kept a control group but logged none -- estimated
as the arm's share of that snapshot (the offers were assigned at random there). Its
seller is the exposure's own `seller_id` when the source has that column, else the
offer's; a control row without one takes the seller of its wave's offers when they all
come from one seller, else the platform (its outcome is then every purchase).

Its *options* are the offers of the same seller logged in the same wave (day) and valid
then, and nothing. Its *outcomes*, in ``[ts, ts + horizon)`` at its seller: whether the
buyer bought (`purchased`), the discount given (`discount`), and the realized profit
(`reward` = margin x gross value bought - discount - send cost of an offer), the one
reward every policy is learned from and valued by (`recsys.evaluation.policy_eval`).

Costs: `logged_decisions` and `decision_options` materialize one row per decision and
per option (decisions x the offers of their seller's wave: six or so), never decisions x
offers of the whole wave.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from recsys.data.dataset import Dataset
from recsys.evaluation.policy_eval import realized_rewards
from recsys.features.pairs import PLATFORM

NOTHING = "__nothing__"
"""The action key of "no offer" (options and kinds)."""
SCOPED_SUFFIX = ":items"
"""Appended to a tool's name for an item-scoped offer's kind."""


@dataclass(frozen=True)
class MoneyTerms:
    """How realized profit is counted: margins, costs and the outcome window."""

    margins: dict[str, float]
    margin_default: float
    send_cost: float
    horizon_days: float
    shipping_cost: float


def kind_expr(tool: pl.Expr, scoped: pl.Expr) -> pl.Expr:
    """An offer's kind: its tool, with ``:items`` when it is item-scoped.

    Offers of one kind are the same action for learning: waves issue new offer ids, and
    what carries over from one wave to the next is the tool and its scope.
    """
    return pl.when(scoped).then(tool + SCOPED_SUFFIX).otherwise(tool).alias("kind")


def offer_kinds(dataset: Dataset) -> pl.DataFrame:
    """offer_id -> kind (`kind_expr`) for every offer of the dataset."""
    if dataset.offers is None:
        return pl.DataFrame(schema={"offer_id": pl.String, "kind": pl.String})
    scoped = (
        dataset.offer_items["offer_id"].unique()
        if dataset.offer_items is not None
        else pl.Series("offer_id", [], pl.String)
    )
    return dataset.offers.select(
        "offer_id", kind_expr(pl.col("tool"), pl.col("offer_id").is_in(scoped.implode()))
    )


def estimate_missing_propensities(exposures: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Fill null propensities in snapshots (days) that kept a control group.

    A source may keep a random control group without logging propensities. Within such a
    day the best estimate of an arm's propensity is its share of the day's unlogged rows
    (the arm: the offer, or control). Days without a control row are left alone: a
    campaign sent by hand to a chosen list is not random, and estimating a propensity for
    it would fake an experiment. Returns the frame and the number of rows filled.
    """
    if exposures.height == 0:
        return exposures, 0
    day = pl.col("ts").dt.truncate("1d")
    unlogged = pl.col("propensity").is_null()
    arm = pl.col("offer_id").fill_null(NOTHING)
    has_control = (unlogged & pl.col("offer_id").is_null()).any().over(day)
    fill = unlogged & has_control
    n_unlogged = unlogged.cast(pl.Int64).sum()
    share = unlogged.cast(pl.Int64).sum().over(day, arm) / n_unlogged.over(day)
    n_filled = int(exposures.select(fill.sum()).item())
    if not n_filled:
        return exposures, 0
    filled = exposures.with_columns(
        pl.when(fill).then(share).otherwise(pl.col("propensity")).alias("propensity")
    )
    return filled, n_filled


def randomized() -> pl.Expr:
    """Exposures that could have gone another way: logged with a propensity below 1. One
    at propensity 1 (a greedy policy's choice, a campaign sent to everyone) says nothing
    of what another action would have done."""
    return pl.col("propensity") < 1.0


def logged_decisions(
    dataset: Dataset,
    start: datetime | None = None,
    end: datetime | None = None,
    horizon_days: float | None = None,
) -> pl.DataFrame:
    """Exposures with a propensity and ``start <= ts < end``, with the seller of each
    decision (`randomized` tells which of them could have gone another way).

    With `horizon_days`, only decisions whose outcome window ends by `end` (their outcome
    is complete). Propensities missing in snapshots with a control group are estimated
    (`estimate_missing_propensities`); the column ``propensity_estimated`` says which.
    Sorted by exposure_id.
    """
    assert dataset.exposures is not None and dataset.offers is not None
    exposures = dataset.exposures
    window = pl.lit(True)
    if start is not None:
        window &= pl.col("ts") >= start
    if end is not None:
        window &= pl.col("ts") < end
        if horizon_days is not None:
            window &= pl.col("ts") + timedelta(days=horizon_days) <= end
    exposures = exposures.filter(window).with_columns(
        pl.col("propensity").is_null().alias("propensity_estimated")
    )
    exposures, _ = estimate_missing_propensities(exposures)
    logged = exposures.filter(pl.col("propensity").is_not_null())
    sellers = dataset.offers.select("offer_id", pl.col("seller_id").alias("_offer_seller"))
    logged = logged.join(sellers, on="offer_id", how="left")
    own = (
        pl.coalesce("seller_id", "_offer_seller")
        if "seller_id" in logged.columns
        else pl.col("_offer_seller")
    )
    logged = logged.with_columns(own.alias("seller_id"))
    # A control row without a seller: its wave's single seller, else the platform.
    wave = pl.col("ts").dt.truncate("1d")
    wave_seller = (
        pl.when(pl.col("_offer_seller").drop_nulls().n_unique().over(wave) == 1)
        .then(pl.col("_offer_seller").drop_nulls().first().over(wave))
        .otherwise(pl.lit(PLATFORM))
    )
    logged = logged.with_columns(pl.coalesce("seller_id", wave_seller).alias("seller_id"))
    return logged.drop("_offer_seller").sort("exposure_id")


def decision_options(dataset: Dataset, logged: pl.DataFrame) -> pl.DataFrame:
    """The offers each logged decision could have chosen (see the module docstring).

    `logged` has exposure_id, buyer_id, offer_id, ts and optionally seller_id. Returns
    exposure_id, buyer_id, seller_id (of the decision), offer_id, one row per option; the
    logged offer is always among them. A decision with the platform as its seller is
    offered every offer of its wave.
    """
    assert dataset.offers is not None
    offers = dataset.offers.select(
        "offer_id", pl.col("seller_id").alias("offer_seller"), "start_ts", "end_ts"
    )
    decided = logged.join(offers.select("offer_id", "offer_seller"), on="offer_id", how="left")
    own_seller = (
        pl.coalesce("seller_id", "offer_seller")
        if "seller_id" in decided.columns
        else pl.col("offer_seller")
    )
    decided = decided.with_columns(
        own_seller.alias("seller_id"), pl.col("ts").dt.truncate("1d").alias("wave")
    )
    wave_offers = (
        decided.filter(pl.col("offer_id").is_not_null())
        .select("wave", "offer_id")
        .unique()
        .join(offers, on="offer_id")
    )
    decisions = decided.select("exposure_id", "buyer_id", "seller_id", "ts", "wave")
    # A decision with a seller is offered that seller's offers of its wave: join on both,
    # never on the wave alone (decisions x every offer of the wave is a cross product of
    # gigabytes at a million buyers); one without a seller gets every offer of its wave.
    anywhere = pl.col("seller_id").is_null() | (pl.col("seller_id") == PLATFORM)
    candidates = pl.concat(
        [
            decisions.filter(~anywhere).join(
                wave_offers,
                left_on=["wave", "seller_id"],
                right_on=["wave", "offer_seller"],
                coalesce=False,
            ),
            decisions.filter(anywhere).join(wave_offers, on="wave"),
        ],
        how="diagonal_relaxed",
    )
    options = candidates.filter(
        (pl.col("start_ts").is_null() | (pl.col("start_ts") <= pl.col("ts")))
        & (pl.col("end_ts").is_null() | (pl.col("ts") < pl.col("end_ts")))
    ).select("exposure_id", "buyer_id", "seller_id", "offer_id")
    own = decided.filter(pl.col("offer_id").is_not_null()).select(
        "exposure_id", "buyer_id", "seller_id", "offer_id"
    )
    return pl.concat([options, own]).unique(maintain_order=True).sort("exposure_id", "offer_id")


def decision_outcomes(dataset: Dataset, logged: pl.DataFrame, money: MoneyTerms) -> pl.DataFrame:
    """`logged` with `purchased` (0/1), `gross_value`, `discount` and `reward` per decision."""
    rewards = realized_rewards(
        dataset,
        logged.select("exposure_id", "buyer_id", "seller_id", "offer_id", "ts"),
        money.margins,
        money.margin_default,
        money.send_cost,
        horizon_days=money.horizon_days,
        shipping_cost=money.shipping_cost,
    ).select(
        "exposure_id",
        "gross_value",
        "discount",
        "reward",
        (pl.col("gross_value") > 0).cast(pl.Float64).alias("purchased"),
    )
    return logged.join(rewards, on="exposure_id", how="left", maintain_order="left")


def buyer_fold(k: int, seed: int = 0) -> pl.Expr:
    """Fold (0 .. k-1) of each row's buyer: every decision of a buyer lands in one fold, so
    a model judged on a fold never saw that buyer. A fixed hash: the same data, the same
    folds."""
    return (pl.col("buyer_id").hash(seed) % k).cast(pl.Int32).alias("fold")


def sample_buyers(frame: pl.DataFrame, max_rows: int, seed: int = 0) -> pl.DataFrame:
    """`frame` cut to whole buyers so that at most about `max_rows` rows are left.

    Decisions of a kept buyer are all kept (folds and effects stay per buyer); which
    buyers are kept is a fixed hash, so it does not change between runs.
    """
    if frame.height <= max_rows:
        return frame
    keep = max_rows / frame.height
    bucket = (pl.col("buyer_id").hash(seed + 1) % 1_000_000).cast(pl.Float64) / 1_000_000
    return frame.filter(bucket < keep)
