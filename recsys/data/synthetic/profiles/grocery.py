"""`grocery-coupons`: a grocery retailer's till log and its weekly coupon mailers.

The shape of issue 17's first export, at its counts by default: one seller; ~92,000
items; ~2,500 households, each with ~400 purchase lines over eight months (a till log:
every event is a `purchase`, grouped by basket `order_id`); ~1,200 item-scoped coupons
(`percent_off` or `amount_off`) with up to ~1,000 items each (~111,000 `offer_items`
rows); ~530,000 exposures (each household gets ~7 of each week's 40 coupons, chosen by
hand towards what it buys: no propensities and no control group); ~1,000 redemptions.

The process, whose parameters are the ground truth:

- items sit in categories; a global Zipf popularity and a category price level set each
  item's pull and price;
- a household shops on Poisson(trip rate x weeks) trips placed uniformly in time, each
  with 1 + Poisson(10.1) lines; a line is one of the household's 50 staples (with
  probability `habit`, by staple weight) or an item drawn by popularity. So a household's
  share of lines on a coupon's scope S is q = habit x staple mass(S) + (1 - habit) x
  popularity(S), and P(it buys from S in the week after the mailer) is exactly
  p0 = 1 - exp(-mu (1 - (1 - q) exp(-10.1 q))), mu = trip rate (per week);
- a coupon turns a household that would not have bought from its scope that week into
  one that does with probability e = 0.06 x depth x (0.4 + 1.2 x price sensitivity) x
  min(1, q / 0.02) (depth: percent / 0.2, or amount / 1.5): p1 = p0 + (1 - p0) e. The
  extra purchase is one line of a scoped item, on a basket of its own;
- a household that buys from the scope redeems the coupon on its first such line with
  its clipping rate r (Beta(0.5, 25), mean 0.02); a purchase the coupon caused, with
  min(0.9, 0.1 + 5 r). The redeemed line's amount is discounted.

Truth (`truth/`): `offers.parquet` holds, for every household and each of the 40 coupons
of the next mailer (in `offers.parquet`, valid the week after the history), the exact
p0, p1, P(redeem) and incremental profit (margin 0.25 x (p1 - p0) x the scope's mean
line value - discount x P(redeem) - send cost); `exposures.parquet` the same for every
logged exposure; `buyers.parquet` the households' traits; `sellers.parquet` the margin.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field

from recsys.data.synthetic.profiles.base import (
    ProfileConfig,
    ProfileReport,
    days,
    decision_truth,
    ids,
    sellers_truth,
    timestamps,
    write_dataset,
)

SELLER = "s001"
MARGIN = 0.25
LINES_EXTRA = 10.1
"""Lines per trip = 1 + Poisson(LINES_EXTRA)."""
N_STAPLES = 50
BASE_EFFECT = 0.06
RELEVANCE_MASS = 0.02
"""A household spending this share of its lines on a scope is fully moved by its coupon."""
PERCENT_VALUES = (0.1, 0.15, 0.2, 0.25, 0.3)
AMOUNT_VALUES = (0.5, 1.0, 1.5, 2.0)
MEAN_QUANTITY = 1.3


class GroceryConfig(ProfileConfig):
    """Sizes of the grocery-coupons profile (None: the issue's counts times `scale`)."""

    buyers: int | None = Field(None, ge=2, description="households (default 2,500)")
    items: int | None = Field(None, ge=20, description="items (default 92,000)")
    coupons: int | None = Field(None, ge=1, description="coupons mailed (default 1,200)")
    weeks: int = Field(35, ge=4, description="weeks of history (eight months)")
    campaigns: int = Field(30, ge=1, description="weekly mailers, ending a week before the end")
    coupons_per_household: float = Field(7.0, gt=0, description="per mailer, on average")
    decision_coupons: int = Field(40, ge=1, description="coupons of the next mailer (truth)")
    scope_mean: float = Field(92.0, gt=0)
    scope_max: int = Field(1000, ge=1)
    trips_per_week: float = Field(1.03, gt=0)
    send_cost: float = Field(0.01, ge=0)


def generate_grocery(config: GroceryConfig, out: str, overwrite: bool = False) -> ProfileReport:
    """Simulate the profile (module docstring) and write it under `out`."""
    began = time.perf_counter()
    sim = _Simulation(config)
    tables, truth = sim.run()
    report = ProfileReport("grocery-coupons", Path(out))
    report.notes.append(
        f"{sim.H:,} households, {sim.I:,} items, {sim.n_coupons:,} coupons mailed, "
        f"{tables['redemptions'].height:,} redemptions"
    )
    report.seconds = time.perf_counter() - began
    return write_dataset(out, tables, truth, report, overwrite)


class _Simulation:
    def __init__(self, config: GroceryConfig) -> None:
        self.c = config
        self.rng = np.random.default_rng([config.seed, 17])
        self.H = config.count(2_500, config.buyers, 2)
        self.I = config.count(92_000, config.items, 20)
        self.n_camp = min(config.campaigns, config.weeks - 1)
        coupons = config.count(1_200, config.coupons)
        self.per_campaign = max(1, coupons // self.n_camp)
        self.n_coupons = self.per_campaign * self.n_camp

    # ------------------------------------------------------------------ world

    def _catalog(self) -> None:
        rng, n_items = self.rng, self.I
        n_cat = max(2, n_items // 150)
        sizes = rng.multinomial(n_items - n_cat, np.full(n_cat, 1 / n_cat)) + 1
        self.category = np.repeat(np.arange(n_cat), sizes)
        self.cat_start = np.r_[0, np.cumsum(sizes)[:-1]]
        self.cat_sizes = sizes
        rank = rng.permutation(n_items)
        pop = 1.0 / (rank + 20.0) ** 0.9
        self.pop = pop / pop.sum()
        self.cum_pop = np.r_[0.0, np.cumsum(self.pop)]
        level = np.exp(rng.normal(np.log(2.5), 0.6, n_cat))
        self.price = np.round(level[self.category] * np.exp(rng.normal(0, 0.35, n_items)), 2)
        self.price = np.maximum(self.price, 0.19)

    def _households(self) -> None:
        rng, H = self.rng, self.H
        self.habit = rng.beta(6, 3, H)
        self.trip_rate = rng.gamma(4.0, self.c.trips_per_week / 4.0, H)
        self.sensitivity = rng.beta(2, 3, H)
        self.clip = rng.beta(0.5, 25, H)
        self.staples = self._by_popularity(rng.random((H, N_STAPLES)))
        self.staple_w = rng.dirichlet(np.ones(N_STAPLES), H)
        rows = np.repeat(np.arange(H), N_STAPLES)
        self.W = sp.csr_matrix(
            ((self.habit[:, None] * self.staple_w).ravel(), (rows, self.staples.ravel())),
            shape=(H, self.I),
        )
        self.W.sum_duplicates()
        self.size = 1 + rng.poisson(1.4, H)
        self.age = rng.choice(["18-34", "35-54", "55+"], H, p=[0.3, 0.45, 0.25])

    def _by_popularity(self, u: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.cum_pop, u, side="right") - 1, 0, self.I - 1)

    def _coupons(self, n: int) -> dict[str, np.ndarray]:
        """Tools, values and contiguous item ranges [start, end) of `n` coupons."""
        rng = self.rng
        mu = np.log(self.c.scope_mean) - 0.5
        size = np.clip(np.round(rng.lognormal(mu, 1.0, n)), 1, min(self.c.scope_max, self.I))
        size = size.astype(np.int64)
        cat = rng.integers(0, len(self.cat_sizes), n)
        start = self.cat_start[cat] + (rng.random(n) * self.cat_sizes[cat]).astype(np.int64)
        start = np.minimum(start, self.I - size)
        percent = rng.random(n) < 0.6
        value = np.where(
            percent, rng.choice(PERCENT_VALUES, n), rng.choice(AMOUNT_VALUES, n)
        ).astype(np.float64)
        return {"start": start, "end": start + size, "percent": percent, "value": value}

    def _scope_matrix(self, coupons: dict[str, np.ndarray]) -> sp.csr_matrix:
        sizes = coupons["end"] - coupons["start"]
        rows = np.repeat(np.arange(len(sizes)), sizes)
        offsets = np.repeat(np.cumsum(sizes) - sizes, sizes)
        cols = np.repeat(coupons["start"], sizes) + np.arange(len(rows)) - offsets
        return sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(sizes), self.I)
        )

    def _masses(self, scope: sp.csr_matrix) -> np.ndarray:
        """q: each household's share of lines on each coupon's scope (H x coupons)."""
        staple = np.asarray((self.W @ scope.T).todense())
        popular = scope @ self.pop
        return staple + (1.0 - self.habit)[:, None] * popular[None, :]

    def _p0(self, q: np.ndarray, households: np.ndarray) -> np.ndarray:
        """P(at least one line on the scope in a week), exactly (module docstring)."""
        mu = self.trip_rate[households]
        return 1.0 - np.exp(-mu * (1.0 - (1.0 - q) * np.exp(-LINES_EXTRA * q)))

    def _effect(
        self, q: np.ndarray, households: np.ndarray, c: dict[str, np.ndarray]
    ) -> np.ndarray:
        depth = np.where(c["percent"], c["value"] / 0.2, c["value"] / 1.5)
        relevance = np.minimum(1.0, q / RELEVANCE_MASS)
        return np.clip(
            BASE_EFFECT * depth * (0.4 + 1.2 * self.sensitivity[households]) * relevance, 0, 1
        )

    def _scope_value(self, c: dict[str, np.ndarray]) -> np.ndarray:
        """Popularity-weighted mean line value of each coupon's items."""
        weight = self.cum_pop[c["end"]] - self.cum_pop[c["start"]]
        money = np.r_[0.0, np.cumsum(self.pop * self.price)]
        return MEAN_QUANTITY * (money[c["end"]] - money[c["start"]]) / np.maximum(weight, 1e-300)

    @staticmethod
    def _discount(c: dict[str, np.ndarray], gross: np.ndarray) -> np.ndarray:
        return np.where(c["percent"], c["value"] * gross, np.minimum(c["value"], gross))

    # ------------------------------------------------------------------ history

    def _lines(self) -> None:
        rng, H = self.rng, self.H
        weeks = self.c.weeks
        n_trips = rng.poisson(self.trip_rate * weeks)
        trip_h = np.repeat(np.arange(H), n_trips)
        day = rng.integers(0, weeks * 7, len(trip_h))
        trip_ts = day * days(1) + 8 * 3600 + rng.integers(0, 12 * 3600, len(trip_h))
        per_trip = 1 + rng.poisson(LINES_EXTRA, len(trip_h))
        line_trip = np.repeat(np.arange(len(trip_h)), per_trip)
        line_h = trip_h[line_trip]
        staple = rng.random(len(line_h)) < self.habit[line_h]
        flat = (np.cumsum(self.staple_w, axis=1) + np.arange(H)[:, None]).ravel()
        k = np.searchsorted(flat, line_h + rng.random(len(line_h)) * (1 - 1e-12), side="right")
        k = np.clip(k - line_h * N_STAPLES, 0, N_STAPLES - 1)
        item = np.where(
            staple, self.staples[line_h, k], self._by_popularity(rng.random(len(line_h)))
        )
        order = np.argsort(trip_ts[line_trip], kind="stable")
        self.line_h = line_h[order]
        self.line_item = item[order]
        self.line_trip = line_trip[order]
        self.line_ts = trip_ts[self.line_trip]
        self.line_qty = 1 + rng.poisson(0.3, len(order))
        self.line_amount = np.round(self.price[self.line_item] * self.line_qty, 2)
        self.n_trips = len(trip_h)

    # ------------------------------------------------------------------ campaigns

    def run(self) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
        self._catalog()
        self._households()
        self._lines()
        rng, H = self.rng, self.H
        coupons = self._coupons(self.n_coupons + self.c.decision_coupons)
        scope = self._scope_matrix(coupons)
        week = days(7)
        first_week = self.c.weeks - 1 - self.n_camp
        camp_ts = (first_week + np.arange(self.n_camp)) * week + 8 * 3600
        exposures: list[dict[str, np.ndarray]] = []
        extra: list[dict[str, np.ndarray]] = []
        redeemed: list[dict[str, np.ndarray]] = []
        for camp in range(self.n_camp):
            cols = np.arange(camp * self.per_campaign, (camp + 1) * self.per_campaign)
            c = {k: v[cols] for k, v in coupons.items()}
            q = self._masses(scope[cols])
            # Chosen by hand: more of the coupons whose items the household buys.
            n = len(cols)
            k_h = rng.binomial(n, min(1.0, self.c.coupons_per_household / n), H)
            keys = np.log(0.3 + q / max(q.mean(), 1e-12)) + rng.gumbel(size=q.shape)
            rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
            hh, j = np.nonzero(rank < k_h[:, None])
            t0 = camp_ts[camp] + rng.integers(0, 1800, len(hh))
            qj = q[hh, j]
            cj = {k: v[j] for k, v in c.items()}
            p0 = self._p0(qj, hh)
            e = self._effect(qj, hh, cj)
            # What each household bought from each scope in the week (its first line).
            lo, hi = np.searchsorted(self.line_ts, [camp_ts[camp], camp_ts[camp] + week])
            first = self._first_scoped_line(lo, hi, hh, t0, cj)
            natural = first >= 0
            caused = ~natural & (rng.random(len(hh)) < e)
            r_inc = np.minimum(0.9, 0.1 + 5 * self.clip[hh])
            uses = np.where(natural, self.clip[hh], np.where(caused, r_inc, 0.0))
            redeem = rng.random(len(hh)) < uses
            # Purchases the coupon caused: one scoped line on a basket of their own.
            ci = np.flatnonzero(caused)
            u = rng.random(len(ci))
            lo_pop, hi_pop = self.cum_pop[cj["start"][ci]], self.cum_pop[cj["end"][ci]]
            item = np.clip(
                self._by_popularity(lo_pop + u * (hi_pop - lo_pop)),
                cj["start"][ci],
                cj["end"][ci] - 1,
            )
            when = t0[ci] + rng.integers(3600, week - 7200, len(ci))
            extra.append(
                {
                    "h": hh[ci],
                    "item": item,
                    "ts": when,
                    "qty": np.ones(len(ci), dtype=np.int64),
                    "coupon": cols[j[ci]],
                    "redeem": redeem[ci],
                }
            )
            nat = np.flatnonzero(natural & redeem)
            redeemed.append(
                {"line": first[nat], "coupon": cols[j[nat]], "h": hh[nat], "t0": t0[nat]}
            )
            p_redeem = p0 * self.clip[hh] + (1 - p0) * e * r_inc
            value = self._scope_value(cj)
            exposures.append(
                {
                    "camp": np.full(len(hh), camp),
                    "h": hh,
                    "coupon": cols[j],
                    "ts": t0,
                    "p0": p0,
                    "p1": p0 + (1 - p0) * e,
                    "p_redeem": p_redeem,
                    "value": value,
                    "discount": self._discount(cj, value),
                }
            )
        tables = self._tables(coupons, scope, camp_ts, exposures, extra, redeemed)
        truth = self._truth(coupons, scope, exposures)
        return tables, truth

    def _first_scoped_line(
        self, lo: int, hi: int, hh: np.ndarray, t0: np.ndarray, c: dict[str, np.ndarray]
    ) -> np.ndarray:
        """Index of each (household, coupon)'s first line on the scope at or after its
        mailer within the week's lines [lo, hi); -1 when there is none."""
        ts = self.line_ts[lo:hi]
        h = self.line_h[lo:hi]
        item = self.line_item[lo:hi]
        by_h = np.lexsort((ts, h))
        h_sorted = h[by_h]
        start = np.searchsorted(h_sorted, hh, side="left")
        end = np.searchsorted(h_sorted, hh, side="right")
        out = np.full(len(hh), -1, dtype=np.int64)
        # Walk the households' lines in time order, a step for every pair at once.
        step = 0
        active = np.flatnonzero(end > start)
        while len(active):
            pos = start[active] + step
            alive = pos < end[active]
            active, pos = active[alive], pos[alive]
            line = by_h[pos]
            hit = (
                (item[line] >= c["start"][active])
                & (item[line] < c["end"][active])
                & (ts[line] >= t0[active])
            )
            out[active[hit]] = lo + line[hit]
            active = active[~hit]
            step += 1
        return out

    # ------------------------------------------------------------------ tables

    def _tables(
        self,
        coupons: dict[str, np.ndarray],
        scope: sp.csr_matrix,
        camp_ts: np.ndarray,
        exposures: list[dict[str, np.ndarray]],
        extra: list[dict[str, np.ndarray]],
        redeemed: list[dict[str, np.ndarray]],
    ) -> dict[str, pl.DataFrame]:
        start = self.c.start
        cat = lambda key, parts: np.concatenate([p[key] for p in parts])  # noqa: E731
        x = {k: cat(k, exposures) for k in exposures[0]}
        e = {k: cat(k, extra) for k in extra[0]}
        r = {k: cat(k, redeemed) for k in redeemed[0]}
        n_lines = len(self.line_h)
        # Discounts: the first scoped line of a natural redemption; the caused line itself.
        amount = self.line_amount.copy()
        gross_nat = self.price[self.line_item[r["line"]]] * self.line_qty[r["line"]]
        nat_c = {k: v[r["coupon"]] for k, v in coupons.items()}
        np.subtract.at(amount, r["line"], self._discount(nat_c, gross_nat))
        ext_c = {k: v[e["coupon"]] for k, v in coupons.items()}
        gross_ext = self.price[e["item"]] * e["qty"]
        ext_amount = gross_ext - np.where(e["redeem"], self._discount(ext_c, gross_ext), 0.0)
        trip = np.r_[self.line_trip, self.n_trips + np.arange(len(e["h"]))]
        events = pl.DataFrame(
            {
                "h": np.r_[self.line_h, e["h"]],
                "item": np.r_[self.line_item, e["item"]],
                "ts": timestamps(start, np.r_[self.line_ts, e["ts"]]),
                "trip": trip,
                "quantity": np.r_[self.line_qty, e["qty"]],
                "amount": np.round(np.maximum(np.r_[amount, ext_amount], 0.0), 2),
            }
        ).sort("h", "ts", "trip")
        order_value = events.group_by("trip").agg(pl.col("amount").sum().alias("order_value"))
        events_out = events.select(
            ids("h", pl.col("h"), 6).alias("buyer_id"),
            ids("i", pl.col("item"), 7).alias("item_id"),
            pl.lit("purchase").alias("event_type"),
            "ts",
            ids("t", pl.col("trip"), 8).alias("order_id"),
            "quantity",
            "amount",
        )
        exposure_id = ids("x", pl.Series(np.arange(len(x["h"]))), 8)
        exposures_out = pl.DataFrame(
            {"h": x["h"], "coupon": x["coupon"], "ts": timestamps(start, x["ts"])}
        ).select(
            exposure_id.alias("exposure_id"),
            ids("h", pl.col("h"), 6).alias("buyer_id"),
            ids("c", pl.col("coupon"), 6).alias("offer_id"),
            "ts",
            pl.lit(None, pl.Float64).alias("propensity"),
            pl.lit("weekly_mailer").alias("policy"),
        )
        # Each redemption names its household's exposure to the coupon (one per mailer).
        key = pl.DataFrame({"h": x["h"], "coupon": x["coupon"], "x": np.arange(len(x["h"]))})
        red = pl.concat(
            [
                pl.DataFrame(
                    {
                        "h": r["h"],
                        "coupon": r["coupon"],
                        "ts": self.line_ts[r["line"]],
                        "trip": self.line_trip[r["line"]],
                    }
                ),
                pl.DataFrame(
                    {
                        "h": e["h"][e["redeem"]],
                        "coupon": e["coupon"][e["redeem"]],
                        "ts": e["ts"][e["redeem"]],
                        "trip": trip[n_lines:][e["redeem"]],
                    }
                ),
            ]
        )
        red = red.join(key, on=["h", "coupon"]).join(order_value, on="trip").sort("ts", "x")
        redemptions_out = red.with_columns(
            timestamps(start, red["ts"].to_numpy()).alias("ts")
        ).select(
            ids("h", pl.col("h"), 6).alias("buyer_id"),
            ids("c", pl.col("coupon"), 6).alias("offer_id"),
            "ts",
            ids("x", pl.col("x"), 8).alias("exposure_id"),
            ids("t", pl.col("trip"), 8).alias("order_id"),
            pl.col("order_value").round(2).alias("amount"),
        )
        n_all = len(coupons["start"])
        issued = np.r_[
            np.repeat(camp_ts, self.per_campaign),
            np.full(n_all - self.n_coupons, self.c.weeks * days(7) + 8 * 3600),
        ]
        offers_out = pl.DataFrame(
            {
                "code": np.arange(n_all),
                "percent": coupons["percent"],
                "value": coupons["value"],
                "campaign": issued // days(7),
                "start_ts": timestamps(start, issued),
                "end_ts": timestamps(start, issued + days(7)),
            }
        ).select(
            ids("c", pl.col("code"), 6).alias("offer_id"),
            pl.when(pl.col("percent"))
            .then(pl.lit("percent_off"))
            .otherwise(pl.lit("amount_off"))
            .alias("tool"),
            pl.lit(SELLER).alias("seller_id"),
            ids("w", pl.col("campaign"), 2).alias("campaign_id"),
            "value",
            "start_ts",
            "end_ts",
        )
        coo = scope.tocoo()
        offer_items = (
            pl.DataFrame({"c": coo.row, "i": coo.col})
            .sort("c", "i")
            .select(
                ids("c", pl.col("c"), 6).alias("offer_id"),
                ids("i", pl.col("i"), 7).alias("item_id"),
            )
        )
        items = pl.DataFrame(
            {"code": np.arange(self.I), "cat": self.category, "price": self.price}
        ).select(
            ids("i", pl.col("code"), 7).alias("item_id"),
            pl.lit(SELLER).alias("seller_id"),
            ids("k", pl.col("cat"), 4).alias("category"),
            "price",
        )
        buyers = pl.DataFrame(
            {"code": np.arange(self.H), "size": self.size, "age": self.age}
        ).select(
            ids("h", pl.col("code"), 6).alias("buyer_id"),
            pl.lit(start).dt.replace_time_zone("UTC").alias("first_seen"),
            pl.col("size").alias("household_size"),
            pl.col("age").alias("age_band"),
        )
        return {
            "items": items,
            "events": events_out,
            "buyers": buyers,
            "offers": offers_out,
            "offer_items": offer_items,
            "exposures": exposures_out,
            "redemptions": redemptions_out,
        }

    def _truth(
        self,
        coupons: dict[str, np.ndarray],
        scope: sp.csr_matrix,
        exposures: list[dict[str, np.ndarray]],
    ) -> dict[str, pl.DataFrame]:
        cols = np.arange(self.n_coupons, len(coupons["start"]))
        c = {k: v[cols] for k, v in coupons.items()}
        q = self._masses(scope[cols])
        hh, j = np.nonzero(np.ones_like(q, dtype=bool))
        qj = q[hh, j]
        cj = {k: v[j] for k, v in c.items()}
        p0 = self._p0(qj, hh)
        e = self._effect(qj, hh, cj)
        p1 = p0 + (1 - p0) * e
        r_inc = np.minimum(0.9, 0.1 + 5 * self.clip[hh])
        p_redeem = p0 * self.clip[hh] + (p1 - p0) * r_inc
        value = self._scope_value(cj)
        offers = decision_truth(
            _fmt(pl.Series(hh), "h", 6),
            _fmt(pl.Series(cols[j]), "c", 6),
            SELLER,
            pl.Series(np.where(cj["percent"], "percent_off", "amount_off")),
            p0,
            p1,
            p_redeem,
            value,
            MARGIN,
            self._discount(cj, value),
            self.c.send_cost,
        )
        x = {k: np.concatenate([p[k] for p in exposures]) for k in exposures[0]}
        logged = pl.DataFrame(
            {
                "exposure_id": _fmt(pl.Series(np.arange(len(x["h"]))), "x", 8),
                "p_purchase_control": x["p0"],
                "p_purchase_treated": x["p1"],
                "p_redeem": x["p_redeem"],
                "incremental_profit": MARGIN * (x["p1"] - x["p0"]) * x["value"]
                - x["discount"] * x["p_redeem"]
                - self.c.send_cost,
            }
        )
        buyers = pl.DataFrame(
            {
                "buyer_id": _fmt(pl.Series(np.arange(self.H)), "h", 6),
                "habit": self.habit,
                "trips_per_week": self.trip_rate,
                "price_sensitivity": self.sensitivity,
                "clip_rate": self.clip,
            }
        )
        return {
            "offers": offers,
            "exposures": logged,
            "buyers": buyers,
            "sellers": sellers_truth({SELLER: MARGIN}, self.c.send_cost),
        }


def _fmt(codes: pl.Series, prefix: str, width: int) -> pl.Series:
    return pl.select(ids(prefix, codes, width)).to_series()
