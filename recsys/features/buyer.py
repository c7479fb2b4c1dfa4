"""Point-in-time buyer features: recency, frequency, monetary value, tenure and intent.

`buyer_features(events, as_of)` summarises each buyer's history *strictly before*
``as_of`` in one row, so the same function builds training features for a past date and
serving features for today without leaking the future: events at or after ``as_of`` are
dropped before anything is computed. Everything is a handful of vectorized polars
aggregations (one pass over the events, one over the purchase rows, one as-of join of
checkouts to purchases), so it runs on tens of millions of events.

Definitions used below:

* an **order** is a distinct ``order_id`` of a buyer's purchase rows; purchase rows with a
  null ``order_id`` form one order per distinct timestamp (a till log without order ids);
* the **value** of a purchase row is its ``amount``; when that is null it is
  ``quantity x items.price`` (quantity defaults to 1) if `items` is given, else unknown.
  An order's value is the sum of its known row values, null when none is known;
* a **session** is a distinct ``session_id``; events without one count one session per
  calendar day (UTC) on which they happened;
* an **open cart add** is an ``add_to_cart`` after the buyer's last purchase;
* an **abandoned checkout** is a ``checkout`` not followed by a purchase of the same buyer
  within `CHECKOUT_CONVERSION_WINDOW` (and before ``as_of``).

`time_scale_days` measures the data's own rhythm (the median inter-order gap), which the
journey model uses to scale its stage thresholds: "no order for 3 gaps" means three weeks
for a weekly grocery shopper and nine months for a quarterly buyer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from recsys.features.money import MICROS, to_micros

BUYER_FEATURES: tuple[str, ...] = (
    "days_since_last_event",
    "days_since_last_purchase",
    "days_since_last_cart_add",
    "days_since_last_abandoned_checkout",
    "orders_30d",
    "orders_90d",
    "orders_total",
    "revenue_total",
    "mean_order_value",
    "tenure_days",
    "sessions_7d",
    "sessions_30d",
    "views_7d",
    "views_30d",
    "open_cart_adds_14d",
    "abandoned_checkouts",
    "distinct_items_bought",
    "distinct_categories_bought",
    "mean_inter_order_gap_days",
)
"""Feature columns of `buyer_features`, in output order (after ``buyer_id``).

* ``days_since_last_event`` / ``_purchase`` / ``_cart_add`` / ``_abandoned_checkout``:
  days (fractional) from the last such event to ``as_of``; null when there was none.
* ``orders_30d``, ``orders_90d``, ``orders_total``: orders placed in the last 30 / 90 days
  and ever (before ``as_of``).
* ``revenue_total``: sum of known order values (0.0 without orders, null when orders exist
  but none has a known value); ``mean_order_value``: mean of known order values.
* ``tenure_days``: days since the buyer's first event, or since ``buyers.first_seen`` when
  that is earlier (and before ``as_of``).
* ``sessions_7d``, ``sessions_30d``, ``views_7d``, ``views_30d``: activity in the window.
* ``open_cart_adds_14d``: cart adds in the last 14 days after the buyer's last purchase.
* ``abandoned_checkouts``: checkouts ever that were not followed by a purchase.
* ``distinct_items_bought``, ``distinct_categories_bought`` (null without `items`).
* ``mean_inter_order_gap_days``: (last order - first order) / (orders - 1); null below two
  orders.
