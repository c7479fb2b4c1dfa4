"""Known-answer and behavioural tests of `MatrixFactorization` (and the `Estimator` flow)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import threadpoolctl

from recsys.config import ConfigError, StrictConfig
from recsys.features import EventWeights, build_offer_items
from recsys.models import Estimator, MatrixFactorization, MFConfig, NotFittedError

T0 = datetime(2024, 3, 1, tzinfo=UTC)
N = 50


def make_events(pairs: list[tuple[str, str]], kinds: list[str] | None = None) -> pl.DataFrame:
    buyers, items = zip(*pairs, strict=True) if pairs else ((), ())
    return pl.DataFrame(
        {
            "buyer_id": list(buyers),
            "item_id": list(items),
            "event_type": kinds or ["view"] * len(pairs),
            "ts": [T0] * len(pairs),
        },
        schema={
            "buyer_id": pl.String,
            "item_id": pl.String,
            "event_type": pl.String,
            "ts": pl.Datetime("us", "UTC"),
        },
    )


def uid(u: int) -> str:
    return f"u{u:02d}"


def iid(i: int) -> str:
    return f"i{i:02d}"


ITEMS = [iid(i) for i in range(N)]


def checkerboard_events() -> pl.DataFrame:
    """Every even buyer viewed every even item, every odd buyer every odd item; the
    diagonal (buyer u, item u) is withheld (implicit's own known-answer matrix)."""
    pairs = [(uid(u), iid(i)) for u in range(N) for i in range(u % 2, N, 2) if i != u]
    return make_events(pairs)


def clustered_events(n_buyers: int = 160, n_items: int = 40, seed: int = 0) -> pl.DataFrame:
    """Four taste clusters with skewed item popularity inside each; views and purchases."""
    rng = np.random.default_rng(seed)
    cluster = np.arange(n_items) % 4
    popularity = 1.0 / (1.0 + np.arange(n_items) // 4)
    pairs, kinds = [], []
    for b in range(n_buyers):
        p = popularity * np.where(cluster == b % 4, 1.0, 0.03)
        for i in rng.choice(n_items, size=15, p=p / p.sum()):
            pairs.append((f"b{b:03d}", iid(int(i))))
            kinds.append("purchase" if rng.random() < 0.3 else "view")
    return make_events(pairs, kinds)


ALS = MFConfig(algorithm="als", factors=8, regularization=1.0, alpha=1.0, random_state=3)
BPR = MFConfig(algorithm="bpr", factors=8, regularization=0.01, learning_rate=0.05, iterations=100)


@pytest.fixture(scope="module")
def checker_events() -> pl.DataFrame:
    return checkerboard_events()


@pytest.fixture(scope="module")
def als_checker(checker_events: pl.DataFrame) -> MatrixFactorization:
    return MatrixFactorization(ALS).fit(checker_events)


@pytest.fixture(scope="module")
def clustered() -> tuple[pl.DataFrame, MatrixFactorization]:
    ev = clustered_events()
    return ev, MatrixFactorization(MFConfig(factors=8, alpha=2.0, iterations=30)).fit(ev)


def all_scores(model: MatrixFactorization, buyers: list[str]) -> np.ndarray:
    result = model.score_pairs(np.repeat(buyers, N), ITEMS * len(buyers))
    return result.score.reshape(len(buyers), N)


# ----------------------------------------------------------------------------- known answers


@pytest.mark.parametrize("config", [ALS, BPR], ids=["als", "bpr"])
def test_checkerboard_withheld_item_beats_other_parity(
    config: MFConfig, checker_events: pl.DataFrame
) -> None:
    model = MatrixFactorization(config).fit(checker_events)
    scores = all_scores(model, [uid(u) for u in range(N)])
    for u in range(N):
        other_parity = scores[u, [i for i in range(N) if i % 2 != u % 2]]
        assert scores[u, u] > other_parity.max(), f"buyer {u}"


def test_fit_pins_blas_only_during_fit(
    checker_events: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    make = MatrixFactorization._make_implicit

    def spying_make(self: MatrixFactorization) -> Any:
        model = make(self)
        fit = model.fit

        def spying_fit(*args: Any, **kwargs: Any) -> Any:
            info = threadpoolctl.threadpool_info()
            seen.extend(p["num_threads"] for p in info if p["user_api"] == "blas")
            return fit(*args, **kwargs)

        model.fit = spying_fit
        return model

    monkeypatch.setattr(MatrixFactorization, "_make_implicit", spying_make)
    with threadpoolctl.threadpool_limits(2, "blas"):
        MatrixFactorization(ALS).fit(checker_events)
        after = [p["num_threads"] for p in threadpoolctl.threadpool_info()]
    assert seen and set(seen) == {1}
    assert set(after) == {2}  # the caller's setting is restored


def test_factors_are_float32_and_indexes_match(als_checker: MatrixFactorization) -> None:
    m = als_checker
    assert m.buyer_factors_.dtype == np.float32 and m.item_factors_.dtype == np.float32
    assert m.buyer_factors_.shape == (N, 8) and m.item_factors_.shape == (N, 8)
    assert m.train_matrix_.shape == (len(m.buyer_index_), len(m.item_index_))
    assert m.item_popularity_.shape == (N,)


def test_items_table_gives_cold_items_a_column_with_zero_factors(
    checker_events: pl.DataFrame,
) -> None:
    items = pl.DataFrame({"item_id": [*ITEMS, "cold"], "seller_id": ["s"] * (N + 1)})
    model = MatrixFactorization(ALS).fit(checker_events, items=items)
    assert len(model.item_index_) == N + 1
    np.testing.assert_array_equal(model.item_factors_[model.item_index_.codes(["cold"])[0]], 0)
    result = model.score_pairs(["u00"], ["cold"])
    assert result.known.tolist() == [True] and result.score.tolist() == [0.0]


def test_fit_without_usable_interactions_is_skipped_and_says_why(tmp_path: Path) -> None:
    """Only searches: nothing to factorize. The model is fitted knowing no buyer (every
    buyer cold), its `skipped_` says why, and it survives a save and load."""
    ev = make_events([("b", "i")], kinds=["search"])
    items = pl.DataFrame({"item_id": ["i", "j"], "seller_id": ["s", "s"]})
    model = MatrixFactorization(ALS).fit(ev, items=items)
    assert model.skipped_ is not None and "no usable buyer-item interactions" in model.skipped_
    assert "1 events" in model.skipped_ and "item_id" in model.skipped_
    assert len(model.buyer_index_) == 0 and len(model.item_index_) == 2
    pairs = model.score_pairs(["b"], ["i"])
    assert not pairs.known[0] and np.isnan(pairs.score[0])
    rec = model.recommend(["b"], k=2)
    assert not rec.known[0]
    loaded = MatrixFactorization.load(model.save(tmp_path / "mf"))
    assert loaded.skipped_ == model.skipped_ and len(loaded.buyer_index_) == 0
    fitted = MatrixFactorization(ALS).fit(make_events([("b", "i")]))
    assert fitted.skipped_ is None


# ----------------------------------------------------------------------------- scoring


def test_unknown_ids_in_score_pairs_are_flagged_not_raised(
    als_checker: MatrixFactorization,
) -> None:
    result = als_checker.score_pairs(["u00", "nobody", "u01", None], ["i02", "i02", "zz", "i03"])
    assert result.known.tolist() == [True, False, False, False]
    assert np.isfinite(result.score[0]) and np.isnan(result.score[1:]).all()
    empty = als_checker.score_pairs([], [])
    assert empty.score.shape == (0,) and empty.known.shape == (0,)


def test_score_pairs_is_the_factor_dot_product(als_checker: MatrixFactorization) -> None:
    m = als_checker
    b, i = m.buyer_index_.codes(["u07"])[0], m.item_index_.codes(["i09"])[0]
    expected = float(m.buyer_factors_[b] @ m.item_factors_[i])
    assert m.score_pairs(["u07"], ["i09"]).score[0] == pytest.approx(expected, rel=1e-5)


def test_recommend_keeps_bought_items_unless_asked(
    clustered: tuple[pl.DataFrame, MatrixFactorization],
) -> None:
    ev, model = clustered
    buyer = "b000"
    bought = set(ev.filter(pl.col("buyer_id") == buyer)["item_id"].to_list())
    recs = model.recommend([buyer], k=5)
    assert recs.known.tolist() == [True]
    assert set(recs.item_ids[0]) & bought  # repeat purchases are not filtered by default
    filtered = model.recommend([buyer], k=5, filter_already_bought=True)
    assert not set(filtered.item_ids[0]) & bought
    assert (np.diff(recs.scores[0]) <= 0).all()


def test_unknown_buyer_gets_popularity_ranking(
    clustered: tuple[pl.DataFrame, MatrixFactorization],
) -> None:
    _, model = clustered
    recs = model.recommend(["stranger", "b001"], k=3)
    assert recs.known.tolist() == [False, True]
    top = np.argsort(-model.item_popularity_, kind="stable")[:3]
    assert recs.item_ids[0].tolist() == model.item_index_.lookup(top).tolist()
    frame = recs.to_frame()
    assert frame.columns == ["buyer_id", "rank", "item_id", "score", "known"]
    assert frame.height == 6


def test_recommend_k_beyond_catalog_pads_with_none(als_checker: MatrixFactorization) -> None:
    recs = als_checker.recommend(["u00"], k=N + 10, filter_already_bought=True)
    assert recs.item_ids.shape == (1, N)
    eligible = recs.item_ids[0][recs.item_ids[0] != None]  # noqa: E711
    # u00 has interactions with 24 even items; the 26 left are the odd ones and u00's own.
    assert len(eligible) == N - 24
    assert np.isnan(recs.scores[0][len(eligible) :]).all()


def test_score_offer_mean_and_max_over_offer_items(als_checker: MatrixFactorization) -> None:
    m = als_checker
    items = pl.DataFrame({"item_id": ITEMS, "seller_id": ["even", "odd"] * (N // 2)})
    # "trio" lists its items; "odd_store" is store-wide (every item of seller "odd");
    # "empty" is store-wide for a seller without items.
    offers = pl.DataFrame(
        {"offer_id": ["trio", "odd_store", "empty"], "seller_id": ["x", "odd", "nobody"]}
    )
    offer_items = pl.DataFrame({"offer_id": ["trio"] * 3, "item_id": ["i00", "i02", "i05"]})
    catalog = build_offer_items(offer_items, m.item_index_, offers=offers, items=items)
    buyers = ["u04", "u04", "u04", "ghost", "u04"]
    offer_ids = ["trio", "odd_store", "empty", "trio", "no_such_offer"]
    result = m.score_offer(buyers, offer_ids, catalog)
    assert result.known.tolist() == [True, True, False, False, False]
    assert result.n_items.tolist() == [3, N // 2, 0, 3, 0]
    trio = m.score_pairs(["u04"] * 3, ["i00", "i02", "i05"]).score
    odd = m.score_pairs(["u04"] * (N // 2), ITEMS[1::2]).score
    # float32 factors: compare with an absolute tolerance (means can cancel to near 0).
    assert result.mean[0] == pytest.approx(trio.mean(), abs=1e-5)
    assert result.max[0] == pytest.approx(trio.max(), abs=1e-5)
    assert result.mean[1] == pytest.approx(odd.mean(), abs=1e-5)
    assert result.max[1] == pytest.approx(odd.max(), abs=1e-5)
    assert np.isnan(result.mean[2:]).all() and np.isnan(result.max[2:]).all()
    mean_only = m.score_offer(buyers, offer_ids, catalog, with_max=False)
    np.testing.assert_array_equal(mean_only.mean, result.mean)
    assert np.isnan(mean_only.max).all()


def test_score_offer_rejects_a_foreign_item_index(als_checker: MatrixFactorization) -> None:
    from recsys.features import IdIndex

    catalog = build_offer_items(pl.DataFrame({"offer_id": ["o"], "item_id": ["a"]}), IdIndex(["a"]))
    with pytest.raises(ValueError, match="item index"):
        als_checker.score_offer(["u00"], ["o"], catalog)


# ----------------------------------------------------------------------------- fold-in


def reference_als_solve(model: MatrixFactorization, confidences: dict[int, float]) -> np.ndarray:
    """x = (Y'Y + Y'(C - I)Y + reg I)^-1 Y'C p, written out (Hu, Koren, Volinsky eq. 4)."""
    Y = model.item_factors_.astype(np.float64)
    A = Y.T @ Y + model.config.regularization * np.eye(Y.shape[1])
    b = np.zeros(Y.shape[1])
    for i, c in confidences.items():
        A += (c - 1.0) * np.outer(Y[i], Y[i])
        b += c * Y[i]
    return np.linalg.solve(A, b)


def test_als_fold_in_is_the_closed_form_solution(
    clustered: tuple[pl.DataFrame, MatrixFactorization],
) -> None:
    ev, model = clustered
    mine = ev.filter(pl.col("buyer_id") == "b005").with_columns(buyer_id=pl.lit("late"))
    folded = model.fold_in(mine)
    assert folded.buyer_index.ids.to_list() == ["late"]
    row = folded.interactions.matrix[0]
    expected = reference_als_solve(model, dict(zip(row.indices, row.data, strict=True)))
    np.testing.assert_allclose(folded.factors[0], expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("buyer", ["b003", "b010", "b021", "b042", "b077"])
def test_fold_in_recovers_the_trained_ranking(
    buyer: str, clustered: tuple[pl.DataFrame, MatrixFactorization]
) -> None:
    ev, model = clustered
    mine = ev.filter(pl.col("buyer_id") == buyer).with_columns(buyer_id=pl.lit("again"))
    extended = model.with_buyers(model.fold_in(mine))
    trained = set(model.recommend([buyer], k=5).item_ids[0])
    folded = set(extended.recommend(["again"], k=5).item_ids[0])
    assert len(trained & folded) >= 4


def test_with_buyers_scores_new_buyers_and_leaves_the_model_alone(
    als_checker: MatrixFactorization, checker_events: pl.DataFrame
) -> None:
    new = checker_events.filter(pl.col("buyer_id") == "u03").with_columns(buyer_id=pl.lit("n"))
    extended = als_checker.with_buyers(als_checker.fold_in(new))
    assert not als_checker.score_pairs(["n"], ["i01"]).known[0]
    scores = extended.score_pairs(["n"] * N, ITEMS).score
    assert scores[1::2].min() > scores[0::2].max()  # odd buyer: odd items first
    # Trained buyers keep their scores; the folded one has its own filter row.
    np.testing.assert_array_equal(
        extended.score_pairs(["u00"], ["i02"]).score,
        als_checker.score_pairs(["u00"], ["i02"]).score,
    )
    filtered = extended.recommend(["n"], k=N, filter_already_bought=True).item_ids[0]
    assert {i for i in filtered if i is not None} == {"i03", *ITEMS[0::2]}


def test_with_buyers_replaces_a_known_buyer(
    als_checker: MatrixFactorization, checker_events: pl.DataFrame
) -> None:
    # Re-fold u00 from two events only, next to a new buyer: u00 keeps its code but gets
    # the new factors and the new interaction row.
    subset = make_events([("new", "i01"), ("u00", "i02"), ("u00", "i04")])
    folded = als_checker.fold_in(subset)
    extended = als_checker.with_buyers(folded)
    assert len(extended.buyer_index_) == N + 1
    code = extended.buyer_index_.codes(["u00"])[0]
    assert code == als_checker.buyer_index_.codes(["u00"])[0]
    np.testing.assert_array_equal(
        extended.buyer_factors_[code], folded.factors[folded.buyer_index.codes(["u00"])[0]]
    )
    row = extended.train_matrix_[code]
    assert extended.item_index_.lookup(row.indices).tolist() == ["i02", "i04"]
    assert extended.train_matrix_[code + 1].nnz == N // 2 - 1  # u01 untouched


def test_bpr_fold_in_ranks_the_buyers_parity_first(checker_events: pl.DataFrame) -> None:
    model = MatrixFactorization(BPR).fit(checker_events)
    new = checker_events.filter(pl.col("buyer_id").is_in(["u06", "u07"]))
    new = new.with_columns(buyer_id=pl.col("buyer_id") + "_new")
    folded = model.fold_in(new)
    np.testing.assert_array_equal(folded.factors[:, -1], 1.0)  # the item-bias column
    extended = model.with_buyers(folded)
    for name, parity in [("u06_new", 0), ("u07_new", 1)]:
        scores = extended.score_pairs([name] * N, ITEMS).score
        assert scores[parity::2].min() > scores[1 - parity :: 2].max()


def test_fold_in_of_unknown_items_only_gives_no_buyers(als_checker: MatrixFactorization) -> None:
    folded = als_checker.fold_in(make_events([("n", "zz")]))
    assert len(folded.buyer_index) == 0 and folded.factors.shape == (0, 8)
    assert folded.interactions.stats.n_unknown_item == 1


# ----------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("config", [ALS, BPR], ids=["als", "bpr"])
def test_save_load_round_trip_gives_identical_scores(
    config: MFConfig, checker_events: pl.DataFrame, tmp_path: Path
) -> None:
    model = MatrixFactorization(config).fit(checker_events, as_of=T0)
    loaded = MatrixFactorization.load(model.save(tmp_path / "mf"))
    buyers, items = np.repeat([uid(u) for u in range(N)], 3), ITEMS[:3] * N
    np.testing.assert_array_equal(
        loaded.score_pairs(buyers, items).score, model.score_pairs(buyers, items).score
    )
    a, b = model.recommend(["u01", "x"], k=4), loaded.recommend(["u01", "x"], k=4)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert loaded.get_config() == model.get_config()
    assert loaded.buyer_index_ == model.buyer_index_ and loaded.as_of_ == T0
    assert (loaded.train_matrix_ != model.train_matrix_).nnz == 0


def test_load_rejects_a_foreign_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model\.json"):
        MatrixFactorization.load(tmp_path)


# ----------------------------------------------------------------------------- base flow


def test_config_round_trip() -> None:
    config = MFConfig(
        algorithm="bpr", factors=12, event_weights=EventWeights(view=2, half_life_days=14)
    )
    model = MatrixFactorization(config)
    again = MatrixFactorization.from_config(model.get_config())
    assert again.get_config() == config
    assert MatrixFactorization.from_config(config.to_dict()).get_config() == config
    copy = model.get_config()
    copy.factors = 99
    assert model.config.factors == 12  # get_config hands out a copy
    with pytest.raises(ConfigError, match="factor"):
        MatrixFactorization.from_config({"factor": 3})
    assert MFConfig().resolved_iterations == 15 and config.resolved_iterations == 100


def test_refit_from_round_tripped_config_is_reproducible(checker_events: pl.DataFrame) -> None:
    first = MatrixFactorization(ALS).fit(checker_events)
    second = MatrixFactorization.from_config(first.get_config().to_dict()).fit(checker_events)
    np.testing.assert_array_equal(first.item_factors_, second.item_factors_)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.recommend(["a"]),
        lambda m: m.score_pairs(["a"], ["b"]),
        lambda m: m.fold_in(make_events([])),
        lambda m: m.save("/nonexistent"),
    ],
    ids=["recommend", "score_pairs", "fold_in", "save"],
)
def test_unfitted_model_raises_not_fitted(call: Any) -> None:
    with pytest.raises(NotFittedError, match=r"MatrixFactorization.*call fit"):
        call(MatrixFactorization())


class _CountConfig(StrictConfig):
    scale: float = 1.0


class _Count(Estimator[_CountConfig]):
    """Smallest possible estimator: learns the number of rows."""

    config_class = _CountConfig
    n_: float

    def _fit(self, rows: list[int]) -> None:
        self.n_ = len(rows) * self.config.scale

    def value(self) -> float:
        self.check_is_fitted("value")
        return self.n_


def test_estimator_flow_fit_returns_self_and_guards_use() -> None:
    est = _Count(_CountConfig(scale=2))
    with pytest.raises(NotFittedError, match=r"_Count.*before calling value"):
        est.value()
    assert est.fit([1, 2, 3]) is est and est.is_fitted and est.value() == 6
    with pytest.raises(TypeError, match="_CountConfig"):
        _Count(MFConfig())  # type: ignore[arg-type]
