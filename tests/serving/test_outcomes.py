"""Outcomes resolve on any replica, stay inside their window and are stored exactly once.

Two "replicas" here are two `RankingService`s in this process, each with its own
`DecisionLog` (its own write-ahead owner) on one directory, as Serve's replicas share
`decision_log_dir`: what one decides, the other must accept outcomes for, whether the
decision is still only in the deciding replica's write-ahead segment, already in a part,
or from before a restart. The real Serve app is checked the same way in
`test_outcome_faults.py` (`make test-reliability`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from recsys.data import load_dataset
from recsys.models.ranker import PromoRanker
from serving.auth import ADMIN_PRINCIPAL, ForbiddenError, Principal
from serving.decision_index import DecisionIndex, _SeenParts
from serving.decision_log import DecisionLog, read_log
from serving.outcomes import CLOCK_SKEW, OutcomeError, OutcomeRecorder
from serving.schemas import Outcome, RankRequest, RankResponse
from serving.service import RankingService

SELLER, OTHER = "s001", "s002"


@dataclass
class Clock:
    """The service clock, moved by the tests."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Replica:
    log: DecisionLog
    service: RankingService

    def close(self) -> None:
        self.log.close()

    def die(self) -> None:
        """End as a killed process would: its write-ahead segment stays on disk, unlocked,
        and nothing buffered is ever written."""
        log = self.log
        wal = log._wal
        assert wal is not None
        with log._cond:
            log._wal = None
            log._buffers = {name: [] for name in log._buffers}
            log._buffered = 0
        assert wal._file is not None and wal._lock_file is not None
        wal._file.close()
        wal._lock_file.close()
        log.close()


def replica(ranker: PromoRanker, directory: Path, clock: Clock, seed: int = 1) -> Replica:
    """A replica as `serving.app` builds one: its log (flushed only when the test says,
    so what is still in a write-ahead segment is known), an index over the shared
    directory (read at start), the recorder, the service."""
    log = DecisionLog(directory, max_seconds=3600).start()
    index = DecisionIndex(directory, clock=clock, own_owner=lambda: log.owner)
    index.refresh()
    service = RankingService(
        ranker,
        "7",
        decision_log=log,
        clock=clock,
        seed=seed,
        outcomes=OutcomeRecorder(index, log),
    )
    return Replica(log, service)


@pytest.fixture
def clock(market_now: datetime) -> Clock:
    return Clock(market_now)


@pytest.fixture
def pair(
    market_ranker: PromoRanker, tmp_path: Path, clock: Clock
) -> Iterator[tuple[Replica, Replica]]:
    a = replica(market_ranker, tmp_path, clock, seed=1)
    b = replica(market_ranker, tmp_path, clock, seed=2)
    yield a, b
    a.close()
    b.close()


def seller() -> Principal:
    return Principal(seller_id=SELLER, admin=False)


RANKED = 150
"""Requests `decide` makes (each one a logged decision)."""


def decide(r: Replica, n: int, start: int = 1) -> list[RankResponse]:
    """The first `n` of `RANKED` decisions for seller s001's buyers that offer something."""
    buyers = range(start, start + RANKED)
    requests = [RankRequest(buyer_id=f"b{i:07d}", seller_id=SELLER) for i in buyers]
    answers = [a for a in r.service.rank(requests, [ADMIN_PRINCIPAL] * len(requests)) if a.offers]
    assert len(answers) >= n, "too few buyers were offered something"
    return answers[:n]


def redemption(answer: RankResponse, **fields: object) -> Outcome:
    return Outcome(decision_id=answer.decision_id, type="redemption", **fields)  # type: ignore[arg-type]


def stored(directory: Path) -> pl.DataFrame:
    return read_log(directory)["redemptions"]


# --------------------------------------------------------------------------- any replica


