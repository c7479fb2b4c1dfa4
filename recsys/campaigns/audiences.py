"""Audiences a seller can run a campaign for: groups of buyers a person can name.

A campaign is an audience x an offer, so the audience must mean something to the
seller ("lapsing buyers", "buyers whose favourite category is shoes") and every buyer
must be in exactly one audience of a kind, so that campaigns of one plan never overlap:

- ``journey_stage``: the buyer's stage in the purchase journey (the journey model's
  prediction, as the ranker's candidates carry it); buyers with no stage form one
  audience of their own.
- ``taste``: the category the buyer bought most (ties: the smallest name, so the answer
  is stable). Categories with fewer than ``min_size`` of the seller's buyers are pooled
  into "other categories", since a campaign for a handful of buyers is noise.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

AudienceKind = Literal["journey_stage", "taste"]
AUDIENCE_KINDS: tuple[AudienceKind, ...] = ("journey_stage", "taste")

NO_STAGE = "no journey stage yet"
NO_CATEGORY = "no purchases with a category"
OTHER_CATEGORIES = "other categories"


def stage_audiences(buyers: pl.DataFrame) -> pl.DataFrame:
    """(buyer_id, audience) from a frame with ``buyer_id`` and ``journey_stage``."""
    _require(buyers, ("buyer_id", "journey_stage"), "stage_audiences")
    stage = pl.col("journey_stage").cast(pl.String)
    label = (
        pl.when(stage.is_null()).then(pl.lit(NO_STAGE)).otherwise(stage.str.replace_all("_", " "))
    )
    return buyers.select("buyer_id", label.alias("audience")).unique("buyer_id", keep="first")


def taste_audiences(
    buyers: pl.Series, category_shares: pl.DataFrame | None, min_size: int
) -> pl.DataFrame:
    """(buyer_id, audience): each buyer's favourite category, small ones pooled.

    ``category_shares`` has ``buyer_id``, a category column (``category`` or the feature
    store's ``scope_category``) and its share (``share`` or ``scope_category_share``).
    """
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1 (got {min_size})")
    ids = buyers.unique().to_frame("buyer_id")
    if category_shares is None or category_shares.height == 0:
        return ids.with_columns(pl.lit(NO_CATEGORY).alias("audience"))
    shares = _normalized_shares(category_shares)
    favourite = (
        shares.join(ids, on="buyer_id", how="semi")
        .sort(["buyer_id", "share", "category"], descending=[False, True, False])
        .group_by("buyer_id", maintain_order=True)
        .first()
    )
    sized = favourite.with_columns(pl.len().over("category").alias("_size"))
    label = (
        pl.when(pl.col("_size") >= min_size)
        .then(pl.col("category"))
        .otherwise(pl.lit(OTHER_CATEGORIES))
    )
    named = sized.select("buyer_id", label.alias("audience"))
    return ids.join(named, on="buyer_id", how="left").with_columns(
        pl.col("audience").fill_null(NO_CATEGORY)
    )


def _normalized_shares(frame: pl.DataFrame) -> pl.DataFrame:
    category = "category" if "category" in frame.columns else "scope_category"
    share = "share" if "share" in frame.columns else "scope_category_share"
    _require(frame, ("buyer_id", category, share), "taste_audiences")
    return frame.select(
        "buyer_id",
        pl.col(category).cast(pl.String).alias("category"),
        pl.col(share).cast(pl.Float64).alias("share"),
    ).filter(pl.col("category").is_not_null())


def _require(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: the frame lacks column(s) {missing}; it has {frame.columns}")
