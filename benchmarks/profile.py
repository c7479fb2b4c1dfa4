"""Where a server's CPU goes under load: py-spy samples of its processes, summarized.

`record` runs `py-spy record --format raw` against running processes (non-blocking, so
the sampled process is not paused) while the caller loads them; `summarize` reads the
collapsed stacks and tells, of the samples in which the process was on CPU, the share
spent in each package (by the innermost frame) and in the project's own functions (by
every frame: inclusive). The raw files are kept for flame graphs (`flamegraph.pl`, or
speedscope.app reads them as they are).

    python -m benchmarks.profile RAW [RAW ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROJECT = ("serving", "recsys", "training", "benchmarks", "cli")
"""Top-level packages whose functions are listed by name."""
GROUPS = {
    "polars": "polars",
    "numpy": "numpy",
    "scipy": "numpy",
    "implicit": "numpy",
    "sklearn": "numpy",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",
    "fastapi": "fastapi/starlette/uvicorn",
    "starlette": "fastapi/starlette/uvicorn",
    "uvicorn": "fastapi/starlette/uvicorn",
    "httptools": "fastapi/starlette/uvicorn",
    "anyio": "asyncio/threads",
    "asyncio": "asyncio/threads",
    "concurrent": "asyncio/threads",
    "threading.py": "asyncio/threads",
    "selectors.py": "asyncio/threads",
    "ray": "ray",
    "grpc": "ray",
    "google": "ray",
    "json": "json",
    "orjson": "json",
    "pyarrow": "pyarrow",
}


@dataclass(frozen=True)
class ProfileSummary:
    """One process's samples: by package (innermost frame) and by project function."""

    process: str
    samples: int
    by_package: dict[str, float] = field(default_factory=dict)
    """Share of samples whose innermost frame is in each package group."""
    project_inclusive: dict[str, float] = field(default_factory=dict)
    """Share of samples with each project function anywhere on the stack (top ones)."""
    raw: str = ""
    """The collapsed-stack file."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def package_of(frame: str) -> str:
    """The package group of a py-spy frame ``name (path/file.py:line)``."""
    if "(" not in frame:
        return "native/other"
    path = frame.rsplit("(", 1)[1].rstrip(")")
    head = path.split("/", 1)[0].split(":", 1)[0]
    if head in PROJECT:
        return "project (" + head + ")"
    return GROUPS.get(head, "other python")


def summarize(lines: Iterable[str], process: str, raw: str = "", top: int = 12) -> ProfileSummary:
    """Summarize py-spy's raw (collapsed) output: ``frame;frame;... count`` per line."""
    packages: Counter[str] = Counter()
    project: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        packages[package_of(frames[-1])] += n
        own = {f for f in frames if package_of(f).startswith("project")}
        for frame in own:
            if not frame.startswith(("<module>", "main ", "_run_")):
                project[_short(frame)] += n
    if total == 0:
        return ProfileSummary(process, 0, raw=raw)
    return ProfileSummary(
        process=process,
        samples=total,
        by_package={k: n / total for k, n in packages.most_common()},
        project_inclusive={k: n / total for k, n in project.most_common(top)},
        raw=raw,
    )


def _short(frame: str) -> str:
    """``Cls.fn (serving/service.py:338)`` -> ``serving/service.py Cls.fn``."""
    name, _, where = frame.partition(" (")
    return f"{where.rstrip(')').rsplit(':', 1)[0]} {name}"


def py_spy() -> str | None:
    """The py-spy executable of this environment or PATH (None: not installed)."""
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def start_recording(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start py-spy on `pid` for `seconds` into `out` (raw); None without py-spy."""
    exe = py_spy()
    if exe is None:
        return None
    argv = [exe, "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", "100"]
    argv += ["--nonblocking", "--format", "raw", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish(proc: subprocess.Popen[bytes] | None, out: Path, process: str) -> ProfileSummary:
    """Wait for a `start_recording` and summarize its file (empty if it recorded nothing)."""
    if proc is not None:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
    if not out.exists():
        return ProfileSummary(process, 0, raw=str(out))
    with out.open() as handle:
        return summarize(handle, process, raw=str(out))


def descendants(root: int) -> list[int]:
    """`root`'s descendant processes, from /proc (processes may vanish meanwhile)."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(parent, []).append(int(name))
    out, stack = [], list(kids.get(root, ()))
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(kids.get(pid, ()))
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) used so far by `root` and its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for pid in [root, *descendants(root)]:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / ticks


def find_processes(root: int, markers: Sequence[str]) -> dict[str, int]:
    """Descendants of `root` whose command line contains each marker (first match)."""
    found: dict[str, int] = {}
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for marker in markers:
            if marker in cmdline and marker not in found:
                found[marker] = pid
    return found


def format_profiles(profiles: Sequence[ProfileSummary], packages: int = 6) -> list[str]:
    """Markdown lines: per process, the top package groups and project functions."""
    lines = []
    for p in profiles:
        if not p.samples:
            lines.append(f"- **{p.process}**: no samples (py-spy missing or not permitted).")
            continue
        shares = ", ".join(f"{k} {v:.0%}" for k, v in list(p.by_package.items())[:packages])
        own = "; ".join(f"`{k}` {v:.0%}" for k, v in list(p.project_inclusive.items())[:5])
        lines.append(
            f"- **{p.process}** ({p.samples:,} samples on CPU): innermost frame in {shares}. "
            f"Project functions on the stack: {own or 'none'}. Raw stacks: `{p.raw}`."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path, nargs="+", help="py-spy --format raw files")
    args = parser.parse_args()
    summaries = []
    for path in args.raw:
        with path.open() as handle:
            summaries.append(summarize(handle, path.stem, raw=str(path)))
    print("\n".join(format_profiles(summaries)))


if __name__ == "__main__":
    main()
