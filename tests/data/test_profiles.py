"""The data-shape profiles keep their promises: issue 17's shapes, valid, reproducible,
and faithful to their ground truth."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import ConfigError
from recsys.data import load_dataset
from recsys.data.synthetic.profiles import PROFILES, profile_config, synthesize

runner = CliRunner()


def _make(root: Path, profile: str, **fields: object) -> Path:
    out = root / profile
    synthesize(profile, out, profile_config(profile, dict(fields)), overwrite=True)
    return out


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each new profile at the issue's counts (seconds each)."""
    root = tmp_path_factory.mktemp("profiles")
    return {
        name: _make(root, name, seed=3)
        for name in ("grocery-coupons", "email-experiment", "attributes-experiment")
    }


def _rows(path: Path, table: str) -> int:
    return pl.scan_parquet(path / f"{table}.parquet").select(pl.len()).collect().item()


def _near(value: float, target: float, tolerance: float = 0.1) -> bool:
    return abs(value - target) <= tolerance * target


def test_grocery_has_the_shape_of_the_issues_export(full: dict[str, Path]) -> None:
    path = full["grocery-coupons"]
    ds = load_dataset(path)
    assert ds.items["seller_id"].n_unique() == 1
    assert _near(ds.items.height, 92_000) and _near(ds.events.height, 980_000)
    assert set(ds.events["event_type"].unique()) == {"purchase"}
    assert _near(ds.events["buyer_id"].n_unique(), 2_500)
    assert ds.offer_items is not None and _near(ds.offer_items.height, 111_000)
    assert ds.offer_items.group_by("offer_id").len()["len"].max() <= 1_000
    assert ds.exposures is not None and _near(ds.exposures.height, 530_000)
    assert ds.exposures["propensity"].null_count() == ds.exposures.height  # none logged
    assert ds.exposures["offer_id"].null_count() == 0  # no control group
    assert ds.redemptions is not None and _near(ds.redemptions.height, 1_000, 0.3)
    assert ds.offers is not None and ds.offers.height == 1_240  # 1,200 mailed + 40 to decide


def test_email_has_the_shape_of_the_issues_export(full: dict[str, Path]) -> None:
    ds = load_dataset(full["email-experiment"])
    assert ds.buyers is not None and ds.buyers.height == 64_000
    assert {"region_type", "channel", "new_customer"} <= set(ds.buyers.columns)
    assert ds.redemptions is None
    assert ds.offers is not None and ds.offers["tool"].to_list() == ["reminder", "reminder"]
    assert ds.exposures is not None and ds.exposures.height == 64_000
    assert ds.exposures["ts"].dt.truncate("1d").n_unique() == 1  # one wave
    assert ds.exposures["propensity"].unique().to_list() == [pytest.approx(1 / 3)]
    assert _near(ds.exposures["offer_id"].null_count(), 64_000 / 3, 0.05)
    wave = ds.exposures["ts"].min()
    before = ds.events.filter(pl.col("ts") < wave)
    per_buyer = before.group_by("buyer_id").len()["len"]
    assert set(per_buyer.unique()) == {1, 2} and before["event_type"].unique().to_list() == [
        "purchase"
    ]
    after = ds.events.filter(pl.col("ts") >= wave)
    views = after.filter(pl.col("event_type") == "view")
    assert views.height and views["item_id"].null_count() == views.height


def test_attributes_experiment_has_the_shape_of_the_issues_export(full: dict[str, Path]) -> None:
    ds = load_dataset(full["attributes-experiment"])
    assert ds.buyers is not None and ds.buyers.height == 126_000
    attributes = [c for c in ds.buyers.columns if c not in ("buyer_id", "first_seen")]
    assert len(attributes) == 7
    assert ds.exposures is not None and _near(ds.exposures.height, 85_000, 0.02)
    assert _near(ds.exposures["offer_id"].null_count(), ds.exposures.height / 2, 0.03)
    assert ds.exposures["propensity"].unique().to_list() == [0.5]
    assert set(ds.events["event_type"].unique()) == {"purchase"}
    assert _near(ds.events.height, 1_000, 0.25)
    assert ds.events["ts"].min() >= ds.exposures["ts"].min()  # no history at all
    truth = pl.read_parquet(full["attributes-experiment"] / "truth" / "buyers.parquet")
    assert _near(int((~truth["in_experiment"]).sum()), 41_000, 0.03)


