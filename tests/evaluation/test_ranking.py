"""Known answers for the top-k ranking metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.evaluation import hit_rate_at_k, ndcg_at_k, precision_at_k, recall_at_k

# Five users, six items, k = 3 (-1 pads an empty slot).
#   user 0: relevant {0, 2}        recs [0, 1, 2]   hits [1, 0, 1]
#   user 1: relevant {1}           recs [2, 3, 1]   hits [0, 0, 1]
#   user 2: relevant {}            recs [0, 1, 2]   excluded from every mean
#   user 3: relevant {0, 3, 4, 5}  recs [3, -1, -1] hits [1, 0, 0]
#   user 4: relevant {5}           recs [0, 1, 2]   hits [0, 0, 0]
RECS = np.array([[0, 1, 2], [2, 3, 1], [0, 1, 2], [3, -1, -1], [0, 1, 2]])
REL_LISTS: list[set[int]] = [{0, 2}, {1}, set(), {0, 3, 4, 5}, {5}]
D1, D2, D3, D4 = (1 / math.log2(i + 2) for i in range(4))  # 1, 0.6309, 0.5, 0.4307


def _csr(lists: list[set[int]], n_items: int = 6) -> sp.csr_array:
    rows = [u for u, items in enumerate(lists) for _ in items]
    cols = [i for items in lists for i in sorted(items)]
    return sp.csr_array((np.ones(len(rows)), (rows, cols)), shape=(len(lists), n_items))


REL = _csr(REL_LISTS)


def test_precision_hand_computed() -> None:
    # (2/3 + 1/3 + 1/3 + 0) / 4 evaluable users = 1/3
    assert precision_at_k(RECS, REL) == pytest.approx(1 / 3)


def test_recall_plain_and_min_k_hand_computed() -> None:
    # plain: (2/2 + 1/1 + 1/4 + 0) / 4 = 0.5625
    assert recall_at_k(RECS, REL) == pytest.approx(0.5625)
    # min(k, |rel|): user 3 divides by min(3, 4) = 3 -> (1 + 1 + 1/3 + 0) / 4 = 7/12
    assert recall_at_k(RECS, REL, denominator="min_k") == pytest.approx(7 / 12)


def test_ndcg_hand_computed() -> None:
    user0 = (D1 + D3) / (D1 + D2)  # hits at ranks 1 and 3, ideal has 2 hits
    user1 = D3 / D1  # hit at rank 3, ideal has 1 hit
    user3 = D1 / (D1 + D2 + D3)  # hit at rank 1, ideal fills all 3 slots
    expected = (user0 + user1 + user3 + 0.0) / 4
    assert ndcg_at_k(RECS, REL) == pytest.approx(expected)
    assert expected == pytest.approx((0.919721 + 0.5 + 0.469279) / 4, abs=1e-6)


def test_hit_rate_hand_computed() -> None:
    assert hit_rate_at_k(RECS, REL) == pytest.approx(3 / 4)


def test_k_truncates_the_lists() -> None:
    # k = 1: first column hits for users 0 and 3 only.
    assert precision_at_k(RECS, REL, k=1) == pytest.approx(0.5)
    assert hit_rate_at_k(RECS, REL, k=1) == pytest.approx(0.5)
    assert recall_at_k(RECS, REL, k=1) == pytest.approx((1 / 2 + 0 + 1 / 4 + 0) / 4)
    assert ndcg_at_k(RECS, REL, k=1) == pytest.approx(0.5)


def test_k_beyond_list_width_counts_missing_slots_as_misses() -> None:
    # k = 5 with 3 columns: precision divides by 5; the ideal DCG of user 3 has 4 hits.
    assert precision_at_k(RECS, REL, k=5) == pytest.approx((2 + 1 + 1 + 0) / 5 / 4)
    user0 = (D1 + D3) / (D1 + D2)
    user1 = D3 / D1
    user3 = D1 / (D1 + D2 + D3 + D4)
    assert ndcg_at_k(RECS, REL, k=5) == pytest.approx((user0 + user1 + user3) / 4)


def test_perfect_ranking_has_ndcg_one() -> None:
    recs = np.array([[2, 0, -1], [1, -1, -1], [5, 4, 3]])
    rel = _csr([{0, 2}, {1}, {3, 4, 5}])
    assert ndcg_at_k(recs, rel) == pytest.approx(1.0)
    assert recall_at_k(recs, rel) == pytest.approx(1.0)


def test_per_user_lists_match_the_array_form() -> None:
    ragged = [[0, 1, 2], [2, 3, 1], [0, 1, 2], [3], [0, 1, 2]]
    for metric in (precision_at_k, recall_at_k, ndcg_at_k, hit_rate_at_k):
        assert metric(ragged, REL_LISTS, k=3) == pytest.approx(metric(RECS, REL))
        assert metric(RECS, REL_LISTS) == pytest.approx(metric(RECS, REL))


def test_already_bought_items_are_not_filtered() -> None:
    # Repeat purchases: the test window's item equals the train one; it must count.
    assert precision_at_k(np.array([[7]]), [{7}]) == 1.0


def test_explicit_zeros_and_negatives_are_not_relevant() -> None:
    rel = sp.csr_array(
        (np.array([1.0, 0.0, -1.0]), (np.array([0, 0, 0]), np.array([0, 1, 2]))), shape=(1, 3)
    )
    assert rel.nnz == 3  # the explicit zero is stored
    assert precision_at_k(np.array([[0, 1, 2]]), rel) == pytest.approx(1 / 3)
    assert recall_at_k(np.array([[0, 1, 2]]), rel) == pytest.approx(1.0)


def test_non_canonical_csr_with_duplicates() -> None:
    rel = sp.csr_array(
        (np.array([1.0, 1.0, 1.0]), np.array([2, 0, 2]), np.array([0, 3])), shape=(1, 3)
    )
    assert not rel.has_canonical_format
    assert recall_at_k(np.array([[2, 1]]), rel) == pytest.approx(0.5)  # relevant {0, 2}


def test_repeated_recommendation_counts_once() -> None:
    recs = np.array([[0, 0, 2]])
    assert precision_at_k(recs, [{0, 2}]) == pytest.approx(2 / 3)
    assert ndcg_at_k(recs, [{0, 2}]) == pytest.approx((D1 + D3) / (D1 + D2))


def test_no_evaluable_user_gives_nan() -> None:
    assert math.isnan(precision_at_k(np.array([[0, 1]]), [set()]))


def test_legacy_sparse_matrix_accepted() -> None:
    assert precision_at_k(RECS, sp.csr_matrix(REL.toarray())) == pytest.approx(1 / 3)


def test_matches_loop_reference_on_random_data() -> None:
    rng = np.random.default_rng(7)
    n_users, n_items, k = 300, 40, 10
    recs = rng.integers(-1, n_items, size=(n_users, k))
    dense = rng.random((n_users, n_items)) < 0.1
    rel = sp.csr_array(dense.astype(np.float64))
    prec, rec, nd, hr = [], [], [], []
    for u in range(n_users):
        relevant = set(np.flatnonzero(dense[u]).tolist())
        if not relevant:
            continue
        seen: set[int] = set()
        hits = []
        for item in recs[u].tolist():
            hits.append(item >= 0 and item in relevant and item not in seen)
            seen.add(item)
        n_hit = sum(hits)
        prec.append(n_hit / k)
        rec.append(n_hit / len(relevant))
        hr.append(float(n_hit > 0))
        dcg = sum(1 / math.log2(i + 2) for i, h in enumerate(hits) if h)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
        nd.append(dcg / idcg)
    assert precision_at_k(recs, rel) == pytest.approx(np.mean(prec))
    assert recall_at_k(recs, rel) == pytest.approx(np.mean(rec))
    assert ndcg_at_k(recs, rel) == pytest.approx(np.mean(nd))
    assert hit_rate_at_k(recs, rel) == pytest.approx(np.mean(hr))


@pytest.mark.parametrize(
    ("recs", "rel", "message"),
    [
        (np.array([[0, 1]]), _csr([{0}, {1}], 2), "relevance has 2 rows"),
        (np.array([[0, 9]]), _csr([{0}], 3), "1 item indices >= n_items"),
        (np.array([[0, -2, -3]]), _csr([{0}], 3), "2 indices below -1"),
        (np.array([[0.0, 1.0]]), _csr([{0}], 3), "integer item indices"),
        (np.array([0, 1]), _csr([{0}], 3), "must be 2-D"),
    ],
)
def test_bad_input_is_rejected_with_the_count(
    recs: np.ndarray, rel: sp.csr_array, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        precision_at_k(recs, rel)


def test_dense_relevance_array_is_refused_as_ambiguous() -> None:
    with pytest.raises(TypeError, match="csr_array"):
        precision_at_k(RECS, REL.toarray())


def test_bad_k_is_rejected() -> None:
    with pytest.raises(ValueError, match="k must be a positive integer"):
        precision_at_k(RECS, REL, k=0)
    with pytest.raises(ValueError, match="denominator"):
        recall_at_k(RECS, REL, denominator="other")  # type: ignore[arg-type]
