"""Measured incrementality: what the engine's offers add over its holdout.

The live policy keeps a stable per-seller control group (`recsys.policy.holdout`): a
held-out buyer gets nothing, and the decision log marks every served decision with its
``arm`` (``control`` or ``treated``). Because the arm is assigned at random, the
difference between the arms is the causal effect of the program -- every offer the engine
gave a treated buyer, and the nothings it chose -- with no model involved.

Units and outcomes. The unit is a (buyer, seller) pair with a holdout-served decision in
the report's span, in the arm of its first such decision (the arm is stable within a
holdout period; a unit seen in both arms counts in its first). Its outcomes over
``window_days`` from that decision, at that seller: ``purchase_rate`` (bought at all),
``revenue`` (gross value bought) and ``profit`` (margin x revenue - discounts of the
unit's redeemed offers - send cost of each offer given: the one reward of
`recsys.evaluation.policy_eval.realized_rewards`). Only units whose window ends by the
data's end are counted, so every arm is cut alike.

Estimates. Per seller and overall: treated and control means per unit, their difference
(the lift), its standard error (Welch) and a two-sided ``level`` confidence interval.
With ``cuped`` each outcome is first adjusted by the unit's revenue in the same-length
window before its first decision (CUPED: ``y - theta (x - mean x)``, theta pooled over
both arms), which keeps the estimate unbiased and narrows the interval when buyers'
purchases persist. Per tool the units cannot be split by arm (a held-out buyer has no
tool), so each tool is valued per decision by self-normalized inverse propensity against
"nothing" (the logged propensities are exact, holdout included): the value of giving
that tool where it was given with positive probability, not of the whole program.

Cost: the three outcome passes are `realized_rewards` (sorted as-of sums: decisions +
purchase lines + redemptions); the statistics are numpy over units.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import polars as pl
from pydantic import Field

from recsys.config import StrictConfig
from recsys.data.dataset import Dataset
from recsys.evaluation.policy_eval import realized_rewards
from recsys.policy.holdout import CONTROL, TREATED
from recsys.policy.value import DEFAULT_SHIPPING_COST

METRICS: tuple[str, ...] = ("purchase_rate", "revenue", "profit")
OVERALL = "__all__"

RESULT_SCHEMA: dict[str, pl.DataType] = {
    "level": pl.String(),
    "key": pl.String(),
    "metric": pl.String(),
    "n_treated": pl.Int64(),
    "n_control": pl.Int64(),
    "treated": pl.Float64(),
    "control": pl.Float64(),
    "lift": pl.Float64(),
    "se": pl.Float64(),
    "low": pl.Float64(),
    "high": pl.Float64(),
    "relative": pl.Float64(),
    "variance_reduction": pl.Float64(),
}
"""One row per (level, key, metric): level ``overall``, ``seller`` or ``tool``."""


class IncrementalityConfig(StrictConfig):
    """How the incrementality report counts outcomes and intervals."""

    window_days: float = Field(28.0, gt=0, description="outcome window after a unit's decision")
    level: float = Field(0.9, gt=0, lt=1, description="confidence level of the intervals")
    cuped: bool = Field(True, description="adjust by pre-period revenue (CUPED)")
    margin_default: float = Field(0.3, ge=0, le=1, description="margin of a seller not listed")
    margins: dict[str, float] = Field(default_factory=dict, description="margin per seller_id")
    send_cost: float = Field(0.0, ge=0, description="cost of issuing one offer")
    shipping_cost: float = Field(
        DEFAULT_SHIPPING_COST, ge=0, description="cost of a free_shipping redemption without cost"
    )
    end: datetime | None = Field(None, description="data end; null: the last event")


@dataclass(frozen=True)
class IncrementalityReport:
    """The report's table (`RESULT_SCHEMA`), its units and what it could not say."""

    table: pl.DataFrame
    units: pl.DataFrame
    config: IncrementalityConfig
    notes: list[str]

    def row(self, level: str, key: str, metric: str) -> dict[str, object] | None:
        """One row of the table as a dict, or None."""
        rows = self.table.filter(
            (pl.col("level") == level) & (pl.col("key") == key) & (pl.col("metric") == metric)
        )
        return rows.row(0, named=True) if rows.height else None

    def seller(self, seller_id: str) -> pl.DataFrame:
        """The seller's rows (every metric)."""
        return self.table.filter((pl.col("level") == "seller") & (pl.col("key") == seller_id))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (NaN as null): what `recsys report incrementality --out`
        writes and the service's incrementality route and gauges read."""
        rows = [
            {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in r.items()
            }
            for r in self.table.iter_rows(named=True)
        ]
        arms = self.units["arm"].value_counts() if self.units.height else None
        return {
            "window_days": self.config.window_days,
            "level": self.config.level,
            "cuped": self.config.cuped,
            "units": {arm: int(n) for arm, n in (arms.iter_rows() if arms is not None else [])},
            "rows": rows,
            "notes": list(self.notes),
        }

    def write_json(self, path: str | Path, generated_at: datetime) -> None:
        """Write `to_dict` (and when) as JSON, atomically (a reader never sees half)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"generated_at": generated_at.isoformat(), **self.to_dict()}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)

    def text(self) -> str:
        """A plain-text rendering for the command line."""
        pct = round(self.config.level * 100)
        lines = [
            f"incrementality over {self.config.window_days:g}-day windows, {pct} % intervals "
            f"({self.units.height:,} buyer-seller units)"
        ]
        for row in self.table.iter_rows(named=True):
            lines.append(
                f"{row['level']:>7} {row['key']:<14} {row['metric']:<13} "
                f"treated {row['treated']:.4f} (n={row['n_treated']}) "
                f"control {row['control']:.4f} (n={row['n_control']}) "
                f"lift {row['lift']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]"
            )
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def difference(
    y: np.ndarray, treated: np.ndarray, level: float
) -> tuple[float, float, float, float, float]:
    """Treated mean, control mean, their difference, its Welch standard error and the
    interval's half width at ``level``. NaN where an arm has fewer than two units.

    >>> y = np.array([1.0, 3.0, 0.0, 2.0]); t = np.array([True, True, False, False])
    >>> [round(v, 3) for v in difference(y, t, 0.9)]
    [2.0, 1.0, 1.0, 1.414, 2.326]
    """
    a, b = y[treated], y[~treated]
    if len(a) < 2 or len(b) < 2:
        nan = float("nan")
        return (float(a.mean()) if len(a) else nan, float(b.mean()) if len(b) else nan, nan,
                nan, nan)  # fmt: skip
    diff = float(a.mean() - b.mean())
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return float(a.mean()), float(b.mean()), diff, se, z * se


def cuped_adjust(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """``y - theta (x - mean x)`` with ``theta = cov(y, x) / var(x)`` (pooled), and the
    share of variance removed (0 when ``x`` is constant). Unbiased for a difference of
    randomized arms because ``x`` is measured before assignment matters."""
    vx = float(x.var())
    if len(y) < 3 or vx <= 0:
        return y, 0.0
    theta = float(np.cov(y, x, ddof=0)[0, 1] / vx)
    adjusted = y - theta * (x - x.mean())
    vy = float(y.var())
    return adjusted, (1.0 - float(adjusted.var()) / vy) if vy > 0 else 0.0


def served_units(exposures: pl.DataFrame, window: timedelta, end: datetime) -> pl.DataFrame:
    """One row per (buyer, seller) with a holdout-served decision whose window ends by
    ``end``: its first decision's ts and arm. Columns: unit_id, buyer_id, seller_id, ts,
    arm."""
    if "arm" not in exposures.columns or "seller_id" not in exposures.columns:
        return pl.DataFrame(
            schema={
                "unit_id": pl.String,
                "buyer_id": pl.String,
                "seller_id": pl.String,
                "ts": exposures.schema.get("ts", pl.Datetime("us", "UTC")),
                "arm": pl.String,
            }
        )
    return (
        exposures.filter(
            pl.col("arm").is_in([CONTROL, TREATED]) & pl.col("seller_id").is_not_null()
        )
        .sort("ts", "exposure_id")
        .group_by("buyer_id", "seller_id", maintain_order=True)
        .agg(pl.col("ts").first(), pl.col("arm").first())
        .filter(pl.col("ts") + window <= end)
        .with_columns(pl.format("{}|{}", "buyer_id", "seller_id").alias("unit_id"))
        .select("unit_id", "buyer_id", "seller_id", "ts", "arm")
    )


def unit_outcomes(
    dataset: Dataset, units: pl.DataFrame, exposures: pl.DataFrame, cfg: IncrementalityConfig
) -> pl.DataFrame:
    """`units` with ``purchase_rate``, ``revenue``, ``profit`` over the window and
    ``pre_revenue`` over the same-length window before (see the module doc)."""
    days = cfg.window_days
    window = timedelta(days=days)

    def rewards(decisions: pl.DataFrame, send_cost: float) -> pl.DataFrame:
        return realized_rewards(
            dataset,
            decisions,
            cfg.margins,
            cfg.margin_default,
            send_cost,
            horizon_days=days,
            shipping_cost=cfg.shipping_cost,
        )

    as_decision = units.select(
        pl.col("unit_id").alias("exposure_id"),
        "buyer_id",
        "seller_id",
        pl.lit(None, pl.String).alias("offer_id"),
        "ts",
    )
    after = rewards(as_decision, 0.0)
    before = rewards(as_decision.with_columns(pl.col("ts") - window), 0.0)
    # Discounts and send costs of the offers given to the unit within its window.
    starts = units.select("buyer_id", "seller_id", "unit_id", pl.col("ts").alias("_t0"))
    given = (
        exposures.filter(pl.col("offer_id").is_not_null())
        .join(starts, on=["buyer_id", "seller_id"])
        .filter((pl.col("ts") >= pl.col("_t0")) & (pl.col("ts") < pl.col("_t0") + window))
    )
    costs = rewards(
        given.select("exposure_id", "buyer_id", "seller_id", "offer_id", "ts"), cfg.send_cost
    ).join(given.select("exposure_id", "unit_id"), on="exposure_id")
    per_unit = costs.group_by("unit_id").agg(
        (pl.col("discount").sum() + pl.len() * cfg.send_cost).alias("_cost")
    )
    margin = pl.col("seller_id").replace_strict(
        cfg.margins, default=cfg.margin_default, return_dtype=pl.Float64
    )
    return (
        units.join(
            after.select(pl.col("exposure_id").alias("unit_id"), "gross_value"), on="unit_id"
        )
        .join(
            before.select(
                pl.col("exposure_id").alias("unit_id"), pl.col("gross_value").alias("pre_revenue")
            ),
            on="unit_id",
        )
        .join(per_unit, on="unit_id", how="left")
        .with_columns(
            (pl.col("gross_value") > 0).cast(pl.Float64).alias("purchase_rate"),
            pl.col("gross_value").alias("revenue"),
            (margin * pl.col("gross_value") - pl.col("_cost").fill_null(0.0)).alias("profit"),
        )
        .drop("gross_value", "_cost")
    )


def _rows(level: str, key: str, units: pl.DataFrame, cfg: IncrementalityConfig) -> list[dict]:
    treated = (units["arm"] == TREATED).to_numpy()
    x = units["pre_revenue"].to_numpy().astype(np.float64)
    out = []
    for metric in METRICS:
        y = units[metric].to_numpy().astype(np.float64)
        reduction = 0.0
        if cfg.cuped:
            y_adj, reduction = cuped_adjust(y, x)
        else:
            y_adj = y
        t_mean, c_mean, _, _, _ = difference(y, treated, cfg.level)
        _, _, lift, se, half = difference(y_adj, treated, cfg.level)
        out.append(
            {
                "level": level,
                "key": key,
                "metric": metric,
                "n_treated": int(treated.sum()),
                "n_control": int((~treated).sum()),
                "treated": t_mean,
                "control": c_mean,
                "lift": lift,
                "se": se,
                "low": lift - half,
                "high": lift + half,
                "relative": lift / c_mean if c_mean and np.isfinite(c_mean) else float("nan"),
                "variance_reduction": reduction,
            }
        )
    return out


def tool_rows(
    dataset: Dataset, exposures: pl.DataFrame, end: datetime, cfg: IncrementalityConfig
) -> list[dict]:
    """Per tool: profit per decision of giving it vs nothing, by self-normalized inverse
    propensity over the holdout-served decisions with complete windows (module doc)."""
    if dataset.offers is None or "arm" not in exposures.columns:
        return []
    decisions = exposures.filter(
        pl.col("arm").is_not_null()
        & pl.col("propensity").is_not_null()
        & pl.col("seller_id").is_not_null()
        & (pl.col("ts") + timedelta(days=cfg.window_days) <= end)
    )
    if decisions.height == 0:
        return []
    rewards = realized_rewards(
        dataset,
        decisions.select("exposure_id", "buyer_id", "seller_id", "offer_id", "ts"),
        cfg.margins,
        cfg.margin_default,
        cfg.send_cost,
        horizon_days=cfg.window_days,
        shipping_cost=cfg.shipping_cost,
    ).join(dataset.offers.select("offer_id", "tool"), on="offer_id", how="left")
    rewards = rewards.join(decisions.select("exposure_id", "propensity"), on="exposure_id")
    y = rewards["reward"].to_numpy()
    w = 1.0 / rewards["propensity"].to_numpy()
    tool = rewards["tool"].fill_null("").to_numpy()
    z = NormalDist().inv_cdf(0.5 + cfg.level / 2)

    def snips(mask: np.ndarray) -> tuple[float, float, int]:
        if mask.sum() < 2:
            return float("nan"), float("nan"), int(mask.sum())
        ww = w * mask
        value = float((ww * y).sum() / ww.sum())
        var = float((ww**2 * (y - value) ** 2).sum() / ww.sum() ** 2)
        return value, var, int(mask.sum())

    nothing_value, nothing_var, n_nothing = snips(tool == "")
    out = []
    for name in sorted(set(tool) - {""}):
        value, var, n = snips(tool == name)
        se = float(np.sqrt(var + nothing_var))
        lift = value - nothing_value
        out.append(
            {
                "level": "tool",
                "key": name,
                "metric": "profit",
                "n_treated": n,
                "n_control": n_nothing,
                "treated": value,
                "control": nothing_value,
                "lift": lift,
                "se": se,
                "low": lift - z * se,
                "high": lift + z * se,
                "relative": lift / nothing_value if nothing_value else float("nan"),
                "variance_reduction": 0.0,
            }
        )
    return out


def incrementality(
    dataset: Dataset, config: IncrementalityConfig | None = None
) -> IncrementalityReport:
    """The incrementality report of a dataset whose exposures carry holdout arms (a
    serving decision log added to the dataset): see the module doc."""
    cfg = config if config is not None else IncrementalityConfig()
    notes: list[str] = []
    exposures = dataset.exposures
    empty = pl.DataFrame(schema=RESULT_SCHEMA)
    if (
        exposures is None
        or "arm" not in exposures.columns
        or exposures["arm"].null_count() == exposures.height
    ):
        notes.append(
            "no holdout-served decisions (exposures with an `arm`): serve with a holdout "
            "(serve config `holdout.share` > 0) and add the decision log (--decisions)"
        )
        return IncrementalityReport(empty, pl.DataFrame(), cfg, notes)
    end = cfg.end or dataset.events["ts"].max()
    assert isinstance(end, datetime)
    window = timedelta(days=cfg.window_days)
    units = served_units(exposures, window, end)
    cut = exposures.filter(pl.col("arm").is_not_null()).select("buyer_id", "seller_id").n_unique()
    if units.height < cut:
        notes.append(
            f"{cut - units.height:,} buyer-seller units left out: their "
            f"{cfg.window_days:g}-day window ends after the data ({end:%Y-%m-%d %H:%M})"
        )
    if units.height == 0:
        return IncrementalityReport(empty, units, cfg, notes)
    units = unit_outcomes(dataset, units, exposures, cfg)
    rows = _rows("overall", OVERALL, units, cfg)
    for (seller,), group in units.sort("seller_id").group_by("seller_id", maintain_order=True):
        rows.extend(_rows("seller", str(seller), group, cfg))
    rows.extend(tool_rows(dataset, exposures, end, cfg))
    table = pl.DataFrame(rows, schema=RESULT_SCHEMA)
    thin = table.filter((pl.col("metric") == "profit") & (pl.col("n_control") < 30))
    if thin.height:
        notes.append(
            f"{thin.height} rows have fewer than 30 control units: their intervals are rough"
        )
    return IncrementalityReport(table, units, cfg, notes)
