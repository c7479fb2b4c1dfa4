"""The promotion ranker: every model of the engine in one fitted, saveable bundle.

`PromoRanker.fit(dataset)` learns, from one contract dataset,

1. matrix factorization of buyer x item interactions (`MatrixFactorization`),
2. the purchase journey: stages and P(purchase within the horizon) (`JourneyModel`),
3. response of offers, P(redeem | issued) (`ResponseModel`), with journey, RFM and MF
   affinity features,
4. the value of each offer to each buyer, learned from randomized decisions by the
   profit they realized (`recsys.learning.PolicyLearner`): expected incremental profit,
   its standard error, the seller's default and the conservative decision score,

and keeps the feature tables as of the data's end, so `score(pairs)` answers a target
list with no dataset at hand (or recomputes features from a newer dataset).
`expected_value` is the expected incremental profit of issuing the offer; `score` is the
number the policy decides by (`recsys.policy.value.decision_scores`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import Field

from recsys.config import StrictConfig
from recsys.data.dataset import Dataset
from recsys.data.schema import SCORES_SCHEMA
from recsys.data.seller_terms import SellerTerms
from recsys.features.buyer import buyer_attributes, buyer_features
from recsys.features.interactions import OfferItems, build_offer_items
from recsys.features.pairs import (
    PLATFORM,
    FeatureStore,
    live_offer_ids,
    purchase_lines,
    seller_id_of_key,
)
from recsys.learning.decisions import MoneyTerms, kind_expr
from recsys.learning.learner import LearningConfig, PolicyLearner, ScoredDecisions
from recsys.models.base import Estimator
from recsys.models.journey import JourneyConfig, JourneyModel
from recsys.models.mf import MatrixFactorization, MFConfig
from recsys.models.response import ResponseConfig, ResponseModel
from recsys.policy import PolicyConfig, expected_incremental_profit, validate_candidates

FORMAT_VERSION = 2


class RankerConfig(StrictConfig):
    """Everything that shapes a fitted ranker; the training config's `model:` section."""

    mf: MFConfig = Field(default_factory=MFConfig)
    journey: JourneyConfig = Field(default_factory=JourneyConfig)
    response: ResponseConfig = Field(default_factory=ResponseConfig)
    learning: LearningConfig = Field(default_factory=LearningConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    seller_margins: dict[str, float] = Field(
        default_factory=dict,
        description="gross margin per seller_id; others use policy.margin_default",
    )
    mf_features: bool = Field(True, description="use MF affinity as a response feature")

    def with_seller_terms(self, terms: SellerTerms, *, keep_given: bool = False) -> RankerConfig:
        """This config with a marketplace's known seller margins and send cost (what a
        seller would configure; `recsys.data.seller_terms`). `keep_given`: a margin
        table or a send cost this config sets explicitly stays as it is."""
        out = self.model_copy(deep=True)
        if not (keep_given and self.seller_margins):
            out.seller_margins = dict(terms.margins)
        send_given = keep_given and "send_cost" in self.policy.model_fields_set
        if terms.send_cost is not None and not send_given:
            out.policy.send_cost = terms.send_cost
        return out


@dataclass
class FitReport:
    """What was learned and what was skipped, and why (goes into the run report)."""

    as_of: str = ""
    rows: dict[str, int] = field(default_factory=dict)
    learned: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"fitted as of {self.as_of}"]
        lines += [f"  learned: {what}" for what in self.learned]
        lines += [f"  skipped: {what}" for what in self.skipped]
        lines += [f"  note: {what}" for what in self.notes]
        return "\n".join(lines)


def data_end(dataset: Dataset) -> datetime:
    """The moment just after the dataset's last event: features "as of now"."""
    last = dataset.events["ts"].max()
    if not isinstance(last, datetime):
        raise ValueError("the dataset has no events; nothing to learn from")
    return last + timedelta(microseconds=1)


MF_EVENT_COLUMNS = ("buyer_id", "item_id", "event_type", "ts", "quantity")
"""The events columns matrix factorization reads."""


