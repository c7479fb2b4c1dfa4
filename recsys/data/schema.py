"""The data contract's tables as typed specifications (version 1).

One `TableSpec` per table of `docs/data-contract.md`. The loader casts every table to
these dtypes and checks these rules; the simulator writes exactly these columns. Keeping
the contract in one place means the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

CONTRACT_VERSION = 1

ID = pl.String()
TS = pl.Datetime("us", "UTC")
FLOAT = pl.Float64()
INT = pl.Int64()

EVENT_TYPES: tuple[str, ...] = (
    "view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "purchase",
)
"""The only accepted values of `events.event_type`."""

JOURNEY_STAGES: tuple[str, ...] = (
    "new",
    "browsing",
    "cart_abandoner",
    "repeat",
    "loyal",
    "lapsing",
    "churned",
)
"""The engine's purchase-journey stages (journey model, simulator, scores and API)."""

KNOWN_TOOLS: tuple[str, ...] = (
    "percent_off",
    "amount_off",
    "free_shipping",
    "bundle",
    "points",
    "reminder",
)
"""Tools the contract names; a source may use other tool names too."""


@dataclass(frozen=True)
class Column:
    """One column of a contract table.

    `required` means the column must be present; `nullable=False` means it must also have
    a value on every row (keys, event types, timestamps).
    """

    name: str
    dtype: pl.DataType
    required: bool
    nullable: bool = True
    min_value: float | None = None
    """Smallest allowed value (inclusive) for numeric columns."""


@dataclass(frozen=True)
class ForeignKey:
    """`column` of this table must hold a value of `ref_table.ref_column` (nulls allowed)."""

    column: str
    ref_table: str
    ref_column: str


@dataclass(frozen=True)
class TableSpec:
    """One table: its columns, primary key, references and whether the table is required."""

    name: str
    columns: tuple[Column, ...]
    required: bool
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = field(default_factory=tuple)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"table {self.name} has no contract column {name!r}")

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def schema(self) -> dict[str, pl.DataType]:
        """Contract dtypes of all contract columns, in contract order."""
        return {c.name: c.dtype for c in self.columns}


ITEMS = TableSpec(
    name="items",
    required=True,
    primary_key=("item_id",),
    columns=(
        Column("item_id", ID, required=True, nullable=False),
        Column("seller_id", ID, required=True, nullable=False),
        Column("category", ID, required=False),
        Column("price", FLOAT, required=False, min_value=0.0),
    ),
)

EVENTS = TableSpec(
    name="events",
    required=True,
    columns=(
        Column("buyer_id", ID, required=True, nullable=False),
        Column("item_id", ID, required=False),
        Column("event_type", ID, required=True, nullable=False),
        Column("ts", TS, required=True, nullable=False),
        Column("session_id", ID, required=False),
        Column("order_id", ID, required=False),
        Column("quantity", INT, required=False, min_value=1),
        Column("amount", FLOAT, required=False, min_value=0.0),
    ),
    foreign_keys=(ForeignKey("item_id", "items", "item_id"),),
)

BUYERS = TableSpec(
    name="buyers",
    required=False,
    primary_key=("buyer_id",),
    columns=(
        Column("buyer_id", ID, required=True, nullable=False),
        Column("first_seen", TS, required=False),
    ),
)

OFFERS = TableSpec(
    name="offers",
    required=False,
    primary_key=("offer_id",),
    columns=(
        Column("offer_id", ID, required=True, nullable=False),
        Column("tool", ID, required=True, nullable=False),
        Column("seller_id", ID, required=False),
        Column("campaign_id", ID, required=False),
        Column("value", FLOAT, required=False, min_value=0.0),
        Column("min_spend", FLOAT, required=False, min_value=0.0),
        Column("cost", FLOAT, required=False, min_value=0.0),
        Column("start_ts", TS, required=False),
        Column("end_ts", TS, required=False),
    ),
    foreign_keys=(ForeignKey("seller_id", "items", "seller_id"),),
)

OFFER_ITEMS = TableSpec(
    name="offer_items",
    required=False,
    primary_key=("offer_id", "item_id"),
    columns=(
        Column("offer_id", ID, required=True, nullable=False),
        Column("item_id", ID, required=True, nullable=False),
    ),
    foreign_keys=(
        ForeignKey("offer_id", "offers", "offer_id"),
        ForeignKey("item_id", "items", "item_id"),
    ),
)

EXPOSURES = TableSpec(
    name="exposures",
    required=False,
    primary_key=("exposure_id",),
    columns=(
        Column("exposure_id", ID, required=True, nullable=False),
        Column("buyer_id", ID, required=True, nullable=False),
        Column("offer_id", ID, required=False),
        Column("ts", TS, required=True, nullable=False),
        Column("propensity", FLOAT, required=False),
        Column("policy", ID, required=False),
        # Added by this engine (optional): whose decision this was. It names the seller of
        # a control row, so off-policy evaluation knows which offers that buyer could
        # have been given; the service writes it in its decision log.
        Column("seller_id", ID, required=False),
        # Added by this engine (optional): the holdout arm of a served decision, "control"
        # (held out: no offer) or "treated"; null where no holdout was kept. The
        # incrementality report compares the two (`recsys.evaluation.incrementality`).
        Column("arm", ID, required=False),
    ),
    foreign_keys=(ForeignKey("offer_id", "offers", "offer_id"),),
)

REDEMPTIONS = TableSpec(
    name="redemptions",
    required=False,
    columns=(
        Column("buyer_id", ID, required=True, nullable=False),
        Column("offer_id", ID, required=True, nullable=False),
        Column("ts", TS, required=True, nullable=False),
        Column("exposure_id", ID, required=False),
        Column("order_id", ID, required=False),
        Column("amount", FLOAT, required=False, min_value=0.0),
    ),
    foreign_keys=(
        ForeignKey("offer_id", "offers", "offer_id"),
        ForeignKey("exposure_id", "exposures", "exposure_id"),
    ),
)

TABLES: tuple[TableSpec, ...] = (
    ITEMS,
    EVENTS,
    BUYERS,
    OFFERS,
    OFFER_ITEMS,
    EXPOSURES,
    REDEMPTIONS,
)
"""All contract tables, in dependency order (a table only refers to earlier ones)."""

TABLES_BY_NAME: dict[str, TableSpec] = {t.name: t for t in TABLES}

PAIRS = TableSpec(
    name="pairs",
    required=True,
    columns=(
        Column("buyer_id", ID, required=True, nullable=False),
        Column("offer_id", ID, required=True, nullable=False),
    ),
)
"""A target list to score (the contract's "Scoring a target list" input)."""

SCORES_SCHEMA: dict[str, pl.DataType] = {
    "buyer_id": ID,
    "offer_id": ID,
    "p_redeem": FLOAT,
    "uplift": FLOAT,
    "expected_value": FLOAT,
    "score": FLOAT,
    "cold_start": pl.Boolean(),
}
"""Columns of the answer to a target list, in order."""
