"""The incrementality report on hand-made logs with known answers."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data import load_dataset
from recsys.data.dataset import Dataset
from recsys.data.schema import REDEMPTIONS
from recsys.evaluation.incrementality import (
    OVERALL,
    IncrementalityConfig,
    cuped_adjust,
    difference,
    incrementality,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)
Z90 = 1.6448536269514722


def build(
    root: Path,
    arms: list[str],
    bought: list[int],
    pre: list[int] | None = None,
    seller: str = "s1",
    redeemed: set[int] = frozenset(),  # type: ignore[assignment]
) -> Dataset:
    """Buyer i is served at T0 in `arms[i]`; buys `bought[i]` items (price 10) two days
    later and `pre[i]` items three days before. Treated buyers get offer o1 (10 % off);
    buyers in `redeemed` pay 9 instead of 10 for their first item."""
    n = len(arms)
    pre = pre or [0] * n
    events = []
    for i in range(n):
        for k in range(bought[i]):
            paid = 9.0 if (i in redeemed and k == 0) else 10.0
            at = T0 + timedelta(days=2, minutes=k)
            events.append((f"b{i}", "i1", "purchase", at, f"o{i}-{k}", paid))
        for k in range(pre[i]):
            at = T0 - timedelta(days=3, minutes=k)
            events.append((f"b{i}", "i1", "purchase", at, f"p{i}-{k}", 10.0))
    events.append(("late", "i1", "view", T0 + timedelta(days=40), None, None))
    frames = {
        "items": pl.DataFrame({"item_id": ["i1"], "seller_id": [seller], "price": [10.0]}),
        "events": pl.DataFrame(
            events,
            schema=["buyer_id", "item_id", "event_type", "ts", "order_id", "amount"],
            orient="row",
        ),
        "offers": pl.DataFrame(
            {"offer_id": ["o1"], "tool": ["percent_off"], "seller_id": [seller], "value": [0.1]}
        ),
        "exposures": pl.DataFrame(
            {
                "exposure_id": [f"e{i}" for i in range(n)],
                "buyer_id": [f"b{i}" for i in range(n)],
                "offer_id": ["o1" if a == "treated" else None for a in arms],
                "ts": [T0] * n,
                "propensity": [0.9 if a == "treated" else 0.1 for a in arms],
                "policy": ["v1"] * n,
                "seller_id": [seller] * n,
                "arm": arms,
            }
        ),
        "redemptions": pl.DataFrame(
            {
                "buyer_id": [f"b{i}" for i in sorted(redeemed)],
                "offer_id": ["o1"] * len(redeemed),
                "ts": [T0 + timedelta(days=2)] * len(redeemed),
                "exposure_id": [f"e{i}" for i in sorted(redeemed)],
                "order_id": [f"o{i}-0" for i in sorted(redeemed)],
                "amount": [9.0] * len(redeemed),
            },
            schema=REDEMPTIONS.schema,
        ),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.write_parquet(root / f"{name}.parquet")
    return load_dataset(root)


def test_lift_and_interval_on_a_known_difference(tmp_path: Path) -> None:
    # 40 treated (20 buy one item), 40 control (10 buy): rate 0.5 vs 0.25.
    arms = ["treated"] * 40 + ["control"] * 40
    bought = [1] * 20 + [0] * 20 + [1] * 10 + [0] * 30
    report = incrementality(
        build(tmp_path, arms, bought), IncrementalityConfig(window_days=7, cuped=False)
    )
    rate = report.row("overall", OVERALL, "purchase_rate")
    assert rate is not None
    assert (rate["n_treated"], rate["n_control"]) == (40, 40)
    assert rate["treated"] == pytest.approx(0.5) and rate["control"] == pytest.approx(0.25)
    assert rate["lift"] == pytest.approx(0.25)
    se = math.sqrt(0.25 * 40 / 39 / 40 + 0.1875 * 40 / 39 / 40)
    assert rate["se"] == pytest.approx(se)
    assert (rate["low"], rate["high"]) == pytest.approx((0.25 - Z90 * se, 0.25 + Z90 * se))
    assert rate["relative"] == pytest.approx(1.0)
    revenue = report.row("seller", "s1", "revenue")
    assert revenue is not None and revenue["lift"] == pytest.approx(2.5)
    profit = report.row("overall", OVERALL, "profit")
    assert profit is not None and profit["lift"] == pytest.approx(0.3 * 2.5)


def test_profit_counts_discounts_and_send_costs(tmp_path: Path) -> None:
    arms = ["treated"] * 4 + ["control"] * 4
    bought = [1, 1, 0, 0, 1, 0, 0, 0]
    report = incrementality(
        build(tmp_path, arms, bought, redeemed={0}),
        IncrementalityConfig(window_days=7, cuped=False, send_cost=0.5),
    )
    profit = report.row("overall", OVERALL, "profit")
    assert profit is not None
    # Treated: gross 20 at margin 0.3 = 6, minus a discount of 1 and 4 sends of 0.5 -> 3.
    assert profit["treated"] == pytest.approx(3 / 4)
    assert profit["control"] == pytest.approx(0.3 * 10 / 4)


def test_cuped_keeps_the_lift_and_narrows_the_interval(tmp_path: Path) -> None:
    # Pre-period buying is balanced across arms and predicts buying after.
    arms = ["treated"] * 40 + ["control"] * 40
    pre = ([2] * 20 + [0] * 20) * 2
    bought = [2] * 15 + [1] * 5 + [1] * 5 + [0] * 15 + [2] * 10 + [1] * 5 + [0] * 5 + [0] * 20
    plain = incrementality(
        build(tmp_path / "a", arms, bought, pre), IncrementalityConfig(window_days=7, cuped=False)
    ).row("overall", OVERALL, "revenue")
    cuped = incrementality(
        build(tmp_path / "b", arms, bought, pre), IncrementalityConfig(window_days=7)
    ).row("overall", OVERALL, "revenue")
    assert plain is not None and cuped is not None
    assert cuped["lift"] == pytest.approx(plain["lift"])  # balanced: theta * 0
    assert cuped["se"] < 0.8 * plain["se"]
    assert cuped["variance_reduction"] > 0.3


def test_units_whose_window_outlasts_the_data_are_left_out_and_said(tmp_path: Path) -> None:
    arms = ["treated", "treated", "control", "control"]
    report = incrementality(
        build(tmp_path, arms, [1, 0, 0, 0]), IncrementalityConfig(window_days=60)
    )
    assert report.table.height == 0
    assert any("window ends after the data" in n for n in report.notes)


def test_a_dataset_without_holdout_arms_says_so(tmp_path: Path) -> None:
    ds = build(tmp_path, ["treated", "control"], [0, 0])
    ds = Dataset(
        items=ds.items,
        events=ds.events,
        offers=ds.offers,
        exposures=ds.exposures.drop("arm") if ds.exposures is not None else None,
    )
    report = incrementality(ds)
    assert report.table.height == 0 and "holdout" in report.notes[0]


def test_the_tool_row_is_the_inverse_propensity_contrast(tmp_path: Path) -> None:
    arms = ["treated"] * 10 + ["control"] * 10
    bought = [1] * 6 + [0] * 4 + [1] * 2 + [0] * 8
    report = incrementality(build(tmp_path, arms, bought), IncrementalityConfig(window_days=7))
    tool = report.row("tool", "percent_off", "profit")
    assert tool is not None
    # Equal propensities within each action: the self-normalized means are plain means.
    assert tool["treated"] == pytest.approx(0.3 * 10 * 0.6)
    assert tool["control"] == pytest.approx(0.3 * 10 * 0.2)


def test_the_90_percent_interval_covers_a_known_lift_about_90_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    reps = 400
    for _ in range(reps):
        treated = rng.random(2000) < 0.5
        y = rng.normal(1.0, 2.0, 2000) + 0.3 * treated
        _, _, lift, _, half = difference(y, treated, 0.9)
        covered += abs(lift - 0.3) <= half
    assert abs(covered / reps - 0.9) < 4 * math.sqrt(0.09 / reps)


def test_cuped_removes_the_explained_variance() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=5000)
    y = 2.0 * x + rng.normal(size=5000)
    adjusted, reduction = cuped_adjust(y, x)
    assert reduction == pytest.approx(0.8, abs=0.02)  # var(2x) / var(y) = 4 / 5
    assert adjusted.mean() == pytest.approx(y.mean())
    same, none = cuped_adjust(y, np.ones(5000))
    assert none == 0.0 and same is y


def test_the_command_reads_a_decision_log_and_writes_the_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recsys.cli import app, parse_window
    from serving.incrementality import IncrementalityBoard

    arms = ["treated"] * 40 + ["control"] * 40
    bought = [1] * 20 + [0] * 20 + [1] * 10 + [0] * 30
    build(tmp_path / "ds", arms, bought)
    # The decisions live in a serving decision log, not in the dataset.
    log = tmp_path / "log" / "exposures"
    log.mkdir(parents=True)
    (tmp_path / "ds" / "exposures.parquet").rename(log / "part-1.parquet")
    out = tmp_path / "log" / "incrementality.json"
    result = CliRunner().invoke(
        app,
        ["report", "incrementality", "--data", str(tmp_path / "ds"),
         "--decisions", str(tmp_path / "log"), "--window", "7d", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "purchase_rate" in result.output and "lift +0.2500" in result.output
    seen = IncrementalityBoard(out).for_seller("s1")
    assert seen.available and seen.window_days == 7.0
    rate = next(f for f in seen.figures if f.metric == "purchase_rate")
    assert rate.lift == pytest.approx(0.25) and (rate.n_treated, rate.n_control) == (40, 40)
    assert not IncrementalityBoard(out).for_seller("s2").available
    assert parse_window("36h") == 1.5 and parse_window("2w") == 14.0
    bad = CliRunner().invoke(
        app, ["report", "incrementality", "--data", str(tmp_path / "ds"), "--window", "soon"]
    )
    assert bad.exit_code == 2 and "--window" in bad.output
