"""Read a dataset directory into typed, validated frames (data contract, version 1).

Every source reaches the engine through `load_dataset`: it finds each table as
`<table>.parquet` or `<table>.csv`, casts the columns to the dtypes of
`recsys.data.schema` (ids to strings, timestamps to UTC, numbers to Float64/Int64), checks
every rule of the contract and raises one `ContractError` listing all violations found.
Nothing is dropped or nulled silently: a value that cannot be cast is a violation.

All work is vectorized polars; the only Python loops run over columns and rules, never
rows, so tens of millions of events load in seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path

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

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = (".parquet", ".csv")
"""File formats a table may come in, in order of preference."""

DEFAULTS: dict[tuple[str, str], int] = {("events", "quantity"): 1}
"""Values that replace a null or absent optional column (the contract's defaults)."""

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
    "Parquet": "the file looks truncated or corrupt; write it again",
    "CSV": "save it as UTF-8 text with one header line and the same number of fields on every line",
}
_KIND = {"id": "an id", "float": "a number", "int": "a whole number", "ts": "a timestamp"}
_CAST_HINTS = {
    "id": "ids must be text or whole numbers",
    "float": "use plain numbers such as 12.5 (no currency signs or thousands separators)",
    "int": "use whole numbers such as 2",
    "ts": "write ISO 8601 text such as 2024-05-01T12:00:00 (read as UTC) or "
    "2024-05-01T12:00:00+02:00, or store a datetime or date column",
}


# --------------------------------------------------------------------------- public API


def load_dataset(path: str | Path) -> Dataset:
    """Load and validate the dataset directory `path`.

    Raises `ContractError` listing every violation found in every table; unknown files in
    the directory are ignored. Optional tables that are absent are None in the result.
    """
    root = Path(path)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise ContractError(
            str(root),
            f"the dataset directory {what}",
            hint="pass the directory holding items.parquet, events.parquet, ...",
        )
    frames: dict[str, pl.DataFrame] = {}
    files: dict[str, str] = {}
    violations: list[Violation] = []
    for spec in TABLES:
        try:
            file = _find_table_file(root, spec)
        except ContractError as exc:
            violations += exc.violations
            continue
        if file is None:
            files[spec.name] = ""
            if spec.required:
                violations.append(_missing_table(root, spec.name))
            continue
        files[spec.name] = file.name
        frame, found = check_table(file, spec)
        violations += found
        if frame is not None:
            frames[spec.name] = frame
            log.info("read %s: %d rows, %d violations", file.name, frame.height, len(found))
    violations += _check_references(frames, files)
    if violations:
        raise ContractError.from_violations(violations)
    return Dataset(
        items=frames["items"],
        events=frames["events"],
        buyers=frames.get("buyers"),
        offers=frames.get("offers"),
        offer_items=frames.get("offer_items"),
        exposures=frames.get("exposures"),
        redemptions=frames.get("redemptions"),
        source=root,
    )


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
    conformed, violations = _conform(frame, spec, source)
    for check in _ROW_CHECKS:
        violations += check(conformed, spec, source)
    if violations:
        raise ContractError.from_violations(violations)
    return conformed


def check_table(path: str | Path, spec: TableSpec) -> tuple[pl.DataFrame | None, list[Violation]]:
    """Read, cast and check one table; the frame is None only when the file is unreadable.

    The frame is returned even when some rules fail, so that `load_dataset` can still
    check the references of the other tables against it.
    """
    path = Path(path)
    try:
        raw = _read_raw(path, spec)
    except ContractError as exc:
        return None, exc.violations
    frame, violations = _conform(raw, spec, path.name)
    for check in _ROW_CHECKS:
        violations += check(frame, spec, path.name)
    return frame, violations


# --------------------------------------------------------------------------- reading


def _find_table_file(root: Path, spec: TableSpec) -> Path | None:
    """The file holding table `spec` in `root`, or None; an error if both formats exist."""
    found = [root / f"{spec.name}{suffix}" for suffix in FORMATS]
    found = [p for p in found if p.exists()]
    if len(found) > 1:
        names = " and ".join(p.name for p in found)
        raise ContractError(
            found[0].name,
            f"both {names} exist, so the {spec.name} table is ambiguous",
            hint="keep only one of them",
        )
    return found[0] if found else None


