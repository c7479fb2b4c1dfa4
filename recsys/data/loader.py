"""Read a dataset directory into typed, validated frames (data contract, version 1).

Every source reaches the engine through `load_dataset`: it finds each table as
`<table>.parquet` or `<table>.csv`, as a directory of Parquet parts `<table>/*.parquet`,
or both (`recsys.data.sources`), casts the columns to the dtypes of `recsys.data.schema`
(ids to strings, timestamps to UTC, numbers to Float64/Int64), checks every rule of the
contract and raises one `ContractError` listing all violations found. Nothing is dropped
or nulled silently: a value that cannot be cast is a violation. A table read from several
files is checked as one table (its primary key is unique across all of them), and each
violation names the file its rows came from, numbering rows within that file.

All work is vectorized polars; the only Python loops run over columns, rules and files
with violations, never rows, so tens of millions of events load in seconds and the
parts of a part directory are read in one scan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.dataset import Dataset
from recsys.data.errors import MAX_EXAMPLES, ContractError, Violation
from recsys.data.schema import (
    EVENT_TYPES,
    FLOAT,
    ID,
    INT,
    PAIRS,
    TABLES,
    TS,
    Column,
    ForeignKey,
    TableSpec,
)
from recsys.data.sources import FORMATS, Group, Origin, Part, TableSource, find_sources

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULTS",
    "FORMATS",
    "check_table",
    "conform_table",
    "load_dataset",
    "load_dataset_files",
    "load_pairs",
    "load_table",
]

DEFAULTS: dict[tuple[str, str], int] = {("events", "quantity"): 1}
"""Values that replace a null or absent optional column (the contract's defaults)."""

_ALSO_IN = "also_in"
"""Column quoting, for a duplicated key, another file that holds it."""

_READ_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, ValueError)

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

_UNREADABLE_HINTS = {
    "Parquet": "the file {path} looks truncated or corrupt; write it again",
    "CSV": "save {path} as UTF-8 text with one header line and the same number of fields "
    "on every line",
}
"""How to fix a file that cannot be read; `{path}` is its full path (found at a glance)."""
_KIND = {"id": "an id", "float": "a number", "int": "a whole number", "ts": "a timestamp"}
_CAST_HINTS = {
    "id": "ids must be text or whole numbers",
    "float": "use plain numbers such as 12.5 (no currency signs or thousands separators)",
    "int": "use whole numbers such as 2",
    "ts": "write ISO 8601 text such as 2024-05-01T12:00:00 (read as UTC) or "
    "2024-05-01T12:00:00+02:00, or store a datetime or date column",
}


# --------------------------------------------------------------------------- public API


def load_dataset(path: str | Path, decision_logs: Sequence[str | Path] = ()) -> Dataset:
    """Load and validate the dataset directory `path`, adding any `decision_logs`.

    Each table is `<table>.parquet` or `<table>.csv`, a directory `<table>/` of Parquet
    parts (read in name order), or a file and a part directory (the file's rows first).
    `decision_logs` are directories the serving decision log wrote (the serve config's
    `decision_log_dir`): the Parquet parts of their `exposures/` and `redemptions/` come
    after the dataset's own rows of those tables. The union is checked as one table, so
    a decision logged twice (a log both in the dataset and given here, or copied) is a
    duplicate `exposure_id` naming both files, never dropped silently.

    Raises `ContractError` listing every violation found in every table (a required table
    with no rows is one); unknown files in the directory are ignored. Optional tables that
    are absent are None in the result; an optional table may have no rows.
    """
    dataset, _ = load_dataset_files(path, decision_logs)
    return dataset


def load_dataset_files(
    path: str | Path, decision_logs: Sequence[str | Path] = ()
) -> tuple[Dataset, list[Part]]:
    """`load_dataset`, and the files it read in reading order (for a digest of exactly the
    data loaded, even while a service keeps adding parts)."""
    root = Path(path)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise ContractError(
            str(root),
            f"the dataset directory {what}",
            hint="pass the directory holding items.parquet, events.parquet, ...",
        )
    sources, violations = find_sources(root, [Path(p) for p in decision_logs])
    tables: dict[str, _Table] = {}
    for spec in TABLES:
        source = sources.get(spec.name)
        if source is None:  # its files could not be determined; reported already
            continue
        if source.absent:
            tables[spec.name] = _Table(source)
            if spec.required:
                violations.append(_missing_table(root, spec.name))
            continue
        table = _load_table(source, spec)
        violations += table.violations
        if spec.required and table.complete and table.frame is not None and not table.frame.height:
            violations.append(_empty_table(source, spec.name))
        tables[spec.name] = table
        if table.frame is not None:
            log.info(
                "read %s: %d rows, %d violations",
                source.describe(),
                table.frame.height,
                len(table.violations),
            )
    violations += _check_references(tables)
    if violations:
        raise ContractError.from_violations(violations)
    frames = {name: t.frame for name, t in tables.items() if t.frame is not None}
    dataset = Dataset(
        items=frames["items"],
        events=frames["events"],
        buyers=frames.get("buyers"),
        offers=frames.get("offers"),
        offer_items=frames.get("offer_items"),
        exposures=frames.get("exposures"),
        redemptions=frames.get("redemptions"),
        source=root,
    )
    return dataset, [part for t in tables.values() for part in t.source.parts()]


