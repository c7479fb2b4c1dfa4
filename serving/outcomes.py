"""Outcomes of decisions: resolved on any replica, checked, stored exactly once.

`OutcomeRecorder.record` turns a `/v1/outcomes` call into decision-log rows:

- **Any replica.** Its decisions are looked up in the `DecisionIndex` of the shared
  decision log, so a decision made by another replica, before a restart or under
  another model version takes its outcome as well as one made here. An id that is in
  no log within the outcome window is refused (422 naming it), never dropped silently.
- **Tenant.** A seller's key reports only on its own decisions and offers (403).
- **Window.** An outcome's `ts` must fall in its decision's outcome window, from the
  decision to `window` after it (the model's response horizon, over which training
  labels it), and not in the future (beyond `CLOCK_SKEW`); otherwise 422 naming
  `outcomes[i].ts`. Without a `ts`, the outcome is dated when it is received (never
  before its decision: replicas' clocks may differ by a little).
- **Idempotent.** An outcome's key is (decision id, type, order id): one that is stored
  already (a client's retry, on whichever replica) is answered as accepted and counted
  in `duplicates`, and not stored again. Keys are checked and the rows written under a
  lock on the log directory shared by every process writing it, so two replicas given
  the same retry at once store it once.

All outcomes of a call are stored or none (any refusal stores nothing). A redemption
(or a purchase naming an offer) becomes a `redemptions` row; every accepted outcome
becomes an `OUTCOME_LEDGER` row, in one write-ahead record with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl

from recsys.data.schema import REDEMPTIONS
from recsys.policy.eligibility import as_utc
from serving.auth import ForbiddenError, Principal
from serving.decision_index import Decision, DecisionIndex, OutcomeKey
from serving.decision_log import OUTCOME_LEDGER, DecisionLog, DecisionLogError, NotDurableError
from serving.schemas import Outcome

CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future (by this replica's clock) an outcome's `ts` may lie."""

LOCK_NAME = ".outcomes.lock"
"""The file in the decision log directory whose lock serializes outcome writes."""

LOCK_TIMEOUT_S = 10.0
"""Longest wait for the directory lock before the call is answered 503 (retry)."""

TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class OutcomeError(ValueError):
    """Outcomes refused as a whole (HTTP 422); `problems` says which and why, each with
    its location in the request body (`loc`), like a validation error."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        first = problems[0]["msg"] if problems else "outcomes refused"
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(first + more)
        self.problems = problems


class UnknownOfferError(ValueError):
    """An outcome names an offer the served model does not know (HTTP 422)."""

    def __init__(self, message: str, offer_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.offer_ids = list(offer_ids)


@dataclass(frozen=True)
class Recorded:
    """What one call stored."""

    accepted: int
    """Outcomes of the call, all accepted (stored now or before)."""
    duplicates: int
    """Of those, outcomes whose key was stored already (a retry): not stored again."""
    redemptions: int
    """`redemptions` rows written."""
    purchases_only: int
    """New purchases without an offer (in the ledger only: not a contract row)."""


class OutcomeRecorder:
    """Checks and stores outcomes against a `DecisionIndex` (see the module docstring).

    One per replica, shared by the services of successive models, so its lock and index
    outlive a champion swap. `decision_log` None: nothing is written (tests, dry runs),
    but keys are still remembered.
    """

    def __init__(self, index: DecisionIndex, decision_log: DecisionLog | None = None) -> None:
        self.index = index
        self.decision_log = decision_log
        self._lock = threading.Lock()
        self._lock_file: BinaryIO | None = None

    def record(
        self,
        outcomes: Sequence[Outcome],
        principal: Principal,
        *,
        now: datetime,
        window: timedelta,
        offer_seller: Mapping[str, str | None],
        model_version: str,
    ) -> Recorded:
        """Store `outcomes` reported by `principal` (all or none).

        `now` is the service's clock, `window` the outcome window after a decision,
        `offer_seller` the served model's offers and their sellers. Raises
        `ForbiddenError` (403) for another seller's decision or offer, `OutcomeError`
        (422) naming every unknown decision, time outside its window and redemption
        without an offer, `UnknownOfferError` (422) for an offer the model does not
        know, and `DecisionLogError` (503) when the rows cannot be made durable.
        """
        now = as_utc(now)
        with self._lock, self._directory_lock():
            self.index.refresh((OUTCOME_LEDGER.name,))
            ids = [o.decision_id for o in outcomes]
            found = self.index.find(ids)
            if len(found) < len(set(ids)):  # made elsewhere since: read the new parts
                self.index.refresh(("exposures",))
                found = self.index.find(ids)
            problems: list[dict[str, Any]] = []
            redemptions: list[dict[str, object]] = []
            ledger: list[dict[str, object]] = []
            seen: set[OutcomeKey] = set()
            for position, outcome in enumerate(outcomes):
                decision = found.get(outcome.decision_id)
                if decision is None:
                    problems.append(self._unknown(position, outcome.decision_id, window))
                    continue
                _check_tenant(principal, decision)
                checked = self._check(position, outcome, decision, now, window, offer_seller)
                if isinstance(checked, dict):
                    problems.append(checked)
                    continue
                offer_id, ts = checked
                if offer_id is not None:
                    _check_offer(offer_id, principal, offer_seller, model_version)
                key: OutcomeKey = (decision.decision_id, outcome.type, outcome.order_id or "")
                if key in seen:
                    continue
                seen.add(key)
                ledger.append(_ledger_row(outcome, decision, offer_id, ts))
                if offer_id is not None:
                    redemptions.append(_redemption_row(outcome, decision, offer_id, ts))
            if problems:
                raise OutcomeError(problems)
            stored = self.index.stored(seen)
            ledger = [r for r in ledger if _key(r) not in stored]
            new = {_key(r) for r in ledger}
            redemptions = [r for r in redemptions if _key(r) in new]
            ledger_frame = pl.DataFrame(ledger, schema=OUTCOME_LEDGER.schema)
            if ledger and self.decision_log is not None:
                rows = [{c: r[c] for c in REDEMPTIONS.schema} for r in redemptions]
                try:
                    self.decision_log.append_outcomes(
                        pl.DataFrame(rows, schema=REDEMPTIONS.schema), ledger_frame
                    )
                except NotDurableError:
                    # Taken, and written by the next flush, but not yet on disk: a retry
                    # must find them stored, or they would be stored twice.
                    self.index.add_outcomes(ledger_frame)
                    raise
            self.index.add_outcomes(ledger_frame)
        return Recorded(
            accepted=len(outcomes),
            duplicates=len(outcomes) - len(ledger),
            redemptions=len(redemptions),
            purchases_only=sum(1 for r in ledger if r["offer_id"] is None),
        )

    # ----------------------------------------------------------------------- checks

    def _unknown(self, position: int, decision_id: str, window: timedelta) -> dict[str, Any]:
        # The log's path is the operator's business, not the client's: not named here.
        where = (
            "this deployment's decision log"
            if self.index.directory is not None
            else "this service's memory (it keeps no decision log)"
        )
        return _problem(
            position,
            "decision_id",
            "unknown_decision",
            f"unknown decision {decision_id!r}: no decision with this id is in {where} "
            f"within the last {_days(max(window, self.index.keep))}. Fix: send the "
            "decision_id a /v1/rank answer returned (replicas of one deployment must share "
            "decision_log_dir)",
            decision_id,
        )

    @staticmethod
    def _check(
        position: int,
        outcome: Outcome,
        decision: Decision,
        now: datetime,
        window: timedelta,
        offer_seller: Mapping[str, str | None],
    ) -> tuple[str | None, datetime] | dict[str, Any]:
        """The outcome's offer (None: a purchase without one) and time, or its problem."""
        decided = as_utc(decision.ts)
        closes = decided + window
        if outcome.ts is not None:
            ts = as_utc(outcome.ts)
            # "Now" is never before the decision: replicas' clocks may differ a little.
            latest = max(now, decided) + CLOCK_SKEW
            if not decided <= ts < closes or ts > latest:
                what = (
                    f"in the future (it is {_iso(now)} here)"
                    if decided <= ts < closes
                    else "outside its decision's outcome window"
                )
                return _problem(
                    position,
                    "ts",
                    "outcome_window",
                    f"ts {_iso(ts)} is {what}: decision {decision.decision_id!r} was made at "
                    f"{_iso(decided)} and takes outcomes until {_iso(closes)} "
                    f"({_days(window)} after it). Fix: send when the outcome happened, in "
                    "UTC, or leave ts out to date it when received",
                    _iso(ts),
                )
        else:
            ts = max(now, decided)  # this replica's clock may lag the deciding one
            if ts >= closes:
                return _problem(
                    position,
                    "decision_id",
                    "outcome_window",
                    f"decision {decision.decision_id!r} was made at {_iso(decided)} and took "
                    f"outcomes until {_iso(closes)} ({_days(window)} after it); it is "
                    f"{_iso(now)} now. Fix: report outcomes within the window, with the ts "
                    "they happened at",
                    decision.decision_id,
                )
        if outcome.type == "purchase" and outcome.offer_id is None:
            return None, ts
        offer_id = outcome.offer_id or decision.offer_id
        if offer_id is None:
            return _problem(
                position,
                "offer_id",
                "missing",
                f"decision {decision.decision_id!r} offered nothing, so its redemption "
                "needs the offer_id that was redeemed",
                None,
            )
        return offer_id, ts

    # ----------------------------------------------------------------------- locking

    @contextlib.contextmanager
    def _directory_lock(self) -> Iterator[None]:
        """Hold the decision log directory's outcome lock (no directory: nothing)."""
        directory = self.index.directory
        if directory is None:
            yield
            return
        if self._lock_file is None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
                self._lock_file = (Path(directory) / LOCK_NAME).open("ab")
            except OSError as exc:
                raise DecisionLogError(
                    f"cannot open the outcome lock in {directory} ({exc}); free space or fix "
                    "the permissions there"
                ) from exc
        handle = self._lock_file
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DecisionLogError(
                        f"another process has held the outcome lock of {directory} for "
                        f"{LOCK_TIMEOUT_S:g} s; retry"
                    ) from None
                time.sleep(0.002)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _check_tenant(principal: Principal, decision: Decision) -> None:
    if principal.may_access(decision.seller_id):
        return
    raise ForbiddenError(
        f"this API key belongs to seller {principal.seller_id!r} and may not report outcomes "
        f"of decision {decision.decision_id!r}, which was made "
        + (
            f"for seller {decision.seller_id!r}"
            if decision.seller_id is not None
            else "without a seller (platform-wide); use an admin key"
        )
    )


