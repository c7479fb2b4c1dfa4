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
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from recsys.data.dataset import Dataset
from recsys.data.loader import load_dataset
from recsys.data.seller_terms import known_seller_terms
from recsys.evaluation.holdout import HoldoutReport, evaluate_holdout, holdout_split
from recsys.evaluation.item_ranking import ItemRankingReport, evaluate_item_ranking
from recsys.evaluation.policy_eval import OPEReport, learned_offers, policy_values_on_truth
from recsys.learning.selection import SelectionReport
from recsys.models.ranker import PromoRanker, RankerConfig
from recsys.policy import expected_incremental_profit

PAIR = ["buyer_id", "offer_id"]


@dataclass
class SyntheticReport:
    """Every figure of the evaluation, with how long it took."""

    ope: OPEReport | None = None
    qini: dict[str, float] = field(default_factory=dict)
    targeting: dict[str, float] = field(default_factory=dict)
    policy_values: dict[str, float] = field(default_factory=dict)
    items: ItemRankingReport | None = None
    options: pl.DataFrame | None = None
    """The truth's options the policies were valued on (those the ranker scored)."""
    issued: pl.DataFrame | None = None
    """The learned policy's offers on those options (truth columns plus its scores)."""
    fit_notes: str = ""
    holdout: HoldoutReport | None = None
    """The held-out evaluation training runs (candidates' values, calibration, baselines)."""
    selection: SelectionReport | None = None
    """Policy learning on the full fit: every candidate's cross-validated value."""
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


def _config_with_true_terms(config: RankerConfig, data_dir: Path) -> RankerConfig:
    """`config` with the marketplace's seller margins and send cost: the engine is judged
    by the truth's profit, so it values offers with the costs that profit charges."""
    return config.with_seller_terms(known_seller_terms(data_dir))


def evaluate_synthetic(
    data_dir: str | Path, config: RankerConfig | None = None, holdout_waves: int = 1
) -> SyntheticReport:
    """Run the whole evaluation on a marketplace written by `recsys.data.synthetic`.

    The last `holdout_waves` campaign waves (distinct exposure days) are held out for
    the off-policy and uplift figures; more waves, smaller standard errors.
    """
    data_dir = Path(data_dir)
    config = _config_with_true_terms(config or RankerConfig(), data_dir)
    dataset = load_dataset(data_dir)
    report = SyntheticReport()
    _held_out_wave(dataset, data_dir, config, report, holdout_waves)
    began = time.perf_counter()
    ranker = PromoRanker(config).fit(dataset)
    report.seconds["fit_all"] = time.perf_counter() - began
    report.fit_notes = ranker.report_.format()
    report.selection = ranker.learner_.selection_ if ranker.learner_ is not None else None
    truth = _truth(data_dir, "offers")
    cand = ranker.candidates(truth.select("buyer_id", "offer_id"))
    scored = _valued(cand, config)
    report.policy_values = policy_values_on_truth(truth, scored)
    report.options = truth.join(scored.select("buyer_id", "offer_id"), on=PAIR, how="semi")
    report.issued = learned_offers(truth, scored)
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
    """The held-out evaluation of `recsys.evaluation.holdout` (the one training runs), with
    the truth's exact value of the learned policy's choices beside its estimates."""
    split = holdout_split(dataset, waves)
    if split is None:
        raise ValueError(f"{data_dir}: no randomized campaign waves to hold out")
    began = time.perf_counter()
    ranker = PromoRanker(config).fit(dataset.before(split.start), as_of=split.start)
    report.seconds["fit_before_holdout"] = time.perf_counter() - began
    held = evaluate_holdout(ranker, dataset, split)
    report.holdout = held
    assert held.ope is not None and held.choices is not None
    truth_options = _truth(data_dir, "exposure_options").join(
        held.choices.select("exposure_id"), on="exposure_id"
    )
    key = pl.col("offer_id").fill_null("__nothing__")
    truth_profit = pl.concat(
        [
            truth_options.select(
                "exposure_id", key.alias("action"), pl.col("profit_treated").alias("profit")
            ),
            truth_options.group_by("exposure_id")
            .agg(pl.col("profit_control").first().alias("profit"))
            .select("exposure_id", pl.lit("__nothing__").alias("action"), "profit"),
        ]
    )
    valued = held.choices.select("exposure_id", key.alias("action")).join(
        truth_profit, on=["exposure_id", "action"], how="left"
    )
    report.ope = replace(held.ope, true_value=float(valued["profit"].fill_null(0.0).mean()))  # type: ignore[arg-type]
    m = held.metrics
    report.qini = {
        "uplift_model": m["qini_uplift"],
        "response_only": m["qini_response"],
        "random": m["qini_random"],
    }
    report.targeting = {
        "roc_auc_p_redeem": m["auc_p_redeem"],
        **{k: v for k, v in m.items() if k.startswith("gain_at_")},
        "redemption_rate": m["redemption_rate"],
    }