def _read_raw(path: Path, spec: TableSpec) -> pl.DataFrame:
    """The file's columns as stored (CSV: contract columns as text), or a `ContractError`."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ContractError(
            path.name,
            f"unsupported file type {suffix or '(none)'!r}",
            hint="write the table as .parquet or .csv",
        )
    if not path.exists():
        raise ContractError(path.name, f"the file {path} does not exist")
    try:
        if suffix == ".parquet":
            return pl.scan_parquet(path).collect()
        return _read_csv(path, spec)
    except _READ_ERRORS as exc:
        kind = "Parquet" if suffix == ".parquet" else "CSV"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ContractError(
            path.name,
            f"cannot be read as {kind} ({reason})",
            hint=_UNREADABLE_HINTS[kind],
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
        f"the required table {name} is missing: expected {name}.parquet or {name}.csv in {root}",
        hint=f"export the {name} table as described in DATA_CONTRACT.md",
    )


# --------------------------------------------------------------------------- casting


def _conform(raw: pl.DataFrame, spec: TableSpec, file: str) -> tuple[pl.DataFrame, list[Violation]]:
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
                    file,
                    f"required column missing (columns found: {', '.join(found) or 'none'})",
                    column=name,
                    hint=f"rename your source's column to '{name}' or add it",
                )
            )
    chunks = raw[found[0]].chunk_lengths() if found else [raw.height]
    columns: list[pl.Series] = []
    for col in spec.columns:
        if col.name in found:
            series, problems = _conform_column(raw[col.name], col, file)
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


def _conform_column(raw: pl.Series, col: Column, file: str) -> tuple[pl.Series, list[Violation]]:
    """Cast one column to its contract dtype; report missing values and uncastable ones."""
    kind = _kind(col)
    source = _missing_to_null(raw)
    problems: list[Violation] = []
    if not col.nullable:
        missing = _mask_violation(
            file,
            col.name,
            "no value (null or empty)",
            f"every row needs a {col.name}",
            source.is_null(),
            raw.to_frame(),
        )
        problems += [missing] if missing else []
    cast = _CASTS[kind](source)
    if cast is None:
        problems.append(
            Violation(
                file,
                f"has type {raw.dtype}, which cannot be read as {_KIND[kind]}",
                column=col.name,
                hint=_CAST_HINTS[kind],
            )
        )
        return _nulls(col.name, col.dtype, raw.chunk_lengths()), problems
    bad = source.is_not_null() & cast.is_null()
    failed = _mask_violation(
        file,
        col.name,
        f"a value that cannot be read as {_KIND[kind]}",
        _CAST_HINTS[kind],
        bad,
        raw.to_frame(),
    )
    problems += [failed] if failed else []
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


def _check_event_types(frame: pl.DataFrame, spec: TableSpec, file: str) -> list[Violation]:
    """`event_type` must be one of the contract's event types."""
    if "event_type" not in frame.columns:
        return []
    col = frame["event_type"]
    mask = col.is_not_null() & ~col.is_in(list(EVENT_TYPES))
    if not mask.any():
        return []
    top = col.filter(mask).value_counts(sort=True).head(MAX_EXAMPLES)
    found = ", ".join(f"{v!r} x{n}" for v, n in top.iter_rows())
    return _listed(
        _mask_violation(
            file,
            "event_type",
            f"an unknown event type (allowed: {', '.join(EVENT_TYPES)})",
            f"map your source's event names to the contract's (unknown values: {found})",
            mask,
            frame.select("event_type"),
        )
    )


def _check_min_values(frame: pl.DataFrame, spec: TableSpec, file: str) -> list[Violation]:
    """Numeric columns with a `min_value` (prices, amounts, quantities) respect it."""
    out: list[Violation] = []
    for col in spec.columns:
        if col.min_value is None or col.name not in frame.columns:
            continue
        out += _listed(
            _mask_violation(
                file,
                col.name,
                f"{_article(col.name)} {col.name} below {col.min_value:g}",
                f"{col.name} must be at least {col.min_value:g}",
                frame[col.name] < col.min_value,
                frame.select(col.name),
            )
        )
    return out


def _check_propensity(frame: pl.DataFrame, spec: TableSpec, file: str) -> list[Violation]:
    """A logged propensity is a probability in (0, 1]."""
    if "propensity" not in frame.columns:
        return []
    p = frame["propensity"]
    return _listed(
        _mask_violation(
            file,
            "propensity",
            "a propensity outside (0, 1]",
            "propensity is the probability the logging policy chose this row's offer; "
            "leave it null when unknown",
            (p <= 0) | (p > 1),
            frame.select("propensity"),
        )
    )


def _check_percent_off(frame: pl.DataFrame, spec: TableSpec, file: str) -> list[Violation]:
    """A `percent_off` offer's value is a fraction in (0, 1]."""
    if not {"tool", "value"} <= set(frame.columns):
        return []
    value = frame["value"]
    mask = (frame["tool"] == "percent_off") & ((value <= 0) | (value > 1))
    return _listed(
        _mask_violation(
            file,
            "value",
            "a percent_off value outside (0, 1]",
            "percent_off values are fractions: 10 % is 0.1",
            mask,
            frame.select("tool", "value"),
        )
    )


def _check_dates(frame: pl.DataFrame, spec: TableSpec, file: str) -> list[Violation]:
    """An offer cannot end before it starts."""
    if not {"start_ts", "end_ts"} <= set(frame.columns):
        return []
    return _listed(
        _mask_violation(
            file,
            "start_ts",
            "a start_ts after their end_ts",
            "an offer must start before it ends; check for swapped columns",
            frame["start_ts"] > frame["end_ts"],
            frame.select("start_ts", "end_ts"),
        )
    )


