"""EXP3 and EXP3-S in mixture rounds: one importance-weighted update per round, with the round's own probabilities.

A mixture round trains several clusters drawn together from the policy's masked distribution p. Auer et al. (2002)
update once per trial with xhat_j = r_j / p_j for each arm j played and 0 for the others:

    EXP3:   w_i <- w_i exp(gamma xhat_i / K)
    EXP3-S: w_i <- w_i exp(gamma xhat_i / K) + (e alpha / K) W,   W = sum_i w_i before the update

Broken variant these tests reject (the code before this fix): one `update(arm, reward)` per arm present, each
dividing by the current unmasked probabilities, which the previous arm's update had already changed (and EXP3-S
sharing its weight once per arm instead of once per round).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from trl_lead.policies import make_policy
from trl_lead.selection import LEADState, RoundSelector
from trl_lead.settings import SelectionSettings

pytestmark = pytest.mark.numerics

GAMMA, ALPHA = 0.3, 0.05


def hand_probabilities(w: list[float], mask: list[bool]) -> list[float]:
    """p_i = (1 - gamma) w_i / sum of allowed w + gamma / (allowed arms), 0 on masked arms."""
    total = sum(wi for wi, ok in zip(w, mask) if ok)
    allowed = sum(mask)
    return [(1 - GAMMA) * wi / total + GAMMA / allowed if ok else 0.0 for wi, ok in zip(w, mask)]


def hand_update(name: str, w: list[float], p: list[float], rewards: dict[int, float]) -> list[float]:
    k, total = len(w), sum(w)
    xhat = [rewards[i] / p[i] if i in rewards else 0.0 for i in range(k)]
    share = math.e * ALPHA / k * total if name == "exp3s" else 0.0
    return [w[i] * math.exp(GAMMA * xhat[i] / k) + share for i in range(k)]


def make(name: str, k: int):
    policy = make_policy(name, gamma=GAMMA, **({"alpha": ALPHA} if name == "exp3s" else {}))
    policy.reset(k, seed=0)
    return policy


@pytest.mark.parametrize("name", ["exp3", "exp3s"])
def test_mixture_update_matches_the_hand_worked_rule(name):
    k = 4
    policy = make(name, k)
    w = [1.0] * k
    rounds = [
        ([True, True, False, True], {0: 0.8, 3: -0.4}),
        ([True, False, True, True], {2: 1.0, 0: 0.3}),
        ([False, True, True, True], {1: -1.0, 2: 0.6, 3: 0.9}),
    ]
    for mask, rewards in rounds:
        p = policy.probabilities(np.array(mask))
        assert p == pytest.approx(hand_probabilities(w, mask), rel=1e-12)
        policy.update_mixture(rewards, p)
        w = hand_update(name, w, list(p), rewards)
        assert policy.probabilities() == pytest.approx(hand_probabilities(w, [True] * k), rel=1e-12)
    with pytest.raises(ValueError, match="probability 0"):  # a masked arm was not drawn, so it cannot be rewarded
        policy.update_mixture({0: 1.0}, policy.probabilities(np.array([False, True, True, True])))


@pytest.mark.parametrize("name", ["exp3", "exp3s"])
def test_selector_updates_mixture_rounds_with_the_masked_probabilities_they_were_drawn_from(name):
    # 3 clusters of 40; cluster 2 is at the reuse cap, so every round is drawn from p masked to clusters 0 and 1
    cluster = np.repeat([0, 1, 2], 40)
    policy = make(name, 3)
    settings = SelectionSettings(
        round_size=20, budget=120, max_reuse=2, smoothing=0.0, gradient_correction=False, round_mode="mixture",
        fine_selection="random", reward="mean_idu", sample_filter="none", split_by_size=False,
    )  # fmt: skip
    state = LEADState(cluster)
    state.set_initial_scores(np.ones(120))
    state.use_count[cluster == 2] = settings.max_reuse
    selector = RoundSelector(state, policy, settings, seed=1)

    w, low, high = [1.0, 1.0, 1.0], math.inf, -math.inf
    for loss_by_cluster in ({0: 1.5, 1: 3.25}, {0: 0.5, 1: 2.0}):
        planned = selector.plan_round()
        assert planned.arms == [0, 1]  # both clusters in the round (20 draws at p ~ 1/2 each)
        p = hand_probabilities(w, [True, True, False])
        assert planned.probabilities == pytest.approx(p, rel=1e-12)
        ids = planned.sample_ids
        record = selector.finish_round(planned, ids, np.array([loss_by_cluster[c] for c in cluster[ids]]))
        # mean_idu reward (smoothing 0: the new IDU is the loss), rescaled by the running min/max of all rewards
        rewards = {}
        for arm in planned.arms:
            raw = loss_by_cluster[arm]
            assert record["cluster_rewards"][str(arm)] == raw
            low, high = min(low, raw), max(high, raw)
            rewards[arm] = 0.0 if high == low else 2 * (raw - low) / (high - low) - 1
        w = hand_update(name, w, p, rewards)
        assert policy.probabilities() == pytest.approx(hand_probabilities(w, [True] * 3), rel=1e-12)
