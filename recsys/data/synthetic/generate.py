"""Drive the simulation chunk by chunk and write the dataset and its ground truth."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from recsys.data.schema import EVENT_TYPES, TABLES_BY_NAME
from recsys.data.synthetic.campaigns import KIND_NAMES, Offers, build_offers
from recsys.data.synthetic.catalog import Catalog, build_catalog
from recsys.data.synthetic.params import ACQUISITION, STAGES, TOOLS, SyntheticConfig
from recsys.data.synthetic.population import Buyers, make_buyers
from recsys.data.synthetic.simulate import ChunkLog, simulate_chunk
from recsys.data.synthetic.truth import expected_outcomes

TRUTH_DIR = "truth"
POLICY_NAMES = ("manual_campaign", "logging_policy_v1")
COUNTRIES = ("DE", "FR", "ES", "IT")
AGE_BANDS = ("18-29", "30-44", "45-59", "60+")
DECISION_SELLER_MIN_SHARE = 0.1


@dataclass
class GenerationReport:
    """What `generate` wrote: row counts per file and headline rates."""

    out: Path
    rows: dict[str, int] = field(default_factory=dict)
    redemptions_per_offer_exposure: float = 0.0
    seconds: float = 0.0

    def format(self) -> str:
        lines = [f"synthetic marketplace written to {self.out} in {self.seconds:.1f}s"]
        lines += [f"  {name:<22} {count:>12,d} rows" for name, count in self.rows.items()]
        lines.append(f"  redemptions per issued offer: {self.redemptions_per_offer_exposure:.2%}")
        return "\n".join(lines)


def _ids(prefix: str, codes: pl.Expr, width: int) -> pl.Expr:
    return pl.lit(prefix) + codes.cast(pl.String).str.pad_start(width, "0")


def _nullable_ids(prefix: str, codes: pl.Expr, width: int) -> pl.Expr:
    return pl.when(codes >= 0).then(_ids(prefix, codes, width)).otherwise(None)


def _ts(seconds: pl.Expr) -> pl.Expr:
    return pl.from_epoch(seconds, time_unit="s").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


BUYER_W, ITEM_W, OFFER_W, SELLER_W = 7, 6, 5, 3


def buyer_ids(codes: pl.Expr) -> pl.Expr:
    return _ids("b", codes, BUYER_W)


def offer_ids(codes: pl.Expr) -> pl.Expr:
    return _nullable_ids("of", codes, OFFER_W)


def seller_ids(codes: pl.Expr) -> pl.Expr:
    return _nullable_ids("s", codes, SELLER_W)


def exposure_ids(week: pl.Expr, buyer: pl.Expr) -> pl.Expr:
    return (
        pl.lit("x")
        + week.cast(pl.String).str.pad_start(2, "0")
        + "-"
        + buyer.cast(pl.String).str.pad_start(BUYER_W, "0")
    )


def _conform(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """Cast to the contract dtypes and order (extra columns follow)."""
    schema = TABLES_BY_NAME[table].schema
    cast = [pl.col(c).cast(t) for c, t in schema.items() if c in frame.columns]
    extra = [c for c in frame.columns if c not in schema]
    return frame.select(*cast, *extra)


def items_frame(catalog: Catalog) -> pl.DataFrame:
    return _conform(
        pl.DataFrame(
            {
                "code": np.arange(catalog.n_items),
                "seller": catalog.seller,
                "category": catalog.category,
                "price": catalog.price,
                "style": catalog.style,
            }
        ).select(
            _ids("i", pl.col("code"), ITEM_W).alias("item_id"),
            seller_ids(pl.col("seller")).alias("seller_id"),
            _ids("c", pl.col("category"), 2).alias("category"),
            pl.col("price"),
            pl.col("style")
            .replace_strict([0, 1, 2], ["budget", "standard", "premium"])
            .alias("style"),
        ),
        "items",
    )


def offers_frame(config: SyntheticConfig, offers: Offers) -> pl.DataFrame:
    start_s = int(config.start.timestamp())
    week_s = 7 * 86400
    return _conform(
        pl.DataFrame(
            {
                "code": np.arange(len(offers)),
                "tool": offers.tool,
                "seller": offers.seller,
                "campaign": offers.campaign,
                "value": offers.value,
                "cost": offers.cost,
                "week": offers.week,
                "kind": offers.kind,
            }
        ).select(
            offer_ids(pl.col("code")).alias("offer_id"),
            pl.col("tool").replace_strict(list(range(len(TOOLS))), list(TOOLS)).alias("tool"),
            seller_ids(pl.col("seller")).alias("seller_id"),
            _ids("camp", pl.col("campaign"), 3).alias("campaign_id"),
            pl.col("value").fill_nan(None),
            pl.lit(None, pl.Float64).alias("min_spend"),
            pl.col("cost").fill_nan(None),
            _ts(start_s + pl.col("week") * week_s).alias("start_ts"),
            _ts(start_s + (pl.col("week") + 1) * week_s).alias("end_ts"),
            pl.col("kind").replace_strict([0, 1, 2], list(KIND_NAMES)).alias("synthetic_kind"),
        ),
        "offers",
    )


def offer_items_frame(catalog: Catalog, offers: Offers) -> pl.DataFrame:
    scoped = np.flatnonzero(offers.scope_category >= 0)
    parts = [(o, offers.scope_items(catalog, int(o))) for o in scoped]
    empty = np.empty(0, dtype=np.int64)
    offer = np.concatenate(
        [np.full(len(items), o, dtype=np.int64) for o, items in parts] or [empty]
    )
    item = np.concatenate([items for _, items in parts] or [empty])
    return _conform(
        pl.DataFrame({"offer": offer.astype(np.int64), "item": item.astype(np.int64)}).select(
            offer_ids(pl.col("offer")).alias("offer_id"),
            _ids("i", pl.col("item"), ITEM_W).alias("item_id"),
        ),
        "offer_items",
    )


def events_frame(log: ChunkLog) -> pl.DataFrame:
    cols = log.events.concat(("buyer", "item", "etype", "ts", "session", "order", "qty", "amount"))
    return _conform(
        pl.DataFrame(cols)
        .sort("buyer", "ts", "etype")
        .select(
            buyer_ids(pl.col("buyer")).alias("buyer_id"),
            _nullable_ids("i", pl.col("item"), ITEM_W).alias("item_id"),
            pl.col("etype")
            .replace_strict(list(range(len(EVENT_TYPES))), list(EVENT_TYPES))
            .alias("event_type"),
            _ts(pl.col("ts")).alias("ts"),
            (pl.lit("ss") + pl.col("session").cast(pl.String)).alias("session_id"),
            pl.when(pl.col("order") >= 0)
            .then(pl.lit("or") + pl.col("order").cast(pl.String))
            .alias("order_id"),
            pl.when(pl.col("qty") > 0).then(pl.col("qty")).alias("quantity"),
            pl.col("amount").fill_nan(None),
        ),
        "events",
    )


def buyers_frame(config: SyntheticConfig, buyers: Buyers, rng: np.random.Generator) -> pl.DataFrame:
    start_s = int(config.start.timestamp())
    noisy = buyers.price_sensitivity + rng.normal(0, 0.15, size=len(buyers))
    age = np.digitize(noisy, [0.35, 0.5, 0.65])  # price-sensitive buyers skew young
    return _conform(
        pl.DataFrame(
            {
                "code": buyers.code,
                "join": buyers.join_week,
                "offset": buyers.join_offset_s,
                "country": buyers.country,
                "age": 3 - age,
                "acquisition": buyers.acquisition,
            }
        ).select(
            buyer_ids(pl.col("code")).alias("buyer_id"),
            _ts(start_s + pl.col("join") * 7 * 86400 + pl.col("offset")).alias("first_seen"),
            pl.col("country").replace_strict(list(range(4)), list(COUNTRIES)).alias("country"),
            pl.col("age").replace_strict(list(range(4)), list(AGE_BANDS)).alias("age_band"),
            pl.col("acquisition")
            .replace_strict(list(range(len(ACQUISITION))), list(ACQUISITION))
            .alias("acquisition"),
        ),
        "buyers",
    )


def exposures_frames(log: ChunkLog) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The contract's exposures and the matching truth rows."""
    names = (
        "buyer",
        "offer",
        "week",
        "ts",
        "propensity",
        "policy",
        "stage",
        "seller",
        "p_control",
        "p_treated",
        "p_redeem",
        "profit_control",
        "incremental_profit",
    )
    raw = pl.DataFrame(log.exposures.concat(names)).with_columns(
        exposure_ids(pl.col("week"), pl.col("buyer")).alias("exposure_id"),
        buyer_ids(pl.col("buyer")).alias("buyer_id"),
        offer_ids(pl.col("offer")).alias("offer_id"),
    )
    exposures = _conform(
        raw.select(
            "exposure_id",
            "buyer_id",
            "offer_id",
            _ts(pl.col("ts")).alias("ts"),
            pl.col("propensity").fill_nan(None),
            pl.col("policy").replace_strict([0, 1], list(POLICY_NAMES)).alias("policy"),
            seller_ids(pl.col("seller")).alias("seller_id"),
        ),
        "exposures",
    )
    truth = raw.select(
        "exposure_id",
        "buyer_id",
        "offer_id",
        pl.col("stage").replace_strict(list(range(len(STAGES))), list(STAGES)).alias("stage"),
        seller_ids(pl.col("seller")).alias("seller_id"),
        pl.col("p_control").alias("p_purchase_control"),
        pl.col("p_treated").alias("p_purchase_treated"),
        "p_redeem",
        "profit_control",
        "incremental_profit",
    )
    return exposures, truth


