"""What a synthetic marketplace's sellers know of their own business: the money terms.

A real seller configures its gross margin and what sending one offer costs (an SMS, an
e-mail); a simulator (`recsys.data.synthetic`) knows both and writes them to
`truth/sellers.parquet`. Training,
the demo and the benchmarks read them here, so the engine values offers with the costs
the truth charges: valued without the send cost, every offer looks 0.02 better than
the simulator's profit says, and "send to everyone" is favoured over sending to the
buyers it pays for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

SELLERS_TRUTH = Path("truth") / "sellers.parquet"


@dataclass(frozen=True)
class SellerTerms:
    """Each seller's gross margin, and the cost of issuing one offer."""

    margins: dict[str, float]
    send_cost: float | None
    """None for a marketplace written before the truth named it (read as unknown)."""


def seller_terms(data_dir: str | Path) -> SellerTerms | None:
    """The sellers' money terms of the marketplace under `data_dir`; None when it has no
    `truth/sellers.parquet` (real data: the config gives them)."""
    path = Path(data_dir) / SELLERS_TRUTH
    if not path.exists():
        return None
    table = pl.read_parquet(path)
    margins = dict(zip(table["seller_id"], table["margin"], strict=True))
    send = table["send_cost"].drop_nulls().to_list() if "send_cost" in table.columns else []
    return SellerTerms(margins=margins, send_cost=max(send) if send else None)
