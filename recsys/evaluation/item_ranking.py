"""Item ranking on a time split: matrix factorization against popularity and habit.

Repeat purchases dominate grocery-like data, so the relevant items of a buyer are all
items they buy in the test window, bought before or not, and nothing is filtered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data.dataset import Dataset
from recsys.evaluation.ranking import ndcg_at_k, recall_at_k
from recsys.features.interactions import IdIndex
from recsys.models.mf import MatrixFactorization, MFConfig


@dataclass(frozen=True)
class ItemRankingReport:
    """recall@k and NDCG@k of each ranker on the same buyers and window."""

    k: int
    n_buyers: int
    recall: dict[str, float]
    ndcg: dict[str, float]

    def format(self) -> str:
        rows = [
            f"  {name:<20} recall@{self.k} {self.recall[name]:.4f}  "
            f"ndcg@{self.k} {self.ndcg[name]:.4f}"
            for name in self.recall
        ]
        return f"item ranking on {self.n_buyers:,} test buyers\n" + "\n".join(rows)


def _codes_matrix(frame: pl.DataFrame, buyers: pl.Series, items: IdIndex, k: int) -> np.ndarray:
    """(n_buyers, k) item codes from a frame of buyer_id, item_id, rank (1-based)."""
    out = -np.ones((len(buyers), k), dtype=np.int64)
    rows = (
        buyers.to_frame()
        .with_row_index("_r")
        .join(frame.filter(pl.col("item_id").is_not_null()), on="buyer_id")
    )
    out[rows["_r"].to_numpy(), rows["rank"].cast(pl.Int64).to_numpy() - 1] = items.codes(
        rows["item_id"]
    )
    return out


def evaluate_item_ranking(
    dataset: Dataset, mf_config: MFConfig | None = None, test_days: float = 14.0, k: int = 10
) -> ItemRankingReport:
    """Fit MF on events before the last `test_days`, rank for buyers who buy after.

    Only purchases of known items are relevant (a purchase recorded without its item has
    nothing to rank); with no buyer to rank for, every figure is NaN.
    """
    end = dataset.events["ts"].max()
    assert end is not None
    cut = end - timedelta(days=test_days)  # type: ignore[operator]
    # Lazy: each use reads the columns it needs; the events are never copied whole.
    train = dataset.events.lazy().filter(pl.col("ts") < cut)
    test = dataset.events.filter(
        (pl.col("ts") >= cut)
        & (pl.col("event_type") == "purchase")
        & pl.col("item_id").is_in(dataset.items["item_id"].implode())
    )
    model = MatrixFactorization(mf_config or MFConfig()).fit(train, items=dataset.items)
    items = model.item_index_
    buyers = test["buyer_id"].unique().sort()
    test_rows = (
        buyers.to_frame()
        .with_row_index("_r")
        .join(test.select("buyer_id", "item_id"), on="buyer_id")
    )
    relevance = sp.csr_matrix(
        (
            np.ones(test_rows.height),
            (test_rows["_r"].to_numpy(), items.codes(test_rows["item_id"])),
        ),
        shape=(len(buyers), len(items)),
    )
    rank = (pl.int_range(pl.len()).over("buyer_id") + 1).alias("rank")
    rec = model.recommend(buyers, k=k).to_frame()  # rank 1..k, no null items
    bought = (
        train.filter((pl.col("event_type") == "purchase") & pl.col("item_id").is_not_null())
        .select("buyer_id", "item_id")
        .collect()
    )
    popular = bought.group_by("item_id").len().sort(["len", "item_id"], descending=[True, False])
    popularity = buyers.to_frame().join(
        popular.head(k).with_row_index("rank", offset=1), how="cross"
    )
    habit = (
        bought.group_by("buyer_id", "item_id")
        .len()
        .sort(["buyer_id", "len", "item_id"], descending=[False, True, False])
        .group_by("buyer_id", maintain_order=True)
        .head(k)
        .with_columns(rank)
    )
    rankers = {"mf": rec, "popularity": popularity, "personal_frequency": habit}
    recall, ndcg = {}, {}
    if len(buyers) == 0:
        nan = {name: float("nan") for name in rankers}
        return ItemRankingReport(k=k, n_buyers=0, recall=nan, ndcg=dict(nan))
    for name, frame in rankers.items():
        codes = _codes_matrix(frame.select("buyer_id", "item_id", "rank"), buyers, items, k)
        recall[name] = recall_at_k(codes, relevance, k)
        ndcg[name] = ndcg_at_k(codes, relevance, k)
    return ItemRankingReport(k=k, n_buyers=len(buyers), recall=recall, ndcg=ndcg)
