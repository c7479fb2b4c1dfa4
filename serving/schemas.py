"""Request and response models of the ranking API (pydantic; OpenAPI comes from them).

Unknown fields are rejected (422 naming the field), so a client's typo never silently
changes a decision. Ids are non-empty and at most `MAX_ID` characters, and money is a
finite number up to `MAX_MONEY` (JSON's `NaN` and `Infinity`, which Python's parser
accepts, are refused naming the field), so every accepted body fits `MAX_BODY_BYTES`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict

MAX_BATCH = 500
"""Most buyers one /v1/rank/batch call may ask for."""

MAX_K = 20
"""Most offers one answer may list."""

MAX_OFFER_IDS = 200
"""Most offer ids one request may restrict its ranking to."""

MAX_OUTCOMES = 1000
"""Most outcomes one /v1/outcomes call may report."""

MAX_ID = 128
"""Longest buyer, seller, offer, decision or order id."""

MAX_CAMPAIGN_ID = 1024
"""Longest campaign id in a path (an audience's slug and an offer id from the data)."""

MAX_MONEY = 1e12
"""Largest cart value, order amount or budget accepted (in the data's currency)."""

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest request body the API reads (16 MiB; `ServeConfig.max_body_bytes` changes it).

The largest valid body is a /v1/rank/batch call of `MAX_BATCH` requests, each with
every id at `MAX_ID` ASCII characters and `MAX_OFFER_IDS` offer ids: 13.4 MB as compact
JSON, 14.3 MB indented by two spaces (`MAX_OUTCOMES` outcomes of the same kind are 0.6
MB). The limit leaves a margin of more than 15 % above that; bigger bodies are refused
with 413 before they are read whole. The other routes have smaller limits (`ROUTE_BODY_BYTES`).
"""

RANK_BODY_BYTES = 128 * 1024
"""Largest /v1/rank body: the largest valid request, every id and text at its longest in
4-byte UTF-8 characters and indented by two spaces, is 106 KB (27 KB in ASCII)."""

OUTCOMES_BODY_BYTES = 2 * 1024 * 1024
"""Largest /v1/outcomes body: `MAX_OUTCOMES` outcomes with every id at its longest in
4-byte UTF-8 characters, indented by two spaces, are 1.73 MB (0.57 MB in ASCII)."""

SMALL_BODY_BYTES = 4096
"""Largest body of every other route: the seller page's login form (a key is 43
characters); the GET routes take none."""

ROUTE_BODY_BYTES: dict[tuple[str, str], int | None] = {
    ("POST", "/v1/rank"): RANK_BODY_BYTES,
    ("POST", "/v1/outcomes"): OUTCOMES_BODY_BYTES,
    ("POST", "/v1/rank/batch"): None,
}
"""Body limit of each route that takes a JSON body (None: the serve config's
`max_body_bytes`); any other request may send at most `SMALL_BODY_BYTES`."""

MAX_ERRORS = 20
"""Most problems a 422 answer lists (it says how many there were in all)."""

MAX_ECHO = 64
"""Longest prefix of a rejected input a 422 answer quotes."""


def _unicode(value: str) -> str:
    """`value`, unless it holds a lone UTF-16 surrogate (JSON's `"\\ud800"`): that is not
    Unicode text, so it could be neither logged nor answered."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "must be Unicode text; it holds a lone surrogate escape such as \\ud800"
        ) from None
    return value


def _utc(value: datetime) -> datetime:
    """`value` as an aware UTC datetime (a naive one is read as UTC, the data contract's
    rule), unless it falls outside the years 1 to 9999 once in UTC."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            "is out of range once converted to UTC; send a moment between the years 1 and 9999"
        ) from None


def _iso_text(value: object) -> object:
    """Only text (or a datetime, in Python) may become a moment: JSON numbers are refused
    rather than read as Unix times."""
    if isinstance(value, str | datetime):
        return value
    raise ValueError("must be an ISO 8601 date and time as a string, such as 2026-03-18T09:30:00Z")


Moment = Annotated[datetime, Strict(False), BeforeValidator(_iso_text), AfterValidator(_utc)]
"""A moment (ISO 8601 text in JSON), held in UTC."""

Channel = Annotated[str, Field(max_length=64), AfterValidator(_unicode)]
Page = Annotated[str, Field(max_length=128), AfterValidator(_unicode)]

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID), AfterValidator(_unicode)]
"""A buyer, seller, offer, decision or order id: 1 to `MAX_ID` characters."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def trusted(cls, fields: dict[str, Any]) -> Self:
        """An instance holding `fields` (every field, each a value of its type) as given,
        not validated: for answers the service builds from its own typed arrays, where
        validating the ~400 objects of a ranked batch of 100 took a fifth of its time.

        What `model_construct` does, less its per-field defaults and aliases (which make
        it slower than validating); the tests validate what the service answers.
        """
        made = cls.__new__(cls)
        object.__setattr__(made, "__dict__", fields)
        object.__setattr__(made, "__pydantic_fields_set__", set(fields))
        object.__setattr__(made, "__pydantic_extra__", None)
        object.__setattr__(made, "__pydantic_private__", None)
        return made


