"""The bandit policies, for the Gymnasium side: they live in :mod:`trl_lead.policies` (numpy only), as part of LEAD."""

from trl_lead.policies import (
    POLICIES,
    UCB1,
    DiscountedUCB,
    EpsilonGreedy,
    Exp3,
    Exp3S,
    Greedy,
    Policy,
    SlidingWindowUCB,
    ThompsonSampling,
    Uniform,
    make_policy,
)

__all__ = [
    "POLICIES",
    "DiscountedUCB",
    "EpsilonGreedy",
    "Exp3",
    "Exp3S",
    "Greedy",
    "Policy",
    "SlidingWindowUCB",
    "ThompsonSampling",
    "UCB1",
    "Uniform",
    "make_policy",
]
