"""The policy's per-option rules on numpy arrays: value, codes, eligibility, choice.

One implementation of each rule, vectorized over the options of a decision and over many
decisions at once, so one API request (a few dozen options) and a nightly batch (millions)
run the same code. No frames and no Python loop over rows: a request's decision is a few
array operations on state the server prepared at model load.

Conventions: a float array's NaN is a missing value (the candidates' null); options are
grouped by decision unit in contiguous runs, each run sorted best first
(:func:`rank_order`); a "nothing" option is implicit in every unit, worth 0.

Costs are O(n) in the options except :func:`rank_order` and the exploration draw, which
sort (O(n log n)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from recsys.policy.config import (
    NEGLIGIBLE_UPLIFT,
    PROFIT_EPS,
    REJECTION_ORDER,
    WOULD_BUY_ANYWAY_P,
    PolicyConfig,
    Reason,
)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
BOOL = NDArray[np.bool_]

# ------------------------------------------------------------------------------ value

CASE_POSITIVE_UPLIFT = 0
CASE_RESPONSE_ONLY = 1
CASE_WOULD_BUY_ANYWAY = 2
CASE_NEGATIVE_VALUE = 3
CASE_NEGATIVE_RESPONSE = 4

MAIN_CODES: tuple[tuple[Reason, ...], ...] = (
    (Reason.POSITIVE_UPLIFT,),
    (Reason.RESPONSE_ONLY,),
    (Reason.WOULD_BUY_ANYWAY,),
    (Reason.NEGATIVE_VALUE,),
    (Reason.NEGATIVE_VALUE, Reason.RESPONSE_ONLY),
)
"""An option's reason codes by its case (the index of :func:`value_case`)."""

CODE_TABLE: tuple[tuple[str, ...], ...] = tuple(
    tuple(r.value for r in (*main, *extra))
    for main in MAIN_CODES
    for extra in ((), (Reason.MIN_SPEND_UNVERIFIED,))
)
"""Reason codes of an option by ``case * 2 + min_spend_unverified``."""

PERCENT_TOOLS = ("percent_off", "points")


def redemption_cost(
    tool: NDArray[np.object_] | NDArray[np.str_],
    offer_value: F64,
    offer_cost: F64,
    order_value: F64,
    default_shipping_cost: float,
) -> F64:
    """Cost to the seller of one redemption per option.

    ``offer_cost`` where known; else ``percent_off``/``points``: value x order,
    ``amount_off``: min(value, order), ``free_shipping``: the default shipping cost, any
    other tool: 0 (a missing ``offer_value`` counts as 0). Cost: O(n).

    Examples
    --------
    >>> import numpy as np
    >>> nan = float("nan")
    >>> redemption_cost(np.array(["percent_off", "amount_off", "free_shipping", "reminder"]),
    ...     np.array([0.1, 30.0, nan, nan]), np.full(4, nan),
    ...     np.array([50.0, 20.0, 50.0, 50.0]), 4.0).tolist()
    [5.0, 20.0, 4.0, 0.0]
    """
    kind = np.asarray(tool)
    value = np.nan_to_num(np.asarray(offer_value, dtype=np.float64), nan=0.0)
    order = np.asarray(order_value, dtype=np.float64)
    derived = np.where(
        np.isin(kind, PERCENT_TOOLS),
        value * order,
        np.where(
            kind == "amount_off",
            np.minimum(value, order),
            np.where(kind == "free_shipping", float(default_shipping_cost), 0.0),
        ),
    )
    cost = np.asarray(offer_cost, dtype=np.float64)
    return np.where(np.isnan(cost), derived, cost)


@dataclass(frozen=True)
class Valued:
    """What an option is worth against sending nothing (see :mod:`recsys.policy.value`).

    ``score`` is what the policy decides by (the scorer's own where it gave one, else the
    expected value); ``spend`` is what it costs a budget; ``case`` indexes
    :data:`MAIN_CODES`; ``uplift_basis`` says whether a learned uplift was used.
    """

    redemption_cost: F64
    incremental_p: F64
    uplift_basis: BOOL
    expected_value: F64
    score: F64
    spend: F64
    case: NDArray[np.int8]


