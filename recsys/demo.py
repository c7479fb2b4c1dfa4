"""`make demo`: the main job end to end on embedded defaults.

Each step prints what it did; steps whose parts are not built yet say so instead of
pretending, so the demo always runs to its end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from recsys.data import Dataset, load_dataset
from recsys.data.seller_terms import known_seller_terms
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.evaluation.policy_eval import learned_offers, policy_values_on_truth
from recsys.models.ranker import PromoRanker, RankerConfig
from recsys.policy import OfferPolicy, expected_incremental_profit

Echo = Callable[[str], None]
DemoStep = tuple[str, Callable[[Path, Echo], None]]
"""(title, step(demo directory, echo)): a demo step owned by another package."""

NOT_YET_BUILT: tuple[tuple[str, str], ...] = ()
SHOWCASE_STAGES = ("cart_abandoner", "lapsing", "loyal")


def run_demo(
    out: Path,
    buyers: int,
    seed: int,
    echo: Echo = print,
    steps: Sequence[DemoStep] = (),
) -> None:
    """Synthesize a marketplace under `out/data`, validate, train, evaluate and rank;
    then run `steps` (training with tracking, serving: wired in by the `recsys` command).
    """
    data_dir = out / "data"
    echo(f"== 1. synthetic marketplace: {buyers} buyers, seed {seed} ==")
    report = generate(SyntheticConfig(buyers=buyers, seed=seed), data_dir, overwrite=True)
    echo(report.format())

    echo("\n== 2. validate against the data contract ==")
    dataset = load_dataset(data_dir)
    echo(dataset.summary().format())

    echo("\n== 3. train: matrix factorization, journey, response and uplift ==")
    config = RankerConfig().with_seller_terms(known_seller_terms(data_dir))
    began = time.perf_counter()
    ranker = PromoRanker(config).fit(dataset)
    model_dir = ranker.save(out / "model")
    echo(
        f"{ranker.report_.format()}\ntrained in {time.perf_counter() - began:.1f}s; "
        f"saved to {model_dir}"
    )

    echo("\n== 4. true incremental profit of the policy vs baselines (ground truth) ==")
    truth = pl.read_parquet(data_dir / "truth" / "offers.parquet")
    valued = expected_incremental_profit(
        ranker.candidates(truth.select("buyer_id", "offer_id")), config.policy
    )
    values = policy_values_on_truth(truth, valued)
    oracle = values["oracle"]
    for name in ("oracle", "learned", "nothing", "random_same_volume", "response_same_volume"):
        echo(f"  {name:<22} {values[name]:10,.1f}  ({values[name] / oracle:6.1%} of oracle)")
    worst = min((v, k) for k, v in values.items() if k.startswith("blanket_"))
    best = max((v, k) for k, v in values.items() if k.startswith("blanket_"))
    echo(f"  coupon to everyone: from {worst[0]:,.1f} ({worst[1]}) to {best[0]:,.1f} ({best[1]})")
    echo(_issued_against_truth(learned_offers(truth, valued)))

    echo("\n== 5. rank the next campaign's offers for three buyers ==")
    echo(_showcase(ranker, dataset, truth))
    number = 6
    for title, step in steps:
        echo(f"\n== {number}. {title} ==")
        step(out, echo)
        number += 1
    for what, where in NOT_YET_BUILT:
        echo(f"\n== {number}. {what} ==\nnot built yet: {where}")
        number += 1
    echo("\ndemo finished")


MONEY_OFF = ("percent_off", "amount_off", "free_shipping", "points")
"""Tools that give money away (a reminder does not)."""


def _issued_against_truth(issued: pl.DataFrame) -> str:
    """How the offers the policy issues fare in the truth: by true stage, the tools sent
    and the share whose true incremental profit has the sign the model gave it."""
    if issued.height == 0:
        return "  the policy issues no offer"
    agree = ((issued["expected_value"] > 0) == (issued["incremental_profit"] > 0)).sum()
    lines = [
        f"  offers issued: {issued.height:,}; the true incremental profit has the model's "
        f"sign for {agree / issued.height:.0%} of them"
    ]
    by_stage = (
        issued.group_by("stage")
        .agg(
            pl.len().alias("n"),
            pl.col("tool").is_in(list(MONEY_OFF)).sum().alias("money_off"),
            pl.col("incremental_profit").sum().alias("true_profit"),
        )
        .sort("stage")
    )
    for stage, n, money_off, true_profit in by_stage.iter_rows():
        lines.append(
            f"    true stage {stage:<15} {n:>6,} offers, {money_off:>6,} of them money off; "
            f"true incremental profit {true_profit:+,.1f}"
        )
    return "\n".join(lines)


def _showcase(ranker: PromoRanker, dataset: Dataset, truth: pl.DataFrame) -> str:
    """Top offers, with reasons, for one buyer in each of a few journey stages."""
    assert dataset.offers is not None
    as_of = dataset.offers["start_ts"].max()
    next_offers = dataset.offers.filter(pl.col("start_ts") == as_of).select("offer_id")
    store = ranker.store_
    assert store is not None and store.buyers is not None
    picks = (
        store.buyers.filter(pl.col("journey_stage").is_in(SHOWCASE_STAGES))
        .sort("buyer_id")
        .group_by("journey_stage", maintain_order=True)
        .first()
        .select("buyer_id", "journey_stage")
    )
    pairs = picks.select("buyer_id").join(next_offers, how="cross")
    policy = OfferPolicy(ranker.config.policy)
    ranked = policy.rank(ranker.candidates(pairs), k=3, as_of=as_of)  # type: ignore[arg-type]
    true = dict(
        zip(
            zip(truth["buyer_id"], truth["offer_id"], strict=True),
            truth["incremental_profit"],
            strict=True,
        )
    )
    lines = []
    for buyer, stage in picks.iter_rows():
        lines.append(f"buyer {buyer} (journey stage: {stage})")
        for row in ranked.filter(pl.col("buyer_id") == buyer).iter_rows(named=True):
            if row["offer_id"] is None:
                lines.append(f"   no offer: {row['reason_text']}")
            else:
                actual = true.get((buyer, row["offer_id"]))
                truth_text = "" if actual is None else f" (truth {actual:+.3f})"
                lines.append(
                    f"   #{row['rank']} {row['offer_id']} {row['tool']:<13} "
                    f"expected profit {row['expected_value']:+.3f}{truth_text}: "
                    f"{row['reason_text']}"
                )
    return "\n".join(lines)
