"""Where a contract table's rows are stored: a file, directories of Parquet parts, logs.

The contract stores a table as `<table>.parquet` or `<table>.csv` in the dataset
directory. Two accepted extensions let rows arrive in pieces, never rewriting a file:

- a **part directory** `<table>/` of Parquet files, read in name order, alone or next
  to `<table>.parquet` (or `.csv`): then the file comes first and the parts follow. The
  service's decision log writes `exposures/` and `redemptions/` this way, so pointing the
  serve config's `decision_log_dir` at a dataset directory adds live decisions to it.
- **decision logs** kept elsewhere: directories holding `exposures/` and `redemptions/`
  part directories (the serve config's `decision_log_dir`), whose parts come after the
  dataset's own rows of those tables.

In a part directory, names starting with `.` or `_` are skipped (a writer's temporary
files, `_SUCCESS` markers); any other entry that is not a `.parquet` file is an error,
since skipping it would drop rows silently.

This module only finds files and says how to name them; `recsys.data.loader` reads them
and checks the rows, naming the file each bad row came from (`Origin`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.errors import Violation
from recsys.data.schema import TABLES

FORMATS: tuple[str, ...] = (".parquet", ".csv")
"""File formats a table may come in, in order of preference."""

PART_SUFFIX = ".parquet"
"""The only format of a part directory's files."""

DECISION_LOG_TABLES: tuple[str, ...] = ("exposures", "redemptions")
"""The tables a decision log holds, one part directory each (`serving.decision_log`)."""

_SKIPPED_PREFIXES = (".", "_")


@dataclass(frozen=True)
class Part:
    """One file holding rows of a table."""

    path: Path
    label: str
    """How messages name it: `events.parquet`, `exposures/part-1.parquet`, or the path of
    a decision log's part."""
    key: str
    """Its name relative to its dataset or log directory (data digests use it, so moving
    a decision log does not change the digest of the data)."""


@dataclass(frozen=True)
class Group:
    """Files read together: one table file, or one part directory."""

    label: str
    """`events.parquet`, `exposures/*.parquet` or `<log>/exposures/*.parquet`."""
    parts: tuple[Part, ...]
    directory: bool

    def describe(self) -> str:
        if not self.directory:
            return self.label
        n = len(self.parts)
        return f"{self.label} ({n} part{'' if n == 1 else 's'})"


@dataclass(frozen=True)
class TableSource:
    """Every group of files holding one table, in reading order (none: the table is absent)."""

    name: str
    groups: tuple[Group, ...] = ()

    @property
    def absent(self) -> bool:
        return not self.groups

    def parts(self) -> list[Part]:
        return [part for group in self.groups for part in group.parts]

    def describe(self) -> str:
        """The table's files for messages: `offers.parquet`, or e.g.
        `exposures.parquet + exposures/*.parquet (3 parts)`."""
        return " + ".join(group.describe() for group in self.groups) or f"{self.name}.parquet"


def find_sources(
    root: Path, decision_logs: Sequence[Path] = ()
) -> tuple[dict[str, TableSource], list[Violation]]:
    """Every contract table's files in the dataset `root`, plus the decision logs' parts.

    A table whose files cannot be determined (both `.parquet` and `.csv`, a stray entry
    in its part directory) is left out of the result and reported in the violations.
    """
    logs, violations = _check_logs(root, decision_logs)
    logged: dict[str, list[Group]] = {name: [] for name in DECISION_LOG_TABLES}
    broken: set[str] = set()
    for log in logs:
        for name in DECISION_LOG_TABLES:
            directory = log / name
            if not directory.is_dir():
                continue
            group, problems = _part_group(directory, f"{directory}/", f"decision log/{name}/")
            violations += problems
            if problems:
                broken.add(name)
            elif group is not None:
                logged[name].append(group)
    sources: dict[str, TableSource] = {}
    for spec in TABLES:
        groups, problems = _table_groups(root, spec.name)
        violations += problems
        if problems or spec.name in broken:
            continue
        sources[spec.name] = TableSource(spec.name, (*groups, *logged.get(spec.name, ())))
    return sources, violations


def _table_groups(root: Path, name: str) -> tuple[list[Group], list[Violation]]:
    """The table file and the part directory of table `name` in `root`."""
    files = [root / f"{name}{suffix}" for suffix in FORMATS]
    files = [path for path in files if path.exists()]
    if len(files) > 1:
        names = " and ".join(p.name for p in files)
        return [], [
            Violation(
                files[0].name,
                f"both {names} exist, so the {name} table is ambiguous",
                hint="keep only one of them",
            )
        ]
    groups = [Group(f.name, (Part(f, f.name, f.name),), directory=False) for f in files]
    if (root / name).is_dir():
        group, problems = _part_group(root / name, f"{name}/", f"{name}/")
        if problems:
            return [], problems
        groups += [group] if group is not None else []
    return groups, []