def load_table(path: str | Path, spec: TableSpec) -> pl.DataFrame:
    """Load one table file (Parquet or CSV), cast it to `spec` and check the rules of `spec`.

    Checks only the rules of this table; references to other tables are checked by
    `load_dataset`. Raises `ContractError` with every violation found.
    """
    frame, violations = check_table(Path(path), spec)
    if violations or frame is None:
        raise ContractError.from_violations(violations)
    return frame


def load_pairs(path: str | Path) -> pl.DataFrame:
    """Load a target list of (buyer_id, offer_id) pairs to score, keeping its row order.

    The file is CSV or Parquet; ids become strings and must not be null; extra columns
    are kept.
    """
    return load_table(path, PAIRS)


def conform_table(frame: pl.DataFrame, spec: TableSpec, source: str) -> pl.DataFrame:
    """Cast an in-memory frame to `spec` and check its rules (as `load_table` does a file).

    `source` names the frame in error messages (e.g. "request body"). Raises
    `ContractError` with every violation found.
    """
    origin = Origin.single(source, frame.height)
    conformed, violations = _conform_and_check(frame, spec, origin)
    violations += _check_primary_key(conformed, spec, origin)
    if violations:
        raise ContractError.from_violations(violations)
    return conformed


def check_table(
    path: str | Path, spec: TableSpec, label: str | None = None
) -> tuple[pl.DataFrame | None, list[Violation]]:
    """Read, cast and check one table file; the frame is None only when it is unreadable.

    `label` names the file in messages (default: its name). The frame is returned even
    when some rules fail, so that `load_dataset` can still check the references of the
    other tables against it.
    """
    path = Path(path)
    label = path.name if label is None else label
    frame, violations = _check_file(path, spec, label)
    if frame is not None:
        violations += _check_primary_key(frame, spec, Origin.single(label, frame.height))
    return frame, violations


# --------------------------------------------------------------------------- reading


@dataclass
class _Table:
    """One table as loaded: the rows of every readable file, and where each came from."""

    source: TableSource
    frame: pl.DataFrame | None = None
    origin: Origin | None = None
    complete: bool = False
    """Every file was read: references into the table can be checked against it."""
    violations: list[Violation] = field(default_factory=list)


def _load_table(source: TableSource, spec: TableSpec) -> _Table:
    """Every group of files of one table, concatenated, with the table-wide key check."""
    loaded: list[tuple[pl.DataFrame, Origin]] = []
    violations: list[Violation] = []
    complete = True
    for group in source.groups:
        pieces, found, whole = _load_group(group, spec)
        loaded += pieces
        violations += found
        complete &= whole
    if not loaded:
        return _Table(source, violations=violations)
    origin = Origin.concat(source.describe(), [o for _, o in loaded])
    frame, problems = _concat(loaded, origin)
    violations += problems
    violations += _check_primary_key(frame, spec, origin)
    return _Table(source, frame, origin, complete, violations)


def _load_group(
    group: Group, spec: TableSpec
) -> tuple[list[tuple[pl.DataFrame, Origin]], list[Violation], bool]:
    """The frames of one file or part directory, their violations, and whether all read.

    A part directory is read in one scan and checked as one frame. When the scan fails
    (a corrupt part, parts with different columns), each part is read on its own, so the
    error names the part.
    """
    if len(group.parts) > 1:
        try:
            raw = pl.scan_parquet([p.path for p in group.parts]).collect()
        except _READ_ERRORS:
            pass
        else:
            origin = Origin.of_parts(group.describe(), group.parts)
            frame, violations = _conform_and_check(raw, spec, origin)
            return [(frame, origin)], violations, True
    out: list[tuple[pl.DataFrame, Origin]] = []
    violations = []
    for part in group.parts:
        read, found = _check_file(part.path, spec, part.label)
        violations += found
        if read is not None:
            out.append((read, Origin.single(part.label, read.height)))
    return out, violations, len(out) == len(group.parts)


