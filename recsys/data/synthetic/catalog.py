"""Sellers and their items: categories, styles, prices and popularity.

Items are stored sorted by (category, style, seller) so that every taste bucket
(category, style) and every seller's share of it is a contiguous range, and sampling an
item is a binary search on one cumulative popularity array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.synthetic.params import STYLE_PRICE, SyntheticConfig


@dataclass(frozen=True)
class Catalog:
    """Items and sellers of the simulated marketplace (index = item code)."""

    category: np.ndarray  # (n_items,) int
    style: np.ndarray  # (n_items,) int
    seller: np.ndarray  # (n_items,) int
    price: np.ndarray  # (n_items,) float
    popularity: np.ndarray  # (n_items,) float, weights within a bucket
    cum_pop: np.ndarray  # (n_items + 1,) cumulative popularity, cum_pop[0] = 0
    bucket_range: np.ndarray  # (C, St, 2) first and end item of (category, style)
    sub_range: np.ndarray  # (C, St, S, 2) first and end item of (category, style, seller)
    seller_frac: np.ndarray  # (C, St, S) seller's share of a bucket's popularity
    sub_mean_price: np.ndarray  # (C, St, S) popularity-weighted mean price in a sub-bucket
    seller_margin: np.ndarray  # (S,)
    seller_categories: list[np.ndarray]

    @property
    def n_items(self) -> int:
        return len(self.price)

    @property
    def n_categories(self) -> int:
        return self.bucket_range.shape[0]

    @property
    def n_styles(self) -> int:
        return self.bucket_range.shape[1]

    @property
    def n_sellers(self) -> int:
        return len(self.seller_margin)

    def sample_in_ranges(self, start: np.ndarray, end: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Item codes drawn by popularity from item ranges [start, end) given uniforms u."""
        lo = self.cum_pop[start]
        hi = self.cum_pop[end]
        idx = np.searchsorted(self.cum_pop, lo + u * (hi - lo), side="right") - 1
        return np.clip(idx, start, end - 1)


def _assign_categories(rng: np.random.Generator, n_sellers: int, n_cat: int) -> list[np.ndarray]:
    """Each seller specialises in a few categories; every category has at least one seller."""
    carried = np.zeros((n_sellers, n_cat), dtype=bool)
    for s in range(n_sellers):
        k = int(rng.integers(3, max(4, n_cat // 2) + 1))
        carried[s, rng.choice(n_cat, size=min(k, n_cat), replace=False)] = True
    for c in np.flatnonzero(~carried.any(axis=0)):
        carried[rng.integers(n_sellers), c] = True
    return [np.flatnonzero(row) for row in carried]


def build_catalog(config: SyntheticConfig) -> Catalog:
    """Generate the catalog from the config's seed (independent of the buyer chunks)."""
    rng = np.random.default_rng([config.seed, 1])
    n_sellers, n_cat, n_sty = config.n_sellers, config.categories, len(STYLE_PRICE)
    seller_categories = _assign_categories(rng, n_sellers, n_cat)
    base_price = rng.lognormal(mean=np.log(9.0), sigma=0.6, size=n_cat)

    rows: list[tuple[int, int, int]] = []
    for c in range(n_cat):
        for st in range(n_sty):
            for s in range(n_sellers):
                if c in seller_categories[s]:
                    n = 1 + int(rng.poisson(config.items_per_bucket - 1))
                    rows.extend((c, st, s) for _ in range(n))
    cat, sty, sel = (np.array(col, dtype=np.int64) for col in zip(*rows, strict=True))
    n_items = len(cat)
    price = base_price[cat] * STYLE_PRICE[sty] * rng.lognormal(0.0, 0.2, size=n_items)
    price = np.round(price, 2)
    popularity = rng.pareto(1.2, size=n_items) + 0.05
    cum_pop = np.concatenate([[0.0], np.cumsum(popularity)])

    bucket_range = np.zeros((n_cat, n_sty, 2), dtype=np.int64)
    sub_range = np.zeros((n_cat, n_sty, n_sellers, 2), dtype=np.int64)
    seller_frac = np.zeros((n_cat, n_sty, n_sellers))
    sub_mean_price = np.zeros((n_cat, n_sty, n_sellers))
    key = (cat * n_sty + sty) * n_sellers + sel  # sorted by construction
    starts = np.searchsorted(key, np.arange(n_cat * n_sty * n_sellers), side="left")
    ends = np.searchsorted(key, np.arange(n_cat * n_sty * n_sellers), side="right")
    sub_range[..., 0] = starts.reshape(n_cat, n_sty, n_sellers)
    sub_range[..., 1] = ends.reshape(n_cat, n_sty, n_sellers)
    bucket_range[..., 0] = sub_range[:, :, 0, 0]
    bucket_range[..., 1] = sub_range[:, :, -1, 1]
    pop_mass = cum_pop[sub_range[..., 1]] - cum_pop[sub_range[..., 0]]
    bucket_mass = pop_mass.sum(axis=2, keepdims=True)
    seller_frac = pop_mass / bucket_mass
    cum_rev = np.concatenate([[0.0], np.cumsum(popularity * price)])
    rev_mass = cum_rev[sub_range[..., 1]] - cum_rev[sub_range[..., 0]]
    sub_mean_price = np.divide(rev_mass, pop_mass, out=np.zeros_like(rev_mass), where=pop_mass > 0)
    return Catalog(
        category=cat,
        style=sty,
        seller=sel,
        price=price,
        popularity=popularity,
        cum_pop=cum_pop,
        bucket_range=bucket_range,
        sub_range=sub_range,
        seller_frac=seller_frac,
        sub_mean_price=sub_mean_price,
        seller_margin=np.round(rng.uniform(0.2, 0.4, size=n_sellers), 3),
        seller_categories=seller_categories,
    )
