"""The marketplace simulator answering an outside policy, week by week, in process.

`generate` simulates a whole history with its own logging policy. `ServedMarket` runs the
same world one week at a time and lets a caller decide the offers of chosen weeks: each
served week, every active buyer (a `participation` share) asks one seller (drawn by the
buyer's seller shares) for an offer; the caller's ``decide`` answers with contract
`exposures` rows (a serving decision log's rows: offer or nothing, exact propensity,
holdout arm); buyers then respond with the causal effects of `truth.expected_outcomes`,
exactly as in a campaign wave. So the loop serving -> decision log -> training -> serving
is closed on a world whose truth is known:

- ``write(out)`` is the contract dataset of everything simulated so far, its
  redemptions of served offers naming the caller's decision ids (add the caller's
  decision log with ``load_dataset(out, decision_logs=[log])``);
- ``served`` holds every served decision with its true expected outcome;
- ``true_value`` is the exact expected incremental profit of any (buyer, offer) choices
  at the current week, without simulating them (how two policies are compared fairly).

Offers are the config's wave offers (each valid for its week): make the served weeks the
config's ``wave_weeks`` and the history has no randomized campaign of its own.
Cost: a week is one vectorized simulation step over the buyers, plus ``decide``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.seller_terms import SellerTerms
from recsys.data.synthetic.campaigns import build_offers
from recsys.data.synthetic.catalog import build_catalog
from recsys.data.synthetic.generate import (
    TRUTH_DIR,
    buyers_frame,
    events_frame,
    exposures_frames,
    items_frame,
    offer_items_frame,
    offers_frame,
    redemptions_frame,
    sellers_truth_frame,
)
from recsys.data.synthetic.params import SyntheticConfig
from recsys.data.synthetic.population import _sample_rows, make_buyers
from recsys.data.synthetic.simulate import (
    WEEK_S,
    ChunkLog,
    Treatment,
    _assign_manual,
    _assign_wave,
    _log_exposures,
    begin_week,
    end_week,
)
from recsys.data.synthetic.truth import expected_outcomes

Decide = Callable[[datetime, pl.DataFrame], pl.DataFrame]
"""(decision time, requests: buyer_id, seller_id) -> exposures rows, one per request:
exposure_id, buyer_id, seller_id, offer_id (null: nothing), propensity, policy, arm."""

DECISION_OFFSET_S = 3600
"""A served week's decisions are made this long after the week starts (as waves are)."""


