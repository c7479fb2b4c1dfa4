"""Quality on the synthetic marketplace, where the ground truth is known (issue 7).

For each seed, a marketplace is synthesized and judged by the end-to-end evaluation
(`recsys.evaluation.report.evaluate_synthetic`, two held-out waves); nothing here
re-implements it. Kept per seed, with medians across seeds:

- true incremental profit of the learned policy, the oracle and the baselines, and each
  one's share of the oracle;
- redemptions per issued offer (the truth's P(redeem)), learned policy vs blanket;
- Qini of uplift vs response-only vs random ranking; IPS, SNIPS and DR against the truth;
- MF recall@k and NDCG@k vs popularity and personal frequency; wall seconds of each part.

- the shipped candidate and every candidate's cross-validated value (policy learning);
  the calibration of predicted incremental profit against its doubly robust realization.

Run per world of the simulator (`--effects stage|attributes|uniform`).

    python -m benchmarks.quality --buyers 2000 --seeds 1 2 3 [--effects stage]
        [--markdown quality.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import polars as pl

from recsys.data.synthetic import SyntheticConfig, generate
from recsys.evaluation.item_ranking import ItemRankingReport
from recsys.evaluation.policy_eval import (
    UNIT,
    OPEReport,
)
from recsys.evaluation.report import evaluate_synthetic

Figures = dict[str, float]
PAIR = ["buyer_id", "offer_id"]
FREE_TOOLS = frozenset({"reminder"})
"""Tools that give nothing away: a reminder is sent, never redeemed."""
HOLDOUT_WAVES = 2


@dataclass(frozen=True)
class SeedFigures:
    """Every quality figure of one seed's marketplace, grouped by what it judges."""

    seed: int
    policy_value: Figures
    """True incremental profit of each policy at the decision time (report order)."""
    share_of_oracle: Figures
    """Each policy's value over the oracle's."""
    redemption: Figures
    """Expected true redemptions per issued offer: learned, and blanket per tool."""
    issued: Figures
    """The learned policy's offers: how many, to how many decision units, by tool."""
    qini: Figures
    ope: Figures
    """IPS, SNIPS and DR estimates of the learned policy on the held-out waves, vs truth."""
    item_ranking: Figures
    learning: Figures
    """Policy learning on the full fit: each candidate's CV value, and which shipped."""
    calibration: Figures
    """Held-out deciles of predicted incremental profit and their DR realization."""
    seconds: Figures

    def sections(self) -> dict[str, Figures]:
        """Every figure group by name (all fields but the seed)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "seed"}


@dataclass(frozen=True)
class QualityFigures:
    """Per-seed figures of one marketplace size and their medians across seeds.

    `median[section][key]` is over the seeds that have the key (a figure that cannot be
    computed, e.g. a discount rate when no discount was issued, is left out, not NaN).
    """

    buyers: int
    per_seed: list[SeedFigures]
    median: dict[str, Figures]
    effects: str = "stage"
    shipped: list[str] = field(default_factory=list)
    """The candidate policy learning shipped, per seed."""

    @property
    def seeds(self) -> list[int]:
        return [s.seed for s in self.per_seed]

    def spread(self, section: str, key: str) -> tuple[float, float] | None:
        """(min, max) of a figure across seeds; None if no seed has it."""
        values = _values(self.per_seed, section, key)
        return (min(values), max(values)) if values else None

    def as_dict(self) -> dict[str, Any]:
        """Plain dicts and lists, ready for `json.dumps`."""
        return {
            "buyers": self.buyers,
            "effects": self.effects,
            "shipped": self.shipped,
            "seeds": self.seeds,
            "holdout_waves": HOLDOUT_WAVES,
            "median": self.median,
            "per_seed": [asdict(s) for s in self.per_seed],
        }


def measure_quality(
    buyers: int, seeds: Sequence[int], work: Path, effects: str = "stage"
) -> QualityFigures:
    """Synthesize a marketplace of `buyers` per seed in world `effects` under `work`,
    judge it, take medians.

    Each seed's data goes to `work/{effects}_buyers{N}_seed{S}` (replaced if present).
    """
    if not seeds:
        raise ValueError("measure_quality needs at least one seed, e.g. seeds=[1, 2, 3]")
    runs = [
        _measure_seed(buyers, s, work / f"{effects}_buyers{buyers}_seed{s}", effects) for s in seeds
    ]
    per_seed = [figures for figures, _ in runs]
    return QualityFigures(
        buyers=buyers,
        per_seed=per_seed,
        median=_medians(per_seed),
        effects=effects,
        shipped=[shipped for _, shipped in runs],
    )


def _measure_seed(buyers: int, seed: int, data: Path, effects: str) -> tuple[SeedFigures, str]:
    """One seed: synthesize, evaluate, and read every figure off the one evaluation."""
    began = time.perf_counter()
    config = SyntheticConfig.from_dict({"buyers": buyers, "seed": seed, "effects": effects})
    generate(config, data, overwrite=True)
    synth_s = time.perf_counter() - began
    began = time.perf_counter()
    report = evaluate_synthetic(data, holdout_waves=HOLDOUT_WAVES)
    evaluate_s = time.perf_counter() - began
    if report.options is None or report.issued is None:
        raise RuntimeError(f"seed {seed}: the evaluation kept no options to measure")
    options = report.options
    chosen = options.join(report.issued.select(PAIR), on=PAIR, how="semi")
    if chosen.height != report.policy_values.get("learned_issued"):
        raise RuntimeError(
            f"seed {seed}: {chosen.height} offers chosen but the report values "
            f"{report.policy_values.get('learned_issued')}; the two choices must be one"
        )
    values = {k: v for k, v in report.policy_values.items() if k != "learned_issued"}
    learning, shipped = _learning_figures(report)
    figures = SeedFigures(
        seed=seed,
        policy_value=values,
        share_of_oracle=_shares_of_oracle(values),
        redemption=_redemptions_per_offer(chosen, options),
        issued=_issued_mix(chosen, options),
        qini=dict(report.qini),
        ope=_ope_figures(report.ope),
        item_ranking=_item_figures(report.items),
        learning=learning,
        calibration=_calibration_figures(report),
        seconds={"synthesize": synth_s, **report.seconds, "evaluate_total": evaluate_s},
    )
    return figures, shipped


def _learning_figures(report: Any) -> tuple[Figures, str]:
    """Each candidate's CV value on the full fit (per decision) and which one shipped."""
    selection = report.selection
    if selection is None:
        return {}, "none"
    out: Figures = {f"cv_{pv.name}": pv.value for pv in selection.candidates}
    out.update({f"cv_{pv.name}_se": pv.std_error for pv in selection.candidates})
    return out, selection.chosen


