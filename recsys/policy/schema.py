"""The *candidates* frame: what the upstream models hand to the policy.

One row per candidate (buyer, offer) pair, scored by the response/uplift models and
joined with the offer's terms. Every function of :mod:`recsys.policy` takes this frame
after :func:`validate_candidates` has checked and cast it, so the decision code never
meets a wrong dtype or a missing column deep inside a polars expression.

Required columns must be present and non-null. Optional columns may be absent (they are
added as typed nulls) or null on some rows; a null ``margin`` is later filled with the
config's ``margin_default``, a null ``seller_id`` means a platform-wide offer and a null
``uplift`` means the data could not support an uplift estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

TS = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class CandidateColumn:
    """One column of the candidates frame.

    ``required`` columns must be present and non-null on every row; optional ones may be
    absent or null. ``lower``/``upper`` bound numeric values (inclusive), nulls aside.
    """

    name: str
    dtype: pl.DataType
    required: bool
    meaning: str
    lower: float | None = None
    upper: float | None = None


CANDIDATE_COLUMNS: tuple[CandidateColumn, ...] = (
    CandidateColumn("buyer_id", pl.String(), True, "the buyer"),
    CandidateColumn("offer_id", pl.String(), True, "the offer (never null in candidates)"),
    CandidateColumn("seller_id", pl.String(), False, "offer's seller; null = platform-wide"),
    CandidateColumn("tool", pl.String(), True, "percent_off, amount_off, free_shipping, ..."),
    CandidateColumn("p_redeem", pl.Float64(), True, "P(redeem | issued)", 0.0, 1.0),
    CandidateColumn("uplift", pl.Float64(), False, "causal change in P(purchase); null = unknown"),
    CandidateColumn("p_purchase", pl.Float64(), True, "P(purchase) without the offer", 0.0, 1.0),
    CandidateColumn("order_value", pl.Float64(), True, "expected order value", 0.0),
    CandidateColumn("margin", pl.Float64(), False, "seller gross margin fraction", 0.0, 1.0),
    CandidateColumn("offer_value", pl.Float64(), False, "fraction (percent_off) or money", 0.0),
    CandidateColumn("offer_cost", pl.Float64(), False, "expected cost of one redemption", 0.0),
    CandidateColumn("min_spend", pl.Float64(), False, "order value needed to redeem", 0.0),
    CandidateColumn("start_ts", TS, False, "offer valid from (inclusive)"),
    CandidateColumn("end_ts", TS, False, "offer valid until (exclusive)"),
    CandidateColumn("journey_stage", pl.String(), False, "buyer's purchase-journey stage"),
    CandidateColumn(
        "value_se", pl.Float64(), False, "standard error of the offer's expected value", 0.0
    ),
    CandidateColumn(
        "advantage_se",
        pl.Float64(),
        False,
        "standard error of the offer's gain over its seller's default offer",
        0.0,
    ),
    CandidateColumn(
        "score", pl.Float64(), False, "what the policy decides by; null = the expected value"
    ),
    CandidateColumn("is_default", pl.Boolean(), False, "the seller's default kind of offer"),
)
"""The candidates schema, in output column order."""

REQUIRED_COLUMNS: tuple[str, ...] = tuple(c.name for c in CANDIDATE_COLUMNS if c.required)
CANDIDATE_SCHEMA: dict[str, pl.DataType] = {c.name: c.dtype for c in CANDIDATE_COLUMNS}

MAX_EXAMPLES = 5


class CandidatesError(ValueError):
    """The candidates frame breaks its schema; the message names the column and the fix."""


def validate_candidates(candidates: pl.DataFrame) -> pl.DataFrame:
    """Check and cast a candidates frame to :data:`CANDIDATE_SCHEMA`.

    Schema columns come first in schema order, extra columns are kept after them. Naive
    timestamps are read as UTC. Raises :class:`CandidatesError` naming every missing
    required column, a column that cannot be cast, nulls in a required column, values out
    of range, or a duplicated (buyer_id, offer_id) pair.

    Examples
    --------
    >>> import polars as pl
    >>> validate_candidates(pl.DataFrame({"buyer_id": ["b1"]}))
    Traceback (most recent call last):
    ...
    recsys.policy.schema.CandidatesError: candidates: missing required columns \