"""

CHECKOUT_CONVERSION_WINDOW = timedelta(days=1)
"""A checkout followed by a purchase of the same buyer within this window converted."""

DEFAULT_TIME_SCALE_DAYS = 14.0
"""Time scale used when too few buyers have two orders to measure one."""
TIME_SCALE_BOUNDS: tuple[float, float] = (3.0, 90.0)
"""The measured time scale is clamped to this range of days."""

_US_PER_DAY = 86_400 * 1_000_000
_OPTIONAL_COLUMNS: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "session_id": pl.String(),
    "order_id": pl.String(),
    "quantity": pl.Int64(),
    "amount": pl.Float64(),
}
_REQUIRED_COLUMNS = ("buyer_id", "event_type", "ts")
_COUNT_FEATURES = frozenset(
    {
        "orders_30d",
        "orders_90d",
        "orders_total",
        "sessions_7d",
        "sessions_30d",
        "views_7d",
        "views_30d",
        "open_cart_adds_14d",
        "abandoned_checkouts",
        "distinct_items_bought",
        "distinct_categories_bought",
    }
)


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (a naive one is read as UTC, as the contract says)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _events_before(events: pl.DataFrame | pl.LazyFrame, as_of: datetime | None) -> pl.LazyFrame:
    """The contract columns the features need, optional ones filled with typed nulls."""
    lf = events.lazy()
    names = lf.collect_schema().names()
    missing = [c for c in _REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ValueError(
            f"buyer features: the events table lacks required column(s) {missing}; "
            "pass a table in the data contract's events form (see DATA_CONTRACT.md)"
        )
    lf = lf.select(
        pl.col("buyer_id").cast(pl.String),
        pl.col("event_type").cast(pl.String),
        pl.col("ts").cast(pl.Datetime("us", "UTC")),
        *[
            pl.col(c).cast(dtype) if c in names else pl.lit(None, dtype=dtype).alias(c)
            for c, dtype in _OPTIONAL_COLUMNS.items()
        ],
    )
    if as_of is not None:
        lf = lf.filter(pl.col("ts") < as_utc(as_of))
    return lf


def _days_before(as_of: datetime, ts: pl.Expr) -> pl.Expr:
    """Fractional days from ``ts`` to ``as_of``."""
    return (pl.lit(as_of) - ts).dt.total_microseconds() / _US_PER_DAY


def _orders(purchases: pl.LazyFrame, items: pl.DataFrame | None) -> pl.LazyFrame:
    """One row per (buyer, order): time and value in millionths (null when unknown)."""
    value = pl.col("amount")
    if items is not None and "price" in items.columns:
        prices = items.lazy().select(
            pl.col("item_id").cast(pl.String), pl.col("price").cast(pl.Float64)
        )
        purchases = purchases.join(prices, on="item_id", how="left")
        value = pl.coalesce(value, pl.col("quantity").fill_null(1) * pl.col("price"))
    # Rows without an order id: one order per distinct timestamp.
    ts_key = pl.when(pl.col("order_id").is_null()).then(pl.col("ts")).alias("_ts_key")
    return (
        purchases.with_columns(ts_key, to_micros(value).alias("_value"))
        .group_by("buyer_id", "order_id", "_ts_key")
        .agg(
            pl.col("ts").min().alias("order_ts"),
            pl.when(pl.col("_value").is_not_null().any())
            .then(pl.col("_value").sum())
            .alias("order_value_micros"),
        )
        .select("buyer_id", "order_ts", "order_value_micros")
    )


def buyer_features(
    events: pl.DataFrame | pl.LazyFrame,
    as_of: datetime,
    buyers: pl.DataFrame | None = None,
    items: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per buyer with any event before ``as_of``: ``buyer_id`` + `BUYER_FEATURES`.

    Parameters
    ----------
    events
        The contract's events table (optional columns may be absent).
    as_of
        The moment the features describe; events at or after it are ignored (no leakage).
        A naive datetime is read as UTC.
    buyers
        Optional buyers table; its ``first_seen`` (when before ``as_of``) can extend tenure.
        It never adds rows: a buyer without events has nothing to describe.
    items
        Optional items table: ``price`` values purchase rows without an ``amount``,
        ``category`` gives ``distinct_categories_bought``.

    Returns
    -------
    pl.DataFrame
        Sorted by ``buyer_id``; counts are Int64, days and money Float64.

    Notes
    -----
    Cost: one lazy scan of the E events before ``as_of``; the rows materialized are the
    P purchase rows grouped into orders, the last 30 days' events and the checkouts, each
    aggregated to one row per buyer (output: one row per buyer with an event).
    """
    as_of = as_utc(as_of)
    ev = _events_before(events, as_of)
    ts = pl.col("ts")
    etype = pl.col("event_type")

    def since(days: float) -> pl.Expr:
        return ts >= as_of - timedelta(days=days)

    def sessions(days: float) -> pl.Expr:
        window = since(days)
        sid = pl.col("session_id")
        with_id = sid.filter(window & sid.is_not_null()).n_unique()
        without_id = ts.dt.date().filter(window & sid.is_null()).n_unique()
        return with_id + without_id

    # Each aggregation reads only the rows it needs: long histories shrink to the windows.
    activity = ev.group_by("buyer_id").agg(
        ts.max().alias("_last_event"),
        ts.min().alias("_first_event"),
        ts.filter(etype == "add_to_cart").max().alias("_last_cart_add"),
    )
    recent = (
        ev.filter(since(30))
        .group_by("buyer_id")
        .agg(
            sessions(7).alias("sessions_7d"),
            sessions(30).alias("sessions_30d"),
            ((etype == "view") & since(7)).sum().alias("views_7d"),
            (etype == "view").sum().alias("views_30d"),
        )
    )
    # A purchase before the 14-day window precedes every cart add in it, so the window's
    # own last purchase decides which of its cart adds are still open.
    last_purchase = ts.filter(etype == "purchase").max()
    carts = (
        ev.filter(since(14) & etype.is_in(["add_to_cart", "purchase"]))
        .group_by("buyer_id")
        .agg(
            ((etype == "add_to_cart") & ((ts > last_purchase) | last_purchase.is_null()))
            .sum()
            .alias("open_cart_adds_14d")
        )
    )

    purchases = ev.filter(etype == "purchase")
    order_ts = pl.col("order_ts")
    value = pl.col("order_value_micros")
    n_orders = pl.len()
    order_stats = (
        _orders(purchases, items)
        .group_by("buyer_id")
        .agg(
            n_orders.alias("orders_total"),
            (order_ts >= as_of - timedelta(days=30)).sum().alias("orders_30d"),
            (order_ts >= as_of - timedelta(days=90)).sum().alias("orders_90d"),
            order_ts.max().alias("_last_purchase"),
            pl.when(value.count() > 0).then(value.sum() / MICROS).alias("revenue_total"),
            pl.when(value.count() > 0)
            .then(value.sum() / value.count() / MICROS)
            .alias("mean_order_value"),
            pl.when(n_orders >= 2)
            .then(
                (order_ts.max() - order_ts.min()).dt.total_microseconds()
                / _US_PER_DAY
                / (n_orders - 1)
            )
            .alias("mean_inter_order_gap_days"),
        )
    )

    bought = purchases.select("buyer_id", "item_id")
    if items is not None and "category" in items.columns:
        categories = items.lazy().select(
            pl.col("item_id").cast(pl.String), pl.col("category").cast(pl.String)
        )
        bought = bought.join(categories, on="item_id", how="left")
        category_count = pl.col("category").drop_nulls().n_unique()
    else:
        category_count = pl.lit(None, dtype=pl.Int64)
    breadth = bought.group_by("buyer_id").agg(
        pl.col("item_id").drop_nulls().n_unique().alias("distinct_items_bought"),
        category_count.alias("distinct_categories_bought"),
    )

    abandoned = _abandoned_checkouts(ev)

    frame = (
        activity.join(recent, on="buyer_id", how="left")
        .join(carts, on="buyer_id", how="left")
        .join(order_stats, on="buyer_id", how="left")
        .join(breadth, on="buyer_id", how="left")
        .join(abandoned, on="buyer_id", how="left")
    )
    first_seen = pl.col("_first_event")
    if buyers is not None and "first_seen" in buyers.columns:
        seen = buyers.lazy().select(
            pl.col("buyer_id").cast(pl.String),
            pl.col("first_seen").cast(pl.Datetime("us", "UTC")).alias("_first_seen"),
        )
        frame = frame.join(seen, on="buyer_id", how="left")
        usable = pl.col("_first_seen").is_not_null() & (pl.col("_first_seen") < as_of)
        first_seen = pl.when(usable).then(pl.min_horizontal("_first_seen", "_first_event"))
        first_seen = first_seen.otherwise(pl.col("_first_event"))

    no_orders = pl.col("orders_total").is_null()
    out = frame.with_columns(
        _days_before(as_of, pl.col("_last_event")).alias("days_since_last_event"),
        _days_before(as_of, pl.col("_last_purchase")).alias("days_since_last_purchase"),
        _days_before(as_of, pl.col("_last_cart_add")).alias("days_since_last_cart_add"),
        _days_before(as_of, pl.col("_last_abandoned")).alias("days_since_last_abandoned_checkout"),
        _days_before(as_of, first_seen).alias("tenure_days"),
        pl.when(no_orders).then(0.0).otherwise(pl.col("revenue_total")).alias("revenue_total"),
        *[
            pl.col(c).fill_null(0)
            for c in (
                "sessions_7d",
                "sessions_30d",
                "views_7d",
                "views_30d",
                "open_cart_adds_14d",
                "abandoned_checkouts",
            )
        ],
        pl.col("distinct_items_bought").fill_null(0),
        pl.col("orders_total").fill_null(0),
        pl.col("orders_30d").fill_null(0),
        pl.col("orders_90d").fill_null(0),
    )
    if items is not None and "category" in items.columns:
        out = out.with_columns(pl.col("distinct_categories_bought").fill_null(0))
    return (
        out.select(
            "buyer_id",
            *[
                pl.col(name).cast(pl.Int64 if name in _COUNT_FEATURES else pl.Float64)
                for name in BUYER_FEATURES
            ],
        )
        .sort("buyer_id")
        .collect()
    )


