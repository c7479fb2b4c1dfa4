"""Features of a (buyer, offer) pair as of a time, and outcomes of logged exposures.

The features are the ones that carry over between sources: the buyer's history with the
offer's seller, items and category; past offers and redemptions; the offer's own
attributes; the buyer table's columns, among them the buyer's own attributes from the
buyers table (`recsys.features.buyer.buyer_attributes`), all there is to know about a
buyer without history. A `FeatureStore` computes every table once from records strictly
before `as_of` (training rows built as of an exposure never see its outcome); pair
features are then joins, fast enough to score large target lists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

import polars as pl

from recsys.data.dataset import Dataset
from recsys.features.money import MICROS, to_micros
from recsys.features.windows import next_time

log = logging.getLogger(__name__)

PLATFORM = "__platform__"
"""Seller key of platform-wide offers (offers.seller_id null)."""


def seller_id_of_key(key: pl.Expr) -> pl.Expr:
    """The contract's seller_id of a seller key: null for platform-wide offers."""
    return pl.when(key == PLATFORM).then(None).otherwise(key)


OFFER_FEATURES: tuple[str, ...] = (
    "offer_value",
    "offer_min_spend",
    "offer_cost",
    "offer_scoped",
    "offer_scope_size",
)
SELLER_FEATURES: tuple[str, ...] = (
    "bs_orders",
    "bs_order_share",
    "bs_days_since_purchase",
    "bs_views_30d",
    "bs_carts_30d",
    "bs_mean_order_value",
)
SCOPE_FEATURES: tuple[str, ...] = ("scope_purchases", "scope_category_share")
HISTORY_FEATURES: tuple[str, ...] = (
    "past_offers",
    "past_redemptions",
    "past_redemption_rate",
    "past_tool_offers",
    "past_tool_redemptions",
)
PRIOR_REDEMPTION_RATE = 0.1 / 5.0
"""Smoothed redemption rate of a buyer with no history: (0 + 0.1) / (0 + 5)."""


def offer_attributes(dataset: Dataset) -> pl.DataFrame:
    """One row per offer: seller key, tool, value, spend rules, scope size and category.

    Cost: O offers and the OI `offer_items` rows (joined to their items' categories).
    """
    if dataset.offers is None:
        raise ValueError("the dataset has no offers table; promotion models need one")
    sizes = (
        _offer_scope(dataset)
        .group_by("offer_id")
        .agg(
            pl.len().alias("offer_scope_size"),
            # The most common category; ties go to the smallest name, so it is stable.
            pl.col("category").drop_nulls().mode().sort().first().alias("scope_category"),
        )
    )
    return (
        dataset.offers.select(
            "offer_id",
            pl.col("seller_id").fill_null(PLATFORM).alias("seller_key"),
            "tool",
            pl.col("value").alias("offer_value"),
            pl.col("min_spend").alias("offer_min_spend"),
            pl.col("cost").alias("offer_cost"),
            "start_ts",
            "end_ts",
        )
        .join(sizes, on="offer_id", how="left")
        .with_columns(
            pl.col("offer_scope_size").fill_null(0).cast(pl.Float64),
            (pl.col("offer_scope_size").fill_null(0) > 0).cast(pl.Float64).alias("offer_scoped"),
        )
    )


def _offer_scope(dataset: Dataset) -> pl.DataFrame:
    """(offer_id, item_id, category) for item-scoped offers."""
    if dataset.offer_items is None:
        return pl.DataFrame(
            schema={"offer_id": pl.String, "item_id": pl.String, "category": pl.String}
        )
    return dataset.offer_items.join(
        dataset.items.select("item_id", "category"), on="item_id", how="left"
    )


def live_offer_ids(offers: pl.DataFrame, as_of: datetime) -> pl.Series:
    """Ids of the offers not ended by `as_of` (no end, or an end after it): the offers a
    decision made at `as_of` or later can still issue. Cost: one pass over O offers."""
    live = pl.col("end_ts").is_null() | (pl.col("end_ts") > as_of)
    return offers.filter(live)["offer_id"]


