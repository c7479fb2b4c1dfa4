"""A loaded dataset: the contract's tables as typed polars frames, and what they support.

`Dataset` is what every stage after loading receives. Besides the tables it answers two
questions a user asks before training: which models can this data support, and why not
the others (`capabilities`), and what is in it (`summary`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import polars as pl

from recsys.data.schema import EVENT_TYPES, TABLES, TABLES_BY_NAME


class Capability(NamedTuple):
    """Whether the dataset supports one kind of model, and why (or why not)."""

    name: str
    supported: bool
    reason: str


@dataclass(frozen=True, eq=False)
class Dataset:
    """The contract's tables, cast to the contract's dtypes and validated.

    Build one with `recsys.data.load_dataset`; the optional tables are None when the
    dataset does not have them. Frames have the contract columns in contract order,
    followed by any extra columns of the source.
    """

    items: pl.DataFrame
    events: pl.DataFrame
    buyers: pl.DataFrame | None = None
    offers: pl.DataFrame | None = None
    offer_items: pl.DataFrame | None = None
    exposures: pl.DataFrame | None = None
    redemptions: pl.DataFrame | None = None
    source: Path | None = None

    def table(self, name: str) -> pl.DataFrame | None:
        """The table called `name` (a contract table name), or None when it is absent."""
        if name not in TABLES_BY_NAME:
            raise KeyError(f"unknown table {name!r}; tables are: {', '.join(TABLES_BY_NAME)}")
        frame: pl.DataFrame | None = getattr(self, name)
        return frame

    def before(self, moment: datetime) -> Dataset:
        """The dataset as it was known at `moment`: time-stamped records before it.

        Catalog tables (items, offers, offer_items, buyers) are kept whole; events,
        exposures and redemptions are cut. Used for honest time-split evaluation.
        """

        def cut(frame: pl.DataFrame | None) -> pl.DataFrame | None:
            return None if frame is None else frame.filter(pl.col("ts") < moment)

        events = cut(self.events)
        assert events is not None
        return replace(
            self, events=events, exposures=cut(self.exposures), redemptions=cut(self.redemptions)
        )

    def capabilities(self) -> list[Capability]:
        """Which models this data supports, each with the reason (what is missing, if not)."""
        return [
            _matrix_factorization(self),
            _journey(self),
            _response(self),
            _uplift(self),
        ]

    def summary(self) -> DatasetSummary:
        """Counts and ranges that tell a user what the dataset holds."""
        events = self.events
        buyer_ids = [events["buyer_id"]]
        if self.buyers is not None:
            buyer_ids.append(self.buyers["buyer_id"])
        counts = dict(events.group_by("event_type").len().iter_rows())
        exposures = self.exposures
        return DatasetSummary(
            source=self.source,
            rows={t.name: _height(self.table(t.name)) for t in TABLES},
            first_event=_as_datetime(events["ts"].min()),
            last_event=_as_datetime(events["ts"].max()),
            n_buyers=count_distinct(*buyer_ids),
            n_items=self.items.height,
            n_sellers=count_distinct(self.items["seller_id"]),
            event_counts={e: int(counts.get(e, 0)) for e in EVENT_TYPES},
            propensity_share=_share_not_null(exposures, "propensity"),
            control_size=None if exposures is None else exposures["offer_id"].null_count(),
            capabilities=tuple(self.capabilities()),
        )

    def __repr__(self) -> str:
        # The default dataclass repr would print every frame in full.
        rows = ", ".join(
            f"{t.name}={_height(self.table(t.name))}"
            for t in TABLES
            if self.table(t.name) is not None
        )
        return f"Dataset({rows}, source={self.source})"


@dataclass(frozen=True)
class DatasetSummary:
    """What a dataset holds: row counts (None = table absent), ranges and capabilities."""

    source: Path | None
    rows: dict[str, int | None]
    first_event: datetime | None
    last_event: datetime | None
    n_buyers: int
    n_items: int
    n_sellers: int
    event_counts: dict[str, int]
    propensity_share: float | None
    """Share of exposure rows with a logged propensity; None without exposures."""
    control_size: int | None
    """Exposure rows with no offer (the control group); None without exposures."""
    capabilities: tuple[Capability, ...] = field(default_factory=tuple)

    def format(self) -> str:
        """Readable multi-line text, for the command line."""
        lines = [f"dataset {self.source}" if self.source else "dataset (in memory)", "tables:"]
        for name, n in self.rows.items():
            lines.append(f"  {name:<12} {'absent' if n is None else f'{n:,} rows'}")
        span = f"{_fmt_ts(self.first_event)} .. {_fmt_ts(self.last_event)}"
        lines += [
            f"events span:  {span}",
            f"buyers: {self.n_buyers:,}  items: {self.n_items:,}  sellers: {self.n_sellers:,}",
            "event types:  " + ", ".join(f"{k} {v:,}" for k, v in self.event_counts.items()),
        ]
        if self.propensity_share is not None:
            lines.append(f"exposures with a logged propensity: {self.propensity_share:.1%}")
        if self.control_size is not None:
            lines.append(f"control group (exposures with no offer): {self.control_size:,} rows")
        lines.append("capabilities:")
        for cap in self.capabilities:
            mark = "yes" if cap.supported else "no "
            lines.append(f"  [{mark}] {cap.name}: {cap.reason}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _matrix_factorization(ds: Dataset) -> Capability:
    """Matrix factorization needs buyer-item interactions: events that name an item."""
    name = "matrix_factorization"
    n = ds.events.height - ds.events["item_id"].null_count()
    if n:
        return Capability(name, True, f"events has {n:,} rows with an item_id")
    return Capability(
        name, False, "events has no rows with an item_id; fill events.item_id to enable it"
    )


def _journey(ds: Dataset) -> Capability:
    """The purchase-journey model needs events (any type, with or without an item)."""
    name = "journey"
    if ds.events.height:
        n_buyers = count_distinct(ds.events["buyer_id"])
        return Capability(
            name, True, f"events has {ds.events.height:,} rows of {n_buyers:,} buyers"
        )
    return Capability(name, False, "events is empty; add buyer events to enable it")


def _response(ds: Dataset) -> Capability:
    """Response models need offers, who was shown them (exposures) and who redeemed."""
    name = "response"
    needed = ("offers", "exposures", "redemptions")
    missing = [t for t in needed if _height(ds.table(t)) is None]
    empty = [t for t in needed if _height(ds.table(t)) == 0]
    if not missing and not empty:
        return Capability(name, True, "offers, exposures and redemptions are present")
    parts = []
    if missing:
        files = ", ".join(f"{t}.parquet" for t in missing)
        parts.append(f"missing table(s) {', '.join(missing)}; add {files} to enable it")
    if empty:
        parts.append(f"empty table(s) {', '.join(empty)}")
    return Capability(name, False, "; ".join(parts))


def _uplift(ds: Dataset) -> Capability:
    """Uplift needs exposures with a control group (null offer_id) or logged propensities."""
    name = "uplift"
    exposures = ds.exposures
    if exposures is None:
        return Capability(
            name,
            False,
            "no exposures table; add exposures.parquet with a control group (rows with a null "
            "offer_id) or logged propensities (exposures.propensity) to enable it",
        )
    n_control = exposures["offer_id"].null_count()
    n_logged = exposures.height - exposures["propensity"].null_count()
    if n_control or n_logged:
        found = []
        if n_control:
            found.append(f"a control group of {_plural(n_control, 'exposure')}")
        if n_logged:
            found.append(f"{_plural(n_logged, 'exposure')} with a logged propensity")
        return Capability(name, True, "exposures has " + " and ".join(found))
    return Capability(
        name,
        False,
        "exposures has no control group (no row with a null offer_id) and no logged "
        "propensity; add control rows or fill exposures.propensity to enable it",
    )


def count_distinct(*columns: pl.Series) -> int:
    """Distinct non-null values over all `columns`, counted through 64-bit hashes.

    Several times faster than `n_unique` on tens of millions of strings; a collision
    among a million ids has a probability near 1e-8, irrelevant for a summary.
    """
    hashes = [c.drop_nulls().hash(seed=0) for c in columns]
    return pl.concat(hashes).n_unique() if hashes else 0


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _height(frame: pl.DataFrame | None) -> int | None:
    return None if frame is None else frame.height


def _share_not_null(frame: pl.DataFrame | None, column: str) -> float | None:
    """Share of rows where `column` has a value; None for an absent or empty table."""
    if frame is None or frame.height == 0:
        return None
    return 1.0 - frame[column].null_count() / frame.height


def _as_datetime(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _fmt_ts(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")