class _Request(BaseModel):
    """A request body: unknown fields refused, and no value converted from another JSON
    type (strict mode)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RankContext(_Request):
    """What the caller knows about the moment of the decision."""

    cart_value: float | None = Field(
        None,
        ge=0,
        le=MAX_MONEY,
        allow_inf_nan=False,
        description="the buyer's current cart value (a finite number)",
    )
    channel: Channel | None = Field(None, description="e.g. email, sms, web, app")
    page: Page | None = Field(None, description="e.g. cart, product, home")


class RankRequest(_Request):
    """Which offers, if any, to give one buyer now."""

    buyer_id: Id
    seller_id: Id | None = Field(
        None,
        description="rank this seller's offers only; a seller's API key implies its seller",
    )
    context: RankContext | None = None
    offer_ids: list[Id] | None = Field(
        None,
        min_length=1,
        max_length=MAX_OFFER_IDS,
        description="rank only these offers; default: every offer valid now in scope",
    )
    k: int = Field(3, ge=1, le=MAX_K, description="most offers to return")


class RankedOffer(_Strict):
    offer_id: str
    seller_id: str | None
    tool: str
    score: float = Field(
        description="what offers are ranked by: the learned policy's decision score (an "
        "offer other than the seller's default only where its gain is sure at the "
        "configured z), or the expected value where no policy was learned"
    )
    expected_value: float = Field(description="expected incremental profit of issuing it")
    value_se: float | None = Field(
        None, description="standard error of expected_value (the model's uncertainty)"
    )
    p_redeem: float | None = Field(description="P(redeem | issued)")
    uplift: float | None = Field(description="change in P(purchase) it causes; null: unknown")
    propensity: float = Field(
        ge=0,
        le=1,
        description="exact probability that the policy takes this offer as its action for "
        "this request; positive for every listed offer when the API explores (the "
        "default), 0 for the offers after the first under a greedy policy",
    )
    reasons: list[str] = Field(description="readable reasons, main first")
    reason_codes: list[str]


class BuyerInfo(_Strict):
    journey_stage: str | None
    cold_start: bool = Field(description="the buyer is unknown to the model: fallback scores")


class RankResponse(_Strict):
    decision_id: str = Field(description="quote it in /v1/outcomes; the decision log's id")
    model_version: str
    buyer: BuyerInfo
    offers: list[RankedOffer] = Field(description="best first; empty: offer nothing")
    no_offer_reason: str | None = Field(
        None, description="why nothing is offered, when `offers` is empty"
    )
    explored: bool = Field(False, description="the first offer was an exploration choice")
    holdout: bool = Field(
        False,
        description="the buyer is in the seller's control group (the holdout) this period: "
        "no offer, so the engine's lift can be measured",
    )


class LiftFigure(_Strict):
    """One metric of the measured lift: treated vs holdout per buyer, and the difference."""

    metric: str = Field(description="purchase_rate, revenue or profit (per buyer)")
    treated: float | None
    control: float | None
    lift: float | None = Field(description="treated - control; null: too few buyers")
    low: float | None = Field(description="lower bound of the interval (`level`)")
    high: float | None
    relative: float | None = Field(description="lift / control")
    n_treated: int
    n_control: int


class IncrementalityResponse(_Strict):
    """The seller's measured lift of the engine's offers vs its holdout (the latest report)."""

    seller_id: str
    available: bool
    detail: str | None = Field(None, description="why there are no figures, when none")
    generated_at: str | None = None
    window_days: float | None = None
    level: float | None = Field(None, description="confidence level of the intervals")
    figures: list[LiftFigure] = Field(default_factory=list)


class BatchRankRequest(_Request):
    requests: list[RankRequest] = Field(min_length=1, max_length=MAX_BATCH)


class BatchRankResponse(_Strict):
    responses: list[RankResponse]


class Outcome(_Request):
    """What happened after a decision: a redemption of the offer, or a purchase."""

    decision_id: Id
    type: Literal["redemption", "purchase"]
    offer_id: Id | None = Field(None, description="required for a redemption")
    ts: Moment | None = Field(
        None,
        description="when it happened (ISO 8601, UTC unless it names its offset); within "
        "the decision's outcome window, from the decision to the model's response horizon "
        "after it. Default: when received",
    )
    order_id: Id | None = Field(
        None,
        description="the order; with decision_id and type it identifies the outcome, so a "
        "retry is stored once (send it to report several orders of one decision)",
    )
    amount: float | None = Field(
        None,
        ge=0,
        le=MAX_MONEY,
        allow_inf_nan=False,
        description="order value (a finite number)",
    )


class OutcomesRequest(_Request):
    outcomes: list[Outcome] = Field(min_length=1, max_length=MAX_OUTCOMES)


class OutcomesResponse(_Strict):
    accepted: int = Field(
        description="outcomes accepted: every outcome of the call (a refusal refuses all)"
    )
    duplicates: int = Field(
        0,
        description="of those, outcomes already stored under the same (decision_id, type, "
        "order_id), e.g. by an earlier try of this call: stored once, not again",
    )


class PlanFigures(_Strict):
    """Expected figures of a campaign or of a whole plan (money in the data's currency).

    The ``*_low``/``*_high`` bounds are a 90 % range from the randomness of buyers'
    responses given the model's probabilities (not the model's own error).
    """

    buyers: int = Field(description="buyers who get an offer")
    incremental_orders: float = Field(description="orders the offers cause")
    incremental_revenue: float = Field(description="revenue of those orders")
    redemptions: float = Field(description="offers expected to be used")
    discount_cost: float = Field(description="expected cost of redemptions")
    send_cost: float = Field(description="cost of sending the offers")
    spend: float = Field(description="what counts against the budget (see budget_basis)")
    profit: float = Field(description="expected incremental profit")
    profit_low: float
    profit_high: float
    roi: float | None = Field(description="profit / (discount + send cost); null: costs nothing")
    roi_low: float | None
    roi_high: float | None


class Campaign(PlanFigures):
    """One recommended campaign: an audience, the offer it gets, and who in it gets it."""

    campaign_id: str = Field(description="stable id: audience slug and offer id")
    audience: str
    audience_size: int = Field(description="the seller's buyers in the audience")
    offer_id: str
    tool: str
    top_buyer_ids: list[str] = Field(description="a sample of the targeted buyers, best first")


class Alternative(PlanFigures):
    """The plan, or what it is compared with: no campaign, or one offer to everyone."""

    name: str
    kind: Literal["plan", "nothing", "coupon_to_all"]
    offer_id: str | None
    tool: str | None
    within_budget: bool


class GainPoint(_Strict):
    """Targeting buyers by expected profit: share targeted -> share of redemptions."""

    share_targeted: float
    share_redemptions: float


class CampaignsResponse(_Strict):
    seller_id: str
    model_version: str
    as_of: datetime = Field(description="the moment the plan is for (offers valid then)")
    audience: Literal["journey_stage", "taste"]
    budget: float | None = Field(description="the spend limit planned for; null: none")
    budget_basis: Literal["expected", "worst_case"]
    spend: float = Field(description="the plan's spend, never above the budget")
    shadow_price: float = Field(description="expected profit one more unit of budget buys")
    buyers: int = Field(description="the seller's buyers the plan considered")
    campaigns: list[Campaign]
    comparison: list[Alternative] = Field(
        description="the plan, no campaign, and coupon to every customer with each offer"
    )
    gain_curve: list[GainPoint]
    not_recommended: list[str] = Field(
        default_factory=list, description="offers no buyer should get, with the reason"
    )


class Health(_Strict):
    status: Literal["ok", "loading", "degraded"]
    model_version: str | None = None
    detail: str | None = None
