"""Which ranked options an answer lists after its action."""

from __future__ import annotations

import numpy as np

from serving.ranking import listed_positions


def test_others_worth_more_than_nothing_follow_the_action_up_to_k() -> None:
    # Unit 0: positions 0-3, action at 1 (explored), k = 3; unit 1: 4-5, nothing chosen;
    # unit 2: 6-8, action at 6, k = 5, position 8 worth nothing.
    starts = np.array([0, 4, 6])
    score = np.array([3.0, 2.0, 1.0, 0.5, 2.0, 1.0, 4.0, 1.0, -1.0])
    chosen = np.array([1, -1, 6])
    k = np.array([3, 3, 5])
    assert listed_positions(starts, score, chosen, k).tolist() == [0, 2, 7]
    assert listed_positions(starts, score, chosen, np.array([1, 1, 1])).tolist() == []
