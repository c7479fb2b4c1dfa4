"""The serve config: the shipped file loads, unknown keys are named, keys stay hashed."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import ConfigError
from recsys.policy import PolicyConfig
from serving.auth import hash_key
from serving.config import ExplorationConfig, ServeConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shipped_serve_configs_load() -> None:
    paths = sorted(CONFIGS.glob("serve*.yaml"))
    assert paths
    for path in paths:
        config = ServeConfig.from_yaml(path)
        assert config.model_uri == "models:/promo-ranker@champion"
        assert ServeConfig.from_dict(config.to_dict()) == config


def test_unknown_serve_key_is_named() -> None:
    with pytest.raises(ConfigError, match="poll_secs"):
        ServeConfig.from_dict({"poll_secs": 3})


def test_api_keys_are_hashes_not_raw_keys() -> None:
    entry = {"key_hash": hash_key("a-very-secret-key-0000"), "seller_id": "s1"}
    assert ServeConfig.from_dict({"api_keys": [entry]}).api_keys[0].seller_id == "s1"
    with pytest.raises(ConfigError) as error:
        ServeConfig.from_dict({"api_keys": [{"key_hash": "plain-secret-key", "seller_id": "s1"}]})
    assert "api_keys.0.key_hash" in str(error.value)
    assert "plain-secret-key" not in str(error.value)  # a pasted raw key is not echoed


def test_the_api_explores_on_top_of_the_model_policy_by_default() -> None:
    model = PolicyConfig(margin_default=0.3, exploration="none")
    served = ServeConfig().serving_policy(model)
    assert (served.exploration, served.epsilon) == ("epsilon", 0.05)
    assert served.margin_default == 0.3  # the rest is the model's own

    greedy = ServeConfig.from_dict({"exploration": {"mode": "none"}}).serving_policy(model)
    assert greedy.exploration == "none"

    own = PolicyConfig(margin_default=0.5)
    override = ServeConfig(
        policy=own, exploration=ExplorationConfig(mode="softmax", temperature=2.0)
    )
    served = override.serving_policy(model)
    assert (served.margin_default, served.exploration, served.temperature) == (0.5, "softmax", 2.0)