def purchase_lines(dataset: Dataset, before: datetime | None = None) -> pl.DataFrame:
    """Purchase rows with their seller, category and order key (order_id or timestamp).

    Lines before a moment are the lines filtered by ``ts < before``: a caller needing them
    at several moments computes them once and filters.

    Cost: one lazy scan of the E events (four columns); P purchase rows materialized.
    """
    events = dataset.events.lazy()
    if before is not None:
        events = events.filter(pl.col("ts") < before)
    catalog = dataset.items.lazy().select("item_id", "seller_id", "category", "price")
    return (
        events.filter(pl.col("event_type") == "purchase")
        .join(catalog, on="item_id", how="left", maintain_order="left")
        .select(
            "buyer_id",
            "item_id",
            pl.col("seller_id").fill_null(PLATFORM).alias("seller_key"),
            "category",
            "ts",
            pl.coalesce("order_id", pl.col("ts").cast(pl.String)).alias("order_key"),
            pl.coalesce("amount", pl.col("quantity").fill_null(1) * pl.col("price"))
            .fill_null(0.0)
            .alias("line_value"),
        )
        .collect()
    )


def buyer_seller_features(
    dataset: Dataset,
    as_of: datetime,
    lines: pl.DataFrame | None = None,
    buyer_ids: pl.Series | None = None,
) -> pl.DataFrame:
    """History of each buyer with each seller before `as_of` (one row per pair seen, and
    one platform row per buyer).

    With `buyer_ids`, only those buyers' rows (`lines` then hold only theirs, too).
    Cost: the P purchase lines before `as_of` (grouped by order, then by seller) and the
    views and cart adds of the last 30 days; the output has one row per (buyer, seller)
    pair seen, plus one per buyer.
    """
    if lines is None:
        lines = purchase_lines(dataset, before=as_of)
    # Money is summed in integer micro-units so that features are reproducible.
    orders = lines.group_by("buyer_id", "seller_key", "order_key").agg(
        (to_micros(pl.col("line_value")).sum() / MICROS).alias("order_value"),
        pl.col("ts").max(),
        pl.len().alias("n"),
    )
    per_seller = orders.group_by("buyer_id", "seller_key").agg(
        pl.len().cast(pl.Float64).alias("bs_orders"),
        pl.col("n").sum().cast(pl.Float64).alias("bs_lines"),
        ((as_of - pl.col("ts").max()).dt.total_seconds() / 86400).alias("bs_days_since_purchase"),
        (to_micros(pl.col("order_value")).sum() / MICROS / pl.len()).alias("bs_mean_order_value"),
    )
    window = (
        (pl.col("ts") < as_of)
        & (pl.col("ts") >= as_of - timedelta(days=30))
        & pl.col("event_type").is_in(["view", "add_to_cart"])
    )
    if buyer_ids is not None:
        window &= pl.col("buyer_id").is_in(buyer_ids.implode())
    # Lazy: only the three columns needed are read from the events, never a copy of all.
    recent = (
        dataset.events.lazy()
        .filter(window)
        .select("buyer_id", "item_id", "event_type")
        .join(dataset.items.lazy().select("item_id", "seller_id"), on="item_id")
    )
    browsing = (
        recent.group_by("buyer_id", pl.col("seller_id").alias("seller_key"))
        .agg(
            (pl.col("event_type") == "view").sum().cast(pl.Float64).alias("bs_views_30d"),
            (pl.col("event_type") == "add_to_cart").sum().cast(pl.Float64).alias("bs_carts_30d"),
        )
        .collect()
    )
    out = per_seller.join(browsing, on=["buyer_id", "seller_key"], how="full", coalesce=True)
    orders_filled = pl.col("bs_orders").fill_null(0.0)
    out = out.with_columns(
        pl.col("bs_orders", "bs_lines", "bs_views_30d", "bs_carts_30d").fill_null(0.0),
        (orders_filled / orders_filled.sum().over("buyer_id"))
        .fill_nan(0.0)
        .alias("bs_order_share"),
    )
    # Purchases without an item (a till line of an order total) have no seller: they
    # count for the platform row only, which must stay one row per buyer.
    sellers = out.filter(pl.col("seller_key") != PLATFORM)
    return pl.concat([sellers, _platform_rows(out)], how="vertical_relaxed")


