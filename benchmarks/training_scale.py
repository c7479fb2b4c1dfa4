"""Training at scale (issue 7): `recsys train` end to end, and MF against `implicit` alone.

`measure_training` runs the real command, ``recsys train --data DIR``, in a subprocess
that tracks to a throwaway SQLite MLflow store, and samples the memory of its whole
process tree (the driver, Ray's raylet, GCS and object store, every worker) from /proc:
RSS every quarter second, PSS (where the kernel offers ``smaps_rollup``) whenever the RSS
is near its peak, at most once a second. Ray's shared-memory object store is mapped by
several processes, and summing their RSS counts it once per process; PSS splits each
shared page between its users, so the sum is what the run really holds. The tree's CPU
seconds are kept too: on a shared machine they say what the run costs whatever else runs.
Stage seconds and each stage task's peak RSS come from the run's MLflow metrics
(``seconds.*``, ``peak_rss_mb.*``, see `training.tracking`), the timeline from the
command's output.

`mf_overhead` times the pipeline's matrix-factorization stage
(`recsys.models.ranker.fit_mf`, as `training.pipeline.mf_stage` calls it on all data)
against `implicit`'s ALS fitted directly on the same buyer x item matrix with the same
parameters and threads (BLAS pinned to one thread), in one process, median of repeats.

    python -m benchmarks.training_scale --data /tmp/bench/m100k [--data DIR ...] \
        [--mf-overhead] [--set key.path=value ...] [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

SAMPLE_SECONDS = 0.25
"""How often the process tree's RSS is sampled."""
TREE_SECONDS = 1.0
"""How often the process tree (and each process's CPU time) is read again."""
PSS_NEAR_PEAK = 0.9
"""PSS is read when the tree's RSS is at least this share of its peak so far ..."""
PSS_MIN_INTERVAL = 1.0
"""... at most once per this many seconds ..."""
PSS_MAX_INTERVAL = 5.0
"""... and at least once per this many seconds."""
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_MB = 1 << 20
_STAGE_LINE = re.compile(r"^\[\s*([\d.]+)s\] finished (.+) \(([\d.]+)s\)$")
_WALL_LINE = re.compile(r"^wall time ([\d.]+)s")
_RUN_ID_LINE = re.compile(r"^MLflow run id: ([0-9a-f]+)")


# --------------------------------------------------------------------------- memory


def scan_processes() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, CPU ticks used so far, user + system).

    From /proc/<pid>/stat; processes may vanish while it is read.
    """
    out: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                # The command name may hold spaces and parentheses: split after the last ")".
                fields = handle.read().rsplit(")", 1)[1].split()
            out[int(name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        except (OSError, IndexError, ValueError):
            continue
    return out


def process_tree(root: int, processes: dict[int, tuple[int, int]] | None = None) -> list[int]:
    """`root` and all its descendants (alive at the time of the call)."""
    processes = scan_processes() if processes is None else processes
    kids: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        kids.setdefault(parent, []).append(pid)
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(kids.get(pid, ()))
    return out


def process_memory(pid: int, use_pss: bool = True) -> tuple[int, str]:
    """Bytes one process holds: (PSS, "pss") from smaps_rollup, else (RSS, "rss").

    (0, "rss") when the process is gone.
    """
    if use_pss:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024, "pss"
        except OSError:
            pass
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE, "rss"
    except (OSError, IndexError):
        return 0, "rss"


@dataclass
class MemoryPeak:
    """What a `TreeSampler` saw: the peak of the tree's summed memory and when."""

    peak_bytes: int = 0
    peak_at_s: float = 0.0
    peak_processes: int = 0
    largest_process_bytes: int = 0
    """The largest single process at any sample."""
    kind: str = "pss"
    """"pss", or "rss" when any sampled process had no smaps_rollup."""
    samples: int = 0
    peak_rss_bytes: int = 0
    """Peak of the summed RSS (counts shared memory once per process mapping it)."""
    at_peak: dict[str, int] = field(default_factory=dict)
    """Bytes per process at the peak sample, by name (`process_name`)."""
    cpu_ticks: dict[int, int] = field(default_factory=dict)
    """The last CPU ticks seen of every process of the tree (gone ones included)."""

    @property
    def cpu_s(self) -> float:
        """CPU seconds the tree used (up to its processes' last samples)."""
        return sum(self.cpu_ticks.values()) / _TICKS


