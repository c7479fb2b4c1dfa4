"""Window joins by sorted search give exactly what joining every pair and filtering gave.

The `_product_*` functions below are the previous implementations of
`exposure_outcomes`, `control_outcomes`, `scoped_purchases` and `realized_rewards`: each
joined every row with every purchase line (or offer) of its buyer before filtering by
time, so its memory grew with the product of the tables. They are kept here as the
definition of the answers, and random small datasets (hypothesis) check that the bounded
versions agree with them row for row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from recsys.data.dataset import Dataset
from recsys.data.schema import TABLES_BY_NAME
from recsys.evaluation.policy_eval import realized_rewards, seller_key
from recsys.features.pairs import (
    PLATFORM,
    _offer_scope,
    exposure_outcomes,
    offer_attributes,
    purchase_lines,
    scoped_purchases,
)
from recsys.features.windows import next_time, window_sums

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def _t(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


# ---------------------------------------------------------------------------- known answers


def _windows() -> tuple[pl.DataFrame, pl.DataFrame]:
    left = pl.DataFrame(
        {
            "b": ["x", "x", "y", "z", None, "x"],
            "start": [_t(0), _t(48), _t(0), _t(0), _t(0), _t(96)],
            "end": [_t(48), _t(240), _t(24), _t(96), _t(200), _t(48)],
        }
    )
    right = pl.DataFrame(
        {
            "b": ["x", "x", "x", "y", "x", None],
            "ts": [_t(48), _t(48), _t(96), _t(24), _t(0), _t(1)],
            "v": [1, 2, 4, 8, 16, 32],
        }
    )
    return left, right


def test_next_time_is_the_first_time_of_the_group_at_or_after() -> None:
    left, right = _windows()
    got = next_time(left, right, ["b"], "start", "ts").to_list()
    # x from 0: 0 itself; x from 48: 48 (two rows at once); y from 0: 24; z: none;
    # a null key matches nothing; x from 96: 96.
    assert got == [_t(0), _t(48), _t(24), None, None, _t(96)]


def test_window_sums_count_each_row_in_start_to_end_once() -> None:
    left, right = _windows()
    got = window_sums(left, right, ["b"], "start", "end", "ts", "v").to_list()
    # x [0, 48): 16; x [48, 240): 1 + 2 + 4; y [0, 24): 24 is the end, excluded; z: none;
    # null key: none; x [96, 48): an empty window.
    assert got == [16, 7, 0, 0, 0, 0]


def test_window_sums_without_groups_and_of_an_empty_left() -> None:
    left, right = _windows()
    got = window_sums(left.head(2), right.drop("b"), [], "start", "end", "ts", "v").to_list()
    assert got == [16 + 32 + 8, 1 + 2 + 4]  # no groups: y's row counts too
    assert window_sums(left.clear(), right, ["b"], "start", "end", "ts", "v").len() == 0
    assert next_time(left.clear(), right, ["b"], "start", "ts").len() == 0


# ---------------------------------------------------------------------------- the old answers


def _product_exposure_outcomes(dataset: Dataset, horizon_days: float) -> pl.DataFrame:
    assert dataset.exposures is not None
    offers = offer_attributes(dataset).select("offer_id", "seller_key", "tool", "end_ts")
    horizon = timedelta(days=horizon_days)
    exp = dataset.exposures.join(offers, on="offer_id", how="left").with_columns(
        pl.min_horizontal(pl.col("end_ts"), pl.col("ts") + horizon).alias("window_end")
    )
    lines = purchase_lines(dataset).select("buyer_id", "seller_key", pl.col("ts").alias("p_ts"))
    bought = (
        exp.filter(pl.col("offer_id").is_not_null())
        .select("exposure_id", "buyer_id", "seller_key", "ts", "window_end")
        .join(lines, on="buyer_id", suffix="_bought")
        .filter(
            (
                (pl.col("seller_key") == pl.col("seller_key_bought"))
                | (pl.col("seller_key") == PLATFORM)
            )
            & (pl.col("p_ts") >= pl.col("ts"))
            & (pl.col("p_ts") < pl.col("window_end"))
        )
        .select("exposure_id")
        .unique()
        .with_columns(pl.lit(1.0).alias("purchased"))
    )
    red = dataset.redemptions
    flags = pl.DataFrame(schema={"exposure_id": pl.String, "redeemed": pl.Float64})
    if red is not None:
        linked = red.filter(pl.col("exposure_id").is_not_null()).select("exposure_id")
        unlinked = (
            red.filter(pl.col("exposure_id").is_null())
            .select("buyer_id", "offer_id", pl.col("ts").alias("r_ts"))
            .join(
                exp.select("exposure_id", "buyer_id", "offer_id", "ts", "window_end"),
                on=["buyer_id", "offer_id"],
            )
            .filter((pl.col("r_ts") >= pl.col("ts")) & (pl.col("r_ts") < pl.col("window_end")))
            .select("exposure_id")
        )
        flags = pl.concat([linked, unlinked]).unique().with_columns(pl.lit(1.0).alias("redeemed"))
    return (
        exp.join(flags, on="exposure_id", how="left")
        .join(bought, on="exposure_id", how="left")
        .with_columns(pl.col("redeemed", "purchased").fill_null(0.0))
    )


def _product_scoped_purchases(dataset: Dataset, lines: pl.DataFrame) -> pl.DataFrame:
    return (
        lines.select("buyer_id", "item_id")
        .join(_offer_scope(dataset).select("offer_id", "item_id"), on="item_id")
        .group_by("buyer_id", "offer_id")
        .agg(pl.len().cast(pl.Float64).alias("scope_purchases"))
    )


def _product_realized_rewards(
    dataset: Dataset,
    decisions: pl.DataFrame,
    margins: dict[str, float],
    margin_default: float,
    send_cost: float,
    horizon_days: float,
    shipping_cost: float,
) -> pl.DataFrame:
    horizon = timedelta(days=horizon_days)
    catalog = dataset.items.select("item_id", "seller_id", "price")
    lines = (
        dataset.events.filter(pl.col("event_type") == "purchase")
        .join(catalog, on="item_id", how="left")
        .select(
            "buyer_id",
            seller_key(pl.col("seller_id")).alias("seller_key"),
            "ts",
            pl.coalesce("order_id", pl.col("ts").cast(pl.String)).alias("order_key"),
            pl.coalesce(pl.col("price") * pl.col("quantity").fill_null(1), "amount")
            .fill_null(0.0)
            .alias("gross"),
        )
    )
    in_window = (
        decisions.select("exposure_id", "buyer_id", "seller_id", "ts")
        .join(
            lines.select(
                "buyer_id",
                pl.col("seller_key").alias("seller_id"),
                pl.col("ts").alias("p_ts"),
                "order_key",
                "gross",
            ),
            on=["buyer_id", "seller_id"],
        )
        .filter((pl.col("p_ts") >= pl.col("ts")) & (pl.col("p_ts") < pl.col("ts") + horizon))
    )
    gross = in_window.group_by("exposure_id").agg(pl.col("gross").sum().alias("gross_value"))
    discount = pl.DataFrame(schema={"exposure_id": pl.String, "discount": pl.Float64})
    if dataset.redemptions is not None and dataset.offers is not None:
        offers = dataset.offers.select("offer_id", "tool", "value", "cost")
        red = (
            dataset.redemptions.filter(pl.col("exposure_id").is_not_null())
            .select("exposure_id", "order_id", pl.col("amount").alias("net"))
            .join(decisions.select("exposure_id", "offer_id"), on="exposure_id")
            .join(offers, on="offer_id", how="left")
        )
        order_gross = in_window.group_by("exposure_id", "order_key").agg(pl.col("gross").sum())
        red = red.join(
            order_gross,
            left_on=["exposure_id", "order_id"],
            right_on=["exposure_id", "order_key"],
            how="left",
        )
        unseen = (
            pl.when(pl.col("tool") == "free_shipping")
            .then(pl.col("cost").fill_null(shipping_cost))
            .when(pl.col("tool") == "points")
            .then(pl.col("value").fill_null(0.0) * pl.col("net").fill_null(0.0))
            .otherwise(0.0)
        )
        seen = (pl.col("gross").fill_null(0.0) - pl.col("net").fill_null(0.0)).clip(lower_bound=0.0)
        discount = red.group_by("exposure_id").agg((seen + unseen).sum().alias("discount"))
    margin = pl.col("seller_id").replace_strict(
        margins, default=margin_default, return_dtype=pl.Float64
    )
    return (
        decisions.join(gross, on="exposure_id", how="left")
        .join(discount, on="exposure_id", how="left")
        .with_columns(pl.col("gross_value", "discount").fill_null(0.0))
        .with_columns(
            (
                margin * pl.col("gross_value")
                - pl.col("discount")
                - pl.when(pl.col("offer_id").is_not_null()).then(send_cost).otherwise(0.0)
            ).alias("reward")
        )
    )


# ---------------------------------------------------------------------------- random data


def _frame(table: str, rows: list[dict[str, object]]) -> pl.DataFrame:
    schema = TABLES_BY_NAME[table].schema
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema)


@st.composite
def overlapping_datasets(draw: st.DrawFn) -> Dataset:
    """Few buyers, sellers and items on a short time axis: windows overlap, times tie,
    purchases lack items or orders, offers are platform-wide, store-wide or item-scoped,
    redemptions are linked or not — every case the window logic distinguishes."""
    n_items = draw(st.integers(1, 6))
    sellers = [f"s{draw(st.integers(0, 2))}" for _ in range(n_items)]
    items = _frame(
        "items",
        [
            {"item_id": f"i{k}", "seller_id": s, "category": f"c{k % 2}", "price": 2.0 + k}
            for k, s in enumerate(sellers)
        ],
    )
    buyers = [f"b{k}" for k in range(draw(st.integers(1, 4)))]
    hour = st.integers(0, 20).map(lambda k: 12 * k)  # half days: windows end on purchases
    events = []
    for _ in range(draw(st.integers(0, 40))):
        item = draw(st.one_of(st.none(), st.integers(0, n_items - 1)))
        events.append(
            {
                "buyer_id": draw(st.sampled_from(buyers)),
                "item_id": None if item is None else f"i{item}",
                "event_type": draw(st.sampled_from(["purchase", "purchase", "view"])),
                "ts": _t(draw(hour)),
                "order_id": draw(st.one_of(st.none(), st.sampled_from(["A", "B"]))),
                "quantity": draw(st.integers(1, 3)),
                "amount": draw(st.one_of(st.none(), st.floats(0, 50, allow_nan=False))),
            }
        )
    events.append({"buyer_id": buyers[0], "event_type": "view", "ts": _t(0), "quantity": 1})
    used_sellers = sorted(set(sellers))
    offers, offer_items = [], []
    for k in range(draw(st.integers(1, 4))):
        seller = draw(st.one_of(st.none(), st.sampled_from(used_sellers)))
        start = draw(hour)
        offers.append(
            {
                "offer_id": f"o{k}",
                "tool": draw(st.sampled_from(["percent_off", "free_shipping", "points"])),
                "seller_id": seller,
                "value": 0.1,
                "cost": draw(st.one_of(st.none(), st.just(3.0))),
                "start_ts": _t(start),
                "end_ts": draw(st.one_of(st.none(), st.just(_t(start + 36)))),
            }
        )
        for item in draw(st.sets(st.integers(0, n_items - 1), max_size=3)):
            offer_items.append({"offer_id": f"o{k}", "item_id": f"i{item}"})
    exposures = []
    for k in range(draw(st.integers(0, 12))):
        offer = draw(st.one_of(st.none(), st.integers(0, len(offers) - 1)))
        exposures.append(
            {
                "exposure_id": f"x{k}",
                "buyer_id": draw(st.sampled_from(buyers)),
                "offer_id": None if offer is None else f"o{offer}",
                "ts": _t(draw(hour)),
                "propensity": 0.5,
                "policy": "p",
                "seller_id": draw(st.one_of(st.none(), st.sampled_from(used_sellers))),
            }
        )
    redemptions = []
    issued = [e for e in exposures if e["offer_id"] is not None]
    for _ in range(draw(st.integers(0, 8)) if issued else 0):
        e = draw(st.sampled_from(issued))
        redemptions.append(
            {
                "buyer_id": e["buyer_id"],
                "offer_id": e["offer_id"],
                "ts": _t(draw(hour)),
                "exposure_id": e["exposure_id"] if draw(st.booleans()) else None,
                "order_id": draw(st.one_of(st.none(), st.sampled_from(["A", "B"]))),
                "amount": draw(st.one_of(st.none(), st.just(12.5))),
            }
        )
    return Dataset(
        items=items,
        events=_frame("events", events),
        offers=_frame("offers", offers),
        offer_items=_frame("offer_items", offer_items),
        exposures=_frame("exposures", exposures),
        redemptions=_frame("redemptions", redemptions),
    )


EQUALITY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _same(new: pl.DataFrame, old: pl.DataFrame, keys: list[str]) -> None:
    assert_frame_equal(
        new.sort(keys), old.select(new.columns).sort(keys), check_row_order=True, rel_tol=1e-9
    )


@EQUALITY
@given(overlapping_datasets(), st.sampled_from([0.5, 1.0, 3.0]))
def test_exposure_outcomes_equal_the_product_join(dataset: Dataset, horizon: float) -> None:
    _same(
        exposure_outcomes(dataset, horizon),
        _product_exposure_outcomes(dataset, horizon),
        ["exposure_id"],
    )


@EQUALITY
@given(overlapping_datasets(), st.sampled_from([1, 3, 1_000]))
def test_scoped_purchases_equal_the_product_join(dataset: Dataset, chunk: int) -> None:
    lines = purchase_lines(dataset)
    _same(
        scoped_purchases(dataset, lines, chunk_rows=chunk),
        _product_scoped_purchases(dataset, lines),
        ["buyer_id", "offer_id"],
    )


@EQUALITY
@given(overlapping_datasets(), st.integers(0, 3))
def test_scoped_purchases_of_some_offers_are_those_offers_rows(
    dataset: Dataset, every: int
) -> None:
    """Asking for some offers (training rows ask for the ones they were issued) gives
    exactly the whole table's rows of those offers."""
    lines = purchase_lines(dataset)
    assert dataset.offers is not None
    offer_ids = dataset.offers["offer_id"].gather_every(every + 1)
    whole = scoped_purchases(dataset, lines)
    _same(
        scoped_purchases(dataset, lines, offer_ids=offer_ids),
        whole.filter(pl.col("offer_id").is_in(offer_ids.implode())),
        ["buyer_id", "offer_id"],
    )