def _calibration_figures(report: Any) -> Figures:
    """Predicted vs doubly robust realized incremental profit per decile (held out)."""
    held = report.holdout
    if held is None or held.curves.value is None:
        return {}
    predicted, realized = held.curves.value
    out: Figures = {"slope": held.metrics.get("value_calibration_slope", float("nan"))}
    for i, (p, r) in enumerate(zip(predicted, realized, strict=True)):
        out[f"decile{i}_predicted"] = float(p)
        out[f"decile{i}_realized"] = float(r)
    return out


def _shares_of_oracle(values: Figures) -> Figures:
    """Each policy's value over the oracle's (empty if the oracle earns nothing)."""
    oracle = values.get("oracle", 0.0)
    return {name: value / oracle for name, value in values.items()} if oracle > 0 else {}


def _redemptions_per_offer(chosen: pl.DataFrame, options: pl.DataFrame) -> Figures:
    """Expected true redemptions per issued offer: the mean true P(redeem) of the offers.

    Learned: over the offers it issues (all, and discount coupons only). Blanket per tool:
    each decision unit with the tool gets it, valued as `policy_values_on_truth` does
    (the mean over the unit's options of that tool), then averaged over the units.
    """
    rates = {
        "learned": _mean(chosen["p_redeem"]),
        "learned_discounts": _mean(_discounts(chosen)["p_redeem"]),
    }
    for tool in sorted(options["tool"].unique().to_list()):
        per_unit = (
            options.filter(pl.col("tool") == tool)
            .group_by(list(UNIT))
            .agg(pl.col("p_redeem").mean())
        )
        rates[f"blanket_{tool}"] = _mean(per_unit["p_redeem"])
    return {k: v for k, v in rates.items() if v is not None}


