"""The served marketplace the serving, floor and score benchmarks share.

`prepare_market` synthesizes a marketplace, fits the ranker, saves it to a directory (for
the bare app and `recsys score`) and registers it as `promo-ranker@champion` in a
throwaway SQLite MLflow store (for the Ray Serve app, which follows the alias). The
synthetic offers have ended by the real clock, so every consumer decides as of an hour
after the last campaign started (`as_of`): every request then ranks real offers.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

KEY = "bench-admin-key-000000000000000000"
"""The admin API key every benchmark client presents (RECSYS_API_KEYS="KEY:*")."""
CAP_WINDOW_DAYS = 1e-6
"""Frequency-cap window of the benchmarks' serving policy: 0.09 s instead of the shipped
7 days. A benchmark ranks the same buyers again and again within minutes; with the
shipped window they are capped after a request or two, and every later request takes
the slower no-eligible-offer path, so an app's cost per request would grow with the
requests it has already served (and the faster app would be penalized more). The cap
code still runs on every request; `benchmarks.floor` times capped buyers on their own."""
UNKNOWN_BUYERS = ("unknown-1", "unknown-2")
MARKER = ".served-market"
"""Buyers the model has never seen, mixed into the request stream (cold start)."""


@dataclass(frozen=True)
class ServedMarket:
    """Where a prepared marketplace and its model are, and how it was made."""

    root: Path
    data: Path
    """The synthetic dataset (contract tables, and the truth under `truth/`)."""
    model: Path
    """The fitted ranker, saved (`PromoRanker.load`)."""
    tracking_uri: str
    """SQLite MLflow store whose `promo-ranker@champion` is the same ranker."""
    as_of: str
    """Decision time, ISO: an hour after the last campaign's start."""
    buyers_file: Path
    """Known buyer ids, one a line, then `UNKNOWN_BUYERS`."""
    pairs: Path
    """Parquet of (buyer_id, offer_id): every offer the truth made, the score target list."""
    buyers: int
    sellers: tuple[str, ...]
    seed: int
    synth_s: float
    fit_s: float
    policy: dict[str, Any] = field(default_factory=dict)
    """The model's own policy with the benchmarks' cap window (`CAP_WINDOW_DAYS`)."""

    def serve_config(self, **extra: Any) -> dict[str, Any]:
        """The serve config every benchmark app uses (`extra` added): the registered model,
        decisions at `as_of`, the model's policy with the benchmarks' cap window."""
        return {
            "tracking_uri": self.tracking_uri,
            "as_of": self.as_of,
            "policy": self.policy,
            **extra,
        }

    def known_buyers(self) -> list[str]:
        names = self.buyers_file.read_text().split()
        return [b for b in names if b not in UNKNOWN_BUYERS]

    def as_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def prepare_market(buyers: int, root: Path, seed: int = 1) -> ServedMarket:
    """Synthesize `buyers` buyers under `root`, fit, save and register the ranker.

    `root` is emptied first if an earlier `prepare_market` made it.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    import polars as pl
    from mlflow.tracking import MlflowClient

    from recsys.data import load_dataset
    from recsys.data.seller_terms import known_seller_terms
    from recsys.data.synthetic import SyntheticConfig, generate
    from recsys.models.ranker import PromoRanker, RankerConfig
    from training.registry import CHAMPION, register
    from training.tracking import log_ranker_model

    root = root.resolve()  # Ray workers and subprocesses may start elsewhere
    _fresh(root)
    data = root / "market"
    began = time.perf_counter()
    generate(SyntheticConfig(buyers=buyers, seed=seed), data, overwrite=True)
    synth_s = time.perf_counter() - began
    terms = known_seller_terms(data)
    dataset = load_dataset(data)
    began = time.perf_counter()
    ranker = PromoRanker(RankerConfig().with_seller_terms(terms)).fit(dataset)
    fit_s = time.perf_counter() - began
    ranker.save(root / "model")

    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("serving-bench")
    client = MlflowClient(tracking_uri=uri)
    with mlflow.start_run() as run:
        model_uri = log_ranker_model(ranker)
    version = register(client, "promo-ranker", model_uri, run.info.run_id)
    client.set_registered_model_alias("promo-ranker", CHAMPION, version)

    if dataset.offers is None:
        raise RuntimeError(f"{data} has no offers table: the serving benchmark ranks offers")
    last_start = dataset.offers["start_ts"].max()
    if not isinstance(last_start, datetime):
        raise RuntimeError(f"{data}/offers.parquet: start_ts holds no timestamps")
    known = dataset.events["buyer_id"].unique().sort().to_list()
    buyers_file = root / "buyers.txt"
    buyers_file.write_text("\n".join([*known, *UNKNOWN_BUYERS]) + "\n")
    pairs = root / "pairs.parquet"
    truth_offers = pl.read_parquet(data / "truth" / "offers.parquet")
    truth_offers.select("buyer_id", "offer_id").write_parquet(pairs)
    market = ServedMarket(
        root=root,
        data=data,
        model=root / "model",
        tracking_uri=uri,
        as_of=(last_start + timedelta(hours=1)).isoformat(),
        buyers_file=buyers_file,
        pairs=pairs,
        buyers=buyers,
        sellers=tuple(sorted(terms.margins)),
        seed=seed,
        synth_s=synth_s,
        fit_s=fit_s,
        policy=ranker.config.policy.model_copy(
            update={"cap_window_days": CAP_WINDOW_DAYS}
        ).to_dict(),
    )
    (root / "market.json").write_text(json.dumps(market.as_dict(), indent=1))
    return market


def _fresh(root: Path) -> None:
    """Make `root` an empty directory, removing an earlier market there (never anything
    else: a non-empty directory without the marker is an error)."""
    marker = root / MARKER
    if root.exists() and any(root.iterdir()):
        if not marker.exists() and not (root / "market.json").exists():
            raise ValueError(
                f"{root} is not empty and holds no prepared market ({MARKER}): choose "
                "another directory, or empty it"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by benchmarks.market.prepare_market; replaced on the next run\n")


def load_market(root: Path) -> ServedMarket:
    """A market `prepare_market` made earlier under `root` (its `market.json`)."""
    raw = json.loads((root / "market.json").read_text())
    paths = {"root", "data", "model", "buyers_file", "pairs"}
    raw = {k: Path(v) if k in paths else v for k, v in raw.items()}
    raw["sellers"] = tuple(raw["sellers"])
    return ServedMarket(**raw)
