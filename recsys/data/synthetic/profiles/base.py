"""What every data-shape profile shares: config fields, ids, writing a dataset atomically.

A profile builds its contract tables and its ground truth as frames and hands them to
`write_dataset`, which casts each table to the contract's dtypes (`recsys.data.schema`),
writes it as Parquet into a temporary directory beside the target and moves that into
place at the end: a failed run leaves nothing behind, and a non-empty directory is
replaced only when asked.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import Field

from recsys.config import StrictConfig
from recsys.data.schema import TABLES_BY_NAME

TRUTH_DIR = "truth"


class ProfileConfig(StrictConfig):
    """Fields every profile has: its size and its seed."""

    seed: int = Field(0, ge=0, description="same seed and config, same files")
    scale: float = Field(
        1.0, gt=0, description="multiplies every count of the profile (buyers, items, offers)"
    )
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)

    def count(self, default: int, given: int | None = None, minimum: int = 1) -> int:
        """`given` if set, else `default` times the scale (at least `minimum`)."""
        value = given if given is not None else round(default * self.scale)
        return max(minimum, int(value))


@dataclass
class ProfileReport:
    """What a profile wrote: row counts per file."""

    profile: str
    out: Path
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"synthetic {self.profile} dataset written to {self.out} in {self.seconds:.1f}s"]
        lines += [f"  {name:<26} {count:>12,d} rows" for name, count in self.rows.items()]
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def ids(prefix: str, codes: np.ndarray | pl.Series | pl.Expr, width: int) -> pl.Expr:
    """String ids `prefix` + zero-padded code (an expression over a column of codes)."""
    expr = codes if isinstance(codes, pl.Expr) else pl.lit(pl.Series(codes))
    return pl.lit(prefix) + expr.cast(pl.String).str.pad_start(width, "0")


def timestamps(start: datetime, seconds: np.ndarray) -> pl.Series:
    """UTC microsecond timestamps `start` + `seconds` (whole seconds)."""
    micros = (np.asarray(seconds, dtype=np.int64) + int(start.timestamp())) * 1_000_000
    return pl.Series(micros).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def days(n: float) -> int:
    """Seconds in `n` days."""
    return int(timedelta(days=n).total_seconds())


def conform(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """`frame` cast to the contract dtypes of `table`, contract columns first."""
    schema = TABLES_BY_NAME[table].schema
    cast = [pl.col(c).cast(t) for c, t in schema.items() if c in frame.columns]
    extra = [c for c in frame.columns if c not in schema]
    return frame.select(*cast, *extra)


def write_dataset(
    out: str | Path,
    tables: dict[str, pl.DataFrame],
    truth: dict[str, pl.DataFrame],
    report: ProfileReport,
    overwrite: bool = False,
) -> ProfileReport:
    """Write the contract `tables` and the `truth` frames under `out` (see module docstring)."""
    began = time.perf_counter()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose a new directory or pass overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / TRUTH_DIR).mkdir()
        for name, frame in tables.items():
            conform(frame, name).write_parquet(tmp / f"{name}.parquet", compression="zstd")
            report.rows[name] = frame.height
        for name, frame in truth.items():
            frame.write_parquet(tmp / TRUTH_DIR / f"{name}.parquet", compression="zstd")
            report.rows[f"{TRUTH_DIR}/{name}"] = frame.height
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    report.out = out
    report.seconds += time.perf_counter() - began
    return report


def sellers_truth(margins: dict[str, float], send_cost: float) -> pl.DataFrame:
    """`truth/sellers.parquet`: each seller's gross margin and cost of issuing one offer
    (training reads them as config: `recsys.data.seller_terms`)."""
    return pl.DataFrame(
        {
            "seller_id": list(margins),
            "margin": list(margins.values()),
            "send_cost": [send_cost] * len(margins),
        },
        schema={"seller_id": pl.String, "margin": pl.Float64, "send_cost": pl.Float64},
    )


def decision_truth(
    buyer_id: pl.Series,
    offer_id: pl.Series,
    seller_id: str | None,
    tool: pl.Series | str,
    p_control: np.ndarray,
    p_treated: np.ndarray,
    p_redeem: np.ndarray,
    order_value: np.ndarray,
    margin: float,
    discount_cost: np.ndarray,
    send_cost: float,
) -> pl.DataFrame:
    """`truth/offers.parquet` rows, in the marketplace's form: the exact expectations of
    issuing each offer to each buyer, so a policy's true incremental profit is the sum of
    `incremental_profit` over the pairs it issues (`recsys.evaluation.policy_eval`).

    profit = margin x P(purchase) x order value - discount cost x P(redeem) - send cost.
    """
    profit_control = margin * p_control * order_value
    profit_treated = margin * p_treated * order_value - discount_cost * p_redeem - send_cost
    return pl.DataFrame(
        {
            "buyer_id": buyer_id,
            "offer_id": offer_id,
            "seller_id": pl.Series([seller_id] * len(buyer_id), dtype=pl.String),
            "tool": tool if isinstance(tool, pl.Series) else pl.Series([tool] * len(buyer_id)),
            "p_purchase_control": p_control,
            "p_purchase_treated": p_treated,
            "p_redeem": p_redeem,
            "expected_order_value": order_value,
            "profit_control": profit_control,
            "profit_treated": profit_treated,
            "incremental_profit": profit_treated - profit_control,
        }
    )
