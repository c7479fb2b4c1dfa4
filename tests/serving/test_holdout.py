"""The holdout in the ranking service: held-out buyers get nothing and say so, the
control share is the configured one, the assignment is stable, and every logged
propensity is the exact holdout-joint one (checked against the same service without
a holdout, whose draws are identical: the holdout consumes no random numbers)."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from recsys.models.ranker import PromoRanker
from recsys.policy import PolicyConfig
from recsys.policy.holdout import HOLDOUT_TEXT, HoldoutConfig, assign_control
from serving.decision_log import DecisionLog, read_log
from serving.schemas import RankRequest, RankResponse
from serving.service import RankingService
from tests.serving.test_service import SELLER, VERSION, admins

SHARE = 0.3
UNIFORM = PolicyConfig(exploration="epsilon", epsilon=1.0)


def build(
    ranker: PromoRanker, now: datetime, holdout: HoldoutConfig | None, log: DecisionLog | None
) -> RankingService:
    return RankingService(
        ranker, VERSION, decision_log=log, policy=UNIFORM, clock=lambda: now, seed=11,
        holdout=holdout,
    )  # fmt: skip


def buyers(ranker: PromoRanker) -> list[str]:
    assert ranker.store_ is not None and ranker.store_.buyers is not None
    return sorted(ranker.store_.buyers["buyer_id"].to_list())


def rank_all(svc: RankingService, ids: list[str], batch: int) -> list[RankResponse]:
    out: list[RankResponse] = []
    for at in range(0, len(ids), batch):
        chunk = [RankRequest(buyer_id=b, seller_id=SELLER, k=20) for b in ids[at : at + batch]]
        out.extend(svc.rank(chunk, admins(len(chunk))))
    return out


def logged(
    ranker: PromoRanker, now: datetime, holdout: HoldoutConfig | None, where: Path, batch: int
) -> tuple[list[RankResponse], pl.DataFrame]:
    log = DecisionLog(where)
    answers = rank_all(build(ranker, now, holdout, log), buyers(ranker), batch)
    log.flush()
    exposures = read_log(where)["exposures"]
    assert exposures["exposure_id"].to_list() == [a.decision_id for a in answers]
    return answers, exposures


@pytest.mark.parametrize("batch", [300, 4], ids=["frame-path", "small-path"])
def test_held_out_buyers_get_nothing_with_exact_joint_propensities(
    market_ranker: PromoRanker, market_now: datetime, tmp_path: Path, batch: int
) -> None:
    ranker, now = market_ranker, market_now
    base, base_log = logged(ranker, now, None, tmp_path / "base", batch)
    held, held_log = logged(ranker, now, HoldoutConfig(share=SHARE), tmp_path / "held", batch)
    assert base_log["arm"].null_count() == base_log.height  # no holdout: no arm

    control = [a.holdout for a in held]
    observed = sum(control) / len(control)
    assert abs(observed - SHARE) < 4 * math.sqrt(SHARE * (1 - SHARE) / len(control))
    rows = zip(
        base,
        base_log["propensity"],
        held,
        held_log.select("arm", "offer_id", "propensity", "seller_id").iter_rows(),
        strict=True,
    )
    for b, p, h, (arm, offer, propensity, seller) in rows:
        # epsilon = 1: each of the unit's n options (its offers and nothing) has p = 1 / n,
        # so the base log's propensity is also the unit's P(nothing).
        assert seller == SELLER
        if h.holdout:
            assert arm == "control" and offer is None and h.offers == []
            assert h.no_offer_reason == HOLDOUT_TEXT and not h.explored
            assert propensity == pytest.approx(SHARE + (1 - SHARE) * p)
            continue
        assert arm == "treated"
        # The same draw as without a holdout: the holdout uses no random numbers.
        assert [o.offer_id for o in h.offers] == [o.offer_id for o in b.offers]
        if h.offers:
            assert offer == h.offers[0].offer_id
            assert propensity == pytest.approx((1 - SHARE) * p)
            assert [o.propensity for o in h.offers] == pytest.approx(
                [(1 - SHARE) * o.propensity for o in b.offers]
            )
        else:
            assert offer is None
            assert propensity == pytest.approx(SHARE + (1 - SHARE) * p)
    assert held_log["offer_id"].is_not_null().any() and any(control)


def test_the_assignment_is_stable_across_calls_and_services(
    market_ranker: PromoRanker, market_now: datetime
) -> None:
    ranker, now = market_ranker, market_now
    config = HoldoutConfig(share=SHARE)
    first = [a.holdout for a in rank_all(build(ranker, now, config, None), buyers(ranker), 300)]
    again = build(ranker, now, config, None)
    assert [a.holdout for a in rank_all(again, buyers(ranker), 7)] == first
    assert [a.holdout for a in rank_all(again, buyers(ranker), 300)] == first
    resalted = build(ranker, now, HoldoutConfig(share=SHARE, salt="other"), None)
    assert [a.holdout for a in rank_all(resalted, buyers(ranker), 300)] != first


def test_without_a_holdout_nobody_is_held_out(
    market_ranker: PromoRanker, market_now: datetime
) -> None:
    ranker, now = market_ranker, market_now
    answers = rank_all(build(ranker, now, HoldoutConfig(share=0.0), None), buyers(ranker), 300)
    assert not any(a.holdout for a in answers)
    assert all(a.no_offer_reason != HOLDOUT_TEXT for a in answers)


def test_campaign_targets_leave_out_the_sellers_held_out_buyers(
    market_ranker: PromoRanker, market_now: datetime
) -> None:
    """A campaign sent to a held-out buyer would treat the control group: the plan of a
    seller with a holdout targets none of the buyers `/v1/rank` holds out for it, and
    the same plan without a holdout does target some of them (so the check can fail)."""
    ranker, now = market_ranker, market_now
    holdout = HoldoutConfig(share=0.5)
    (who,) = admins(1)

    def targeted(svc: RankingService) -> set[str]:
        plan, _ = svc.campaign_plan(SELLER, who)
        return set(plan.targets["buyer_id"].to_list())

    with_holdout = targeted(build(ranker, now, holdout, None))
    without = targeted(build(ranker, now, None, None))
    ids = sorted(without)
    control, _ = assign_control(ids, [SELLER] * len(ids), now, holdout)
    held_out = {b for b, c in zip(ids, control.tolist(), strict=True) if c}
    assert held_out and held_out <= without
    assert with_holdout and not with_holdout & held_out
