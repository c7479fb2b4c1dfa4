"""Buyers with latent tastes, price sensitivity and habits, and what follows from them.

A buyer's item distribution is a mixture: with probability `habit` one of a few personal
staples (repeat purchases, as in grocery data), otherwise an item drawn from a
taste bucket (category x style) by popularity. Tastes are sparse Dirichlet draws, so
the buyer-item matrix has low-rank structure for matrix factorization to recover.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.synthetic.catalog import Catalog
from recsys.data.synthetic.params import (
    ACQUISITION_SHARE,
    INITIAL_STAGE,
    MEAN_LINES,
    MEAN_QTY,
    N_STAPLES,
    SyntheticConfig,
)


@dataclass
class Buyers:
    """One chunk of buyers; `code` is the global buyer number."""

    code: np.ndarray
    join_week: np.ndarray
    join_offset_s: np.ndarray  # seconds into the join week of the first visit
    cat_pref: np.ndarray  # (n, C)
    style_pref: np.ndarray  # (n, St)
    price_sensitivity: np.ndarray
    activity: np.ndarray
    habit: np.ndarray
    staples: np.ndarray  # (n, N_STAPLES) item codes
    stage: np.ndarray  # current latent stage, -1 before joining
    share: np.ndarray  # (n, S) probability that an order goes to seller s
    expected_price: np.ndarray  # (n, S) expected price of an order line at seller s
    country: np.ndarray
    acquisition: np.ndarray  # code into params.ACQUISITION

    def __len__(self) -> int:
        return len(self.code)

    def expected_order_value(self) -> np.ndarray:
        """(n, S) expected value of one order at each seller, before discounts."""
        return MEAN_LINES * MEAN_QTY * self.expected_price

    def bucket_weights(self, catalog: Catalog, rows: np.ndarray, seller: np.ndarray) -> np.ndarray:
        """(len(rows), C*St) weight of each taste bucket for lines bought from `seller`."""
        taste = self.cat_pref[rows][:, :, None] * self.style_pref[rows][:, None, :]
        frac = catalog.seller_frac[:, :, seller].transpose(2, 0, 1)
        return ((1 - self.habit[rows])[:, None, None] * taste * frac).reshape(len(rows), -1)


def sample_taste_items(
    catalog: Catalog,
    cat_pref: np.ndarray,
    style_pref: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """One item per row drawn from the row's taste buckets (ignoring staples)."""
    n = len(cat_pref)
    c = _sample_rows(cat_pref, rng)
    st = _sample_rows(style_pref, rng)
    start, end = catalog.bucket_range[c, st, 0], catalog.bucket_range[c, st, 1]
    return catalog.sample_in_ranges(start, end, rng.random(n))


def _sample_rows(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Index drawn from each row of a non-negative weight matrix."""
    cum = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), weights.shape[1] - 1)


def make_buyers(
    config: SyntheticConfig, catalog: Catalog, first: int, n: int, rng: np.random.Generator
) -> Buyers:
    """Buyers `first .. first+n-1`: latent traits, staples and per-seller expectations."""
    n_cat, n_sty, n_sel = catalog.n_categories, catalog.n_styles, catalog.n_sellers
    present_at_start = rng.random(n) < 0.45
    join_week = np.where(present_at_start, 0, rng.integers(0, config.weeks, size=n))
    stage0 = rng.choice(len(INITIAL_STAGE), size=n, p=INITIAL_STAGE)
    cat_pref = rng.dirichlet(np.full(n_cat, 0.25), size=n)
    style_pref = rng.dirichlet(np.full(n_sty, 0.8), size=n)
    habit = rng.beta(2.0, 3.0, size=n)
    staples = np.stack(
        [sample_taste_items(catalog, cat_pref, style_pref, rng) for _ in range(N_STAPLES)],
        axis=1,
    )
    taste_share = np.einsum("bc,bt,cts->bs", cat_pref, style_pref, catalog.seller_frac)
    taste_rev = np.einsum(
        "bc,bt,cts->bs", cat_pref, style_pref, catalog.seller_frac * catalog.sub_mean_price
    )
    staple_onehot = np.zeros((n, n_sel))
    staple_rev = np.zeros((n, n_sel))
    rows = np.repeat(np.arange(n), N_STAPLES)
    np.add.at(staple_onehot, (rows, catalog.seller[staples.ravel()]), 1.0 / N_STAPLES)
    np.add.at(
        staple_rev,
        (rows, catalog.seller[staples.ravel()]),
        catalog.price[staples.ravel()] / N_STAPLES,
    )
    h = habit[:, None]
    share = (1 - h) * taste_share + h * staple_onehot
    revenue = (1 - h) * taste_rev + h * staple_rev
    expected_price = np.divide(revenue, share, out=np.zeros_like(share), where=share > 0)
    return Buyers(
        code=np.arange(first, first + n, dtype=np.int64),
        join_week=join_week,
        join_offset_s=rng.integers(0, 7 * 86400, size=n),
        cat_pref=cat_pref,
        style_pref=style_pref,
        price_sensitivity=rng.beta(2.0, 2.0, size=n),
        activity=rng.gamma(2.0, 0.5, size=n),
        habit=habit,
        staples=staples,
        stage=np.where(present_at_start, stage0, -1),
        share=share,
        expected_price=expected_price,
        country=rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1]),
        # From a generator of its own, so the other draws (and the worlds made before the
        # attribute existed) stay exactly as they were.
        acquisition=np.random.default_rng([config.seed, 11, first]).choice(
            len(ACQUISITION_SHARE), size=n, p=ACQUISITION_SHARE
        ),
    )