def _issued_mix(chosen: pl.DataFrame, options: pl.DataFrame) -> Figures:
    """How many offers the learned policy issues, to how many units, and of which tools."""
    units = options.select(list(UNIT)).unique().height
    mix: Figures = {
        "offers": float(chosen.height),
        "decision_units": float(units),
        "share_of_units_issued": chosen.height / units if units else 0.0,
        "expected_redemptions": float(chosen["p_redeem"].sum()),
    }
    if chosen.height:
        mix["share_discounts"] = _discounts(chosen).height / chosen.height
        counts = chosen.group_by("tool").len().sort("tool")
        for tool, n in counts.iter_rows():
            mix[f"tool_{tool}"] = n / chosen.height
    return mix


def _discounts(offers: pl.DataFrame) -> pl.DataFrame:
    """The offers that give something away (every tool but the free ones)."""
    return offers.filter(~pl.col("tool").is_in(list(FREE_TOOLS)))


def _ope_figures(ope: OPEReport | None) -> Figures:
    """Estimate, standard error, ESS and relative error vs the truth of each estimator."""
    if ope is None:
        return {}
    out: Figures = {"decisions": float(ope.n), "logged_value": ope.logged_value}
    if ope.true_value is not None:
        out["true_value"] = ope.true_value
    for name, est in (("ips", ope.ips), ("snips", ope.snips), ("dr", ope.dr)):
        out[f"{name}_estimate"] = est.value
        out[f"{name}_std_error"] = est.std_error
        out[f"{name}_ess"] = est.effective_sample_size
        error = ope.relative_error(est)
        if error is not None:
            out[f"{name}_relative_error"] = error
    return out


def _item_figures(items: ItemRankingReport | None) -> Figures:
    """recall@k and NDCG@k of each item ranker, with k and the number of test buyers."""
    if items is None:
        return {}
    out: Figures = {"k": float(items.k), "test_buyers": float(items.n_buyers)}
    for name in items.recall:
        out[f"recall_{name}"] = items.recall[name]
        out[f"ndcg_{name}"] = items.ndcg[name]
    return out


def _mean(values: pl.Series) -> float | None:
    return float(values.mean()) if values.len() else None  # type: ignore[arg-type]


def _values(per_seed: Sequence[SeedFigures], section: str, key: str) -> list[float]:
    """A figure's value in every seed that has it."""
    return [s.sections()[section][key] for s in per_seed if key in s.sections()[section]]


def _medians(per_seed: Sequence[SeedFigures]) -> dict[str, Figures]:
    """Median of every figure across seeds, keys in the order they first appear."""
    out: dict[str, Figures] = {}
    for section in per_seed[0].sections():
        keys = dict.fromkeys(k for s in per_seed for k in s.sections()[section])
        out[section] = {k: statistics.median(_values(per_seed, section, k)) for k in keys}
    return out


def format_quality_markdown(figures: QualityFigures) -> str:
    """The BENCHMARKS.md section: headline figures as tables, medians with their range."""
    seeds = " ".join(str(s) for s in figures.seeds)
    lines = [
        f"## Quality on the synthetic marketplace: world `{figures.effects}`, "
        f"{figures.buyers:,} buyers (ground truth known)",
        "",
        f"{figures.buyers:,} buyers, seeds {seeds}, {HOLDOUT_WAVES} held-out waves: medians "
        "across seeds, with the range (min to max) in brackets when there is more than one seed.",
        "",
        f"Reproduce: `python -m benchmarks.quality --buyers {figures.buyers} --seeds {seeds} "
        f"--effects {figures.effects}`",
        "",
        *_verdict_table(figures),
    ]
    for part in (
        _policy_table,
        _learning_table,
        _calibration_table,
        _redemption_table,
        _qini_table,
        _ope_table,
        _item_table,
    ):
        lines += ["", *part(figures)]
    lines += ["", *_seconds_table(figures)]
    return "\n".join(lines) + "\n"


