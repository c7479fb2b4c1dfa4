"""The policy on a few rows in plain Python: the fast path of an API request.

:meth:`OfferPolicy.decide <recsys.policy.OfferPolicy.decide>` is written as polars frame
operations, which answer a million buyers in one pass but cost a fixed ~0.1-0.4 ms each
whatever the frame's size; one API request runs some two hundred of them, ~50 ms. Here
the same decision is made row by row: eligibility, expected value, reason codes, ranking,
the choice and the exploration draw (the same Gumbel draws in the same order, so the same
generator state gives the same actions and exact propensities), and the sentences: the
twins of :mod:`recsys.policy.reasons`' frame expressions, down to polars' rounding and
number printing (``tests/policy/test_small.py`` compares them on random rows).

Scope: one offer per buyer, no budgets (a served request's policy). The candidates must
already be validated (the scorer's output is). ``tests/serving/test_small_batch.py`` checks
that both paths answer alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.policy.eligibility import REQUEST_CART, REQUEST_SELLER, as_utc
from recsys.policy.policy import REJECTION_ORDER
from recsys.policy.reasons import (
    NEGLIGIBLE_UPLIFT,
    WOULD_BUY_ANYWAY_P,
    Reason,
)
from recsys.policy.value import BASIS_RESPONSE, BASIS_UPLIFT, PROFIT_EPS

if TYPE_CHECKING:
    from recsys.policy.policy import PolicyConfig

Row = dict[str, Any]
"""One candidate row (the candidates schema's columns), as `DataFrame.to_dicts` gives."""

History = Sequence[tuple[str, str | None, datetime, str | None]]
"""Past exposures: (buyer_id, offer_id, ts, tool); a null offer is a control row."""


def supports(config: PolicyConfig) -> bool:
    """Whether `decide_small` decides what `OfferPolicy.decide` would with `config`."""
    return not config.budgets and config.one_offer_per == "buyer"


@dataclass(frozen=True)
class SmallDecision:
    """One decision unit's answer (``buyer_id`` is the unit).

    ``ranked``: eligible rows, best first, with the policy's columns added
    (``expected_value``, ``spend``, ``reason_codes``, ...); ``offer``: the chosen row or
    None; ``probabilities``: each option's probability by offer id (None = nothing) when
    exploring; ``reason_codes``/``reason_text``: of the action taken.
    """

    buyer_id: str
    ranked: list[Row]
    offer: Row | None
    propensity: float
    explored: bool
    probabilities: dict[str | None, float] | None
    reason_codes: list[str]
    reason_text: str
    rejected: list[Rejection] = field(default_factory=list)


def decide_small(
    rows: Sequence[Row],
    as_of: datetime,
    config: PolicyConfig,
    history: History = (),
    rng: np.random.Generator | None = None,
) -> list[SmallDecision]:
    """Decide every unit of `rows` as `OfferPolicy.decide` would, in unit order.

    A unit with no eligible candidate gets nothing, with its ``rejected`` candidates.
    Raises ValueError for a config out of scope (:func:`supports`).
    """
    if not supports(config):
        raise ValueError("decide_small needs a config without budgets, one offer per buyer")
    now = as_utc(as_of)
    by_unit: dict[str, list[Row]] = {}
    for row in rows:
        by_unit.setdefault(row["buyer_id"], []).append(row)
    counts = _cap_counts(history, now, config, rows)
    ranked: dict[str, list[Row]] = {}
    rejected: dict[str, list[Rejection]] = {}
    for unit in sorted(by_unit):
        eligible = []
        for row in by_unit[unit]:
            verdict = _eligibility(row, now, config, counts)
            if isinstance(verdict, Rejection):
                rejected.setdefault(unit, []).append(verdict)
            else:
                eligible.append(_valued({**row, "min_spend_unverified": verdict}, config))
        if eligible:
            eligible.sort(key=lambda r: (-r["score"], r["offer_id"]))
            for position, row in enumerate(eligible, start=1):
                row["rank"] = position
            ranked[unit] = eligible
    actions = _actions(ranked, config, rng)
    decided = _explained(ranked, actions, config.assumed_incremental_share)
    return sorted(
        [*decided, *(_nothing_eligible(u, rejected[u]) for u in by_unit if u not in ranked)],
        key=lambda d: d.buyer_id,
    )


def _nothing_eligible(unit: str, rejections: list[Rejection]) -> SmallDecision:
    """A unit none of whose candidates is eligible: certainly nothing, explained by the
    rejections (codes furthest check first, as the batch path's `_rejection_summary`)."""
    order = {r.value: i for i, r in enumerate(REJECTION_ORDER)}
    by_order = sorted(rejections, key=lambda r: order.get(r.code, len(order)))
    return SmallDecision(
        buyer_id=unit,
        ranked=[],
        offer=None,
        propensity=1.0,
        explored=False,
        probabilities=None,
        reason_codes=list(dict.fromkeys(r.code for r in by_order)),
        reason_text=by_order[0].text,
        rejected=rejections,
    )


# ------------------------------------------------------------------------- eligibility


def _cap_counts(
    history: History, now: datetime, config: PolicyConfig, rows: Sequence[Row]
) -> dict[tuple[str, str | None], int]:
    """Recent offers per buyer (key (buyer, None)) and per buyer and tool."""
    counts: dict[tuple[str, str | None], int] = {}
    if not history:
        return counts
    tool_of = {row["offer_id"]: row["tool"] for row in rows}
    start = now - timedelta(days=config.cap_window_days)
    for buyer, offer, ts, tool in history:
        if offer is None or not start <= as_utc(ts) < now:
            continue
        counts[buyer, None] = counts.get((buyer, None), 0) + 1
        tool = tool if tool is not None else tool_of.get(offer)
        if tool is not None:
            counts[buyer, tool] = counts.get((buyer, tool), 0) + 1
    return counts


@dataclass(frozen=True)
class Rejection:
    """Why one candidate may not be offered: its code and the eligibility sentence."""

    offer_id: str
    code: str
    text: str


_TS_TEXT = "%Y-%m-%d %H:%M"


def _eligibility(
    row: Row, now: datetime, config: PolicyConfig, counts: Mapping[tuple[str, str | None], int]
) -> bool | Rejection:
    """The first rule the row breaks (as `filter_eligible` words it), else whether its
    minimum spend is unverified."""
    start, end = row.get("start_ts"), row.get("end_ts")
    if (start is not None and start > now) or (end is not None and not now < end):
        since = start.strftime(_TS_TEXT) if start is not None else "the start"
        until = end.strftime(_TS_TEXT) if end is not None else "further notice"
        text = f"the offer is valid from {since} until {until}, not at {now.strftime(_TS_TEXT)}"
        return Rejection(row["offer_id"], Reason.OUTSIDE_VALIDITY.value, text)
    scope, seller = row.get(REQUEST_SELLER), row.get("seller_id")
    if scope is not None and seller is not None and seller != scope:
        text = f"the offer belongs to seller {seller}, the request is for seller {scope}"
        return Rejection(row["offer_id"], Reason.OUT_OF_SELLER_SCOPE.value, text)
    min_spend, cart = row.get("min_spend"), row.get(REQUEST_CART)
    has_min = min_spend is not None and min_spend > 0
    if min_spend is not None and has_min and cart is not None and cart < min_spend:
        text = (
            f"the cart of {fmt_number(cart)} is below the offer's minimum spend of "
            f"{fmt_number(min_spend)}"
        )
        return Rejection(row["offer_id"], Reason.NOT_ELIGIBLE_MIN_SPEND.value, text)
    capped = _cap_text(row, config, counts)
    if capped is not None:
        return Rejection(row["offer_id"], Reason.FREQUENCY_CAP.value, capped)
    return has_min and cart is None


def _cap_text(
    row: Row, config: PolicyConfig, counts: Mapping[tuple[str, str | None], int]
) -> str | None:
    """The frequency-cap sentence when a cap binds for the row's buyer and tool."""
    buyer, tool = row["buyer_id"], row["tool"]
    max_b, max_t = config.max_offers_per_buyer, config.max_per_tool
    n_buyer, n_tool = counts.get((buyer, None), 0), counts.get((buyer, tool), 0)
    window = f"{config.cap_window_days:g}"
    if max_b is not None and max_b - n_buyer <= 0:
        return (
            f"the buyer already received {n_buyer} offers in the last {window} days (cap {max_b})"
        )
    if max_t is not None and max_t - n_tool <= 0:
        return (
            f"the buyer already received {n_tool} {tool} offers in the last {window} days "
            f"(cap {max_t} per tool)"
        )
    return None


def first_rejection(rejections: Sequence[Rejection]) -> Rejection:
    """The rejection that explains a unit with no eligible offer: the check it got
    furthest in (`REJECTION_ORDER`), then the smallest offer id."""
    order = {r.value: i for i, r in enumerate(REJECTION_ORDER)}
    return min(rejections, key=lambda r: (order.get(r.code, len(order)), r.offer_id))


# ------------------------------------------------------------------------------- value


def _redemption_cost(row: Row, config: PolicyConfig) -> float:
    if row.get("offer_cost") is not None:
        return float(row["offer_cost"])
    tool, value, order = row["tool"], row.get("offer_value") or 0.0, row["order_value"]
    if tool in ("percent_off", "points"):
        return float(value * order)
    if tool == "amount_off":
        return float(min(value, order))
    if tool == "free_shipping":
        return float(config.default_shipping_cost)
    return 0.0


def _valued(row: Row, config: PolicyConfig) -> Row:
    """The row with ``redemption_cost``, ``incremental_p``, ``value_basis``,
    ``expected_value``, ``spend`` and ``reason_codes`` (as `recsys.policy.value`)."""
    uplift: float | None = row.get("uplift")
    has_uplift = uplift is not None and not math.isnan(uplift)
    incremental: float = (
        uplift
        if uplift is not None and has_uplift
        else config.assumed_incremental_share * row["p_redeem"]
    )
    margin = row["margin"] if row.get("margin") is not None else config.margin_default
    cost = _redemption_cost(row, config)
    value = margin * incremental * row["order_value"] - row["p_redeem"] * cost - config.send_cost
    risk = row["p_redeem"] * cost if config.budget_basis == "expected" else cost
    given = row.get("score")
    row.update(
        redemption_cost=cost,
        incremental_p=incremental,
        value_basis=BASIS_UPLIFT if has_uplift else BASIS_RESPONSE,
        expected_value=value,
        score=given if given is not None else value,
        spend=risk + config.send_cost,
    )
    row["reason_codes"] = _codes(row)
    return row


def _codes(row: Row) -> list[str]:
    """`candidate_reason_codes` for one row."""
    positive = row["expected_value"] > PROFIT_EPS
    response = row["value_basis"] == BASIS_RESPONSE
    if positive:
        main: list[Reason] = [Reason.RESPONSE_ONLY if response else Reason.POSITIVE_UPLIFT]
    elif (
        not response
        and row["p_purchase"] >= WOULD_BUY_ANYWAY_P
        and abs(row["incremental_p"]) <= NEGLIGIBLE_UPLIFT
        and row["redemption_cost"] > 0
    ):
        main = [Reason.WOULD_BUY_ANYWAY]
    elif response:
        main = [Reason.NEGATIVE_VALUE, Reason.RESPONSE_ONLY]
    else:
        main = [Reason.NEGATIVE_VALUE]
    if row.get("min_spend_unverified"):
        main.append(Reason.MIN_SPEND_UNVERIFIED)
    return [r.value for r in main]


# ------------------------------------------------------------------ choice, exploration


@dataclass(frozen=True)
class _Action:
    offer: Row | None
    propensity: float
    explored: bool
    probabilities: dict[str | None, float] | None


def _actions(
    ranked: Mapping[str, list[Row]], config: PolicyConfig, rng: np.random.Generator | None
) -> dict[str, _Action]:
    """Each unit's action: its best positive offer, or an exploration draw around it."""
    best = {u: rows[0] if rows[0]["score"] > PROFIT_EPS else None for u, rows in ranked.items()}
    if config.exploration == "none":
        return {u: _Action(best[u], 1.0, False, None) for u in ranked}
    tables = {u: _option_table(rows, best[u], config) for u, rows in ranked.items()}
    rng = rng if rng is not None else np.random.default_rng(config.seed)
    gumbel = rng.gumbel(size=sum(len(t) for t in tables.values()))
    out: dict[str, _Action] = {}
    at = 0
    for unit, table in tables.items():  # sorted units, as the batch path's table
        with np.errstate(divide="ignore"):
            scores = np.log([p for _, p, _ in table]) + gumbel[at : at + len(table)]
        at += len(table)
        offer, probability, exploit = table[int(np.argmax(scores))]
        out[unit] = _Action(
            offer, probability, not exploit, {o["offer_id"] if o else None: p for o, p, _ in table}
        )
    return out


def _option_table(
    rows: list[Row], best: Row | None, config: PolicyConfig
) -> list[tuple[Row | None, float, bool]]:
    """(option, probability, is_exploit) in `recsys.policy.explore`'s canonical order:
    best value first, nothing before ties, then offer id."""
    options: list[Row | None] = [*rows, None]
    options.sort(
        key=lambda o: (
            -(o["score"] if o is not None else 0.0),
            o is not None,
            o["offer_id"] if o is not None else "",
        )
    )
    values = [o["score"] if o is not None else 0.0 for o in options]
    if config.exploration == "epsilon":
        n, eps = len(options), config.epsilon
        exploit = [o is best for o in options]
        probs = [eps / n + (1.0 - eps) * float(e) for e in exploit]
    else:
        top = max(values)
        weights = [math.exp((v - top) / config.temperature) for v in values]
        total = sum(weights)
        probs = [w / total for w in weights]
        exploit = [i == 0 for i in range(len(options))]
    return list(zip(options, probs, exploit, strict=True))


# ------------------------------------------------------------------------------ reasons


def fmt_number(value: float, decimals: int = 2, *, signed: bool = False) -> str:
    """:func:`recsys.policy.reasons.fmt` for one number, character for character.

    polars rounds half to even on ``value * 10**decimals`` and keeps the sign of a zero;
    a float prints as Python's shortest repr; 0 decimals prints an integer.
    """
    scale = 10.0**decimals
    rounded = round(value * scale) / scale
    if rounded == 0:
        rounded = math.copysign(0.0, value)
    text = str(int(rounded)) if decimals == 0 else repr(rounded)
    return "+" + text if signed and value >= 0 else text


def _pts(value: float, decimals: int = 1) -> str:
    return fmt_number(value * 100, decimals)


def _main_sentence(row: Row, code: str, assumed_share: float) -> str:
    """The sentence of a row's main code (as `recsys.policy.reasons`' *_text)."""
    value = fmt_number(row["expected_value"], signed=True)
    if code == Reason.POSITIVE_UPLIFT:
        return (
            f"expected {value} profit: the offer lifts purchase chance by "
            f"{_pts(row['incremental_p'])} pts"
        )
    if code == Reason.RESPONSE_ONLY:
        return _response_sentence(row, assumed_share)
    if code == Reason.WOULD_BUY_ANYWAY:
        return (
            f"{_pts(row['p_purchase'], 0)}% likely to buy without the offer and the offer "
            f"adds {_pts(row['incremental_p'])} pts: its cost of "
            f"{fmt_number(row['redemption_cost'])} per redemption "
            f"({_pts(row['p_redeem'], 0)}% redeem) is pure cost, expected {value} profit"
        )
    return (
        f"expected {value} profit: {_pts(row['p_redeem'], 0)}% redeem at a cost of "
        f"{fmt_number(row['redemption_cost'])} each, more than the margin on the "
        f"{_pts(row['incremental_p'])} pts of extra purchases"
    )


def _response_sentence(row: Row, assumed_share: float) -> str:
    return (
        "uplift could not be learned from the data: ranked by response "
        f"({_pts(row['p_redeem'], 0)}% redeem, assuming {assumed_share * 100:g}% of "
        "redemptions are extra sales), expected "
        f"{fmt_number(row['expected_value'], signed=True)} profit"
    )


def candidate_text(row: Row, assumed_share: float) -> str:
    """:func:`recsys.policy.reasons.candidate_reason_text` of one coded row."""
    codes = row["reason_codes"]
    parts = [_main_sentence(row, codes[0], assumed_share)]
    if Reason.RESPONSE_ONLY.value in codes[1:]:
        parts.append(_response_sentence(row, assumed_share))
    if Reason.MIN_SPEND_UNVERIFIED.value in codes[1:]:
        parts.append(
            f"cart value unknown: the offer needs a minimum spend of {fmt_number(row['min_spend'])}"
        )
    return "; ".join(parts)


def exploration_sentence(propensity: float) -> str:
    """:func:`recsys.policy.reasons.exploration_text` for one probability."""
    return f"chosen at random to learn buyers' responses (probability {fmt_number(propensity, 4)})"


def _nothing_sentence(best_value: float) -> str:
    return (
        "no eligible offer beats sending nothing (best expected "
        f"{fmt_number(best_value, signed=True)} profit)"
    )


def _cap_sentence(best_value: float) -> str:
    return (
        "the buyer's remaining frequency-cap allowance went to better offers (best worth "
        f"{fmt_number(best_value, signed=True)})"
    )


def _case(action: _Action, best: Row) -> str:
    """Which explanation a unit's action gets (the batch path's `_explain` cases)."""
    if action.explored:
        return "explored_offer" if action.offer is not None else "explored_nothing"
    if action.offer is not None:
        return "offer"
    if best["score"] > PROFIT_EPS:
        return "cap"
    if best["reason_codes"][0] == Reason.WOULD_BUY_ANYWAY.value:
        return "anyway"
    return "nothing"


def _explained(
    ranked: Mapping[str, list[Row]], actions: Mapping[str, _Action], share: float
) -> list[SmallDecision]:
    """Codes and sentences of each unit's action, as the batch path's `_explain`."""
    out = []
    for unit, action in actions.items():
        best = ranked[unit][0]
        case = _case(action, best)
        quoted = action.offer if action.offer is not None else best
        row_codes, exploration = quoted["reason_codes"], [Reason.EXPLORATION.value]
        if case == "explored_offer":
            codes = exploration + row_codes
            text = f"{exploration_sentence(action.propensity)}; {candidate_text(quoted, share)}"
        elif case == "explored_nothing":
            codes, text = exploration, exploration_sentence(action.propensity)
        elif case == "offer":
            codes, text = row_codes, candidate_text(quoted, share)
        elif case == "cap":
            codes, text = [Reason.FREQUENCY_CAP.value], _cap_sentence(best["expected_value"])
        elif case == "anyway":
            codes = [*row_codes, Reason.NOTHING_BEATS_NO_OFFER.value]
            text = candidate_text(quoted, share)
        else:
            codes = [Reason.NOTHING_BEATS_NO_OFFER.value, *row_codes]
            text = f"{_nothing_sentence(best['expected_value'])}; {candidate_text(quoted, share)}"
        out.append(
            SmallDecision(
                buyer_id=unit,
                ranked=list(ranked[unit]),
                offer=action.offer,
                propensity=action.propensity,
                explored=action.explored,
                probabilities=action.probabilities,
                reason_codes=list(codes),
                reason_text=str(text),
            )
        )
    return out