def _check_file(
    path: Path, spec: TableSpec, label: str
) -> tuple[pl.DataFrame | None, list[Violation]]:
    """Read, cast and check one file, except its primary key (checked per table)."""
    try:
        raw = _read_raw(path, spec, label)
    except ContractError as exc:
        return None, exc.violations
    return _conform_and_check(raw, spec, Origin.single(label, raw.height))


def _conform_and_check(
    raw: pl.DataFrame, spec: TableSpec, origin: Origin
) -> tuple[pl.DataFrame, list[Violation]]:
    frame, violations = _conform(raw, spec, origin)
    for check in _ROW_CHECKS:
        violations += check(frame, spec, origin)
    return frame, violations


def _concat(
    loaded: list[tuple[pl.DataFrame, Origin]], origin: Origin
) -> tuple[pl.DataFrame, list[Violation]]:
    """One frame from the frames of a table's files (contract columns share dtypes).

    An extra column missing from some files is null there. One with different types in
    different files is combined only when they are all numbers (widened) or nulls;
    otherwise it is reported, naming a file of each type, and left out.
    """
    frames = [frame for frame, _ in loaded]
    if len(frames) == 1:
        return frames[0], []
    types: dict[str, dict[pl.DataType, list[str]]] = {}
    for frame, part in loaded:
        for name, dtype in frame.schema.items():
            if dtype != pl.Null:
                types.setdefault(name, {}).setdefault(dtype, []).append(part.name)
    clashing = [
        name
        for name, found in types.items()
        if len(found) > 1 and not all(dtype.is_numeric() for dtype in found)
    ]
    violations = [
        Violation(
            origin.name,
            "the extra column has different types in different files ("
            + "; ".join(_files_of_type(dtype, files) for dtype, files in types[name].items())
            + ")",
            column=name,
            hint="give the column one type in every file of the table, or drop it",
        )
        for name in clashing
    ]
    if clashing:
        frames = [frame.drop(clashing, strict=False) for frame in frames]
    return pl.concat(frames, how="diagonal_relaxed"), violations


def _files_of_type(dtype: pl.DataType, files: list[str]) -> str:
    more = f" and {len(files) - 1} more" if len(files) > 1 else ""
    return f"{dtype} in {files[0]}{more}"


def _read_raw(path: Path, spec: TableSpec, label: str | None = None) -> pl.DataFrame:
    """The file's columns as stored (CSV: contract columns as text), or a `ContractError`."""
    label = path.name if label is None else label
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ContractError(
            label,
            f"unsupported file type {suffix or '(none)'!r}",
            hint="write the table as .parquet or .csv",
        )
    if not path.exists():
        raise ContractError(label, f"the file {path} does not exist")
    try:
        if suffix == ".parquet":
            return pl.scan_parquet(path).collect()
        return _read_csv(path, spec)
    except _READ_ERRORS as exc:
        kind = "Parquet" if suffix == ".parquet" else "CSV"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ContractError(
            label,
            f"cannot be read as {kind} ({reason})",
            hint=_UNREADABLE_HINTS[kind].format(path=path),
        ) from None


def _read_csv(path: Path, spec: TableSpec) -> pl.DataFrame:
    """Contract columns as text (cast later, so ids keep leading zeros); extras inferred."""
    as_text = {c.name: pl.String() for c in spec.columns}
    try:
        return pl.scan_csv(path, schema_overrides=as_text, infer_schema_length=10_000).collect()
    except pl.exceptions.ComputeError:
        # An extra column whose type changes after the inferred rows: read it all as text.
        return pl.scan_csv(path, infer_schema=False).collect()


def _missing_table(root: Path, name: str) -> Violation:
    return Violation(
        f"{name}.parquet",
        f"the required table {name} is missing: expected {name}.parquet or {name}.csv in {root} "
        f"(or Parquet parts in {name}/)",
        hint=f"export the {name} table as described in DATA_CONTRACT.md",
    )


def _empty_table(source: TableSource, name: str) -> Violation:
    """A required table whose files hold no rows: nothing could be trained on it."""
    return Violation(
        source.describe(),
        f"the required table {name} has no rows",
        hint=f"export the {name} rows (a header alone is not enough); an export that ended "
        "early or a filter that matched nothing writes such a file",
    )


# --------------------------------------------------------------------------- casting