def _abandoned_checkouts(ev: pl.LazyFrame) -> pl.LazyFrame:
    """Per buyer: checkouts without a purchase within the conversion window, and the last."""
    checkouts = ev.filter(pl.col("event_type") == "checkout").select("buyer_id", "ts").sort("ts")
    purchase_times = (
        ev.filter(pl.col("event_type") == "purchase")
        .select("buyer_id", pl.col("ts").alias("_purchase_ts"))
        .unique()
        .sort("_purchase_ts")
    )
    matched = checkouts.join_asof(
        purchase_times,
        left_on="ts",
        right_on="_purchase_ts",
        by="buyer_id",
        strategy="forward",
        tolerance=CHECKOUT_CONVERSION_WINDOW,
        check_sortedness=False,  # both sides are sorted by time just above
    )
    return (
        matched.filter(pl.col("_purchase_ts").is_null())
        .group_by("buyer_id")
        .agg(
            pl.len().alias("abandoned_checkouts"),
            pl.col("ts").max().alias("_last_abandoned"),
        )
    )


def time_scale_days(
    events: pl.DataFrame | pl.LazyFrame,
    as_of: datetime | None = None,
    *,
    min_buyers: int = 20,
) -> float:
    """The data's typical inter-order gap in days, to scale journey thresholds.

    Each buyer with at least two orders (before ``as_of`` when given) contributes their
    mean gap, (last order - first order) / (orders - 1); the scale is the median over those
    buyers, clamped to `TIME_SCALE_BOUNDS` (3 to 90 days). With fewer than ``min_buyers``
    such buyers it is `DEFAULT_TIME_SCALE_DAYS` (14): too little evidence to measure.

    Examples
    --------
    >>> from datetime import datetime
    >>> rows = [
    ...     (f"b{b}", datetime(2026, 1, 1 + 10 * k)) for b in range(25) for k in range(3)
    ... ]
    >>> ev = pl.DataFrame(rows, schema=["buyer_id", "ts"], orient="row").with_columns(
    ...     event_type=pl.lit("purchase")
    ... )
    >>> time_scale_days(ev)
    10.0
    """
    purchases = _events_before(events, as_of).filter(pl.col("event_type") == "purchase")
    gaps = (
        _orders(purchases, None)
        .group_by("buyer_id")
        .agg(
            pl.len().alias("n"),
            (pl.col("order_ts").max() - pl.col("order_ts").min()).alias("span"),
        )
        .filter(pl.col("n") >= 2)
        .select(pl.col("span").dt.total_microseconds() / _US_PER_DAY / (pl.col("n") - 1))
        .collect()
        .to_series()
    )
    if len(gaps) < min_buyers:
        return DEFAULT_TIME_SCALE_DAYS
    median = gaps.median()
    assert isinstance(median, float)
    low, high = TIME_SCALE_BOUNDS
    return float(min(max(median, low), high))


