"""`recsys score` throughput: pairs per second, end to end and in-process.

End to end is the command a user runs, timed from start to exit (Python start-up, model
load, reading the target list, scoring, writing the answer); in-process is
`PromoRanker.score` alone on the same pairs, with one thread and with every core. Both
score the truth's offers of a prepared marketplace (`benchmarks.market`).

    python -m benchmarks.score_bench --market DIR [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.market import ServedMarket, load_market


@dataclass(frozen=True)
class ScoreFigures:
    """Median seconds and pairs per second of scoring one target list."""

    pairs: int
    buyers: int
    repeats: int
    command: str
    """The timed command line (paths as they were)."""
    command_s: float
    """Median wall seconds of the command, start to exit."""
    in_process_s: dict[str, float] = field(default_factory=dict)
    """Median seconds of `PromoRanker.score`, by thread count ("1", "2", ...)."""

    @property
    def command_pairs_per_s(self) -> float:
        return self.pairs / self.command_s

    def in_process_pairs_per_s(self) -> dict[str, float]:
        return {t: self.pairs / s for t, s in self.in_process_s.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "command_pairs_per_s": self.command_pairs_per_s,
            "in_process_pairs_per_s": self.in_process_pairs_per_s(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScoreFigures:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in names})


def recsys_executable() -> list[str]:
    """This environment's `recsys` console script (or its entry point)."""
    script = Path(sys.executable).with_name("recsys")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cli.main import main; main()"]


def measure_score(market: ServedMarket, repeats: int = 3) -> ScoreFigures:
    """Time `recsys score` and `PromoRanker.score` on the market's pairs (module docstring)."""
    import polars as pl

    from recsys.models.ranker import PromoRanker

    out = market.root / "scores.parquet"
    command = [
        *recsys_executable(),
        "score",
        "--model",
        str(market.model),
        "--pairs",
        str(market.pairs),
        "--out",
        str(out),
    ]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command_runs = []
    for _ in range(repeats):
        began = time.perf_counter()
        subprocess.run(command, check=True, env=env, capture_output=True)
        command_runs.append(time.perf_counter() - began)

    pairs = pl.read_parquet(market.pairs)
    ranker = PromoRanker.load(market.model)
    ranker.score(pairs.head(1000))  # load code paths
    threads = sorted({1, os.cpu_count() or 1})
    in_process: dict[str, float] = {}
    for t in threads:
        runs = []
        for _ in range(repeats):
            began = time.perf_counter()
            ranker.score(pairs, threads=t)
            runs.append(time.perf_counter() - began)
        in_process[str(t)] = statistics.median(runs)
    return ScoreFigures(
        pairs=pairs.height,
        buyers=market.buyers,
        repeats=repeats,
        command=" ".join(["recsys", *command[1:]]),
        command_s=statistics.median(command_runs),
        in_process_s=in_process,
    )


def format_score_markdown(figures: ScoreFigures, command: str) -> str:
    """The BENCHMARKS.md section of `recsys score`."""
    rows = [
        f"| `recsys score`, end to end | {figures.command_s:.2f} "
        f"| {figures.command_pairs_per_s:,.0f} |"
    ]
    for threads, seconds in figures.in_process_s.items():
        rows.append(
            f"| `PromoRanker.score`, {threads} thread{'s' if threads != '1' else ''} "
            f"| {seconds:.2f} | {figures.pairs / seconds:,.0f} |"
        )
    return "\n".join(
        [
            "## `recsys score`: pairs per second",
            "",
            f"Reproduce: `{command}`. {figures.pairs:,} pairs (every offer the truth made on a "
            f"{figures.buyers:,}-buyer marketplace), medians of {figures.repeats} runs. End to "
            "end includes Python start-up, loading the model, reading the pairs and writing "
            f"the scores: `{figures.command}`.",
            "",
            "| what | seconds | pairs per second |",
            "|---|---:|---:|",
            *rows,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--market", type=Path, required=True, help="a prepared market dir")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    figures = measure_score(load_market(args.market), args.repeats)
    print(json.dumps(figures.as_dict(), indent=1))


if __name__ == "__main__":
    main()
