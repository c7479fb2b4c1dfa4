"""A hypothesis strategy of small contract-valid datasets of random shape.

Real exports differ from the synthetic marketplace in their *shape* far more than in
their size: one seller or many, one item or thousands, no exposures, only control rows,
one campaign wave, no redemptions, purchases without an item, every event on one day, a
buyer with a single event, item-scoped offers whose items nobody bought. `datasets()`
draws any combination of these (and more), always valid under the data contract: every
id refers to something, keys are unique, values are in range. The frames are written as
a dataset directory by `write`, so a test loads them exactly as a user's files are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from hypothesis import strategies as st

from recsys.data.schema import EVENT_TYPES, TABLES_BY_NAME

T0 = datetime(2026, 3, 2, tzinfo=UTC)
TOOLS = ("percent_off", "amount_off", "free_shipping", "points", "reminder", "bundle", "gift")


@dataclass
class Drawn:
    """The tables of a drawn dataset (absent optional tables are None) and its shape."""

    tables: dict[str, pl.DataFrame | None]
    shape: dict[str, object] = field(default_factory=dict)

    def write(self, root: Path) -> Path:
        """Write every present table as `<table>.parquet` under `root` (created)."""
        root.mkdir(parents=True, exist_ok=True)
        for name, frame in self.tables.items():
            if frame is not None:
                frame.write_parquet(root / f"{name}.parquet")
        return root

    def __repr__(self) -> str:  # hypothesis prints this for a failing example
        rows = {k: (None if v is None else v.height) for k, v in self.tables.items()}
        return f"Drawn(shape={self.shape}, rows={rows})\n" + "\n".join(
            f"{name}:\n{frame}" for name, frame in self.tables.items() if frame is not None
        )


def _frame(table: str, rows: list[dict[str, object]]) -> pl.DataFrame:
    schema = TABLES_BY_NAME[table].schema
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema)


def _moment(day: int, minute: int) -> datetime:
    return T0 + timedelta(days=day, minutes=minute)


@st.composite
def datasets(draw: st.DrawFn, max_buyers: int = 8, max_events: int = 40) -> Drawn:
    """A small contract-valid dataset of random shape (module docstring)."""
    shape: dict[str, object] = {}
    # ---------------------------------------------------------------- items and sellers
    n_sellers = draw(st.integers(1, 3))
    n_items = draw(st.sampled_from([1, 2, 3, 5, 8, 2_000]))
    shape.update(sellers=n_sellers, items=n_items)
    priced = draw(st.sampled_from(["all", "some", "none"]))
    items = pl.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(n_items)],
            "seller_id": [f"s{k % n_sellers}" for k in range(n_items)],
            "category": [
                None if draw(st.booleans()) and k < 8 else f"c{k % 3}" for k in range(n_items)
            ]
            if n_items <= 8
            else [f"c{k % 7}" for k in range(n_items)],
            "price": [
                None if priced == "none" or (priced == "some" and k % 2) else 1.0 + (k % 9)
                for k in range(n_items)
            ],
        },
        schema=TABLES_BY_NAME["items"].schema,
    )
    sellers = sorted({f"s{k % n_sellers}" for k in range(n_items)})
    touched = list(range(min(n_items, 8)))  # events name only a few items
    # ---------------------------------------------------------------- buyers and time
    n_buyers = draw(st.integers(1, max_buyers))
    buyer_ids = [f"b{k}" for k in range(n_buyers)]
    one_day = draw(st.booleans())
    span = 0 if one_day else draw(st.sampled_from([3, 20, 60]))
    shape.update(buyers=n_buyers, span_days=span)
    day = st.integers(0, span)
    minute = st.integers(0, 24 * 60 - 1)
    only_purchases = draw(st.booleans())
    kinds = ["purchase"] if only_purchases else list(EVENT_TYPES)
    rows: list[dict[str, object]] = []
    n_events = draw(st.integers(1, max_events))
    for _ in range(n_events):
        kind = draw(st.sampled_from(kinds))
        item = None if kind == "search" else draw(st.one_of(st.none(), st.sampled_from(touched)))
        rows.append(
            {
                "buyer_id": draw(st.sampled_from(buyer_ids)),
                "item_id": None if item is None else f"i{item}",
                "event_type": kind,
                "ts": _moment(draw(day), draw(minute)),
                "session_id": draw(st.one_of(st.none(), st.sampled_from(["s1", "s2"]))),
                "order_id": draw(st.one_of(st.none(), st.sampled_from(["o1", "o2", "o3"])))
                if kind == "purchase"
                else None,
                "quantity": draw(st.one_of(st.none(), st.integers(1, 3))),
                "amount": draw(st.one_of(st.none(), st.floats(0, 80, allow_nan=False)))
                if kind == "purchase"
                else None,
            }
        )
    events = _frame("events", rows)
    shape.update(events=n_events, only_purchases=only_purchases)
    # ---------------------------------------------------------------- buyers table
    buyers = None
    if draw(st.booleans()):
        known = buyer_ids + [f"b{n_buyers + k}" for k in range(draw(st.integers(0, 4)))]
        attributes = draw(st.sampled_from(["none", "mixed", "constant", "empty"]))
        table: dict[str, list[object]] = {
            "buyer_id": known,
            "first_seen": [
                draw(st.one_of(st.none(), st.just(_moment(-draw(st.integers(0, 90)), 0))))
                for _ in known
            ],
        }
        if attributes == "mixed":
            table["region"] = [draw(st.sampled_from(["n", "s", None])) for _ in known]
            table["age"] = [draw(st.one_of(st.none(), st.integers(18, 80))) for _ in known]
            table["member"] = [draw(st.booleans()) for _ in known]
        elif attributes == "constant":
            table["region"] = ["n" for _ in known]
            table["score"] = [0.5 for _ in known]
        elif attributes == "empty":
            table["region"] = [None for _ in known]
        buyers = pl.DataFrame(
            table,
            schema={
                "buyer_id": pl.String,
                "first_seen": pl.Datetime("us", "UTC"),
                **{
                    k: {"region": pl.String, "age": pl.Int64, "member": pl.Boolean}.get(
                        k, pl.Float64
                    )
                    for k in table
                    if k not in ("buyer_id", "first_seen")
                },
            },
        )
        shape.update(buyers_table=attributes)
    # ---------------------------------------------------------------- offers
    offers = offer_items = exposures = redemptions = None
    if draw(st.integers(0, 4)) > 1:  # most datasets have offers
        n_offers = draw(st.integers(1, 4))
        offer_rows = []
        for k in range(n_offers):
            tool = draw(st.sampled_from(TOOLS))
            start = draw(st.one_of(st.none(), day))
            length = draw(st.sampled_from([None, 0, 1, 7, 90]))
            value = draw(st.one_of(st.none(), st.sampled_from([0.1, 0.5, 1.0])))
            if tool == "amount_off" and value is not None:
                value *= 10
            offer_rows.append(
                {
                    "offer_id": f"o{k}",
                    "tool": tool,
                    "seller_id": draw(st.one_of(st.none(), st.sampled_from(sellers))),
                    "campaign_id": draw(st.one_of(st.none(), st.just("c1"))),
                    "value": value,
                    "min_spend": draw(st.one_of(st.none(), st.just(20.0))),
                    "cost": draw(st.one_of(st.none(), st.sampled_from([0.0, 4.5]))),
                    "start_ts": None if start is None else _moment(start, 0),
                    "end_ts": None
                    if start is None or length is None
                    else _moment(start + length, 0),
                }
            )
        offers = _frame("offers", offer_rows)
        shape.update(offers=n_offers)
        if draw(st.booleans()):
            scope = draw(
                st.lists(
                    st.tuples(st.integers(0, n_offers - 1), st.integers(0, n_items - 1)),
                    max_size=12,
                    unique=True,
                )
            )
            offer_items = pl.DataFrame(
                {"offer_id": [f"o{o}" for o, _ in scope], "item_id": [f"i{i}" for _, i in scope]},
                schema=TABLES_BY_NAME["offer_items"].schema,
            )
        if draw(st.integers(0, 3)) > 0:
            exposures, redemptions = draw(_decisions(buyer_ids, sellers, n_offers, span, shape))
    tables = {
        "items": items,
        "events": events,
        "buyers": buyers,
        "offers": offers,
        "offer_items": offer_items,
        "exposures": exposures,
        "redemptions": redemptions,
    }
    return Drawn(tables, shape)


@st.composite
def _decisions(
    draw: st.DrawFn,
    buyer_ids: list[str],
    sellers: list[str],
    n_offers: int,
    span: int,
    shape: dict[str, object],
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Exposures (randomized, sent by hand, only control, one wave ...) and redemptions."""
    kind = draw(st.sampled_from(["randomized", "by_hand", "only_control", "mixed", "empty"]))
    waves = draw(st.sampled_from([[0], [0, 1], sorted({0, span // 2, span})]))
    shape.update(exposures=kind, waves=len(waves))
    n = 0 if kind == "empty" else draw(st.integers(1, 30))
    with_seller = draw(st.booleans())
    rows = []
    for k in range(n):
        control = kind == "only_control" or (
            kind in ("randomized", "mixed") and draw(st.integers(0, 3)) == 0
        )
        offer = None if control else f"o{draw(st.integers(0, n_offers - 1))}"
        logged = kind in ("randomized", "only_control") or (kind == "mixed" and k % 2 == 0)
        rows.append(
            {
                "exposure_id": f"x{k}",
                "buyer_id": draw(st.sampled_from(buyer_ids)),
                "offer_id": offer,
                "ts": _moment(draw(st.sampled_from(waves)), draw(st.integers(0, 600))),
                "propensity": draw(st.sampled_from([0.25, 0.5, 1.0])) if logged else None,
                "policy": draw(st.one_of(st.none(), st.just("p1"))),
                "seller_id": draw(st.sampled_from(sellers)) if with_seller else None,
            }
        )
    exposures = _frame("exposures", rows)
    redemptions = None
    issued = [r for r in rows if r["offer_id"] is not None]
    if draw(st.booleans()):
        red_rows = []
        for _ in range(draw(st.integers(0, 6)) if issued else 0):
            r = draw(st.sampled_from(issued))
            red_rows.append(
                {
                    "buyer_id": r["buyer_id"],
                    "offer_id": r["offer_id"],
                    "ts": r["ts"] + timedelta(hours=draw(st.integers(0, 200))),
                    "exposure_id": r["exposure_id"] if draw(st.booleans()) else None,
                    "order_id": draw(st.one_of(st.none(), st.just("o1"))),
                    "amount": draw(st.one_of(st.none(), st.just(25.0))),
                }
            )
        redemptions = _frame("redemptions", red_rows)
    return exposures, redemptions