ATTRIBUTE_PREFIX = "attr_"
"""Prefix of the feature columns made from the buyers table's attributes."""
MAX_ATTRIBUTE_CATEGORIES = 20
"""Text attributes with more distinct values than this (ids, free text) are left out."""


def buyer_attributes(
    buyers: pl.DataFrame | None,
    buyer_ids: pl.Series | None = None,
    max_categories: int = MAX_ATTRIBUTE_CATEGORIES,
) -> tuple[pl.DataFrame | None, list[str]]:
    """The buyers table's own attributes (country, age band, channel ...) as features
    ``attr_<column>``, and a note on each column left out.

    The contract lets a source add any attribute columns to `buyers`; a buyer known by
    nothing else must still be scored from them, and a categorical one can segment the
    policy. Every column but ``buyer_id`` and ``first_seen`` (read as tenure):

    * numbers as Float64, booleans as 0/1;
    * text with at most `max_categories` distinct values stays text (a category: models
      code it, policy learning may segment by it); a missing value stays missing;
    * text with more values (an id, free text) and other types (dates) are left out, each
      with a note; so is a column without values or with a single value (it says nothing).

    With `buyer_ids`, only those buyers' rows (the columns are chosen on the whole table,
    so every caller sees the same ones). Returns (buyer_id + the feature columns, or None
    when no attribute is usable; notes). Cost: one pass over the buyers table.

    Examples
    --------
    >>> frame, notes = buyer_attributes(
    ...     pl.DataFrame({"buyer_id": ["a", "b"], "region": ["s", "n"], "vip": [True, False]})
    ... )
    >>> frame.columns
    ['buyer_id', 'attr_region', 'attr_vip']
    >>> frame.row(0)
    ('a', 's', 1.0)
    """
    if buyers is None or "buyer_id" not in buyers.columns:
        return None, []
    features: list[pl.Expr] = []
    notes: list[str] = []
    for name, dtype in buyers.schema.items():
        if name in ("buyer_id", "first_seen"):
            continue
        distinct = buyers[name].drop_nulls().n_unique()
        feature = f"{ATTRIBUTE_PREFIX}{name}"
        if distinct < 2:
            notes.append(f"buyer attribute {name} left out (no variance: {distinct} value(s))")
        elif dtype.is_numeric() or dtype == pl.Boolean:
            features.append(pl.col(name).cast(pl.Float64).alias(feature))
        elif dtype in (pl.String, pl.Categorical, pl.Enum) and distinct <= max_categories:
            features.append(pl.col(name).cast(pl.String).alias(feature))
        elif dtype in (pl.String, pl.Categorical, pl.Enum):
            notes.append(
                f"buyer attribute {name} left out ({distinct:,} distinct values, more than "
                f"{max_categories}: an id or free text says nothing general about a buyer)"
            )
        else:
            notes.append(f"buyer attribute {name} left out (type {dtype} is not used)")
    if not features:
        return None, notes
    rows = (
        buyers
        if buyer_ids is None
        else buyers.filter(pl.col("buyer_id").is_in(buyer_ids.implode()))
    )
    return rows.select(pl.col("buyer_id"), *features), notes
