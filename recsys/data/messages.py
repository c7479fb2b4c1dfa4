"""How a broken rule is reported: one `Violation` per file, its rows quoted.

Every check of the loader (casting, row rules, references) ends here: given the rows
where a rule fails (a boolean mask over a table that may come from several files), it
builds one violation per file holding such rows, numbering rows within that file and
quoting the first few. Also the messages of a missing or empty required table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.errors import MAX_EXAMPLES, Violation
from recsys.data.sources import Origin, TableSource

ALSO_IN = "also_in"
"""Column quoting, for a duplicated key, another file that holds it."""


def mask_violation(
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
        return [file_violation(origin.labels[0], column, rule, hint, mask, shown)]
    offsets = origin.offsets()
    files, counts = np.unique(origin.file_of(mask.arg_true().to_numpy()), return_counts=True)
    out = []
    for i in files[:MAX_EXAMPLES]:
        start, length = int(offsets[i]), int(offsets[i + 1] - offsets[i])
        out.append(
            file_violation(
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


def file_violation(
    file: str, column: str, rule: str, hint: str, mask: pl.Series, shown: pl.DataFrame
) -> Violation:
    """The violation of the rows of one file where `mask` is true (at least one)."""
    n_bad = int(mask.sum())
    rows = mask.arg_true().head(MAX_EXAMPLES)
    quoted = shown.select(pl.all().gather(rows))
    examples = tuple(
        fmt_row(i, quoted.columns, values)
        for i, values in zip(rows.to_list(), quoted.iter_rows(), strict=True)
    )
    return Violation(file, rule, column=column, n_bad=n_bad, examples=examples, hint=hint)


def fmt_row(index: int, names: Sequence[str], values: Sequence[object]) -> str:
    if len(values) == 1:
        return f"row {index}: {fmt_value(values[0])}"
    pairs = ", ".join(
        f"{n}={fmt_value(v, whole=n == ALSO_IN)}" for n, v in zip(names, values, strict=True)
    )
    return f"row {index}: {pairs}"


def fmt_value(value: object, whole: bool = False) -> str:
    """A value as quoted in a message; long text is cut unless `whole` (file names)."""
    if value is None:
        return "null"
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = repr(value)
    return text if whole or len(text) <= 40 else text[:37] + "..."


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def missing_table(root: Path, name: str) -> Violation:
    return Violation(
        f"{name}.parquet",
        f"the required table {name} is missing: expected {name}.parquet or {name}.csv in {root} "
        f"(or Parquet parts in {name}/)",
        hint=f"export the {name} table as described in DATA_CONTRACT.md",
    )


def empty_table(source: TableSource, name: str) -> Violation:
    """A required table whose files hold no rows: nothing could be trained on it."""
    return Violation(
        source.describe(),
        f"the required table {name} has no rows",
        hint=f"export the {name} rows (a header alone is not enough); an export that ended "
        "early or a filter that matched nothing writes such a file",
    )
