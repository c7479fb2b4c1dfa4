"""The decision layer: which offer, if any, each buyer gets, and why.

Pure functions (no I/O, no infrastructure). Each rule is written once, on numpy arrays,
vectorized over a decision's options and over many decisions; the frame steps below call
it at the data boundary, and a served request calls it directly:

- :mod:`~recsys.policy.config` — :class:`PolicyConfig` and the constants the steps share;
- :mod:`~recsys.policy.arrays` — value, reason case, spend, eligibility, ranking, choice
  and exploration draws on arrays (the rules themselves);
- :mod:`~recsys.policy.sentences` — reason sentences of single rows (a request's answer);
- :mod:`~recsys.policy.schema` — the *candidates* frame the upstream models produce;
- :mod:`~recsys.policy.value` — redemption cost and expected incremental profit;
- :mod:`~recsys.policy.eligibility` — validity dates, seller scope, minimum spend, caps;
- :mod:`~recsys.policy.pricing` — the budget price search (smallest price that fits);
- :mod:`~recsys.policy.budget` — per-seller budgets solved with a shadow price;
- :mod:`~recsys.policy.explore` — epsilon-greedy and softmax with exact propensities;
- :mod:`~recsys.policy.reasons` — reason codes and texts a seller can read;
- :mod:`~recsys.policy.policy` — :class:`OfferPolicy` chaining them.
"""

from recsys.policy.budget import Allocation, allocate, unit_keys
from recsys.policy.config import DEFAULT_SHIPPING_COST, PLATFORM_BUDGET_KEY, PolicyConfig
from recsys.policy.eligibility import EligibilityResult, RequestContext, filter_eligible
from recsys.policy.explore import Exploration, epsilon_greedy, softmax, with_nothing
from recsys.policy.policy import Decisions, OfferPolicy
from recsys.policy.reasons import (
    DESCRIPTIONS,
    Reason,
    candidate_reason_codes,
    candidate_reason_text,
)
from recsys.policy.schema import (
    CANDIDATE_COLUMNS,
    CANDIDATE_SCHEMA,
    REQUIRED_COLUMNS,
    CandidatesError,
    validate_candidates,
)
from recsys.policy.value import (
    expected_incremental_profit,
    redemption_cost,
    with_spend,
)

__all__ = [
    "CANDIDATE_COLUMNS",
    "CANDIDATE_SCHEMA",
    "DEFAULT_SHIPPING_COST",
    "DESCRIPTIONS",
    "PLATFORM_BUDGET_KEY",
    "REQUIRED_COLUMNS",
    "Allocation",
    "CandidatesError",
    "Decisions",
    "EligibilityResult",
    "Exploration",
    "OfferPolicy",
    "PolicyConfig",
    "Reason",
    "RequestContext",
    "allocate",
    "candidate_reason_codes",
    "candidate_reason_text",
    "epsilon_greedy",
    "expected_incremental_profit",
    "filter_eligible",
    "redemption_cost",
    "softmax",
    "unit_keys",
    "validate_candidates",
    "with_nothing",
    "with_spend",
]