def value_options(
    *,
    tool: NDArray[np.object_] | NDArray[np.str_],
    p_redeem: F64,
    uplift: F64,
    p_purchase: F64,
    order_value: F64,
    margin: F64,
    offer_value: F64,
    offer_cost: F64,
    score: F64,
    config: PolicyConfig,
) -> Valued:
    """Expected incremental profit, decision score, spend and reason case per option.

    ``m * u * V - p_redeem * C - send_cost`` with the uplift ``u`` where known, else the
    response-only fallback ``u = assumed_incremental_share * p_redeem``; a missing margin
    is ``config.margin_default``. It depends on the model and the config only, never on
    a request, so a server computes it once per model. Cost: O(n).
    """
    p_redeem = np.asarray(p_redeem, dtype=np.float64)
    uplift = np.asarray(uplift, dtype=np.float64)
    order = np.asarray(order_value, dtype=np.float64)
    has_uplift = ~np.isnan(uplift)
    incremental = np.where(has_uplift, uplift, config.assumed_incremental_share * p_redeem)
    margin = np.asarray(margin, dtype=np.float64)
    margin = np.where(np.isnan(margin), config.margin_default, margin)
    cost = redemption_cost(tool, offer_value, offer_cost, order, config.default_shipping_cost)
    value = margin * incremental * order - p_redeem * cost - config.send_cost
    given = np.asarray(score, dtype=np.float64)
    return Valued(
        redemption_cost=cost,
        incremental_p=incremental,
        uplift_basis=has_uplift,
        expected_value=value,
        score=decision_score(given, value),
        spend=spend(p_redeem, cost, config.budget_basis, config.send_cost),
        case=value_case(value, has_uplift, np.asarray(p_purchase, np.float64), incremental, cost),
    )


def decision_score(given: F64, expected_value: F64) -> F64:
    """What the policy decides each option by: the scorer's own score where it gave one
    (a learned policy's `decision_scores`), else the expected value. Cost: O(n)."""
    given = np.asarray(given, dtype=np.float64)
    return np.where(np.isnan(given), expected_value, given)


def spend(p_redeem: F64, redemption_cost: F64, basis: str, send_cost: float) -> F64:
    """Budget spend of issuing each option.

    ``"expected"``: ``p_redeem * redemption_cost + send_cost`` (what the seller pays on
    average); ``"worst_case"``: ``redemption_cost + send_cost`` (as if every offer were
    redeemed, so a budget is never overrun whatever buyers do). Cost: O(n).
    """
    if basis == "expected":
        return np.asarray(p_redeem) * redemption_cost + send_cost
    if basis == "worst_case":
        return np.asarray(redemption_cost, dtype=np.float64) + send_cost
    raise ValueError(f"budget_basis must be 'expected' or 'worst_case', got {basis!r}")


def value_case(
    expected_value: F64,
    uplift_basis: BOOL,
    p_purchase: F64,
    incremental_p: F64,
    redemption_cost: F64,
    *,
    would_buy_anyway_p: float = WOULD_BUY_ANYWAY_P,
    negligible_uplift: float = NEGLIGIBLE_UPLIFT,
) -> NDArray[np.int8]:
    """The main reason case of each option (an index of :data:`MAIN_CODES`).

    Positive value: POSITIVE_UPLIFT or RESPONSE_ONLY by basis; else WOULD_BUY_ANYWAY when
    the buyer is likely to buy anyway (uplift basis, p_purchase >= ``would_buy_anyway_p``,
    |uplift| <= ``negligible_uplift``, a non-zero cost); else NEGATIVE_VALUE (with
    RESPONSE_ONLY on the response basis). Cost: O(n).
    """
    positive = expected_value > PROFIT_EPS
    anyway = (
        uplift_basis
        & (p_purchase >= would_buy_anyway_p)
        & (np.abs(incremental_p) <= negligible_uplift)
        & (redemption_cost > 0)
    )
    case = np.where(
        positive,
        np.where(uplift_basis, CASE_POSITIVE_UPLIFT, CASE_RESPONSE_ONLY),
        np.where(anyway, CASE_WOULD_BUY_ANYWAY, np.where(uplift_basis, 3, 4)),
    )
    return case.astype(np.int8)


