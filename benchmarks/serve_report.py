"""The serving benchmark's BENCHMARKS.md section and its target (`benchmarks.serve_bench`)."""

from __future__ import annotations

from benchmarks.loadgen import Load
from benchmarks.profile import format_profiles
from benchmarks.serve_bench import AppFigures, ServingFigures, VariantFigures
from benchmarks.targets import Target

THROUGHPUT_TARGET = 0.70
"""Serve's throughput at p99 <= 50 ms must be at least this share of the bare app's."""


def throughput_target(figures: ServingFigures) -> Target:
    """The issue's target, judged on the shipped config ("default"): Serve's highest rate
    at p99 <= 50 ms is at least 70 % of the bare app's, measured in the same run. Not
    judged when the bare app met the p99 target at no rate tried (then the closed-loop
    ratio at the top concurrency is given instead)."""
    goal = (
        f"Ray Serve app reaches at least {THROUGHPUT_TARGET:.0%} of the bare app's "
        f"throughput (requests per second at p99 <= {figures.p99_target_ms:g} ms)"
    )
    v = figures.variant("default") or (figures.variants[0] if figures.variants else None)
    if v is None:
        return Target("serve_over_bare", goal, "-", None, "serving was not measured")
    name = f"serve_over_bare ({v.variant.name})"
    ratio = v.rate_ratio()
    top = max(figures.concurrency, default=0)
    closed = v.closed_ratio(top)
    closed_text = f"closed loop at c={top}: {closed:.0%}" if closed is not None else ""
    best = max(figures.variants, key=lambda x: x.rate_ratio(x.best_serve()) or 0.0)
    best_ratio = best.rate_ratio(best.best_serve())
    also = (
        f"; best variant: {best.variant.name} ({best.best_serve().app}) {best_ratio:.0%}"
        if best_ratio is not None and best is not v
        else ""
    )
    if ratio is None:
        why = (
            f"the bare app met p99 <= {figures.p99_target_ms:g} ms at no rate tried "
            f"(machine too loaded); {closed_text or 'no closed-loop ratio'}"
        )
        return Target(name, goal, "-", None, why)
    measured = f"{ratio:.0%} ({v.serve.max_rate:g} vs {v.bare.max_rate:g} rps)"
    if ratio >= THROUGHPUT_TARGET:
        gap = f"{(ratio - THROUGHPUT_TARGET) * 100:.0f} points above"
    else:
        gap = (
            f"missed by {(THROUGHPUT_TARGET - ratio) * 100:.0f} points: Serve needs "
            f"{THROUGHPUT_TARGET * v.bare.max_rate:.0f} rps"
        )
    return Target(name, goal, measured, ratio >= THROUGHPUT_TARGET, gap + f"; {closed_text}{also}")


def ceiling_targets(figures: ServingFigures) -> list[Target]:
    """Issue 18's targets, on the shipped config ("default"): the bare app reaches at
    least 70 % of the no-op FastAPI app's rate at the p99 target, and the Serve app at
    least 70 % of the no-op Serve endpoint's, each ceiling measured in the same run."""
    v = figures.variant("default") or (figures.variants[0] if figures.variants else None)
    out = []
    for name, app, ceiling in (
        ("bare_over_noop_uvicorn", v.bare if v else None, v.noop_bare if v else None),
        ("serve_over_noop_serve", v.serve if v else None, v.noop_serve if v else None),
    ):
        goal = (
            f"{name.split('_over_')[0]} app reaches at least {THROUGHPUT_TARGET:.0%} of its "
            f"stack's no-op ceiling (requests per second at p99 <= {figures.p99_target_ms:g} ms)"
        )
        if v is None or app is None or ceiling is None or ceiling.max_rate <= 0:
            out.append(Target(name, goal, "-", None, "the ceiling was not measured"))
            continue
        ratio = app.max_rate / ceiling.max_rate
        # A ceiling met at the search's cap is a lower bound, so the ratio is an upper one.
        bound = "<= " if ceiling.capped and not app.capped else ""
        measured = f"{bound}{ratio:.0%} ({_rate(app)} vs {_rate(ceiling)} rps)"
        met = ratio >= THROUGHPUT_TARGET
        gap = f"{abs(ratio - THROUGHPUT_TARGET) * 100:.0f} points " + ("above" if met else "short")
        out.append(Target(name, goal, measured, met, gap))
    return out