def exposure_options_frame(log: ChunkLog) -> pl.DataFrame:
    """Truth of every option at every logged exposure (see `simulate._log_options`)."""
    names = (
        "buyer",
        "week",
        "offer",
        "p_control",
        "p_treated",
        "p_redeem",
        "profit_control",
        "profit_treated",
    )
    return pl.DataFrame(log.options.concat(names)).select(
        exposure_ids(pl.col("week"), pl.col("buyer")).alias("exposure_id"),
        offer_ids(pl.col("offer")).alias("offer_id"),
        pl.col("p_control").alias("p_purchase_control"),
        pl.col("p_treated").alias("p_purchase_treated"),
        "p_redeem",
        "profit_control",
        "profit_treated",
        (pl.col("profit_treated") - pl.col("profit_control")).alias("incremental_profit"),
    )


def sellers_truth_frame(catalog: Catalog, send_cost: float) -> pl.DataFrame:
    """Each seller's gross margin and cost of issuing one offer (sellers know theirs; the
    engine takes them as config: `recsys.data.seller_terms`)."""
    return pl.DataFrame(
        {"seller": np.arange(catalog.n_sellers), "margin": catalog.seller_margin}
    ).select(
        seller_ids(pl.col("seller")).alias("seller_id"),
        "margin",
        pl.lit(send_cost, pl.Float64).alias("send_cost"),
    )


