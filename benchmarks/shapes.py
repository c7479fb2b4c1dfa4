"""Training on the data shapes people bring (issue 17): `recsys train` per profile.

For each shape, `recsys data synth --profile ...` writes the dataset (once: a stamp file
says with which arguments, and a later run reuses it), then `benchmarks.training_scale`
runs ``recsys train --data DIR`` with the shipped defaults and samples the memory of its
whole process tree (PSS, see that module). The shapes, at the counts of the real exports
the issue measured:

- `grocery-coupons`: one seller, 92,000 items, 2,500 households x ~400 purchase lines,
  1,200 item-scoped coupons (111,000 `offer_items`), ~525,000 exposures without
  propensities or control; targets: under 3 minutes and 3 GiB;
- `grocery-coupons x10`: the same at ten times every count; target: under 8 GiB;
- `email-experiment`: 64,000 customers, two reminders in one wave and a control third;
- `attributes-experiment`: 126,000 customers known by attributes alone, one offer
  randomized 50/50 over 85,000 of them.

    python -m benchmarks.shapes [--quick] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.targets import Target, upper_bound


@dataclass(frozen=True)
class Shape:
    """One dataset shape to train on, and what it must meet."""

    name: str
    profile: str
    synth_args: tuple[str, ...] = ()
    wall_target_s: float | None = None
    memory_target_mb: float | None = None
    seed: int = 1


FULL = (
    Shape("grocery-coupons", "grocery-coupons", (), 180.0, 3 * 1024.0),
    Shape("grocery-coupons x10", "grocery-coupons", ("--scale", "10"), None, 8 * 1024.0),
    Shape("email-experiment", "email-experiment"),
    Shape("attributes-experiment", "attributes-experiment"),
    # At the export's counts (~1,000 purchases) the oracle's whole gain is about two
    # standard errors of a policy value: the 10x experiment is where the uplift learned
    # from the attributes can be shown on held-out buyers.
    Shape("attributes-experiment x10", "attributes-experiment", ("--scale", "10")),
)
QUICK = (
    Shape("grocery-coupons (5 %)", "grocery-coupons", ("--scale", "0.05")),
    Shape("email-experiment (2,000)", "email-experiment", ("--buyers", "2000")),
    Shape("attributes-experiment (6,000)", "attributes-experiment", ("--buyers", "6000")),
)
"""Small sizes for CI: no targets (they are set at the real counts)."""


@dataclass(frozen=True)
class ShapeRun:
    """One shape's `recsys train`: its figures (`TrainingFigures.as_dict()`) and rows."""

    shape: Shape
    figures: dict[str, Any]
    rows: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """What the run said it skipped and why (`run_notes`)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def synthesize_shape(shape: Shape, root: Path, say: Callable[[str], None] = print) -> Path:
    """`recsys data synth --profile ...` into a directory of `root`, unless there already."""
    from benchmarks.training_scale import recsys_command

    slug = "".join(c if c.isalnum() else "-" for c in shape.name).strip("-")
    out = root / slug
    stamp = out / ".synthesized"
    argv_tail = ["--profile", shape.profile, *shape.synth_args, "--seed", str(shape.seed)]
    wanted = " ".join(argv_tail) + "\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return out
    say(f"recsys data synth {' '.join(argv_tail)} into {out}")
    argv = [*recsys_command(), "data", "synth", "--out", str(out), *argv_tail, "--overwrite"]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    stamp.write_text(wanted)
    return out


def measure_shapes(
    shapes: Sequence[Shape], work: Path, echo: Callable[[str], None] | None = None
) -> list[ShapeRun]:
    """Synthesize (or reuse) and train on each shape; its figures and the data's rows."""
    from benchmarks.training_scale import measure_training, table_rows

    say = echo or (lambda line: print(line, file=sys.stderr))
    runs = []
    for shape in shapes:
        data = synthesize_shape(shape, work / "data", say)
        say(f"recsys train on {shape.name} ({data})")
        slug = data.name
        figures = measure_training(data, work / "runs" / slug, echo=echo)
        rows = {
            t: table_rows(data, t)
            for t in ("items", "events", "buyers", "offer_items", "exposures", "redemptions")
        }
        notes = run_notes(work / "runs" / slug, figures.run_id)
        runs.append(ShapeRun(shape, figures.as_dict(), rows, notes))
    return runs


