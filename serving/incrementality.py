"""The latest incrementality report, for the seller route, the seller page and /metrics.

The report is computed offline from the decision log and the sellers' events
(`recsys report incrementality --out <decision_log_dir>/incrementality.json`, e.g. by a
nightly job next to training): the service has the decisions but not every purchase, so
it shows the measured lift rather than computing it. The file is re-read when it changes
(one `stat` per call). Per-seller figures are only served behind a seller's key
(`GET /v1/sellers/{id}/incrementality`); /metrics, which needs no key, gets the overall
figures only.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from serving.metrics import Metrics
from serving.schemas import IncrementalityResponse, LiftFigure

OVERALL = "__all__"
"""The report's key of its all-sellers rows (`recsys.evaluation.incrementality.OVERALL`)."""


class IncrementalityBoard:
    """Reads the report file at `path` (None: no report configured) when it changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._data: dict[str, Any] | None = None
        self._error: str | None = None

    def current(self) -> tuple[dict[str, Any] | None, str | None]:
        """The report's data (None when absent or unreadable) and why it is missing."""
        if self.path is None:
            return None, "no incrementality report is configured for this service"
        try:
            stat = self.path.stat()
        except OSError:
            return None, (
                f"no incrementality report yet: run `recsys report incrementality --data DIR "
                f"--decisions <decision log> --out {self.path}`"
            )
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._data, self._error = json.loads(self.path.read_text()), None
                except (OSError, ValueError) as exc:
                    self._data, self._error = (
                        None,
                        f"the incrementality report is unreadable: {exc}",
                    )
                self._stamp = stamp
            return self._data, self._error

    def for_seller(self, seller_id: str) -> IncrementalityResponse:
        """The seller's measured lift (every metric), or why there is none."""
        data, why = self.current()
        if data is None:
            return IncrementalityResponse(seller_id=seller_id, available=False, detail=why)
        rows = [
            r
            for r in data.get("rows", [])
            if r.get("level") == "seller" and r.get("key") == seller_id
        ]
        return IncrementalityResponse(
            seller_id=seller_id,
            available=bool(rows),
            detail=None if rows else "the report has no holdout-served buyers of this seller yet",
            generated_at=data.get("generated_at"),
            window_days=data.get("window_days"),
            level=data.get("level"),
            figures=[_figure(r) for r in rows],
        )

    def export(self, metrics: Metrics) -> None:
        """Set the overall figures as gauges (no seller ids: /metrics needs no key)."""
        data, _ = self.current()
        if data is None:
            return
        for row in data.get("rows", []):
            if row.get("level") != "overall" or row.get("key") != OVERALL:
                continue
            labels = {"metric": str(row["metric"])}
            for name, field in (
                ("incrementality_lift", "lift"),
                ("incrementality_lift_low", "low"),
                ("incrementality_lift_high", "high"),
                ("incrementality_treated", "treated"),
                ("incrementality_control", "control"),
            ):
                if row.get(field) is not None:
                    metrics.set_labelled(name, labels, float(row[field]))
        for arm, n in (data.get("units") or {}).items():
            metrics.set_labelled("incrementality_units", {"arm": str(arm)}, float(n))


def _figure(row: dict[str, Any]) -> LiftFigure:
    return LiftFigure(
        metric=row["metric"],
        treated=row.get("treated"),
        control=row.get("control"),
        lift=row.get("lift"),
        low=row.get("low"),
        high=row.get("high"),
        relative=row.get("relative"),
        n_treated=int(row.get("n_treated") or 0),
        n_control=int(row.get("n_control") or 0),
    )