def reason_codes(case: int, min_spend_unverified: bool) -> list[str]:
    """The reason codes of one option (main first)."""
    return list(CODE_TABLE[case * 2 + int(min_spend_unverified)])


# ------------------------------------------------------------------------ eligibility

ELIGIBLE = 0
OUTSIDE_VALIDITY = 1
OUT_OF_SELLER_SCOPE = 2
BELOW_MIN_SPEND = 3
CAPPED = 4

REJECTION_CODES: dict[int, Reason] = {
    OUTSIDE_VALIDITY: Reason.OUTSIDE_VALIDITY,
    OUT_OF_SELLER_SCOPE: Reason.OUT_OF_SELLER_SCOPE,
    BELOW_MIN_SPEND: Reason.NOT_ELIGIBLE_MIN_SPEND,
    CAPPED: Reason.FREQUENCY_CAP,
}
"""The reason of each eligibility verdict but ``ELIGIBLE``."""

EXPLAINS_FIRST: NDArray[np.int8] = np.array(
    [len(REJECTION_ORDER)] + [REJECTION_ORDER.index(REJECTION_CODES[c]) for c in range(1, 5)],
    dtype=np.int8,
)
"""Per verdict, its place in `REJECTION_ORDER` (the check got furthest in first)."""

NO_TIME_START = np.iinfo(np.int64).min
NO_TIME_END = np.iinfo(np.int64).max
"""Open validity bounds, in the microsecond timestamps of :func:`eligibility`."""


def eligibility(
    *,
    start_us: I64,
    end_us: I64,
    now_us: int,
    seller: I64,
    scope: I64,
    min_spend: F64,
    cart: F64,
    n_buyer: I64,
    n_tool: I64,
    max_per_buyer: int | None,
    max_per_tool: int | None,
) -> tuple[NDArray[np.int8], BOOL]:
    """The first rule each option breaks (``ELIGIBLE`` = none), and whether its minimum
    spend is unchecked.

    In order: valid at ``now_us`` (``start <= now < end``; open bounds are
    :data:`NO_TIME_START` / :data:`NO_TIME_END`); in the request's seller scope
    (``scope`` -1 = none, ``seller`` -1 = platform-wide, both integer codes); a known
    cart (NaN = unknown) not below a positive ``min_spend``; the buyer's recent offers
    (``n_buyer``) and offers of the option's tool (``n_tool``) under the caps (None = no
    cap). Cost: O(n).
    """
    valid = (start_us <= now_us) & (now_us < end_us)
    in_scope = (scope < 0) | (seller < 0) | (seller == scope)
    has_min = np.nan_to_num(min_spend, nan=0.0) > 0
    with np.errstate(invalid="ignore"):
        below = has_min & ~np.isnan(cart) & (cart < min_spend)
    capped = np.zeros(len(start_us), dtype=np.bool_)
    if max_per_buyer is not None:
        capped |= n_buyer >= max_per_buyer
    if max_per_tool is not None:
        capped |= n_tool >= max_per_tool
    verdict = np.select(
        [~valid, ~in_scope, below, capped],
        [OUTSIDE_VALIDITY, OUT_OF_SELLER_SCOPE, BELOW_MIN_SPEND, CAPPED],
        ELIGIBLE,
    ).astype(np.int8)
    return verdict, has_min & np.isnan(cart)


