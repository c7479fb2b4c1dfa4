"""Synthetic datasets in the shapes real sources bring, each with its ground truth.

`recsys data synth --profile NAME` writes one of them (contract tables plus `truth/`):

- `marketplace` (the default): the multi-seller marketplace simulator of
  `recsys.data.synthetic` (docs/synthetic.md);
- `grocery-coupons`: one grocery seller's till log and weekly coupon mailers sent by
  hand (no propensities, no control group), `recsys.data.synthetic.profiles.grocery`;
- `email-experiment`: customers with one or two past purchases and two e-mail reminders
  randomized in one wave against a control third, `...profiles.email`;
- `attributes-experiment`: customers known by attributes alone, one offer randomized
  50/50 over two thirds of them, the rest to be decided for, `...profiles.attributes`;
- `tiny`: a marketplace of a few hundred buyers, for smoke tests (seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

PROFILES: tuple[str, ...] = (
    "marketplace",
    "grocery-coupons",
    "email-experiment",
    "attributes-experiment",
    "tiny",
)
TINY = {"buyers": 300, "weeks": 12, "sellers": 2, "categories": 4, "items_per_bucket": 2}
"""The `tiny` profile: the marketplace simulator at a smoke-test size."""


def profile_config(profile: str, fields: dict[str, Any]) -> Any:
    """The typed config of `profile` from plain fields (a `ConfigError` names a bad one)."""
    if profile in ("marketplace", "tiny"):
        from recsys.data.synthetic.params import SyntheticConfig

        base = dict(TINY) if profile == "tiny" else {}
        return SyntheticConfig.from_dict({**base, **fields}, source=f"profile {profile}")
    config_class = _profile(profile)[0]
    return config_class.from_dict(fields, source=f"profile {profile}")


def synthesize(
    profile: str,
    out: str | Path,
    config: Any,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """Write `profile`'s dataset with `config` (from `profile_config`) under `out`;
    returns its report (`format()` describes what was written)."""
    if profile in ("marketplace", "tiny"):
        from recsys.data.synthetic.generate import generate

        return generate(config, out, overwrite=overwrite, progress=progress)
    return _profile(profile)[1](config, str(out), overwrite=overwrite)


def _profile(profile: str) -> tuple[type[Any], Callable[..., Any]]:
    if profile == "grocery-coupons":
        from recsys.data.synthetic.profiles.grocery import GroceryConfig, generate_grocery

        return GroceryConfig, generate_grocery
    if profile == "email-experiment":
        from recsys.data.synthetic.profiles.email import EmailConfig, generate_email

        return EmailConfig, generate_email
    if profile == "attributes-experiment":
        from recsys.data.synthetic.profiles.attributes import (
            AttributesConfig,
            generate_attributes,
        )

        return AttributesConfig, generate_attributes
    raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
