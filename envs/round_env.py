"""What the round environments (``ProxyTraining``, ``LiveTraining``) share: one LEAD round per step.

Their spaces, the check of an action, the observation built from the round selector and the info taken from a
round's record are the same, so they are written here once: :class:`RoundEnv` is the base of both, and
:class:`ActionPolicy` hands the env's action to the selector as if a bandit policy had chosen it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["IDU_BOUND", "ActionPolicy", "RoundEnv"]

IDU_BOUND = 100.0  # mean IDU in the observation is clipped to +-IDU_BOUND (check_env wants finite Box bounds)


class ActionPolicy:
    """Adapter that hands the env's action to ``RoundSelector`` as if a bandit policy had chosen it.

    ``select`` returns the action (single mode); ``probabilities`` returns the action's arm weights, masked and
    normalised (mixture mode; a one-hot vector in single mode). ``normalizes_rewards = True`` makes the selector pass
    the raw reward (the policy outside the env sees the env's reward), and ``update`` does nothing.
    """

    normalizes_rewards = True

    def __init__(self, num_arms: int, mixture: bool = False) -> None:
        self.num_arms = int(num_arms)
        self.mixture = mixture
        self.action: Any = None

    def reset(self, num_arms: int, seed: int | None = None) -> None:
        self.num_arms = int(num_arms)
        self.action = None

    def select(self, mask: np.ndarray | None = None) -> int:
        if self.mixture:
            raise RuntimeError("ActionPolicy.select is not used in mixture mode")
        return int(self.action)

    def probabilities(self, mask: np.ndarray | None = None) -> np.ndarray:
        allowed = np.ones(self.num_arms, bool) if mask is None else np.asarray(mask, bool)
        if not self.mixture:
            p = np.zeros(self.num_arms)
            p[int(self.action)] = 1.0
            return p
        weights = np.clip(np.nan_to_num(np.asarray(self.action, np.float64), nan=0.0), 0.0, None) * allowed
        if weights.sum() <= 0:  # nothing on an allowed arm: uniform over the allowed arms
            weights = allowed.astype(np.float64)
        return weights / weights.sum()

    def update(self, arm: int, reward: float) -> None:
        pass

    def state_dict(self) -> dict:
        return {"action": None if self.action is None else np.asarray(self.action).tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.action = state["action"]


class RoundEnv(gym.Env):
    """Base of the environments whose step is one LEAD round over ``num_clusters`` clusters.

    Action space: ``Discrete(K)`` (single mode) or ``Box(0, 1, (K,), float32)`` arm weights (mixture mode).
    Observation space: ``Box(float32, (2K,))``, per cluster the mean IDU of its observed samples (NaN -> 0, clipped
    to +-``IDU_BOUND``), then per cluster the fraction of its samples still eligible. Subclasses call
    :meth:`_make_spaces` in ``__init__``.
    """

    metadata: dict[str, Any] = {"render_modes": []}
    num_clusters: int
    mixture: bool

    def _make_spaces(self) -> None:
        k = self.num_clusters
        self.action_space = spaces.Box(0.0, 1.0, (k,), np.float32) if self.mixture else spaces.Discrete(k)
        low = np.concatenate([np.full(k, -IDU_BOUND), np.zeros(k)]).astype(np.float32)
        high = np.concatenate([np.full(k, IDU_BOUND), np.ones(k)]).astype(np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)

    def _checked_action(self, action: Any, mask: np.ndarray) -> Any:
        """The action as the selector takes it (weights, or a cluster); a masked cluster is a ``ValueError``."""
        if self.mixture:
            action = np.asarray(action, dtype=np.float64).reshape(-1)
            if action.shape != (self.num_clusters,):
                raise ValueError(
                    f"A mixture action has one weight per cluster ({self.num_clusters}), got {action.shape}."
                )
            return action
        action = int(action)
        if not 0 <= action < self.num_clusters:
            raise ValueError(f"action {action} is not in Discrete({self.num_clusters}).")
        if not mask[action]:
            raise ValueError(
                f"Cluster {action} has no eligible sample (info['action_mask'] is False there); choose an "
                "allowed cluster, e.g. pass the mask to the policy's select(mask)."
            )
        return action

    def _observation_of(self, selector: Any) -> np.ndarray:
        """Per cluster the mean IDU (NaN -> 0, clipped), then the fraction of its samples still eligible."""
        k, cluster = self.num_clusters, selector.state.cluster
        idu = np.clip(np.nan_to_num(selector.cluster_mean_idu(), nan=0.0), -IDU_BOUND, IDU_BOUND)
        sizes = np.maximum(np.bincount(cluster, minlength=k), 1)
        eligible = np.bincount(cluster[selector.eligible()], minlength=k) / sizes
        return np.concatenate([idu, eligible]).astype(np.float32)

    @staticmethod
    def _record_info(record: dict[str, Any]) -> dict[str, Any]:
        """The info keys taken from a round's record."""
        cluster = record["cluster"]
        return {
            "round": int(record["round"]),
            "cluster": list(cluster) if isinstance(cluster, list) else int(cluster),
            "selected": int(record["selected"]),
            "filled": int(record["filled"]),
            "cluster_rewards": dict(record["cluster_rewards"]),
            "rewarded": list(record["rewarded"]),  # the arms whose reward was measured (the others get none)
        }