@EQUALITY
@given(overlapping_datasets(), st.sampled_from([0.5, 1.0, 3.0]))
def test_realized_rewards_equal_the_product_join(dataset: Dataset, horizon: float) -> None:
    assert dataset.exposures is not None and dataset.offers is not None
    sellers = dataset.offers.select("offer_id", pl.col("seller_id").alias("_offer_seller"))
    decisions = (
        dataset.exposures.join(sellers, on="offer_id", how="left")
        .with_columns(pl.coalesce("seller_id", "_offer_seller").alias("seller_id"))
        .select("exposure_id", "buyer_id", "seller_id", "offer_id", "ts")
    )
    args = ({"s0": 0.3}, 0.25, 0.02, horizon, 4.5)
    _same(
        realized_rewards(dataset, decisions, *args),
        _product_realized_rewards(dataset, decisions, *args),
        ["exposure_id"],
    )


def test_the_random_datasets_reach_the_cases_that_matter() -> None:
    """The equality tests above are only as good as their data: outcomes of both kinds
    occur (checked on a fixed sample of the strategy)."""
    seen = {"purchased": set(), "redeemed": set()}  # type: dict[str, set[float]]

    @settings(max_examples=40, deadline=None, database=None, derandomize=True)
    @given(overlapping_datasets())
    def collect(dataset: Dataset) -> None:
        out = exposure_outcomes(dataset, 7.0).filter(pl.col("offer_id").is_not_null())
        for column, values in seen.items():
            values.update(out[column].to_list())

    collect()
    assert seen == {"purchased": {0.0, 1.0}, "redeemed": {0.0, 1.0}}


