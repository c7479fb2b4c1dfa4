"""Week-by-week simulation of one chunk of buyers: sessions, orders, offers, redemptions.

Every week each active buyer, in a latent journey stage, places Poisson many orders
(seller by the buyer's seller shares, lines by taste) and browses in sessions that may
leave a cart behind. In campaign weeks the logging policy issues offers; an offer adds
an order with the causal probability of `truth.expected_outcomes` and is redeemed on the
first order with its seller. The stage then moves by the transition matrices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recsys.data.schema import EVENT_TYPES
from recsys.data.synthetic.campaigns import Offers, logging_probabilities
from recsys.data.synthetic.catalog import Catalog
from recsys.data.synthetic.params import (
    ABANDON_AT_CHECKOUT,
    AMOUNT_OFF,
    BROWSE_RATE,
    CART_PROB,
    LINES_EXTRA_N,
    LINES_EXTRA_P,
    N_STAPLES,
    NEW,
    ORDER_RATE,
    PERCENT_OFF,
    QTY_EXTRA_P,
    REDEEM_GIVEN_ORDER,
    TRANSITION_NO_ORDER,
    TRANSITION_ORDER,
    SyntheticConfig,
)
from recsys.data.synthetic.population import Buyers, _sample_rows, sample_taste_items
from recsys.data.synthetic.truth import expected_outcomes

WEEK_S = 7 * 86400
STEP_S = 45  # seconds between the events of one session
VIEW, SEARCH, ADD, REMOVE, CHECKOUT, PURCHASE = (
    EVENT_TYPES.index(e)
    for e in ("view", "search", "add_to_cart", "remove_from_cart", "checkout", "purchase")
)
MANUAL_POLICY, LOGGING_POLICY = 0, 1
CONTROL = -1


@dataclass
class Columns:
    """Column arrays appended piece by piece, concatenated once at the end."""

    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, **cols: np.ndarray) -> None:
        for name, arr in cols.items():
            self.parts.setdefault(name, []).append(np.asarray(arr))

    def concat(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        return {n: np.concatenate(self.parts[n]) if n in self.parts else np.empty(0) for n in names}


@dataclass
class ChunkLog:
    """Everything one chunk produced, as integer-coded column arrays."""

    events: Columns = field(default_factory=Columns)
    exposures: Columns = field(default_factory=Columns)
    redemptions: Columns = field(default_factory=Columns)
    options: Columns = field(default_factory=Columns)


@dataclass
class Treatment:
    """This week's assignment for the chunk's buyers (arrays over all chunk rows)."""

    offer: np.ndarray  # offer code, -1 none/control
    seller: np.ndarray  # seller of the offer (or of the control arm), -1 none
    effect: np.ndarray
    relevance: np.ndarray
    exposed: np.ndarray  # rows with an exposure record (offer or control)

    @classmethod
    def none(cls, n: int) -> Treatment:
        return cls(
            offer=np.full(n, -1),
            seller=np.full(n, -1),
            effect=np.zeros(n),
            relevance=np.ones(n),
            exposed=np.zeros(n, dtype=bool),
        )


def simulate_chunk(
    config: SyntheticConfig,
    catalog: Catalog,
    offers: Offers,
    buyers: Buyers,
    rng: np.random.Generator,
) -> ChunkLog:
    """Run all weeks for one chunk of buyers; buyers' `stage` ends at the decision time."""
    log = ChunkLog()
    wave_campaign = {w: i for i, w in enumerate(config.waves)}
    for week in range(config.weeks):
        begin_week(config, buyers, week)
        treatment = Treatment.none(len(buyers))
        if week in wave_campaign:
            treatment = _assign_wave(config, offers, buyers, wave_campaign[week], week, rng)
        elif week == config.manual_week:
            treatment = _assign_manual(config, offers, buyers, week)
        if treatment.exposed.any():
            week_s = int(config.start.timestamp()) + week * WEEK_S
            _log_exposures(config, catalog, offers, buyers, treatment, week, week_s, log)
        end_week(config, catalog, offers, buyers, treatment, week, rng, log)
    return log


def begin_week(config: SyntheticConfig, buyers: Buyers, week: int) -> None:
    """Buyers joining in `week` become active (stage new) before its decisions."""
    joining = (buyers.join_week == week) & (buyers.stage < 0)
    buyers.stage[joining] = NEW


