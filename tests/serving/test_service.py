"""The ranking service on a small fitted marketplace: scope, propensities, log, outcomes.

One synthetic marketplace (300 buyers, 10 weeks) is fitted per module; the clock is set
inside the validity window of its newest offers, so every seller has offers to rank.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from recsys.data import load_dataset
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.models.ranker import PromoRanker
from recsys.policy import PolicyConfig
from recsys.policy.holdout import HoldoutConfig
from serving.auth import ADMIN_PRINCIPAL, ForbiddenError, Principal
from serving.decision_log import DecisionLog, read_log
from serving.outcomes import OutcomeError
from serving.schemas import Outcome, RankContext, RankRequest, RankResponse
from serving.service import RankingService, UnknownOffersError
from tests.serving.markets import issuing_config

VERSION = "promo-ranker/7"
SELLER = "s001"
OTHER = "s002"
NEW_BUYER = "never-seen-buyer"


@pytest.fixture(scope="module")
def ranker(tmp_path_factory: pytest.TempPathFactory) -> PromoRanker:
    out = tmp_path_factory.mktemp("service") / "market"
    generate(SyntheticConfig(buyers=300, weeks=10, seed=3), out)
    # Sending costs something (an e-mail's share of a platform fee), so that every plan
    # spends and budgets bind.
    config = issuing_config(policy={"send_cost": 0.05})
    return PromoRanker(config).fit(load_dataset(out))


@pytest.fixture(scope="module")
def now(ranker: PromoRanker) -> datetime:
    """An hour after the newest offers start: they are valid, the older ones have ended."""
    assert ranker.store_ is not None
    start = ranker.store_.offers["start_ts"].max()
    assert isinstance(start, datetime)
    return start + timedelta(hours=1)


@pytest.fixture(scope="module")
def valid(ranker: PromoRanker, now: datetime) -> pl.DataFrame:
    """(offer_id, seller_id) of the offers valid at `now`."""
    assert ranker.store_ is not None
    offers = ranker.store_.offers.filter(
        (pl.col("start_ts") <= now) & (now < pl.col("end_ts"))
    ).select("offer_id", pl.col("seller_key").alias("seller_id"))
    assert set(offers["seller_id"]) >= {SELLER, OTHER}
    return offers


@pytest.fixture(scope="module")
def values(ranker: PromoRanker, valid: pl.DataFrame) -> pl.DataFrame:
    """Score and expected value of every known buyer x valid offer, as `PromoRanker.score`
    says (the score is what the policy decides by)."""
    assert ranker.store_ is not None and ranker.store_.buyers is not None
    known = ranker.store_.buyers.filter(pl.col("journey_stage").is_not_null())
    pairs = known.select("buyer_id").join(valid.select("offer_id"), how="cross")
    return (
        ranker.score(pairs)
        .join(valid, on="offer_id")
        .select("buyer_id", "offer_id", "seller_id", "score", "expected_value")
    )


def positive(values: pl.DataFrame, buyer: str, seller: str | None = None) -> pl.DataFrame:
    """The buyer's offers the policy would issue (positive score), best first."""
    rows = values.filter((pl.col("buyer_id") == buyer) & (pl.col("score") > 1e-9))
    if seller is not None:
        rows = rows.filter(pl.col("seller_id") == seller)
    return rows.sort(["score", "offer_id"], descending=[True, False])


def generous_buyer(values: pl.DataFrame, seller: str | None = None, least: int = 3) -> str:
    """A buyer with at least `least` positive-score offers (of `seller`)."""
    rows = values.filter(pl.col("score") > 1e-9)
    if seller is not None:
        rows = rows.filter(pl.col("seller_id") == seller)
    counts = rows.group_by("buyer_id").len().filter(pl.col("len") >= least).sort("buyer_id")
    assert counts.height, f"no buyer has {least} positive offers in the fixture marketplace"
    return str(counts["buyer_id"][0])


def service(
    ranker: PromoRanker,
    now: datetime,
    log: DecisionLog | None = None,
    policy: PolicyConfig | None = None,
    max_remembered_decisions: int = 1000,
) -> RankingService:
    return RankingService(
        ranker,
        VERSION,
        decision_log=log,
        policy=policy,
        clock=lambda: now,
        seed=11,
        max_remembered_decisions=max_remembered_decisions,
    )


def seller_key(seller: str = SELLER) -> Principal:
    return Principal(seller_id=seller, admin=False)


