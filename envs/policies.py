"""Bandit policies that pick LEAD's cluster (arm) each round, usable on any ``Discrete(K)`` env.

Every policy follows the :class:`Policy` protocol. They are plain numpy so that ``import envs`` stays
light, and they are small enough (a few numpy calls per step) to run millions of steps in benchmarks.

Conventions shared by all policies:

* ``mask`` is a boolean array of length K, True where an arm may be chosen (Gymnasium's action-mask
  convention); ``None`` allows every arm. A masked arm is never chosen; a mask that allows no arm is a
  ``ValueError``.
* Randomness comes only from ``reset(num_arms, seed)`` (``np.random.default_rng(seed)``), so a run is
  reproducible from its seed, and ``state_dict()`` carries the generator state: a policy restored from
  ``json.loads(json.dumps(p.state_dict()))`` makes exactly the same future choices.
* Rewards may be any real number. The LEAD trainer rescales rewards to [-1, 1] with their running
  min/max before ``update`` (``normalizes_rewards = False`` for every policy here); each docstring
  states the reward range its textbook guarantee assumes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

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


@runtime_checkable
class Policy(Protocol):
    """What the LEAD trainer and the benchmarks need from a bandit policy.

    ``probabilities(mask=None) -> np.ndarray`` is optional: only policies that really draw their arm from
    a distribution define it (the exact distribution ``select`` samples from). LEAD's ``"mixture"`` rounds
    need it.
    """

    normalizes_rewards: bool

    def select(self, mask: np.ndarray | None = None) -> int: ...

    def update(self, arm: int, reward: float) -> None: ...

    def reset(self, num_arms: int, seed: int | None = None) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class _BasePolicy(ABC):
    """Shared plumbing: seeding, mask validation, JSON state.

    Subclasses list their state in ``_state_fields`` (attribute name -> numpy dtype, or ``None`` for a
    plain Python scalar / list), which is all ``state_dict``/``load_state_dict`` need to round-trip them.
    """

    name: ClassVar[str] = ""
    normalizes_rewards: ClassVar[bool] = False
    _state_fields: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = params
        self.num_arms: int = 0
        self.t: int = 0
        self._rng: np.random.Generator | None = None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # ----------------------------------------------------------------- lifecycle
    def reset(self, num_arms: int, seed: int | None = None) -> None:
        if int(num_arms) < 1:
            raise ValueError(f"{self.name}: num_arms must be >= 1, got {num_arms}")
        self.num_arms = int(num_arms)
        self.t = 0
        self._rng = np.random.default_rng(seed)
        self._init_state()

    @abstractmethod
    def _init_state(self) -> None:
        """Each policy's own statistics, fresh after `reset`."""

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            self._require_reset()
        return self._rng

    def _require_reset(self) -> None:
        if self._rng is None:
            raise RuntimeError(
                f"{self.name} policy used before reset(num_arms, seed): call reset() (or load_state_dict()) first"
            )

    def _mask(self, mask: Any) -> np.ndarray | None:
        """Validate ``mask``; cheap when it already is a bool array of the right length."""
        self._require_reset()
        if mask is None:
            return None
        if not (isinstance(mask, np.ndarray) and mask.dtype == np.bool_):
            mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.num_arms,):
            raise ValueError(f"{self.name}: mask must have shape ({self.num_arms},), got {mask.shape}")
        if not mask[mask.argmax()]:  # argmax finds the first True; cheaper than mask.any()
            raise ValueError(f"{self.name}: mask allows no arm (all False); at least one arm must be True")
        return mask

    def _check_arm(self, arm: int) -> int:
        self._require_reset()
        arm = int(arm)
        if not 0 <= arm < self.num_arms:
            raise ValueError(f"{self.name}: arm {arm} out of range [0, {self.num_arms})")
        return arm

    def _draw(self, p: np.ndarray) -> int:
        """Inverse-CDF draw: one uniform + searchsorted, far cheaper than ``rng.choice``.

        Zero-probability arms are flat steps of the cumsum, so ``side="right"`` can never land on them.
        """
        c = np.add.accumulate(p)
        i = int(c.searchsorted(self.rng.random() * c[-1], "right"))
        if i >= len(p):  # u * total rounded up to total
            i = int(np.flatnonzero(p)[-1])
        return i

    def _argmax_random_ties(self, values: np.ndarray) -> int:
        i = int(values.argmax())
        if np.count_nonzero(values == values[i]) == 1:
            return i
        best = np.flatnonzero(values == values[i])
        return int(best[self.rng.integers(len(best))])

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """JSON-serialisable state: parameters, counters, arrays as lists and the RNG state."""
        state: dict[str, Any] = {}
        for field in self._state_fields:
            value = getattr(self, field)
            state[field] = value.tolist() if isinstance(value, np.ndarray) else value
        return {
            "policy": self.name,
            "params": dict(self.params),
            "num_arms": self.num_arms,
            "t": self.t,
            "rng": self.rng.bit_generator.state,
            "state": state,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()`` (also after a JSON round trip), parameters included, so the policy
        continues exactly where the saved one stopped; no ``reset`` needed."""
        if state.get("policy") != self.name:
            raise ValueError(f"state_dict is for policy {state.get('policy')!r}, cannot load it into {self.name!r}")
        self.__init__(**state["params"])  # re-validates the parameters and rebuilds derived constants
        self.num_arms = int(state["num_arms"])
        self.t = int(state["t"])
        rng_state = state["rng"]
        bit_generator = getattr(np.random, rng_state["bit_generator"])()
        bit_generator.state = rng_state
        self._rng = np.random.Generator(bit_generator)
        for field, dtype in self._state_fields.items():
            value = state["state"][field]
            setattr(self, field, value if dtype is None or value is None else np.asarray(value, dtype=dtype))


# --------------------------------------------------------------------------- adversarial (exponential weights)
class Exp3(_BasePolicy):
    """EXP3, exponential weights for adversarial bandits (Auer, Cesa-Bianchi, Freund & Schapire 2002,
    "The nonstochastic multiarmed bandit problem", SIAM J. Comput. 32(1), Sec. 3).

    ======== ======= ===================================================================
    param    default meaning
    ======== ======= ===================================================================
    gamma    0.1     exploration rate in (0, 1]; Cor. 3.2 takes
                     min(1, sqrt(K ln K / ((e - 1) g))) for a known bound g >= G_max
    ======== ======= ===================================================================

    p_i = (1 - gamma) w_i / sum_j w_j + gamma / K; after pulling arm j with reward x,
    w_j <- w_j * exp(gamma * (x / p_j) / K). The regret bound assumes rewards in [0, 1]; negative
    rewards (LEAD's [-1, 1]) simply shrink the weight. Log-weights, shifted so their max is 0, keep long
    runs from overflowing. Under a mask, weights and the gamma/K floor are renormalised over the allowed
    arms, and the importance weight uses the probability the arm had when ``select`` drew it.
    """

    name = "exp3"
    _state_fields = {"log_w": np.float64, "_last_p": np.float64}
    _share_weights: ClassVar[bool] = False  # EXP3.S reuses exp(log_w) from select in update

    def __init__(self, gamma: float = 0.1) -> None:
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"{self.name}: gamma must be in (0, 1], got {gamma}")
        super().__init__(gamma=float(gamma))
        self.gamma = float(gamma)
        # exp(log_w) and its sum over all arms, cached by probabilities() for EXP3.S's update (not state:
        # recomputing them from log_w gives the same numbers)
        self._w: np.ndarray | None = None
        self._w_sum: float | None = None

    def _init_state(self) -> None:
        self.log_w = np.zeros(self.num_arms)
        self._last_p: np.ndarray | None = None
        self._w, self._w_sum = None, None

    def probabilities(self, mask: np.ndarray | None = None) -> np.ndarray:
        mask = self._mask(mask)
        w = np.exp(self.log_w)  # max(log_w) == 0, so no overflow
        if self._share_weights:
            self._w = w
        if mask is None:
            self._w_sum = total = float(np.add.reduce(w))
            p = w * ((1.0 - self.gamma) / total)
            p += self.gamma / self.num_arms
            return p
        if self._share_weights:
            self._w_sum = float(np.add.reduce(w))
        allowed = mask.astype(np.float64)  # float * float is much cheaper than float * bool
        p = w * ((1.0 - self.gamma) / w.dot(allowed))
        p += self.gamma / np.count_nonzero(mask)
        p *= allowed  # exactly 0 on masked arms
        return p

    def select(self, mask: np.ndarray | None = None) -> int:
        p = self.probabilities(mask)
        self._last_p = p
        return self._draw(p)

    def _prob_of(self, arm: int) -> float:
        """Probability ``arm`` had when drawn (last ``select``), else under the current unmasked weights."""
        p = self._last_p if self._last_p is not None else self.probabilities()
        self._last_p = None
        if p[arm] <= 0.0:
            raise ValueError(f"{self.name}: arm {arm} had probability 0 (masked) when selected; cannot update it")
        return float(p[arm])

    def update(self, arm: int, reward: float) -> None:
        arm = self._check_arm(arm)
        lw = self.log_w
        lw[arm] += self.gamma * (float(reward) / self._prob_of(arm)) / self.num_arms
        lw -= lw[lw.argmax()]  # keep max(log_w) == 0: no overflow, and no underflow of every weight
        self._w, self._w_sum = None, None
        self.t += 1


class Exp3S(Exp3):
    """EXP3.S, EXP3 with weight sharing so it tracks a best arm that changes over time (Auer et al. 2002,
    SIAM J. Comput. 32(1), Sec. 8). LEAD's coarse stage uses it with gamma = 0.1.

    ======== ======= ===================================================================
    param    default meaning
    ======== ======= ===================================================================
    gamma    0.1     exploration rate in (0, 1] (LEAD paper: 0.1)
    alpha    0.01    weight-sharing rate >= 0; Cor. 8.3 takes alpha = 1/T. 0.01 suits
                     LEAD's tens to hundreds of rounds; over thousands of steps it keeps
                     the choice close to uniform, so pass alpha = 1/T there (the
                     benchmarks do); alpha = 0 gives back EXP3
    ======== ======= ===================================================================

    p_i = (1 - gamma) w_i / W + gamma / K with W = sum_j w_j; after pulling arm j with reward x,
    w_i <- w_i * exp(gamma * xhat_i / K) + (e * alpha / K) * W, with xhat_j = x / p_j and xhat_i = 0 for
    the other arms. The share goes to every arm, masked or not, so a masked cluster is not forgotten for
    good. Guarantee assumes rewards in [0, 1]. Weights are kept as logs shifted to max 0 (the rule is
    scale-free); the share keeps every log-weight above about log(e alpha / K), so nothing underflows.
    """

    name = "exp3s"
    _share_weights = True

    def __init__(self, gamma: float = 0.1, alpha: float = 0.01) -> None:
        super().__init__(gamma=gamma)
        if alpha < 0.0:
            raise ValueError(f"{self.name}: alpha must be >= 0, got {alpha}")
        self.params["alpha"] = float(alpha)
        self.alpha = float(alpha)

    def update(self, arm: int, reward: float) -> None:
        if self.alpha == 0.0:
            return super().update(arm, reward)
        arm = self._check_arm(arm)
        p_arm = self._prob_of(arm)
        lw = self.log_w
        w = self._w if self._w is not None else np.exp(lw)  # weights before the update
        w_sum = self._w_sum if self._w_sum is not None else float(np.add.reduce(w))
        share = math.e * self.alpha / self.num_arms * w_sum
        gained = lw[arm] + self.gamma * (float(reward) / p_arm) / self.num_arms
        w += share  # every arm: w_i + share (in linear space: one log instead of a logaddexp)
        np.log(w, out=lw)
        log_share = math.log(share)  # the pulled arm: log(exp(gained) + share), computed stably
        lw[arm] = max(gained, log_share) + math.log1p(math.exp(-abs(gained - log_share)))
        lw -= lw[lw.argmax()]
        self._w, self._w_sum = None, None
        self.t += 1


# --------------------------------------------------------------------------- stochastic: index policies
class UCB1(_BasePolicy):
    """UCB1 (Auer, Cesa-Bianchi & Fischer 2002, "Finite-time analysis of the multiarmed bandit problem",
    Machine Learning 47, Fig. 1).

    =========== ======= ================================================================
    param       default meaning
    =========== ======= ================================================================
    exploration 2.0     c in the index mean_i + sqrt(c ln t / n_i); the paper's c = 2
    =========== ======= ================================================================

    Each allowed arm is played once first, then the arm with the highest index (ties at random).
    Logarithmic regret is proven for rewards in [0, 1]; for a range of width R scale c by R^2.
    """

    name = "ucb1"
    _state_fields = {"counts": np.float64, "sums": np.float64}

    def __init__(self, exploration: float = 2.0) -> None:
        if exploration < 0:
            raise ValueError(f"{self.name}: exploration must be >= 0, got {exploration}")
        super().__init__(exploration=float(exploration))
        self.exploration = float(exploration)

    def _init_state(self) -> None:
        self.counts = np.zeros(self.num_arms)
        self.sums = np.zeros(self.num_arms)

    def _index(self, counts: np.ndarray) -> np.ndarray:
        """Index of every arm, given counts that are all > 0."""
        return self.sums / counts + np.sqrt((self.exploration * math.log(self.t)) / counts)

    def select(self, mask: np.ndarray | None = None) -> int:
        mask = self._mask(mask)
        counts = self.counts
        if counts[counts.argmin()] > 0.0:  # common case: every arm has data
            index = self._index(counts)
        else:
            unplayed = counts <= 0.0
            if mask is not None:
                unplayed &= mask
            if unplayed[unplayed.argmax()]:  # an allowed arm without data: play it (ties at random)
                return self._argmax_random_ties(unplayed)
            # only masked arms lack data; a tiny count keeps their (discarded) index finite
            index = self._index(np.maximum(counts, 1e-300))
        if mask is not None:
            index[~mask] = -np.inf
        return self._argmax_random_ties(index)

    def update(self, arm: int, reward: float) -> None:
        arm = self._check_arm(arm)
        self.counts[arm] += 1.0
        self.sums[arm] += float(reward)
        self.t += 1


class SlidingWindowUCB(UCB1):
    """SW-UCB, UCB on the last ``window`` steps only (Garivier & Moulines 2011, "On upper-confidence bound
    policies for switching bandit problems", ALT).

    ============ ======= ================================================================
    param        default meaning
    ============ ======= ================================================================
    window       500     tau: number of most recent steps (all arms) that count
    xi           0.6     index mean + B * sqrt(xi * ln(min(t, tau)) / N); analysis needs xi > 1/2
    reward_bound 1.0     B, a bound on |reward| (1 for LEAD's [-1, 1] and for [0, 1])
    ============ ======= ================================================================

    An arm not played in the window is played next. The paper suggests
    tau = 2 B sqrt(T log(T) / Upsilon_T) for Upsilon_T change points in T steps. Window sums are kept
    with a ring buffer, so a step costs O(K) whatever tau is.
    """

    name = "sw-ucb"
    _state_fields = {"counts": np.float64, "sums": np.float64, "_arms": np.int64, "_rewards": np.float64}

    def __init__(self, window: int = 500, xi: float = 0.6, reward_bound: float = 1.0) -> None:
        if int(window) < 1:
            raise ValueError(f"{self.name}: window must be >= 1, got {window}")
        _BasePolicy.__init__(self, window=int(window), xi=float(xi), reward_bound=float(reward_bound))
        self.window, self.xi, self.reward_bound = int(window), float(xi), float(reward_bound)

    def _init_state(self) -> None:
        super()._init_state()
        self._arms = np.full(self.window, -1, dtype=np.int64)
        self._rewards = np.zeros(self.window)

    def _index(self, counts: np.ndarray) -> np.ndarray:
        scale = self.xi * math.log(min(self.t, self.window))
        return self.sums / counts + self.reward_bound * np.sqrt(scale / counts)

    def update(self, arm: int, reward: float) -> None:
        arm = self._check_arm(arm)
        slot = self.t % self.window
        old = self._arms[slot]
        if old >= 0:
            self.counts[old] -= 1.0
            self.sums[old] -= self._rewards[slot]
            if self.counts[old] == 0.0:
                self.sums[old] = 0.0  # drop the rounding residue of the running sum
        self._arms[slot] = arm
        self._rewards[slot] = float(reward)
        self.counts[arm] += 1.0
        self.sums[arm] += float(reward)
        self.t += 1


class DiscountedUCB(UCB1):
    """D-UCB, UCB on exponentially discounted counts and sums (Garivier & Moulines 2011, "On upper-confidence
    bound policies for switching bandit problems", ALT; after Kocsis & Szepesvari 2006).

    ============ ======= ================================================================
    param        default meaning
    ============ ======= ================================================================
    discount     0.998   gamma in (0, 1]: weight of a reward s steps old is gamma^s (memory ~500 steps)
    xi           0.6     index mean + 2 B sqrt(xi * ln(n) / N_i), n = sum_i N_i; needs xi > 1/2
    reward_bound 1.0     B, a bound on |reward|
    ============ ======= ================================================================

    The paper suggests gamma = 1 - sqrt(Upsilon_T / T) / (4 B). Never-played arms are played first.
    """

    name = "d-ucb"
    _state_fields = {"counts": np.float64, "sums": np.float64, "n_total": None}

    def __init__(self, discount: float = 0.998, xi: float = 0.6, reward_bound: float = 1.0) -> None:
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"{self.name}: discount must be in (0, 1], got {discount}")
        _BasePolicy.__init__(self, discount=float(discount), xi=float(xi), reward_bound=float(reward_bound))
        self.discount, self.xi, self.reward_bound = float(discount), float(xi), float(reward_bound)

    def _init_state(self) -> None:
        super()._init_state()
        self.n_total = 0.0  # sum of the discounted counts, kept as a scalar to save a reduction

    def _index(self, counts: np.ndarray) -> np.ndarray:
        scale = self.xi * math.log(max(self.n_total, 1.0))
        return self.sums / counts + (2.0 * self.reward_bound) * np.sqrt(scale / counts)

    def update(self, arm: int, reward: float) -> None:
        arm = self._check_arm(arm)
        self.counts *= self.discount
        self.sums *= self.discount
        self.counts[arm] += 1.0
        self.sums[arm] += float(reward)
        self.n_total = self.n_total * self.discount + 1.0
        self.t += 1


# --------------------------------------------------------------------------- stochastic: mean-based policies
class Greedy(_BasePolicy):
    """Greedy: the arm with the highest empirical mean (never-played arms first, ties at random).

    No parameters. The no-exploration baseline (Sutton & Barto 2018, Sec. 2.2): it can lock on a bad arm
    forever, which is what the benchmarks should show. Any reward range.
    """

    name = "greedy"
    _state_fields = {"counts": np.float64, "sums": np.float64}

    def __init__(self) -> None:
        super().__init__()

    def _init_state(self) -> None:
        self.counts = np.zeros(self.num_arms)
        self.sums = np.zeros(self.num_arms)
        self._refresh_means()

    def _refresh_means(self) -> None:
        """Means with +inf for never-played arms, kept up to date one entry per update (not stored)."""
        self._means = np.full(self.num_arms, np.inf)
        played = self.counts > 0
        self._means[played] = self.sums[played] / self.counts[played]

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._refresh_means()

    def _greedy(self, mask: np.ndarray | None) -> int:
        if mask is None:
            return self._argmax_random_ties(self._means)
        values = self._means.copy()
        values[~mask] = -np.inf
        return self._argmax_random_ties(values)

    def select(self, mask: np.ndarray | None = None) -> int:
        return self._greedy(self._mask(mask))

    def update(self, arm: int, reward: float) -> None:
        arm = self._check_arm(arm)
        self.counts[arm] += 1.0
        self.sums[arm] += float(reward)
        self._means[arm] = self.sums[arm] / self.counts[arm]
        self.t += 1


class EpsilonGreedy(Greedy):
    """Epsilon-greedy (Sutton & Barto 2018, "Reinforcement Learning: An Introduction", Sec. 2.2-2.3).

    ======= ======= ====================================================================
    param   default meaning
    ======= ======= ====================================================================
    epsilon 0.1     probability of a uniform draw over the allowed arms
    ======= ======= ====================================================================

    Otherwise the arm with the highest empirical mean; never-played arms count as +inf (tried first),
    ties split the greedy mass evenly. ``select`` draws from exactly ``probabilities(mask)``. Any reward
    range; a constant epsilon gives linear regret, the price of tracking change.
    """

    name = "epsilon-greedy"

    def __init__(self, epsilon: float = 0.1) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"{self.name}: epsilon must be in [0, 1], got {epsilon}")
        _BasePolicy.__init__(self, epsilon=float(epsilon))
        self.epsilon = float(epsilon)

    def probabilities(self, mask: np.ndarray | None = None) -> np.ndarray:
        mask = self._mask(mask)
        values = self._means.copy()
        if mask is not None:
            values[~mask] = -np.inf
        best = values == values[values.argmax()]
        p = best * ((1.0 - self.epsilon) / np.count_nonzero(best))
        if mask is None:
            p += self.epsilon / self.num_arms
        else:
            p += (self.epsilon / np.count_nonzero(mask)) * mask
        return p

    def select(self, mask: np.ndarray | None = None) -> int:
        mask = self._mask(mask)
        if self.rng.random() >= self.epsilon:
            return self._greedy(mask)
        if mask is None:
            return int(self.rng.integers(self.num_arms))
        allowed = np.flatnonzero(mask)
        return int(allowed[self.rng.integers(len(allowed))])


class ThompsonSampling(Greedy):
    """Gaussian Thompson sampling (Agrawal & Goyal 2013, "Further optimal regret bounds for Thompson
    sampling", AISTATS, Alg. 2), which works for any real reward, unlike Beta-Bernoulli sampling.

    ======= ======= ====================================================================
    param   default meaning
    ======= ======= ====================================================================
    sigma   1.0     scale of the posterior: theta_i ~ N(mu_i, sigma^2 / (n_i + 1)); the
                    paper's sigma = 1 (rewards in [0, 1]); 1 also covers LEAD's [-1, 1]
    ======= ======= ====================================================================

    mu_i = (sum of arm i's rewards) / (n_i + 1), i.e. a N(0, sigma^2) prior per arm; the arm with the
    largest sample is played. Not a ``probabilities`` policy: its distribution over arms has no closed form.
    """

    name = "thompson"

    def __init__(self, sigma: float = 1.0) -> None:
        if sigma <= 0:
            raise ValueError(f"{self.name}: sigma must be > 0, got {sigma}")
        _BasePolicy.__init__(self, sigma=float(sigma))
        self.sigma = float(sigma)

    def _refresh_means(self) -> None:
        """Posterior means and standard deviations, updated one entry per step (not stored)."""
        self._means = self.sums / (self.counts + 1.0)
        self._scales = self.sigma / np.sqrt(self.counts + 1.0)

    def select(self, mask: np.ndarray | None = None) -> int:
        mask = self._mask(mask)
        theta = self.rng.standard_normal(self.num_arms)
        theta *= self._scales
        theta += self._means
        if mask is not None:
            theta[~mask] = -np.inf
        return int(theta.argmax())

    def update(self, arm: int, reward: float) -> None:
        arm = self._check_arm(arm)
        self.counts[arm] += 1.0
        self.sums[arm] += float(reward)
        n1 = self.counts[arm] + 1.0
        self._means[arm] = self.sums[arm] / n1
        self._scales[arm] = self.sigma / math.sqrt(n1)
        self.t += 1


class Uniform(_BasePolicy):
    """Uniform random choice among the allowed arms: the no-learning baseline. No parameters."""

    name = "uniform"

    def __init__(self) -> None:
        super().__init__()

    def _init_state(self) -> None:
        pass

    def probabilities(self, mask: np.ndarray | None = None) -> np.ndarray:
        mask = self._mask(mask)
        if mask is None:
            return np.full(self.num_arms, 1.0 / self.num_arms)
        return mask / float(np.count_nonzero(mask))

    def select(self, mask: np.ndarray | None = None) -> int:
        mask = self._mask(mask)
        if mask is None:
            return int(self.rng.integers(self.num_arms))
        allowed = np.flatnonzero(mask)
        return int(allowed[self.rng.integers(len(allowed))])

    def update(self, arm: int, reward: float) -> None:
        self._check_arm(arm)
        self.t += 1


POLICIES: dict[str, type[_BasePolicy]] = {
    cls.name: cls
    for cls in (Exp3, Exp3S, UCB1, SlidingWindowUCB, DiscountedUCB, ThompsonSampling, EpsilonGreedy, Greedy, Uniform)
}


def make_policy(name: str, **kwargs: Any) -> Policy:
    """Build a policy by registry name; call ``reset(num_arms, seed)`` on it before use."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; valid names: {', '.join(POLICIES)}") from None
    return cls(**kwargs)
