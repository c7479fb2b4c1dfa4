"""The model config of the serving tests' small marketplaces.

Serving is tested on a model that issues offers: on a few hundred buyers the learned
policy rightly proves no offer pays and sends nothing (`tests/learning` checks that), which
leaves an API with nothing to rank, log or plan. These tests check serving, not that
choice, so their model ships the per-kind effect model and decides by its estimates
(`z = 0`): every mechanism downstream of a decision gets offers to work on.
"""

from __future__ import annotations

from typing import Any

from recsys.models.ranker import RankerConfig

ISSUING: dict[str, Any] = {"learning": {"ship": "kind_effects", "z": 0.0}}


def issuing_config(**sections: dict[str, Any]) -> RankerConfig:
    """`ISSUING` with other config sections (`policy={...}`, `mf={...}`) added."""
    return RankerConfig.from_dict({**ISSUING, **sections})