def admins(n: int) -> list[Principal]:
    return [ADMIN_PRINCIPAL] * n


# --------------------------------------------------------------------------- rank


def test_batch_of_known_and_unknown_buyers_is_answered_in_order(
    ranker: PromoRanker, now: datetime, values: pl.DataFrame
) -> None:
    buyer = generous_buyer(values)
    quiet = generous_buyer(values, SELLER, least=1)
    requests = [
        RankRequest(buyer_id=buyer, k=3),
        RankRequest(buyer_id=NEW_BUYER, k=3),
        RankRequest(buyer_id=quiet, seller_id=SELLER, k=2),
        RankRequest(buyer_id=buyer, k=3),  # the same buyer again: a decision of its own
    ]
    answers = service(ranker, now).rank(requests, admins(4))

    assert len(answers) == 4
    assert len({a.decision_id for a in answers}) == 4
    for request, answer in zip(requests, answers, strict=True):
        assert re.fullmatch(r"[0-9a-f]{32}", answer.decision_id)
        assert answer.model_version == VERSION
        assert len(answer.offers) <= request.k
        assert (answer.no_offer_reason is None) == bool(answer.offers)
        for offer in answer.offers:
            assert 0 <= offer.propensity <= 1  # greedy: 0 after the first
            assert offer.score > 0 and offer.value_se is not None and offer.value_se >= 0
            assert offer.reasons and offer.reason_codes
        scores = [o.score for o in answer.offers]
        assert scores == sorted(scores, reverse=True)  # greedy: best first

    # Known answer: the best offers by the ranker's own scores, in order.
    assert [o.offer_id for o in answers[0].offers] == positive(values, buyer)["offer_id"].head(
        3
    ).to_list()
    assert answers[3].offers == answers[0].offers
    assert [o.offer_id for o in answers[2].offers] == positive(values, quiet, SELLER)[
        "offer_id"
    ].head(2).to_list()
    assert {o.seller_id for o in answers[2].offers} == {SELLER}

    assert answers[0].buyer.cold_start is False and answers[0].buyer.journey_stage is not None
    assert answers[1].buyer.cold_start is True  # a fallback answer, not an error
    assert answers[1].buyer.journey_stage is None


def test_every_answer_is_what_validating_it_gives(
    ranker: PromoRanker, now: datetime, valid: pl.DataFrame
) -> None:
    """Answers are built unvalidated (`trusted`): each must equal its validated copy, for
    every kind of answer (offers, explored, nothing, rejected, held out, cold start)."""
    assert ranker.store_ is not None and ranker.store_.buyers is not None
    svc = RankingService(
        ranker,
        VERSION,
        policy=PolicyConfig(exploration="epsilon", epsilon=0.3, max_offers_per_buyer=2),
        clock=lambda: now,
        seed=11,
        holdout=HoldoutConfig(share=0.3),
    )
    ids = [*ranker.store_.buyers["buyer_id"].to_list(), NEW_BUYER]
    carts = [None, 0.0, 10.0, 1000.0]
    requests = [
        RankRequest(
            buyer_id=b,
            seller_id=SELLER if i % 3 == 0 else None,
            context=RankContext(cart_value=carts[i % 4]),
            k=1 + i % 5,
        )
        for i, b in enumerate(ids)
    ]
    answers = [a for _ in range(3) for a in svc.rank(requests, admins(len(requests)))]
    assert any(a.explored for a in answers) and any(a.holdout for a in answers)
    assert any(a.offers for a in answers) and any(not a.offers for a in answers)
    for answer in answers:
        assert RankResponse.model_validate(answer.model_dump()) == answer


def test_cached_answers_equal_fresh_ones(ranker: PromoRanker, now: datetime) -> None:
    assert ranker.store_ is not None
    buyers = ranker.store_.buyer_seller["buyer_id"].unique().sort().head(6).to_list()
    requests = [RankRequest(buyer_id=b, k=3) for b in [*buyers, "never-seen"]]
    cached = RankingService(ranker, "v", clock=lambda: now, seed=1)
    fresh = RankingService(ranker, "v", clock=lambda: now, seed=1, score_cache_rows=0)

    def offers(service: RankingService) -> list[list[tuple[str, float]]]:
        answers = service.rank(requests, [ADMIN_PRINCIPAL] * len(requests))
        return [[(o.offer_id, o.expected_value) for o in a.offers] for a in answers]

    expected = offers(fresh)
    assert any(expected), "the fixture should offer something to someone"
    assert offers(cached) == expected  # filled
    assert offers(cached) == expected  # reused
    assert cached._scores.hits >= len(requests)