@pytest.mark.parametrize("chunk", [1, 2, 10])
def test_scoped_purchases_in_chunks_of_buyers_known_answer(chunk: int) -> None:
    items = _frame("items", [{"item_id": f"i{k}", "seller_id": "s"} for k in range(3)])
    events = _frame(
        "events",
        [
            {"buyer_id": b, "item_id": i, "event_type": "purchase", "ts": _t(h), "quantity": 1}
            for b, i, h in [("b1", "i0", 0), ("b1", "i0", 5), ("b1", "i1", 6), ("b2", "i2", 1)]
        ],
    )
    offers = _frame(
        "offers", [{"offer_id": o, "tool": "percent_off", "value": 0.1} for o in ("o1", "o2")]
    )
    scope = [("o1", "i0"), ("o1", "i1"), ("o2", "i0"), ("o2", "i2")]
    dataset = Dataset(
        items=items,
        events=events,
        offers=offers,
        offer_items=_frame("offer_items", [{"offer_id": o, "item_id": i} for o, i in scope]),
    )
    got = scoped_purchases(dataset, purchase_lines(dataset), chunk_rows=chunk)
    assert dict(
        zip(zip(got["buyer_id"], got["offer_id"], strict=True), got["scope_purchases"], strict=True)
    ) == {("b1", "o1"): 3.0, ("b1", "o2"): 2.0, ("b2", "o2"): 1.0}


