"""The row-by-row path of small batches answers exactly as the frame path does.

Two services on one fitted marketplace, same seed, one with the small-batch path turned
off, get the same requests (known and unknown buyers, seller scopes, carts below minimum
spends, explicit offer lists, several k) under greedy, epsilon-greedy and softmax
policies with frequency caps; every answer must match field for field, the explored
draws included, and most answers must actually have come from the small path.
"""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import pytest

from recsys.data import load_dataset
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.models.ranker import PromoRanker
from recsys.policy import PolicyConfig
from serving.auth import ADMIN_PRINCIPAL, Principal
from serving.schemas import RankContext, RankRequest
from serving.service import RankingService
from tests.serving.markets import issuing_config


@pytest.fixture(scope="module")
def ranker(tmp_path_factory: pytest.TempPathFactory) -> PromoRanker:
    out = tmp_path_factory.mktemp("small") / "market"
    generate(SyntheticConfig(buyers=300, weeks=10, seed=3), out)
    return PromoRanker(issuing_config()).fit(load_dataset(out))


@pytest.fixture(scope="module")
def now(ranker: PromoRanker) -> datetime:
    assert ranker.store_ is not None
    start = ranker.store_.offers["start_ts"].max()
    assert isinstance(start, datetime)
    return start + timedelta(hours=1)


def _requests(ranker: PromoRanker, now: datetime, n: int, seed: int) -> list[RankRequest]:
    """A varied, reproducible mix of requests (buyers repeat, so caps bind)."""
    assert ranker.store_ is not None and ranker.store_.buyers is not None
    rng = random.Random(seed)
    buyers = [*ranker.store_.buyers["buyer_id"].to_list()[:40], "never-seen-1"]
    offers = ranker.store_.offers.filter((pl.col("start_ts") <= now) & (now < pl.col("end_ts")))
    ids = offers["offer_id"].to_list()
    sellers = sorted({s for s in offers["seller_key"].to_list() if s})
    out = []
    for _ in range(n):
        kind = rng.random()
        out.append(
            RankRequest(
                buyer_id=rng.choice(buyers),
                seller_id=rng.choice(sellers) if kind < 0.4 else None,
                context=RankContext(cart_value=rng.choice([1.0, 20.0, 80.0]))
                if rng.random() < 0.3
                else None,
                offer_ids=rng.sample(ids, k=min(3, len(ids))) if kind > 0.8 else None,
                k=rng.randint(1, 5),
            )
        )
    return out


def _rounded(value: Any) -> Any:
    """Floats to 12 significant digits: a softmax normalizer summed in another order may
    differ in the last bit; nothing a reader or an estimator could see."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _answers(service: RankingService, requests: list[RankRequest], per_call: int) -> list[Any]:
    who: list[Principal] = [ADMIN_PRINCIPAL] * per_call
    out = []
    for at in range(0, len(requests), per_call):
        chunk = requests[at : at + per_call]
        for response in service.rank(chunk, who[: len(chunk)]):
            out.append(_rounded(response.model_dump(exclude={"decision_id"})))
    return out


@pytest.mark.parametrize(
    "policy",
    [
        PolicyConfig(send_cost=0.01, max_offers_per_buyer=2, max_per_tool=1),
        PolicyConfig(exploration="epsilon", epsilon=0.3, max_offers_per_buyer=3),
        PolicyConfig(exploration="softmax", temperature=0.5, send_cost=0.05),
        PolicyConfig(assumed_incremental_share=0.5, budget_basis="worst_case"),
    ],
    ids=["greedy-capped", "epsilon", "softmax", "response-share"],
)
@pytest.mark.parametrize("per_call", [1, 3])
def test_small_batches_answer_as_the_frame_path(
    ranker: PromoRanker, now: datetime, policy: PolicyConfig, per_call: int
) -> None:
    requests = _requests(ranker, now, n=50, seed=per_call)

    def service(small: bool) -> RankingService:
        ticks = itertools.count()  # a second per call: earlier offers fall in the cap window

        def clock() -> datetime:
            return now + timedelta(seconds=next(ticks))

        built = RankingService(ranker, "v1", policy=policy, clock=clock, seed=11)
        if not small:
            built.small_batch_requests = 0
        return built

    fast, frames = service(small=True), service(small=False)
    taken = []
    decide_small = fast._decide_small

    def counting(*args: Any) -> Any:
        answers = decide_small(*args)
        taken.append(answers is not None)
        return answers

    fast._decide_small = counting  # type: ignore[method-assign]
    got, expected = _answers(fast, requests, per_call), _answers(frames, requests, per_call)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a == b, f"request {i} ({requests[i]!r}) answered differently:\n{a}\n{b}"
    assert all(taken), f"small path taken {sum(taken)} of {len(taken)}"
    if policy.max_offers_per_buyer == 2:  # repeated buyers hit the cap: every offer rejected
        reasons = [a["no_offer_reason"] or "" for a in got]
        assert any("already received" in reason for reason in reasons)
    if policy.exploration != "none":
        assert any(a["explored"] for a in got), "no explored answer: the draw went unchecked"
