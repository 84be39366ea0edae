"""LEAD's cluster rewards: the rules (`lead_reward`), their scaling (`lead_reward_scaling`), and how they reach the
policy (numpy only).

A rule is a pure function of what one round measured on one cluster (`ClusterVisit`): the cluster's reward for the
round, or None where it has nothing to measure (no reward, rather than a reward of 0). docs/configuration.md lists
the rules; docs/design.md says which the paper uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClusterVisit:
    """What one round measured on the samples of one cluster it trained (arrays in the round's order)."""

    losses: np.ndarray  # the IU recorded this round
    idu_before: np.ndarray  # IDU before the round (NaN: never observed)
    idu_after: np.ndarray  # IDU after the round's update
    first_iu: np.ndarray  # IU at each sample's first training (this round's for a first visit)
    first_time: np.ndarray  # bool: never trained before this round
    initial: np.ndarray | None  # the base model's loss (initial score) of each sample; None without initial scores
    last_first_visit_iu: float  # mean IU of the cluster's never-trained samples at its last visit (NaN: none yet)


def idu_drop(visit: ClusterVisit) -> float | None:
    """The paper's: the mean IDU drop of the round's samples that had an IDU before it."""
    known = np.isfinite(visit.idu_before)
    return float(np.mean(visit.idu_before[known] - visit.idu_after[known])) if known.any() else None


def mean_idu(visit: ClusterVisit) -> float | None:
    """The mean IDU of the round's samples after it."""
    return float(np.mean(visit.idu_after))


def loss_drop(visit: ClusterVisit) -> float | None:
    """The mean IU drop since each sample's first visit (first visits contribute 0: one measurement)."""
    return float(np.mean(visit.first_iu - visit.losses))


def first_visit(visit: ClusterVisit) -> float | None:
    """The drop, since the cluster's last round (or from the initial scores), of the mean IU of its never-trained
    samples. Their IU is measured before any update on them, a held-out estimate. Once the budget is spent there are
    none: no measurement, so no reward."""
    if not visit.first_time.any():
        return None
    now = float(np.mean(visit.losses[visit.first_time]))
    before = visit.last_first_visit_iu
    if math.isnan(before) and visit.initial is not None:
        before = float(np.mean(visit.initial[visit.first_time]))
    return None if math.isnan(before) else float(before - now)


def blend(visit: ClusterVisit) -> float | None:
    """`first_visit` while the round has never-trained samples of the cluster; once it has none (the budget is
    spent), the mean loss drop of its revisited samples since their first visit, which stays measurable."""
    reward = first_visit(visit)
    revisited = ~visit.first_time
    if reward is None and revisited.any():
        reward = float(np.mean(visit.first_iu[revisited] - visit.losses[revisited]))
    return reward


def heldout_gain(visit: ClusterVisit) -> float | None:
    """Paired on each never-trained sample: its initial score minus its loss now, before any update on it.

    Each sample's own difficulty cancels, so a few samples suffice; a cluster whose unseen samples training does not
    help (random answers) earns about 0, one it hurts (wrong answers to prompts other clusters teach) earns less.
    None without initial scores or once the budget is spent (no unseen sample left)."""
    if visit.initial is None or not visit.first_time.any():
        return None
    gain = visit.initial[visit.first_time].astype(np.float64) - visit.losses[visit.first_time]
    gain = gain[np.isfinite(gain)]
    return float(np.mean(gain)) if len(gain) else None


REWARD_RULES: dict[str, Callable[[ClusterVisit], float | None]] = {
    "idu_drop": idu_drop,
    "first_visit": first_visit,
    "mean_idu": mean_idu,
    "loss_drop": loss_drop,
    "blend": blend,
    "heldout_gain": heldout_gain,
}


@dataclass
class RewardNormalizer:
    """Maps rewards to [-1, 1] by the running min/max of all rewards seen so far (as the paper's EXP3-S code).

    The selector's normaliser, and `envs.benchmark`'s with `--normalize-rewards`."""

    low: float = math.inf
    high: float = -math.inf

    def __call__(self, reward: float) -> float:
        self.low, self.high = min(self.low, reward), max(self.high, reward)
        if self.high - self.low < 1e-12:
            return 0.0
        return 2.0 * (reward - self.low) / (self.high - self.low) - 1.0

    def state_dict(self) -> list[float]:
        return [self.low, self.high]

    def load_state_dict(self, state: list[float]) -> None:
        self.low, self.high = state


@dataclass
class QuantileNormalizer:
    """Maps rewards to [-1, 1] by quantiles of the recent reward history (Graves et al. 2017, "Automated curriculum
    learning for neural networks", ICML, Sec. 3.1): -1 below the 20th percentile, 1 above the 80th, linear between.

    One outlier cannot squash every later reward into a sliver of [-1, 1], as it does under the running min/max. The
    history (the current reward included) keeps the last `window` rewards."""

    window: int = 1000
    low_quantile: float = 0.2
    high_quantile: float = 0.8
    history: list[float] = field(default_factory=list)

    def __call__(self, reward: float) -> float:
        self.history = [*self.history[-(self.window - 1) :], float(reward)]
        low, high = np.quantile(self.history, [self.low_quantile, self.high_quantile])
        if high - low < 1e-12:
            return 0.0
        return float(np.clip(2.0 * (reward - low) / (high - low) - 1.0, -1.0, 1.0))

    def state_dict(self) -> list[float]:
        return list(self.history)

    def load_state_dict(self, state: list[float]) -> None:
        self.history = [float(x) for x in state]


def give_rewards(
    policy: Any,
    rewards: dict[int, float],
    probabilities: list[float] | np.ndarray | None,
    normalizer: RewardNormalizer | QuantileNormalizer | None,
    mixture: bool,
) -> None:
    """Give a round's measured rewards (`{arm: reward}`) to the policy, as the trainer does.

    Each reward is normalised by `normalizer` (None: passed as it is) unless the policy normalises them itself. A
    mixture round's arms were all drawn from one distribution, `probabilities` (`round_distribution`): they go to the
    policy together with it (`update_mixture`, where it has one), so importance weights divide by the probabilities
    the round was drawn from; otherwise `update(arm, reward)` once per arm. An arm whose reward could not be measured
    is not in `rewards`.
    """
    if normalizer is not None and not getattr(policy, "normalizes_rewards", False):
        rewards = {arm: normalizer(reward) for arm, reward in rewards.items()}
    update_mixture = getattr(policy, "update_mixture", None)
    if mixture and callable(update_mixture):
        if rewards:
            update_mixture(rewards, np.asarray(probabilities, dtype=np.float64))
        return
    for arm, reward in rewards.items():
        policy.update(arm, reward)