def _rate(app: AppFigures) -> str:
    """An app's rate at the p99 target, marked as a lower bound when it met the cap."""
    return f"{'>= ' if app.capped else ''}{app.max_rate:g}"


def _ms(load: Load | None) -> str:
    return f"{load.p50_ms:.1f} / {load.p99_ms:.1f}" if load else "-"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None or value != value else format(value, fmt)


def _cpu(others: dict[str, float]) -> str:
    """Cores the other servers used while this one was loaded (idle Ray is not free)."""
    return ", ".join(f"{name} {cores:.2f} cores" for name, cores in others.items()) or "-"


def _ratio(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def format_serving_markdown(figures: ServingFigures, command: str) -> str:
    """The BENCHMARKS.md section of the serving benchmark."""
    target = figures.p99_target_ms
    lines = [
        "## Serving: Ray Serve against bare uvicorn",
        "",
        f"Reproduce: `{command}`. {figures.buyers:,}-buyer marketplace; the load generator "
        "(`benchmarks.loadgen`, aiohttp) runs in its own process on loopback and shares the "
        "machine's cores with the servers. For each Serve variant, Serve and the bare app "
        "(the same FastAPI app and ranking service in one uvicorn process) are started "
        "clean, each in a process of its own, and loaded in turn, window by window, so every "
        "ratio is Serve over bare from the same minutes. Two ceilings are loaded in the same "
        "turns: a no-op FastAPI app under uvicorn (the bare app's stack) and a no-op "
        "deployment in the same Ray Serve (`benchmarks.noop_app`), each answering a fixed "
        "answer; each real app's rate is also given as a share of its stack's ceiling. "
        "Both decide with the model's "
        "policy and a frequency-cap window of seconds (`benchmarks.market.CAP_WINDOW_DAYS`: "
        "buyers are ranked again and again, and capped buyers take a slower path, see the "
        "floor). Closed loop: "
        f"{figures.repeats} window(s) of {figures.seconds:g} s per app and level, medians. "
        f"Rate steps: {figures.step_seconds:g} s or more, Poisson arrivals, latency from "
        "the scheduled send; a missed step is run again and judged by the second run.",
        "",
        throughput_target(figures).line(),
        "",
        *(line for t in ceiling_targets(figures) for line in (t.line(), "")),
        "### Highest request rate with p99 <= " + f"{target:g} ms (`/v1/rank`)",
        "",
        "| variant | app | rps at p99 target | Serve / bare | / its stack's no-op ceiling "
        "| in-app ms per request | mean batch | other server's CPU meanwhile | start-up s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in figures.variants:
        for app in _apps(v):
            ratio = None if app is v.bare or _is_ceiling(v, app) else v.rate_ratio(app)
            lines.append(
                f"| {v.variant.name} | {app.app} | {_rate(app)} | {_ratio(ratio)} "
                f"| {_ratio(v.ceiling_ratio(app))} "
                f"| {_num(app.in_app.get('rank_mean_ms'), '.1f')} "
                f"| {_num(app.in_app.get('mean_batch_size'), '.1f')} "
                f"| {_cpu(app.others_cpu)} "
                f"| {_num(v.startup_s if app is v.serve else None, '.0f')} |"
            )
    lines += [
        "",
        "### Closed loop: requests per second and p50 / p99 ms at fixed concurrency",
        "",
        "| variant | app | "
        + " | ".join(f"c={c} rps | c={c} p50 / p99" for c in figures.concurrency)
        + " | Serve / bare at c="
        + str(max(figures.concurrency, default=0))
        + " |",
        "|---|---|" + "---:|---:|" * len(figures.concurrency) + "---:|",
    ]
    top = max(figures.concurrency, default=0)
    for v in figures.variants:
        for app in _apps(v):
            cells = []
            for c in figures.concurrency:
                load = app.closed_at(c)
                cells += [f"{load.rps:.1f}" if load else "-", _ms(load)]
            ratio = None if app is v.bare or _is_ceiling(v, app) else v.closed_ratio(top, app)
            lines.append(
                f"| {v.variant.name} | {app.app} | " + " | ".join(cells) + f" | {_ratio(ratio)} |"
            )
    lines += _fixed_rate_table(figures)
    lines += [
        "",
        f"### `/v1/rank/batch`: buyers per second (batches of {figures.batch_size})",
        "",
        "| variant | app | clients | buyers per second | p50 / p99 ms per batch | errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for v in figures.variants:
        for app in (v.serve, v.bare):
            if app.batch is not None:
                b = app.batch
                lines.append(
                    f"| {v.variant.name} | {app.app} | {b.concurrency} | {b.buyers_per_s:,.0f} "
                    f"| {_ms(b)} | {b.errors} |"
                )
    profiles = [p for v in figures.variants for p in v.profiles]
    if profiles:
        lines += [
            "",
            "### Where the CPU goes (py-spy, closed loop at c=" + f"{top}, a window of its own)",
            "",
            *format_profiles(profiles),
        ]
    lines += _variants_table(figures)
    errors = [
        (v.variant.name, app.app, load)
        for v in figures.variants
        for app in (v.serve, v.direct, v.bare)
        if app is not None
        for load in (*app.closed, *app.steps)
        if load.errors
    ]
    if errors:
        lines += ["", "Windows with errors (the first error of each):", ""]
        lines += [
            f"- {name} / {app} ({load.mode}, c={load.concurrency}, rate {load.offered_rps:g}): "
            f"{load.errors} of {load.requests}: `{load.first_error}`"
            for name, app, load in errors
        ]
    lines.append("")
    return "\n".join(lines)


def _apps(v: VariantFigures) -> list[AppFigures]:
    """The variant's apps in table order: Serve (proxy, direct), bare, then the ceilings."""
    return [a for a in (v.serve, v.direct, v.bare, v.noop_serve, v.noop_bare) if a is not None]


def _is_ceiling(v: VariantFigures, app: AppFigures) -> bool:
    return app is v.noop_serve or app is v.noop_bare


def _variants_table(figures: ServingFigures) -> list[str]:
    """What each variant changes, as Serve-over-bare ratios (each variant has its own bare
    run, so variants compare through their ratios, not their absolute rates)."""
    top = max(figures.concurrency, default=0)
    lines = [
        "",
        "### What each variant changes",
        "",
        f"| variant | Serve / bare at p99 <= {figures.p99_target_ms:g} ms "
        f"| Serve / bare closed loop c={top} | replica's own port / bare (c={top}) "
        "| mean batch | what it is |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for v in figures.variants:
        direct = v.closed_ratio(top, v.direct) if v.direct is not None else None
        lines.append(
            f"| {v.variant.name} | {_ratio(v.rate_ratio())} | {_ratio(v.closed_ratio(top))} "
            f"| {_ratio(direct)} | {_num(v.serve.in_app.get('mean_batch_size'), '.1f')} "
            f"| {v.variant.description} |"
        )
    return lines


def _fixed_rate_table(figures: ServingFigures) -> list[str]:
    """p50 / p99 at the offered rates every app was run at (the doubling ladder)."""
    apps = [a for v in figures.variants for a in (v.serve, v.direct, v.bare) if a is not None]
    if not apps:
        return []
    common = sorted(set.intersection(*({s.offered_rps for s in a.steps} for a in apps)))
    if not common:
        return []
    lines = [
        "",
        "### Open loop: p50 / p99 ms at fixed offered rates",
        "",
        "| variant | app | " + " | ".join(f"{r:g} rps" for r in common) + " |",
        "|---|---|" + "---:|" * len(common),
    ]
    for v in figures.variants:
        for app in (v.serve, v.direct, v.bare):
            if app is not None:
                cells = [_ms(app.step_at(r)) for r in common]
                lines.append(f"| {v.variant.name} | {app.app} | " + " | ".join(cells) + " |")
    return lines
