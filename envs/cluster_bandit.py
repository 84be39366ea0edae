"""``trl_lead/ClusterBandit-v0``: a K-armed bandit standing in for LEAD's choice of cluster.

It answers "which policy should pick the clusters?" in milliseconds for reward processes whose truth is
known (stationary, drifting, switching, adversarial), so regret can be measured exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

REWARD_LAWS = ("bernoulli", "gaussian")
DRIFTS = (None, "linear", "sinusoidal")
CHANGE_MODES = ("permute", "redraw", "given")


class ClusterBandit(gym.Env):
    """K-armed bandit with known expected rewards, for measuring the regret of cluster-selection policies.

    ## Description

    Each arm stands for one cluster of LEAD; pulling it returns a noisy reward. The expected reward of
    every arm is known to the environment at every step, so ``info["regret"]`` is exact (pseudo-regret:
    best expected reward minus the chosen arm's expected reward), not estimated from samples. By default
    the arms are stationary; drift, abrupt change points and a fixed adversarial reward table model the
    way LEAD's rewards move as the model trains.

    ## Action Space

    ``Discrete(K)``: the arm (cluster) to pull.

    ## Observation Space

    ``Discrete(max_steps + 1)``: the number of steps taken so far (0 after ``reset``). A bandit has no
    state to observe; the step counter is the one thing that a time-dependent policy could use and it
    costs nothing. Agents see their rewards through ``step`` as usual.

    ## Rewards

    | ``reward_law`` / option | reward of arm a at step t                                            |
    |-------------------------|----------------------------------------------------------------------|
    | ``"bernoulli"``         | 1.0 with probability mu_a(t), else 0.0 (mu clipped to [0, 1])        |
    | ``"gaussian"``          | mu_a(t) + N(0, ``noise_std``^2)                                      |
    | ``reward_table``        | ``reward_table[t % len(reward_table), a]`` exactly (no noise)        |

    mu_a(t) = base_a + drift_a(t). ``drift="linear"``: drift_a(t) = d_a * t / max_steps with d_a drawn
    uniformly in [-drift_amplitude, drift_amplitude] at reset. ``drift="sinusoidal"``:
    drift_a(t) = drift_amplitude * sin(2 pi t / drift_period + 2 pi a / K), so the best arm rotates.
    At each step in ``change_points`` the base means change: ``"permute"`` shifts them cyclically by a
    random non-zero offset (every arm takes another arm's mean, so the best arm always moves when the
    means differ), ``"redraw"`` draws new ones uniformly from ``mean_range``, ``"given"`` (implied by
    ``change_means``) sets the i-th row of ``change_means`` at the i-th change point.

    ## Starting State

    Step 0. Base means are ``means`` if given, otherwise drawn uniformly from ``mean_range`` using
    ``self.np_random``; drift slopes are drawn too. ``reset(seed=s)`` makes the whole trajectory (means,
    change points, rewards) a function of s and the actions.

    ## Episode End

    Never terminates; truncated after ``max_steps`` steps.

    ## Info

    ``reset`` and every ``step`` return a fresh dict with ``expected_rewards`` (float64 array of length K:
    mu(t) of every arm at that step; at ``reset``, those of the first step) and, from ``step``, ``regret``
    (``max(expected_rewards) - expected_rewards[action]``).

    ## Arguments

    | argument            | default     | meaning                                                        |
    |---------------------|-------------|----------------------------------------------------------------|
    | ``num_arms``        | 5           | K (may be omitted when ``means`` or ``reward_table`` is given) |
    | ``reward_law``      | "bernoulli" | "bernoulli" or "gaussian"                                      |
    | ``means``           | None        | base expected rewards; None draws them at reset                |
    | ``mean_range``      | (0.0, 1.0)  | range the drawn means are uniform in                           |
    | ``noise_std``       | 0.5         | standard deviation of the Gaussian noise                       |
    | ``drift``           | None        | None, "linear" or "sinusoidal"                                 |
    | ``drift_amplitude`` | 0.2         | size of the drift (see Rewards)                                |
    | ``drift_period``    | 500         | period in steps of the sinusoidal drift                        |
    | ``change_points``   | ()          | steps (0-based) from which new base means apply                |
    | ``change_mode``     | "permute"   | "permute", "redraw" or "given"                                 |
    | ``change_means``    | None        | (len(change_points), K) means set at each change point         |
    | ``reward_table``    | None        | (n, K) array of rewards, cycled; adversarial sequences         |
    | ``max_steps``       | 1000        | episode length (truncation)                                    |

    ## Example

    >>> import gymnasium, envs
    >>> env = gymnasium.make("trl_lead/ClusterBandit-v0", means=[0.2, 0.5, 0.8], max_steps=100)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(2)
    >>> float(info["regret"])
    0.0
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        num_arms: int | None = None,
        reward_law: str = "bernoulli",
        means: Sequence[float] | None = None,
        mean_range: tuple[float, float] = (0.0, 1.0),
        noise_std: float = 0.5,
        drift: str | None = None,
        drift_amplitude: float = 0.2,
        drift_period: int = 500,
        change_points: Sequence[int] = (),
        change_mode: str = "permute",
        change_means: Sequence[Sequence[float]] | None = None,
        reward_table: Any = None,
        max_steps: int = 1000,
        render_mode: str | None = None,
    ) -> None:
        _check_choices(reward_law, drift, change_mode, max_steps, render_mode)
        self._table = _reward_table(reward_table, drift, change_points, means)
        self._means = _given_means(means, reward_law)
        sizes = {"num_arms": num_arms, "reward_table": None, "means": None}
        if self._table is not None:
            sizes["reward_table"] = self._table.shape[1]
        if self._means is not None:
            sizes["means"] = len(self._means)
        given = {k: int(v) for k, v in sizes.items() if v is not None}
        if len(set(given.values())) > 1:
            raise ValueError(f"inconsistent number of arms: {given}")
        self.num_arms = next(iter(given.values()), 5)
        if self.num_arms < 1:
            raise ValueError(f"num_arms must be >= 1, got {self.num_arms}")
        if change_mode == "permute" and len(change_points) and self.num_arms < 2:
            raise ValueError("change_mode='permute' needs at least 2 arms")
        self._change_means = _given_change_means(change_means, change_points, self.num_arms, reward_law)
        if change_means is not None:
            change_mode = "given"
        elif change_mode == "given":
            raise ValueError("change_mode='given' needs change_means (one row of K means per change point)")
        low, high = float(mean_range[0]), float(mean_range[1])
        if not low <= high:
            raise ValueError(f"mean_range must be (low, high) with low <= high, got {mean_range}")
        if reward_law == "bernoulli" and not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"Bernoulli mean_range must lie in [0, 1], got {mean_range}")
        self.reward_law = reward_law
        self.mean_range = (low, high)
        self.noise_std = float(noise_std)
        self.drift = drift
        self.drift_amplitude = float(drift_amplitude)
        self.drift_period = int(drift_period)
        self.change_points = frozenset(int(c) for c in change_points)
        self.change_mode = change_mode
        self.max_steps = int(max_steps)
        self.render_mode = render_mode

        self.action_space = spaces.Discrete(self.num_arms)
        self.observation_space = spaces.Discrete(self.max_steps + 1)
        self._bernoulli = reward_law == "bernoulli"
        self._t = 0
        self._base = np.zeros(self.num_arms)
        self._slopes = np.zeros(self.num_arms)
        self._phases = 2.0 * np.pi * np.arange(self.num_arms) / self.num_arms

    # ------------------------------------------------------------------ dynamics
    def _expected(self, t: int) -> np.ndarray:
        """Fresh array of every arm's expected reward at step t."""
        if self._table is not None:
            return self._table[t % len(self._table)].copy()
        if self.drift is None:
            return self._base.copy()
        if self.drift == "linear":
            mu = self._base + self._slopes * (t / self.max_steps)
        else:
            mu = self._base + self.drift_amplitude * np.sin(self._phases + 2.0 * np.pi * t / self.drift_period)
        if self._bernoulli:
            np.clip(mu, 0.0, 1.0, out=mu)
        return mu

    def _change(self, t: int) -> None:
        if self.change_mode == "given":
            self._base = self._change_means[t].copy()
        elif self.change_mode == "permute":
            self._base = np.roll(self._base, int(self.np_random.integers(1, self.num_arms)))
        else:
            self._base = self.np_random.uniform(*self.mean_range, size=self.num_arms)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.int64, dict]:
        super().reset(seed=seed)
        self._t = 0
        if self._means is not None:
            self._base = self._means.copy()
        else:
            self._base = self.np_random.uniform(*self.mean_range, size=self.num_arms)
        if self.drift == "linear":
            self._slopes = self.np_random.uniform(-self.drift_amplitude, self.drift_amplitude, size=self.num_arms)
        if 0 in self.change_points:
            self._change(0)
        return np.int64(0), {"expected_rewards": self._expected(0)}

    def step(self, action: Any) -> tuple[np.int64, float, bool, bool, dict]:
        a = int(action)
        if not 0 <= a < self.num_arms:
            raise ValueError(f"action {action!r} is not in Discrete({self.num_arms})")
        t = self._t
        if t and t in self.change_points:  # a change at step 0 was applied by reset
            self._change(t)
        mu = self._expected(t)
        if self._table is not None:
            reward = float(mu[a])
        elif self._bernoulli:
            reward = 1.0 if self.np_random.random() < mu[a] else 0.0
        else:
            reward = float(mu[a] + self.noise_std * self.np_random.standard_normal())
        self._t = t + 1
        info = {"expected_rewards": mu, "regret": float(mu[mu.argmax()] - mu[a])}
        return np.int64(min(self._t, self.max_steps)), reward, False, self._t >= self.max_steps, info