def end_week(
    config: SyntheticConfig,
    catalog: Catalog,
    offers: Offers,
    buyers: Buyers,
    treatment: Treatment,
    week: int,
    rng: np.random.Generator,
    log: ChunkLog,
) -> None:
    """The week's orders (with those `treatment` causes), browsing, and stage moves.

    `treatment.effect` and `.relevance` must be set for its treated rows (as
    `_log_exposures` does from the truth)."""
    week_s = int(config.start.timestamp()) + week * WEEK_S
    ordered = _simulate_orders(catalog, offers, buyers, treatment, week, week_s, rng, log)
    _simulate_browsing(catalog, buyers, week, week_s, rng, log)
    _advance_stages(buyers, ordered, rng)


def _assign_wave(
    config: SyntheticConfig,
    offers: Offers,
    buyers: Buyers,
    campaign: int,
    week: int,
    rng: np.random.Generator,
) -> Treatment:
    """Randomized logging policy: participants get control or a slot, with known odds."""
    n = len(buyers)
    treatment = Treatment.none(n)
    eligible = (buyers.stage >= 0) & (buyers.join_week < week)
    rows = np.flatnonzero(eligible & (rng.random(n) < config.participation))
    if len(rows) == 0:
        return treatment
    seller = _sample_rows(buyers.share[rows], rng)
    probs = logging_probabilities(buyers.stage[rows], config.control_share)
    arm = _sample_rows(probs, rng) - 1  # -1 = control
    codes = offers.for_campaign(campaign)
    offer = np.where(arm >= 0, codes[seller, np.maximum(arm, 0)], CONTROL)
    treatment.offer[rows] = offer
    treatment.seller[rows] = seller
    treatment.exposed[rows] = True
    return treatment


def _assign_manual(config: SyntheticConfig, offers: Offers, buyers: Buyers, week: int) -> Treatment:
    """A campaign sent by hand to a seller's biggest customers: no control, no propensity."""
    treatment = Treatment.none(len(buyers))
    code = int(np.flatnonzero(offers.kind == 1)[0])
    seller = int(offers.seller[code])
    eligible = (buyers.stage >= 0) & (buyers.join_week < week)
    value = buyers.share[:, seller] * buyers.activity * eligible
    if not eligible.any():
        return treatment
    threshold = np.quantile(value[eligible], 0.8)
    rows = np.flatnonzero(eligible & (value >= threshold) & (value > 0))
    treatment.offer[rows] = code
    treatment.seller[rows] = seller
    treatment.exposed[rows] = True
    return treatment


def _log_exposures(
    config: SyntheticConfig,
    catalog: Catalog,
    offers: Offers,
    buyers: Buyers,
    treatment: Treatment,
    week: int,
    week_s: int,
    log: ChunkLog,
) -> None:
    """Record exposures with their propensities and the true expected outcomes."""
    rows = np.flatnonzero(treatment.exposed)
    offer = treatment.offer[rows]
    stage = buyers.stage[rows]
    treated = offer >= 0
    manual = treated & (offers.kind[np.maximum(offer, 0)] == 1)
    # A control row is scored against its seller's store-wide percent-off for the truth.
    stand_in = np.where(treated, offer, _slot0_of_seller(offers, config, week, treatment, rows))
    truth = expected_outcomes(
        buyers, catalog, offers, rows, stage, stand_in, config.send_cost, config.effects
    )
    treatment.effect[rows] = np.where(treated, truth.effect, 0.0)
    treatment.relevance[rows] = truth.relevance
    probs = logging_probabilities(stage, config.control_share)
    slot = np.where(treated, offers.slot[np.maximum(offer, 0)], -1)
    propensity = np.where(manual, np.nan, probs[np.arange(len(rows)), slot + 1])
    log.exposures.add(
        buyer=buyers.code[rows],
        offer=offer,
        week=np.full(len(rows), week),
        ts=np.full(len(rows), week_s + 3600),
        propensity=propensity,
        policy=np.where(manual, MANUAL_POLICY, LOGGING_POLICY),
        stage=stage,
        seller=treatment.seller[rows],
        p_control=truth.p_control,
        p_treated=np.where(treated, truth.p_treated, truth.p_control),
        p_redeem=np.where(treated, truth.p_redeem, 0.0),
        profit_control=truth.profit_control,
        incremental_profit=np.where(treated, truth.incremental_profit, 0.0),
    )
    _log_options(config, catalog, offers, buyers, treatment, rows, week, log)