def redemptions_frame(log: ChunkLog) -> pl.DataFrame:
    names = ("buyer", "offer", "week", "ts", "order", "amount")
    return _conform(
        pl.DataFrame(log.redemptions.concat(names)).select(
            buyer_ids(pl.col("buyer")).alias("buyer_id"),
            offer_ids(pl.col("offer")).alias("offer_id"),
            _ts(pl.col("ts")).alias("ts"),
            exposure_ids(pl.col("week"), pl.col("buyer")).alias("exposure_id"),
            (pl.lit("or") + pl.col("order").cast(pl.String)).alias("order_id"),
            pl.col("amount"),
        ),
        "redemptions",
    )


def decision_truth_frame(
    config: SyntheticConfig, catalog: Catalog, offers: Offers, buyers: Buyers
) -> pl.DataFrame:
    """True outcomes of every decision-time offer for each buyer and their sellers."""
    decision = offers.for_campaign(len(config.waves))  # (S, slots)
    top = buyers.share.argmax(axis=1)
    keep = buyers.share >= DECISION_SELLER_MIN_SHARE
    keep[np.arange(len(buyers)), top] = True
    rows, sellers = np.nonzero(keep & (buyers.stage >= 0)[:, None])
    n_slots = decision.shape[1]
    rows = np.repeat(rows, n_slots)
    offer = decision[np.repeat(sellers, n_slots), np.tile(np.arange(n_slots), len(sellers))]
    stage = buyers.stage[rows]
    truth = expected_outcomes(
        buyers, catalog, offers, rows, stage, offer, config.send_cost, config.effects
    )
    return pl.DataFrame(
        {
            "buyer": buyers.code[rows],
            "offer": offer,
            "seller": offers.seller[offer],
            "tool": offers.tool[offer],
            "stage": stage,
            "p_control": truth.p_control,
            "p_treated": truth.p_treated,
            "p_redeem": truth.p_redeem,
            "order_value": truth.order_value,
            "profit_control": truth.profit_control,
            "profit_treated": truth.profit_treated,
        }
    ).select(
        buyer_ids(pl.col("buyer")).alias("buyer_id"),
        offer_ids(pl.col("offer")).alias("offer_id"),
        seller_ids(pl.col("seller")).alias("seller_id"),
        pl.col("tool").replace_strict(list(range(len(TOOLS))), list(TOOLS)).alias("tool"),
        pl.col("stage").replace_strict(list(range(len(STAGES))), list(STAGES)).alias("stage"),
        pl.col("p_control").alias("p_purchase_control"),
        pl.col("p_treated").alias("p_purchase_treated"),
        "p_redeem",
        pl.col("order_value").alias("expected_order_value"),
        "profit_control",
        "profit_treated",
        (pl.col("profit_treated") - pl.col("profit_control")).alias("incremental_profit"),
    )