def first_rejection(unit: I64, verdict: NDArray[np.int8], tiebreak: I64) -> I64:
    """Per unit none of whose options is eligible, the option that explains it: the check
    it got furthest in (`REJECTION_ORDER`), then the smallest ``tiebreak`` (offer order).

    Returns the option indices, one per such unit, in unit order. Cost: O(n log n).
    """
    eligible_units = np.unique(unit[verdict == ELIGIBLE])
    rejected = np.flatnonzero(~np.isin(unit, eligible_units))
    if len(rejected) == 0:
        return np.empty(0, dtype=np.int64)
    order = rejected[
        np.lexsort((tiebreak[rejected], EXPLAINS_FIRST[verdict[rejected]], unit[rejected]))
    ]
    first = np.unique(unit[order], return_index=True)[1]
    return order[first].astype(np.int64)


# --------------------------------------------------------------------- rank and choose


def rank_order(unit: I64, score: F64, tiebreak: I64) -> I64:
    """Indices that group options by unit, best first (higher score, then smaller
    ``tiebreak``: the offer id's order). Cost: O(n log n)."""
    return np.lexsort((tiebreak, -score, unit)).astype(np.int64)


def run_starts(unit: I64) -> I64:
    """Index of the first option of each unit's run (``unit`` grouped). Cost: O(n)."""
    if len(unit) == 0:
        return np.empty(0, dtype=np.int64)
    change = np.empty(len(unit), dtype=np.bool_)
    change[0] = True
    np.not_equal(unit[1:], unit[:-1], out=change[1:])
    return np.flatnonzero(change)


def run_lengths(starts: I64, n: int) -> I64:
    """Length of each run beginning at `starts` (sorted) among `n` items. Cost: O(runs)."""
    ends = np.empty(len(starts), dtype=np.int64)
    ends[:-1] = starts[1:]
    if len(starts):
        ends[-1] = n
    return ends - starts


@dataclass(frozen=True)
class Choice:
    """One action per unit, with exact propensities.

    ``row``: the chosen option per unit (an index of the ranked options; -1 = nothing);
    ``propensity``: its probability; ``explored``: not the exploit action;
    ``option_p``: every ranked option's probability of being chosen (0 for all but the
    chosen one without exploration); ``nothing_p``: each unit's probability of nothing.
    """

    row: I64
    propensity: F64
    explored: BOOL
    option_p: F64
    nothing_p: F64


def choose(
    starts: I64, score: F64, config: PolicyConfig, rng: np.random.Generator | None = None
) -> Choice:
    """Each unit's action from its ranked options (runs beginning at ``starts``, best
    first) and the implicit "nothing".

    Greedy: the best option when its score beats nothing by more than ``PROFIT_EPS``.
    Epsilon-greedy: ``epsilon / n + (1 - epsilon) * [exploit]`` over the ``n`` options
    with nothing. Softmax: ``exp(v / T)`` normalized, nothing worth 0; its exploit action
    is the top value (nothing on ties). Drawn with the Gumbel-max trick in one sorted
    pass. Cost: O(n log n), O(n) when greedy.
    """
    n_units, n_rows = len(starts), len(score)
    counts = run_lengths(starts, n_rows)
    unit_of = np.repeat(np.arange(n_units), counts)
    best = score[starts] if n_units else np.empty(0)
    positive = best > PROFIT_EPS
    if config.exploration == "none":
        row = np.where(positive, starts, -1)
        option_p = np.zeros(n_rows)
        option_p[starts[positive]] = 1.0
        return Choice(
            row=row.astype(np.int64),
            propensity=np.ones(n_units),
            explored=np.zeros(n_units, dtype=np.bool_),
            option_p=option_p,
            nothing_p=(~positive).astype(np.float64),
        )
    # The options made explicit: the ranked rows, then each unit's nothing (worth 0).
    owner = np.concatenate([unit_of, np.arange(n_units)])
    is_first = np.zeros(n_rows, dtype=np.bool_)
    is_first[starts] = True
    if config.exploration == "epsilon":
        exploit = np.concatenate([is_first & positive[unit_of], ~positive])
        probability = epsilon_probabilities(owner, exploit, config.epsilon)
        exploit_offer = positive
    else:
        probability = softmax_probabilities(
            owner, np.concatenate([score, np.zeros(n_units)]), config.temperature
        )
        exploit_offer = best > 0.0  # the top value, nothing on ties
    rng = rng if rng is not None else np.random.default_rng(config.seed)
    picked = draw(owner, probability, rng)
    row = np.where(picked < n_rows, picked, -1).astype(np.int64)
    option_p, nothing_p = probability[:n_rows], probability[n_rows:]
    propensity = probability[picked]
    exploit_row = np.where(exploit_offer, starts, -1)
    return Choice(
        row=row,
        propensity=propensity,
        explored=row != exploit_row,
        option_p=option_p,
        nothing_p=nothing_p,
    )