def _check_offer(
    offer_id: str, principal: Principal, offer_seller: Mapping[str, str | None], version: str
) -> None:
    if offer_id not in offer_seller:
        raise UnknownOfferError(
            f"unknown offer id {offer_id!r} in an outcome: the served model ({version}) "
            f"knows {len(offer_seller)} offers",
            [offer_id],
        )
    if not principal.may_access(offer_seller[offer_id]):
        raise ForbiddenError(
            f"this API key belongs to seller {principal.seller_id!r} and may not report "
            f"redemptions of offer {offer_id!r}, which is not that seller's"
        )


def _ledger_row(
    outcome: Outcome, decision: Decision, offer_id: str | None, ts: datetime
) -> dict[str, object]:
    return {
        "decision_id": decision.decision_id,
        "outcome_type": outcome.type,
        "order_id": outcome.order_id,
        "decision_ts": decision.ts,
        "offer_id": offer_id,
        "buyer_id": decision.buyer_id,
        "seller_id": decision.seller_id,
        "ts": ts,
        "amount": outcome.amount,
    }


def _redemption_row(
    outcome: Outcome, decision: Decision, offer_id: str, ts: datetime
) -> dict[str, object]:
    return {
        "buyer_id": decision.buyer_id,
        "offer_id": offer_id,
        "ts": ts,
        # The contract's "exposure redeemed": only when the redeemed offer is the one the
        # decision gave, so a redemption of another offer never marks it redeemed.
        "exposure_id": decision.decision_id if offer_id == decision.offer_id else None,
        "order_id": outcome.order_id,
        "amount": outcome.amount,
        # Not contract columns: the key, to keep a row with its ledger entry.
        "decision_id": decision.decision_id,
        "outcome_type": outcome.type,
    }


def _key(row: Mapping[str, object]) -> OutcomeKey:
    return (str(row["decision_id"]), str(row["outcome_type"]), str(row["order_id"] or ""))


def _problem(position: int, field: str, kind: str, message: str, value: object) -> dict[str, Any]:
    return {
        "type": kind,
        "loc": ["body", "outcomes", position, field],
        "msg": message,
        "input": value,
    }


def _iso(ts: datetime) -> str:
    return as_utc(ts).strftime(TS_FORMAT)


def _days(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    return f"{days:g} day" + ("" if days == 1 else "s")
