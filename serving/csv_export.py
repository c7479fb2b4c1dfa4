"""CSV files the API writes, safe to open in a spreadsheet.

Ids in a target list come from the data (a seller's buyer ids, offer ids). A cell that
starts with `=`, `+`, `-`, `@`, a tab or a carriage return is run as a formula by
spreadsheet programs (CSV injection: `=HYPERLINK(...)`, `@SUM(1+1)*cmd|' /C calc'!A0`).
Following OWASP's guidance, such text cells are written with a leading single quote,
which spreadsheets show as text; the CSV quoting of the writer then applies as usual.
Number columns are written as numbers: a negative expected profit stays `-1.5`.
"""

from __future__ import annotations

import polars as pl

FORMULA_STARTS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula (OWASP)."""


def neutralised(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with every text cell that starts like a formula prefixed by `'`.

    Examples
    --------
    >>> neutralised(pl.DataFrame({"id": ["=1+1", "b1", "-x"], "v": [-1.5, 2.0, 0.0]})).rows()
    [("'=1+1", -1.5), ('b1', 2.0), ("'-x", 0.0)]
    """
    starts = "".join(FORMULA_STARTS)
    risky = f"^[{_escape(starts)}]"
    text = [name for name, dtype in frame.schema.items() if dtype in (pl.String, pl.Categorical)]
    return frame.with_columns(
        pl.when(pl.col(name).cast(pl.String).str.contains(risky))
        .then(pl.lit("'") + pl.col(name).cast(pl.String))
        .otherwise(pl.col(name).cast(pl.String))
        .alias(name)
        for name in text
    )


def to_csv(frame: pl.DataFrame) -> str:
    """`frame` as CSV text with a header row, formula-like text cells neutralised."""
    return neutralised(frame).write_csv()


def _escape(chars: str) -> str:
    """`chars` escaped for a regex character class (`-` and friends)."""
    return "".join("\\" + c if c in r"\]^-[" else c for c in chars)