def _log_options(
    config: SyntheticConfig,
    catalog: Catalog,
    offers: Offers,
    buyers: Buyers,
    treatment: Treatment,
    rows: np.ndarray,
    week: int,
    log: ChunkLog,
) -> None:
    """Truth for every offer the logging policy could have chosen at each exposure.

    Lets an off-policy estimate of any new policy be checked against its true value on
    the same logged decisions. Manual-campaign exposures had one option only.
    """
    if week in config.waves:
        codes = offers.for_campaign(config.waves.index(week))[treatment.seller[rows]]
    else:
        codes = treatment.offer[rows][:, None]
    n_opt = codes.shape[1]
    option_rows = np.repeat(rows, n_opt)
    truth = expected_outcomes(
        buyers,
        catalog,
        offers,
        option_rows,
        buyers.stage[option_rows],
        codes.ravel(),
        config.send_cost,
        config.effects,
    )
    log.options.add(
        buyer=buyers.code[option_rows],
        week=np.full(len(option_rows), week),
        offer=codes.ravel(),
        p_control=truth.p_control,
        p_treated=truth.p_treated,
        p_redeem=truth.p_redeem,
        profit_control=truth.profit_control,
        profit_treated=truth.profit_treated,
    )


def _slot0_of_seller(
    offers: Offers, config: SyntheticConfig, week: int, treatment: Treatment, rows: np.ndarray
) -> np.ndarray:
    """The seller's slot-0 offer of this week's wave (stand-in for control rows)."""
    if week not in config.waves:
        return treatment.offer[rows]
    codes = offers.for_campaign(config.waves.index(week))
    return codes[np.maximum(treatment.seller[rows], 0), 0]


def _simulate_orders(
    catalog: Catalog,
    offers: Offers,
    buyers: Buyers,
    treatment: Treatment,
    week: int,
    week_s: int,
    rng: np.random.Generator,
    log: ChunkLog,
) -> np.ndarray:
    """Orders of the week, including those an offer caused; returns who ordered."""
    n = len(buyers)
    active = buyers.stage >= 0
    lam = np.where(active, ORDER_RATE[np.maximum(buyers.stage, 0)] * buyers.activity, 0.0)
    n_orders = rng.poisson(lam)
    order_row = np.repeat(np.arange(n), n_orders)
    order_seller = _sample_rows(buyers.share[order_row], rng) if len(order_row) else order_row
    treated = treatment.offer >= 0
    at_offer_seller = order_seller == treatment.seller[order_row]
    has_base = np.bincount(order_row[at_offer_seller], minlength=n) > 0
    induced = treated & ~has_base & (rng.random(n) < treatment.effect)
    induced_rows = np.flatnonzero(induced)
    order_row = np.concatenate([order_row, induced_rows])
    order_seller = np.concatenate([order_seller, treatment.seller[induced_rows]])
    is_induced = np.concatenate(
        [np.zeros(len(order_row) - len(induced_rows), bool), np.ones(len(induced_rows), bool)]
    )
    if len(order_row) == 0:
        return np.zeros(n, dtype=bool)

    # The coupon order: a treated buyer's first order with the offer's seller.
    candidate = treated[order_row] & (order_seller == treatment.seller[order_row])
    cand_idx = np.flatnonzero(candidate)
    _, first = np.unique(order_row[cand_idx], return_index=True)
    coupon_idx = cand_idx[first]
    coupon_row = order_row[coupon_idx]
    coupon_offer = treatment.offer[coupon_row]
    scoped = offers.scope_category[coupon_offer] >= 0
    includes_scope = is_induced[coupon_idx] | (
        rng.random(len(coupon_idx)) < treatment.relevance[coupon_row]
    )
    redeemed = includes_scope & (
        rng.random(len(coupon_idx)) < REDEEM_GIVEN_ORDER[offers.tool[coupon_offer]]
    )

    n_orders_all = len(order_row)
    n_lines = 1 + rng.binomial(LINES_EXTRA_N, LINES_EXTRA_P, size=n_orders_all)
    line_order = np.repeat(np.arange(n_orders_all), n_lines)
    line_pos = np.arange(len(line_order)) - np.repeat(np.cumsum(n_lines) - n_lines, n_lines)
    line_item = _sample_lines(catalog, buyers, order_row[line_order], order_seller[line_order], rng)
    swap = coupon_idx[scoped & includes_scope]
    if len(swap):
        line_item[np.cumsum(n_lines)[swap] - n_lines[swap]] = _sample_scope_items(
            catalog, offers, buyers, order_row[swap], treatment.offer[order_row[swap]], rng
        )
    qty = 1 + (rng.random(len(line_order)) < QTY_EXTRA_P)
    amount = catalog.price[line_item] * qty
    discount_factor = np.ones(len(line_order))
    order_redeemed = np.zeros(n_orders_all, dtype=bool)
    order_redeemed[coupon_idx[redeemed]] = True
    order_offer = np.full(n_orders_all, -1)
    order_offer[coupon_idx] = coupon_offer
    gross = np.bincount(line_order, weights=amount, minlength=n_orders_all)
    line_offer = order_offer[line_order]
    line_redeemed = order_redeemed[line_order]
    tool = np.where(line_offer >= 0, offers.tool[np.maximum(line_offer, 0)], -1)
    value = np.nan_to_num(offers.value[np.maximum(line_offer, 0)])
    line_scoped = offers.scope_category[np.maximum(line_offer, 0)] >= 0
    pct = line_redeemed & (tool == PERCENT_OFF) & (~line_scoped | (line_pos == 0))
    discount_factor[pct] = 1 - value[pct]
    amt = line_redeemed & (tool == AMOUNT_OFF)
    if amt.any():
        og = gross[line_order[amt]]
        discount_factor[amt] = 1 - np.minimum(value[amt], og) / og
    amount = np.round(amount * discount_factor, 2)

    order_ts = week_s + 7200 + _week_offsets(buyers, order_row, week, rng, margin_s=7200 + 3600)
    order_id = (buyers.code[order_row] * 100 + week) * 1000 + np.arange(n_orders_all) % 1000
    session_id = order_id * 10 + 1
    # Session per order: view and add each line, checkout, then one purchase row per line.
    line_ts = order_ts[line_order] + 2 * line_pos * STEP_S
    checkout_ts = order_ts + 2 * n_lines * STEP_S
    purchase_ts = checkout_ts[line_order] + STEP_S
    lb = buyers.code[order_row][line_order]
    ls = session_id[line_order]
    nan = np.full(len(line_order), np.nan)
    minus = np.full(len(line_order), -1)
    log.events.add(
        buyer=lb,
        item=line_item,
        etype=np.full(len(lb), VIEW),
        ts=line_ts,
        session=ls,
        order=minus,
        qty=minus,
        amount=nan,
    )
    log.events.add(
        buyer=lb,
        item=line_item,
        etype=np.full(len(lb), ADD),
        ts=line_ts + STEP_S,
        session=ls,
        order=minus,
        qty=minus,
        amount=nan,
    )
    log.events.add(
        buyer=buyers.code[order_row],
        item=np.full(n_orders_all, -1),
        etype=np.full(n_orders_all, CHECKOUT),
        ts=checkout_ts,
        session=session_id,
        order=np.full(n_orders_all, -1),
        qty=np.full(n_orders_all, -1),
        amount=np.full(n_orders_all, np.nan),
    )
    log.events.add(
        buyer=lb,
        item=line_item,
        etype=np.full(len(lb), PURCHASE),
        ts=purchase_ts,
        session=ls,
        order=order_id[line_order],
        qty=qty,
        amount=amount,
    )
    red = coupon_idx[redeemed]
    if len(red):
        net = np.bincount(line_order, weights=amount, minlength=n_orders_all)
        log.redemptions.add(
            buyer=buyers.code[order_row[red]],
            offer=order_offer[red],
            week=np.full(len(red), week),
            ts=checkout_ts[red] + STEP_S,
            order=order_id[red],
            amount=np.round(net[red], 2),
        )
    return np.bincount(order_row, minlength=n) > 0


