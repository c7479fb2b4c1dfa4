"""Tiny contract datasets with a known answer for policy learning.

One seller, buyers in two segments (``buyers.segment``: A or B), a short purchase history,
three randomized waves (control, a reminder "X", or 5-off "Y", a third each, propensity
1/3 logged) and the purchases that followed, drawn from known probabilities: the base
weekly rate, plus `lift` for buyers of segment A sent X. Nothing else moves anyone. Two
offers (X9, Y9) are valid after the data ends: the decision to make.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.schema import TABLES_BY_NAME

START = datetime(2026, 1, 5, tzinfo=UTC)
WAVES = (6, 8, 10)
DECISION_WEEK = 12


def _week(w: float) -> datetime:
    return START + timedelta(weeks=w)


def write_two_segment_world(
    root: Path,
    buyers: int = 2000,
    lift: float = 0.3,
    base: float = 0.1,
    seed: int = 0,
    waves: tuple[int, ...] = WAVES,
) -> Path:
    """Write the world's tables under `root` (see the module docstring); returns `root`."""
    rng = np.random.default_rng(seed)
    ids = [f"b{i:05d}" for i in range(buyers)]
    segment = np.where(rng.random(buyers) < 0.5, "A", "B")
    items = pl.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(10)],
            "seller_id": ["s1"] * 10,
            "category": [f"c{k % 3}" for k in range(10)],
            "price": [20.0] * 10,
        }
    )
    events: list[tuple[str, str, str, datetime, str, float]] = []
    order = 0

    def buy(b: int, when: datetime) -> str:
        nonlocal order
        order += 1
        item = f"i{rng.integers(10)}"
        events.append((ids[b], item, "view", when - timedelta(minutes=5), "", float("nan")))
        events.append((ids[b], item, "purchase", when, f"o{order}", 20.0))
        return f"o{order}"

    for b in range(buyers):  # history: a view each week, a purchase at the base rate
        for w in range(waves[0]):
            events.append(
                (ids[b], f"i{rng.integers(10)}", "view", _week(w + 0.2), "", float("nan"))
            )
            if rng.random() < base:
                buy(b, _week(w + 0.5))
    offers, exposures, redemptions = [], [], []
    for w in (*waves, DECISION_WEEK):
        for name, tool, value in (("X", "reminder", None), ("Y", "amount_off", 5.0)):
            offers.append(
                {
                    "offer_id": f"{name}{w}",
                    "tool": tool,
                    "seller_id": "s1",
                    "value": value,
                    "cost": 5.0 if value else 0.0,
                    "start_ts": _week(w),
                    "end_ts": _week(w + 1),
                }
            )
    for w in waves:
        arm = rng.integers(0, 3, buyers)  # 0 control, 1 X, 2 Y
        for b in range(buyers):
            offer = (None, f"X{w}", f"Y{w}")[arm[b]]
            exposure = f"e{w}-{b}"
            exposures.append(
                {
                    "exposure_id": exposure,
                    "buyer_id": ids[b],
                    "offer_id": offer,
                    "ts": _week(w) + timedelta(hours=1),
                    "propensity": 1 / 3,
                    "seller_id": "s1",
                }
            )
            p = base + (lift if (segment[b] == "A" and arm[b] == 1) else 0.0)
            if rng.random() < p:
                when = _week(w) + timedelta(days=2)
                order_id = buy(b, when)
                if arm[b] == 2 and rng.random() < 0.5:
                    redemptions.append(
                        {
                            "buyer_id": ids[b],
                            "offer_id": offer,
                            "ts": when,
                            "exposure_id": exposure,
                            "order_id": order_id,
                            "amount": 15.0,
                        }
                    )
        for b in range(buyers):  # the week after the window
            if rng.random() < base:
                buy(b, _week(w + 1.5))
    frames = {
        "items": items,
        "buyers": pl.DataFrame({"buyer_id": ids, "segment": segment.tolist()}),
        "events": pl.DataFrame(
            events,
            schema=["buyer_id", "item_id", "event_type", "ts", "order_id", "amount"],
            orient="row",
        ).with_columns(pl.col("order_id").replace("", None), pl.col("amount").fill_nan(None)),
        "offers": pl.DataFrame(offers),
        "exposures": pl.DataFrame(exposures, schema_overrides={"offer_id": pl.String}),
        "redemptions": pl.DataFrame(redemptions),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        schema = TABLES_BY_NAME[name].schema
        cast = [pl.col(c).cast(t) for c, t in schema.items() if c in frame.columns]
        extra = [c for c in frame.columns if c not in schema]
        frame.select(*cast, *extra).write_parquet(root / f"{name}.parquet")
    return root


def segments(root: Path) -> dict[str, str]:
    """buyer_id -> segment of a written world."""
    frame = pl.read_parquet(root / "buyers.parquet")
    return dict(zip(frame["buyer_id"], frame["segment"], strict=True))
