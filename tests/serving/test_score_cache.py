"""The score cache: computed once per (buyer, scope, offers), reused, bounded, equal."""

from __future__ import annotations

import polars as pl
import pytest

from serving.score_cache import ScoreCache


class CountingModel:
    """A model whose score of (buyer, offer) is len(buyer) + offer number; counts pairs."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, pairs: pl.DataFrame) -> pl.DataFrame:
        self.calls.append(pairs.height)
        return pairs.with_columns(
            (pl.col("buyer_id").str.len_chars() + pl.col("offer_id").str.slice(1).cast(pl.Int64))
            .cast(pl.Float64)
            .alias("score")
        )


OFFERS = {None: ("o1", "o2", "o3"), "s1": ("o1", "o2")}


def test_misses_are_scored_together_and_hits_not_again() -> None:
    model = CountingModel()
    cache = ScoreCache(model, max_rows=100)
    first = cache.candidates([("b1", None), ("bb2", "s1")], OFFERS)
    assert model.calls == [5]  # one call: 3 offers for b1, 2 for bb2
    assert first.filter(pl.col("buyer_id") == "bb2")["score"].to_list() == [4.0, 5.0]
    assert first.filter(pl.col("buyer_id") == "b1")["score"].to_list() == [3.0, 4.0, 5.0]

    again = cache.candidates([("bb2", "s1"), ("b1", None), ("b3", "s1")], OFFERS)
    assert model.calls == [5, 2]  # only b3 was scored
    assert (cache.hits, cache.misses) == (2, 3)
    assert again["buyer_id"].to_list() == ["bb2", "bb2", "b1", "b1", "b1", "b3", "b3"]


def test_a_buyer_under_two_scopes_gets_each_scope_offers() -> None:
    model = CountingModel()
    cache = ScoreCache(model, max_rows=100)
    out = cache.candidates([("b1", None), ("b1", "s1")], OFFERS)
    assert model.calls == [3]  # the union of the two scopes' pairs, once
    assert out["offer_id"].to_list() == ["o1", "o2", "o3", "o1", "o2"]


def test_new_valid_offers_make_a_new_entry() -> None:
    model = CountingModel()
    cache = ScoreCache(model, max_rows=100)
    cache.candidates([("b1", "s1")], OFFERS)
    out = cache.candidates([("b1", "s1")], {"s1": ("o2", "o4")})  # o1 ended, o4 started
    assert model.calls == [2, 2]
    assert out["offer_id"].to_list() == ["o2", "o4"]


def test_least_recently_used_entries_go_first_when_full() -> None:
    model = CountingModel()
    cache = ScoreCache(model, max_rows=6)
    cache.candidates([("b1", None), ("b2", None)], OFFERS)  # 6 rows: full
    cache.candidates([("b1", None)], OFFERS)  # b1 is now the most recent
    cache.candidates([("b3", None)], OFFERS)  # evicts b2
    assert cache.rows == 6
    calls = len(model.calls)
    cache.candidates([("b1", None)], OFFERS)
    assert len(model.calls) == calls  # b1 kept
    cache.candidates([("b2", None)], OFFERS)
    assert len(model.calls) == calls + 1  # b2 was evicted


def test_size_zero_scores_every_call() -> None:
    model = CountingModel()
    cache = ScoreCache(model, max_rows=0)
    cache.candidates([("b1", None)], OFFERS)
    cache.candidates([("b1", None)], OFFERS)
    assert model.calls == [3, 3] and cache.rows == 0
    with pytest.raises(ValueError, match="max_rows"):
        ScoreCache(model, max_rows=-1)


def test_warm_scores_ahead_and_scoped_requests_are_cut_from_it() -> None:
    model = CountingModel()
    cache = ScoreCache(model, max_rows=100)
    assert cache.warm(["b1", "bb2"], OFFERS[None], chunk_rows=3) == 2
    assert model.calls == [3, 3]  # one chunk of 3 rows per buyer
    out = cache.candidates([("bb2", "s1"), ("b1", None)], OFFERS)
    assert model.calls == [3, 3]  # nothing scored: cut from / found in the warm entries
    assert out.filter(pl.col("buyer_id") == "bb2")["offer_id"].to_list() == ["o1", "o2"]
    assert out.filter(pl.col("buyer_id") == "bb2")["score"].to_list() == [4.0, 5.0]


def test_warm_stops_when_the_cache_is_full() -> None:
    model = CountingModel()
    cache = ScoreCache(model, max_rows=7)
    assert cache.warm(["b1", "b2", "b3"], OFFERS[None]) == 2  # 3 rows each: room for 2
    assert cache.rows == 6