def test_greedy_policy_gives_the_first_offer_propensity_one(
    ranker: PromoRanker, now: datetime, values: pl.DataFrame
) -> None:
    buyer = generous_buyer(values)
    (answer,) = service(ranker, now).rank([RankRequest(buyer_id=buyer, k=3)], admins(1))
    assert answer.offers[0].propensity == 1.0
    assert answer.explored is False
    # The others are never the action taken: exactly 0, not a made-up floor.
    assert [o.propensity for o in answer.offers[1:]] == [0.0] * (len(answer.offers) - 1)


def test_k_is_respected_and_the_shorter_list_is_a_prefix(
    ranker: PromoRanker, now: datetime, values: pl.DataFrame
) -> None:
    buyer = generous_buyer(values, least=5)
    svc = service(ranker, now)
    short, long = svc.rank(
        [RankRequest(buyer_id=buyer, k=1), RankRequest(buyer_id=buyer, k=5)], admins(2)
    )
    assert len(short.offers) == 1 and len(long.offers) == 5
    assert short.offers[0] == long.offers[0]


def test_epsilon_greedy_propensities_are_exact_and_sum_to_one(
    ranker: PromoRanker, now: datetime, values: pl.DataFrame
) -> None:
    """Ranking only the buyer's positive offers lists every alternative but "nothing"."""
    epsilon = 0.5
    buyer = generous_buyer(values, least=3)
    good = positive(values, buyer)["offer_id"].to_list()
    n = len(good) + 1  # the offers and nothing
    svc = service(ranker, now, policy=PolicyConfig(exploration="epsilon", epsilon=epsilon))
    request = RankRequest(buyer_id=buyer, offer_ids=good, k=20)
    answers = svc.rank([request] * 400, admins(400))

    exploit, other = 1 - epsilon + epsilon / n, epsilon / n
    firsts = []
    for answer in answers:
        if not answer.offers:  # exploration chose nothing
            assert answer.explored and answer.no_offer_reason
            firsts.append(None)
            continue
        listed = {o.offer_id: o.propensity for o in answer.offers}
        assert set(listed) == set(good)
        assert listed == pytest.approx({o: exploit if o == good[0] else other for o in good})
        assert sum(listed.values()) + other == pytest.approx(1.0)  # + nothing
        first = answer.offers[0]
        assert answer.explored == (first.offer_id != good[0])
        if answer.explored:
            assert first.reason_codes[0] == "EXPLORATION"
        firsts.append(first.offer_id)
    # The draws follow the stated probabilities (4 standard errors).
    share = firsts.count(good[0]) / len(firsts)
    assert abs(share - exploit) < 4 * math.sqrt(exploit * (1 - exploit) / len(firsts))
    assert firsts.count(None) > 0


def test_an_explored_offer_listed_alone_is_answered_and_explained(
    ranker: PromoRanker, now: datetime, values: pl.DataFrame
) -> None:
    """k = 1 lists only the action: an explored one is not the buyer's best offer."""
    buyer = generous_buyer(values, least=3)
    best = positive(values, buyer)["offer_id"][0]
    svc = service(ranker, now, policy=PolicyConfig(exploration="epsilon", epsilon=1.0))
    answers = svc.rank([RankRequest(buyer_id=buyer, k=1)] * 60, admins(60))
    explored = [a for a in answers if a.explored and a.offers]
    assert explored  # uniform draws: most leave the best offer
    for answer in explored:
        assert len(answer.offers) == 1 and answer.offers[0].offer_id != best
        assert answer.offers[0].reason_codes[0] == "EXPLORATION"
        assert answer.offers[0].reasons[0].startswith("chosen at random")


def test_softmax_propensities_include_nothing(
    ranker: PromoRanker, now: datetime, values: pl.DataFrame
) -> None:
    temperature = 0.5
    buyer = generous_buyer(values, least=2)
    good = positive(values, buyer)
    svc = service(ranker, now, policy=PolicyConfig(exploration="softmax", temperature=temperature))
    (answer,) = svc.rank(
        [RankRequest(buyer_id=buyer, offer_ids=good["offer_id"].to_list(), k=20)], admins(1)
    )
    weights = {
        o: math.exp(v / temperature) for o, v in good.select("offer_id", "score").iter_rows()
    }
    total = sum(weights.values()) + 1.0  # nothing is worth 0: exp(0) = 1
    for offer in answer.offers:
        assert offer.propensity == pytest.approx(weights[offer.offer_id] / total)