def _check_choices(reward_law: str, drift: str | None, change_mode: str, max_steps: int, render_mode: Any) -> None:
    """ValueError for a reward law, drift or change mode that does not exist, max_steps < 1, or a render mode."""
    if reward_law not in REWARD_LAWS:
        raise ValueError(f"reward_law must be one of {REWARD_LAWS}, got {reward_law!r}")
    if drift not in DRIFTS:
        raise ValueError(f"drift must be one of {DRIFTS}, got {drift!r}")
    if change_mode not in CHANGE_MODES:
        raise ValueError(f"change_mode must be one of {CHANGE_MODES}, got {change_mode!r}")
    if int(max_steps) < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if render_mode is not None:
        raise ValueError("ClusterBandit has no rendering; use render_mode=None")


def _reward_table(
    reward_table: Any, drift: str | None, change_points: Sequence[int], means: Sequence[float] | None
) -> np.ndarray | None:
    """The (n, K) table of every step's expected rewards, when given (it fixes every reward)."""
    if reward_table is None:
        return None
    table = np.asarray(reward_table, dtype=np.float64)
    if table.ndim != 2 or len(table) == 0:
        raise ValueError(f"reward_table must be a non-empty (n, K) array, got shape {table.shape}")
    if drift is not None or len(change_points) or means is not None:
        raise ValueError("reward_table fixes every reward: do not also pass means, drift or change_points")
    return table


def _given_means(means: Sequence[float] | None, reward_law: str) -> np.ndarray | None:
    """The arms' given means, checked (in [0, 1] for Bernoulli rewards)."""
    if means is None:
        return None
    array = np.asarray(means, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"means must be a 1-D sequence, got shape {array.shape}")
    if reward_law == "bernoulli" and not ((array >= 0) & (array <= 1)).all():
        raise ValueError(f"Bernoulli means must lie in [0, 1], got {array.tolist()}")
    return array


def _given_change_means(
    change_means: Sequence[Sequence[float]] | None, change_points: Sequence[int], num_arms: int, reward_law: str
) -> dict[int, np.ndarray]:
    """Per change point, the K means it switches to (``change_mode="given"``); empty when not given."""
    if change_means is None:
        return {}
    table = np.asarray(change_means, dtype=np.float64)
    if table.shape != (len(change_points), num_arms):
        raise ValueError(
            f"change_means must have shape (len(change_points), K) = ({len(change_points)}, {num_arms}), "
            f"got {table.shape}"
        )
    if reward_law == "bernoulli" and not ((table >= 0) & (table <= 1)).all():
        raise ValueError("Bernoulli change_means must lie in [0, 1]")
    return {int(step): row for step, row in zip(change_points, table)}