def process_name(pid: int) -> str:
    """A short name: Ray's process title (``ray::mf_stage``, ``raylet``) or the program."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            args = handle.read().split(b"\0")
    except OSError:
        return "?"
    first = args[0].decode(errors="replace") if args else ""
    if first.startswith("ray::"):
        return first.split()[0]
    words = [a.decode(errors="replace") for a in args if a]
    program = Path(words[0]).name if words else "?"
    for word in words[1:3]:  # python -m module / python script.py / recsys train
        if not word.startswith("-"):
            return f"{program} {Path(word).name}"[:60]
    return program


class TreeSampler:
    """Samples the summed memory of a process tree in a background thread."""

    def __init__(self, root: int, interval: float = SAMPLE_SECONDS, use_pss: bool = True) -> None:
        self.root = root
        self.interval = interval
        self.use_pss = use_pss
        self.result = MemoryPeak(kind="pss" if use_pss else "rss")
        self._stop = threading.Event()
        self._began = time.perf_counter()
        self._last_pss = self._last_scan = -math.inf
        self._pids: list[int] = []
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> int:
        """One sample now; updates the peaks; returns the tree's bytes (PSS when read).

        RSS (cheap, from statm) is read every time; PSS (the kernel walks the page tables
        of each process: tens of milliseconds for gigabytes) when the tree's RSS is near
        its peak so far, at most every `PSS_MIN_INTERVAL` seconds, and at least every
        `PSS_MAX_INTERVAL`: a sampler must not cost the run it measures a core.
        """
        now = time.perf_counter()
        if now - self._last_scan >= TREE_SECONDS:  # the tree and its CPU, once a second
            self._last_scan = now
            processes = scan_processes()
            self._pids = process_tree(self.root, processes)
            for pid in self._pids:
                self.result.cpu_ticks[pid] = processes.get(pid, (0, 0))[1]
        pids = self._pids
        rss = {pid: process_memory(pid, use_pss=False)[0] for pid in pids}
        rss_total = sum(rss.values())
        self.result.samples += 1
        self.result.peak_rss_bytes = max(self.result.peak_rss_bytes, rss_total)
        near_peak = rss_total >= PSS_NEAR_PEAK * self.result.peak_rss_bytes
        wanted = near_peak and now - self._last_pss >= PSS_MIN_INTERVAL
        if self.use_pss and not (wanted or now - self._last_pss >= PSS_MAX_INTERVAL):
            return rss_total
        sizes = rss
        if self.use_pss:
            self._last_pss = now
            sizes = {}
            for pid in pids:
                size, kind = process_memory(pid, use_pss=True)
                if size and kind == "rss":
                    self.result.kind = "rss"
                sizes[pid] = size
        total = sum(sizes.values())
        self.result.largest_process_bytes = max(
            self.result.largest_process_bytes, max(sizes.values(), default=0)
        )
        if total > self.result.peak_bytes:
            self.result.peak_bytes = total
            self.result.peak_at_s = now - self._began
            self.result.peak_processes = len(pids)
            named: dict[str, int] = {}
            for pid, size in sizes.items():
                if size:
                    name = process_name(pid)
                    named[name] = named.get(name, 0) + size
            self.result.at_peak = named
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)


# --------------------------------------------------------------------------- training run


@dataclass(frozen=True)
class TrainingFigures:
    """One `recsys train` run: wall time, memory of the process tree, per-stage figures."""

    data: str
    buyers: int
    """Rows of the dataset's buyers table (0 when it has none)."""
    events: int
    exit_code: int
    wall_s: float
    """Command start to exit, including Python and Ray start-up and MLflow logging."""
    peak_tree_mb: float
    """Peak of the summed memory of the command's process tree (`memory_kind`)."""
    memory_kind: str
    peak_tree_rss_mb: float
    """Peak of the summed RSS of the tree (an upper bound: shared pages counted per user)."""
    peak_at_s: float
    largest_process_mb: float
    cpu_s: float = 0.0
    """CPU seconds of the whole tree: what the run costs whatever else the machine does
    (``cpu_s / cores`` bounds the wall time of a perfectly parallel run from below)."""
    at_peak_mb: dict[str, float] = field(default_factory=dict)
    """Memory of each process (by name; same names summed) at the peak sample."""
    stage_s: dict[str, float] = field(default_factory=dict)
    """Seconds of each stage task (MLflow `seconds.stage: ...`)."""
    stage_cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds of each stage task, all threads (MLflow `cpu_seconds.stage: ...`)."""
    finished_at_s: dict[str, float] = field(default_factory=dict)
    """When each stage finished, from the pipeline's start (the command's output)."""
    task_peak_rss_mb: dict[str, float] = field(default_factory=dict)
    """ru_maxrss of the worker that ran each stage (workers are reused: a task's figure
    may include an earlier task's peak) and of the driver."""
    run_s: dict[str, float] = field(default_factory=dict)
    """Other `seconds.*` metrics: prepare_data, pipeline, total (inside the command)."""
    run_id: str = ""
    error: str = ""
    settings: str = ""
    """The `--set` overrides the run was given ("" for the shipped defaults)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def recsys_command() -> list[str]:
    """The `recsys` console script of this environment (or the same entry point)."""
    script = Path(sys.executable).with_name("recsys")
    if script.exists():
        return [str(script)]
    found = shutil.which("recsys")
    if found:
        return [found]
    return [sys.executable, "-c", "from cli.main import main; main()"]


def training_env(tracking_uri: str) -> dict[str, str]:
    """The environment of the measured command (BLAS pinned, Ray quiet, MLflow throwaway)."""
    env = dict(os.environ)
    env.update(
        {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
            "PYTHONUNBUFFERED": "1",  # stage lines as they happen, not at exit
        }
    )
    env.pop("RAY_ADDRESS", None)  # a local Ray: the figures describe this machine
    return env


def table_rows(data_dir: Path, table: str) -> int:
    """Rows of a contract table file, from Parquet metadata (0 when absent)."""
    import pyarrow.parquet as pq

    path = data_dir / f"{table}.parquet"
    if not path.exists():
        return 0
    return int(pq.ParquetFile(path).metadata.num_rows)


def parse_output(lines: Iterable[str]) -> tuple[dict[str, float], str]:
    """Stage finish times (seconds from the pipeline's start) and the MLflow run id."""
    finished: dict[str, float] = {}
    run_id = ""
    for line in lines:
        line = line.strip()
        if match := _STAGE_LINE.match(line):
            finished[match.group(2)] = float(match.group(1))
        elif match := _RUN_ID_LINE.match(line):
            run_id = match.group(1)
    return finished, run_id


def run_metrics(db: Path, run_id: str = "") -> tuple[str, dict[str, float]]:
    """(run id, latest value of every metric) of `run_id`, or of the store's last run.

    Read from the SQLite store directly: importing MLflow costs seconds and nothing else
    of it is needed here.
    """
    with sqlite3.connect(db) as conn:
        if not run_id:
            row = conn.execute("SELECT run_uuid FROM runs ORDER BY start_time DESC LIMIT 1")
            found = row.fetchone()
            if found is None:
                return "", {}
            run_id = str(found[0])
        rows = conn.execute(
            "SELECT key, value FROM latest_metrics WHERE run_uuid = ?", (run_id,)
        ).fetchall()
    return run_id, {str(k): float(v) for k, v in rows}


def metric_key(label: str) -> str:
    """A label as `training.tracking` writes it into a metric name."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in label).strip()


@dataclass(frozen=True)
class RunMetrics:
    """A run's timing and memory metrics, by stage name."""

    stage_s: dict[str, float]
    stage_cpu_s: dict[str, float]
    task_peak_rss_mb: dict[str, float]
    run_s: dict[str, float]


def split_metrics(metrics: dict[str, float], labels: Iterable[str] = ()) -> RunMetrics:
    """Stage seconds, stage CPU seconds, task peak RSS and other seconds of a run.

    Stage names are given back as the command printed them when one of `labels` is the
    metric's (MLflow names replace parentheses and colons by underscores).
    """
    readable = {metric_key(label): label for label in labels}
    out = RunMetrics({}, {}, {}, {})
    for key, value in sorted(metrics.items()):
        if key.startswith("seconds.stage_ "):
            name = key.removeprefix("seconds.stage_ ")
            out.stage_s[readable.get(name, name)] = value
        elif key.startswith("cpu_seconds.stage_ "):
            name = key.removeprefix("cpu_seconds.stage_ ")
            out.stage_cpu_s[readable.get(name, name)] = value
        elif key.startswith("seconds."):
            out.run_s[key.removeprefix("seconds.")] = value
        elif key.startswith("peak_rss_mb."):
            name = key.removeprefix("peak_rss_mb.")
            out.task_peak_rss_mb[readable.get(name, name)] = value
    return out


def measure_training(
    data_dir: Path,
    work: Path,
    extra_args: Sequence[str] = (),
    echo: Callable[[str], None] | None = None,
) -> TrainingFigures:
    """Run ``recsys train --data DIR`` and measure it (see the module docstring).

    `work` receives the MLflow store and the command's log (``train.log``); `extra_args`
    are appended to the command (e.g. ``["--set", "model.mf.factors=32"]``). `echo`, when
    given, receives each output line as it comes.
    """
    work.mkdir(parents=True, exist_ok=True)
    db = (work / "mlflow.db").resolve()
    command = [*recsys_command(), "train", "--data", str(data_dir), *extra_args]
    log_path = work / "train.log"
    lines: list[str] = []
    began = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command,
            cwd=work,
            env=training_env(f"sqlite:///{db}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        with TreeSampler(proc.pid) as sampler:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()  # the log can be followed while the run goes on
                lines.append(line)
                if echo is not None:
                    echo(line.rstrip("\n"))
            code = proc.wait()
    wall = time.perf_counter() - began
    finished, run_id = parse_output(lines)
    metrics: dict[str, float] = {}
    if db.exists():
        run_id, metrics = run_metrics(db, run_id)
    parsed = split_metrics(metrics, finished)
    peak = sampler.result
    return TrainingFigures(
        data=str(data_dir),
        buyers=table_rows(data_dir, "buyers"),
        events=table_rows(data_dir, "events"),
        exit_code=code,
        wall_s=wall,
        peak_tree_mb=peak.peak_bytes / _MB,
        memory_kind=peak.kind,
        peak_tree_rss_mb=peak.peak_rss_bytes / _MB,
        peak_at_s=peak.peak_at_s,
        largest_process_mb=peak.largest_process_bytes / _MB,
        cpu_s=peak.cpu_s,
        at_peak_mb={k: v / _MB for k, v in sorted(peak.at_peak.items(), key=lambda kv: -kv[1])},
        stage_s=parsed.stage_s,
        stage_cpu_s=parsed.stage_cpu_s,
        finished_at_s=finished,
        task_peak_rss_mb=parsed.task_peak_rss_mb,
        run_s=parsed.run_s,
        run_id=run_id,
        error="" if code == 0 else "".join(lines[-20:]),
        settings=settings_label(extra_args),
    )


def settings_label(extra_args: Sequence[str]) -> str:
    """The `--set key=value` pairs of a command line, comma-separated ("" if none)."""
    pairs = zip(("", *extra_args), extra_args, strict=False)  # (previous argument, argument)
    return ", ".join(arg for prev, arg in pairs if prev == "--set")


# --------------------------------------------------------------------------- MF overhead


@dataclass(frozen=True)
class MFOverhead:
    """The pipeline's MF stage against `implicit` ALS called directly, same matrix.

    ``ratio`` = ``stage_s / implicit_s``: what the stage costs beyond the factorization
    itself (reading events before the cut, building the confidence matrix, the index
    bookkeeping after the fit).
    """

    data: str
    buyers: int
    items: int
    nnz: int
    factors: int
    iterations: int
    threads: int
    repeats: int
    stage_s: float
    """Median seconds of `fit_mf` (filter events, build the matrix, fit, keep)."""
    build_s: float
    """Median seconds of building the confidence matrix alone (`build_interactions`)."""
    implicit_s: float
    """Median seconds of `AlternatingLeastSquares.fit` on the prepared matrix."""
    ratio: float
    stage_runs_s: list[float] = field(default_factory=list)
    implicit_runs_s: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _timed(run: Callable[[], object]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def mf_overhead(data_dir: Path, repeats: int = 3, threads: int | None = None) -> MFOverhead:
    """Time the MF stage and a direct `implicit` fit on the same matrix (module docstring).

    The model config is the default one (`training.config.TrainConfig`) with the thread
    count a stage task gets (`ray.cpus_per_task`) unless `threads` is given. Runs
    alternate between the two, so drift in a shared machine's load hits both alike.
    """
    import numpy as np
    from threadpoolctl import threadpool_limits

    from recsys.data import load_dataset
    from recsys.features.interactions import IdIndex, build_interactions
    from recsys.models.ranker import data_end, fit_mf
    from training.config import TrainConfig
    from training.pipeline import threaded

    config = TrainConfig()
    model = threaded(config.model, threads or config.ray.cpus_per_task)
    mf = model.mf
    dataset = load_dataset(data_dir)
    as_of = data_end(dataset)

    def build() -> Any:
        return build_interactions(
            dataset.events,
            mf.event_weights,
            alpha=mf.alpha,
            item_index=IdIndex(dataset.items["item_id"]),
            as_of=as_of,
        )

    matrix = build().matrix.astype(np.float32).tocsr()

    def direct() -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        with threadpool_limits(1, "blas"):
            AlternatingLeastSquares(
                factors=mf.factors,
                regularization=mf.regularization,
                alpha=1.0,  # the pipeline scales confidence into the matrix
                dtype=np.float32,
                use_cg=mf.use_cg,
                iterations=mf.resolved_iterations,
                num_threads=mf.num_threads,
                random_state=mf.random_state,
            ).fit(matrix, show_progress=False)

    stage_runs, direct_runs, build_runs = [], [], []
    for _ in range(repeats):
        stage_runs.append(_timed(lambda: fit_mf(model, dataset, as_of)))
        direct_runs.append(_timed(direct))
        build_runs.append(_timed(build))
    stage_s, direct_s = statistics.median(stage_runs), statistics.median(direct_runs)
    return MFOverhead(
        data=str(data_dir),
        buyers=matrix.shape[0],
        items=matrix.shape[1],
        nnz=int(matrix.nnz),
        factors=mf.factors,
        iterations=mf.resolved_iterations,
        threads=mf.num_threads,
        repeats=repeats,
        stage_s=stage_s,
        build_s=statistics.median(build_runs),
        implicit_s=direct_s,
        ratio=stage_s / direct_s,
        stage_runs_s=stage_runs,
        implicit_runs_s=direct_runs,
    )


# --------------------------------------------------------------------------- report


def _stage_cell(run: TrainingFigures, stage: str) -> str:
    if stage not in run.stage_s:
        return "-"
    cpu = run.stage_cpu_s.get(stage)
    return f"{run.stage_s[stage]:.1f}" + (f" ({cpu:.0f})" if cpu is not None else "")


def _settings_cell(run: TrainingFigures) -> str:
    return f"`{run.settings}`" if run.settings else "defaults"


def format_training_markdown(
    runs: Sequence[TrainingFigures],
    overhead: Sequence[MFOverhead] = (),
    command: str = "python -m benchmarks.training_scale",
    targets: tuple[float, float] | None = (600.0, 8192.0),
) -> str:
    """A BENCHMARKS.md section: end-to-end runs, stage seconds, growth, MF overhead.

    `targets` (seconds, MB) adds a line saying whether the largest run met them.
    """
    lines = [
        "## Training at scale",
        "",
        f"Reproduce: `{command}`. Memory is the peak of the summed "
        "PSS of the command's whole process tree (driver, Ray, workers), sampled near "
        "the RSS peaks; CPU s is the tree's CPU time; task figures are each stage task's "
        "own peak RSS.",
        "",
        "| buyers | settings | events | wall s | CPU s | peak memory MB | largest task MB "
        "| driver MB | exit |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        tasks = [v for k, v in r.task_peak_rss_mb.items() if not k.startswith("driver")]
        lines.append(
            f"| {r.buyers:,} | {_settings_cell(r)} | {r.events:,} | {r.wall_s:.1f} "
            f"| {r.cpu_s:,.0f} "
            f"| {r.peak_tree_mb:,.0f} "
            f"({r.memory_kind}) | {max(tasks, default=0):,.0f} "
            f"| {r.task_peak_rss_mb.get('driver', 0):,.0f} | {r.exit_code} |"
        )
    stages = sorted({s for r in runs for s in r.stage_s})
    if stages:
        lines += ["", "Stage tasks, wall seconds (CPU seconds, all threads):", ""]
        heads = [f"{r.buyers:,} buyers" + (f" ({r.settings})" if r.settings else "") for r in runs]
        lines.append("| stage | " + " | ".join(heads) + " |")
        lines.append("|---|" + "---:|" * len(runs))
        for stage in stages:
            cells = [_stage_cell(r, stage) for r in runs]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        for key in ("pipeline", "total"):
            cells = [f"{r.run_s[key]:.1f}" if key in r.run_s else "-" for r in runs]
            lines.append(f"| ({key}, inside the command) | " + " | ".join(cells) + " |")
    same = [r for r in runs if r.settings == runs[0].settings]
    if len(same) >= 2:
        small, large = same[0], same[-1]
        size = large.events / max(small.events, 1)
        lines += [
            "",
            f"Growth from {small.buyers:,} to {large.buyers:,} buyers ({size:.1f}x the "
            f"events): wall time {large.wall_s / small.wall_s:.1f}x, peak memory "
            f"{large.peak_tree_mb / max(small.peak_tree_mb, 1):.1f}x.",
        ]
    if targets is not None and runs:
        seconds, mb = targets
        big = max(runs, key=lambda r: r.events)
        met = big.exit_code == 0 and big.wall_s < seconds and big.peak_tree_mb < mb
        lines += [
            "",
            f"Target at {big.buyers:,} buyers: under {seconds / 60:g} min and "
            f"{mb / 1024:g} GiB: {'met' if met else 'missed'} ({big.wall_s / 60:.1f} min, "
            f"{big.peak_tree_mb / 1024:.2f} GiB).",
        ]
    if overhead:
        lines += [
            "",
            "MF stage against `implicit` ALS fitted directly on the same matrix (same "
            "factors, iterations, threads; BLAS at one thread; medians):",
            "",
            "| buyers | items | nonzeros | threads | stage s | of which matrix s "
            "| implicit s | ratio |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for o in overhead:
            lines.append(
                f"| {o.buyers:,} | {o.items:,} | {o.nnz:,} | {o.threads} | {o.stage_s:.2f} "
                f"| {o.build_s:.2f} | {o.implicit_s:.2f} | {o.ratio:.2f} |"
            )
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, action="append", required=True, help="a dataset (repeatable)"
    )
    parser.add_argument("--work", type=Path, help="keep MLflow stores and logs here")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="passed to recsys train"
    )
    parser.add_argument("--mf-overhead", action="store_true", help="also time MF vs implicit")
    parser.add_argument("--no-train", action="store_true", help="skip the recsys train runs")
    parser.add_argument("--repeats", type=int, default=3, help="MF overhead repeats")
    parser.add_argument("--threads", type=int, help="MF threads (default: ray.cpus_per_task)")
    parser.add_argument("--markdown", type=Path, help="write the markdown section here")
    parser.add_argument("--verbose", action="store_true", help="echo the command's output")
    args = parser.parse_args(argv)
    extra = [item for o in args.overrides for item in ("--set", o)]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="training-scale-") as scratch:
        root = args.work or Path(scratch)
        echo = (lambda line: print(line, file=sys.stderr)) if args.verbose else None
        runs = (
            []
            if args.no_train
            else [
                measure_training(d, root / f"{stamp}-{d.name}", extra, echo=echo) for d in args.data
            ]
        )
    overhead = (
        [mf_overhead(d, args.repeats, args.threads) for d in args.data] if args.mf_overhead else []
    )
    out = {"runs": [r.as_dict() for r in runs], "mf_overhead": [o.as_dict() for o in overhead]}
    print(json.dumps(out, indent=1))
    if args.markdown is not None:
        args.markdown.write_text(format_training_markdown(runs, overhead))


if __name__ == "__main__":
    main()
