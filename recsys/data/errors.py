"""The one error type for input that breaks the data contract.

Every rule the loader checks reports a `Violation`: the file, the column, how many rows
break the rule, the first few of them and how to fix it. The loader checks everything it
can and raises one `ContractError` holding all violations found, so a user fixes a
dataset in one round instead of one error at a time.

Rows are numbered from 0 in file order, as `polars` and `pandas` number them (in a CSV
file, row 0 is the first line after the header).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_EXAMPLES = 5
"""How many offending rows a violation quotes."""


@dataclass(frozen=True)
class Violation:
    """One broken rule in one file (and usually one column).

    `rule` is a phrase that completes "N rows have ..." when `n_bad` > 0 (for example
    "an unknown event type"), or a whole statement about the file or column when
    `n_bad` is 0 (a missing column, a missing table).
    """

    file: str
    rule: str
    column: str | None = None
    n_bad: int = 0
    examples: tuple[str, ...] = ()
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}: column '{self.column}'" if self.column else self.file
        if self.n_bad:
            verb = "row has" if self.n_bad == 1 else "rows have"
            text = f"{where}: {self.n_bad} {verb} {self.rule}"
        else:
            text = f"{where}: {self.rule}"
        if self.examples:
            more = ", ..." if self.n_bad > len(self.examples) else ""
            text += f"; first rows: [{', '.join(self.examples)}{more}]"
        if self.hint:
            text += f". Fix: {self.hint}"
        return text if text.endswith(".") else text + "."


class ContractError(ValueError):
    """A dataset, table or target list breaks the data contract.

    The attributes describe the first violation; `violations` holds all of them (the
    loader reports every violation of a table at once, ordered file by file).

    Examples
    --------
    >>> err = ContractError("events.parquet", "an unknown event type", column="event_type",
    ...                     n_bad=2, examples=["row 4: 'click'"], hint="map the names.")
    >>> print(err)
    events.parquet: column 'event_type': 2 rows have an unknown event type; first rows: \
[row 4: 'click', ...]. Fix: map the names.
    """

    def __init__(
        self,
        file: str,
        rule: str,
        *,
        column: str | None = None,
        n_bad: int = 0,
        examples: Sequence[str] = (),
        hint: str = "",
        violations: Sequence[Violation] | None = None,
    ) -> None:
        first = Violation(file, rule, column, n_bad, tuple(examples), hint)
        self.violations: list[Violation] = list(violations) if violations else [first]
        self.file = first.file
        self.column = first.column
        self.n_bad = first.n_bad
        self.examples: list[str] = list(first.examples)
        self.rule = first.rule
        self.hint = first.hint
        super().__init__(self._message())

    @classmethod
    def from_violations(cls, violations: Sequence[Violation]) -> ContractError:
        """One error reporting all `violations` (at least one)."""
        if not violations:
            raise ValueError("ContractError.from_violations needs at least one violation")
        v = violations[0]
        return cls(
            v.file,
            v.rule,
            column=v.column,
            n_bad=v.n_bad,
            examples=v.examples,
            hint=v.hint,
            violations=violations,
        )

    def _message(self) -> str:
        if len(self.violations) == 1:
            return str(self.violations[0])
        lines = [f"{len(self.violations)} data contract violations:"]
        lines += [f"  - {v}" for v in self.violations]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the violations so the error survives pickling (process pools, Ray).
        return (ContractError.from_violations, (list(self.violations),))