def _check_primary_key(frame: pl.DataFrame, spec: TableSpec, file: str) -> list[Violation]:
    """Primary key values (single or composite) are unique; null keys are reported elsewhere."""
    key = list(spec.primary_key)
    if not key or not set(key) <= set(frame.columns):
        return []
    keys = frame.select(key)
    complete = keys.select(pl.all_horizontal(pl.all().is_not_null())).to_series()
    dup = keys.select(pl.struct(key).is_duplicated()).to_series() & complete
    label = ", ".join(key)
    return _listed(
        _mask_violation(
            file,
            label,
            f"a duplicate {label}" if len(key) == 1 else f"a duplicate key ({label})",
            f"({label}) is the primary key of {spec.name}: keep one row per key",
            dup,
            keys,
        )
    )


_ROW_CHECKS: tuple[Callable[[pl.DataFrame, TableSpec, str], list[Violation]], ...] = (
    _check_event_types,
    _check_min_values,
    _check_propensity,
    _check_percent_off,
    _check_dates,
    _check_primary_key,
)


# --------------------------------------------------------------------------- rules across tables


def _check_references(frames: dict[str, pl.DataFrame], files: dict[str, str]) -> list[Violation]:
    """Foreign keys of every loaded table, and redemptions against their exposures.

    `files` maps each table looked for to its file name ("" when the table is absent); a
    table that was found but could not be read is skipped, its error is reported already.
    """
    out: list[Violation] = []
    for spec in TABLES:
        frame = frames.get(spec.name)
        if frame is None:
            continue
        for fk in spec.foreign_keys:
            if fk.column not in frame.columns:
                continue
            if files.get(fk.ref_table) == "":
                nullable = spec.column(fk.column).nullable
                out += _listed(_reference_to_absent_table(frame, fk, files[spec.name], nullable))
            elif fk.ref_table in frames and fk.ref_column in frames[fk.ref_table].columns:
                ref = frames[fk.ref_table][fk.ref_column]
                out += _listed(_dangling_reference(frame, fk, files[spec.name], ref, files))
    if "redemptions" in frames and "exposures" in frames:
        out += _listed(
            _check_redemption_exposures(
                frames["redemptions"], frames["exposures"], files["redemptions"]
            )
        )
    return out


def _dangling_reference(
    frame: pl.DataFrame, fk: ForeignKey, file: str, ref: pl.Series, files: dict[str, str]
) -> Violation | None:
    """Rows whose `fk.column` is not null and not among the referenced values."""
    col = frame[fk.column]
    mask = col.is_not_null() & ~col.is_in(ref.drop_nulls().unique().implode())
    ref_file = files[fk.ref_table]
    hint = f"fix the ids or add the missing rows to {ref_file}"
    if fk.ref_table == "items" and fk.column == "seller_id":
        hint = "an offer's seller must sell at least one item; use null for a platform-wide offer"
    return _mask_violation(
        file,
        fk.column,
        f"{_article(fk.column)} {fk.column} with no match in {ref_file} column '{fk.ref_column}'",
        hint,
        mask,
        frame.select(fk.column),
    )


def _reference_to_absent_table(
    frame: pl.DataFrame, fk: ForeignKey, file: str, nullable: bool
) -> Violation | None:
    """Rows that refer to a table the dataset does not have."""
    ref = fk.ref_table
    hint = f"add {ref}.parquet" + (f", or leave {fk.column} null" if nullable else "")
    return _mask_violation(
        file,
        fk.column,
        f"{_article(fk.column)} {fk.column}, but there is no {ref} table "
        f"(expected {ref}.parquet or {ref}.csv)",
        hint,
        frame[fk.column].is_not_null(),
        frame.select(fk.column),
    )


def _check_redemption_exposures(
    redemptions: pl.DataFrame, exposures: pl.DataFrame, file: str
) -> Violation | None:
    """A redemption's exposure must be of the same buyer and the same offer."""
    needed = {"exposure_id", "buyer_id", "offer_id"}
    if not needed <= set(redemptions.columns) or not needed <= set(exposures.columns):
        return None
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
        file,
        "exposure_id",
        "an exposure_id whose exposure has a different buyer or offer",
        "a redemption's exposure_id must name an exposure of the same buyer_id and offer_id",
        found & differs,
        joined,
    )


# --------------------------------------------------------------------------- reporting


def _mask_violation(
    file: str, column: str, rule: str, hint: str, mask: pl.Series, shown: pl.DataFrame
) -> Violation | None:
    """A violation for the rows where `mask` is true (None if none), quoting `shown`."""
    mask = mask.fill_null(False)
    n_bad = int(mask.sum())
    if n_bad == 0:
        return None
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
    pairs = ", ".join(f"{n}={_fmt_value(v)}" for n, v in zip(names, values, strict=True))
    return f"row {index}: {pairs}"


def _fmt_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _listed(violation: Violation | None) -> list[Violation]:
    return [] if violation is None else [violation]