def run_notes(run_dir: Path, run_id: str = "") -> list[str]:
    """What a run said it skipped and noted: its fit report's `skipped:` and `note:` lines
    (the MLflow artifact `fit_report.txt`), then the result's `note:` lines."""
    reports = sorted(run_dir.glob(f"artifacts/{run_id or '*'}/artifacts/fit_report.txt"))
    lines = reports[-1].read_text().splitlines() if reports else []
    log = run_dir / "train.log"
    lines += log.read_text().splitlines() if log.exists() else []
    out: list[str] = []
    for line in lines:
        text = line.strip()
        for prefix in ("skipped: ", "note: "):
            if text.startswith(prefix) and text not in out:
                out.append(text)
    return out


def shape_targets(runs: Sequence[ShapeRun]) -> list[Target]:
    """Each shape's wall-time and memory targets, judged on its run."""
    out = []
    for run in runs:
        s, f = run.shape, run.figures
        failed = int(f.get("exit_code", 0)) != 0
        for target, value, unit, scale, kind in (
            (s.wall_target_s, float(f.get("wall_s", 0.0)), "min", 60.0, "wall"),
            (s.memory_target_mb, float(f.get("peak_tree_mb", 0.0)), "GiB", 1024.0, "memory"),
        ):
            if target is None:
                continue
            goal = f"{s.name}: recsys train under {target / scale:g} {unit}"
            if kind == "memory":
                goal = f"{s.name}: recsys train's peak memory under {target / scale:g} {unit}"
            name = f"shapes_{kind}[{s.name}]"
            if failed:
                out.append(Target(name, goal, "failed", False, f"exit code {f.get('exit_code')}"))
            else:
                out.append(upper_bound(name, goal, value, target, unit, scale=scale))
    return out


def format_shapes_markdown(runs: Sequence[ShapeRun], command: str) -> str:
    """The BENCHMARKS.md section: one row per shape, then what each run skipped."""
    lines = [
        "## Training on real data shapes",
        "",
        f"Reproduce: `{command}`. `recsys train --data DIR` with the shipped defaults on each "
        "synthetic profile (`recsys data synth --profile ...`, docs/synthetic.md); memory is "
        "the peak of the summed PSS of the command's whole process tree.",
        "",
        "| shape | events | exposures | offer_items | wall s | peak memory GiB "
        "| largest process GiB | exit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        f, r = run.figures, run.rows
        lines.append(
            f"| {run.shape.name} | {r.get('events', 0):,} | {r.get('exposures', 0):,} "
            f"| {r.get('offer_items', 0):,} | {float(f.get('wall_s', 0)):.1f} "
            f"| {float(f.get('peak_tree_mb', 0)) / 1024:.2f} "
            f"| {float(f.get('largest_process_mb', 0)) / 1024:.2f} | {f.get('exit_code')} |"
        )
    stages = sorted({s for run in runs for s in run.figures.get("stage_s", {})})
    if stages:
        lines += ["", "Stage tasks, wall seconds:", ""]
        lines.append("| stage | " + " | ".join(run.shape.name for run in runs) + " |")
        lines.append("|---|" + "---:|" * len(runs))
        for stage in stages:
            cells = [
                f"{run.figures['stage_s'][stage]:.1f}" if stage in run.figures["stage_s"] else "-"
                for run in runs
            ]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    for run in runs:
        if run.notes:
            lines += ["", f"{run.shape.name}, what the run said:", ""]
            lines += [f"- {note}" for note in run.notes]
    targets = shape_targets(runs)
    if targets:
        lines += ["", *[t.line() for t in targets]]
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, no targets")
    parser.add_argument("--work", type=Path, default=Path(".recsys/bench/shapes"))
    parser.add_argument("--only", nargs="+", help="shape names to run (default: all)")
    args = parser.parse_args(argv)
    shapes = [s for s in (QUICK if args.quick else FULL) if not args.only or s.name in args.only]
    runs = measure_shapes(shapes, args.work, echo=lambda line: print(line, file=sys.stderr))
    print(json.dumps([r.as_dict() for r in runs], indent=1, default=str))
    print(format_shapes_markdown(runs, "python -m benchmarks.shapes"), file=sys.stderr)


if __name__ == "__main__":
    main()
