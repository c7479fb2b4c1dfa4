"""Serving benchmark: the Ray Serve app against its peer, the same app under bare uvicorn
(`benchmarks.bare_app`), on loopback, loaded by `benchmarks.loadgen` in a separate process.

For each Serve *variant* (dynamic batching on or off, Ray Serve's throughput-optimized
mode), Serve (`benchmarks.serve_host`) and the bare app are started clean, each in a
process of its own, and loaded in turn, window by window: each Serve window sits next to
a bare window of the same kind, minutes apart at most, so a shared machine's changing
load hits both alike. Both get the same serve config (`ServedMarket.serve_config`: the
model's policy with a cap window of seconds, so that repeated buyers are not capped).
Per app:

- closed loop at each concurrency level, `repeats` windows each (medians): requests per
  second, p50/p90/p99, errors;
- the highest offered (Poisson) request rate whose p99 stays within 50 ms
  (`benchmarks.rate_search`; 0 when none did), the two apps' searches stepped in turn;
- `/v1/rank/batch` buyers per second (batches of `batch` buyers, closed loop);
- from the app's own `/metrics`: mean dynamic-batch size and time inside the app;
- the CPU the *other* server used while one was loaded (idle Ray is not free);
- a py-spy profile of the Serve replica and proxy and of the bare app under the same
  load (a window of its own, used for no figure).

With direct ingress (throughput-optimized mode) the replica also listens on a port of its
own; it is measured there too ("serve, direct"), besides through the proxy.

    python -m benchmarks.serve_bench [--buyers 2000] [--seconds 6] [--concurrency 1 8 32] \\
        [--variants default no-batching throughput-optimized] [--json OUT] [--markdown OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.loadgen import P99_TARGET_MS, Load, median_load
from benchmarks.market import KEY, ServedMarket, prepare_market
from benchmarks.profile import ProfileSummary, find_processes, finish, start_recording, tree_cpu
from benchmarks.rate_search import RateSearch

SERVE, DIRECT, BARE = "serve", "serve, direct", "bare"
NOOP_SERVE, NOOP_BARE = "no-op Serve (ceiling)", "no-op uvicorn (ceiling)"


@dataclass(frozen=True)
class Variant:
    """One way to run the Serve app: its serve-config batching and environment."""

    name: str
    description: str
    max_batch_size: int = 32
    env: dict[str, str] = field(default_factory=dict)


VARIANTS = {
    v.name: v
    for v in (
        Variant(
            "default",
            "as shipped: dynamic batching (`batching.max_batch_size` 32, no wait)",
        ),
        Variant(
            "no-batching",
            "dynamic batching off (`batching.max_batch_size` 1): each request ranked alone "
            "(and `max_ongoing_requests` 8, which the app derives from the batch size)",
            max_batch_size=1,
        ),
        Variant(
            "throughput-optimized",
            "as shipped, with `RAY_SERVE_THROUGHPUT_OPTIMIZED=1` set before Ray starts "
            "(direct ingress, gRPC between proxy and replica, user code on the replica's "
            "event loop, buffered request logs, GC frozen after start-up)",
            env={"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
        ),
        Variant(
            "throughput-optimized-no-batching",
            "throughput-optimized, with dynamic batching off",
            max_batch_size=1,
            env={"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
        ),
    )
}


@dataclass(frozen=True)
class AppFigures:
    """Everything measured against one app in one variant."""

    app: str
    """"serve", "serve, direct" (the replica's own port) or "bare"."""
    closed: list[Load]
    """Closed loop, one per concurrency level: the median of its windows."""
    steps: list[Load]
    """Open-loop windows of the rate search, in the order run."""
    max_rate: float
    """Highest offered rate whose p99 met the target (0: none did)."""
    capped: bool = False
    """The target was met at the search's highest rate: `max_rate` is a lower bound."""
    batch: Load | None = None
    in_app: dict[str, float] = field(default_factory=dict)
    """From the app's /metrics over its windows: mean ms inside the app per /v1/rank
    request, requests counted, and (Serve) mean dynamic-batch size."""
    others_cpu: dict[str, float] = field(default_factory=dict)
    """Cores the other servers' processes used, on average, while this app was loaded."""

    def closed_at(self, concurrency: int) -> Load | None:
        return next((c for c in self.closed if c.concurrency == concurrency), None)

    def step_at(self, rate: float) -> Load | None:
        """The last window run at `rate` (the one the search judged)."""
        found = [s for s in self.steps if abs(s.offered_rps - rate) < 1e-9]
        return found[-1] if found else None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AppFigures:
        return cls(
            app=raw["app"],
            closed=[Load.from_dict(c) for c in raw["closed"]],
            steps=[Load.from_dict(s) for s in raw["steps"]],
            max_rate=raw["max_rate"],
            capped=raw.get("capped", False),
            batch=Load.from_dict(raw["batch"]) if raw.get("batch") else None,
            in_app=raw.get("in_app", {}),
            others_cpu=raw.get("others_cpu", {}),
        )


@dataclass(frozen=True)
class VariantFigures:
    """One Serve variant and the bare app, loaded in turn."""

    variant: Variant
    serve: AppFigures
    bare: AppFigures
    direct: AppFigures | None = None
    noop_bare: AppFigures | None = None
    """The stack's ceiling for the bare app: a no-op FastAPI app under uvicorn."""
    noop_serve: AppFigures | None = None
    """The stack's ceiling for Serve: a no-op deployment in the same Ray Serve."""
    startup_s: float = 0.0
    """Ray and Serve start-up until /readyz answers (model loaded and warmed)."""
    profiles: list[ProfileSummary] = field(default_factory=list)
    """py-spy summaries of the Serve replica and proxy and of the bare app, each under
    the same closed-loop load (a window of its own, not used for any figure)."""

    def best_serve(self) -> AppFigures:
        """The Serve endpoint with the higher rate at the p99 target (proxy or direct)."""
        if self.direct is not None and self.direct.max_rate > self.serve.max_rate:
            return self.direct
        return self.serve

    def rate_ratio(self, app: AppFigures | None = None) -> float | None:
        """Serve's rate at the p99 target over the bare app's (None if the bare met none)."""
        app = app or self.serve
        return app.max_rate / self.bare.max_rate if self.bare.max_rate > 0 else None

    def ceiling_ratio(self, app: AppFigures) -> float | None:
        """`app`'s rate at the p99 target over its stack's no-op ceiling's (None: unknown)."""
        if app is self.noop_bare or app is self.noop_serve:
            return None
        ceiling = self.noop_bare if app is self.bare else self.noop_serve
        if ceiling is None or ceiling.max_rate <= 0:
            return None
        return app.max_rate / ceiling.max_rate

    def closed_ratio(self, concurrency: int, app: AppFigures | None = None) -> float | None:
        """Serve's closed-loop requests per second over the bare app's."""
        serve, bare = (app or self.serve).closed_at(concurrency), self.bare.closed_at(concurrency)
        return serve.rps / bare.rps if serve and bare and bare.rps > 0 else None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VariantFigures:
        return cls(
            variant=Variant(**raw["variant"]),
            serve=AppFigures.from_dict(raw["serve"]),
            bare=AppFigures.from_dict(raw["bare"]),
            direct=AppFigures.from_dict(raw["direct"]) if raw.get("direct") else None,
            noop_bare=AppFigures.from_dict(raw["noop_bare"]) if raw.get("noop_bare") else None,
            noop_serve=AppFigures.from_dict(raw["noop_serve"]) if raw.get("noop_serve") else None,
            startup_s=raw.get("startup_s", 0.0),
            profiles=[ProfileSummary(**p) for p in raw.get("profiles", [])],
        )


@dataclass(frozen=True)
class ServingFigures:
    """The serving benchmark's figures (see the module docstring)."""

    buyers: int
    seconds: float
    step_seconds: float
    concurrency: list[int]
    variants: list[VariantFigures]
    p99_target_ms: float = P99_TARGET_MS
    batch_size: int = 100
    repeats: int = 1

    def variant(self, name: str) -> VariantFigures | None:
        return next((v for v in self.variants if v.variant.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ServingFigures:
        return cls(
            buyers=raw["buyers"],
            seconds=raw["seconds"],
            step_seconds=raw["step_seconds"],
            concurrency=list(raw["concurrency"]),
            variants=[VariantFigures.from_dict(v) for v in raw["variants"]],
            p99_target_ms=raw.get("p99_target_ms", P99_TARGET_MS),
            batch_size=raw.get("batch_size", 100),
            repeats=raw.get("repeats", 1),
        )


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Plan:
    """How long and how hard to load (the sizes of `measure_serving`)."""

    seconds: float = 6.0
    """Closed-loop window."""
    warmup: float = 2.0
    concurrency: tuple[int, ...] = (1, 8, 32)
    repeats: int = 2
    """Closed-loop windows per app and level (their median is kept)."""
    step_seconds: float = 3.0
    step_warmup: float = 1.0
    step_requests: int = 30
    """A rate step lasts at least long enough for this many requests (a p99 of a handful
    of requests says nothing)."""
    start_rate: float = 10.0
    refine: int = 3
    batch: int = 100
    batch_concurrency: int = 2
    p99_target_ms: float = P99_TARGET_MS
    profile_seconds: float = 6.0
    """py-spy window per app under closed-loop load at the top concurrency (0: none)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loadgen(url: str, buyers_file: Path, seconds: float, warmup: float, **how: float) -> Load:
    """One `benchmarks.loadgen` run in its own process (`how`: concurrency, rate, batch)."""
    argv = [sys.executable, "-m", "benchmarks.loadgen", "--url", url, "--key", KEY]
    argv += ["--buyers", str(buyers_file), "--seconds", str(seconds), "--warmup", str(warmup)]
    for name, value in how.items():
        argv += [f"--{name.replace('_', '-')}", f"{value:g}"]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed ({' '.join(argv)}):\n{done.stderr}")
    return Load.from_dict(json.loads(done.stdout.strip().splitlines()[-1]))


_GAUGE = re.compile(r"^recsys_(rank_batches_total|rank_batched_requests_total) (\S+)$")
_RANK_SUM = re.compile(r'^recsys_request_seconds_(sum|count)\{route="/v1/rank"\} (\S+)$')


def app_counters(url: str) -> dict[str, float]:
    """Cumulative counters of the app's /metrics: /v1/rank time and count, batches."""
    import httpx

    try:
        text = httpx.get(url + "/metrics", timeout=30).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if match := _GAUGE.match(line):
            out[match.group(1)] = float(match.group(2))
        elif match := _RANK_SUM.match(line):
            out[f"rank_seconds_{match.group(1)}"] = float(match.group(2))
    return out


def in_app_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Each counter's growth between two reads."""
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def in_app_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean ms inside the app per /v1/rank request and mean batch size, between two reads."""

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    out: dict[str, float] = {}
    if (n := delta("rank_seconds_count")) > 0:
        out["rank_requests"] = n
        out["rank_mean_ms"] = 1000 * delta("rank_seconds_sum") / n
    if (batches := delta("rank_batches_total")) > 0:
        out["mean_batch_size"] = delta("rank_batched_requests_total") / batches
    return out


@dataclass
class Server:
    """A running app to load: its URL and the process tree that serves it."""

    name: str
    url: str
    pid: int
    batch: bool = True
    """Also load /v1/rank/batch."""
    closed: dict[int, list[Load]] = field(default_factory=dict)
    batches: list[Load] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds each other server used during this one's windows."""
    counters: dict[str, float] = field(default_factory=dict)
    """The app's /metrics counters, summed over this server's /v1/rank windows only (the
    Serve replica answers both its URLs: each window is counted where it was loaded)."""
    loaded_s: float = 0.0
    """Wall seconds of this server's windows."""


class Turns:
    """Loads several servers in turn, window by window (module docstring). Servers of one
    process (Serve's proxy and direct URLs) count as one for the CPU figures."""

    def __init__(self, servers: Sequence[Server], buyers_file: Path, plan: Plan) -> None:
        self.servers, self.buyers_file, self.plan = list(servers), buyers_file, plan

    def window(self, server: Server, seconds: float, warmup: float, **how: float) -> Load:
        """One window against `server`, with the others' CPU use meanwhile."""
        others: dict[int, Server] = {}
        for s in self.servers:
            if s.pid != server.pid:
                others.setdefault(s.pid, s)
        counted = "batch" not in how
        counters = app_counters(server.url) if counted else {}
        before = {s.name: tree_cpu(s.pid) for s in others.values()}
        began = time.perf_counter()
        load = loadgen(server.url, self.buyers_file, seconds, warmup, **how)
        server.loaded_s += time.perf_counter() - began
        for s in others.values():
            used = tree_cpu(s.pid) - before[s.name]
            server.cpu_s[s.name] = server.cpu_s.get(s.name, 0.0) + used
        if counted:
            for key, value in in_app_deltas(counters, app_counters(server.url)).items():
                server.counters[key] = server.counters.get(key, 0.0) + value
        return load

    def run(self) -> dict[str, AppFigures]:
        plan = self.plan
        for c in plan.concurrency:
            for r in range(plan.repeats):
                for s in self._order(r):
                    load = self.window(s, plan.seconds, plan.warmup, concurrency=c)
                    s.closed.setdefault(c, []).append(load)
        searches = {
            s.name: RateSearch(plan.start_rate, plan.refine, plan.p99_target_ms)
            for s in self.servers
        }
        round_ = 0
        while any(x.next_rate() is not None for x in searches.values()):
            for s in self._order(round_):
                rate = searches[s.name].next_rate()
                if rate is not None:
                    seconds = max(plan.step_seconds, plan.step_requests / rate)
                    searches[s.name].record(self.window(s, seconds, plan.step_warmup, rate=rate))
            round_ += 1
        for r in range(plan.repeats):
            for s in self._order(r):
                if s.batch:
                    how = {"concurrency": plan.batch_concurrency, "batch": plan.batch}
                    s.batches.append(self.window(s, plan.seconds, plan.warmup, **how))
        out = {}
        for s in self.servers:
            best = searches[s.name].best
            capped = searches[s.name].capped
            _say(
                f"{s.name}: {'>= ' if capped else ''}{best:g} rps at p99 <= "
                f"{plan.p99_target_ms:g} ms"
            )
            out[s.name] = AppFigures(
                app=s.name,
                closed=[median_load(s.closed[c]) for c in plan.concurrency],
                steps=searches[s.name].steps,
                max_rate=best,
                capped=capped,
                batch=median_load(s.batches) if s.batches else None,
                in_app=in_app_figures({}, s.counters),
                others_cpu={k: v / s.loaded_s for k, v in s.cpu_s.items() if s.loaded_s > 0},
            )
        return out

    def _order(self, turn: int) -> list[Server]:
        """The servers, rotated by `turn`, so that no app always goes first."""
        k = turn % len(self.servers)
        return self.servers[k:] + self.servers[:k]


def profile_under_load(
    pids: dict[str, int], url: str, buyers_file: Path, plan: Plan, out: Path
) -> list[ProfileSummary]:
    """Record every process of `pids` with py-spy while `url` is loaded closed loop at the
    top concurrency for `plan.profile_seconds`."""
    if plan.profile_seconds <= 0 or not pids:
        return []
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / (re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") + ".raw") for name in pids}
    # py-spy attaches within a second; the load's own warm-up covers it.
    recorders = {
        name: start_recording(pid, plan.profile_seconds, files[name]) for name, pid in pids.items()
    }
    top = max(plan.concurrency, default=8)
    loadgen(url, buyers_file, plan.profile_seconds, 1.0, concurrency=top)
    return [finish(recorders[name], files[name], name) for name in pids]


def serve_config(market: ServedMarket, variant: Variant, log_dir: Path) -> dict[str, Any]:
    """The Serve app's config in `variant` (`ServedMarket.serve_config`, plus batching)."""
    return market.serve_config(
        decision_log_dir=str(log_dir), batching={"max_batch_size": variant.max_batch_size}
    )


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "RECSYS_API_KEYS": f"{KEY}:*", **extra}
    env.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def _stop(proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    if proc.poll() is None:
        if proc.stdin is not None:
            proc.stdin.close()  # serve_host shuts Serve and Ray down on end of input
        else:
            proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _say(text: str) -> None:
    print(f"[serving {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _start_app(argv: list[str], port: int, log_path: Path) -> tuple[subprocess.Popen[str], str]:
    """Run `argv` (an app listening on `port`), logging to `log_path`; (process, URL) once
    it answers, the process stopped if it never does."""
    from benchmarks.serve_host import wait_ready

    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, env=_env(), stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
    except RuntimeError:
        _stop(proc)
        raise
    return proc, url


def start_bare(market: ServedMarket, work: Path, name: str) -> tuple[subprocess.Popen[str], str]:
    """The bare uvicorn app on a free port, ready; (process, URL)."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.bare_app", "--model", str(market.model)]
    argv += ["--as-of", market.as_of, "--port", str(port)]
    argv += ["--log-dir", str(work / f"bare-decisions-{name}")]
    argv += ["--serve-config", json.dumps(market.serve_config())]
    return _start_app(argv, port, work / f"bare-{name}.log")


def start_noop(work: Path, name: str) -> tuple[subprocess.Popen[str], str]:
    """The no-op FastAPI app under bare uvicorn on a free port, ready; (process, URL)."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.noop_app", "--port", str(port)]
    return _start_app(argv, port, work / f"noop-{name}.log")


def measure_variant(
    market: ServedMarket, variant: Variant, plan: Plan, work: Path
) -> VariantFigures:
    """Serve in `variant` and the bare app, both started clean, loaded in turn; then both
    are stopped."""
    _say(f"variant {variant.name}: starting Ray Serve and the bare app")
    config = serve_config(market, variant, work / f"decisions-{variant.name}")
    argv = [sys.executable, "-m", "benchmarks.serve_host", "--serve-config", json.dumps(config)]
    argv += ["--port", str(free_port())]
    log_path = work / f"serve-{variant.name}.log"
    with log_path.open("w") as log:
        host = subprocess.Popen(
            argv,
            env=_env(**variant.env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    bare_proc: subprocess.Popen[str] | None = None
    noop_proc: subprocess.Popen[str] | None = None
    try:
        bare_proc, bare_url = start_bare(market, work, variant.name)  # while Serve starts
        noop_proc, noop_url = start_noop(work, variant.name)
        assert host.stdout is not None
        line = host.stdout.readline()
        if not line:
            raise RuntimeError(f"Ray Serve did not start: see {log_path}")
        info = json.loads(line)
        servers = [Server(SERVE, info["url"], host.pid)]
        if info.get("direct_url"):
            servers.append(Server(DIRECT, info["direct_url"], host.pid, batch=False))
        bare = Server(BARE, bare_url, bare_proc.pid)
        ceilings = [Server(NOOP_BARE, noop_url, noop_proc.pid, batch=False)]
        if info.get("noop_url"):
            ceilings.append(Server(NOOP_SERVE, info["noop_url"], host.pid, batch=False))
        _say(f"variant {variant.name}: loading {', '.join(s.name for s in servers)} and bare")
        apps = Turns([*servers, bare, *ceilings], market.buyers_file, plan).run()
        found = find_processes(host.pid, ["ServeReplica", "ProxyActor"])
        pids = {f"{variant.name}: Serve {k}": v for k, v in found.items()}
        profiles = profile_under_load(
            pids, info["url"], market.buyers_file, plan, work / "profiles"
        )
        profiles += profile_under_load(
            {f"{variant.name}: bare app": bare.pid},
            bare.url,
            market.buyers_file,
            plan,
            work / "profiles",
        )
    finally:
        _stop(host)
        for proc in (bare_proc, noop_proc):
            if proc is not None:
                _stop(proc)
    return VariantFigures(
        variant,
        serve=apps[SERVE],
        bare=apps[BARE],
        direct=apps.get(DIRECT),
        noop_bare=apps.get(NOOP_BARE),
        noop_serve=apps.get(NOOP_SERVE),
        startup_s=float(info["startup_s"]),
        profiles=profiles,
    )


def measure_serving(
    buyers: int,
    seconds: float,
    concurrency: Sequence[int],
    variants: Sequence[str],
    work: Path,
    *,
    market: ServedMarket | None = None,
    plan: Plan | None = None,
) -> ServingFigures:
    """Measure every variant against the bare app (module docstring).

    `market` reuses a prepared marketplace (else one of `buyers` is made under `work`);
    `plan` sets the other durations (`seconds` and `concurrency` override its own).
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown serving variants {unknown}; known: {sorted(VARIANTS)}")
    plan = Plan(**{**asdict(plan or Plan()), "seconds": seconds, "concurrency": tuple(concurrency)})
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if market is None:
        _say(f"preparing a {buyers:,}-buyer marketplace")
        market = prepare_market(buyers, work / "market")
    measured = [measure_variant(market, VARIANTS[v], plan, work) for v in variants]
    return ServingFigures(
        buyers=market.buyers,
        seconds=plan.seconds,
        step_seconds=plan.step_seconds,
        concurrency=list(plan.concurrency),
        variants=measured,
        p99_target_ms=plan.p99_target_ms,
        batch_size=plan.batch,
        repeats=plan.repeats,
    )


# --------------------------------------------------------------------------- command line


def main() -> None:
    from benchmarks.serve_report import format_serving_markdown

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--buyers", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=6.0, help="closed-loop window")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=2, help="closed-loop windows per level")
    parser.add_argument("--step-seconds", type=float, default=3.0, help="rate-search step")
    parser.add_argument("--start-rate", type=float, default=10.0)
    parser.add_argument(
        "--variants", nargs="+", default=["default", "no-batching", "throughput-optimized"]
    )
    parser.add_argument("--work", type=Path, help="keep the market, logs and profiles here")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--markdown", type=Path, help="write the BENCHMARKS.md section here")
    args = parser.parse_args()
    plan = Plan(repeats=args.repeats, step_seconds=args.step_seconds, start_rate=args.start_rate)
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        figures = measure_serving(
            args.buyers,
            args.seconds,
            args.concurrency,
            args.variants,
            args.work or Path(tmp),
            plan=plan,
        )
    text = json.dumps(figures.as_dict(), indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    if args.markdown:
        command = "python -m benchmarks.serve_bench " + " ".join(sys.argv[1:])
        args.markdown.write_text(format_serving_markdown(figures, command))


if __name__ == "__main__":
    main()
