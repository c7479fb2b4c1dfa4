"""`make bench`: measured figures, written to BENCHMARKS.md and benchmarks.json.

Machines here are shared and noisy: every figure is the median of several runs, and
ratios are measured in the same run. `--quick` uses small sizes (CI); the default sizes
are the ones the closing notes quote. Issue 7 extends this with training at scale and
serving throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from recsys.data import load_dataset
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.models.ranker import PromoRanker


def _median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def measure(buyers: int, repeats: int, work: Path) -> dict[str, float]:
    """Synthesis, training and scoring figures for one marketplace size."""
    data = work / f"m{buyers}"
    figures: dict[str, float] = {"buyers": buyers}
    figures["synth_s"] = _median_seconds(
        lambda: generate(SyntheticConfig(buyers=buyers, seed=1), data, overwrite=True), repeats
    )
    dataset = load_dataset(data)
    figures["events"] = dataset.events.height
    figures["fit_s"] = _median_seconds(lambda: PromoRanker().fit(dataset), 1)
    ranker = PromoRanker().fit(dataset)
    pairs = pl.read_parquet(data / "truth" / "offers.parquet").select("buyer_id", "offer_id")
    figures["score_pairs"] = pairs.height
    ranker.score(pairs.head(1000))  # warm caches
    for threads in (1, 2):
        seconds = _median_seconds(lambda t=threads: ranker.score(pairs, threads=t), repeats)
        figures[f"score_pairs_per_s_{threads}t"] = pairs.height / seconds
    return figures


def write_report(results: list[dict[str, float]], command: str, out: Path) -> None:
    machine = f"{platform.node()}: {os.cpu_count()} cores, {platform.python_version()}"
    lines = [
        "# Benchmarks",
        "",
        f"Reproduce: `{command}` (medians; machine: {machine}).",
        "",
        "| buyers | events | synth s | fit s | pairs scored | pairs/s, 1 thread | pairs/s, 2 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['buyers']:,.0f} | {r['events']:,.0f} | {r['synth_s']:.1f} | {r['fit_s']:.1f} "
            f"| {r['score_pairs']:,.0f} | {r['score_pairs_per_s_1t']:,.0f} "
            f"| {r['score_pairs_per_s_2t']:,.0f} |"
        )
    lines += ["", "Quality figures on the synthetic ground truth: see docs/models.md.", ""]
    (out / "BENCHMARKS.md").write_text("\n".join(lines))
    (out / "benchmarks.json").write_text(
        json.dumps({"command": command, "machine": machine, "results": results}, indent=1)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    sizes = (500,) if args.quick else (2_000, 20_000)
    repeats = 1 if args.quick else 3
    with tempfile.TemporaryDirectory() as work:
        results = [measure(n, repeats, Path(work)) for n in sizes]
    command = "make bench" + (" BENCH_ARGS=--quick" if args.quick else "")
    write_report(results, command, args.out)
    print((args.out / "BENCHMARKS.md").read_text())


if __name__ == "__main__":
    main()
