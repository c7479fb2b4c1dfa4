"""The simulator keeps its promises: reproducible, valid, and faithful to its ground truth."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data import load_dataset
from recsys.data.synthetic import SyntheticConfig, generate


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
    }


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20,000-buyer marketplace: large enough for stage-level statistics (~2 s)."""
    out = tmp_path_factory.mktemp("market") / "d"
    generate(SyntheticConfig(buyers=20_000, seed=7), out)
    return out


@pytest.fixture(scope="module")
def outcomes(market: Path) -> pl.DataFrame:
    """Each exposure with its truth and whether the buyer bought from the seller that week."""
    exposures = pl.read_parquet(market / "exposures.parquet")
    truth = pl.read_parquet(market / "truth" / "exposures.parquet")
    items = pl.read_parquet(market / "items.parquet").select("item_id", "seller_id")
    tools = pl.read_parquet(market / "offers.parquet").select("offer_id", "tool")
    purchases = (
        pl.read_parquet(market / "events.parquet")
        .filter(pl.col("event_type") == "purchase")
        .join(items, on="item_id")
        .select("buyer_id", "seller_id", pl.col("ts").alias("purchase_ts"))
    )
    joined = (
        exposures.join(truth.drop("buyer_id", "offer_id"), on="exposure_id")
        .join(tools, on="offer_id", how="left")
        .join(purchases, on=["buyer_id", "seller_id"], how="left")
        .with_columns(
            (
                (pl.col("purchase_ts") >= pl.col("ts"))
                & (pl.col("purchase_ts") < pl.col("ts") + pl.duration(days=7))
            )
            .fill_null(False)
            .alias("bought")
        )
    )
    return joined.group_by("exposure_id", maintain_order=True).agg(
        pl.col("bought").any(),
        pl.exclude("bought", "purchase_ts").first(),
    )


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    config = SyntheticConfig(buyers=300, seed=3)
    generate(config, tmp_path / "a")
    generate(config, tmp_path / "b")
    generate(config.model_copy(update={"seed": 4}), tmp_path / "c")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["events.parquet"] != _digest(tmp_path / "c")["events.parquet"]


def test_output_satisfies_the_data_contract(market: Path) -> None:
    dataset = load_dataset(market)
    assert dataset.offers is not None and dataset.exposures is not None
    assert dataset.redemptions is not None and dataset.buyers is not None
    assert dataset.buyers.height == 20_000
    assert set(dataset.events["event_type"].unique()) == {
        "view",
        "search",
        "add_to_cart",
        "remove_from_cart",
        "checkout",
        "purchase",
    }


def test_chunking_keeps_buyers_distinct(tmp_path: Path) -> None:
    generate(SyntheticConfig(buyers=450, seed=1, chunk_buyers=100), tmp_path / "d")
    buyers = pl.read_parquet(tmp_path / "d" / "buyers.parquet")
    assert buyers.height == 450
    assert buyers["buyer_id"].n_unique() == 450
    load_dataset(tmp_path / "d")  # cross-chunk ids still resolve


def test_refuses_to_overwrite_existing_data(tmp_path: Path) -> None:
    out = tmp_path / "d"
    generate(SyntheticConfig(buyers=100, seed=1), out)
    before = _digest(out)
    with pytest.raises(FileExistsError, match="not empty"):
        generate(SyntheticConfig(buyers=100, seed=2), out)
    assert _digest(out) == before


def test_base_redemption_rate_is_low_like_real_data(market: Path) -> None:
    issued = pl.read_parquet(market / "exposures.parquet").filter(pl.col("offer_id").is_not_null())
    redeemed = pl.read_parquet(market / "redemptions.parquet")
    rate = redeemed.height / issued.height
    assert 0.001 < rate < 0.05


def test_redemptions_match_their_true_probability(market: Path) -> None:
    truth = pl.read_parquet(market / "truth" / "exposures.parquet")
    expected = truth["p_redeem"].sum()
    sd = float(np.sqrt((truth["p_redeem"] * (1 - truth["p_redeem"])).sum()))
    observed = pl.read_parquet(market / "redemptions.parquet").height
    assert abs(observed - expected) < 4 * sd


def _rate_and_se(frame: pl.DataFrame) -> tuple[float, float]:
    p = float(frame["bought"].mean())  # type: ignore[arg-type]
    return p, float(np.sqrt(max(p * (1 - p), 1e-4) / frame.height))