def _sample_lines(
    catalog: Catalog,
    buyers: Buyers,
    rows: np.ndarray,
    seller: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Items of order lines bought from `seller`: a staple at that seller or a taste pick."""
    n_sty = catalog.n_styles
    bucket_w = buyers.bucket_weights(catalog, rows, seller)
    staples = buyers.staples[rows]
    staple_w = (catalog.seller[staples] == seller[:, None]) * (buyers.habit[rows, None] / N_STAPLES)
    choice = _sample_rows(np.concatenate([bucket_w, staple_w], axis=1), rng)
    n_buckets = bucket_w.shape[1]
    is_staple = choice >= n_buckets
    c, st = np.divmod(np.minimum(choice, n_buckets - 1), n_sty)
    start = catalog.sub_range[c, st, seller, 0]
    end = catalog.sub_range[c, st, seller, 1]
    # Staple picks leave the bucket draw unused; keep its (possibly empty) range in bounds.
    start = np.minimum(start, catalog.n_items - 1)
    end = np.clip(end, start + 1, catalog.n_items)
    items = catalog.sample_in_ranges(start, end, rng.random(len(rows)))
    staple_pick = staples[np.arange(len(rows)), np.maximum(choice - n_buckets, 0)]
    return np.where(is_staple, staple_pick, items)


def _sample_scope_items(
    catalog: Catalog,
    offers: Offers,
    buyers: Buyers,
    rows: np.ndarray,
    offer: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """A scoped item per row: style by the buyer's taste, item by popularity."""
    st = _sample_rows(buyers.style_pref[rows], rng)
    c, s = offers.scope_category[offer], offers.seller[offer]
    start, end = catalog.sub_range[c, st, s, 0], catalog.sub_range[c, st, s, 1]
    return catalog.sample_in_ranges(start, end, rng.random(len(rows)))


def _week_offsets(
    buyers: Buyers, rows: np.ndarray, week: int, rng: np.random.Generator, margin_s: int
) -> np.ndarray:
    """Seconds into the week; in a buyer's join week, after their first visit."""
    lo = np.where(buyers.join_week[rows] == week, buyers.join_offset_s[rows], 0)
    hi = WEEK_S - margin_s
    lo = np.minimum(lo, hi - 1)
    return (lo + rng.random(len(rows)) * (hi - lo)).astype(np.int64)


def _simulate_browsing(
    catalog: Catalog,
    buyers: Buyers,
    week: int,
    week_s: int,
    rng: np.random.Generator,
    log: ChunkLog,
) -> None:
    """Sessions without an order: searches, views, carts left behind, abandoned checkouts."""
    n = len(buyers)
    active = buyers.stage >= 0
    stage = np.maximum(buyers.stage, 0)
    n_sess = rng.poisson(np.where(active, BROWSE_RATE[stage] * buyers.activity, 0.0))
    sess_row = np.repeat(np.arange(n), n_sess)
    if len(sess_row) == 0:
        return
    n_sessions = len(sess_row)
    sess_stage = stage[sess_row]
    start = week_s + _week_offsets(buyers, sess_row, week, rng, margin_s=3600)
    session_id = (buyers.code[sess_row] * 100 + week) * 1000 + 500 + np.arange(n_sessions) % 500
    session_id = session_id * 10 + 2
    has_search = rng.random(n_sessions) < 0.3
    n_views = rng.geometric(0.5, size=n_sessions)
    view_sess = np.repeat(np.arange(n_sessions), n_views)
    view_pos = np.arange(len(view_sess)) - np.repeat(np.cumsum(n_views) - n_views, n_views)
    view_rows = sess_row[view_sess]
    from_staples = rng.random(len(view_sess)) < buyers.habit[view_rows]
    staple = buyers.staples[view_rows, rng.integers(0, N_STAPLES, size=len(view_sess))]
    taste = sample_taste_items(
        catalog, buyers.cat_pref[view_rows], buyers.style_pref[view_rows], rng
    )
    view_item = np.where(from_staples, staple, taste)
    view_ts = start[view_sess] + (view_pos + has_search[view_sess]) * STEP_S
    carted = rng.random(n_sessions) < CART_PROB[sess_stage]
    removed = carted & (rng.random(n_sessions) < 0.2)
    checkout = carted & ~removed & (rng.random(n_sessions) < ABANDON_AT_CHECKOUT[sess_stage])
    first_item = view_item[np.cumsum(n_views) - n_views]
    after_views = start + (n_views + has_search) * STEP_S

    def add(
        mask: np.ndarray,
        etype: int,
        items: np.ndarray,
        ts: np.ndarray,
        sess: np.ndarray,
        rows: np.ndarray,
    ) -> None:
        k = int(mask.sum())
        log.events.add(
            buyer=buyers.code[rows[mask]],
            item=items[mask],
            etype=np.full(k, etype),
            ts=ts[mask],
            session=sess[mask],
            order=np.full(k, -1),
            qty=np.full(k, -1),
            amount=np.full(k, np.nan),
        )

    no_item = np.full(n_sessions, -1)
    add(has_search, SEARCH, no_item, start, session_id, sess_row)
    add(np.ones(len(view_sess), bool), VIEW, view_item, view_ts, session_id[view_sess], view_rows)
    add(carted, ADD, first_item, after_views, session_id, sess_row)
    add(removed, REMOVE, first_item, after_views + STEP_S, session_id, sess_row)
    add(checkout, CHECKOUT, no_item, after_views + 2 * STEP_S, session_id, sess_row)


def _advance_stages(buyers: Buyers, ordered: np.ndarray, rng: np.random.Generator) -> None:
    """Move every active buyer to next week's stage."""
    rows = np.flatnonzero(buyers.stage >= 0)
    stage = buyers.stage[rows]
    probs = np.where(ordered[rows, None], TRANSITION_ORDER[stage], TRANSITION_NO_ORDER[stage])
    buyers.stage[rows] = _sample_rows(probs, rng)
