"""The one-standard-error choice among candidates, and what more data would show."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.learning.selection import PolicyValue, SelectionReport, choose


def _value(name: str, complexity: int, per_decision: np.ndarray) -> PolicyValue:
    n = len(per_decision)
    return PolicyValue(
        name=name,
        complexity=complexity,
        value=float(per_decision.mean()),
        std_error=float(per_decision.std(ddof=1) / np.sqrt(n)),
        per_decision=per_decision,
    )


def _report(blanket: np.ndarray, personal: np.ndarray) -> SelectionReport:
    candidates = [_value("blanket", 1, blanket), _value("segment_effects", 3, personal)]
    best = max(candidates, key=lambda pv: pv.value)
    for pv in candidates:
        diff = best.per_decision - pv.per_decision
        pv.diff_to_best = -float(diff.mean())
        pv.diff_std_error = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    report = SelectionReport(candidates=candidates, decisions=len(blanket), best=best.name)
    report.chosen = choose(candidates, best)
    return report


def test_a_gain_within_one_standard_error_ships_the_blanket_and_says_what_would_show_it() -> None:
    # The personal policy gains 1 on nine decisions of 100 and loses 1 on six: +0.03 per
    # decision, with a paired standard error near 0.39 / sqrt(100).
    blanket = np.zeros(100)
    gain = np.zeros(100)
    gain[::12] = 1.0
    gain[6::16] = -1.0
    report = _report(blanket, blanket + gain)
    assert report.best == "segment_effects" and report.chosen == "blanket"
    se = gain.std(ddof=1) / 10
    assert se > 0.03  # within one standard error: not shown
    needed = report.decisions_to_show_best()
    assert needed == pytest.approx(100 * (se / 0.03) ** 2)
    assert report.metrics()["cv_decisions_to_show_best"] == pytest.approx(needed)
    assert f"about {needed:,.0f} randomized decisions" in report.table()


def test_nothing_is_said_when_the_best_candidate_ships() -> None:
    blanket = np.zeros(400)
    report = _report(blanket, blanket + np.where(np.arange(400) % 2 == 0, 1.0, 0.0))
    assert report.chosen == report.best == "segment_effects"
    assert report.decisions_to_show_best() is None
    assert "cv_decisions_to_show_best" not in report.metrics()
    assert "randomized decisions (" not in report.table()


def test_the_table_lists_the_nothing_policy_once() -> None:
    report = _report(np.zeros(10), np.arange(10.0))
    report.candidates.append(_value("nothing", 1, np.zeros(10)))
    report.fixed = [_value("nothing", 0, np.zeros(10)), _value("all_reminder", 1, np.ones(10))]
    rows = [line.split()[0] for line in report.table().splitlines()[1:]]
    assert rows == ["blanket", "segment_effects", "nothing", "all_reminder"]
