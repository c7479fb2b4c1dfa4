"""The rules across tables: every foreign key, and a redemption's exposure.

A reference is checked only against a table all of whose files were read (an incomplete
table would make "no match" mislead); a reference into a table the dataset does not have
is reported as such.
"""

from __future__ import annotations

import polars as pl

from recsys.data.errors import Violation
from recsys.data.messages import article, mask_violation
from recsys.data.reading import LoadedTable
from recsys.data.schema import TABLES, ForeignKey
from recsys.data.sources import Origin


def check_references(tables: dict[str, LoadedTable]) -> list[Violation]:
    """Foreign keys of every loaded table, and redemptions against their exposures.

    A table whose files could not all be read is not a reference for others (its rows
    are incomplete, so "no match" would mislead); its error is reported already.
    """
    out: list[Violation] = []
    for spec in TABLES:
        table = tables.get(spec.name)
        if table is None or table.frame is None or table.origin is None:
            continue
        frame, origin = table.frame, table.origin
        for fk in spec.foreign_keys:
            ref = tables.get(fk.ref_table)
            if fk.column not in frame.columns or ref is None:
                continue
            if ref.source.absent:
                nullable = spec.column(fk.column).nullable
                out += _reference_to_absent_table(frame, fk, origin, nullable)
            elif ref.complete and ref.frame is not None and fk.ref_column in ref.frame.columns:
                described = ref.source.describe()
                out += _dangling_reference(frame, fk, origin, ref.frame[fk.ref_column], described)
    redemptions, exposures = tables.get("redemptions"), tables.get("exposures")
    if (
        redemptions is not None
        and redemptions.frame is not None
        and redemptions.origin is not None
        and exposures is not None
        and exposures.complete
        and exposures.frame is not None
    ):
        out += _check_redemption_exposures(redemptions.frame, exposures.frame, redemptions.origin)
    return out


def _dangling_reference(
    frame: pl.DataFrame, fk: ForeignKey, origin: Origin, ref: pl.Series, ref_files: str
) -> list[Violation]:
    """Rows whose `fk.column` is not null and not among the referenced values."""
    col = frame[fk.column]
    mask = col.is_not_null() & ~col.is_in(ref.drop_nulls().unique().implode())
    hint = f"fix the ids or add the missing rows to {ref_files}"
    if fk.ref_table == "items" and fk.column == "seller_id":
        hint = "an offer's seller must sell at least one item; use null for a platform-wide offer"
    return mask_violation(
        origin,
        fk.column,
        f"{article(fk.column)} {fk.column} with no match in {ref_files} column '{fk.ref_column}'",
        hint,
        mask,
        frame.select(fk.column),
    )


def _reference_to_absent_table(
    frame: pl.DataFrame, fk: ForeignKey, origin: Origin, nullable: bool
) -> list[Violation]:
    """Rows that refer to a table the dataset does not have."""
    ref = fk.ref_table
    hint = f"add {ref}.parquet" + (f", or leave {fk.column} null" if nullable else "")
    return mask_violation(
        origin,
        fk.column,
        f"{article(fk.column)} {fk.column}, but there is no {ref} table "
        f"(expected {ref}.parquet, {ref}.csv or Parquet parts in {ref}/)",
        hint,
        frame[fk.column].is_not_null(),
        frame.select(fk.column),
    )


def _check_redemption_exposures(
    redemptions: pl.DataFrame, exposures: pl.DataFrame, origin: Origin
) -> list[Violation]:
    """A redemption's exposure must be of the same buyer and the same offer."""
    needed = {"exposure_id", "buyer_id", "offer_id"}
    if not needed <= set(redemptions.columns) or not needed <= set(exposures.columns):
        return []
    issued = exposures.select(
        "exposure_id",
        pl.col("buyer_id").alias("exposure_buyer"),
        pl.col("offer_id").alias("exposure_offer"),
    ).unique("exposure_id", keep="first")
    joined = redemptions.select("exposure_id", "buyer_id", "offer_id").join(
        issued, on="exposure_id", how="left", maintain_order="left"
    )
    found = joined["exposure_buyer"].is_not_null()
    differs = joined["buyer_id"].ne_missing(joined["exposure_buyer"]) | joined[
        "offer_id"
    ].ne_missing(joined["exposure_offer"])
    return mask_violation(
        origin,
        "exposure_id",
        "an exposure_id whose exposure has a different buyer or offer",
        "a redemption's exposure_id must name an exposure of the same buyer_id and offer_id",
        found & differs,
        joined,
    )