def test_decisions_are_logged_once_per_answer_with_exact_propensity(
    ranker: PromoRanker, now: datetime, values: pl.DataFrame, tmp_path: Path
) -> None:
    log = DecisionLog(tmp_path)
    svc = service(ranker, now, log, policy=PolicyConfig(exploration="epsilon", epsilon=0.2))
    buyers = [generous_buyer(values), NEW_BUYER, "b0000001"]
    requests = [RankRequest(buyer_id=b, seller_id=SELLER) for b in buyers]
    answers = svc.rank(requests, admins(3))
    assert log.stats().rows_accepted == 3
    log.flush()
    exposures = read_log(tmp_path)["exposures"]

    assert exposures["exposure_id"].to_list() == [a.decision_id for a in answers]
    assert exposures["buyer_id"].to_list() == buyers
    assert exposures["offer_id"].to_list() == [
        a.offers[0].offer_id if a.offers else None for a in answers
    ]
    assert exposures["policy"].to_list() == [VERSION] * 3
    assert exposures["seller_id"].to_list() == [SELLER] * 3
    assert exposures["ts"].to_list() == [now] * 3
    n = values.filter(pl.col("seller_id") == SELLER)["offer_id"].n_unique() + 1
    for answer, logged in zip(answers, exposures["propensity"], strict=True):
        if answer.offers:
            assert logged == answer.offers[0].propensity
        else:  # nothing: the exploit action, or nothing drawn by exploration
            assert logged == pytest.approx(0.2 / n if answer.explored else 0.8 + 0.2 / n)


def test_a_seller_key_ranks_only_its_own_offers(
    ranker: PromoRanker, now: datetime, valid: pl.DataFrame, values: pl.DataFrame, tmp_path: Path
) -> None:
    log = DecisionLog(tmp_path)
    svc = service(ranker, now, log)
    key = seller_key()
    other_offer = valid.filter(pl.col("seller_id") == OTHER)["offer_id"][0]
    own_offer = valid.filter(pl.col("seller_id") == SELLER)["offer_id"][0]

    with pytest.raises(ForbiddenError, match=OTHER):
        svc.rank([RankRequest(buyer_id="b0000002", seller_id=OTHER)], [key])
    with pytest.raises(ForbiddenError, match=other_offer) as info:
        svc.rank([RankRequest(buyer_id="b0000002", offer_ids=[own_offer, other_offer])], [key])
    assert info.value.status == 403
    assert log.stats().rows_accepted == 0  # a refused batch decides nothing

    # Without a seller id the key's own seller is the scope.
    buyer = generous_buyer(values, least=3)
    (answer,) = svc.rank([RankRequest(buyer_id=buyer, k=20)], [key])
    assert [o.offer_id for o in answer.offers] == positive(values, buyer, SELLER)[
        "offer_id"
    ].to_list()
    # The admin may rank the other seller's offer.
    svc.rank([RankRequest(buyer_id="b0000002", offer_ids=[other_offer])], [ADMIN_PRINCIPAL])


def test_unknown_offer_ids_are_named(ranker: PromoRanker, now: datetime) -> None:
    svc = service(ranker, now)
    requests = [
        RankRequest(buyer_id="b0000002"),
        RankRequest(buyer_id="b0000002", offer_ids=["no-such-offer", "nor-this"]),
    ]
    with pytest.raises(UnknownOffersError, match=r"request 1: .*'no-such-offer', 'nor-this'") as e:
        svc.rank(requests, admins(2))
    assert e.value.offer_ids == ["no-such-offer", "nor-this"]


def test_rank_each_isolates_a_bad_request(ranker: PromoRanker, now: datetime) -> None:
    svc = service(ranker, now)
    answers = svc.rank_each(
        [
            RankRequest(buyer_id="b0000002"),
            RankRequest(buyer_id="b0000002", seller_id=OTHER),
            RankRequest(buyer_id="b0000003", offer_ids=["no-such-offer"]),
        ],
        [ADMIN_PRINCIPAL, seller_key(), ADMIN_PRINCIPAL],
    )
    assert isinstance(answers[0], RankResponse)
    assert isinstance(answers[1], ForbiddenError)
    assert isinstance(answers[2], UnknownOffersError)
    assert svc.remembered_decisions == 1


