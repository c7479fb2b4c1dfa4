"""The pipeline's stage functions, composed without Ray, and its data helpers."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recsys.data.synthetic import SyntheticConfig, generate
from recsys.models.ranker import PromoRanker, RankerConfig
from training.config import DataConfig, EvaluationConfig, RayConfig, TrainConfig
from training.pipeline import (
    DataInfo,
    SharedDataset,
    evaluate_stage,
    file_digest,
    fresh_workers,
    journey_stage,
    load_stage,
    mf_stage,
    prepare_data,
    refresh_stage,
    response_stage,
    sized_for_data,
    split_stage,
    threaded,
    with_truth_margins,
)
from training.run import with_money_terms


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pipeline") / "d"
    generate(SyntheticConfig(buyers=600, seed=3), out)
    return out


def test_stages_compose_to_the_same_ranker_as_fit(market: Path) -> None:
    """MF and journey fitted apart (as parallel tasks) then finished == one fit call."""
    dataset, info = load_stage(str(market))
    config = RankerConfig()
    split = split_stage(dataset, 2)
    assert split is not None
    mf = mf_stage(config, dataset, split)
    journey = journey_stage(config, dataset, split)
    staged = response_stage(config, dataset, split, mf, journey)
    whole = PromoRanker(config).fit(dataset.before(split.start), as_of=split.start)
    pairs = pl.read_parquet(market / "truth" / "offers.parquet").select("buyer_id", "offer_id")
    pairs = pairs.head(500)
    assert staged.score(pairs).equals(whole.score(pairs))
    assert info.rows["events"] == dataset.events.height
    report = evaluate_stage(staged, dataset, split, EvaluationConfig())
    assert report.metrics["decisions"] == split.decisions


def test_shared_dataset_gives_back_the_same_tables(market: Path) -> None:
    """The Arrow form Ray tasks exchange: every table and dtype comes back as it was."""
    dataset, _ = load_stage(str(market))
    back = SharedDataset.of(dataset).dataset()
    assert back.source == dataset.source
    for name in ("items", "events", "buyers", "offers", "offer_items", "exposures", "redemptions"):
        frame, again = dataset.table(name), back.table(name)
        assert frame is not None and again is not None
        assert again.schema == frame.schema and again.equals(frame)


def test_refresh_stage_ships_the_held_out_fit_with_current_features(market: Path) -> None:
    dataset, _ = load_stage(str(market))
    config = RankerConfig()
    split = split_stage(dataset, 2)
    assert split is not None
    held_out = response_stage(
        config,
        dataset,
        split,
        mf_stage(config, dataset, split),
        journey_stage(config, dataset, split),
    )
    shipped = refresh_stage(held_out, dataset)
    assert shipped.report_.as_of == held_out.report_.as_of == split.start.isoformat()
    assert shipped.store_ is not None and held_out.store_ is not None
    assert shipped.store_.as_of > split.start == held_out.store_.as_of


def test_full_fit_stages_use_all_data(market: Path) -> None:
    dataset, _ = load_stage(str(market))
    config = RankerConfig()
    staged = response_stage(
        config, dataset, None, mf_stage(config, dataset, None), journey_stage(config, dataset, None)
    )
    assert staged.report_.as_of == PromoRanker(config).fit(dataset).report_.as_of


def test_digest_changes_with_the_data_and_ignores_truth(market: Path, tmp_path: Path) -> None:
    copy = tmp_path / "d"
    copy.mkdir()
    for file in market.glob("*.parquet"):
        (copy / file.name).write_bytes(file.read_bytes())
    assert file_digest(copy) == file_digest(market)  # truth/ is not part of the data
    events = pl.read_parquet(copy / "events.parquet")
    events.head(events.height - 1).write_parquet(copy / "events.parquet")
    assert file_digest(copy) != file_digest(market)


def test_prepare_data_generates_once_and_names_a_missing_path(tmp_path: Path) -> None:
    config = DataConfig.from_dict(
        {"synthetic": {"buyers": 50, "seed": 2}, "synthetic_dir": str(tmp_path / "s")}
    )
    said: list[str] = []
    first = prepare_data(config, said.append)
    assert (first / "events.parquet").exists() and "generating" in said[0]
    assert prepare_data(config, said.append) == first and "reusing" in said[-1]
    with pytest.raises(FileNotFoundError, match=r"data\.path"):
        prepare_data(DataConfig.from_dict({"path": str(tmp_path / "nope")}), said.append)


def test_truth_margins_fill_only_an_empty_config(market: Path) -> None:
    data = DataConfig()
    filled, notes = with_truth_margins(RankerConfig(), market, data)
    sellers = pl.read_parquet(market / "truth" / "sellers.parquet")
    assert filled.seller_margins == dict(zip(sellers["seller_id"], sellers["margin"], strict=True))
    assert filled.policy.send_cost == sellers["send_cost"][0] > 0
    assert len(notes) == 2 and "send cost" in notes[1]
    given = RankerConfig.from_dict({"seller_margins": {"s000": 0.5}, "policy": {"send_cost": 0.0}})
    kept = with_truth_margins(given, market, data)[0]
    assert (kept.seller_margins, kept.policy.send_cost) == ({"s000": 0.5}, 0.0)
    off = DataConfig(margins_from_truth=False)
    unchanged = with_truth_margins(RankerConfig(), market, off)[0]
    assert (unchanged.seller_margins, unchanged.policy.send_cost) == ({}, 0.0)


def test_threaded_sets_every_model_and_money_terms_copy_only_money() -> None:
    config = threaded(RankerConfig(), 3)
    assert (config.mf.num_threads, config.journey.model.num_threads) == (3, 3)
    assert config.response.num_threads == 3
    champion = RankerConfig.from_dict({"mf": {"factors": 8}, "policy": {"send_cost": 1.0}})
    current = RankerConfig.from_dict(
        {"seller_margins": {"s": 0.4}, "policy": {"send_cost": 0.1, "margin_default": 0.2}}
    )
    judged = with_money_terms(champion, current)
    assert judged.mf.factors == 8  # the champion's own model
    assert judged.seller_margins == {"s": 0.4}
    assert (judged.policy.send_cost, judged.policy.margin_default) == (0.1, 0.2)


@pytest.mark.parametrize(
    ("threshold", "events", "fresh"),
    [(1_000_000, 999_999, False), (1_000_000, 1_000_000, True), (None, 10**9, False), (0, 0, True)],
)
def test_stages_get_workers_of_their_own_from_a_number_of_events(
    threshold: int | None, events: int, fresh: bool
) -> None:
    """Large data: a finished stage's worker exits and gives its memory back; small data:
    workers are reused (a new one costs start-up time on every run)."""
    info = DataInfo(path="d", digest="x", rows={"events": events}, summary="")
    assert fresh_workers(RayConfig(fresh_workers_from_events=threshold), info) is fresh


def _sized(events: int, **settings: object) -> tuple[TrainConfig, list[str]]:
    info = DataInfo(path="d", digest="x", rows={"events": events}, summary="")
    return sized_for_data(TrainConfig.from_dict(settings), info)


def test_large_data_takes_one_heavy_stage_and_the_held_out_fit_unless_told_otherwise() -> None:
    small, small_notes = _sized(10, ray={"large_data_from_events": 100})
    assert (small.ray.heavy_stages, small.evaluation.refit, small_notes) == (None, True, [])
    large, notes = _sized(100, ray={"large_data_from_events": 100})
    assert (large.ray.heavy_stages, large.evaluation.refit) == (1, False)
    assert len(notes) == 1 and "100 events" in notes[0]
    assert "ray.heavy_stages 1 and evaluation.refit false" in notes[0]
    # An explicit setting wins, and only what was chosen is named.
    told, told_notes = _sized(
        100, ray={"large_data_from_events": 100, "heavy_stages": 2}, evaluation={"refit": True}
    )
    assert (told.ray.heavy_stages, told.evaluation.refit, told_notes) == (2, True, [])
    half, half_notes = _sized(100, ray={"large_data_from_events": 100}, evaluation={"refit": True})
    assert (half.ray.heavy_stages, half.evaluation.refit) == (1, True)
    assert "ray.heavy_stages 1;" in half_notes[0] and "refit" not in half_notes[0]
    never, never_notes = _sized(10**9, ray={"large_data_from_events": None})
    assert (never.ray.heavy_stages, never.evaluation.refit, never_notes) == (None, True, [])
