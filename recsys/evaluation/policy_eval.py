"""Judge a policy's offers: on logged decisions (off-policy) and against a ground truth.

Off-policy: for held-out logged exposures, a policy's value is estimated by IPS, SNIPS
and doubly robust estimators from the realized profit of each decision — margin times
what the buyer bought from the seller in the window, less the discount given and the
send cost. With a ground truth (the synthetic marketplace), the same choices' exact
expected profit is known, so estimators can be checked.

Policies compared on a truth table: the learned one, the oracle, nothing, blanket (one
tool for everyone), random, and response-only and purchase-history targeting at the
learned policy's volume — always side by side, never alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import polars as pl

from recsys.data.dataset import Dataset
from recsys.evaluation.off_policy import OPEEstimate
from recsys.features.money import MICROS, to_micros
from recsys.features.pairs import PLATFORM
from recsys.features.windows import window_sums
from recsys.policy.value import with_score

UNIT = ("buyer_id", "seller_id")
"""One decision: a buyer and a seller (each seller decides for its own customers)."""


def realized_rewards(
    dataset: Dataset,
    decisions: pl.DataFrame,
    margins: dict[str, float],
    margin_default: float,
    send_cost: float,
    horizon_days: float,
    shipping_cost: float,
) -> pl.DataFrame:
    """Realized profit of each logged decision at its seller in [ts, ts + horizon).

    `decisions` has exposure_id, buyer_id, seller_id, offer_id (null: nothing), ts.
    Profit = margin x gross value bought from the seller - discount given - send cost
    (when an offer was sent). The discount is what prices show (list price x quantity
    minus amount paid, on the redeemed order) plus costs prices do not show: a free
    shipping's cost, points' value. A decision without a seller (a control row whose
    seller is unknown, a platform-wide offer) has no purchases at a seller: gross 0.

    Cost: D decisions and P purchase lines are sorted once and each window's gross value
    is the difference of two running sums found by as-of search
    (`recsys.features.windows.window_sums`); the redeemed orders' lines are found by a
    join on (buyer, seller, order) of R redemptions: D + P + R rows materialized, never
    D x lines per buyer.
    """
    horizon = timedelta(days=horizon_days)
    lines = _gross_lines(dataset)
    windows = decisions.select(
        "buyer_id", "seller_id", "ts", (pl.col("ts") + horizon).alias("_end")
    )
    gross = window_sums(
        windows,
        lines.select("buyer_id", pl.col("seller_key").alias("seller_id"), "p_ts", "gross_micros"),
        ["buyer_id", "seller_id"],
        "ts",
        "_end",
        "p_ts",
        "gross_micros",
    )
    discount = _discounts(dataset, decisions, lines, horizon, shipping_cost)
    margin = pl.col("seller_id").replace_strict(
        margins, default=margin_default, return_dtype=pl.Float64
    )
    return (
        decisions.with_columns((gross / MICROS).alias("gross_value"))
        .join(discount, on="exposure_id", how="left")
        .with_columns(pl.col("gross_value", "discount").fill_null(0.0))
        .with_columns(
            (
                margin * pl.col("gross_value")
                - pl.col("discount")
                - pl.when(pl.col("offer_id").is_not_null()).then(send_cost).otherwise(0.0)
            ).alias("reward")
        )
    )


def _gross_lines(dataset: Dataset) -> pl.DataFrame:
    """Purchase lines: buyer, seller key, time, order key and gross value (list price x
    quantity, else the amount paid), also in integer millionths (P rows)."""
    catalog = dataset.items.select("item_id", "seller_id", "price")
    gross = (
        pl.coalesce(pl.col("price") * pl.col("quantity").fill_null(1), "amount")
        .fill_null(0.0)
        .alias("gross")
    )
    return (
        dataset.events.lazy()
        .filter(pl.col("event_type") == "purchase")
        .join(catalog.lazy(), on="item_id", how="left")
        .select(
            "buyer_id",
            seller_key(pl.col("seller_id")).alias("seller_key"),
            pl.col("ts").alias("p_ts"),
            pl.coalesce("order_id", pl.col("ts").cast(pl.String)).alias("order_key"),
            gross,
        )
        .with_columns(to_micros(pl.col("gross")).alias("gross_micros"))
        .collect()
    )


def _discounts(
    dataset: Dataset,
    decisions: pl.DataFrame,
    lines: pl.DataFrame,
    horizon: timedelta,
    shipping_cost: float,
) -> pl.DataFrame:
    """exposure_id, discount given on the decision's redeemed orders (R + their lines)."""
    schema = {"exposure_id": pl.String, "discount": pl.Float64}
    if dataset.redemptions is None or dataset.offers is None:
        return pl.DataFrame(schema=schema)
    offers = dataset.offers.select("offer_id", "tool", "value", "cost")
    red = (
        dataset.redemptions.filter(pl.col("exposure_id").is_not_null())
        .select("exposure_id", "order_id", pl.col("amount").alias("net"))
        .join(
            decisions.select("exposure_id", "offer_id", "buyer_id", "seller_id", "ts"),
            on="exposure_id",
        )
        .join(offers, on="offer_id", how="left")
        .with_row_index("_red")
    )
    # The redeemed order's lines at the decision's seller, in the decision's window.
    order_gross = (
        red.select("_red", "buyer_id", "seller_id", "order_id", "ts")
        .join(
            lines.select(
                "buyer_id", pl.col("seller_key").alias("seller_id"), "order_key", "p_ts", "gross"
            ),
            left_on=["buyer_id", "seller_id", "order_id"],
            right_on=["buyer_id", "seller_id", "order_key"],
        )
        .filter((pl.col("p_ts") >= pl.col("ts")) & (pl.col("p_ts") < pl.col("ts") + horizon))
        .group_by("_red")
        .agg(pl.col("gross").sum())
    )
    red = red.join(order_gross, on="_red", how="left")
    unseen = (
        pl.when(pl.col("tool") == "free_shipping")
        .then(pl.col("cost").fill_null(shipping_cost))
        .when(pl.col("tool") == "points")
        .then(pl.col("value").fill_null(0.0) * pl.col("net").fill_null(0.0))
        .otherwise(0.0)
    )
    seen = (pl.col("gross").fill_null(0.0) - pl.col("net").fill_null(0.0)).clip(lower_bound=0.0)
    return red.group_by("exposure_id").agg((seen + unseen).sum().alias("discount"))


