"""Faults under load on the real Ray Serve app (`make test-reliability`): a killed replica,
champion swaps, broken model artifacts, and a soak.

Each test prints its figures (requests sent, errors, recovery time, decisions lost, RSS)
as a ``FIGURES {...}`` line, so ``pytest -s`` shows what the closing notes quote. Load
comes from client threads on loopback; the service's decisions are checked against its
decision log on disk.
"""

# ruff: noqa: F811  (the tests take the imported `app` fixture as their argument)

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import mlflow
import polars as pl
import pytest

from recsys.data import load_dataset
from recsys.models.ranker import PromoRanker, RankerConfig
from serving.decision_log import read_log
from tests.serving.test_serve_app import (  # noqa: F401  (`app` is a fixture)
    MODEL,
    SELLER_KEY,
    App,
    _register,
    app,
)
from training.registry import CHAMPION, register
from training.tracking import log_ranker_model

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SOAK_SECONDS = float(os.environ.get("RECSYS_SOAK_SECONDS", "240"))
"""How long the soak runs (`make test-reliability`: four minutes)."""
SOAK_RATE = float(os.environ.get("RECSYS_SOAK_RATE", "8"))
"""Requests per second of the soak: the rate at which the serving benchmark kept p99
within 50 ms through the Serve proxy (BENCHMARKS.md)."""
RECOVERY_LIMIT_S = 180.0
"""A killed replica must answer again within this."""


@dataclass(frozen=True)
class Sent:
    """One request of a load run."""

    began: float
    ended: float
    status: int
    """HTTP status; 0 when no response came (connection refused or reset)."""
    decision: str | None
    version: str | None
    error: str = ""


@dataclass
class Load:
    """Client threads sending /v1/rank for known buyers: closed loop, or paced at `rate`."""

    url: str
    buyers: list[str]
    workers: int = 4
    rate: float | None = None
    sent: list[Sent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(self.workers)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, k: int) -> None:
        headers = {"Authorization": f"Bearer {SELLER_KEY}"}
        interval = self.workers / self.rate if self.rate else 0.0
        next_at = time.monotonic() + k * interval / self.workers
        i = k
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                if interval:
                    delay = next_at - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                    next_at += interval
                buyer = self.buyers[i % len(self.buyers)]
                i += self.workers
                began = time.monotonic()
                try:
                    r = http.post(self.url + "/v1/rank", json={"buyer_id": buyer}, headers=headers)
                except httpx.HTTPError as exc:
                    sent = Sent(began, time.monotonic(), 0, None, None, repr(exc)[:200])
                else:
                    ok = r.status_code == 200
                    body = r.json() if ok else {}
                    sent = Sent(
                        began,
                        time.monotonic(),
                        r.status_code,
                        body.get("decision_id"),
                        body.get("model_version"),
                        "" if ok else r.text[:200],
                    )
                with self._lock:
                    self.sent.append(sent)

    def snapshot(self) -> list[Sent]:
        with self._lock:
            return list(self.sent)


def report(name: str, figures: dict[str, object]) -> None:
    print(f"\nFIGURES {name} {json.dumps(figures, default=str)}")


def buyers_of(app: App, n: int = 200) -> list[str]:
    events = pl.read_parquet(app.market / "events.parquet")
    return events["buyer_id"].unique().sort().head(n).to_list()


