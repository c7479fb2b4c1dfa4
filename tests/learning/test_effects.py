"""Effect models on hand-made pseudo-outcomes with a known answer."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.learning.effects import ForestEffects, KindEffects, Segmentation, SegmentEffects
from recsys.learning.matrix import FeatureSpec


def _rows(
    cells: dict[tuple[str, str], tuple[int, float]], seed: int = 0
) -> tuple[pl.DataFrame, np.ndarray]:
    """Rows of (segment, kind) cells: n rows each with pseudo-outcomes of mean `effect`
    (unit noise, then centred so the cell's mean is exactly its effect)."""
    rng = np.random.default_rng(seed)
    frames, zs = [], []
    start = 0
    for (segment, kind), (n, effect) in cells.items():
        noise = rng.standard_normal(n)
        zs.append(effect + noise - noise.mean())
        ids = [f"x{start + i}" for i in range(n)]
        frames.append(
            pl.DataFrame(
                {
                    "exposure_id": ids,
                    "buyer_id": [f"b{start + i}" for i in range(n)],
                    "kind": [kind] * n,
                    "segment": [segment] * n,
                    "fold": [(start + i) % 5 for i in range(n)],
                }
            )
        )
        start += n
    return pl.concat(frames), np.concatenate(zs)


def test_kind_effects_recover_each_kinds_mean_and_shrink_a_noisy_outlier() -> None:
    rows, z = _rows(
        {
            ("a", "x"): (4000, 0.10),
            ("a", "y"): (4000, 0.12),
            ("a", "w"): (4000, 0.08),
            ("a", "tiny"): (5, 1.50),  # five rows that look great by chance
        }
    )
    model = KindEffects().fit(rows, z)
    mean = dict(zip(model.kinds_, model.mean_, strict=True))
    assert mean["x"] == pytest.approx(0.10, abs=0.03)
    assert mean["y"] == pytest.approx(0.12, abs=0.03)
    # The 5-row kind is pulled most of the way to the others: it cannot outrank them.
    assert mean["tiny"] < mean["y"] + 0.05
    draws = model.predict(rows.filter(pl.col("kind") == "tiny").head(1)).draws
    assert draws.std() > 2 * model.predict(rows.filter(pl.col("kind") == "x").head(1)).draws.std()


def test_kind_effects_give_an_unseen_kind_the_prior() -> None:
    rows, z = _rows({("a", "x"): (500, 0.1), ("a", "y"): (500, 0.1), ("a", "w"): (500, 0.1)})
    model = KindEffects().fit(rows, z)
    unseen = model.predict(pl.DataFrame({"kind": ["brand_new"]}))
    assert unseen.mean[0] == pytest.approx(model.prior_mean_)


def test_segment_effects_find_the_one_segment_that_responds() -> None:
    """Segment A responds to kind X only; B responds to nothing."""
    rows, z = _rows(
        {
            ("A", "X"): (3000, 0.30),
            ("A", "Y"): (3000, 0.00),
            ("B", "X"): (3000, 0.00),
            ("B", "Y"): (3000, 0.00),
        }
    )
    model = SegmentEffects(segmentation=Segmentation(("segment",), ())).fit(rows, z)
    probe = pl.DataFrame({"segment": ["A", "A", "B", "B"], "kind": ["X", "Y", "X", "Y"]})
    effect = model.predict(probe)
    assert effect.mean[0] == pytest.approx(0.30, abs=0.05)
    assert np.abs(effect.mean[1:]).max() < 0.06
    # The responding cell is sure: its lower bound clears zero; the others' do not.
    sd = effect.draws.std(axis=0, ddof=1)
    assert effect.mean[0] - 2 * sd[0] > 0
    assert all(effect.mean[i] - sd[i] < 0.06 for i in (1, 2, 3))


def test_a_five_row_segment_cannot_outrank_a_five_thousand_row_segment_on_noise() -> None:
    rows, z = _rows(
        {
            ("big", "X"): (5000, 0.10),
            ("small", "X"): (5, 1.20),  # noise: five lucky rows
            ("other", "X"): (5000, 0.00),
        }
    )
    model = SegmentEffects(segmentation=Segmentation(("segment",), ())).fit(rows, z)
    effect = model.predict(pl.DataFrame({"segment": ["big", "small"], "kind": ["X", "X"]}))
    sd = effect.draws.std(axis=0, ddof=1)
    lower = effect.mean - sd
    assert lower[1] < lower[0]  # by its lower bound, the small cell ranks below
    assert sd[1] > 2 * sd[0]


def test_segments_that_do_not_differ_add_no_table() -> None:
    rows, z = _rows({("A", "X"): (2000, 0.05), ("B", "X"): (2000, 0.05), ("C", "X"): (2000, 0.05)})
    model = SegmentEffects(segmentation=Segmentation(("segment",), ())).fit(rows, z)
    assert model.variables_ == []
    effect = model.predict(pl.DataFrame({"segment": ["A", "B", "C"], "kind": ["X"] * 3}))
    assert np.ptp(effect.mean) == 0


def test_only_the_variable_that_matters_is_chosen() -> None:
    rng = np.random.default_rng(1)
    rows, z = _rows(
        {
            ("A", "X"): (3000, 0.25),
            ("B", "X"): (3000, 0.0),
            ("A", "Y"): (3000, 0.0),
            ("B", "Y"): (3000, 0.0),
        }
    )
    rows = rows.with_columns(
        pl.Series("noise", rng.choice(["p", "q", "r"], rows.height)),
    )
    model = SegmentEffects(segmentation=Segmentation(("noise", "segment"), ())).fit(rows, z)
    assert model.variables_ == ["segment"]


def test_bands_of_a_numeric_column_are_its_quartiles() -> None:
    rows = pl.DataFrame({"r": [float(v) for v in range(100)] + [None]})
    seg = Segmentation.fit(rows, (), ("r",))
    labels = seg.labels(rows)["r"].to_list()
    assert labels[0] == "band0" and labels[99] == "band3" and labels[100] == "(none)"
    assert sorted(set(labels)) == ["(none)", "band0", "band1", "band2", "band3"]


def test_a_feature_without_values_in_one_half_of_the_buyers_is_held_constant() -> None:
    """The DR-learner fits one booster per half of the buyers; a column with values only
    in the other half cannot be binned (the fuzzed-data crash of sklearn's "window shape
    cannot be larger than input array shape"): that column, and only it, is held
    constant, and every row still gets a finite effect."""
    rng = np.random.default_rng(0)
    n = 4000
    buyers = pl.Series("buyer_id", [f"b{i}" for i in range(n)])
    half = ((buyers.hash(3) % 2) == 1).to_numpy()  # ForestEffects' halves with seed 0
    responds = rng.random(n) < 0.5
    rows = pl.DataFrame(
        {
            "exposure_id": [f"x{i}" for i in range(n)],
            "buyer_id": buyers,
            "kind": ["k"] * n,
            "responds": responds.astype(np.float64),
            "one_half_only": np.where(half, rng.random(n), np.nan),
        }
    )
    z = np.where(responds, 0.5, 0.0) + 0.1 * rng.standard_normal(n)
    spec = FeatureSpec.fit(rows, ["responds", "one_half_only"])
    assert "one_half_only" in spec.columns
    model = ForestEffects(spec=spec).fit(rows, z)
    held = [c for c, blank in zip(spec.columns, model.blank_, strict=True) if blank]
    assert held == ["one_half_only"]
    assert np.isfinite(model.predict(rows).mean).all()
