"""The end-to-end evaluation on a synthetic marketplace, where the truth is known.

1. Hold out the last campaign wave: fit the ranker on everything before it.
2. On the held-out logged decisions: the learned policy's value by IPS, SNIPS and DR,
   next to its exact value from the truth; Qini of uplift vs response-only ranking;
   targeting gain and AUC of P(redeem).
3. Fit on all data, as production would, and compare the learned policy's true
   incremental profit at the decision time with the oracle and the baselines.
4. Item ranking: MF against popularity and personal purchase frequency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.dataset import Dataset
from recsys.data.loader import load_dataset
from recsys.evaluation.item_ranking import ItemRankingReport, evaluate_item_ranking
from recsys.evaluation.policy_eval import (
    OPEReport,
    choose_best,
    off_policy_report,
    policy_values_on_truth,
    realized_rewards,
)
from recsys.evaluation.targeting import gain_at_k, roc_auc
from recsys.evaluation.uplift import qini_coefficient
from recsys.models.ranker import PromoRanker, RankerConfig
from recsys.policy import expected_incremental_profit


@dataclass
class SyntheticReport:
    """Every figure of the evaluation, with how long it took."""

    ope: OPEReport | None = None
    qini: dict[str, float] = field(default_factory=dict)
    targeting: dict[str, float] = field(default_factory=dict)
    policy_values: dict[str, float] = field(default_factory=dict)
    items: ItemRankingReport | None = None
    fit_notes: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    def format(self) -> str:
        out = ["== policy value at the decision time (true incremental profit) =="]
        oracle = self.policy_values.get("oracle", float("nan"))
        for name, value in self.policy_values.items():
            if name == "learned_issued":
                continue
            share = f"{value / oracle:7.1%}" if oracle else "   n/a"
            out.append(f"  {name:<28} {value:12,.1f}  {share} of oracle")
        out.append(
            f"  offers issued by the learned policy: {self.policy_values.get('learned_issued', 0):,.0f}"  # noqa: E501
        )
        if self.ope is not None:
            o = self.ope
            out.append(f"== off-policy estimates on the held-out wave ({o.n:,} decisions) ==")
            out.append(f"  true value of the learned policy  {o.true_value:.4f} per decision")
            for name, est in (("IPS", o.ips), ("SNIPS", o.snips), ("DR", o.dr)):
                err = o.relative_error(est)
                ess = est.effective_sample_size
                line = f"  {name:<5} {est.value:.4f} +- {est.std_error:.4f}  ESS {ess:,.0f}"
                out.append(line + (f"  error {err:.1%}" if err is not None else ""))
            out.append(f"  logged policy's realized value    {o.logged_value:.4f}")
        out.append("== uplift ranking on the held-out wave (Qini, normalized) ==")
        out += [f"  {k:<28} {v:.4f}" for k, v in self.qini.items()]
        out.append("== targeting P(redeem) on the held-out wave ==")
        out += [f"  {k:<28} {v:.4f}" for k, v in self.targeting.items()]
        if self.items is not None:
            out.append("== " + self.items.format())
        out.append("== fit ==\n" + self.fit_notes)
        out.append("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        return "\n".join(out)


def _truth(data_dir: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(data_dir / "truth" / f"{name}.parquet")


def _config_with_true_margins(config: RankerConfig, data_dir: Path) -> RankerConfig:
    sellers = _truth(data_dir, "sellers")
    cfg = config.model_copy(deep=True)
    cfg.seller_margins = dict(zip(sellers["seller_id"], sellers["margin"], strict=True))
    return cfg


def evaluate_synthetic(
    data_dir: str | Path, config: RankerConfig | None = None, holdout_waves: int = 1
) -> SyntheticReport:
    """Run the whole evaluation on a marketplace written by `recsys.data.synthetic`.

    The last `holdout_waves` campaign waves (distinct exposure days) are held out for
    the off-policy and uplift figures; more waves, smaller standard errors.
    """
    data_dir = Path(data_dir)
    config = _config_with_true_margins(config or RankerConfig(), data_dir)
    dataset = load_dataset(data_dir)
    report = SyntheticReport()
    _held_out_wave(dataset, data_dir, config, report, holdout_waves)
    began = time.perf_counter()
    ranker = PromoRanker(config).fit(dataset)
    report.seconds["fit_all"] = time.perf_counter() - began
    report.fit_notes = ranker.report_.format()
    truth = _truth(data_dir, "offers")
    cand = ranker.candidates(truth.select("buyer_id", "offer_id"))
    scored = _valued(cand, config)
    report.policy_values = policy_values_on_truth(truth, scored)
    began = time.perf_counter()
    report.items = evaluate_item_ranking(dataset, config.mf)
    report.seconds["item_ranking"] = time.perf_counter() - began
    return report


def _valued(candidates: pl.DataFrame, config: RankerConfig) -> pl.DataFrame:
    """Candidates with the policy's expected value (history = past buys of the offer's items)."""
    valued = expected_incremental_profit(candidates, config.policy)
    return valued.with_columns(pl.col("history").fill_null(0.0))


def _held_out_wave(
    dataset: Dataset, data_dir: Path, config: RankerConfig, report: SyntheticReport, waves: int
) -> None:
    exposures = dataset.exposures
    assert exposures is not None
    days = exposures.filter(pl.col("propensity").is_not_null())["ts"].dt.truncate("1d").unique()
    start = days.sort(descending=True)[min(waves, len(days)) - 1]
    assert isinstance(start, datetime)
    began = time.perf_counter()
    ranker = PromoRanker(config).fit(dataset.before(start), as_of=start)
    report.seconds["fit_before_holdout"] = time.perf_counter() - began

    truth = _truth(data_dir, "exposures").select("exposure_id", "seller_id", "stage")
    logged = exposures.filter((pl.col("ts") >= start) & pl.col("propensity").is_not_null()).join(
        truth, on="exposure_id"
    )
    options = _truth(data_dir, "exposure_options").join(
        logged.select("exposure_id", "buyer_id", "seller_id"), on="exposure_id"
    )
    cand = ranker.candidates(options.select("buyer_id", "offer_id"))
    scored = _valued(cand, config).with_columns(
        options["exposure_id"],
        (
            pl.col("margin")
            * pl.col("order_value")
            * (pl.col("p_purchase").fill_null(0.0) + pl.col("uplift").fill_null(0.0))
            - pl.col("p_redeem") * pl.col("redemption_cost")
            - config.policy.send_cost
        ).alias("q"),
        (pl.col("margin") * pl.col("order_value") * pl.col("p_purchase").fill_null(0.0)).alias(
            "q_nothing"
        ),
    )
    choices = choose_best(scored.select("exposure_id", "offer_id", "expected_value"))
    q_hat = pl.concat(
        [
            scored.select("exposure_id", "offer_id", "q"),
            scored.group_by("exposure_id")
            .agg(pl.col("q_nothing").first().alias("q"))
            .with_columns(pl.lit(None, pl.String).alias("offer_id"))
            .select("exposure_id", "offer_id", "q"),
        ]
    )
    rewards = realized_rewards(
        dataset,
        logged.select("exposure_id", "buyer_id", "seller_id", "offer_id", "ts"),
        config.seller_margins,
        config.policy.margin_default,
        config.policy.send_cost,
        horizon_days=config.response.horizon_days,
        shipping_cost=config.policy.default_shipping_cost,
    )
    truth_profit = pl.concat(
        [
            options.select("exposure_id", "offer_id", pl.col("profit_treated").alias("profit")),
            options.group_by("exposure_id")
            .agg(pl.col("profit_control").first().alias("profit"))
            .with_columns(pl.lit(None, pl.String).alias("offer_id"))
            .select("exposure_id", "offer_id", "profit"),
        ]
    )
    report.ope = off_policy_report(
        rewards.join(logged.select("exposure_id", "propensity"), on="exposure_id"),
        choices,
        q_hat,
        truth_profit,
    )
    _uplift_and_targeting(dataset, logged, rewards, scored, report)


def _uplift_and_targeting(
    dataset: Dataset,
    logged: pl.DataFrame,
    rewards: pl.DataFrame,
    scored: pl.DataFrame,
    report: SyntheticReport,
) -> None:
    """Qini of uplift vs response scores, gain and AUC of P(redeem), on logged decisions."""
    rewards = rewards.with_columns((pl.col("gross_value") > 0).cast(pl.Float64).alias("purchased"))
    # Treated rows: scores of the offer received; control rows: mean over their options.
    own = scored.select("exposure_id", "offer_id", "uplift", "p_redeem")
    treated = rewards.filter(pl.col("offer_id").is_not_null()).join(
        own, on=["exposure_id", "offer_id"], how="left"
    )
    control = rewards.filter(pl.col("offer_id").is_null()).join(
        own.group_by("exposure_id").agg(pl.col("uplift", "p_redeem").mean()),
        on="exposure_id",
        how="left",
    )
    rows = pl.concat([treated, control], how="diagonal_relaxed").join(
        logged.select("exposure_id", "propensity"), on="exposure_id"
    )
    y = rows["purchased"].to_numpy()
    t = rows["offer_id"].is_not_null().cast(pl.Int8).to_numpy()
    prop = rows["propensity"].to_numpy()
    for name, column in (("uplift_model", "uplift"), ("response_only", "p_redeem")):
        score = rows[column].fill_null(0.0).to_numpy()
        report.qini[name] = qini_coefficient(score, y, t, propensity=prop)
    rng = np.random.default_rng(0)
    report.qini["random"] = qini_coefficient(rng.random(len(y)), y, t, propensity=prop)

    redeemed = dataset.redemptions
    assert redeemed is not None
    red = set(redeemed["exposure_id"].drop_nulls().to_list())
    issued = treated.with_columns(
        pl.col("exposure_id").is_in(list(red)).cast(pl.Float64).alias("redeemed")
    )
    p = issued["p_redeem"].fill_null(0.0).to_numpy()
    r = issued["redeemed"].to_numpy()
    report.targeting["roc_auc_p_redeem"] = roc_auc(p, r)
    for frac, gain in gain_at_k(p, r, (0.1, 0.2, 0.5)).items():
        report.targeting[f"gain_at_{int(frac * 100)}pct"] = gain
    report.targeting["redemption_rate"] = float(r.mean()) if len(r) else float("nan")