def test_no_valid_offer_is_an_answer_not_an_error(ranker: PromoRanker, now: datetime) -> None:
    later = service(ranker, now + timedelta(days=400))
    scoped, everything = later.rank(
        [RankRequest(buyer_id="b0000002", seller_id=SELLER), RankRequest(buyer_id="b0000002")],
        admins(2),
    )
    assert scoped.offers == [] and f"seller '{SELLER}' has no offer valid" in str(
        scoped.no_offer_reason
    )
    assert everything.offers == [] and "no offer is valid" in str(everything.no_offer_reason)
    # An expired offer asked for by id is rejected with the eligibility rule's words.
    (expired,) = service(ranker, now).rank(
        [RankRequest(buyer_id="b0000002", offer_ids=["of00000"])], admins(1)
    )
    assert expired.offers == [] and "of00000: the offer is valid from" in str(
        expired.no_offer_reason
    )


def test_minimum_spend_is_checked_against_each_request_cart(
    ranker: PromoRanker, now: datetime, values: pl.DataFrame
) -> None:
    """Every valid offer of SELLER needs 50; three carts in one batch, three answers."""
    assert ranker.store_ is not None
    store = ranker.store_
    offers = store.offers.with_columns(
        pl.when(pl.col("seller_key") == SELLER)
        .then(50.0)
        .otherwise(pl.col("offer_min_spend"))
        .alias("offer_min_spend")
    )
    with_min = copy.copy(ranker)
    with_min.store_ = dataclasses.replace(store, offers=offers)
    buyer = generous_buyer(values, SELLER, least=1)
    small, big, unknown = service(with_min, now).rank(
        [
            RankRequest(buyer_id=buyer, seller_id=SELLER, context=RankContext(cart_value=10)),
            RankRequest(buyer_id=buyer, seller_id=SELLER, context=RankContext(cart_value=80)),
            RankRequest(buyer_id=buyer, seller_id=SELLER),
        ],
        admins(3),
    )
    assert small.offers == []
    assert "the cart of 10.0 is below the offer's minimum spend of 50.0" in str(
        small.no_offer_reason
    )
    assert big.offers and all("MIN_SPEND_UNVERIFIED" not in o.reason_codes for o in big.offers)
    assert unknown.offers and all("MIN_SPEND_UNVERIFIED" in o.reason_codes for o in unknown.offers)
    assert [o.offer_id for o in big.offers] == [o.offer_id for o in unknown.offers]


def test_warm_up_neither_logs_nor_remembers(
    ranker: PromoRanker, now: datetime, tmp_path: Path
) -> None:
    log = DecisionLog(tmp_path)
    svc = service(ranker, now, log)
    svc.warm_up()
    assert log.stats().rows_accepted == 0 and svc.remembered_decisions == 0
    assert svc.buyer_known("b0000003") and not svc.buyer_known(NEW_BUYER)


# --------------------------------------------------------------------------- outcomes


def test_outcomes_become_redemption_rows(
    ranker: PromoRanker, now: datetime, values: pl.DataFrame, tmp_path: Path
) -> None:
    log = DecisionLog(tmp_path)
    svc = service(ranker, now, log)
    buyer = generous_buyer(values, SELLER, least=2)
    offered, nothing = svc.rank(
        [
            RankRequest(buyer_id=buyer, seller_id=SELLER),
            RankRequest(buyer_id=buyer, seller_id="no-such-seller"),
        ],
        admins(2),
    )
    second = offered.offers[1].offer_id
    paid = now + timedelta(minutes=2)  # inside the decision's outcome window
    result = svc.record_outcomes(
        [
            Outcome(decision_id=offered.decision_id, type="redemption", order_id="o1", amount=30),
            Outcome(decision_id=offered.decision_id, type="redemption", offer_id=second, ts=paid),
            Outcome(decision_id=offered.decision_id, type="purchase"),  # in the ledger only
        ],
        seller_key(),
    )
    assert (result.accepted, result.duplicates) == (3, 0)
    assert svc.purchases_not_logged == 1
    with pytest.raises(OutcomeError, match="unknown decision 'forgotten-or-made-up'"):
        svc.record_outcomes(
            [Outcome(decision_id="forgotten-or-made-up", type="redemption")], seller_key()
        )
    log.flush()
    rows = read_log(tmp_path)["redemptions"]
    assert rows.select("buyer_id", "offer_id", "exposure_id", "order_id", "amount").rows() == [
        (buyer, offered.offers[0].offer_id, offered.decision_id, "o1", 30.0),
        (buyer, second, None, None, None),  # another offer than the one decided: not linked
    ]
    assert rows["ts"].to_list() == [now, paid]

    with pytest.raises(ValueError, match=nothing.decision_id):
        svc.record_outcomes(
            [Outcome(decision_id=nothing.decision_id, type="redemption")], ADMIN_PRINCIPAL
        )
    with pytest.raises(ForbiddenError):
        svc.record_outcomes(
            [Outcome(decision_id=offered.decision_id, type="redemption")], seller_key(OTHER)
        )