def test_a_decision_still_in_another_replicas_write_ahead_log_takes_its_outcome(
    pair: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = pair
    answers = decide(a, 5)
    assert read_log(tmp_path)["exposures"].height == 0  # only in a's write-ahead segment
    done = b.service.record_outcomes([redemption(x, amount=10.0) for x in answers], seller())
    assert (done.accepted, done.duplicates) == (5, 0)
    a.log.flush()
    b.log.flush()
    rows = stored(tmp_path)
    assert sorted(rows["exposure_id"].to_list()) == sorted(x.decision_id for x in answers)
    assert rows["offer_id"].to_list() == [
        {x.decision_id: x.offers[0].offer_id for x in answers}[e] for e in rows["exposure_id"]
    ]


def test_a_decision_already_in_another_replicas_parts_takes_its_outcome(
    pair: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = pair
    b.service.record_outcomes([redemption(decide(a, 1)[0])], seller())  # b has read a's log
    later = decide(a, 3, start=100)
    a.log.flush()  # into parts; the segments that held them are deleted
    logged = set(read_log(tmp_path)["exposures"]["exposure_id"])
    assert {x.decision_id for x in later} <= logged
    done = b.service.record_outcomes([redemption(x) for x in later], seller())
    assert done.accepted == 3 and done.duplicates == 0


def test_decisions_from_before_a_restart_take_their_outcomes(
    market_ranker: PromoRanker, tmp_path: Path, clock: Clock
) -> None:
    first = replica(market_ranker, tmp_path, clock)
    answers = decide(first, 20)
    first.close()
    clock.now += timedelta(hours=2)
    again = replica(market_ranker, tmp_path, clock, seed=3)
    try:
        done = again.service.record_outcomes([redemption(x) for x in answers], seller())
        again.log.flush()
    finally:
        again.close()
    assert (done.accepted, done.duplicates) == (20, 0)
    assert stored(tmp_path).height == 20


def test_a_replica_killed_before_flushing_loses_no_outcome(
    market_ranker: PromoRanker, tmp_path: Path, clock: Clock
) -> None:
    """The deciding replica dies (SIGKILL) with its decisions only in its write-ahead
    segment: a live replica resolves them from the segment, a replica started later from
    the parts its start recovered, and retries across both are stored once."""
    live = replica(market_ranker, tmp_path, clock, seed=5)
    dead = replica(market_ranker, tmp_path, clock)
    answers = decide(dead, 4)
    dead.die()
    try:
        first = live.service.record_outcomes([redemption(x) for x in answers[:2]], seller())
        later = replica(market_ranker, tmp_path, clock, seed=4)  # recovers the segment
        try:
            assert later.log.stats().rows_recovered == RANKED
            second = later.service.record_outcomes([redemption(x) for x in answers], seller())
            later.log.flush()
        finally:
            later.close()
        live.log.flush()
    finally:
        live.close()
    assert (first.accepted, first.duplicates) == (2, 0)
    assert (second.accepted, second.duplicates) == (4, 2)
    exposures = read_log(tmp_path)["exposures"]["exposure_id"]
    assert exposures.n_unique() == exposures.len()  # each decision once, recovered
    assert {x.decision_id for x in answers} <= set(exposures)
    assert sorted(stored(tmp_path)["exposure_id"]) == sorted(x.decision_id for x in answers)


# --------------------------------------------------------------------------- exactly once


def test_a_retry_is_accepted_and_stored_once_on_whichever_replica(
    pair: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = pair
    x, y = decide(a, 2)
    first = a.service.record_outcomes(
        [redemption(x, order_id="o1"), redemption(x, order_id="o1"), redemption(y)], seller()
    )
    assert (first.accepted, first.duplicates) == (3, 1)
    again = b.service.record_outcomes(
        [redemption(x, order_id="o1"), redemption(y), redemption(x, order_id="o2")], seller()
    )
    assert (again.accepted, again.duplicates) == (3, 2)  # o2 is another order: stored
    a.log.flush()
    b.log.flush()
    rows = stored(tmp_path)
    keys = sorted(zip(rows["exposure_id"], rows["order_id"].fill_null(""), strict=True))
    assert keys == sorted([(x.decision_id, "o1"), (x.decision_id, "o2"), (y.decision_id, "")])
    ledger = read_log(tmp_path)["outcome_ledger"]
    assert ledger.height == 3 and ledger.select("decision_id", "order_id").n_unique() == 3


def test_a_purchase_and_a_redemption_of_one_order_are_two_outcomes(
    pair: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, _ = pair
    (x,) = decide(a, 1)
    both = [
        redemption(x, order_id="o9"),
        Outcome(decision_id=x.decision_id, type="purchase", order_id="o9"),
        Outcome(decision_id=x.decision_id, type="purchase", order_id="o9"),  # a retry
    ]
    done = a.service.record_outcomes(both, seller())
    assert (done.accepted, done.duplicates) == (3, 1)
    a.log.flush()
    assert stored(tmp_path).height == 1  # a purchase without an offer is no contract row
    assert read_log(tmp_path)["outcome_ledger"]["outcome_type"].sort().to_list() == [
        "purchase",
        "redemption",
    ]


def test_the_same_retry_on_two_replicas_at_once_is_stored_once(
    pair: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = pair
    answers = decide(a, 4)
    outcomes = [redemption(x, order_id="o1", amount=5.0) for x in answers]
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def send(r: Replica) -> None:
        start.wait()
        try:
            for _ in range(5):
                done = r.service.record_outcomes(outcomes, seller())
                results.append((done.accepted, done.duplicates))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(r,)) for r in (a, b, a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:1]
    assert len(results) == 30 and all(accepted == 4 for accepted, _ in results)
    assert sum(4 - dup for _, dup in results) == 4  # stored once, by exactly one call
    a.log.flush()
    b.log.flush()
    assert stored(tmp_path).height == 4


# --------------------------------------------------------------------------- checks


def problems(error: pytest.ExceptionInfo[OutcomeError]) -> list[tuple[object, str]]:
    return [(p["loc"][-1], p["type"]) for p in error.value.problems]


def test_outcome_times_must_fall_in_the_decisions_window(
    pair: tuple[Replica, Replica], clock: Clock, tmp_path: Path
) -> None:
    a, b = pair
    (x,) = decide(a, 1)
    decided = clock.now
    window = a.service.outcome_window
    assert window == timedelta(days=7)  # the model's response horizon
    for bad in (
        datetime(1, 1, 1, tzinfo=decided.tzinfo),  # year 1
        decided - timedelta(microseconds=1),  # before its decision
        decided + window,  # the window has closed
        decided + CLOCK_SKEW + timedelta(seconds=1),  # in the future (clock at the decision)
    ):
        with pytest.raises(OutcomeError) as refused:
            b.service.record_outcomes([redemption(x, ts=bad)], seller())
        assert problems(refused) == [("ts", "outcome_window")], bad
        assert "outcomes until" in str(refused.value)
    ok = b.service.record_outcomes([redemption(x, ts=decided + timedelta(minutes=3))], seller())
    assert ok.accepted == 1
    clock.now = decided + window  # later, the window closed: no ts means "now", refused too
    with pytest.raises(OutcomeError) as late:
        b.service.record_outcomes([redemption(x, order_id="late")], seller())
    assert problems(late) == [("decision_id", "outcome_window")]
    clock.now = decided + window - timedelta(seconds=1)
    assert b.service.record_outcomes([redemption(x, order_id="in-time")], seller()).accepted == 1


def test_an_unknown_decision_refuses_the_whole_call_naming_it(
    pair: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = pair
    (x,) = decide(a, 1)
    with pytest.raises(OutcomeError) as refused:
        b.service.record_outcomes(
            [redemption(x), Outcome(decision_id="made-up", type="purchase")], seller()
        )
    assert problems(refused) == [("decision_id", "unknown_decision")]
    assert refused.value.problems[0]["loc"] == ["body", "outcomes", 1, "decision_id"]
    assert "made-up" in refused.value.problems[0]["msg"]
    b.log.flush()
    assert stored(tmp_path).height == 0  # the good one beside it was not stored either


def test_another_sellers_decision_is_refused_on_every_replica(
    pair: tuple[Replica, Replica],
) -> None:
    a, b = pair
    (x,) = decide(a, 1)
    for r in (a, b):
        with pytest.raises(ForbiddenError, match="may not report outcomes"):
            r.service.record_outcomes([redemption(x)], Principal(seller_id=OTHER, admin=False))


def test_the_log_with_outcomes_is_still_training_data(
    pair: tuple[Replica, Replica], market_data: Path, tmp_path: Path
) -> None:
    a, b = pair
    answers = decide(a, 3)
    b.service.record_outcomes([redemption(x, order_id="o1") for x in answers], seller())
    b.service.record_outcomes([redemption(x, order_id="o1") for x in answers], seller())
    a.log.flush()
    b.log.flush()
    dataset = load_dataset(market_data, decision_logs=[tmp_path])
    assert dataset.redemptions is not None
    logged = dataset.redemptions.filter(pl.col("order_id") == "o1")
    assert sorted(logged["exposure_id"].to_list()) == sorted(x.decision_id for x in answers)


# --------------------------------------------------------------------------- the index


def test_the_index_keeps_the_window_and_at_most_max_decisions(clock: Clock) -> None:
    index = DecisionIndex(None, keep=timedelta(days=2), max_decisions=3, clock=clock)
    rows = pl.DataFrame(
        {
            "exposure_id": ["old", "d1", "d2", "d3", "d4"],
            "buyer_id": ["b"] * 5,
            "offer_id": ["o", None, "o", "o", "o"],
            "seller_id": [SELLER] * 5,
            "ts": [clock.now - timedelta(days=3)] + [clock.now] * 4,
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )
    index.add_decisions(rows)
    assert set(index.find(["old", "d1", "d2", "d3", "d4"])) == {"d2", "d3", "d4"}
    assert len(index) == 3
    index.ensure_keep(timedelta(days=7))
    assert index.keep == timedelta(days=8)


def test_parts_are_read_once_and_late_ones_still_seen() -> None:
    seen = _SeenParts()
    first = [
        "part-20260318T093000000000Z-1-000001.parquet",
        "part-20260318T094000000000Z-1-2.parquet",
    ]
    assert seen.new(first) == sorted(first)
    assert seen.new(first) == []
    late = "part-20260318T093500000000Z-2-000001.parquet"  # older name, appeared later
    assert seen.new([*first, late]) == [late]
    ancient = "part-20260318T083000000000Z-3-000001.parquet"  # beyond the slack: read before
    assert seen.new([ancient]) == []
