"""Tests of the decision layer (recsys.policy)."""
