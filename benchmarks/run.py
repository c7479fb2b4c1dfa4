"""`make bench`: every benchmark of issue 7, written to BENCHMARKS.md and benchmarks.json.

    python -m benchmarks.run [--quick]
        [--only quality,power,training,shapes,serving,floor,score]
        [--out DIR] [--work DIR] [--data-100k DIR] [--data-1m DIR]

Parts, in order (each a module of its own, runnable alone):

- quality (`benchmarks.quality`): the engine's policy against the oracle and baselines on
  the synthetic marketplace's ground truth, uplift Qini, OPE error, MF against
  popularity and personal frequency; medians over seeds.
- power (`benchmarks.power`): on the same worlds, sizes and seeds, how far the
  truth-optimal policy beats the best blanket on the decisions the engine learns from,
  in standard errors of the engine's own doubly robust estimate: what any learner could
  show at all.
- training (`benchmarks.training_scale`): `recsys train` end to end at 100,000 and
  1,000,000 buyers, wall time and peak memory per stage and in all, and the MF stage
  against `implicit` on the same matrix. Data comes from `--data-100k/--data-1m`, else
  `recsys data synth` writes it under the work directory (reused on the next run).
- shapes (`benchmarks.shapes`): `recsys train` on the data shapes of issue 17 (grocery
  coupons at the export's counts and at ten times, an e-mail experiment, customers known
  by attributes alone), wall time and peak memory of the whole process tree.
- serving (`benchmarks.serve_bench`): Ray Serve against bare uvicorn, per Serve variant.
- floor (`benchmarks.floor`): ranking one buyer in-process, the floor under serving.
- score (`benchmarks.score_bench`): `recsys score` pairs per second.

`--only` runs some parts and keeps the other parts' last figures from the existing
benchmarks.json in `--out`. `--quick` uses small sizes (CI, a few minutes); the default
sizes take about an hour on a 2-core machine. A part that fails is reported as failed
(its error in its section) and the command exits non-zero after writing both files.
"""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.market import ServedMarket, prepare_market
from benchmarks.serve_bench import Plan
from benchmarks.targets import Target, training_targets

UNSIZED_SETTINGS = ("--set", "ray.large_data_from_events=null")
"""The shipped defaults without their large-data sizing (`ray.large_data_from_events`):
every heavy stage at once and a second fit on all the data, what the defaults did at
every size before 2026-12-05, so the report shows what the sizing buys."""

Section = tuple[dict[str, Any], str, list[Target]]
"""What a part returns: its figures (JSON-ready), its Markdown section, its targets."""


@dataclass(frozen=True)
class Sizes:
    """How big each part runs."""

    quality_runs: tuple[tuple[str, int], ...]
    """(world, buyers) of each quality measurement."""
    quality_seeds: tuple[int, ...]
    training_buyers: tuple[int, ...]
    mf_repeats: int
    serve_buyers: int
    serve_variants: tuple[str, ...]
    serve_plan: Plan = field(default_factory=Plan)
    floor_requests: int = 500
    score_repeats: int = 3


FULL = Sizes(
    quality_runs=(
        ("stage", 10_000),
        ("stage", 20_000),
        ("attributes", 10_000),
        ("uniform", 10_000),
        ("stage", 2_000),
    ),
    quality_seeds=(1, 2, 3, 4, 5),
    training_buyers=(100_000, 1_000_000),
    mf_repeats=3,
    serve_buyers=20_000,
    serve_variants=("default", "no-batching", "throughput-optimized"),
    serve_plan=Plan(seconds=5.0, warmup=1.5, repeats=2, step_seconds=3.0),
)
QUICK = Sizes(
    quality_runs=(("stage", 800), ("attributes", 800), ("uniform", 800)),
    quality_seeds=(1,),
    training_buyers=(5_000,),
    mf_repeats=1,
    serve_buyers=2_000,
    serve_variants=("default",),
    serve_plan=Plan(
        seconds=3.0,
        warmup=1.0,
        concurrency=(8,),
        repeats=1,
        step_seconds=2.0,
        step_warmup=0.5,
        step_requests=15,
        refine=2,
        batch_concurrency=2,
        profile_seconds=4.0,
    ),
    floor_requests=100,
    score_repeats=1,
)