def _cell(figures: QualityFigures, section: str, key: str, fmt: str) -> str:
    """A median formatted with `fmt`, then its range across seeds if there are several."""
    if key not in figures.median.get(section, {}):
        return "n/a"
    text = format(figures.median[section][key], fmt)
    spread = figures.spread(section, key)
    if len(figures.per_seed) > 1 and spread is not None:
        text += f" ({format(spread[0], fmt)} to {format(spread[1], fmt)})"
    return text


def best_blanket(values: Figures) -> tuple[str, float] | None:
    """The best one-tool-for-everyone policy of one seed, by true profit (None: none)."""
    blankets = {k: v for k, v in values.items() if k.startswith("blanket_")}
    if not blankets:
        return None
    name = max(blankets, key=blankets.__getitem__)
    return name, blankets[name]


def _verdict_table(figures: QualityFigures) -> list[str]:
    """Per seed: the learned policy's share of the oracle next to the best blanket's."""
    rows = []
    for seed_figures, shipped in zip(figures.per_seed, figures.shipped, strict=True):
        values, shares = seed_figures.policy_value, seed_figures.share_of_oracle
        best = best_blanket(values)
        if best is None:
            continue
        name, value = best
        gap = values["learned"] - value
        rows.append(
            f"| {seed_figures.seed} | {shares.get('learned', float('nan')):.1%} | "
            f"{name} {shares.get(name, float('nan')):.1%} | {gap:+,.1f} | {shipped} |"
        )
    return [
        "| seed | learned, share of oracle | best blanket | learned - best blanket | shipped |",
        "|---:|---:|---|---:|---|",
        *rows,
    ]


def _learning_table(figures: QualityFigures) -> list[str]:
    """Each candidate's cross-validated value per decision (full fit), medians."""
    keys = [k for k in figures.median.get("learning", {}) if not k.endswith("_se")]
    rows = [
        f"| {k.removeprefix('cv_')} | {_cell(figures, 'learning', k, '.4f')} "
        f"| {_cell(figures, 'learning', f'{k}_se', '.4f')} |"
        for k in keys
    ]
    return [
        "### Policy learning: cross-validated value per logged decision (folds by buyer)",
        "",
        "| candidate | value | std error |",
        "|---|---:|---:|",
        *rows,
    ]


def _calibration_table(figures: QualityFigures) -> list[str]:
    """Held-out predicted vs DR-realized incremental profit by decile, medians."""
    cal = figures.median.get("calibration", {})
    if not cal:
        return []
    rows = [
        f"| {i} | {_cell(figures, 'calibration', f'decile{i}_predicted', '.4f')} "
        f"| {_cell(figures, 'calibration', f'decile{i}_realized', '.4f')} |"
        for i in range(10)
        if f"decile{i}_predicted" in cal
    ]
    return [
        "### Calibration of incremental profit on the held-out waves",
        "",
        f"Slope of DR-realized on predicted over the deciles: "
        f"{_cell(figures, 'calibration', 'slope', '.2f')} (1 = calibrated).",
        "",
        "| decile | predicted | DR realized |",
        "|---:|---:|---:|",
        *rows,
    ]


def _policy_table(figures: QualityFigures) -> list[str]:
    """True incremental profit and share of the oracle of every policy."""
    rows = [
        f"| {name} | {_cell(figures, 'policy_value', name, ',.1f')} "
        f"| {_cell(figures, 'share_of_oracle', name, '.1%')} |"
        for name in figures.median["policy_value"]
    ]
    issued = _cell(figures, "issued", "offers", ",.0f")
    units = _cell(figures, "issued", "decision_units", ",.0f")
    return [
        "### True incremental profit at the decision time",
        "",
        "| policy | incremental profit | share of oracle |",
        "|---|---:|---:|",
        *rows,
        "",
        f"The learned policy issues {issued} offers to {units} decision units (buyer, seller).",
    ]