def _conform(
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
        problems += _mask_violation(
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
    problems += _mask_violation(
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


# --------------------------------------------------------------------------- rules of one table


def _check_event_types(frame: pl.DataFrame, spec: TableSpec, origin: Origin) -> list[Violation]:
    """`event_type` must be one of the contract's event types."""
    if "event_type" not in frame.columns:
        return []
    col = frame["event_type"]
    mask = col.is_not_null() & ~col.is_in(list(EVENT_TYPES))
    if not mask.any():
        return []
    top = col.filter(mask).value_counts(sort=True).head(MAX_EXAMPLES)
    found = ", ".join(f"{v!r} x{n}" for v, n in top.iter_rows())
    return _mask_violation(
        origin,
        "event_type",
        f"an unknown event type (allowed: {', '.join(EVENT_TYPES)})",
        f"map your source's event names to the contract's (unknown values: {found})",
        mask,
        frame.select("event_type"),
    )


def _check_min_values(frame: pl.DataFrame, spec: TableSpec, origin: Origin) -> list[Violation]:
    """Numeric columns with a `min_value` (prices, amounts, quantities) respect it."""
    out: list[Violation] = []
    for col in spec.columns:
        if col.min_value is None or col.name not in frame.columns:
            continue
        out += _mask_violation(
            origin,
            col.name,
            f"{_article(col.name)} {col.name} below {col.min_value:g}",
            f"{col.name} must be at least {col.min_value:g}",
            frame[col.name] < col.min_value,
            frame.select(col.name),
        )
    return out


def _check_propensity(frame: pl.DataFrame, spec: TableSpec, origin: Origin) -> list[Violation]:
    """A logged propensity is a probability in (0, 1]."""
    if "propensity" not in frame.columns:
        return []
    p = frame["propensity"]
    return _mask_violation(
        origin,
        "propensity",
        "a propensity outside (0, 1]",
        "propensity is the probability the logging policy chose this row's offer; "
        "leave it null when unknown",
        (p <= 0) | (p > 1),
        frame.select("propensity"),
    )


def _check_percent_off(frame: pl.DataFrame, spec: TableSpec, origin: Origin) -> list[Violation]:
    """A `percent_off` offer's value is a fraction in (0, 1]."""
    if not {"tool", "value"} <= set(frame.columns):
        return []
    value = frame["value"]
    mask = (frame["tool"] == "percent_off") & ((value <= 0) | (value > 1))
    return _mask_violation(
        origin,
        "value",
        "a percent_off value outside (0, 1]",
        "percent_off values are fractions: 10 % is 0.1",
        mask,
        frame.select("tool", "value"),
    )


def _check_dates(frame: pl.DataFrame, spec: TableSpec, origin: Origin) -> list[Violation]:
    """An offer cannot end before it starts."""
    if not {"start_ts", "end_ts"} <= set(frame.columns):
        return []
    return _mask_violation(
        origin,
        "start_ts",
        "a start_ts after their end_ts",
        "an offer must start before it ends; check for swapped columns",
        frame["start_ts"] > frame["end_ts"],
        frame.select("start_ts", "end_ts"),
    )


_ROW_CHECKS: tuple[Callable[[pl.DataFrame, TableSpec, Origin], list[Violation]], ...] = (
    _check_event_types,
    _check_min_values,
    _check_propensity,
    _check_percent_off,
    _check_dates,
)
"""Rules of each row; the primary key is checked once per table, over all its files."""


def _check_primary_key(frame: pl.DataFrame, spec: TableSpec, origin: Origin) -> list[Violation]:
    """Primary key values (single or composite) are unique; null keys are reported elsewhere.

    Every row of a duplicated key is counted. When the table comes from several files,
    each row quoted also names a file holding the same key (`also_in`): the first other
    occurrence's file, or for the first occurrence the second's.
    """
    key = list(spec.primary_key)
    if not key or not set(key) <= set(frame.columns):
        return []
    keys = frame.select(key)
    complete = keys.select(pl.all_horizontal(pl.all().is_not_null())).to_series()
    dup = keys.select(pl.struct(key).is_duplicated()).to_series() & complete
    label = ", ".join(key)
    rule = f"a duplicate {label}" if len(key) == 1 else f"a duplicate key ({label})"
    hint = f"({label}) is the primary key of {spec.name}: keep one row per key"
    if len(origin.labels) > 1 and dup.any():
        rule += f" across the {spec.name} files"
        hint += (
            " in all of its files; a decision log read twice (in the dataset's "
            f"{spec.name}/ and given again as a decision log, or copied) repeats every decision"
        )
        keys = keys.with_columns(_also_in(keys, dup, origin))
    return _mask_violation(origin, label, rule, hint, dup, keys)


def _also_in(keys: pl.DataFrame, dup: pl.Series, origin: Origin) -> pl.Series:
    """For each duplicated row, the file of another row with its key (null elsewhere)."""
    rows = dup.arg_true()
    files = np.asarray(origin.labels, dtype=object)[origin.file_of(rows.to_numpy())]
    found = keys.filter(dup).with_columns(
        rows.alias("_row"), pl.Series("_file", files.tolist(), dtype=pl.String)
    )
    by_key = found.group_by(keys.columns).agg(
        pl.col("_row").first().alias("_first_row"),
        pl.col("_file").first().alias("_first"),
        pl.col("_file").get(1).alias("_second"),
    )
    other = found.join(by_key, on=keys.columns, how="left", maintain_order="left").select(
        pl.when(pl.col("_row") == pl.col("_first_row"))
        .then(pl.col("_second"))
        .otherwise(pl.col("_first"))
    )
    out = pl.Series(_ALSO_IN, [None] * keys.height, dtype=pl.String)
    return out.scatter(rows, other.to_series())


# --------------------------------------------------------------------------- rules across tables


def _check_references(tables: dict[str, _Table]) -> list[Violation]:
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
    return _mask_violation(
        origin,
        fk.column,
        f"{_article(fk.column)} {fk.column} with no match in {ref_files} column '{fk.ref_column}'",
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
    return _mask_violation(
        origin,
        fk.column,
        f"{_article(fk.column)} {fk.column}, but there is no {ref} table "
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
    return _mask_violation(
        origin,
        "exposure_id",
        "an exposure_id whose exposure has a different buyer or offer",
        "a redemption's exposure_id must name an exposure of the same buyer_id and offer_id",
        found & differs,
        joined,
    )


# --------------------------------------------------------------------------- reporting


def _mask_violation(
    origin: Origin, column: str, rule: str, hint: str, mask: pl.Series, shown: pl.DataFrame
) -> list[Violation]:
    """Violations for the rows where `mask` is true (none if none), quoting `shown`.

    One violation per file holding such rows, its rows numbered within that file; past
    `MAX_EXAMPLES` files, one more violation counts the rest.
    """
    mask = mask.fill_null(False)
    if not mask.any():
        return []
    if len(origin.labels) == 1:
        return [_file_violation(origin.labels[0], column, rule, hint, mask, shown)]
    offsets = origin.offsets()
    files, counts = np.unique(origin.file_of(mask.arg_true().to_numpy()), return_counts=True)
    out = []
    for i in files[:MAX_EXAMPLES]:
        start, length = int(offsets[i]), int(offsets[i + 1] - offsets[i])
        out.append(
            _file_violation(
                origin.labels[i],
                column,
                rule,
                hint,
                mask.slice(start, length),
                shown.slice(start, length),
            )
        )
    if len(files) > MAX_EXAMPLES:
        more = len(files) - MAX_EXAMPLES
        out.append(
            Violation(
                origin.name,
                f"{rule} (in {more} more of its files)",
                column=column,
                n_bad=int(counts[MAX_EXAMPLES:].sum()),
                hint=hint,
            )
        )
    return out


def _file_violation(
    file: str, column: str, rule: str, hint: str, mask: pl.Series, shown: pl.DataFrame
) -> Violation:
    """The violation of the rows of one file where `mask` is true (at least one)."""
    n_bad = int(mask.sum())
    rows = mask.arg_true().head(MAX_EXAMPLES)
    quoted = shown.select(pl.all().gather(rows))
    examples = tuple(
        _fmt_row(i, quoted.columns, values)
        for i, values in zip(rows.to_list(), quoted.iter_rows(), strict=True)
    )
    return Violation(file, rule, column=column, n_bad=n_bad, examples=examples, hint=hint)


def _fmt_row(index: int, names: Sequence[str], values: Sequence[object]) -> str:
    if len(values) == 1:
        return f"row {index}: {_fmt_value(values[0])}"
    pairs = ", ".join(
        f"{n}={_fmt_value(v, whole=n == _ALSO_IN)}" for n, v in zip(names, values, strict=True)
    )
    return f"row {index}: {pairs}"


def _fmt_value(value: object, whole: bool = False) -> str:
    """A value as quoted in a message; long text is cut unless `whole` (file names)."""
    if value is None:
        return "null"
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = repr(value)
    return text if whole or len(text) <= 40 else text[:37] + "..."


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