def test_realized_rewards_count_the_redeemed_orders_lines_in_the_window_only() -> None:
    """Order A has lines before, at the start of, inside and at the end of the window:
    the gross value and the discount take the two inside [ts, ts + 1 day)."""
    items = _frame("items", [{"item_id": "i1", "seller_id": "s1", "price": 10.0}])
    lines = [(-1, 4), (0, 1), (12, 2), (24, 3)]  # hours, quantity
    events = _frame(
        "events",
        [
            {
                "buyer_id": "b1",
                "item_id": "i1",
                "event_type": "purchase",
                "ts": _t(24 + h),
                "order_id": "A",
                "quantity": q,
                "amount": 9.0 * q,
            }
            for h, q in lines
        ],
    )
    offers = _frame(
        "offers", [{"offer_id": "o1", "tool": "percent_off", "seller_id": "s1", "value": 0.1}]
    )
    exposures = _frame(
        "exposures",
        [{"exposure_id": "x1", "buyer_id": "b1", "offer_id": "o1", "ts": _t(24), "propensity": 1}],
    )
    redemptions = _frame(
        "redemptions",
        [
            {
                "buyer_id": "b1",
                "offer_id": "o1",
                "ts": _t(24),
                "exposure_id": "x1",
                "order_id": "A",
                "amount": 27.0,
            }
        ],
    )
    dataset = Dataset(
        items=items, events=events, offers=offers, exposures=exposures, redemptions=redemptions
    )
    decisions = exposures.select("exposure_id", "buyer_id", "offer_id", "ts").with_columns(
        pl.lit("s1").alias("seller_id")
    )
    got = realized_rewards(dataset, decisions, {"s1": 0.5}, 0.3, 0.02, 1.0, 4.5).row(0, named=True)
    # Inside: 1 x 10 at the start, 2 x 10 at noon: gross 30, paid 27, discount 3.
    assert got["gross_value"] == pytest.approx(30.0)
    assert got["discount"] == pytest.approx(3.0)
    assert got["reward"] == pytest.approx(0.5 * 30.0 - 3.0 - 0.02)