@pytest.mark.parametrize(
    "stage", ["new", "browsing", "cart_abandoner", "repeat", "loyal", "lapsing", "churned"]
)
def test_purchase_rates_follow_the_ground_truth(outcomes: pl.DataFrame, stage: str) -> None:
    """Observed purchase rates equal the true probabilities, arm by arm, stage by stage."""
    rows = outcomes.filter((pl.col("stage") == stage) & (pl.col("policy") == "logging_policy_v1"))
    treated = rows.filter(pl.col("offer_id").is_not_null())
    control = rows.filter(pl.col("offer_id").is_null())
    for arm, column in ((treated, "p_purchase_treated"), (control, "p_purchase_control")):
        rate, se = _rate_and_se(arm)
        assert abs(rate - float(arm[column].mean())) < 4 * se  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stage", "tool", "direction"),
    [
        ("cart_abandoner", "free_shipping", 1),
        ("lapsing", "amount_off", 1),
        ("loyal", "percent_off", 0),
        ("loyal", "amount_off", 0),
    ],
)
def test_treated_vs_control_moves_as_the_truth_says(
    outcomes: pl.DataFrame, stage: str, tool: str, direction: int
) -> None:
    """Where the truth has a lift, treated buyers buy more than control; where not, not."""
    rows = outcomes.filter((pl.col("stage") == stage) & (pl.col("policy") == "logging_policy_v1"))
    control = rows.filter(pl.col("offer_id").is_null())
    treated = rows.filter(pl.col("tool") == tool)
    t_rate, t_se = _rate_and_se(treated)
    c_rate, c_se = _rate_and_se(control)
    diff, se = t_rate - c_rate, float(np.hypot(t_se, c_se))
    true_diff = float((treated["p_purchase_treated"] - treated["p_purchase_control"]).mean())
    if direction > 0:
        assert true_diff > 0.02
        assert diff > 2 * se
    else:
        assert true_diff == pytest.approx(0.0, abs=1e-12)
        assert abs(diff) < 3 * se


def test_blanket_coupons_lose_money_on_loyal_buyers(market: Path) -> None:
    truth = pl.read_parquet(market / "truth" / "offers.parquet")
    by = truth.group_by("stage", "tool").agg(pl.col("incremental_profit").mean())

    def value(stage: str, tool: str) -> float:
        return float(by.filter((pl.col("stage") == stage) & (pl.col("tool") == tool)).item(0, 2))

    for tool in ("percent_off", "amount_off", "free_shipping", "points"):
        assert value("loyal", tool) < 0
    assert value("cart_abandoner", "free_shipping") > 0
    assert value("lapsing", "amount_off") > 0
    assert value("lapsing", "amount_off") > value("lapsing", "free_shipping")
    assert value("cart_abandoner", "free_shipping") > value("cart_abandoner", "points")


def test_manual_campaign_has_no_propensity_and_no_control(market: Path) -> None:
    exposures = pl.read_parquet(market / "exposures.parquet")
    manual = exposures.filter(pl.col("policy") == "manual_campaign")
    logged = exposures.filter(pl.col("policy") == "logging_policy_v1")
    assert manual.height > 0
    assert manual["propensity"].null_count() == manual.height
    assert manual["offer_id"].null_count() == 0
    assert logged["propensity"].null_count() == 0
    assert logged["offer_id"].null_count() > 0  # a control group exists
    assert logged["propensity"].min() > 0  # type: ignore[operator]


def test_logged_propensities_are_exact_frequencies(market: Path) -> None:
    """Among logged rows, the control share equals its logged propensity."""
    logged = pl.read_parquet(market / "exposures.parquet").filter(
        pl.col("policy") == "logging_policy_v1"
    )
    control = logged.filter(pl.col("offer_id").is_null())
    share = control.height / logged.height
    assert float(control["propensity"].mean()) == pytest.approx(0.2)  # type: ignore[arg-type]
    assert share == pytest.approx(0.2, abs=4 * np.sqrt(0.2 * 0.8 / logged.height))


def test_exposure_options_include_the_logged_choice_with_the_same_truth(market: Path) -> None:
    """Every issued offer appears among its exposure's options, with identical truth."""
    truth = pl.read_parquet(market / "truth" / "exposures.parquet").filter(
        pl.col("offer_id").is_not_null()
    )
    options = pl.read_parquet(market / "truth" / "exposure_options.parquet")
    joined = truth.join(options, on=["exposure_id", "offer_id"], how="left", suffix="_opt")
    assert joined["p_redeem_opt"].null_count() == 0
    assert np.allclose(joined["p_redeem"], joined["p_redeem_opt"])
    assert np.allclose(joined["incremental_profit"], joined["incremental_profit_opt"])
    per_exposure = options.group_by("exposure_id").len()
    assert per_exposure["len"].max() == 6  # the seller's six wave offers
