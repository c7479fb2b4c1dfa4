"""Reading a table's files into one frame: Parquet or CSV files, part directories.

A part directory is read in one scan; when that fails (a corrupt part, parts whose
columns differ), part by part, so a message names the part. Each file's rows are cast
(`recsys.data.casting`) and checked (`recsys.data.rules`) as they are read; the frames of
a table's files are then concatenated, and its primary key checked over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys.data.casting import conform
from recsys.data.errors import ContractError, Violation
from recsys.data.rules import check_primary_key, check_rows
from recsys.data.schema import TableSpec
from recsys.data.sources import FORMATS, Group, Origin, TableSource

READ_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, ValueError)
"""What reading a broken file raises (reported as a violation naming the file)."""

_UNREADABLE_HINTS = {
    "Parquet": "the file {path} looks truncated or corrupt; write it again",
    "CSV": "save {path} as UTF-8 text with one header line and the same number of fields "
    "on every line",
}
"""How to fix a file that cannot be read; `{path}` is its full path (found at a glance)."""


@dataclass
class LoadedTable:
    """One table as loaded: the rows of every readable file, and where each came from."""

    source: TableSource
    frame: pl.DataFrame | None = None
    origin: Origin | None = None
    complete: bool = False
    """Every file was read: references into the table can be checked against it."""
    violations: list[Violation] = field(default_factory=list)


def load_table_files(source: TableSource, spec: TableSpec) -> LoadedTable:
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
        return LoadedTable(source, violations=violations)
    origin = Origin.concat(source.describe(), [o for _, o in loaded])
    frame, problems = _concat(loaded, origin)
    violations += problems
    violations += check_primary_key(frame, spec, origin)
    return LoadedTable(source, frame, origin, complete, violations)


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
        except READ_ERRORS:
            pass
        else:
            origin = Origin.of_parts(group.describe(), group.parts)
            frame, violations = conform_and_check(raw, spec, origin)
            return [(frame, origin)], violations, True
    out: list[tuple[pl.DataFrame, Origin]] = []
    violations = []
    for part in group.parts:
        read, found = check_file(part.path, spec, part.label)
        violations += found
        if read is not None:
            out.append((read, Origin.single(part.label, read.height)))
    return out, violations, len(out) == len(group.parts)


def check_file(
    path: Path, spec: TableSpec, label: str
) -> tuple[pl.DataFrame | None, list[Violation]]:
    """Read, cast and check one file, except its primary key (checked per table)."""
    try:
        raw = _read_raw(path, spec, label)
    except ContractError as exc:
        return None, exc.violations
    return conform_and_check(raw, spec, Origin.single(label, raw.height))


def conform_and_check(
    raw: pl.DataFrame, spec: TableSpec, origin: Origin
) -> tuple[pl.DataFrame, list[Violation]]:
    """Cast `raw` to `spec` and check the rules of its rows."""
    frame, violations = conform(raw, spec, origin)
    return frame, violations + check_rows(frame, spec, origin)


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
    except READ_ERRORS as exc:
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