def _redemption_table(figures: QualityFigures) -> list[str]:
    """Expected true redemptions per issued offer, learned vs blanket, and the tool mix."""
    rows = [
        f"| {name} | {_cell(figures, 'redemption', name, '.4f')} |"
        for name in figures.median["redemption"]
    ]
    mix = ", ".join(
        f"{key.removeprefix('tool_')} {_cell(figures, 'issued', key, '.0%')}"
        for key in figures.median["issued"]
        if key.startswith("tool_")
    )
    return [
        "### Redemptions per issued offer (true P(redeem))",
        "",
        "| policy | redemptions per offer |",
        "|---|---:|",
        *rows,
        "",
        "`learned_discounts` counts only discount coupons (not the free reminder). The learned "
        f"policy's offers by tool: {mix or 'none issued'}.",
    ]


def _qini_table(figures: QualityFigures) -> list[str]:
    """Normalized Qini of each ranking on the held-out waves."""
    rows = [f"| {k} | {_cell(figures, 'qini', k, '.4f')} |" for k in figures.median["qini"]]
    return [
        "### Uplift ranking on the held-out waves (Qini, normalized)",
        "",
        "| ranking | Qini |",
        "|---|---:|",
        *rows,
    ]


def _ope_table(figures: QualityFigures) -> list[str]:
    """IPS, SNIPS and DR estimates of the learned policy next to its true value."""
    rows = [
        f"| {name.upper()} | {_cell(figures, 'ope', f'{name}_estimate', '.4f')} "
        f"| {_cell(figures, 'ope', f'{name}_std_error', '.4f')} "
        f"| {_cell(figures, 'ope', f'{name}_relative_error', '.1%')} |"
        for name in ("ips", "snips", "dr")
    ]
    true = _cell(figures, "ope", "true_value", ".4f")
    n = _cell(figures, "ope", "decisions", ",.0f")
    return [
        "### Off-policy estimates of the learned policy's value per decision",
        "",
        f"True value {true} per decision, on {n} held-out logged decisions.",
        "",
        "| estimator | estimate | std error | error vs truth |",
        "|---|---:|---:|---:|",
        *rows,
    ]


def _item_table(figures: QualityFigures) -> list[str]:
    """recall@k and NDCG@k of MF against popularity and personal frequency."""
    items = figures.median["item_ranking"]
    k = int(items.get("k", 10))
    names = [key.removeprefix("recall_") for key in items if key.startswith("recall_")]
    rows = [
        f"| {name} | {_cell(figures, 'item_ranking', f'recall_{name}', '.4f')} "
        f"| {_cell(figures, 'item_ranking', f'ndcg_{name}', '.4f')} |"
        for name in names
    ]
    return [
        "### Item ranking",
        "",
        f"| ranker | recall@{k} | NDCG@{k} |",
        "|---|---:|---:|",
        *rows,
    ]


def _seconds_table(figures: QualityFigures) -> list[str]:
    """Wall seconds of each part, per seed (the machine is shared: noisy)."""
    rows = [f"| {k} | {_cell(figures, 'seconds', k, '.1f')} |" for k in figures.median["seconds"]]
    return ["### Wall seconds per seed", "", "| part | seconds |", "|---|---:|", *rows]


def world_arguments(description: str, buyers: int, seeds: Sequence[int]) -> argparse.Namespace:
    """The command line of a benchmark run per simulator world and size: `--buyers`,
    `--seeds`, `--effects`, `--work` and `--markdown` (quality, power)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--buyers", type=int, default=buyers, help="buyers per marketplace")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    parser.add_argument("--work", type=Path, help="where marketplaces go (default: a temp dir)")
    parser.add_argument("--effects", default="stage", help="stage, attributes or uniform")
    parser.add_argument("--markdown", type=Path, help="also write the BENCHMARKS.md section")
    return parser.parse_args()


def main() -> None:
    """Measure, print the figures as JSON, and optionally write the Markdown section."""
    args = world_arguments(__doc__.splitlines()[0], 2000, [1, 2, 3])
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        figures = measure_quality(args.buyers, args.seeds, args.work or Path(tmp), args.effects)
    print(json.dumps(figures.as_dict(), indent=2))
    if args.markdown:
        args.markdown.write_text(format_quality_markdown(figures))
    print(f"quality: {time.perf_counter() - began:.1f} s in all", file=sys.stderr)


if __name__ == "__main__":
    main()
