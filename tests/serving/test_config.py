"""The serve config: the shipped file loads, unknown keys are named, keys stay hashed."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import ConfigError
from serving.auth import hash_key
from serving.config import ServeConfig

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