def _platform_rows(per_seller: pl.DataFrame) -> pl.DataFrame:
    """Each buyer's history across all sellers (and purchases of no known seller), under
    the platform key: a platform-wide offer's "seller" is the whole marketplace."""
    value = pl.col("bs_mean_order_value").fill_null(0.0) * pl.col("bs_orders")
    return (
        per_seller.group_by("buyer_id")
        .agg(
            pl.lit(PLATFORM).alias("seller_key"),
            pl.col("bs_orders").sum(),
            pl.col("bs_lines").sum(),
            pl.col("bs_days_since_purchase").min(),
            (value.sum() / pl.col("bs_orders").sum()).alias("bs_mean_order_value"),
            pl.col("bs_views_30d").sum(),
            pl.col("bs_carts_30d").sum(),
            pl.lit(1.0).alias("bs_order_share"),
        )
        .with_columns(pl.col("bs_mean_order_value").fill_nan(None))
        .select(per_seller.columns)
    )


def buyer_category_shares(lines: pl.DataFrame) -> pl.DataFrame:
    """Each buyer's share of purchase lines per category (cost: the P lines given; one
    row per (buyer, category) bought)."""
    return (
        lines.filter(pl.col("category").is_not_null())
        .group_by("buyer_id", "category")
        .agg(pl.len().alias("n"))
        .select(
            "buyer_id",
            pl.col("category").alias("scope_category"),
            (pl.col("n") / pl.col("n").sum().over("buyer_id")).alias("scope_category_share"),
        )
    )


SCOPED_CHUNK_ROWS = 2_000_000
"""Rows `scoped_purchases` joins at a time (buyers are taken in groups that fit)."""