def _say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Bench:
    """One `make bench` invocation: its sizes, directories and the shared served market."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.sizes = QUICK if args.quick else FULL
        if args.serve_variants:
            self.sizes = replace(self.sizes, serve_variants=tuple(args.serve_variants))
        self.work: Path = args.work.resolve()
        self._market: ServedMarket | None = None

    def command(self, part: str) -> str:
        """The command that reproduces one part."""
        extra = [f"--only {part}"] + (["--quick"] if self.quick else [])
        if part == "training":
            for flag in ("data_100k", "data_1m"):
                if getattr(self.args, flag):
                    extra.append(f"--{flag.replace('_', '-')} {getattr(self.args, flag)}")
        if part == "serving" and self.args.serve_variants:
            extra.append("--serve-variants " + " ".join(self.args.serve_variants))
        return f'make bench BENCH_ARGS="{" ".join(extra)}"'

    def market(self) -> ServedMarket:
        """The marketplace serving, floor and score share (made once per invocation)."""
        if self._market is None:
            buyers = self.sizes.serve_buyers
            _say(f"preparing the served {buyers:,}-buyer marketplace")
            self._market = prepare_market(buyers, self.work / f"served-{buyers}")
        return self._market

    # ------------------------------------------------------------------------ parts

    def quality(self) -> Section:
        from benchmarks.quality import format_quality_markdown, measure_quality
        from benchmarks.targets import quality_targets

        s = self.sizes
        measured = []
        for world, buyers in s.quality_runs:
            _say(f"quality: world {world}, {buyers:,} buyers, seeds {s.quality_seeds}")
            measured.append(measure_quality(buyers, s.quality_seeds, self.work / "quality", world))
        targets = quality_targets([f.as_dict() for f in measured])
        markdown = "\n".join(format_quality_markdown(f) for f in measured)
        markdown += "\n" + "\n\n".join(t.line() for t in targets) + "\n"
        return {"runs": [f.as_dict() for f in measured]}, markdown, targets

    def power(self) -> Section:
        from benchmarks.power import format_power_markdown, measure_power

        s = self.sizes
        measured = []
        for world, buyers in s.quality_runs:
            _say(f"power: world {world}, {buyers:,} buyers, seeds {s.quality_seeds}")
            measured.append(measure_power(buyers, s.quality_seeds, self.work / "power", world))
        markdown = format_power_markdown(measured, self.command("power"))
        return {"runs": [f.as_dict() for f in measured]}, markdown, []

    def training(self) -> Section:
        api = training_api()
        given = {100_000: self.args.data_100k, 1_000_000: self.args.data_1m}
        datasets = [
            given.get(n) or synthesize(n, self.work / f"m{n}") for n in self.sizes.training_buyers
        ]
        runs = []
        measure = api["measure_training"]
        echo = {"echo": lambda line: print(f"  {line}", file=sys.stderr, flush=True)}
        # Every size with the shipped defaults, the largest also without their sizing.
        plan = [(data, ()) for data in datasets] + [(datasets[-1], UNSIZED_SETTINGS)]
        for data, extra in plan:
            _say(f"training on {data} {' '.join(extra)}".rstrip())
            where = self.work / "training" / (data.name + ("-unsized" if extra else ""))
            runs.append(measure(data, where, extra_args=extra, **_accepted(measure, echo)))
        overhead = []
        for data in datasets:
            _say(f"MF stage against implicit on {data}")
            repeats = {"repeats": self.sizes.mf_repeats}
            overhead.append(api["mf_overhead"](data, **_accepted(api["mf_overhead"], repeats)))
        # Its own target line judges the largest run, even a small one: ours (below) judge
        # the 1,000,000-buyer run and say by how much.
        command = {"command": self.command("training"), "targets": None}
        format_markdown = api["format_training_markdown"]
        markdown = format_markdown(runs, overhead, **_accepted(format_markdown, command))
        figures = {
            "runs": [r.as_dict() for r in runs],
            "mf_overhead": [o.as_dict() for o in overhead],
        }
        targets = training_targets(figures["runs"])
        markdown = markdown.rstrip("\n") + "\n\n" + "\n\n".join(t.line() for t in targets) + "\n"
        return figures, markdown, targets

    def shapes(self) -> Section:
        from benchmarks.shapes import (
            FULL,
            QUICK,
            format_shapes_markdown,
            measure_shapes,
            shape_targets,
        )

        def echo(line: str) -> None:
            print(f"  {line}", file=sys.stderr, flush=True)

        runs = measure_shapes(QUICK if self.quick else FULL, self.work / "shapes", echo=echo)
        markdown = format_shapes_markdown(runs, self.command("shapes"))
        return {"runs": [r.as_dict() for r in runs]}, markdown, shape_targets(runs)

    def serving(self) -> Section:
        from benchmarks.serve_bench import measure_serving
        from benchmarks.serve_report import (
            ceiling_targets,
            format_serving_markdown,
            throughput_target,
        )

        plan = self.sizes.serve_plan
        figures = measure_serving(
            self.sizes.serve_buyers,
            plan.seconds,
            plan.concurrency,
            self.sizes.serve_variants,
            self.work / "serving",
            market=self.market(),
            plan=plan,
        )
        markdown = format_serving_markdown(figures, self.command("serving"))
        return figures.as_dict(), markdown, [throughput_target(figures), *ceiling_targets(figures)]

    def floor(self) -> Section:
        from benchmarks.floor import floor_targets, format_floor_markdown, measure_floor

        figures = measure_floor(self.market(), self.sizes.floor_requests)
        targets = floor_targets(figures)
        markdown = format_floor_markdown(figures, self.command("floor"))
        markdown += "\n" + "\n\n".join(t.line() for t in targets) + "\n"
        return figures.as_dict(), markdown, targets

    def score(self) -> Section:
        from benchmarks.score_bench import format_score_markdown, measure_score

        figures = measure_score(self.market(), self.sizes.score_repeats)
        return figures.as_dict(), format_score_markdown(figures, self.command("score")), []

    def run(self, part: str) -> dict[str, Any]:
        """Measure one part; its benchmarks.json entry (with the error if it failed)."""
        measure: Callable[[], Section] = getattr(self, part)
        started, host, began = report.now(), report.machine(), time.perf_counter()
        _say(f"{part}: starting")
        try:
            figures, markdown, targets = measure()
            error = ""
        except Exception:
            figures, markdown, targets = {}, "", []
            error = "".join(traceback.format_exc().splitlines(keepends=True)[-30:])
            _say(f"{part}: FAILED\n{error}")
        wall = time.perf_counter() - began
        _say(f"{part}: {wall / 60:.1f} min")
        return report.part_record(
            self.command(part), figures, markdown, targets, started, wall, host, error
        )


def training_api() -> dict[str, Callable[..., Any]]:
    """The functions of `benchmarks.training_scale` the training part calls.

    Looked up by name, so that a missing module or a renamed function fails this part
    only, saying which name was missing.
    """
    from benchmarks import training_scale

    names = ("measure_training", "mf_overhead", "format_training_markdown")
    missing = [n for n in names if not callable(getattr(training_scale, n, None))]
    if missing:
        raise RuntimeError(f"benchmarks.training_scale lacks {missing}: update benchmarks/run.py")
    return {n: getattr(training_scale, n) for n in names}


def _accepted(function: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `function` takes (a renamed parameter falls back to its
    default rather than failing the part)."""
    names = inspect.signature(function).parameters
    return {k: v for k, v in kwargs.items() if k in names}


