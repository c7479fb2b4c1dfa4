"""What a synthetic marketplace's sellers know of their own business: the money terms.

A real seller configures its gross margin and what sending one offer costs (an SMS, an
e-mail); a simulator (`recsys.data.synthetic`) knows both and writes them to
`truth/sellers.parquet`. Training, the demo and the benchmarks read them here, so the
engine values offers with the costs the truth charges: valued without the send cost,
every offer looks 0.02 better than the simulator's profit says, and "send to everyone"
is favoured over sending to the buyers it pays for.
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

    @classmethod
    def from_frame(cls, table: pl.DataFrame) -> SellerTerms:
        """The terms of a `truth/sellers` table (seller_id, margin, optional send_cost)."""
        margins = dict(zip(table["seller_id"], table["margin"], strict=True))
        send = table["send_cost"].drop_nulls().to_list() if "send_cost" in table.columns else []
        return cls(margins=margins, send_cost=max(send) if send else None)


def seller_terms(data_dir: str | Path) -> SellerTerms | None:
    """The sellers' money terms of the marketplace under `data_dir`; None when it has no
    `truth/sellers.parquet` (real data: the config gives them)."""
    path = Path(data_dir) / SELLERS_TRUTH
    return SellerTerms.from_frame(pl.read_parquet(path)) if path.exists() else None


def known_seller_terms(data_dir: str | Path) -> SellerTerms:
    """`seller_terms` of a directory that must be a synthetic marketplace (the demo, the
    benchmarks and the evaluation against its truth); a clear error when it is not."""
    terms = seller_terms(data_dir)
    if terms is None:
        raise FileNotFoundError(
            f"{Path(data_dir) / SELLERS_TRUTH} is missing: {data_dir} is not a synthetic "
            "marketplace (write one with `recsys data synth`)"
        )
    return terms