@dataclass(frozen=True)
class OPEReport:
    """Off-policy estimates of one policy on logged decisions, with the truth if known."""

    ips: OPEEstimate
    snips: OPEEstimate
    dr: OPEEstimate
    logged_value: float
    true_value: float | None
    n: int
    match_rate: float
    dr_terms: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The doubly robust estimate's per-decision terms (their mean is `dr.value`), for
    paired comparisons of policies valued on the same decisions."""

    def relative_error(self, estimate: OPEEstimate) -> float | None:
        if self.true_value is None or self.true_value == 0:
            return None
        return abs(estimate.value - self.true_value) / abs(self.true_value)


def choose_best(scored: pl.DataFrame, value: str = "score") -> pl.DataFrame:
    """Per decision unit (exposure_id, or buyer and seller), the best offer by `value` if
    that is positive, else nothing (offer_id null): the policy's choice, by its decision
    score (`recsys.policy.value.decision_scores`)."""
    unit = "exposure_id" if "exposure_id" in scored.columns else list(UNIT)
    if value == "score" and "score" not in scored.columns:
        scored = with_score(scored)
    best = (
        scored.sort(value, descending=True, maintain_order=True)
        .group_by(unit, maintain_order=True)
        .first()
    )
    return best.with_columns(pl.when(pl.col(value) > 0).then(pl.col("offer_id")).alias("offer_id"))


def policy_values_on_truth(
    truth: pl.DataFrame, scored: pl.DataFrame, seed: int = 0
) -> dict[str, float]:
    """True incremental profit of the learned policy and of the baselines, same units.

    truth: buyer_id, offer_id, seller_id, tool, incremental_profit (one row per option).
    scored: buyer_id, offer_id, score, expected_value, p_redeem, plus `history` (the buyer's
    past purchases of the offer's items) for the history baseline.
    """
    frame = _on_truth(truth, scored)
    values: dict[str, float] = {"nothing": 0.0}
    oracle = frame.group_by(list(UNIT)).agg(pl.col("incremental_profit").max().clip(0.0))
    values["oracle"] = float(oracle["incremental_profit"].sum())
    learned = _issued(frame)
    values["learned"] = float(learned["incremental_profit"].sum())
    n_issued = learned.height
    for tool in sorted(frame["tool"].unique().to_list()):
        per_unit = (
            frame.filter(pl.col("tool") == tool)
            .group_by(list(UNIT))
            .agg(pl.col("incremental_profit").mean())
        )
        values[f"blanket_{tool}"] = float(per_unit["incremental_profit"].sum())
    rng = np.random.default_rng(seed)
    shuffled = frame.with_columns(pl.Series("_r", rng.random(frame.height)))
    values["random_same_volume"] = _top_units(shuffled, "_r", n_issued)
    values["response_same_volume"] = _top_units(frame, MODEL_P_REDEEM, n_issued)
    if "history" in frame.columns:
        with_tiebreak = frame.with_columns(
            (pl.col("history") + 1e-9 * pl.Series(rng.random(frame.height))).alias("_h")
        )
        values["history_same_volume"] = _top_units(with_tiebreak, "_h", n_issued)
    values["learned_issued"] = float(n_issued)
    return values


def learned_offers(truth: pl.DataFrame, scored: pl.DataFrame) -> pl.DataFrame:
    """The options the learned policy issues on a truth table, one row per issued offer.

    The same choice `policy_values_on_truth` values as "learned" (each unit's best option
    by decision score, if positive), so figures about the issued offers — their true
    redemption probability, their tools — describe the policy whose profit is reported.
    Columns: the truth table's (``p_redeem`` is the true one), then the policy's
    ``expected_value``, ``model_p_redeem`` and ``history`` when scored has it.
    """
    return _issued(_on_truth(truth, scored))


MODEL_P_REDEEM = "model_p_redeem"
"""The model's P(redeem) beside the truth's `p_redeem` on a joined frame."""


def _on_truth(truth: pl.DataFrame, scored: pl.DataFrame) -> pl.DataFrame:
    """Truth rows with the policy's scores beside them (options without a score dropped).

    Only the policy's columns are taken from `scored`, the model's P(redeem) renamed: a
    baseline ranked by "p_redeem" must rank by the model's, never the truth's.
    """
    policy = [c for c in ("score", "expected_value", "p_redeem", "history") if c in scored.columns]
    return truth.join(
        scored.select("buyer_id", "offer_id", *policy).rename({"p_redeem": MODEL_P_REDEEM}),
        on=["buyer_id", "offer_id"],
        how="inner",
    )


def _issued(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows `choose_best` issues (units it gives nothing are left out)."""
    return choose_best(frame).filter(pl.col("offer_id").is_not_null())


def _top_units(frame: pl.DataFrame, by: str, n: int) -> float:
    """Issue each unit its highest-`by` offer, to the `n` units with the highest `by`."""
    best = frame.sort(by, descending=True).group_by(list(UNIT), maintain_order=True).first()
    return float(best.sort(by, descending=True).head(n)["incremental_profit"].sum())


def seller_key(seller: pl.Expr) -> pl.Expr:
    """The seller key pair features use (platform offers have no seller)."""
    return seller.fill_null(PLATFORM)