def test_old_decisions_are_forgotten_first(ranker: PromoRanker, now: datetime) -> None:
    svc = service(ranker, now, max_remembered_decisions=2)
    answers = svc.rank([RankRequest(buyer_id=f"b000000{i}") for i in range(1, 4)], admins(3))
    assert svc.remembered_decisions == 2
    result = svc.record_outcomes(
        [Outcome(decision_id=a.decision_id, type="purchase") for a in answers[1:]],
        ADMIN_PRINCIPAL,
    )
    assert result.accepted == 2
    with pytest.raises(OutcomeError) as refused:
        svc.record_outcomes(
            [Outcome(decision_id=a.decision_id, type="purchase") for a in answers],
            ADMIN_PRINCIPAL,
        )
    assert [p["loc"] for p in refused.value.problems] == [["body", "outcomes", 0, "decision_id"]]


# --------------------------------------------------------------------------- campaigns


def test_campaigns_are_consistent_cached_and_scoped(
    ranker: PromoRanker, now: datetime, valid: pl.DataFrame
) -> None:
    svc = service(ranker, now)
    plan = svc.campaigns(SELLER, seller_key(), limit_buyers=5)
    scored = svc.campaign_buyers(SELLER)

    assert plan.seller_id == SELLER and plan.model_version == VERSION
    assert plan.campaigns, "the fixture marketplace should have something worth sending"
    assert plan.budget is None and plan.buyers == scored.len()
    assert sum(c.buyers for c in plan.campaigns) <= scored.len()
    audiences = [c.audience for c in plan.campaigns]
    assert len(audiences) == len(set(audiences))  # one offer per audience
    for c in plan.campaigns:
        assert 0 < len(c.top_buyer_ids) <= min(5, c.buyers) <= c.audience_size
        assert set(c.top_buyer_ids) <= set(scored)
        assert 0 <= c.redemptions <= c.buyers
        assert c.discount_cost >= 0 and c.profit_low <= c.profit <= c.profit_high
    profits = [c.profit for c in plan.campaigns]
    assert profits == sorted(profits, reverse=True) and profits[-1] > 0
    kinds = [a.kind for a in plan.comparison]
    assert kinds[:2] == ["plan", "nothing"] and kinds.count("coupon_to_all") >= 1
    assert plan.comparison[0].profit == pytest.approx(sum(profits))
    # Every valid offer of the seller is either a campaign or not recommended, with a reason.
    skipped = {line.split(":")[0] for line in plan.not_recommended}
    assert {c.offer_id for c in plan.campaigns} | skipped == set(
        valid.filter(pl.col("seller_id") == SELLER)["offer_id"]
    )
    assert not {c.offer_id for c in plan.campaigns} & skipped

    cached, _ = svc.campaign_plan(SELLER, ADMIN_PRINCIPAL)
    assert svc.campaign_plan(SELLER, ADMIN_PRINCIPAL)[0] is cached
    with pytest.raises(ForbiddenError):
        svc.campaigns(OTHER, seller_key())
    with pytest.raises(ForbiddenError):
        svc.campaign_targets(OTHER, seller_key(), plan.campaigns[0].campaign_id)


