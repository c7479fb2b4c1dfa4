"""Casting a table's columns to the contract's dtypes, reporting what cannot be cast.

ids become strings (integers and whole floats as their digits), numbers Float64 or
Int64, timestamps UTC datetimes at microsecond precision (naive ones read as UTC, ISO
8601 text parsed). Empty strings and NaN are missing values. A value that cannot be cast
is a violation, never silently made null; absent optional columns are added as nulls, and
the contract's defaults fill them (`DEFAULTS`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import polars as pl

from recsys.data.errors import Violation
from recsys.data.messages import mask_violation
from recsys.data.schema import FLOAT, ID, INT, TS, Column, TableSpec
from recsys.data.sources import Origin

DEFAULTS: dict[tuple[str, str], int] = {("events", "quantity"): 1}
"""Values that replace a null or absent optional column (the contract's defaults)."""

_TS_FORMATS: tuple[str, ...] = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M%#z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
"""ISO 8601 forms accepted in text timestamps; `%#z` accepts `Z`, `+02:00` and `+0200`."""
_KIND = {"id": "an id", "float": "a number", "int": "a whole number", "ts": "a timestamp"}
_CAST_HINTS = {
    "id": "ids must be text or whole numbers",
    "float": "use plain numbers such as 12.5 (no currency signs or thousands separators)",
    "int": "use whole numbers such as 2",
    "ts": "write ISO 8601 text such as 2024-05-01T12:00:00 (read as UTC) or "
    "2024-05-01T12:00:00+02:00, or store a datetime or date column",
}


def conform(
    raw: pl.DataFrame, spec: TableSpec, origin: Origin
) -> tuple[pl.DataFrame, list[Violation]]:
    """Cast the contract columns, add absent optional ones, order contract-first.

    Missing required columns are reported and left out (not added as nulls, which would
    only produce more, misleading violations).
    """
    violations: list[Violation] = []
    found = raw.columns
    for name in spec.required_columns:
        if name not in found:
            violations.append(
                Violation(
                    origin.name,
                    f"required column missing (columns found: {', '.join(found) or 'none'})",
                    column=name,
                    hint=f"rename your source's column to '{name}' or add it",
                )
            )
    chunks = raw[found[0]].chunk_lengths() if found else [raw.height]
    columns: list[pl.Series] = []
    for col in spec.columns:
        if col.name in found:
            series, problems = _conform_column(raw[col.name], col, origin)
            violations += problems
        elif col.required:
            continue
        else:
            series = _nulls(col.name, col.dtype, chunks)
        default = DEFAULTS.get((spec.name, col.name))
        if default is not None and series.null_count():
            series = series.fill_null(default)
        columns.append(series)
    extras = [raw[c] for c in found if c not in spec.schema]
    frame = pl.DataFrame(columns + extras)
    if len({tuple(s.chunk_lengths()) for s in frame.iter_columns()}) > 1:
        frame = frame.rechunk()  # once here rather than on every later select
    return frame, violations


def _conform_column(
    raw: pl.Series, col: Column, origin: Origin
) -> tuple[pl.Series, list[Violation]]:
    """Cast one column to its contract dtype; report missing values and uncastable ones."""
    kind = _kind(col)
    source = _missing_to_null(raw)
    problems: list[Violation] = []
    if not col.nullable:
        problems += mask_violation(
            origin,
            col.name,
            "no value (null or empty)",
            f"every row needs a {col.name}",
            source.is_null(),
            raw.to_frame(),
        )
    cast = _CASTS[kind](source)
    if cast is None:
        problems.append(
            Violation(
                origin.name,
                f"has type {raw.dtype}, which cannot be read as {_KIND[kind]}",
                column=col.name,
                hint=_CAST_HINTS[kind],
            )
        )
        return _nulls(col.name, col.dtype, raw.chunk_lengths()), problems
    bad = source.is_not_null() & cast.is_null()
    problems += mask_violation(
        origin,
        col.name,
        f"a value that cannot be read as {_KIND[kind]}",
        _CAST_HINTS[kind],
        bad,
        raw.to_frame(),
    )
    if cast.dtype.is_float():
        cast = _nan_to_null(cast)
    return cast.alias(col.name), problems


def _nulls(name: str, dtype: pl.DataType, chunks: Sequence[int]) -> pl.Series:
    """A column of nulls of `dtype` laid out in chunks of the given lengths.

    Matching the chunks of the file's columns matters: polars rechunks (copies) a whole
    frame whose columns are chunked differently on every `select`.
    """
    out = pl.Series(name, [], dtype=dtype)
    for n in chunks:
        out.append(pl.Series(name, [], dtype=dtype).extend_constant(None, n))
    return out


def _kind(col: Column) -> str:
    """Which of the contract's four value kinds a column holds."""
    if col.dtype == TS:
        return "ts"
    if col.dtype == FLOAT:
        return "float"
    if col.dtype == INT:
        return "int"
    if col.dtype == ID:
        return "id"
    raise TypeError(f"contract column {col.name} has unsupported dtype {col.dtype}")


def _missing_to_null(s: pl.Series) -> pl.Series:
    """Empty strings and NaN become null: that is how CSV and pandas exports write 'missing'.

    (Whitespace-only text is kept: a regex over tens of millions of ids costs seconds, and
    such a value still fails the casts and references that follow.)
    """
    if s.dtype == pl.String:
        blank = s == ""
        return s.set(blank, None) if blank.any() else s
    if s.dtype.is_float():
        return _nan_to_null(s)
    return s


def _nan_to_null(s: pl.Series) -> pl.Series:
    """NaN as null; the series itself (no copy) when it holds no NaN."""
    return s.fill_nan(None) if s.is_nan().any() else s


def _to_id(s: pl.Series) -> pl.Series | None:
    """Ids as strings; whole floats (pandas' ints-with-nulls) as "123", not "123.0"."""
    dtype = s.dtype
    if dtype == pl.String:
        return s
    if dtype.is_integer() or isinstance(dtype, pl.Categorical | pl.Enum | pl.Null):
        return s.cast(pl.String)
    if dtype.is_float() or isinstance(dtype, pl.Decimal):
        f = s.cast(pl.Float64)
        whole = _whole_to_int(f).cast(pl.String)
        return whole.zip_with(f.is_null() | (f == f.floor()), f.cast(pl.String))
    return None


def _to_float(s: pl.Series) -> pl.Series | None:
    """Numbers as Float64; text that parses as a number is accepted."""
    if s.dtype == pl.Float64:
        return s
    if s.dtype.is_numeric() or s.dtype == pl.Null:
        return s.cast(pl.Float64, strict=False)
    if s.dtype == pl.String:
        return s.str.strip_chars().cast(pl.Float64, strict=False)
    return None


def _to_int(s: pl.Series) -> pl.Series | None:
    """Whole numbers as Int64; floats and text are accepted when they are whole."""
    if s.dtype == pl.Int64:
        return s
    if s.dtype.is_integer() or s.dtype == pl.Null:
        return s.cast(pl.Int64, strict=False)
    as_float = _to_float(s)
    return None if as_float is None else _whole_to_int(as_float)


def _whole_to_int(f: pl.Series) -> pl.Series:
    """Int64 of the whole values of a Float64 series; null where not whole or too large."""
    ints = f.cast(pl.Int64, strict=False)
    return ints.set(f != f.floor(), None)


def _to_timestamp(s: pl.Series) -> pl.Series | None:
    """Datetime("us", "UTC"): naive read as UTC, aware converted, dates at midnight UTC."""
    dtype = s.dtype
    if dtype == TS:
        return s
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return s.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        return s.dt.convert_time_zone("UTC").cast(TS)
    if dtype == pl.Date or dtype == pl.Null:
        return s.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if dtype == pl.String:
        return _parse_timestamps(s)
    return None


def _parse_timestamps(s: pl.Series) -> pl.Series:
    """Parse ISO 8601 text; each row may use any of the accepted forms.

    The forms are tried in turn until every row has parsed, starting with those that
    parse the first value, so a column written in one form costs a single pass.
    """
    text = s.str.strip_chars()
    sample = text.drop_nulls().head(1)
    first = [f for f in _TS_FORMATS if _parse(sample, f).null_count() == 0]
    order = first + [f for f in _TS_FORMATS if f not in first]
    out = _nulls(s.name, TS, s.chunk_lengths())
    for fmt in order:
        if out.null_count() == text.null_count():
            break
        out = out.fill_null(_parse(text, fmt))
    return out


def _parse(text: pl.Series, fmt: str) -> pl.Series:
    return text.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC")


_CASTS: dict[str, Callable[[pl.Series], pl.Series | None]] = {
    "id": _to_id,
    "float": _to_float,
    "int": _to_int,
    "ts": _to_timestamp,
}
