"""The training-at-scale benchmark's parts: memory sampling, parsing, the markdown."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.training_scale import (
    MFOverhead,
    TrainingFigures,
    TreeSampler,
    format_training_markdown,
    parse_output,
    process_memory,
    process_tree,
    run_metrics,
    settings_label,
    split_metrics,
)

GRANDCHILD = "b = bytearray(32 << 20); import time; time.sleep(3)"
CHILD = f"""
import subprocess, sys, time
block = bytearray(64 << 20)  # 64 MiB, touched
child = subprocess.Popen([sys.executable, "-c", {GRANDCHILD!r}])
time.sleep(3)
child.wait()
"""


def test_sampler_sums_the_whole_process_tree() -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD])
    try:
        with TreeSampler(proc.pid, interval=0.1) as sampler:
            time.sleep(1.5)
            assert len(process_tree(proc.pid)) == 2  # the child and its own child
        proc.wait()
    finally:
        proc.kill()
    peak = sampler.result
    assert peak.samples > 3
    assert peak.peak_bytes > 90 << 20  # both blocks, counted once each
    assert peak.kind in ("pss", "rss")
    assert sum(peak.at_peak.values()) == peak.peak_bytes
    assert 0 < peak.cpu_s < 10  # the three processes, mostly asleep


def test_process_memory_of_a_gone_process_is_zero() -> None:
    size, _ = process_memory(os.getpid())
    assert size > 0
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert process_memory(proc.pid) == (0, "rss")


def test_stage_lines_and_run_id_are_parsed() -> None:
    lines = [
        "[   7.7s] queued   matrix factorization (held-out fit)\n",
        "[  37.4s] finished matrix factorization (held-out fit) (29.7s)\n",
        "[ 143.1s] finished evaluation: policy value, uplift, targeting, calibration (29.7s)\n",
        "MLflow run id: fd73bac6af09 (sqlite:////tmp/x.db)\n",
    ]
    finished, run_id = parse_output(lines)
    assert finished == {
        "matrix factorization (held-out fit)": 37.4,
        "evaluation: policy value, uplift, targeting, calibration": 143.1,
    }
    assert run_id == "fd73bac6af09"


def test_metrics_are_read_from_the_store_and_named_as_printed(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE runs (run_uuid TEXT, start_time INTEGER)")
        conn.execute("CREATE TABLE latest_metrics (run_uuid TEXT, key TEXT, value REAL)")
        conn.execute("INSERT INTO runs VALUES ('r1', 1), ('r2', 2)")
        conn.executemany(
            "INSERT INTO latest_metrics VALUES ('r2', ?, ?)",
            [
                ("seconds.stage_ matrix factorization _held-out fit_", 9.5),
                ("cpu_seconds.stage_ matrix factorization _held-out fit_", 8.5),
                ("seconds.pipeline", 100.0),
                ("peak_rss_mb.matrix factorization _held-out fit_", 800.0),
                ("peak_rss_mb.driver", 600.0),
                ("policy_value_dr", 0.16),
            ],
        )
    run_id, metrics = run_metrics(db)
    assert run_id == "r2" and len(metrics) == 6
    parsed = split_metrics(metrics, ["matrix factorization (held-out fit)"])
    assert parsed.stage_s == {"matrix factorization (held-out fit)": 9.5}
    assert parsed.stage_cpu_s == {"matrix factorization (held-out fit)": 8.5}
    assert parsed.task_peak_rss_mb == {
        "matrix factorization (held-out fit)": 800.0,
        "driver": 600.0,
    }
    assert parsed.run_s == {"pipeline": 100.0}


def _run(buyers: int, events: int, wall: float, peak: float, settings: str = "") -> TrainingFigures:
    return TrainingFigures(
        settings=settings,
        data=f"m{buyers}",
        buyers=buyers,
        events=events,
        exit_code=0,
        wall_s=wall,
        peak_tree_mb=peak,
        cpu_s=wall * 13 / 7,
        memory_kind="pss",
        peak_tree_rss_mb=peak * 1.2,
        peak_at_s=wall / 2,
        largest_process_mb=peak / 2,
        stage_s={"matrix factorization (full fit)": wall / 10},
        stage_cpu_s={"matrix factorization (full fit)": wall / 11},
        task_peak_rss_mb={"driver": 600.0, "matrix factorization (full fit)": peak / 3},
        run_s={"pipeline": wall * 0.8, "total": wall * 0.9},
    )


def test_markdown_has_runs_stages_growth_target_and_overhead() -> None:
    runs = [
        _run(100_000, 2_000_000, 120.0, 3000.0),
        _run(1_000_000, 21_000_000, 700.0, 9000.0),
        _run(1_000_000, 21_000_000, 500.0, 6000.0, "ray.heavy_stages=1"),
    ]
    overhead = MFOverhead(
        data="m1",
        buyers=80_000,
        items=1_800,
        nnz=900_000,
        factors=64,
        iterations=15,
        threads=1,
        repeats=3,
        stage_s=9.0,
        build_s=0.8,
        implicit_s=8.0,
        ratio=1.125,
    )
    text = format_training_markdown(runs, [overhead])
    assert "| 1,000,000 | defaults | 21,000,000 | 700.0 | 1,300 | 9,000 (pss) |" in text
    assert "| 1,000,000 | `ray.heavy_stages=1` | 21,000,000 | 500.0 |" in text
    assert "| matrix factorization (full fit) | 12.0 (11) | 70.0 (64) | 50.0 (45) |" in text
    assert "1,000,000 buyers (ray.heavy_stages=1) |" in text
    # growth compares runs with the same settings: the defaults at both sizes
    assert "wall time 5.8x, peak memory 3.0x" in text
    assert "missed (11.7 min, 8.79 GiB)" in text
    assert "| 80,000 | 1,800 | 900,000 | 1 | 9.00 | 0.80 | 8.00 | 1.12 |" in text
    assert runs[0].as_dict()["stage_s"] == runs[0].stage_s


def test_settings_label_keeps_only_the_set_overrides() -> None:
    args = ["--set", "evaluation.refit=false", "--verbose", "--set", "ray.heavy_stages=1"]
    assert settings_label(args) == "evaluation.refit=false, ray.heavy_stages=1"
    assert settings_label([]) == ""