def scoped_purchases(
    dataset: Dataset,
    lines: pl.DataFrame,
    chunk_rows: int = SCOPED_CHUNK_ROWS,
    offer_ids: pl.Series | None = None,
) -> pl.DataFrame:
    """(buyer_id, offer_id, scope_purchases): past purchase lines of an item-scoped
    offer's items, per buyer and offer (with `offer_ids`, only those offers: training
    rows need the offers they were issued, not every offer a buyer's items belong to).

    Lines are counted per (buyer, item) first, only for items some offer's scope holds,
    and those counts joined to `offer_items`; buyers are taken in groups whose joined
    rows fit `chunk_rows`. Cost: P purchase lines read once; the rows materialized are
    the output's (buyer, item, offer) triples — sum over the distinct (buyer, item) pairs
    bought of the offers holding the item, at most `chunk_rows` at a time — never
    P x offers per item.
    """
    scope = _offer_scope(dataset).select("offer_id", "item_id")
    if offer_ids is not None:
        scope = scope.filter(pl.col("offer_id").is_in(offer_ids.implode()))
    empty = pl.DataFrame(
        schema={"buyer_id": pl.String, "offer_id": pl.String, "scope_purchases": pl.Float64}
    )
    if scope.height == 0 or lines.height == 0:
        return empty
    per_item = scope.group_by("item_id").agg(pl.len().alias("_offers"))
    bought = (
        lines.select("buyer_id", "item_id")
        .join(per_item, on="item_id", how="semi")
        .group_by("buyer_id", "item_id")
        .agg(pl.len().alias("_n"))
        .join(per_item, on="item_id")
    )
    if bought.height == 0:
        return empty
    # Buyers in groups whose (buyer, item, offer) rows fit a chunk.
    per_buyer = (
        bought.group_by("buyer_id")
        .agg(pl.col("_offers").sum().alias("_rows"))
        .sort("buyer_id")
        .with_columns((pl.col("_rows").cum_sum() // max(chunk_rows, 1)).alias("_chunk"))
    )
    bought = bought.join(per_buyer.select("buyer_id", "_chunk"), on="buyer_id")
    parts = [
        group.join(scope, on="item_id")
        .group_by("buyer_id", "offer_id")
        .agg(pl.col("_n").sum().cast(pl.Float64).alias("scope_purchases"))
        for _, group in bought.group_by("_chunk", maintain_order=True)
    ]
    return pl.concat(parts) if parts else empty


def redemption_history(dataset: Dataset, as_of: datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Past offers and redemptions per buyer, and per buyer and tool, before `as_of`.

    Cost: the X exposures and R redemptions before `as_of`, each joined to its offer's
    tool (one row each); one output row per (buyer, tool) and per buyer.
    """
    per_tool = pl.DataFrame(
        schema={
            "buyer_id": pl.String,
            "tool": pl.String,
            "past_tool_offers": pl.Float64,
            "past_tool_redemptions": pl.Float64,
        }
    )
    if dataset.offers is not None and dataset.exposures is not None:
        tools = dataset.offers.select("offer_id", "tool")
        issued = (
            dataset.exposures.filter((pl.col("ts") < as_of) & pl.col("offer_id").is_not_null())
            .join(tools, on="offer_id")
            .group_by("buyer_id", "tool")
            .agg(pl.len().cast(pl.Float64).alias("past_tool_offers"))
        )
        redeemed = per_tool.select("buyer_id", "tool", "past_tool_redemptions")
        if dataset.redemptions is not None:
            redeemed = (
                dataset.redemptions.filter(pl.col("ts") < as_of)
                .join(tools, on="offer_id")
                .group_by("buyer_id", "tool")
                .agg(pl.len().cast(pl.Float64).alias("past_tool_redemptions"))
            )
        per_tool = issued.join(
            redeemed, on=["buyer_id", "tool"], how="full", coalesce=True
        ).fill_null(0.0)
    per_buyer = (
        per_tool.group_by("buyer_id")
        .agg(
            pl.col("past_tool_offers").sum().alias("past_offers"),
            pl.col("past_tool_redemptions").sum().alias("past_redemptions"),
        )
        .with_columns(
            ((pl.col("past_redemptions") + 0.1) / (pl.col("past_offers") + 5.0)).alias(
                "past_redemption_rate"
            )
        )
    )
    return per_buyer, per_tool


_COUNTS = ("bs_orders", "bs_lines", "bs_order_share", "bs_views_30d", "bs_carts_30d")


@dataclass(frozen=True)
class FeatureStore:
    """Every table pair features are joined from, computed once as of `as_of`.

    Training builds one store per exposure snapshot; a fitted model keeps the store of
    its data's end, so scoring a target list is a handful of joins.
    """

    as_of: datetime
    offers: pl.DataFrame
    buyer_seller: pl.DataFrame
    buyer_category: pl.DataFrame
    scoped: pl.DataFrame
    history_buyer: pl.DataFrame
    history_tool: pl.DataFrame
    buyers: pl.DataFrame | None = None

    TABLES: ClassVar[tuple[str, ...]] = (
        "offers",
        "buyer_seller",
        "buyer_category",
        "scoped",
        "history_buyer",
        "history_tool",
        "buyers",
    )

    @classmethod
    def build(
        cls,
        dataset: Dataset,
        as_of: datetime,
        buyer_table: pl.DataFrame | None = None,
        *,
        lines: pl.DataFrame | None = None,
        buyer_ids: pl.Series | None = None,
        offer_ids: pl.Series | None = None,
    ) -> FeatureStore:
        """Compute the tables from `dataset`'s records strictly before `as_of`.

        `buyer_table` holds per-buyer features (journey stage, RFM, MF) keyed by buyer_id.
        `lines` are ``purchase_lines(dataset, before=as_of)`` when the caller has them.
        With `buyer_ids`, the per-buyer tables hold only those buyers: each buyer's rows
        depend on that buyer's records alone, so they are the rows of the whole store.
        With `offer_ids`, the (buyer, offer) table holds only those offers: pairs of
        other offers would get no scope purchases from it (training rows use this).

        Cost: the sum of its tables' (each function states its own): the P lines before
        `as_of`, the last 30 days of events, X + R, O + OI; every
        table is keyed by buyer (and seller, offer, tool or category), no product.
        """
        if lines is None:
            lines = purchase_lines(dataset, before=as_of)
        records = dataset
        if buyer_ids is not None:
            wanted = pl.col("buyer_id").is_in(buyer_ids.implode())
            lines = lines.filter(wanted)
            records = replace(
                dataset,
                exposures=None if dataset.exposures is None else dataset.exposures.filter(wanted),
                redemptions=(
                    None if dataset.redemptions is None else dataset.redemptions.filter(wanted)
                ),
            )
        per_buyer, per_tool = redemption_history(records, as_of)
        return cls(
            as_of=as_of,
            offers=offer_attributes(dataset),
            buyer_seller=buyer_seller_features(dataset, as_of, lines, buyer_ids),
            buyer_category=buyer_category_shares(lines),
            scoped=scoped_purchases(dataset, lines, offer_ids=offer_ids),
            history_buyer=per_buyer,
            history_tool=per_tool,
            buyers=buyer_table,
        )

    def for_buyers(self, buyer_ids: pl.Series) -> FeatureStore:
        """This store with the per-buyer tables cut to `buyer_ids` (offers kept whole).

        Pair features of those buyers' pairs are the same as from the whole store; the
        joins are cheaper when the buyers are a small part of a large store.
        """
        wanted = pl.col("buyer_id").is_in(buyer_ids.implode())
        return FeatureStore(
            as_of=self.as_of,
            offers=self.offers,
            buyer_seller=self.buyer_seller.filter(wanted),
            buyer_category=self.buyer_category.filter(wanted),
            scoped=self.scoped.filter(wanted),
            history_buyer=self.history_buyer.filter(wanted),
            history_tool=self.history_tool.filter(wanted),
            buyers=None if self.buyers is None else self.buyers.filter(wanted),
        )

    def pair_features(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """Feature rows for `pairs` (buyer_id, offer_id, ...), in input order.

        Unknown offers get null offer columns and `offer_known` false; buyers without
        history get zeros for counts and nulls for recencies. Columns of `pairs` are kept.
        Cost: one row per pair: every table joined is keyed uniquely by its join keys.
        """
        offers = self.offers.drop("start_ts", "end_ts").with_columns(
            pl.lit(True).alias("offer_known")
        )
        out = (
            pairs.with_row_index("_row")
            .join(offers, on="offer_id", how="left")
            .join(self.buyer_seller, on=["buyer_id", "seller_key"], how="left")
            .join(self.scoped, on=["buyer_id", "offer_id"], how="left")
            .join(self.buyer_category, on=["buyer_id", "scope_category"], how="left")
            .join(self.history_buyer, on="buyer_id", how="left")
            .join(self.history_tool, on=["buyer_id", "tool"], how="left")
        )
        if self.buyers is not None:
            out = out.join(self.buyers, on="buyer_id", how="left")
        scoped = pl.col("scope_category").is_not_null()
        return (
            out.with_columns(
                pl.col("offer_known").fill_null(False),
                pl.col(
                    *_COUNTS,
                    "past_offers",
                    "past_redemptions",
                    "past_tool_offers",
                    "past_tool_redemptions",
                ).fill_null(0.0),
                pl.col("past_redemption_rate").fill_null(PRIOR_REDEMPTION_RATE),
                pl.when(scoped)
                .then(pl.col("scope_purchases").fill_null(0.0))
                .otherwise(pl.col("bs_lines").fill_null(0.0))
                .alias("scope_purchases"),
                pl.when(scoped)
                .then(pl.col("scope_category_share").fill_null(0.0))
                .otherwise(1.0)
                .alias("scope_category_share"),
            )
            .sort("_row")
            .drop("_row")
        )

    def seller_rows(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Features of (buyer_id, seller_key) rows with no offer (control outcomes)."""
        out = rows.join(self.buyer_seller, on=["buyer_id", "seller_key"], how="left").join(
            self.history_buyer, on="buyer_id", how="left"
        )
        if self.buyers is not None:
            out = out.join(self.buyers, on="buyer_id", how="left")
        return out.with_columns(
            pl.col(*_COUNTS, "past_offers", "past_redemptions").fill_null(0.0),
            pl.col("past_redemption_rate").fill_null(PRIOR_REDEMPTION_RATE),
        )

    def save(self, path: Path) -> None:
        """Write the tables as Parquet files under directory `path`."""
        path.mkdir(parents=True, exist_ok=True)
        (path / "as_of.txt").write_text(self.as_of.isoformat())
        for name in self.TABLES:
            table = getattr(self, name)
            file = path / f"{name}.parquet"
            if table is not None:
                table.write_parquet(file)
            else:
                file.unlink(missing_ok=True)  # never let `load` find an older table

    @classmethod
    def load(cls, path: Path) -> FeatureStore:
        """Read a store written by `save`."""
        tables = {
            name: pl.read_parquet(path / f"{name}.parquet")
            for name in cls.TABLES
            if (path / f"{name}.parquet").exists()
        }
        as_of = datetime.fromisoformat((path / "as_of.txt").read_text())
        return cls(as_of=as_of, **tables)


def exposure_outcomes(
    dataset: Dataset, horizon_days: float, lines: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Each exposure with its outcome window, redemption flag and seller purchases.

    The window is [ts, min(offer end, ts + horizon)). `redeemed` is 1 when a redemption
    links to the exposure (or, without a link, the same buyer redeemed the same offer in
    the window). `purchased` is 1 when the buyer bought from the offer's seller (any
    seller for platform offers) in the window; control rows get no seller here — see
    `control_outcomes`. `lines` are ``purchase_lines(dataset)`` when the caller has them.

    Cost: X exposures, P purchase lines and R redemptions are each sorted once, and each
    window is answered by an as-of search for the buyer's first purchase (or redemption)
    at or after the exposure (`recsys.features.windows`): X + P + R rows materialized,
    never X x lines per buyer.
    """
    if dataset.exposures is None:
        raise ValueError("the dataset has no exposures table; response models need one")
    offers = offer_attributes(dataset).select("offer_id", "seller_key", "tool", "end_ts")
    horizon = timedelta(days=horizon_days)
    exp = dataset.exposures.join(offers, on="offer_id", how="left").with_columns(
        pl.min_horizontal(pl.col("end_ts"), pl.col("ts") + horizon).alias("window_end")
    )
    if lines is None:
        lines = purchase_lines(dataset)
    lines = lines.select("buyer_id", "seller_key", pl.col("ts").alias("p_ts"))
    issued = exp.filter(pl.col("offer_id").is_not_null()).select(
        "exposure_id", "buyer_id", "seller_key", "ts", "window_end"
    )
    # A seller's offer: purchases at that seller; a platform-wide one: at any seller.
    parts = []
    for rows, by in (
        (issued.filter(pl.col("seller_key") != PLATFORM), ["buyer_id", "seller_key"]),
        (issued.filter(pl.col("seller_key") == PLATFORM), ["buyer_id"]),
    ):
        first = next_time(rows, lines, by, "ts", "p_ts")
        parts.append(rows.select("exposure_id").filter(first < rows["window_end"]))
    bought = pl.concat(parts).with_columns(pl.lit(1.0).alias("purchased"))
    return (
        exp.join(_redeemed_flags(dataset, exp), on="exposure_id", how="left")
        .join(bought, on="exposure_id", how="left")
        .with_columns(pl.col("redeemed", "purchased").fill_null(0.0))
    )


def _redeemed_flags(dataset: Dataset, exp: pl.DataFrame) -> pl.DataFrame:
    """exposure_id, redeemed = 1 for exposures with a linked redemption, or an unlinked
    one of the same buyer and offer in the window (one as-of search: X + R rows)."""
    if dataset.redemptions is None:
        return pl.DataFrame(schema={"exposure_id": pl.String, "redeemed": pl.Float64})
    red = dataset.redemptions
    linked = red.filter(pl.col("exposure_id").is_not_null()).select("exposure_id")
    issued = exp.filter(pl.col("offer_id").is_not_null()).select(
        "exposure_id", "buyer_id", "offer_id", "ts", "window_end"
    )
    unlinked = red.filter(pl.col("exposure_id").is_null()).select(
        "buyer_id", "offer_id", pl.col("ts").alias("r_ts")
    )
    first = next_time(issued, unlinked, ["buyer_id", "offer_id"], "ts", "r_ts")
    in_window = issued.select("exposure_id").filter(first < issued["window_end"])
    return pl.concat([linked, in_window]).unique().with_columns(pl.lit(1.0).alias("redeemed"))
