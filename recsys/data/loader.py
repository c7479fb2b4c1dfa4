"""Read a dataset directory into typed, validated frames (data contract, version 1).

Every source reaches the engine through `load_dataset`: it finds each table as
`<table>.parquet` or `<table>.csv`, as a directory of Parquet parts `<table>/*.parquet`,
or both (`recsys.data.sources`), casts the columns to the dtypes of `recsys.data.schema`
(ids to strings, timestamps to UTC, numbers to Float64/Int64), checks every rule of the
contract and raises one `ContractError` listing all violations found. Nothing is dropped
or nulled silently: a value that cannot be cast is a violation. A table read from several
files is checked as one table (its primary key is unique across all of them), and each
violation names the file its rows came from, numbering rows within that file.

The work is split along its seams, one module each: `recsys.data.reading` (files into
frames), `recsys.data.casting` (contract dtypes), `recsys.data.rules` (each row's rules
and the primary key), `recsys.data.references` (rules across tables) and
`recsys.data.messages` (how a violation quotes its rows). This module is the public
entry point and keeps every function it always had.

All work is vectorized polars; the only Python loops run over columns, rules and files
with violations, never rows, so tens of millions of events load in seconds and the
parts of a part directory are read in one scan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from recsys.data.casting import DEFAULTS
from recsys.data.dataset import Dataset
from recsys.data.errors import ContractError, Violation
from recsys.data.messages import empty_table, missing_table
from recsys.data.reading import LoadedTable, check_file, conform_and_check, load_table_files
from recsys.data.references import check_references
from recsys.data.rules import check_primary_key
from recsys.data.schema import PAIRS, TABLES, TableSpec
from recsys.data.sources import FORMATS, Origin, Part, find_sources

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

    Cost: every table read once and kept (the dataset); each rule is a vectorized pass
    over its table, and each reference a hash lookup into the distinct keys it refers to:
    the rows materialized are the tables' own.
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
    tables: dict[str, LoadedTable] = {}
    for spec in TABLES:
        source = sources.get(spec.name)
        if source is None:  # its files could not be determined; reported already
            continue
        if source.absent:
            tables[spec.name] = LoadedTable(source)
            if spec.required:
                violations.append(missing_table(root, spec.name))
            continue
        table = load_table_files(source, spec)
        violations += table.violations
        if spec.required and table.complete and table.frame is not None and not table.frame.height:
            violations.append(empty_table(source, spec.name))
        tables[spec.name] = table
        if table.frame is not None:
            log.info(
                "read %s: %d rows, %d violations",
                source.describe(),
                table.frame.height,
                len(table.violations),
            )
    violations += check_references(tables)
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
    conformed, violations = conform_and_check(frame, spec, origin)
    violations += check_primary_key(conformed, spec, origin)
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
    frame, violations = check_file(path, spec, label)
    if frame is not None:
        violations += check_primary_key(frame, spec, Origin.single(label, frame.height))
    return frame, violations