['offer_id', 'tool', 'p_redeem', 'p_purchase', 'order_value'] (present: ['buyer_id']). \
Fix: the upstream scorer must output them; see recsys.policy.schema.CANDIDATE_COLUMNS.
    """
    missing = [name for name in REQUIRED_COLUMNS if name not in candidates.columns]
    if missing:
        raise CandidatesError(
            f"candidates: missing required columns {missing} (present: {candidates.columns}). "
            "Fix: the upstream scorer must output them; see "
            "recsys.policy.schema.CANDIDATE_COLUMNS."
        )
    exprs: list[pl.Expr] = []
    for col in CANDIDATE_COLUMNS:
        if col.name in candidates.columns:
            exprs.append(_cast(candidates, col))
        else:
            exprs.append(pl.lit(None, dtype=col.dtype).alias(col.name))
    extra = [name for name in candidates.columns if name not in CANDIDATE_SCHEMA]
    out = candidates.select([*exprs, *[pl.col(name) for name in extra]])
    _check_values(out)
    return out


def _cast(frame: pl.DataFrame, col: CandidateColumn) -> pl.Expr:
    """Cast expression for one present column; raises if the cast would fail."""
    dtype = frame.schema[col.name]
    if dtype == col.dtype:
        return pl.col(col.name)
    if isinstance(col.dtype, pl.Datetime):
        if not isinstance(dtype, pl.Datetime | pl.Date | pl.Null):
            raise CandidatesError(
                f"candidates: column '{col.name}' has dtype {dtype}, expected a datetime. "
                "Fix: parse it to a UTC datetime upstream."
            )
        expr = pl.col(col.name).cast(pl.Datetime("us", getattr(dtype, "time_zone", None)))
        if getattr(dtype, "time_zone", None) is None:
            return expr.dt.replace_time_zone("UTC").alias(col.name)
        return expr.dt.convert_time_zone("UTC").alias(col.name)
    try:
        frame.select(pl.col(col.name).cast(col.dtype, strict=True))
    except Exception as exc:  # polars raises InvalidOperationError / ComputeError
        raise CandidatesError(
            f"candidates: column '{col.name}' of dtype {dtype} cannot be cast to {col.dtype} "
            f"({type(exc).__name__}). Fix: {col.name} is '{col.meaning}'; cast it upstream."
        ) from None
    return pl.col(col.name).cast(col.dtype)


def _check_values(frame: pl.DataFrame) -> None:
    """Nulls in required columns, out-of-range numbers and duplicate pairs.

    One pass counts the bad rows of every rule (a served request checks a few rows, where
    a filter per column would cost more than the scoring); only a broken rule is looked
    at again, for its example rows.
    """
    rules = _value_rules()
    counts = frame.select(
        *[bad.fill_null(False).sum().alias(name) for name, (bad, _) in rules.items()],
        (pl.len().over("buyer_id", "offer_id") > 1).sum().alias("_duplicates"),
    ).row(0, named=True)
    if not any(counts.values()):
        return
    problems: list[str] = []
    with_row = frame.with_row_index("_row")
    for name, (bad, rule) in rules.items():
        if not counts[name]:
            continue
        rows = with_row.filter(bad.fill_null(False))
        examples = [
            f"row {r}: {v!r}" for r, v in rows.select("_row", name).head(MAX_EXAMPLES).iter_rows()
        ]
        problems.append(f"column '{name}': {rows.height} rows have {rule}; first rows: {examples}")
    if counts["_duplicates"]:
        dup = with_row.filter(pl.len().over("buyer_id", "offer_id") > 1)
        examples = [
            f"row {r}: ({b!r}, {o!r})"
            for r, b, o in dup.select("_row", "buyer_id", "offer_id").head(MAX_EXAMPLES).iter_rows()
        ]
        problems.append(
            f"{dup.height} rows repeat a (buyer_id, offer_id) pair; first rows: {examples}"
        )
    if problems:
        raise CandidatesError(
            "candidates: " + "; ".join(problems) + ". Fix: the upstream scorer must give one "
            "row per (buyer, offer) with probabilities in [0, 1] and non-negative money."
        )


def _value_rules() -> dict[str, tuple[pl.Expr, str]]:
    """Per checked column: the expression flagging a bad value, and the rule in words."""
    rules: dict[str, tuple[pl.Expr, str]] = {}
    for col in CANDIDATE_COLUMNS:
        bad = pl.lit(False)
        rule = ""
        if col.required:
            bad = pl.col(col.name).is_null()
            rule = "a null value"
        if col.lower is not None:
            bad = bad | (pl.col(col.name) < col.lower)
            rule = rule + " or " if rule else ""
            rule += f"a value below {col.lower}"
        if col.upper is not None:
            bad = bad | (pl.col(col.name) > col.upper)
            rule += f" or above {col.upper}"
        if not rule:
            continue
        if col.dtype == pl.Float64():
            bad = bad | pl.col(col.name).is_nan()
            rule += " or NaN"
        rules[col.name] = (bad, rule)
    return rules