class ServedMarket:
    """One chunk of the synthetic marketplace, stepped a week at a time (module doc)."""

    def __init__(self, config: SyntheticConfig) -> None:
        if config.buyers > config.chunk_buyers:
            raise ValueError(
                f"ServedMarket simulates one chunk: buyers ({config.buyers}) must be at most "
                f"chunk_buyers ({config.chunk_buyers})"
            )
        self.config = config
        self.catalog = build_catalog(config)
        self.offers = build_offers(config, self.catalog)
        self.rng = np.random.default_rng([config.seed, 3, 0])
        self.buyers = make_buyers(config, self.catalog, 0, config.buyers, self.rng)
        self._buyers_frame = buyers_frame(config, self.buyers, self.rng)
        self.log = ChunkLog()
        self.week = 0
        self.served: list[pl.DataFrame] = []
        offers = offers_frame(config, self.offers)
        self._offer_code = dict(zip(offers["offer_id"], range(offers.height), strict=True))
        self._buyer_ids = self._buyers_frame["buyer_id"].to_list()
        self._buyer_row = {b: i for i, b in enumerate(self._buyer_ids)}
        self._seller_ids = list(self.terms().margins)
        self._seller_code = {s: i for i, s in enumerate(self._seller_ids)}

    def week_start(self, week: int) -> datetime:
        """When `week` begins (UTC)."""
        return datetime.fromtimestamp(int(self.config.start.timestamp()) + week * WEEK_S, UTC)

    def run(self, weeks: int) -> None:
        """Simulate `weeks` more weeks as `generate` would (its waves and manual campaign)."""
        wave_campaign = {w: i for i, w in enumerate(self.config.waves)}
        for _ in range(weeks):
            week = self._next_week()
            begin_week(self.config, self.buyers, week)
            treatment = Treatment.none(len(self.buyers))
            if week in wave_campaign:
                treatment = _assign_wave(
                    self.config, self.offers, self.buyers, wave_campaign[week], week, self.rng
                )
            elif week == self.config.manual_week:
                treatment = _assign_manual(self.config, self.offers, self.buyers, week)
            if treatment.exposed.any():
                week_s = int(self.week_start(week).timestamp())
                _log_exposures(
                    self.config,
                    self.catalog,
                    self.offers,
                    self.buyers,
                    treatment,
                    week,
                    week_s,
                    self.log,
                )
            self._finish(treatment, week)

    def serve_week(self, decide: Decide, participation: float = 1.0) -> pl.DataFrame:
        """One week whose offers `decide` chooses; its decisions with their truth.

        Returns the decide rows with ``week``, ``p_purchase_control``,
        ``p_purchase_treated`` and ``incremental_profit`` (true expected, 0 for nothing).
        """
        if self.week not in self.config.waves:
            raise ValueError(
                f"week {self.week} has no offers to serve: make the served weeks the config's "
                f"wave_weeks (now {list(self.config.waves)})"
            )
        week = self._next_week()
        begin_week(self.config, self.buyers, week)
        buyers, n = self.buyers, len(self.buyers)
        eligible = (buyers.stage >= 0) & (buyers.join_week < week)
        rows = np.flatnonzero(eligible & (self.rng.random(n) < participation))
        treatment = Treatment.none(n)
        if len(rows) == 0:
            self._finish(treatment, week)
            return pl.DataFrame()
        seller = _sample_rows(buyers.share[rows], self.rng)
        requests = pl.DataFrame(
            {
                "buyer_id": [self._buyer_ids[r] for r in rows],
                "seller_id": [self._seller_ids[s] for s in seller],
            }
        )
        at = datetime.fromtimestamp(self.week_start(week).timestamp() + DECISION_OFFSET_S, UTC)
        decided = decide(at, requests)
        decided = requests.join(decided.drop("seller_id", strict=False), on="buyer_id", how="left")
        if decided.height != len(rows) or decided["exposure_id"].null_count():
            raise ValueError("decide must answer every request exactly once (by buyer_id)")
        offer = np.array(
            [-1 if o is None else self._offer_code[o] for o in decided["offer_id"]], dtype=np.int64
        )
        treated = offer >= 0
        wrong = treated & (self.offers.seller[np.maximum(offer, 0)] != seller)
        if wrong.any():
            raise ValueError("decide gave an offer of another seller than the one asked")
        stand_in = np.where(treated, offer, self._default_offer(week, seller))
        truth = expected_outcomes(
            buyers,
            self.catalog,
            self.offers,
            rows,
            buyers.stage[rows],
            stand_in,
            self.config.send_cost,
            self.config.effects,
        )
        treatment.offer[rows] = offer
        treatment.seller[rows] = seller
        treatment.exposed[rows] = True
        treatment.effect[rows] = np.where(treated, truth.effect, 0.0)
        treatment.relevance[rows] = truth.relevance
        served = decided.with_columns(
            pl.lit(week).alias("week"),
            pl.Series("p_purchase_control", truth.p_control),
            pl.Series("p_purchase_treated", np.where(treated, truth.p_treated, truth.p_control)),
            pl.Series(
                "incremental_profit",
                np.where(treated, truth.profit_treated - truth.profit_control, 0.0),
            ),
        )
        self.served.append(served)
        self._finish(treatment, week)
        return served

    def true_value(self, choices: pl.DataFrame) -> np.ndarray:
        """Exact expected incremental profit of each (buyer_id, offer_id) choice this
        week (offer null: 0), for buyers in their current stage. Simulates nothing."""
        offer_ids = choices["offer_id"].to_list()
        given = np.array([o is not None for o in offer_ids])
        out = np.zeros(len(offer_ids))
        if not given.any():
            return out
        rows = np.array([self._buyer_row[b] for b in choices["buyer_id"]])[given]
        codes = np.array([self._offer_code[o] for o in offer_ids if o is not None])
        truth = expected_outcomes(
            self.buyers,
            self.catalog,
            self.offers,
            rows,
            self.buyers.stage[rows],
            codes,
            self.config.send_cost,
            self.config.effects,
        )
        out[given] = truth.profit_treated - truth.profit_control
        return out

    def terms(self) -> SellerTerms:
        """Each seller's true gross margin and the send cost (what a seller would
        configure)."""
        return SellerTerms.from_frame(sellers_truth_frame(self.catalog, self.config.send_cost))

    def write(self, out: str | Path) -> Path:
        """The contract dataset of the weeks simulated so far (served decisions are the
        caller's decision log's; their redemptions name its decision ids)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        exposures, truth = exposures_frames(self.log)
        redemptions = redemptions_frame(self.log)
        if self.served:
            served = pl.concat(self.served, how="diagonal_relaxed")
            own = served.select(
                pl.col("buyer_id"),
                pl.col("offer_id"),
                pl.col("exposure_id").alias("_decision"),
                pl.col("week").cast(pl.Int64),
            )
            week_of = (
                (pl.col("ts") - pl.lit(self.config.start)).dt.total_seconds() // WEEK_S
            ).cast(pl.Int64)
            redemptions = (
                redemptions.with_columns(week_of.alias("week"))
                .join(own, on=["buyer_id", "offer_id", "week"], how="left")
                .with_columns(pl.coalesce("_decision", "exposure_id").alias("exposure_id"))
                .drop("_decision", "week")
            )
        frames = {
            "items": items_frame(self.catalog),
            "offers": offers_frame(self.config, self.offers),
            "offer_items": offer_items_frame(self.catalog, self.offers),
            "buyers": self._buyers_frame,
            "events": events_frame(self.log),
            "exposures": exposures,
            "redemptions": redemptions,
            f"{TRUTH_DIR}/exposures": truth,
            f"{TRUTH_DIR}/sellers": sellers_truth_frame(self.catalog, self.config.send_cost),
        }
        for name, frame in frames.items():
            path = out / f"{name}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.write_parquet(path)
        return out

    def _next_week(self) -> int:
        if self.week >= self.config.weeks:
            raise ValueError(f"the simulation has run all {self.config.weeks} configured weeks")
        week = self.week
        self.week += 1
        return week

    def _default_offer(self, week: int, seller: np.ndarray) -> np.ndarray:
        """The seller's slot-0 offer of the week's wave: the truth's stand-in for nothing
        (its effect is not applied; only its baseline figures are used)."""
        return self.offers.for_campaign(self.config.waves.index(week))[seller, 0]

    def _finish(self, treatment: Treatment, week: int) -> None:
        end_week(
            self.config,
            self.catalog,
            self.offers,
            self.buyers,
            treatment,
            week,
            self.rng,
            self.log,
        )
