"""The benchmark report on hand-made figures: targets, sections, JSON round trips.

Nothing here starts Ray, a server or a subprocess: the figures are built by hand.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.floor import FloorFigures, Latency, floor_targets, format_floor_markdown
from benchmarks.loadgen import Load, median_load
from benchmarks.power import PowerFigures, SeedPower, format_power_markdown
from benchmarks.profile import format_profiles, package_of, summarize
from benchmarks.quality import QualityFigures, SeedFigures, format_quality_markdown
from benchmarks.rate_search import search_rate
from benchmarks.run import QUICK, parse_args
from benchmarks.score_bench import ScoreFigures, format_score_markdown
from benchmarks.serve_bench import (
    VARIANTS,
    AppFigures,
    ServingFigures,
    VariantFigures,
    in_app_figures,
)
from benchmarks.serve_report import ceiling_targets, format_serving_markdown, throughput_target
from benchmarks.targets import Target, training_targets


def load(rps: float, p99: float, concurrency: int = 0, rate: float = 0.0, batch: int = 0) -> Load:
    return Load(
        mode="closed" if concurrency else "open",
        concurrency=concurrency,
        offered_rps=rate,
        batch=batch,
        requests=int(rps * 5),
        errors=0,
        seconds=5.0,
        rps=rps,
        buyers_per_s=rps * (batch or 1),
        p50_ms=p99 / 3,
        p90_ms=p99 / 2,
        p99_ms=p99,
        max_ms=p99 * 1.5,
    )


def app(name: str, max_rate: float, rps: float) -> AppFigures:
    return AppFigures(
        app=name,
        closed=[load(rps / 2, 20.0, concurrency=1), load(rps, 80.0, concurrency=8)],
        steps=[load(10, 15.0, rate=10), load(20, 30.0, rate=20), load(40, 90.0, rate=40)],
        max_rate=max_rate,
        batch=load(12, 300.0, concurrency=2, batch=100),
        in_app={"rank_mean_ms": 14.0, "rank_requests": 500.0, "mean_batch_size": 2.5},
        others_cpu={"bare": 0.01} if name != "bare" else {"serve": 0.05},
    )


def serving(serve_rate: float, bare_rate: float) -> ServingFigures:
    default = VariantFigures(
        variant=VARIANTS["default"],
        serve=app("serve", serve_rate, 40.0),
        bare=app("bare", bare_rate, 60.0),
        noop_bare=app("no-op uvicorn (ceiling)", 4 * bare_rate, 240.0),
        noop_serve=app("no-op Serve (ceiling)", 2 * serve_rate, 80.0),
        startup_s=30.0,
    )
    optimized = VariantFigures(
        variant=VARIANTS["throughput-optimized"],
        serve=app("serve", serve_rate, 41.0),
        direct=app("serve, direct", bare_rate, 59.0),
        bare=app("bare", bare_rate, 60.0),
        startup_s=35.0,
    )
    return ServingFigures(
        buyers=2000,
        seconds=5.0,
        step_seconds=2.0,
        concurrency=[1, 8],
        variants=[default, optimized],
    )


def floor() -> FloorFigures:
    lat = Latency(calls=100, p50_ms=14.0, p99_ms=22.0, mean_ms=15.0, per_s=66.7)
    return FloorFigures(
        buyers=2000,
        admin=lat,
        seller=lat,
        uncached=lat,
        capped=lat,
        batch=Latency(calls=5, p50_ms=50.0, p99_ms=60.0, mean_ms=52.0, per_s=19.2),
        batch_size=100,
        warm_up_s=0.4,
        noop=Latency(calls=100, p50_ms=0.02, p99_ms=0.1, mean_ms=0.03, per_s=3e4, cpu_p50_ms=0.02),
    )


def score() -> ScoreFigures:
    return ScoreFigures(
        pairs=30_000,
        buyers=2000,
        repeats=3,
        command="recsys score --model m --pairs p --out o",
        command_s=5.0,
        in_process_s={"1": 0.25, "2": 0.2},
    )


def quality() -> QualityFigures:
    seed = SeedFigures(
        seed=1,
        policy_value={"oracle": 100.0, "learned": 60.0, "nothing": 0.0},
        share_of_oracle={"oracle": 1.0, "learned": 0.6, "nothing": 0.0},
        redemption={"learned": 0.05, "blanket_discount": 0.02},
        issued={"offers": 10.0, "decision_units": 20.0, "tool_discount": 1.0},
        qini={"uplift": 0.1, "response": 0.05},
        ope={"true_value": 1.0, "dr_estimate": 1.1, "dr_relative_error": 0.1},
        item_ranking={"k": 10.0, "recall_mf": 0.3, "ndcg_mf": 0.2},
        learning={"cv_blanket": 0.5, "cv_blanket_se": 0.1},
        calibration={"slope": 0.9},
        seconds={"synthesize": 1.0},
    )
    return QualityFigures(
        buyers=800, per_seed=[seed], median=dict(seed.sections()), shipped=["blanket"]
    )


TRAINING_RUNS = [
    {"buyers": 100_000, "wall_s": 70.0, "peak_tree_mb": 2000.0, "exit_code": 0},
    {"buyers": 1_000_000, "wall_s": 780.0, "peak_tree_mb": 6000.0, "exit_code": 0},
]


def power() -> PowerFigures:
    seed = SeedPower(
        seed=1,
        decisions=20_000,
        blanket="reminder",
        blanket_share=0.25,
        oracle_gain=0.2,
        gain_over_blanket=0.15,
        dr_gain_over_blanket=0.1,
        se=0.1,
        t_oracle=1.5,
        t_at_goal=1.2,
    )
    return PowerFigures(effects="stage", buyers=10_000, goal=0.6, per_seed=[seed])


def document(serve_rate: float = 80.0, bare_rate: float = 100.0) -> dict[str, object]:
    figures = serving(serve_rate, bare_rate)
    parts = {
        "quality": report.part_record("q", quality().as_dict(), format_quality_markdown(quality())),
        "power": report.part_record("p", power().as_dict(), format_power_markdown([power()], "p")),
        "training": report.part_record(
            "t",
            {"runs": TRAINING_RUNS},
            "## Training at scale\n\ntable\n",
            training_targets(TRAINING_RUNS),
        ),
        "shapes": report.part_record("h", {"runs": []}, "## Training on real data shapes\n"),
        "serving": report.part_record(
            "s",
            figures.as_dict(),
            format_serving_markdown(figures, "s"),
            [throughput_target(figures)],
        ),
        "floor": report.part_record("f", floor().as_dict(), format_floor_markdown(floor(), "f")),
        "score": report.part_record("c", score().as_dict(), format_score_markdown(score(), "c")),
    }
    return report.merge(None, parts)


# --------------------------------------------------------------------------- targets


def test_serving_target_met_says_by_how_much() -> None:
    target = throughput_target(serving(80.0, 100.0))
    assert target.met is True
    assert "10 points above" in target.gap
    assert target.measured.startswith("80%")


def test_serving_target_missed_says_by_how_much_and_what_serve_needs() -> None:
    target = throughput_target(serving(35.0, 100.0))
    assert target.met is False
    assert "missed by 35 points" in target.gap
    assert "needs 70 rps" in target.gap
    assert "**missed**" in target.line()


def test_serving_target_not_judged_when_the_bare_app_met_no_rate() -> None:
    target = throughput_target(serving(0.0, 0.0))
    assert target.met is None
    assert target.verdict.startswith("not judged")


def test_training_targets_judge_the_million_buyer_run() -> None:
    wall, memory = training_targets(TRAINING_RUNS)
    assert wall.met is False
    assert "missed by 3.00 min, 30% over" in wall.gap
    assert memory.met is True
    assert "to spare" in memory.gap


def test_training_targets_judge_every_million_buyer_run_and_name_its_settings() -> None:
    large_data = {**TRAINING_RUNS[1], "wall_s": 480.0, "settings": "ray.heavy_stages=1"}
    targets = training_targets([*TRAINING_RUNS, large_data])
    assert [t.met for t in targets] == [False, True, True, True]
    assert targets[2].name == "training_wall [ray.heavy_stages=1]"
    assert "[ray.heavy_stages=1]" in targets[3].goal
    assert "2.00 min to spare" in targets[2].gap


def test_training_targets_not_judged_without_a_million_buyers() -> None:
    targets = training_targets(TRAINING_RUNS[:1])
    assert [t.met for t in targets] == [None, None]
    assert "100,000" in targets[0].gap


# --------------------------------------------------------------------------- report


def test_every_section_and_every_target_is_in_the_report() -> None:
    text = report.render(document(35.0, 100.0), analysis="### Where targets are missed and why")
    for title in report.PARTS.values():
        assert f"## {title}" in text
    assert text.count("**missed**") >= 2  # serving (table) and training wall
    assert "## Targets" in text
    assert "Measured " in text and " cores, " in text


def test_the_analysis_is_included_verbatim_between_markers() -> None:
    analysis = "### Where targets are missed and why\n\nThe proxy.\n\n### What would close it\n"
    text = report.render(document(), analysis=analysis)
    begin, end = text.index(report.BEGIN_ANALYSIS), text.index(report.END_ANALYSIS)
    assert analysis.strip() in text[begin:end]


def test_the_checked_in_analysis_stub_has_its_headings() -> None:
    text = report.ANALYSIS.read_text()
    assert "### Where targets are missed and why" in text
    assert "### What would close it" in text


def test_missing_and_failed_parts_are_said_so() -> None:
    failed = report.part_record("s", {}, "", error="Traceback: boom")
    text = report.render(report.merge(None, {"serving": failed}), analysis="")
    assert "Not measured yet" in text
    assert "**Failed**" in text and "boom" in text


def test_merge_replaces_the_parts_run_and_keeps_the_others() -> None:
    old = document()
    new = report.part_record("again", {"x": 1}, "## Serving\n")
    merged = report.merge(old, {"serving": new})
    assert merged["parts"]["serving"]["command"] == "again"
    assert merged["parts"]["quality"] == old["parts"]["quality"]  # type: ignore[index]
    assert list(merged["parts"]) == list(report.PARTS)


def test_write_gives_strict_json_and_markdown(tmp_path: Path) -> None:
    doc = document()
    doc["parts"]["floor"]["figures"]["nan"] = float("nan")  # type: ignore[index]
    path = report.write(doc, tmp_path, analysis="")
    raw = (tmp_path / "benchmarks.json").read_text()
    parsed = json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert parsed["parts"]["floor"]["figures"]["nan"] is None
    assert path.read_text().startswith("# Benchmarks")
    assert report.load_document(tmp_path / "benchmarks.json") == parsed


# --------------------------------------------------------------------------- round trips


def _json(value: dict[str, object]) -> dict[str, object]:
    return json.loads(json.dumps(report.finite(value)))


def test_each_app_is_also_a_share_of_its_stacks_no_op_ceiling() -> None:
    figures = serving(10.0, 20.0)
    default = figures.variants[0]
    assert default.ceiling_ratio(default.serve) == 0.5
    assert default.ceiling_ratio(default.bare) == 0.25
    assert default.noop_serve is not None and default.ceiling_ratio(default.noop_serve) is None
    assert figures.variants[1].ceiling_ratio(figures.variants[1].bare) is None  # not measured
    text = format_serving_markdown(figures, "x")
    assert "| default | serve | 10 | 0.50 | 0.50 |" in text
    assert "| default | bare | 20 | - | 0.25 |" in text
    assert "| default | no-op uvicorn (ceiling) | 80 | - | - |" in text
    bare, serve = ceiling_targets(figures)
    assert bare.met is False and bare.measured == "25% (20 vs 80 rps)"
    assert serve.met is False and "20 points short" in serve.gap
    close = dataclasses.replace(default, noop_bare=app("no-op uvicorn (ceiling)", 25.0, 1.0))
    met = ceiling_targets(dataclasses.replace(figures, variants=[close]))[0]
    assert met.met is True and met.gap == "10 points above"  # 20 of 25 rps: 80 %
    capped = dataclasses.replace(
        default, noop_bare=dataclasses.replace(close.noop_bare, max_rate=80.0, capped=True)
    )
    upper = ceiling_targets(dataclasses.replace(figures, variants=[capped]))[0]
    assert upper.measured == "<= 25% (20 vs >= 80 rps)"  # the ceiling is only a lower bound
    assert "| default | no-op uvicorn (ceiling) | >= 80 |" in format_serving_markdown(
        dataclasses.replace(figures, variants=[capped]), "x"
    )


def test_serving_figures_round_trip_through_json() -> None:
    figures = serving(80.0, 100.0)
    assert ServingFigures.from_dict(_json(figures.as_dict())) == figures


def test_floor_targets_judge_the_p50s() -> None:
    fast = Latency(calls=100, p50_ms=0.25, p99_ms=9.0, mean_ms=0.4, per_s=2500.0)
    figures = FloorFigures(**{**floor().__dict__, "admin": fast})
    one, batch = floor_targets(figures)
    assert one.met is True and "0.05 ms to spare" in one.gap  # the tail does not count
    assert batch.met is False and "missed by 45.00 ms" in batch.gap


def test_floor_markdown_states_each_call_against_the_no_op_ceiling() -> None:
    text = format_floor_markdown(floor(), "f")
    assert "| one buyer, admin | 100 | 14.000 | - | 700x |" in text
    assert "| no-op answer (the ceiling) | 100 | 0.020 | 0.020 | 1x |" in text


def test_floor_and_score_figures_round_trip_through_json() -> None:
    assert FloorFigures.from_dict(_json(floor().as_dict())) == floor()
    assert ScoreFigures.from_dict(_json(score().as_dict())) == score()


def test_a_target_round_trips() -> None:
    target = Target("x", "goal", "1", False, "missed by 1")
    assert Target.from_dict(_json(target.as_dict())) == target


# --------------------------------------------------------------------------- pieces


def test_rate_search_finds_the_last_rate_under_the_limit() -> None:
    calls: list[float] = []

    def server(rate: float) -> Load:  # p99 grows with the rate; 50 ms at 37 rps
        calls.append(rate)
        return load(rate, 50.0 * rate / 37.0, rate=rate)

    search = search_rate(server, start=10.0, refine=3)
    assert 32.0 <= search.best <= 37.0 and not search.capped
    assert len(search.steps) == len(calls)
    assert calls.count(40.0) == 2  # a miss is run once more


def test_rate_search_reports_zero_when_nothing_meets_the_limit() -> None:
    search = search_rate(lambda rate: load(rate, 500.0, rate=rate), start=10.0, refine=3)
    assert search.best == 0.0


def test_rate_search_accepts_a_miss_that_does_not_repeat() -> None:
    seen: dict[float, int] = {}

    def flaky(rate: float) -> Load:
        seen[rate] = seen.get(rate, 0) + 1
        hiccup = rate == 20.0 and seen[rate] == 1
        return load(rate, 200.0 if hiccup or rate > 20 else 10.0, rate=rate)

    assert search_rate(flaky, start=10.0, refine=0).best == 20.0


def test_rate_search_bisects_down_when_the_start_misses() -> None:
    search = search_rate(lambda r: load(r, 50.0 * r / 7.0, rate=r), start=10.0, refine=2)
    assert 5.0 <= search.best <= 7.0
    assert 20.0 not in {s.offered_rps for s in search.steps}  # never doubles past a known miss


def test_rate_search_tries_the_cap_itself_and_says_when_the_app_met_it() -> None:
    # 10, 20, 40, then 50 (not 80): an app that meets every rate is capped at 50, a lower
    # bound; one that misses from 45 on is searched below the cap as usual.
    fast = search_rate(lambda r: load(r, 1.0, rate=r), start=10.0, refine=2, max_rate=50.0)
    assert [s.offered_rps for s in fast.steps] == [10.0, 20.0, 40.0, 50.0]
    assert fast.best == 50.0 and fast.capped
    slow = search_rate(
        lambda r: load(r, 1.0 if r < 45 else 90.0, rate=r), start=10.0, refine=2, max_rate=50.0
    )
    assert 40.0 <= slow.best < 45.0 and not slow.capped


def test_median_load_takes_medians_and_sums_errors() -> None:
    a, b, c = load(10, 30.0, concurrency=8), load(20, 60.0, concurrency=8), load(30, 90.0, 8)
    merged = median_load([a, b, replace(c, errors=2)])
    assert (merged.rps, merged.p99_ms, merged.errors, merged.windows) == (20, 60.0, 2, 3)
    assert merged.requests == a.requests + b.requests + c.requests


def test_in_app_figures_are_deltas_of_the_counters() -> None:
    before = {"rank_seconds_sum": 1.0, "rank_seconds_count": 100.0, "rank_batches_total": 50.0}
    after = {
        "rank_seconds_sum": 3.0,
        "rank_seconds_count": 300.0,
        "rank_batches_total": 100.0,
        "rank_batched_requests_total": 200.0,
    }
    figures = in_app_figures(before, after)
    assert figures["rank_mean_ms"] == pytest.approx(10.0)
    assert figures["mean_batch_size"] == pytest.approx(200.0 / 50.0)


def test_profile_summary_groups_innermost_frames_by_package() -> None:
    lines = [
        "run (uvicorn/main.py:1);rank (serving/service.py:3);collect (polars/engine.py:9) 6",
        "run (uvicorn/main.py:1);send (uvicorn/protocols/h.py:5) 4",
    ]
    summary = summarize(lines, "bare app")
    assert summary.samples == 10
    assert summary.by_package == {"polars": 0.6, "fastapi/starlette/uvicorn": 0.4}
    assert summary.project_inclusive == {"serving/service.py rank": 0.6}
    assert package_of("x (recsys/policy/small.py:3)") == "project (recsys)"
    assert "polars 60%" in format_profiles([summary])[0]


def test_only_names_known_parts() -> None:
    assert parse_args(["--only", "serving,floor"]).parts == ["serving", "floor"]
    with pytest.raises(SystemExit):
        parse_args(["--only", "servng"])


def test_quick_sizes_are_small() -> None:
    assert max(b for _, b in QUICK.quality_runs) <= 1000 and max(QUICK.training_buyers) <= 10_000
    assert {w for w, _ in QUICK.quality_runs} == {"stage", "attributes", "uniform"}
    assert QUICK.serve_variants == ("default",)


def test_importing_the_benchmarks_does_not_import_ray() -> None:
    code = (
        "import sys, benchmarks.run, benchmarks.serve_report, benchmarks.loadgen; "
        "sys.exit('ray' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --------------------------------------------------------------------------- shapes


def _shape_run(name: str, wall: float, mb: float, code: int = 0) -> object:
    from benchmarks.shapes import FULL, ShapeRun

    shape = next(s for s in FULL if s.name == name)
    figures = {"wall_s": wall, "peak_tree_mb": mb, "largest_process_mb": mb / 2, "exit_code": code}
    figures["stage_s"] = {"response and uplift (full fit)": 40.0}
    rows = {"events": 1_008_389, "exposures": 524_748, "offer_items": 111_879}
    return ShapeRun(shape, figures, rows, ["no randomized campaign waves to hold out"])


def test_shape_targets_are_judged_at_the_issues_counts() -> None:
    from benchmarks.shapes import shape_targets

    runs = [
        _shape_run("grocery-coupons", 150.0, 2500.0),
        _shape_run("grocery-coupons x10", 900.0, 9000.0),
        _shape_run("email-experiment", 80.0, 2000.0),
    ]
    targets = {t.name: t for t in shape_targets(runs)}  # type: ignore[arg-type]
    assert set(targets) == {
        "shapes_wall[grocery-coupons]",
        "shapes_memory[grocery-coupons]",
        "shapes_memory[grocery-coupons x10]",
    }
    assert targets["shapes_wall[grocery-coupons]"].met is True
    assert targets["shapes_memory[grocery-coupons]"].met is True
    assert targets["shapes_memory[grocery-coupons x10]"].met is False
    assert "missed by 0.79 GiB" in targets["shapes_memory[grocery-coupons x10]"].gap
    failed = shape_targets([_shape_run("grocery-coupons", 10.0, 10.0, code=1)])  # type: ignore[list-item]
    assert [t.met for t in failed] == [False, False]


def test_shapes_section_has_every_run_its_stages_and_what_it_skipped() -> None:
    from benchmarks.shapes import QUICK, format_shapes_markdown, shape_targets

    runs = [_shape_run("grocery-coupons", 150.0, 2500.0)]
    text = format_shapes_markdown(runs, "make bench")  # type: ignore[arg-type]
    assert text.startswith("## Training on real data shapes")
    assert "| grocery-coupons | 1,008,389 | 524,748 | 111,879 | 150.0 | 2.44 |" in text
    assert "response and uplift (full fit) | 40.0" in text
    assert "- no randomized campaign waves to hold out" in text
    assert "**Target**: grocery-coupons: recsys train under 3 min: met" in text
    assert all(s.wall_target_s is None and s.memory_target_mb is None for s in QUICK)
    assert shape_targets([]) == []
    assert "shapes" in report.PARTS and parse_args(["--only", "shapes"]).parts == ["shapes"]
