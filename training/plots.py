"""Evaluation plots as matplotlib figures (the Agg backend: no display needed).

Each function takes the curves of a `HoldoutReport` and returns a figure; tracking saves
them as run artifacts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsys.evaluation.holdout import Curves

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    fig = Figure(figsize=(6, 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def gain_figure(curves: Curves) -> Figure | None:
    """Share of redemptions captured against share of offers issued, by P(redeem)."""
    if not curves.gain:
        return None
    fig, ax = _figure("Gain curve of P(redeem)", "share of offers issued", "share of redemptions")
    for name, (x, y) in curves.gain.items():
        ax.plot(x, y, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="diagonal")
    ax.legend()
    return fig


def qini_figure(curves: Curves) -> Figure | None:
    """Cumulative incremental purchases against the share of buyers targeted."""
    if not curves.qini:
        return None
    fig, ax = _figure("Qini curve", "share of buyers targeted", "incremental purchases")
    for name, (x, q) in curves.qini.items():
        ax.plot(x, q, label=name)
    ax.legend()
    return fig


def calibration_figure(curves: Curves) -> Figure | None:
    """Observed redemption rate against mean predicted P(redeem), per quantile bin."""
    if curves.calibration is None:
        return None
    predicted, observed, _count = curves.calibration
    fig, ax = _figure("Calibration of P(redeem)", "mean predicted", "observed rate")
    top = float(max(predicted.max(initial=0.0), observed.max(initial=0.0), 1e-3))
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="perfect")
    ax.plot(predicted, observed, marker="o", label="model")
    ax.legend()
    return fig


def value_figure(curves: Curves) -> Figure | None:
    """Doubly robust realized against predicted incremental profit of the offers, per
    decile of prediction (held out)."""
    if curves.value is None:
        return None
    predicted, realized = curves.value
    fig, ax = _figure(
        "Calibration of incremental profit (held out)",
        "mean predicted incremental profit",
        "mean doubly robust realized",
    )
    lo = float(min(predicted.min(), realized.min()))
    hi = float(max(predicted.max(), realized.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle=":", label="perfect")
    ax.plot(predicted, realized, marker="o", label="model")
    ax.legend()
    return fig


def evaluation_figures(curves: Curves) -> dict[str, Figure]:
    """Every plot that has data, by artifact file name."""
    made = {
        "gain_curve.png": gain_figure(curves),
        "qini_curve.png": qini_figure(curves),
        "calibration.png": calibration_figure(curves),
        "value_calibration.png": value_figure(curves),
    }
    return {name: fig for name, fig in made.items() if fig is not None}
