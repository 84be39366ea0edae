"""The reward rules against hand-worked rounds: one pure function per `lead_reward`, each of one cluster's visit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trl_lead.rewards import REWARD_RULES, ClusterVisit
from trl_lead.settings import REWARDS

pytestmark = pytest.mark.numerics

NAN = math.nan


def visit(first_time, last_first_visit_iu=NAN, initial=(2.0, 2.5, 3.0, 4.0)) -> ClusterVisit:
    """Four samples: losses 1, 2, 3, 4 this round; the first two had an IDU of 2 and 4 before it."""
    first_time = np.asarray(first_time, bool)
    losses = np.array([1.0, 2.0, 3.0, 4.0])
    return ClusterVisit(
        losses=losses,
        idu_before=np.array([2.0, 4.0, NAN, NAN]),
        idu_after=np.array([1.5, 3.0, 3.0, 4.0], np.float32),
        first_iu=np.where(first_time, losses, [3.0, 3.0, 5.0, 5.0]).astype(np.float32),
        first_time=first_time,
        initial=None if initial is None else np.asarray(initial, np.float32),
        last_first_visit_iu=last_first_visit_iu,
    )


def test_every_reward_setting_has_its_rule():
    assert set(REWARD_RULES) == set(REWARDS)


@pytest.mark.parametrize(
    "name, round_visit, expected",
    [
        ("idu_drop", visit([0, 0, 1, 1]), ((2 - 1.5) + (4 - 3)) / 2),  # only the samples with an IDU before
        ("mean_idu", visit([0, 0, 1, 1]), (1.5 + 3 + 3 + 4) / 4),
        ("loss_drop", visit([0, 0, 1, 1]), ((3 - 1) + (3 - 2) + 0 + 0) / 4),  # first visits drop 0
        ("first_visit", visit([0, 0, 1, 1], last_first_visit_iu=5.0), 5.0 - 3.5),  # since the last visit
        ("first_visit", visit([0, 0, 1, 1]), (3.0 + 4.0) / 2 - 3.5),  # first visit of the cluster: initial scores
        ("first_visit", visit([0, 0, 1, 1], initial=None), None),  # nothing to compare with
        ("first_visit", visit([0, 0, 0, 0], last_first_visit_iu=5.0), None),  # budget spent: no measurement
        ("blend", visit([0, 0, 1, 1], last_first_visit_iu=5.0), 1.5),  # first_visit while it measures
        ("blend", visit([0, 0, 0, 0], last_first_visit_iu=5.0), ((3 - 1) + (3 - 2) + (5 - 3) + (5 - 4)) / 4),
        ("heldout_gain", visit([0, 0, 1, 1]), ((3.0 - 3) + (4.0 - 4)) / 2),  # paired on the unseen samples
        ("heldout_gain", visit([1, 1, 0, 0]), ((2.0 - 1) + (2.5 - 2)) / 2),
        ("heldout_gain", visit([1, 1, 0, 0], initial=None), None),
    ],
)
def test_reward_rules_by_hand(name, round_visit, expected):
    before = {field: np.copy(value) for field, value in vars(round_visit).items() if isinstance(value, np.ndarray)}
    reward = REWARD_RULES[name](round_visit)
    assert reward == (None if expected is None else pytest.approx(expected))
    for field, value in before.items():  # pure: the visit is left as it was
        np.testing.assert_array_equal(getattr(round_visit, field), value)
