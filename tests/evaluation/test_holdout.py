"""Held-out split, decision options and baseline choices on a hand-built marketplace."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import polars as pl
import pytest

from recsys.data import Dataset, load_dataset
from recsys.data.schema import TABLES_BY_NAME
from recsys.evaluation.holdout import (
    HoldoutConfig,
    baseline_choices,
    decision_options,
    holdout_split,
    logged_decisions,
    q_table,
    score_options,
)
from recsys.learning.decisions import randomized
from recsys.models.ranker import RankerConfig
from recsys.policy.schema import validate_candidates


def _ts(day: int, hour: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, tzinfo=UTC)


# Offers (all logged in at least one wave):
#   oA percent_off  s1  valid d1..d30       logged on days 8, 10, 12 (and 14, not randomized:
#                                           by hand, and at propensity 1)
#   oB amount_off   s1  always valid        logged on day 10 only
#   oC percent_off  s2  valid d1..d30       logged on day 10 only
#   oD free_shipping s1 valid d1..d30       logged on day 12 only
#   oE points       s1  ends d10 09:00      logged on day 10 (once before, once after its end)
#   oF reminder     s1  starts d10 12:00    logged on day 10 at 13:00
OFFERS = {
    "offer_id": ["oA", "oB", "oC", "oD", "oE", "oF"],
    "tool": ["percent_off", "amount_off", "percent_off", "free_shipping", "points", "reminder"],
    "seller_id": ["s1", "s1", "s2", "s1", "s1", "s1"],
    "value": [0.1, 5.0, 0.2, 4.0, 100.0, 0.0],
    "start_ts": [_ts(1), None, _ts(1), _ts(1), _ts(1), _ts(10, 12)],
    "end_ts": [_ts(30), None, _ts(30), _ts(30), _ts(10, 9), _ts(30)],
}

# (exposure_id, buyer, offer, ts, propensity, seller of a control row)
EXPOSURES = [
    ("e01", "b1", "oA", _ts(8, 10), 0.5, None),
    ("e02", "b2", None, _ts(8, 10), 0.5, "s1"),
    ("e10", "b1", "oA", _ts(10, 10), 0.5, None),
    ("e11", "b2", None, _ts(10, 10), 0.5, "s1"),  # control of seller s1
    ("e12", "b3", None, _ts(10, 10), 0.5, None),  # control, seller unknown
    ("e13", "b4", "oC", _ts(10, 10), 0.5, None),
    ("e14", "b1", "oE", _ts(10, 8), 0.5, None),  # before oE ends, before oF starts
    ("e15", "b2", "oF", _ts(10, 13), 0.5, None),  # after oE ended
    ("e16", "b3", "oE", _ts(10, 11), 0.5, None),  # logged after oE ended
    ("e17", "b4", "oB", _ts(10, 9), 0.5, None),  # at oE's end: oE no longer valid
    ("e20", "b1", "oD", _ts(12, 10), 0.5, None),
    ("e21", "b2", "oA", _ts(12, 10), 0.5, None),
    ("e30", "b3", "oA", _ts(14, 10), None, None),  # sent by hand: not a wave
    ("e31", "b4", "oA", _ts(14, 11), 1.0, None),  # a greedy choice: could not be otherwise
]


def _frames() -> dict[str, pl.DataFrame]:
    rows = list(zip(*EXPOSURES, strict=True))
    cols = ["exposure_id", "buyer_id", "offer_id", "ts", "propensity", "seller_id"]
    data = {
        "items": {"item_id": ["i1", "i2"], "seller_id": ["s1", "s2"]},
        "events": {
            "buyer_id": ["b1", "b2", "b3", "b4"],
            "item_id": ["i1", "i1", "i2", "i2"],
            "event_type": ["view", "purchase", "view", "purchase"],
            "ts": [_ts(2), _ts(3), _ts(4), _ts(5)],
        },
        "offers": OFFERS,
        "exposures": dict(zip(cols, [list(r) for r in rows], strict=True)),
    }
    return {
        name: pl.DataFrame(cols_, schema={k: TABLES_BY_NAME[name].schema[k] for k in cols_})
        for name, cols_ in data.items()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("holdout")
    for name, frame in _frames().items():
        frame.write_parquet(root / f"{name}.parquet")
    return load_dataset(root)


def _options(frame: pl.DataFrame) -> dict[str, list[str]]:
    grouped = frame.group_by("exposure_id").agg(pl.col("offer_id").sort())
    return {row["exposure_id"]: row["offer_id"] for row in grouped.iter_rows(named=True)}


def _with_exposures(dataset: Dataset, keep: pl.Expr) -> Dataset:
    assert dataset.exposures is not None
    return replace(dataset, exposures=dataset.exposures.filter(keep))


# --------------------------------------------------------------------------- split


def test_split_holds_out_the_last_waves(dataset: Dataset) -> None:
    split = holdout_split(dataset, waves=2)
    assert split is not None
    assert split.start == _ts(10)  # the second-to-last wave's day, from midnight
    assert split.waves == 2
    assert split.decisions == 10  # randomized rows of days 10 and 12; not e30

    last = holdout_split(dataset, waves=1)
    assert last is not None and (last.start, last.waves, last.decisions) == (_ts(12), 1, 2)


@pytest.mark.parametrize("waves", [3, 10])
def test_split_never_holds_out_every_wave(dataset: Dataset, waves: int) -> None:
    split = holdout_split(dataset, waves=waves)
    assert split is not None
    assert (split.start, split.waves, split.decisions) == (_ts(10), 2, 10)
    # something randomized is left to learn from
    assert dataset.before(split.start).exposures is not None
    assert dataset.before(split.start).exposures["propensity"].is_not_null().sum() == 2


def test_split_is_none_without_exposures(dataset: Dataset) -> None:
    assert holdout_split(replace(dataset, exposures=None), waves=2) is None


def test_split_is_none_with_a_single_randomized_wave(dataset: Dataset) -> None:
    one_wave = _with_exposures(
        dataset, (pl.col("ts").dt.day() == 10) | pl.col("propensity").is_null()
    )
    assert holdout_split(one_wave, waves=1) is None
    not_randomized = _with_exposures(dataset, pl.col("propensity").is_null())
    assert holdout_split(not_randomized, waves=1) is None


def test_holdout_config_defaults_and_limits() -> None:
    cfg = HoldoutConfig()
    assert (cfg.waves, cfg.item_k, cfg.seed) == (2, 10, 0)
    with pytest.raises(ValueError, match="waves"):
        HoldoutConfig.from_dict({"waves": 0})


# --------------------------------------------------------------------------- logged decisions


def test_logged_decisions_are_the_randomized_rows_from_start_with_their_seller(
    dataset: Dataset,
) -> None:
    logged = logged_decisions(dataset, _ts(10))
    sellers = dict(zip(logged["exposure_id"], logged["seller_id"], strict=True))
    assert sellers == {
        "e10": "s1",  # from the offer
        "e11": "s1",  # the control row's own seller
        "e12": "__platform__",  # no seller, a wave of two sellers: the whole platform
        "e13": "s2",
        "e14": "s1",
        "e15": "s1",
        "e16": "s1",
        "e17": "s1",
        "e20": "s1",
        "e21": "s1",
        "e31": "s1",  # a greedy choice, logged at propensity 1
    }
    assert logged["exposure_id"].is_sorted()
    # ... which could not have gone another way: not randomized.
    assert "e31" not in logged.filter(randomized())["exposure_id"].to_list()


# --------------------------------------------------------------------------- options


@pytest.fixture(scope="module")
def options(dataset: Dataset) -> dict[str, list[str]]:
    frame = decision_options(dataset, logged_decisions(dataset, _ts(10)))
    assert frame.columns == ["exposure_id", "buyer_id", "seller_id", "offer_id"]
    assert frame.select("exposure_id", "offer_id").is_duplicated().sum() == 0
    assert frame["exposure_id"].is_sorted()
    return _options(frame)


def test_options_are_the_waves_offers_of_the_same_seller_valid_at_the_time(
    options: dict[str, list[str]],
) -> None:
    # day 10, 10:00, seller s1: oA and oB; oC is s2's, oD was not logged that day,
    # oE ended at 09:00, oF starts at 12:00
    assert options["e10"] == ["oA", "oB"]
    assert options["e13"] == ["oC"]  # seller s2's only offer
    assert options["e14"] == ["oA", "oB", "oE"]  # 08:00: oE still valid, oF not yet
    assert options["e15"] == ["oA", "oB", "oF"]  # 13:00: oF valid, oE ended
    assert options["e17"] == ["oA", "oB"]  # 09:00 is oE's end: no longer valid


def test_control_row_with_a_seller_gets_that_sellers_offers(
    options: dict[str, list[str]],
) -> None:
    assert options["e11"] == ["oA", "oB"]


def test_control_row_without_a_seller_gets_every_offer_of_the_wave(
    options: dict[str, list[str]],
) -> None:
    assert options["e12"] == ["oA", "oB", "oC"]  # valid at 10:00, any seller


def test_offers_logged_on_another_day_are_not_options(options: dict[str, list[str]]) -> None:
    # day 12 logged only oD and oA: oB (valid, same seller) was not offered that wave
    assert options["e21"] == ["oA", "oD"]
    assert options["e20"] == ["oA", "oD"]
    assert all("oD" not in options[e] for e in ("e10", "e11", "e12", "e14", "e15", "e16", "e17"))


def test_the_logged_offer_is_always_an_option(options: dict[str, list[str]]) -> None:
    # e16 received oE at 11:00, after oE's end: other decisions then cannot get it
    assert options["e16"] == ["oA", "oB", "oE"]
    assert "oE" not in options["e10"]


def test_options_carry_the_decisions_buyer_and_seller(dataset: Dataset) -> None:
    frame = decision_options(dataset, logged_decisions(dataset, _ts(10)))
    e12 = frame.filter(pl.col("exposure_id") == "e12")
    assert e12["buyer_id"].unique().to_list() == ["b3"]
    assert e12["seller_id"].to_list() == ["__platform__"] * 3
    e11 = frame.filter(pl.col("exposure_id") == "e11")
    assert e11["seller_id"].unique().to_list() == ["s1"]


def test_options_without_a_seller_column_use_the_offers_seller(dataset: Dataset) -> None:
    logged = pl.DataFrame(
        {
            "exposure_id": ["x1", "x2"],
            "buyer_id": ["b1", "b2"],
            "offer_id": ["oC", None],
            "ts": [_ts(10, 10), _ts(10, 10)],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC"), "offer_id": pl.String},
    )
    # Only oC was logged in this wave: x1 (seller s2 from its offer) gets oC; the
    # control row x2 has no seller, so it gets every offer of the wave.
    assert _options(decision_options(dataset, logged)) == {"x1": ["oC"], "x2": ["oC"]}


# --------------------------------------------------------------------------- baselines


def _scored() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "exposure_id": ["x1", "x1", "x1", "x2", "x3", "x3"],
            "offer_id": ["o1", "o2", "o3", "o4", "o6", "o5"],
            "tool": ["percent_off", "amount_off", "percent_off", "amount_off", "points", "points"],
            "p_redeem": [0.2, 0.5, 0.9, 0.3, 0.1, 0.1],
            "q": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "q_nothing": [0.5, 0.5, 0.5, 0.25, 0.0, 0.0],
        }
    )


def _choice(frame: pl.DataFrame) -> dict[str, str | None]:
    assert frame.columns == ["exposure_id", "offer_id"]
    assert frame["exposure_id"].to_list() == ["x1", "x2", "x3"]  # one row per decision
    return dict(zip(frame["exposure_id"], frame["offer_id"], strict=True))


def test_baselines_are_named_per_tool() -> None:
    assert set(baseline_choices(_scored(), seed=0)) == {
        "nothing",
        "blanket_amount_off",
        "blanket_percent_off",
        "blanket_points",
        "random",
        "response_only",
    }


def test_nothing_issues_nothing() -> None:
    assert _choice(baseline_choices(_scored(), seed=0)["nothing"]) == {
        "x1": None,
        "x2": None,
        "x3": None,
    }


def test_blanket_picks_the_tools_offer_or_nothing() -> None:
    choices = baseline_choices(_scored(), seed=0)
    # the first offer id of the tool per decision; nothing where the tool is not an option
    assert _choice(choices["blanket_percent_off"]) == {"x1": "o1", "x2": None, "x3": None}
    assert _choice(choices["blanket_amount_off"]) == {"x1": "o2", "x2": "o4", "x3": None}
    assert _choice(choices["blanket_points"]) == {"x1": None, "x2": None, "x3": "o5"}


def test_response_only_issues_the_most_likely_redeemed_offer() -> None:
    # x3's tie on p_redeem goes to the smaller offer id
    choices = baseline_choices(_scored(), seed=0)
    assert _choice(choices["response_only"]) == {"x1": "o3", "x2": "o4", "x3": "o5"}


def test_random_is_an_option_or_nothing_and_deterministic_per_seed() -> None:
    scored = _scored()
    allowed = {"x1": {"o1", "o2", "o3", None}, "x2": {"o4", None}, "x3": {"o5", "o6", None}}
    seen: dict[str, set[str | None]] = {k: set() for k in allowed}
    for seed in range(40):
        chosen = _choice(baseline_choices(scored, seed)["random"])
        again = _choice(baseline_choices(scored.reverse(), seed)["random"])
        assert chosen == again  # same seed, same picks, whatever the row order
        for exposure, offer in chosen.items():
            assert offer in allowed[exposure]
            seen[exposure].add(offer)
    assert seen == allowed  # every option, and nothing, gets picked for some seed


def test_random_depends_on_the_seed() -> None:
    picks = {
        tuple(_choice(baseline_choices(_scored(), seed)["random"]).values()) for seed in range(10)
    }
    assert len(picks) > 1


# --------------------------------------------------------------------------- q table


def test_q_table_has_every_option_and_nothing_per_decision() -> None:
    table = q_table(_scored()).sort("exposure_id", "offer_id", nulls_last=True)
    assert table.columns == ["exposure_id", "offer_id", "q"]
    assert table.rows() == [
        ("x1", "o1", 1.0),
        ("x1", "o2", 2.0),
        ("x1", "o3", 3.0),
        ("x1", None, 0.5),
        ("x2", "o4", 4.0),
        ("x2", None, 0.25),
        ("x3", "o5", 6.0),
        ("x3", "o6", 5.0),
        ("x3", None, 0.0),
    ]


class _PairScorer:
    """Stands in for `PromoRanker.candidates`: the same checks (a repeated pair is an
    error), a known answer per pair."""

    def for_buyers(self, buyer_ids: pl.Series) -> _PairScorer:
        return self

    def candidates(self, pairs: pl.DataFrame) -> pl.DataFrame:
        return validate_candidates(
            pairs.with_columns(
                pl.lit("percent_off").alias("tool"),
                pl.lit(0.5).alias("p_redeem"),
                pl.lit(0.2).alias("p_purchase"),
                pl.lit(0.1).alias("uplift"),
                pl.lit(40.0).alias("order_value"),
                pl.lit(0.3).alias("margin"),
                pl.lit(4.0).alias("offer_value"),
            )
        )


def test_options_repeating_a_pair_are_scored_once_and_answered_each_time() -> None:
    # A live decision log decides a buyer more than once in the held-out days.
    options = pl.DataFrame(
        {
            "exposure_id": ["e1", "e1", "e2", "e2"],
            "buyer_id": ["b1", "b1", "b1", "b1"],
            "offer_id": ["o1", "o2", "o1", "o2"],
        }
    )
    config = RankerConfig()
    scored = score_options(_PairScorer(), options, config)  # type: ignore[arg-type]
    assert (
        scored.select("exposure_id", "offer_id").rows()
        == options.select("exposure_id", "offer_id").rows()
    )
    q = scored["q"].to_list()
    assert q[0] == q[2] and q[1] == q[3]  # the same pair, the same answer
    assert q[0] == pytest.approx(0.3 * 40.0 * (0.2 + 0.1) - 0.5 * scored["redemption_cost"][0])


def test_scoring_options_in_chunks_changes_nothing() -> None:
    options = pl.DataFrame(
        {
            "exposure_id": ["e1", "e1", "e2", "e2", "e3"],
            "buyer_id": ["b1", "b1", "b1", "b1", "b2"],
            "offer_id": ["o1", "o2", "o1", "o2", "o3"],
        }
    )
    config = RankerConfig()
    whole = score_options(_PairScorer(), options, config)  # type: ignore[arg-type]
    for rows in (1, 2, 3):
        chunked = score_options(_PairScorer(), options, config, chunk_rows=rows)  # type: ignore[arg-type]
        assert chunked.equals(whole)
    empty = score_options(_PairScorer(), options.clear(), config)  # type: ignore[arg-type]
    assert empty.height == 0