def epsilon_probabilities(owner: I64, exploit: BOOL, epsilon: float) -> F64:
    """Epsilon-greedy: ``epsilon / n + (1 - epsilon) * [exploit]`` per option, ``n`` the
    options of its unit (`owner`: unit index per option, nothing included; one exploit
    option per unit). Cost: O(n)."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    n = np.bincount(owner)[owner].astype(np.float64)
    return epsilon / n + (1.0 - epsilon) * np.asarray(exploit, dtype=np.float64)


def softmax_probabilities(owner: I64, value: F64, temperature: float) -> F64:
    """Softmax: ``exp((v - max v) / T)`` normalized within each unit (cannot overflow).
    Cost: O(n)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    units = int(owner.max()) + 1 if len(owner) else 0
    top = np.full(units, -np.inf)
    np.maximum.at(top, owner, value)
    weight = np.exp((value - top[owner]) / temperature)
    return weight / np.bincount(owner, weights=weight, minlength=units)[owner]


def draw(owner: I64, probability: F64, rng: np.random.Generator) -> I64:
    """One exact draw per unit from its options' probabilities: the option maximizing
    ``log p + Gumbel noise`` (the first in input order on ties), one Gumbel number per
    option in input order. Returns the chosen option index of each unit, in unit order
    (every unit from 0 to the largest must have an option). Cost: O(n)."""
    gumbel = rng.gumbel(size=len(probability))
    with np.errstate(divide="ignore"):
        key = np.log(probability) + gumbel
    if len(owner) == 0:
        return np.empty(0, dtype=np.int64)
    units = int(owner.max()) + 1
    if units == 1:  # one unit (a single request): its argmax
        return np.array([np.argmax(key)], dtype=np.int64)
    best = np.full(units, -np.inf)
    np.maximum.at(best, owner, key)
    hits = np.flatnonzero(key == best[owner])
    first = np.full(units, len(key), dtype=np.int64)
    np.minimum.at(first, owner[hits], hits)
    return first


# ---------------------------------------------------------------------- explanation

OUTCOME_EXPLORED_OFFER = "explored_offer"
OUTCOME_EXPLORED_NOTHING = "explored_nothing"
OUTCOME_OFFER = "offer"
OUTCOME_BUDGET = "budget"
OUTCOME_CAP = "cap"
OUTCOME_ANYWAY = "anyway"
OUTCOME_NOTHING = "nothing"


def outcome(
    *, offered: bool, explored: bool, best_score: float, best_price: float, best_case: int
) -> str:
    """Which explanation a unit's action gets: an (explored) offer; or a nothing beaten by
    the budget's shadow price, by the cap allowance left within a batch, by the buyer
    buying anyway, or by every offer being worth less than nothing."""
    if explored:
        return OUTCOME_EXPLORED_OFFER if offered else OUTCOME_EXPLORED_NOTHING
    if offered:
        return OUTCOME_OFFER
    if best_score > PROFIT_EPS:
        return OUTCOME_BUDGET if best_price > 0 else OUTCOME_CAP
    if best_case == CASE_WOULD_BUY_ANYWAY:
        return OUTCOME_ANYWAY
    return OUTCOME_NOTHING