def events_before(dataset: Dataset, as_of: datetime) -> pl.LazyFrame:
    """The dataset's events strictly before `as_of`, as a lazy scan: each use reads only
    the columns it needs, and the (large) events table is never copied whole."""
    return dataset.events.lazy().filter(pl.col("ts") < as_of)


def fit_mf(config: RankerConfig, dataset: Dataset, as_of: datetime) -> MatrixFactorization:
    """The ranker's matrix factorization stage: buyer x item factors from events before as_of."""
    return MatrixFactorization(config.mf).fit(events_before(dataset, as_of), items=dataset.items)


def fit_journey(config: RankerConfig, dataset: Dataset, as_of: datetime) -> JourneyModel:
    """The ranker's journey stage: stages and P(purchase) from events before as_of."""
    return JourneyModel(config.journey).fit(
        events_before(dataset, as_of), as_of, dataset.buyers, dataset.items
    )


class PromoRanker(Estimator[RankerConfig]):
    """MF + journey + response/uplift + value model, fitted together; see module docstring."""

    config_class = RankerConfig

    def fit(self, dataset: Dataset, as_of: datetime | None = None) -> PromoRanker:
        """Learn every model `dataset` supports, with features as of `as_of` (its end)."""
        return super().fit(dataset, as_of)

    def _fit(self, dataset: Dataset, as_of: datetime | None) -> None:
        as_of = as_of or data_end(dataset)
        mf = fit_mf(self.config, dataset, as_of)
        journey = fit_journey(self.config, dataset, as_of)
        self._fit_rest(dataset, as_of, mf, journey)

    @classmethod
    def from_parts(
        cls,
        config: RankerConfig,
        dataset: Dataset,
        as_of: datetime,
        mf: MatrixFactorization,
        journey: JourneyModel,
    ) -> PromoRanker:
        """Finish a ranker from MF and journey models fitted apart (e.g. as parallel tasks
        by :func:`fit_mf` and :func:`fit_journey` with the same config, data and as_of):
        fits response and uplift and builds the feature store.

        Only events before `as_of` are read, so `dataset` may hold later ones (a held-out
        fit need not copy the events before its split); its exposures and redemptions are
        the training examples as given.
        """
        ranker = cls(config)
        ranker._fit_rest(dataset, as_of, mf, journey)
        ranker._fitted = True
        return ranker

    def _fit_rest(
        self, dataset: Dataset, as_of: datetime, mf: MatrixFactorization, journey: JourneyModel
    ) -> None:
        report = FitReport(as_of=as_of.isoformat())
        events = events_before(dataset, as_of)
        n_events = int(events.select(pl.len()).collect().item())
        report.rows = {"events": n_events, "items": dataset.items.height}
        self.mf_ = mf
        if mf.skipped_:
            report.skipped.append(f"matrix factorization: {mf.skipped_}; every buyer is cold")
        else:
            report.learned.append(
                f"matrix factorization ({self.config.mf.algorithm}, "
                f"{len(self.mf_.buyer_index_)} buyers x {len(self.mf_.item_index_)} items)"
            )
        self.journey_ = journey
        stages = f"purchase journey (time scale {self.journey_.time_scale_days_:.1f} days)"
        if journey.skipped_:
            report.learned.append(stages.replace("journey", "journey stages by rules"))
            report.skipped.append(f"P(purchase) of the journey model: {journey.skipped_}")
        else:
            report.learned.append(stages)
        report.notes.extend(journey.notes_)
        report.notes.extend(buyer_attributes(dataset.buyers)[1])
        self.response_: ResponseModel | None = None
        self.learner_: PolicyLearner | None = None
        self.offer_items_: OfferItems | None = None
        self.catalog_ = _Catalog.of(dataset)
        self.store_ = None if dataset.offers is None else self._serving_store(dataset, as_of)
        self.seller_order_value_ = _seller_order_values(self.store_)
        if dataset.offers is None or dataset.exposures is None:
            report.skipped.append(
                "response and policy learning: the dataset has no offers or exposures table; "
                "offers are scored by MF relevance and journey only"
            )
        else:
            self.offer_items_ = self._offer_items(dataset)
            self.response_ = ResponseModel(self.config.response).fit(
                dataset,
                buyer_table=lambda t, buyers: self._buyer_table(dataset, t, buyers),
                pair_extra=(
                    (lambda rows: self._mf_features_before(rows, events))
                    if self.config.mf_features
                    else None
                ),
                as_of=as_of,
            )
            support = self.response_.support_
            report.rows.update(support.rows)
            if support.response:
                report.learned.append("response P(redeem | issued)")
            report.notes.extend(support.notes)
            self.learner_ = PolicyLearner(self.config.learning).fit(
                dataset,
                as_of,
                self._describer(dataset, as_of),
                self._money_terms(),
                self.config.policy,
            )
            learned = self.learner_.support_
            report.rows.update(learned.rows)
            if learned.learned:
                report.learned.append(
                    "policy: expected incremental profit per buyer and offer, learned from "
                    "randomized decisions by realized profit"
                )
            else:
                why = next(
                    (
                        n.removeprefix("policy not learned: ")
                        for n in learned.notes
                        if n.startswith("policy not learned: ")
                    ),
                    "offers are valued by response only",
                )
                report.skipped.append(f"policy learning: {why}")
            report.notes.append(self.learner_.report())
        self.report_ = report

    def scored_decisions(
        self,
        dataset: Dataset,
        as_of: datetime | None = None,
        learning: LearningConfig | None = None,
    ) -> ScoredDecisions | None:
        """The randomized decisions before `as_of` (default: the data's end), each action
        with its cross-fitted doubly robust score, described by this ranker's features as
        policy learning sees them (`PolicyLearner.scored_decisions`) under `learning`
        (default: the ranker's own settings). For diagnostics, such as how far any policy
        could be shown to beat a blanket on this data (`benchmarks.power`); None when the
        data has no randomized decisions to score."""
        self.check_is_fitted("scored_decisions")
        as_of = as_of or data_end(dataset)
        return PolicyLearner(learning or self.config.learning).scored_decisions(
            dataset, as_of, self._describer(dataset, as_of), self._money_terms()
        )

    def _money_terms(self) -> MoneyTerms:
        """How realized profit is counted (the policy's money settings)."""
        policy = self.config.policy
        return MoneyTerms(
            margins=self.config.seller_margins,
            margin_default=policy.margin_default,
            send_cost=policy.send_cost,
            horizon_days=self.config.response.horizon_days,
            shipping_cost=policy.default_shipping_cost,
        )

    def _describer(
        self, dataset: Dataset, end: datetime
    ) -> Callable[[datetime, pl.DataFrame], pl.DataFrame]:
        """What policy learning reads about (buyer_id, offer_id, seller_key) rows as of a
        day: every feature and money column `candidates` gives, from data before the day
        (MF affinity folded in from the buyer's events before it)."""
        lines = purchase_lines(dataset, before=end)
        events = events_before(dataset, end)

        def describe(day: datetime, rows: pl.DataFrame) -> pl.DataFrame:
            buyers = rows["buyer_id"].unique()
            store = FeatureStore.build(
                dataset,
                day,
                self._buyer_table(dataset, day, buyers),
                lines=lines.filter(
                    (pl.col("ts") < day) & pl.col("buyer_id").is_in(buyers.implode())
                ),
                buyer_ids=buyers,
                offer_ids=rows["offer_id"].drop_nulls().unique(),
            )
            return self._describe(
                store,
                rows,
                lambda offers: self._mf_features_before(
                    offers.with_columns(pl.lit(day).alias("snapshot")), events
                ).drop("snapshot"),
            )

        return describe

    def _describe(
        self,
        store: FeatureStore,
        rows: pl.DataFrame,
        mf_features: Callable[[pl.DataFrame], pl.DataFrame],
        threads: int | None = None,
    ) -> pl.DataFrame:
        """Features and money columns of (buyer_id, offer_id, seller_key) rows, in order.

        A row with an offer gets its pair features; one without (offer_id null) is the
        buyer's "nothing" at `seller_key`: the buyer's and the buyer-seller features only.
        """
        if rows.height == 0:
            empty = store.pair_features(rows.drop("seller_key").head(0))
            return self._money(mf_features(empty), threads)
        indexed = rows.with_row_index("_order")
        has_offer = pl.col("offer_id").is_not_null()
        offer_rows = indexed.filter(has_offer)
        parts = []
        if offer_rows.height:
            feats = mf_features(store.pair_features(offer_rows.drop("seller_key")))
            parts.append(feats)
        nothing = indexed.filter(~has_offer)
        if nothing.height:
            parts.append(store.seller_rows(nothing))
        out = pl.concat(parts, how="diagonal_relaxed").sort("_order").drop("_order")
        return self._money(out, threads)

    def _money(self, feats: pl.DataFrame, threads: int | None = None) -> pl.DataFrame:
        """`feats` with the policy's money columns: P(redeem), margin, order value, the
        offer's terms and kind, and `journey_stage` kept for segments and reasons."""
        if "seller_key" not in feats.columns:
            feats = feats.with_columns(pl.lit(None, pl.String).alias("seller_key"))
        p_redeem = (
            self.response_.predict(feats, threads)
            if self.response_ is not None
            else np.full(feats.height, np.nan)
        )
        fallback_value = self.seller_order_value_
        columns = {
            "tool": pl.lit(None, pl.String),
            "offer_value": pl.lit(None, pl.Float64),
            "offer_cost": pl.lit(None, pl.Float64),
            "offer_min_spend": pl.lit(None, pl.Float64),
            "offer_scoped": pl.lit(None, pl.Float64),
            "bs_mean_order_value": pl.lit(None, pl.Float64),
        }
        feats = feats.with_columns(
            *[expr.alias(name) for name, expr in columns.items() if name not in feats.columns]
        )
        return feats.with_columns(
            pl.Series("p_redeem", p_redeem).fill_nan(None),
            pl.coalesce(
                "bs_mean_order_value",
                pl.col("seller_key").replace_strict(
                    fallback_value,
                    default=fallback_value.get("*", 0.0),
                    return_dtype=pl.Float64,
                ),
            ).alias("order_value"),
            pl.col("seller_key")
            .replace_strict(
                self.config.seller_margins,
                default=self.config.policy.margin_default,
                return_dtype=pl.Float64,
            )
            .alias("margin"),
            pl.col("offer_min_spend").alias("min_spend"),
            kind_expr(pl.col("tool"), pl.col("offer_scoped").fill_null(0.0) > 0),
        )

    def refreshed(self, dataset: Dataset) -> PromoRanker:
        """A copy with its feature store rebuilt from `dataset` as of the data's end.

        The models stay as fitted (shared, not copied); what the store holds -- each
        buyer's history, journey stage and P(purchase), history with each seller and with
        offers -- is brought up to the end of `dataset`, as `candidates(pairs, dataset)`
        would compute it on every call. Buyers first seen after the fit have no MF factors
        (cold start for affinity). For shipping a model fitted on older data without
        fitting it again: a fraction of a fit's cost.
        """
        self.check_is_fitted("refreshed")
        as_of = data_end(dataset)
        out = type(self)(self.config)
        out.__dict__.update(self.__dict__)
        out.catalog_ = _Catalog.of(dataset)
        if self.offer_items_ is not None and dataset.offers is not None:
            out.offer_items_ = out._offer_items(dataset)
        out.store_ = None if dataset.offers is None else self._serving_store(dataset, as_of)
        out.seller_order_value_ = _seller_order_values(out.store_)
        report = FitReport(**asdict(self.report_))
        report.notes = [
            *self.report_.notes,
            f"models fitted as of {self.report_.as_of}; features as of {as_of.isoformat()}",
        ]
        out.report_ = report
        return out

    def for_buyers(self, buyer_ids: pl.Series) -> PromoRanker:
        """A view of this ranker whose feature store holds only `buyer_ids`: it scores
        those buyers' pairs exactly as this one does, faster when they are a small part
        of a large store (scoring millions of pairs a slice of buyers at a time). Models
        and everything else are shared, not copied."""
        self.check_is_fitted("for_buyers")
        out = type(self)(self.config)
        out.__dict__.update(self.__dict__)
        if self.store_ is not None:
            out.store_ = self.store_.for_buyers(buyer_ids)
        return out

    # ------------------------------------------------------------------ features

    def _offer_items(self, dataset: Dataset | _Catalog) -> OfferItems:
        return build_offer_items(
            dataset.offer_items, self.mf_.item_index_, offers=dataset.offers, items=dataset.items
        )

    def _buyer_table(
        self, dataset: Dataset, as_of: datetime, buyer_ids: pl.Series | None = None
    ) -> pl.DataFrame:
        """Per-buyer features as of `as_of`: RFM and activity, journey stage and P(buy),
        and the buyers table's own attributes (``attr_*``).

        With `buyer_ids`, only those buyers' rows (each buyer's features depend on their
        own events alone, so the rows are the same as in the whole table).
        """
        events = dataset.events.lazy()
        if buyer_ids is not None:
            events = events.filter(pl.col("buyer_id").is_in(buyer_ids.implode()))
        feats = buyer_features(events, as_of, dataset.buyers, dataset.items)
        journey = self.journey_.predict_features(feats).select(
            "buyer_id",
            pl.col("stage").alias("journey_stage"),
            pl.col("p_purchase").alias("journey_p_purchase"),
        )
        # A buyer known only by attributes (no event yet) still has a row: a promotion
        # test on a customer list decides for exactly such buyers.
        table = feats.join(journey, on="buyer_id", how="left")
        attributes, _ = buyer_attributes(dataset.buyers, buyer_ids)
        if attributes is None:
            return table
        return table.join(attributes, on="buyer_id", how="full", coalesce=True)

    def _mf_features(
        self, pairs: pl.DataFrame, offer_items: OfferItems | None = None
    ) -> pl.DataFrame:
        """MF affinity of each pair's buyer to its offer's items (mean and best item)."""
        offer_items = offer_items or self.offer_items_
        if offer_items is None:
            return pairs
        scores = self.mf_.score_offer(pairs["buyer_id"], pairs["offer_id"], offer_items)
        return pairs.with_columns(
            pl.Series("mf_affinity_mean", scores.mean).fill_nan(None),
            pl.Series("mf_affinity_max", scores.max).fill_nan(None),
        )

    def _mf_features_before(
        self, rows: pl.DataFrame, events: pl.DataFrame | pl.LazyFrame
    ) -> pl.DataFrame:
        """MF affinity for training rows without leakage: per feature snapshot, the rows'
        buyers are folded in from their events before the snapshot (item factors fixed).
        """
        if self.offer_items_ is None:
            return rows
        events = events.lazy()
        columns = [c for c in MF_EVENT_COLUMNS if c in events.collect_schema().names()]
        parts = []
        for (snap,), group in rows.group_by("snapshot", maintain_order=True):
            assert isinstance(snap, datetime)
            buyers = group["buyer_id"].unique()
            # The snapshot's buyers' rows, only the columns MF reads, once (not per scan).
            before = (
                events.filter(pl.col("buyer_id").is_in(buyers.implode()) & (pl.col("ts") <= snap))
                .select(columns)
                .collect()
            )
            folded = self.mf_.with_buyers(self.mf_.fold_in(before, as_of=snap))
            scores = folded.score_offer(group["buyer_id"], group["offer_id"], self.offer_items_)
            parts.append(
                group.with_columns(
                    pl.Series("mf_affinity_mean", scores.mean).fill_nan(None),
                    pl.Series("mf_affinity_max", scores.max).fill_nan(None),
                )
            )
        return pl.concat(parts, how="vertical_relaxed") if parts else rows

    # ------------------------------------------------------------------ scoring

    def candidates(
        self, pairs: pl.DataFrame, dataset: Dataset | None = None, threads: int | None = None
    ) -> pl.DataFrame:
        """Model outputs for each (buyer_id, offer_id) pair, in order, in the policy's form.

        With `dataset`, features are recomputed from it as of its last event (new buyers
        and offers become known); otherwise the fitted feature store is used. Where policy
        learning learned, `expected_value`, `value_se`, `advantage_se`, `score` and
        `is_default` come from it; otherwise the policy values offers by response.
        """
        self.check_is_fitted("candidates")
        store = self._store_for(dataset)
        offer_items = self.offer_items_
        if dataset is not None and dataset.offers is not None:
            offer_items = self._offer_items(dataset)
        with_seller = pairs.select("buyer_id", "offer_id").join(
            store.offers.select("offer_id", "seller_key"),
            on="offer_id",
            how="left",
            maintain_order="left",
        )
        feats = self._describe(
            store, with_seller, lambda f: self._mf_features(f, offer_items), threads
        )
        known_buyer = (
            pl.col("journey_stage").is_not_null()
            if "journey_stage" in feats.columns
            else pl.col("bs_orders") > 0
        )
        feats = feats.with_columns(
            (~pl.col("offer_known") | ~known_buyer.fill_null(False)).alias("cold_start")
        )
        if self.learner_ is not None and self.learner_.learned:
            learned = self.learner_.values(feats).with_columns(
                pl.when(feats["offer_known"]).then(pl.col("uplift")).alias("uplift")
            )
            feats = pl.concat(
                [feats.drop(learned.columns, strict=False), learned], how="horizontal"
            )
        else:
            feats = feats.with_columns(
                pl.lit(None, pl.Float64).alias("uplift"),
                pl.col("journey_p_purchase").alias("p_purchase")
                if "journey_p_purchase" in feats.columns
                else pl.lit(None, pl.Float64).alias("p_purchase"),
            )
        offers = store.offers.select("offer_id", "start_ts", "end_ts")
        out = feats.join(offers, on="offer_id", how="left", maintain_order="left")
        learned_columns = [
            c
            for c in ("expected_value", "value_se", "advantage_se", "score", "is_default")
            if c in out.columns
        ]
        return out.select(
            "buyer_id",
            "offer_id",
            seller_id_of_key(pl.col("seller_key")).alias("seller_id"),
            pl.col("tool").fill_null("unknown"),
            pl.col("p_redeem").fill_null(0.0),
            "uplift",
            pl.col("p_purchase")
            .fill_null(
                pl.col("journey_p_purchase") if "journey_p_purchase" in out.columns else None
            )
            .fill_null(0.0),
            pl.col("order_value").fill_null(0.0),
            "margin",
            "offer_value",
            "offer_cost",
            "min_spend",
            "start_ts",
            "end_ts",
            (
                pl.col("journey_stage")
                if "journey_stage" in out.columns
                else pl.lit(None, pl.String)
            ).alias("journey_stage"),
            *learned_columns,
            "cold_start",
            pl.col("scope_purchases").alias("history"),
        ).pipe(validate_candidates)

    def score(
        self, pairs: pl.DataFrame, dataset: Dataset | None = None, threads: int | None = None
    ) -> pl.DataFrame:
        """The contract's answer to a target list: one row per pair, in input order.

        Repeated pairs are scored once and answered once per occurrence.
        """
        keys = ["buyer_id", "offer_id"]
        asked = pairs.select(keys)
        unique = asked.unique(keep="first", maintain_order=True)
        valued = expected_incremental_profit(
            self.candidates(unique, dataset, threads), self.config.policy
        )
        answers = valued.select(
            *keys, "p_redeem", "uplift", "expected_value", "score", "cold_start"
        )
        return asked.join(answers, on=keys, how="left", maintain_order="left").cast(
            SCORES_SCHEMA  # type: ignore[arg-type]
        )

    def _store_for(self, dataset: Dataset | None) -> FeatureStore:
        if dataset is None:
            if self.store_ is None:
                raise ValueError("this ranker was fitted without offers; pass a dataset")
            return self.store_
        return self._serving_store(dataset, data_end(dataset))

    def _serving_store(self, dataset: Dataset, as_of: datetime) -> FeatureStore:
        """The feature store pairs are scored from as of `as_of`.

        Its (buyer, offer) scope table holds the offers still valid at `as_of` or later,
        the only ones a decision can issue: a grocer's history of thousands of ended
        coupons, each over hundreds of items, would otherwise be most of the model's
        memory. Cost: `FeatureStore.build` over every buyer.
        """
        live = None if dataset.offers is None else live_offer_ids(dataset.offers, as_of)
        return FeatureStore.build(dataset, as_of, self._buyer_table(dataset, as_of), offer_ids=live)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write every part under directory `path` (models, feature store, report)."""
        self.check_is_fitted("save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "report": asdict(self.report_),
            "seller_order_value": self.seller_order_value_,
        }
        (path / "ranker.json").write_text(json.dumps(meta, indent=1))
        self.mf_.save(path / "mf")
        self.journey_.save(path / "journey")
        if self.response_ is not None:
            self.response_.save(path / "response")
        if self.learner_ is not None:
            self.learner_.save(path / "learning")
        if self.store_ is not None:
            self.store_.save(path / "store")
        self.catalog_.save(path / "catalog")
        return path

    @classmethod
    def load(cls, path: str | Path) -> PromoRanker:
        """Read a ranker written by `save`."""
        path = Path(path)
        meta_file = path / "ranker.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{path} is not a saved PromoRanker (no ranker.json)")
        meta = json.loads(meta_file.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: ranker format {meta.get('format_version')} is not supported "
                f"(this version reads {FORMAT_VERSION}); retrain the model"
            )
        model = cls.from_config(meta["config"])
        model.report_ = FitReport(**meta["report"])
        model.seller_order_value_ = meta["seller_order_value"]
        model.mf_ = MatrixFactorization.load(path / "mf")
        model.journey_ = JourneyModel.load(path / "journey")
        model.response_ = (
            ResponseModel.load(path / "response") if (path / "response").exists() else None
        )
        model.learner_ = (
            PolicyLearner.load(path / "learning") if (path / "learning").exists() else None
        )
        model.store_ = FeatureStore.load(path / "store") if (path / "store").exists() else None
        model.catalog_ = _Catalog.load(path / "catalog")
        model.offer_items_ = (
            model._offer_items(model.catalog_) if model.catalog_.offers is not None else None
        )
        model._fitted = True
        return model


@dataclass(frozen=True)
class _Catalog:
    """The small tables offer scopes are built from, kept so a saved ranker is standalone."""

    items: pl.DataFrame
    offers: pl.DataFrame | None
    offer_items: pl.DataFrame | None

    @classmethod
    def of(cls, dataset: Dataset) -> _Catalog:
        return cls(
            items=dataset.items.select("item_id", "seller_id"),
            offers=None
            if dataset.offers is None
            else dataset.offers.select("offer_id", "seller_id"),
            offer_items=dataset.offer_items,
        )

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for name in ("items", "offers", "offer_items"):
            table = getattr(self, name)
            if table is not None:
                table.write_parquet(path / f"{name}.parquet")

    @classmethod
    def load(cls, path: Path) -> _Catalog:
        def read(name: str) -> pl.DataFrame | None:
            file = path / f"{name}.parquet"
            return pl.read_parquet(file) if file.exists() else None

        items = read("items")
        if items is None:
            raise FileNotFoundError(f"{path}: the saved ranker has no items table")
        return cls(items=items, offers=read("offers"), offer_items=read("offer_items"))


def _seller_order_values(store: FeatureStore | None) -> dict[str, float]:
    """Mean order value per seller (fallback for buyers new to a seller); '*' = overall."""
    if store is None:
        return {"*": 0.0}
    bs = store.buyer_seller.filter(
        pl.col("bs_mean_order_value").is_not_null() & (pl.col("seller_key") != PLATFORM)
    ).sort("seller_key", "buyer_id")  # a fixed order makes the float means reproducible
    per = bs.group_by("seller_key", maintain_order=True).agg(pl.col("bs_mean_order_value").mean())
    values = dict(
        zip(per["seller_key"].to_list(), per["bs_mean_order_value"].to_list(), strict=True)
    )
    overall = bs["bs_mean_order_value"].mean()
    values["*"] = float(overall) if isinstance(overall, float) and not math.isnan(overall) else 0.0
    return values
