"""Reason sentences of single decisions, in plain Python: for the rows a person reads.

The per-request path formats only the rows it returns (a handful), where a polars
expression would cost a fixed ~0.2 ms each. Numbers print as
:func:`recsys.policy.reasons.fmt` prints them (polars' rounding half to even and its
shortest float repr), so a sentence reads the same whichever path wrote it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from recsys.policy.reasons import LOWERS_PURCHASE, Reason

TS_TEXT = "%Y-%m-%d %H:%M"

_POSITIVE_UPLIFT = Reason.POSITIVE_UPLIFT.value
_RESPONSE_ONLY = Reason.RESPONSE_ONLY.value
_WOULD_BUY_ANYWAY = Reason.WOULD_BUY_ANYWAY.value
_MIN_SPEND_UNVERIFIED = Reason.MIN_SPEND_UNVERIFIED.value


def fmt_number(value: float, decimals: int = 2, *, signed: bool = False) -> str:
    """A number as text, rounded to `decimals`; `signed` puts ``+`` before non-negatives.

    >>> fmt_number(1.975), fmt_number(0.5, signed=True), fmt_number(42.0, 0)
    ('1.98', '+0.5', '42')
    """
    scale = 10.0**decimals
    rounded = round(value * scale) / scale
    if rounded == 0:
        rounded = math.copysign(0.0, value)
    text = str(int(rounded)) if decimals == 0 else repr(rounded)
    return "+" + text if signed and value >= 0 else text


def _pts(value: float, decimals: int = 1) -> str:
    return fmt_number(value * 100, decimals)


def _response_sentence(value: str, p_redeem: float, assumed_share: float) -> str:
    return (
        "uplift could not be learned from the data: ranked by response "
        f"({_pts(p_redeem, 0)}% redeem, assuming {assumed_share * 100:g}% of "
        f"redemptions are extra sales), expected {value} profit"
    )


def candidate_sentences(
    reason_codes: Sequence[str],
    expected_value: float,
    incremental_p: float,
    p_redeem: float,
    p_purchase: float,
    redemption_cost: float,
    min_spend: float,
    assumed_share: float,
) -> list[str]:
    """The sentences of one valued option's `reason_codes`, main first; its reason text
    is them ``"; "``-joined.

    Plain numbers rather than a row mapping, and each printed once: the per-request path
    calls it for every offer an answer lists.

    >>> candidate_sentences(["POSITIVE_UPLIFT"], 1.975, 0.25, 0.4, 0.2, 5.0, 0.0, 0.25)
    ['expected +1.98 profit: the offer lifts purchase chance by 25.0 pts']
    """
    value = fmt_number(expected_value, signed=True)
    main = reason_codes[0]
    if main == _POSITIVE_UPLIFT:
        first = (
            f"expected {value} profit: the offer lifts purchase chance by {_pts(incremental_p)} pts"
        )
    elif main == _RESPONSE_ONLY:
        first = _response_sentence(value, p_redeem, assumed_share)
    elif main == _WOULD_BUY_ANYWAY:
        first = (
            f"{_pts(p_purchase, 0)}% likely to buy without the offer and the offer "
            f"adds {_pts(incremental_p)} pts: its cost of "
            f"{fmt_number(redemption_cost)} per redemption "
            f"({_pts(p_redeem, 0)}% redeem) is pure cost, expected {value} profit"
        )
    elif incremental_p <= LOWERS_PURCHASE:
        first = (
            f"expected {value} profit: the offer is expected to lower purchase chance by "
            f"{_pts(-incremental_p)} pts"
        )
    elif redemption_cost * p_redeem > 0:
        first = (
            f"expected {value} profit: {_pts(p_redeem, 0)}% redeem at a cost of "
            f"{fmt_number(redemption_cost)} each, more than the margin on the "
            f"{_pts(incremental_p)} pts of extra purchases"
        )
    else:
        first = (
            f"expected {value} profit: the margin on the {_pts(incremental_p)} pts of extra "
            "purchases does not cover the cost of sending it"
        )
    if len(reason_codes) == 1:
        return [first]
    sentences = [first]
    if _RESPONSE_ONLY in reason_codes[1:]:
        sentences.append(_response_sentence(value, p_redeem, assumed_share))
    if _MIN_SPEND_UNVERIFIED in reason_codes[1:]:
        sentences.append(
            f"cart value unknown: the offer needs a minimum spend of {fmt_number(min_spend)}"
        )
    return sentences


def exploration_sentence(propensity: float) -> str:
    """Why an action was drawn at random, with its probability."""
    return f"chosen at random to learn buyers' responses (probability {fmt_number(propensity, 4)})"


def nothing_sentence(best_value: float) -> str:
    """Why nothing beats sending nothing, quoting the best offer's value."""
    return (
        "no eligible offer beats sending nothing (best expected "
        f"{fmt_number(best_value, signed=True)} profit)"
    )


def cap_sentence(best_value: float) -> str:
    """Why a batch's cap allowance left a buyer with nothing."""
    return (
        "the buyer's remaining frequency-cap allowance went to better offers (best worth "
        f"{fmt_number(best_value, signed=True)})"
    )


def budget_sentence(best_value: float, spend: float, shadow_price: float) -> str:
    """Why a budget left a buyer with nothing."""
    return (
        f"seller budget used by better offers: the best offer is worth "
        f"{fmt_number(best_value, signed=True)} but spends {fmt_number(spend)} at a shadow "
        f"price of {fmt_number(shadow_price, 3)} per unit of budget"
    )


# ----------------------------------------------------------------------- rejections


def validity_sentence(start: datetime | None, end: datetime | None, now: datetime) -> str:
    """Why an offer is not valid at `now`."""
    since = start.strftime(TS_TEXT) if start is not None else "the start"
    until = end.strftime(TS_TEXT) if end is not None else "further notice"
    return f"the offer is valid from {since} until {until}, not at {now.strftime(TS_TEXT)}"


def scope_sentence(seller: str | None, scope: str | None) -> str:
    """Why an offer is outside the request's seller scope."""
    return f"the offer belongs to seller {seller}, the request is for seller {scope}"


def min_spend_sentence(cart: float, min_spend: float) -> str:
    """Why a cart is too small for an offer."""
    return (
        f"the cart of {fmt_number(cart)} is below the offer's minimum spend of "
        f"{fmt_number(min_spend)}"
    )


def cap_reached_sentence(
    n_buyer: int,
    n_tool: int,
    tool: str,
    max_per_buyer: int | None,
    max_per_tool: int | None,
    window_days: float,
) -> str:
    """Which frequency cap a buyer has reached."""
    window = f"{window_days:g}"
    if max_per_buyer is not None and n_buyer >= max_per_buyer:
        return (
            f"the buyer already received {n_buyer} offers in the last {window} days "
            f"(cap {max_per_buyer})"
        )
    return (
        f"the buyer already received {n_tool} {tool} offers in the last {window} days "
        f"(cap {max_per_tool} per tool)"
    )
