"""Turning the policy's decision frames into what a ranking request is answered with.

Pure frame functions used by `serving.service.RankingService`: the summary of why a
request has no eligible offer (naming the offer), and the listed offers of each request
(first = the action taken) with their exact propensities.
"""

from __future__ import annotations

import polars as pl

from recsys.policy import Decisions, PolicyConfig, candidate_reason_text
from recsys.policy.config import PROFIT_EPS
from recsys.policy.reasons import REJECTION_ORDER

UNIT = "_unit"
"""The column naming a request within a batch (the policy's decision unit)."""

TS_FORMAT = "%Y-%m-%d %H:%M"


def rejection_summary(rejected: pl.DataFrame) -> dict[str, str]:
    """Per unit: why it has no eligible offer, the check it got furthest in first
    (`recsys.policy.policy.REJECTION_ORDER`), naming the offer."""
    if rejected.height == 0:
        return {}
    order = [r.value for r in REJECTION_ORDER]
    first = (
        rejected.with_columns(
            pl.col("reason_code")
            .replace_strict(order, list(range(len(order))), default=len(order))
            .alias("_order")
        )
        .sort([UNIT, "_order", "offer_id"])
        .group_by(UNIT, maintain_order=True)
        .agg(pl.format("{}: {}", "offer_id", "reason_text").first().alias("text"))
    )
    return dict(zip(first[UNIT], first["text"], strict=True))


def listed_answers(
    decisions: Decisions | None, units: pl.DataFrame, config: PolicyConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The listed offers of every unit (first = the chosen action) and every unit's choice.

    `listed`: unit, position, offer columns, propensity (exact probability that the offer
    is first), reason codes and text; only units whose action is an offer have rows.
    `chosen`: one row per decided unit with the action's propensity, `explored`, and the
    reason text of a "nothing".
    """
    listed_schema: dict[str, pl.DataType] = {
        UNIT: pl.String(),
        "offer_id": pl.String(),
        "seller_id": pl.String(),
        "tool": pl.String(),
        "score": pl.Float64(),
        "expected_value": pl.Float64(),
        "value_se": pl.Float64(),
        "p_redeem": pl.Float64(),
        "uplift": pl.Float64(),
        "propensity": pl.Float64(),
        "reason_codes": pl.List(pl.String),
        "reason_text": pl.String(),
    }
    if decisions is None:
        return (
            pl.DataFrame(schema=listed_schema),
            pl.DataFrame(
                schema={
                    UNIT: pl.String,
                    "offer_id": pl.String,
                    "propensity": pl.Float64,
                    "explored": pl.Boolean,
                    "reason_text": pl.String,
                }
            ),
        )
    chosen = decisions.chosen.rename({"buyer_id": UNIT})
    ranked = decisions.ranked.rename({"buyer_id": UNIT})
    offer_cols = [
        UNIT,
        "offer_id",
        "seller_id",
        "tool",
        "score",
        "expected_value",
        "value_se",
        "p_redeem",
        "uplift",
    ]
    first = (
        chosen.filter(pl.col("offer_id").is_not_null())
        .select(UNIT, "offer_id", "propensity", "reason_codes", "reason_text")
        .join(ranked.select(offer_cols), on=[UNIT, "offer_id"], how="left")
        .with_columns(pl.lit(0, pl.Int64).alias("position"))
    )
    k = units.select(UNIT, "k")
    rest = (
        ranked.filter(pl.col("score") > PROFIT_EPS)
        .join(first.select(UNIT), on=UNIT, how="semi")
        .join(first.select(UNIT, "offer_id"), on=[UNIT, "offer_id"], how="anti")
        .join(k, on=UNIT, how="left")
        .sort(UNIT, "rank")
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(UNIT).alias("position"))
        .filter(pl.col("position") < pl.col("k"))
    )
    rest = candidate_reason_text(rest, assumed_share=config.assumed_incremental_share)
    if decisions.probabilities is None:  # greedy: only the chosen offer is ever first
        rest = rest.with_columns(pl.lit(0.0).alias("propensity"))
    else:
        probabilities = decisions.probabilities.select(
            pl.col("buyer_id").alias(UNIT), "offer_id", "probability"
        )
        rest = rest.join(probabilities, on=[UNIT, "offer_id"], how="left").rename(
            {"probability": "propensity"}
        )
    listed = (
        pl.concat(
            [
                first.select(*listed_schema, "position"),
                rest.select(*listed_schema, "position"),
            ],
            how="vertical_relaxed",
        )
        .sort(UNIT, "position")
        .select(list(listed_schema))
    )
    return listed, chosen.select(UNIT, "offer_id", "propensity", "explored", "reason_text")