def buyer_truth_frame(buyers: Buyers) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "buyer": buyers.code,
            "stage": buyers.stage,
            "ps": buyers.price_sensitivity,
            "activity": buyers.activity,
            "habit": buyers.habit,
            "home": buyers.share.argmax(axis=1),
            "acquisition": buyers.acquisition,
        }
    ).select(
        buyer_ids(pl.col("buyer")).alias("buyer_id"),
        pl.col("stage").replace_strict(list(range(len(STAGES))), list(STAGES)).alias("stage"),
        pl.col("ps").alias("price_sensitivity"),
        "activity",
        "habit",
        seller_ids(pl.col("home")).alias("home_seller_id"),
        pl.col("acquisition")
        .replace_strict(list(range(len(ACQUISITION))), list(ACQUISITION))
        .alias("acquisition"),
    )


class _ChunkedWriter:
    """One Parquet file per table, appended one row group per chunk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.rows: dict[str, int] = {}

    def write(self, name: str, frame: pl.DataFrame) -> None:
        table = frame.to_arrow()
        if name not in self.writers:
            path = self.root / f"{name}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writers[name] = pq.ParquetWriter(path, table.schema, compression="zstd")
            self.rows[name] = 0
        self.writers[name].write_table(table)
        self.rows[name] += frame.height

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def generate(
    config: SyntheticConfig,
    out: str | Path,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> GenerationReport:
    """Simulate the marketplace and write it to `out` (created; must be empty or absent).

    Files are written to a temporary directory beside `out` and moved into place at
    the end, so a failure never leaves a half-written dataset behind.
    """
    began = time.perf_counter()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose a new directory or pass overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        report = _write_all(config, tmp, progress)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    report.out = out
    report.seconds = time.perf_counter() - began
    return report


def _write_all(
    config: SyntheticConfig, root: Path, progress: Callable[[int, int], None] | None
) -> GenerationReport:
    catalog = build_catalog(config)
    offers = build_offers(config, catalog)
    writer = _ChunkedWriter(root)
    try:
        writer.write("items", items_frame(catalog))
        writer.write("offers", offers_frame(config, offers))
        writer.write("offer_items", offer_items_frame(catalog, offers))
        writer.write(f"{TRUTH_DIR}/sellers", sellers_truth_frame(catalog, config.send_cost))
        n_chunks = -(-config.buyers // config.chunk_buyers)
        offer_exposures = redemptions = 0
        for chunk in range(n_chunks):
            first = chunk * config.chunk_buyers
            n = min(config.chunk_buyers, config.buyers - first)
            rng = np.random.default_rng([config.seed, 3, chunk])
            buyers = make_buyers(config, catalog, first, n, rng)
            writer.write("buyers", buyers_frame(config, buyers, rng))
            log = simulate_chunk(config, catalog, offers, buyers, rng)
            writer.write("events", events_frame(log))
            exposures, exposure_truth = exposures_frames(log)
            writer.write("exposures", exposures)
            red = redemptions_frame(log)
            writer.write("redemptions", red)
            writer.write(f"{TRUTH_DIR}/exposures", exposure_truth)
            writer.write(f"{TRUTH_DIR}/exposure_options", exposure_options_frame(log))
            writer.write(
                f"{TRUTH_DIR}/offers", decision_truth_frame(config, catalog, offers, buyers)
            )
            writer.write(f"{TRUTH_DIR}/buyers", buyer_truth_frame(buyers))
            offer_exposures += exposures.filter(pl.col("offer_id").is_not_null()).height
            redemptions += red.height
            if progress is not None:
                progress(chunk + 1, n_chunks)
    finally:
        writer.close()
    return GenerationReport(
        out=root,
        rows=dict(writer.rows),
        redemptions_per_offer_exposure=redemptions / max(offer_exposures, 1),
    )