def test_a_campaigns_target_list_is_its_buyers_in_pairs_form(
    ranker: PromoRanker, now: datetime
) -> None:
    svc = service(ranker, now)
    plan = svc.campaigns(SELLER, seller_key(), limit_buyers=3)
    campaign = plan.campaigns[0]
    targets = svc.campaign_targets(SELLER, seller_key(), campaign.campaign_id)
    assert targets.columns[:2] == ["buyer_id", "offer_id"]
    assert targets.height == campaign.buyers
    assert set(targets["offer_id"]) == {campaign.offer_id}
    assert targets["buyer_id"].head(3).to_list() == campaign.top_buyer_ids


def test_the_budget_changes_the_plan_and_is_never_exceeded(
    ranker: PromoRanker, now: datetime
) -> None:
    svc = service(ranker, now)
    free = svc.campaigns(SELLER, ADMIN_PRINCIPAL)
    assert free.spend > 0, "the fixture's plan should spend something"
    budget = free.spend / 4
    tight = svc.campaigns(SELLER, ADMIN_PRINCIPAL, budget=budget)
    assert tight.budget == budget and tight.spend <= budget * (1 + 1e-9)
    assert tight.comparison[0].profit < free.comparison[0].profit
    assert tight.shadow_price > 0
    # The serving policy's budget is the default; a request's budget overrides it.
    configured = service(
        ranker, now, policy=ranker.config.policy.model_copy(update={"budgets": {SELLER: budget}})
    )
    assert configured.campaigns(SELLER, ADMIN_PRINCIPAL).spend <= budget * (1 + 1e-9)
    assert configured.campaigns(SELLER, ADMIN_PRINCIPAL, budget=1e9).spend == pytest.approx(
        free.spend
    )


def test_taste_audiences_are_favourite_categories(ranker: PromoRanker, now: datetime) -> None:
    plan = service(ranker, now).campaigns(SELLER, ADMIN_PRINCIPAL, audience="taste")
    assert plan.audience == "taste" and plan.campaigns
    assert ranker.store_ is not None
    categories = set(ranker.store_.buyer_category["scope_category"].drop_nulls())
    pooled = {"other categories", "no purchases with a category"}
    assert {c.audience for c in plan.campaigns} <= categories | pooled
    # Taste audiences partition the same buyers as stage audiences.
    stages = service(ranker, now).campaigns(SELLER, ADMIN_PRINCIPAL)
    assert plan.buyers == stages.buyers


def test_frequency_caps_hold_across_requests_and_restarts(
    ranker: PromoRanker, now: datetime, values: pl.DataFrame, tmp_path: Path
) -> None:
    buyer = generous_buyer(values, least=3)
    ticks = iter(now + timedelta(minutes=i) for i in range(100))
    policy = PolicyConfig(max_offers_per_buyer=2, max_per_tool=None, cap_window_days=7)
    log = DecisionLog(tmp_path / "log")
    first = RankingService(
        ranker, VERSION, decision_log=log, policy=policy, clock=lambda: next(ticks), seed=1
    )
    request = RankRequest(buyer_id=buyer, k=1)
    answers = [first.rank([request], admins(1))[0] for _ in range(3)]
    assert [bool(a.offers) for a in answers] == [True, True, False]
    assert answers[2].no_offer_reason is not None
    assert "already received 2 offers" in answers[2].no_offer_reason
    # Another buyer is not capped by this one's offers.
    other = generous_buyer(values.filter(pl.col("buyer_id") != buyer), least=1)
    assert first.rank([RankRequest(buyer_id=other, k=1)], admins(1))[0].offers
    log.close()

    # A restarted service that reads the log keeps the cap; one that does not, does not.
    restarted = RankingService(ranker, VERSION, policy=policy, clock=lambda: next(ticks))
    assert restarted.seed_history(read_log(tmp_path / "log")["exposures"]) == 3
    assert not restarted.rank([request], admins(1))[0].offers
    fresh = RankingService(ranker, VERSION, policy=policy, clock=lambda: next(ticks))
    assert fresh.rank([request], admins(1))[0].offers


def test_a_serve_config_describes_the_service(ranker: PromoRanker, now: datetime) -> None:
    from serving.app import service_for
    from serving.config import ServeConfig

    config = ServeConfig.from_dict(
        {"as_of": now.isoformat(), "score_cache_rows": 0, "policy": {"send_cost": 0.5}}
    )
    svc = service_for(config, ranker, "9")
    assert svc.model_version == "9" and svc.policy.send_cost == 0.5
    assert timedelta(0) <= svc.clock() - now < timedelta(minutes=1)  # as_of, running
