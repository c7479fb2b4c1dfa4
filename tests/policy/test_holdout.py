"""The holdout's assignment and joint propensities, on hand-made ids with known answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from recsys.config import ConfigError
from recsys.policy.holdout import (
    HoldoutConfig,
    assign_control,
    holdout_draws,
    holdout_period,
    joint_propensity,
)

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
BUYERS = [f"b{i:05d}" for i in range(20_000)]


def test_observed_share_is_the_configured_one_within_binomial_tolerance() -> None:
    config = HoldoutConfig(share=0.05)
    control, share = assign_control(BUYERS, ["s1"] * len(BUYERS), NOW, config)
    n = len(BUYERS)
    sd = np.sqrt(0.05 * 0.95 / n)
    assert abs(control.mean() - 0.05) < 4 * sd, control.mean()
    assert np.all(share == 0.05)


def test_per_seller_shares_override_the_default() -> None:
    config = HoldoutConfig(share=0.05, sellers={"big": 0.5, "off": 0.0})
    n = 4000
    for seller, want in (("big", 0.5), ("off", 0.0), ("other", 0.05)):
        control, share = assign_control(BUYERS[:n], [seller] * n, NOW, config)
        assert np.all(share == want)
        assert abs(control.mean() - want) <= 4 * np.sqrt(want * (1 - want) / n)
    off, _ = assign_control(BUYERS[:n], ["off"] * n, NOW, config)
    assert not off.any()


def test_assignment_is_stable_within_a_period_and_redrawn_after() -> None:
    config = HoldoutConfig(share=0.2, period_days=28)
    sellers = ["s1"] * 5000
    first, _ = assign_control(BUYERS[:5000], sellers, NOW, config)
    again, _ = assign_control(BUYERS[:5000], sellers, NOW, config)
    start = datetime.fromtimestamp(holdout_period(NOW, 28) * 28 * 86400, UTC)
    same_period, _ = assign_control(BUYERS[:5000], sellers, start + timedelta(days=27.9), config)
    next_period, _ = assign_control(BUYERS[:5000], sellers, start + timedelta(days=28), config)
    assert np.array_equal(first, again) and np.array_equal(first, same_period)
    # A new period redraws: about 2 * 0.2 * 0.8 = 32 % of buyers switch arms.
    assert 0.25 < (first != next_period).mean() < 0.39


def test_the_draw_depends_on_seller_and_salt_and_order_does_not_matter() -> None:
    buyers = BUYERS[:2000]
    a = holdout_draws(buyers, ["s1"] * 2000, 7, "salt")
    assert np.array_equal(a[::-1], holdout_draws(buyers[::-1], ["s1"] * 2000, 7, "salt"))
    b = holdout_draws(buyers, ["s2"] * 2000, 7, "salt")
    c = holdout_draws(buyers, ["s1"] * 2000, 7, "pepper")
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.1 and abs(np.corrcoef(a, c)[0, 1]) < 0.1
    assert a.min() >= 0 and a.max() < 1
    # Known value (blake2b-64 of "x|0|s1|b1" / 2**64): fixed across processes and versions.
    assert holdout_draws(["b1"], ["s1"], 0, "x")[0] == pytest.approx(0.3372772732328986)


def test_joint_propensities_sum_to_one_over_a_units_actions() -> None:
    # A unit with options nothing, o1, o2 under the treated policy: p = (0.2, 0.5, 0.3).
    share = 0.1
    p = {"nothing": 0.2, "o1": 0.5, "o2": 0.3}
    logged = joint_propensity(
        np.full(3, share),
        np.array([True, False, False]),
        np.array([p["nothing"], p["o1"], p["o2"]]),
        np.full(3, p["nothing"]),
    )
    assert logged.tolist() == pytest.approx([0.1 + 0.9 * 0.2, 0.9 * 0.5, 0.9 * 0.3])
    assert logged.sum() == pytest.approx(1.0)
    # A greedy policy that would give o1: control logs exactly the share.
    assert joint_propensity(
        np.array([share]), np.array([True]), np.array([0.0]), np.array([0.0])
    ).tolist() == pytest.approx([0.1])


def test_joint_propensity_matches_a_simulated_two_stage_draw() -> None:
    rng = np.random.default_rng(0)
    share, p = 0.3, np.array([0.25, 0.6, 0.15])  # nothing, o1, o2
    n = 200_000
    held = rng.random(n) < share
    action = np.where(held, 0, rng.choice(3, size=n, p=p))
    freq = np.bincount(action, minlength=3) / n
    want = joint_propensity(np.full(3, share), np.array([True, False, False]), p, np.full(3, p[0]))
    assert np.allclose(freq, want, atol=4 * np.sqrt(0.25 / n))


def test_config_rejects_unknown_keys_and_bad_shares() -> None:
    with pytest.raises(ConfigError, match="shar"):
        HoldoutConfig.from_dict({"shar": 0.1})
    with pytest.raises(ConfigError):
        HoldoutConfig.from_dict({"share": 1.0})
    with pytest.raises(ConfigError, match="sellers"):
        HoldoutConfig.from_dict({"sellers": {"s1": 1.5}})
    assert not HoldoutConfig(share=0.0).enabled
    assert HoldoutConfig(share=0.0, sellers={"s1": 0.1}).enabled
    assert HoldoutConfig.from_dict(HoldoutConfig().to_dict()) == HoldoutConfig()