def test_profiles_are_reproducible_and_valid(tmp_path: Path) -> None:
    small = {
        "grocery-coupons": {"buyers": 40, "items": 600, "coupons": 60},
        "email-experiment": {"buyers": 300},
        "attributes-experiment": {"buyers": 400},
        "tiny": {},
    }
    for profile, fields in small.items():
        digests = []
        for run in ("a", "b"):
            out = _make(tmp_path / run, profile, seed=5, **fields)
            load_dataset(out)  # raises on any contract violation
            digests.append(
                {
                    str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                    for p in sorted(out.rglob("*.parquet"))
                }
            )
        assert digests[0] == digests[1], profile
        assert any(name.startswith("truth/") for name in digests[0]), profile


def test_grocery_outcomes_follow_its_truth(tmp_path: Path) -> None:
    """Each exposure's true P(buying from the coupon's scope in the week) predicts what
    the household did: the mean over exposures matches within sampling error."""
    path = _make(tmp_path, "grocery-coupons", seed=2, buyers=400, items=9_000, coupons=300)
    ds = load_dataset(path)
    assert ds.exposures is not None and ds.offer_items is not None
    truth = pl.read_parquet(path / "truth" / "exposures.parquet")
    bought = (
        ds.exposures.select("exposure_id", "buyer_id", "offer_id", "ts")
        .join(ds.offer_items, on="offer_id")
        .join(
            ds.events.select("buyer_id", "item_id", pl.col("ts").alias("p_ts")),
            on=["buyer_id", "item_id"],
        )
        .filter(
            (pl.col("p_ts") >= pl.col("ts")) & (pl.col("p_ts") < pl.col("ts") + pl.duration(days=7))
        )
        .select("exposure_id")
        .unique()
    )
    observed = bought.height / ds.exposures.height
    expected = float(truth["p_purchase_treated"].mean())  # every logged exposure was treated
    se = np.sqrt(expected * (1 - expected) / ds.exposures.height)
    assert abs(observed - expected) < 4 * se + 0.002


@pytest.mark.parametrize("profile", ["email-experiment", "attributes-experiment"])
def test_experiment_lift_matches_the_true_effects(tmp_path: Path, profile: str) -> None:
    """Treated minus control purchase rates estimate the mean true effect."""
    path = _make(tmp_path, profile, seed=4, buyers=60_000)
    ds = load_dataset(path)
    assert ds.exposures is not None
    options = pl.read_parquet(path / "truth" / "exposure_options.parquet")
    purchases = ds.events.filter(pl.col("event_type") == "purchase")
    outcome = ds.exposures.select(
        "exposure_id", "buyer_id", "offer_id", pl.col("ts").alias("x_ts")
    ).with_columns(
        pl.col("buyer_id")
        .is_in(purchases.filter(pl.col("ts") >= ds.exposures["ts"].min())["buyer_id"].implode())
        .cast(pl.Float64)
        .alias("bought")
    )
    control = outcome.filter(pl.col("offer_id").is_null())["bought"]
    for offer in ds.exposures["offer_id"].drop_nulls().unique().to_list():
        treated = outcome.filter(pl.col("offer_id") == offer)["bought"]
        lift = float(treated.mean()) - float(control.mean())  # type: ignore[arg-type]
        truth = options.filter(pl.col("offer_id") == offer)
        tau = float((truth["p_purchase_treated"] - truth["p_purchase_control"]).mean())
        p = float(control.mean())  # type: ignore[arg-type]
        se = np.sqrt(p * (1 - p) / control.len() + p * (1 - p) / treated.len())
        assert abs(lift - tau) < 4 * se, (offer, lift, tau)
        assert tau > 2 * se  # the effect is there to be found


def test_cli_profile_and_its_errors(tmp_path: Path) -> None:
    out = tmp_path / "g"
    result = runner.invoke(
        app, ["data", "synth", "--profile", "grocery-coupons", "--scale", "0.02", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "grocery-coupons" in result.output and (out / "truth" / "offers.parquet").exists()
    assert _rows(out, "items") == round(92_000 * 0.02)
    bad = runner.invoke(app, ["data", "synth", "--profile", "retail", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "choose one of" in bad.output
    for profile in PROFILES:
        assert profile in bad.output
    with pytest.raises(ConfigError, match="weekz"):
        profile_config("grocery-coupons", {"weekz": 3})
