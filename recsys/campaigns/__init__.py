"""Campaign planning for sellers: audiences x offers within a budget, with the figures
a seller decides on (see :mod:`recsys.campaigns.planner`)."""

from recsys.campaigns.audiences import (
    AUDIENCE_KINDS,
    AudienceKind,
    stage_audiences,
    taste_audiences,
)
from recsys.campaigns.planner import (
    ALTERNATIVE_SCHEMA,
    CAMPAIGN_SCHEMA,
    GAIN_SCHEMA,
    TARGET_SCHEMA,
    CampaignPlan,
    PlannerConfig,
    plan_campaigns,
)

__all__ = [
    "ALTERNATIVE_SCHEMA",
    "AUDIENCE_KINDS",
    "CAMPAIGN_SCHEMA",
    "GAIN_SCHEMA",
    "TARGET_SCHEMA",
    "AudienceKind",
    "CampaignPlan",
    "PlannerConfig",
    "plan_campaigns",
    "stage_audiences",
    "taste_audiences",
]