def _part_group(directory: Path, label: str, key: str) -> tuple[Group | None, list[Violation]]:
    """The Parquet parts of a part directory in name order (None when it has none)."""
    try:
        entries = sorted(directory.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        return None, [Violation(label, f"the part directory cannot be listed ({exc})")]
    parts: list[Part] = []
    problems: list[Violation] = []
    for entry in entries:
        if entry.name.startswith(_SKIPPED_PREFIXES):
            continue
        if entry.suffix.lower() == PART_SUFFIX and entry.is_file():
            parts.append(Part(entry, f"{label}{entry.name}", f"{key}{entry.name}"))
            continue
        what = "a directory" if entry.is_dir() else "not a .parquet file"
        problems.append(
            Violation(
                f"{label}{entry.name}",
                f"is {what}, but a table's part directory may hold only Parquet parts "
                "(read in name order)",
                hint="move it out of the directory, write it as a .parquet part, or start its "
                "name with '.' or '_' to have it skipped",
            )
        )
    if problems or not parts:
        return None, problems
    return Group(f"{label}*{PART_SUFFIX}", tuple(parts), directory=True), []


def _check_logs(root: Path, decision_logs: Sequence[Path]) -> tuple[list[Path], list[Violation]]:
    """The decision logs to read: existing log directories, each once, not the dataset."""
    out: list[Violation] = []
    logs: list[Path] = []
    fix = (
        "pass the directory the service writes its decision log to (the serve config's "
        "decision_log_dir), which holds exposures/ and redemptions/"
    )
    dataset = root.resolve()
    seen: dict[Path, str] = {}
    for log in decision_logs:
        label = str(log)
        if not log.is_dir():
            what = "is not a directory" if log.exists() else "does not exist"
            out.append(Violation(label, f"the decision log directory {what}", hint=fix))
            continue
        resolved = log.resolve()
        if resolved == dataset:
            out.append(
                Violation(
                    label,
                    "this decision log is the dataset directory itself, whose exposures/ and "
                    "redemptions/ parts are read anyway",
                    hint="leave it out of the decision logs",
                )
            )
            continue
        if resolved in seen:
            out.append(
                Violation(
                    label,
                    f"this decision log is given twice (also as {seen[resolved]})",
                    hint="give each decision log once",
                )
            )
            continue
        seen[resolved] = label
        if not any((log / name).is_dir() for name in DECISION_LOG_TABLES):
            out.append(
                Violation(
                    label,
                    "holds no exposures/ or redemptions/ directory, so it is not a decision log",
                    hint=fix + "; a log the service has not written to yet has nothing to add: "
                    "leave it out until it has",
                )
            )
            continue
        logs.append(log)
    return logs, out


@dataclass
class Origin:
    """Which file each row of a (concatenated) table frame came from, for messages.

    `labels` name the files in row order; row counts are counted from the Parquet
    footers only when a message needs them (`offsets`), so reading ten thousand small
    parts in one scan costs nothing extra when they are valid.
    """

    name: str
    """The whole: one file's label, or the table's description."""
    labels: list[str]
    paths: list[Path | None]
    rows: list[int | None]
    _offsets: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def single(cls, label: str, rows: int | None = None) -> Origin:
        return cls(label, [label], [None], [rows])

    @classmethod
    def of_parts(cls, name: str, parts: Sequence[Part]) -> Origin:
        return cls(name, [p.label for p in parts], [p.path for p in parts], [None] * len(parts))

    @classmethod
    def concat(cls, name: str, origins: Sequence[Origin]) -> Origin:
        if len(origins) == 1:
            only = origins[0]
            return cls(only.name, only.labels, only.paths, only.rows, only._offsets)
        return cls(
            name,
            [label for o in origins for label in o.labels],
            [path for o in origins for path in o.paths],
            [n for o in origins for n in o.rows],
        )

    def offsets(self) -> np.ndarray:
        """First row of every file, then the total: file `i` holds rows
        `offsets[i]:offsets[i + 1]`."""
        if self._offsets is None:
            counts = [_count_rows(path, n) for path, n in zip(self.paths, self.rows, strict=True)]
            self._offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        return self._offsets

    def file_of(self, rows: np.ndarray) -> np.ndarray:
        """Index into `labels` of the file holding each row of `rows` (sorted or not)."""
        return np.searchsorted(self.offsets(), rows, side="right") - 1


def _count_rows(path: Path | None, rows: int | None) -> int:
    if rows is not None:
        return rows
    if path is None:
        raise ValueError("an origin without a path needs its row count")
    return int(pl.scan_parquet(path).select(pl.len()).collect().item())


def data_files(root: Path, decision_logs: Sequence[Path] = ()) -> list[Part]:
    """Every file `load_dataset(root, decision_logs)` reads, tables in contract order.

    Tables whose files cannot be determined are left out (loading reports them).
    """
    sources, _ = find_sources(root, decision_logs)
    return [part for spec in TABLES if spec.name in sources for part in sources[spec.name].parts()]
