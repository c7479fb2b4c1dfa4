"""The learned policy on worlds whose answer is known (`tests/learning/worlds.py`).

Segment A responds to the reminder X (+30 points of purchase), B to nothing, and the
5-off Y moves nobody: the policy must send X to A and nothing to B (sending costs 0.5,
so a message that moves nobody loses money). In a world where nothing moves anyone, it
must send nothing at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data import load_dataset
from recsys.models.ranker import PromoRanker, RankerConfig
from recsys.policy import expected_incremental_profit
from tests.learning.worlds import DECISION_WEEK, segments, write_two_segment_world

CONFIG = {
    "mf": {"factors": 8, "iterations": 3},
    "learning": {"folds": 3, "candidates": ["blanket", "kind_effects", "segment_effects"]},
    "policy": {"send_cost": 0.5},
}


def _decide(root: Path) -> tuple[PromoRanker, pl.DataFrame]:
    config = RankerConfig.from_dict(CONFIG)
    ranker = PromoRanker(config).fit(load_dataset(root))
    buyers = list(segments(root))
    pairs = pl.DataFrame(
        {
            "buyer_id": [b for b in buyers for _ in range(2)],
            "offer_id": [f"{o}{DECISION_WEEK}" for _ in buyers for o in ("X", "Y")],
        }
    )
    valued = expected_incremental_profit(ranker.candidates(pairs), config.policy)
    best = (
        valued.sort("score", descending=True)
        .group_by("buyer_id", maintain_order=True)
        .first()
        .with_columns(pl.when(pl.col("score") > 0).then(pl.col("offer_id")).alias("choice"))
    )
    return ranker, best


@pytest.fixture(scope="module")
def two_segments(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, PromoRanker, pl.DataFrame]:
    root = write_two_segment_world(tmp_path_factory.mktemp("two"), buyers=2000, lift=0.3)
    return root, *_decide(root)


@pytest.mark.slow
def test_segment_a_gets_the_offer_it_responds_to_and_b_gets_nothing(
    two_segments: tuple[Path, PromoRanker, pl.DataFrame],
) -> None:
    root, ranker, best = two_segments
    seg = segments(root)
    chosen = best.with_columns(pl.col("buyer_id").replace_strict(seg).alias("segment"))
    a = chosen.filter(pl.col("segment") == "A")
    b = chosen.filter(pl.col("segment") == "B")
    assert (a["choice"] == f"X{DECISION_WEEK}").mean() > 0.95
    assert b["choice"].null_count() / b.height > 0.95
    assert ranker.learner_ is not None and ranker.learner_.selection_ is not None
    assert ranker.learner_.selection_.chosen == "segment_effects"


@pytest.mark.slow
def test_the_cross_validated_report_ranks_the_learned_policy_first(
    two_segments: tuple[Path, PromoRanker, pl.DataFrame],
) -> None:
    _, ranker, _ = two_segments
    assert ranker.learner_ is not None and ranker.learner_.selection_ is not None
    selection = ranker.learner_.selection_
    shipped = next(pv for pv in selection.candidates if pv.name == selection.chosen)
    for fixed in selection.fixed:  # nothing, X to all, Y to all
        assert shipped.value > fixed.value, fixed.name


@pytest.mark.slow
def test_a_world_without_effects_gets_nothing(tmp_path: Path) -> None:
    root = write_two_segment_world(tmp_path / "none", buyers=1500, lift=0.0, seed=1)
    _, best = _decide(root)
    assert best["choice"].null_count() == best.height


@pytest.mark.slow
def test_one_wave_is_judged_by_cross_fitting_over_buyers(tmp_path: Path) -> None:
    """One randomized wave leaves nothing later to hold out: the report is the learner's
    cross-fitted values, the policy beside nothing and each kind for everyone."""
    from recsys.evaluation.holdout import cross_fitted_report, holdout_split

    root = write_two_segment_world(tmp_path / "one", buyers=3000, lift=0.3, waves=(6,))
    dataset = load_dataset(root)
    assert holdout_split(dataset, 2) is None
    ranker, _ = _decide(root)
    report = cross_fitted_report(ranker)
    m = report.metrics
    assert m["decisions"] == 3000
    for name in ("nothing", "blanket_reminder", "blanket_amount_off"):
        assert np.isfinite(m[f"baseline_{name}_dr"]) and m[f"baseline_{name}_dr_se"] > 0
    # Sending X to segment A is worth its cost: the policy beats sending nothing.
    assert m["policy_value_dr"] > m["baseline_nothing_dr"]
    assert "cross-fitting over buyers" in report.table()