def replica_pids() -> list[int]:
    """PIDs of this app's ranking replicas (Ray titles them `ray::ServeReplica:<app>:
    ranker`); another engineer's app on the machine is never counted or killed."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::ServeReplica:promo-test:ranker"):
            pids.append(int(entry))
    return pids


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ready(app: App) -> dict[str, object]:
    r = httpx.get(app.url + "/readyz", timeout=30)
    return {"code": r.status_code, **r.json()}


def wait_until(condition: object, what: str, seconds: float) -> float:
    """Poll `condition()` until true; the seconds it took (fails after `seconds`)."""
    began = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - began < seconds, f"timed out after {seconds} s: {what}"
        time.sleep(0.25)
    return time.monotonic() - began


def logged_decisions(app: App) -> set[str]:
    return set(read_log(app.log_dir)["exposures"]["exposure_id"].to_list())


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


# --------------------------------------------------------------------------- tests


def test_a_killed_replica_comes_back_and_no_acknowledged_decision_is_lost(app: App) -> None:
    (old,) = replica_pids()
    with Load(app.url, buyers_of(app), workers=4) as load:
        time.sleep(5)
        killed_at = time.monotonic()
        os.kill(old, signal.SIGKILL)

        def answered_again() -> bool:
            return any(s.status == 200 and s.began > killed_at for s in load.snapshot())

        recovery = wait_until(answered_again, "a 200 from a new replica", RECOVERY_LIMIT_S)
        time.sleep(3)
    sent = load.snapshot()
    assert replica_pids() and old not in replica_pids()
    failed = [s for s in sent if s.status != 200]
    acknowledged = {s.decision for s in sent if s.status == 200 and s.decision}
    acknowledged_before_kill = {
        s.decision for s in sent if s.status == 200 and s.decision and s.ended < killed_at
    }
    # The dead replica's write-ahead log is replayed by the new one; the rest is flushed.
    wait_until(lambda: acknowledged <= logged_decisions(app), "every decision logged", 60)
    logged = read_log(app.log_dir)["exposures"]["exposure_id"]
    report(
        "replica_kill",
        {
            "requests": len(sent),
            "failed": len(failed),
            "failed_statuses": sorted({s.status for s in failed}),
            "recovery_s": round(recovery, 1),
            "acknowledged": len(acknowledged),
            "acknowledged_before_kill": len(acknowledged_before_kill),
            "decisions_lost": len(acknowledged - set(logged.to_list())),
            "duplicates_in_log": logged.len() - logged.n_unique(),
        },
    )
    assert logged.n_unique() == logged.len()
    # Failures only while no replica was up: none before the kill, none after recovery.
    assert all(killed_at - 30 < s.ended and s.began < killed_at + recovery for s in failed)


def test_champion_swaps_under_concurrent_load_fail_no_request(app: App) -> None:
    dataset = load_dataset(app.market)
    second = PromoRanker(RankerConfig.from_dict({"mf": {"factors": 8}})).fit(dataset)
    current = str(app.client.get_model_version_by_alias(MODEL, CHAMPION).version)
    new = _register(app.client, app.experiment, second, app.root / "swap")
    with Load(app.url, buyers_of(app), workers=8) as load:
        time.sleep(2)
        for target in (new, current, new):
            app.client.set_registered_model_alias(MODEL, CHAMPION, target)

            def serving_target(version: str = target) -> bool:
                return any(s.version == version for s in load.snapshot()[-8:])

            wait_until(serving_target, f"version {target} served", 120)
            time.sleep(1)
    sent = load.snapshot()
    failed = [s for s in sent if s.status != 200]
    report(
        "swap_under_load",
        {"requests": len(sent), "failed": len(failed), "swaps": 3, "clients": 8},
    )
    assert not failed, failed[:3]


def test_a_broken_model_keeps_the_old_one_serving_and_readyz_tells(app: App) -> None:
    good = str(app.client.get_model_version_by_alias(MODEL, CHAMPION).version)
    wait_until(lambda: ready(app).get("model_version") == good, "the champion served", 60)
    ranker = PromoRanker(RankerConfig()).fit(load_dataset(app.market))
    broken = {}
    for kind in ("corrupt", "missing"):
        with mlflow.start_run(experiment_id=app.experiment) as run:
            model_uri = log_ranker_model(ranker)
        broken[kind] = register(app.client, MODEL, model_uri, run.info.run_id)
        files = _artifact_dir(model_uri)
        if kind == "corrupt":  # every binary file of the model overwritten
            for path in files.rglob("*"):
                if path.is_file() and path.suffix not in (".yaml", ".txt", ".json", ".md"):
                    path.write_bytes(b"\x00not a model\xff" * 16)
        else:
            shutil.rmtree(files)

    with Load(app.url, buyers_of(app), workers=2) as load:
        for kind, version in broken.items():
            app.client.set_registered_model_alias(MODEL, CHAMPION, version)
            # Wait for this version's own failure (the previous one's may still be shown).
            failed = f"model version {version} failed to load"

            def says_failed(failed: str = failed) -> bool:
                return failed in str(ready(app).get("detail"))

            wait_until(says_failed, f"{kind}: {failed}", 60)
            state = ready(app)
            assert state["code"] == 200 and state["status"] == "degraded"
            assert state["model_version"] == good
            time.sleep(2)
        # Rolling the alias back to the version served clears the error.
        app.client.set_registered_model_alias(MODEL, CHAMPION, good)
        wait_until(lambda: ready(app).get("status") == "ok", "ok again", 60)
    sent = load.snapshot()
    failed = [s for s in sent if s.status != 200]
    report(
        "broken_model",
        {
            "requests": len(sent),
            "failed": len(failed),
            "versions_served": sorted({s.version for s in sent if s.version}),
        },
    )
    assert not failed, failed[:3]
    assert {s.version for s in sent} == {good}


def _artifact_dir(model_uri: str) -> Path:
    """The local directory holding a logged model's files (a file-based artifact store)."""
    model_id = model_uri.removeprefix("models:/")
    location = mlflow.get_logged_model(model_id).artifact_location
    return Path(location.removeprefix("file://"))


def test_a_soak_at_the_sustainable_rate_has_no_errors_and_flat_memory(app: App) -> None:
    (pid,) = replica_pids()
    warmup = min(30.0, SOAK_SECONDS / 4)
    with Load(app.url, buyers_of(app, 400), workers=4, rate=SOAK_RATE) as load:
        time.sleep(warmup)
        start_rss = rss_mb(pid)
        samples = [start_rss]
        end = time.monotonic() + SOAK_SECONDS
        while time.monotonic() < end:
            time.sleep(5)
            samples.append(rss_mb(pid))
    sent = load.snapshot()
    end_rss = rss_mb(pid)
    failed = [s for s in sent if s.status != 200]
    latencies = [1000 * (s.ended - s.began) for s in sent if s.status == 200]
    acknowledged = {s.decision for s in sent if s.status == 200 and s.decision}
    wait_until(lambda: acknowledged <= logged_decisions(app), "every decision logged", 60)
    report(
        "soak",
        {
            "seconds": SOAK_SECONDS + warmup,
            "rate_rps": SOAK_RATE,
            "requests": len(sent),
            "errors": len(failed),
            "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1),
            "replica_rss_mb_after_warmup": round(start_rss, 1),
            "replica_rss_mb_end": round(end_rss, 1),
            "replica_rss_mb_max": round(max(samples), 1),
            "decisions_lost": len(acknowledged - logged_decisions(app)),
        },
    )
    assert not failed, failed[:3]
    assert len(sent) >= 0.8 * SOAK_RATE * SOAK_SECONDS  # the load really ran
    # Flat: growth after warm-up within 10 % + 64 MB (allocator noise, caches filling).
    assert end_rss <= 1.10 * start_rss + 64, (start_rss, end_rss)


@pytest.fixture(autouse=True)
def _no_leftover_alias_state(app: App) -> Iterator[None]:
    """Each test leaves the champion alias where it found it."""
    before = app.client.get_model_version_by_alias(MODEL, CHAMPION).version
    yield
    app.client.set_registered_model_alias(MODEL, CHAMPION, before)