def synthesize(buyers: int, out: Path, seed: int = 1) -> Path:
    """`recsys data synth` into `out`, unless a previous run already made it there."""
    done = out / ".synthesized"
    stamp = f"buyers={buyers} seed={seed}\n"
    if done.exists() and done.read_text() == stamp:
        return out
    from benchmarks.score_bench import recsys_executable

    _say(f"recsys data synth: {buyers:,} buyers into {out}")
    argv = [*recsys_executable(), "data", "synth", "--out", str(out)]
    argv += ["--buyers", str(buyers), "--seed", str(seed), "--overwrite"]
    subprocess.run(argv, check=True)
    done.write_text(stamp)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument(
        "--only", default=",".join(report.PARTS), help="comma-separated parts to run"
    )
    parser.add_argument("--out", type=Path, default=Path("."), help="where the files go")
    parser.add_argument(
        "--work", type=Path, default=Path(".recsys/bench"), help="data, models, logs, profiles"
    )
    parser.add_argument("--data-100k", type=Path, help="an existing 100,000-buyer dataset")
    parser.add_argument("--data-1m", type=Path, help="an existing 1,000,000-buyer dataset")
    parser.add_argument("--serve-variants", nargs="+", help="Serve variants to compare")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in args.parts if p not in report.PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(report.PARTS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    bench = Bench(args)
    args.work.mkdir(parents=True, exist_ok=True)
    parts = {name: bench.run(name) for name in args.parts}
    document = report.merge(report.load_document(args.out / "benchmarks.json"), parts)
    path = report.write(document, args.out)
    targets = [Target.from_dict(t) for p in parts.values() for t in p["targets"]]
    print("\n".join(report.format_targets_table(targets)) if targets else "")
    print(f"wrote {path} and {args.out / 'benchmarks.json'}")
    failed = [name for name, part in parts.items() if part["error"]]
    if failed:
        sys.exit(f"benchmark parts failed: {', '.join(failed)} (see {path})")


if __name__ == "__main__":
    main()
