"""Bandit policies that pick LEAD's cluster (arm) each round, usable on any ``Discrete(K)`` environment.

Part of LEAD (its coarse stage is EXP3-S), so they live in ``trl_lead`` and import nothing but numpy; ``envs.policies``
re-exports them for the Gymnasium side. Each policy's rule is written out in its ``select``/``probabilities`` and
``update``, as in its paper.

Conventions shared by all policies:

* ``mask`` is a boolean array of length K, True where an arm may be chosen (Gymnasium's action-mask convention);
  ``None`` allows every arm. A masked arm is never chosen; a mask that allows no arm is a ``ValueError``.
* Randomness comes only from ``reset(num_arms, seed)`` (``np.random.default_rng(seed)``), so a run is reproducible
  from its seed, and ``state_dict()`` carries the generator state: a policy restored from
  ``json.loads(json.dumps(p.state_dict()))`` makes exactly the same future choices.
* Rewards may be any real number. The LEAD trainer rescales rewards to [-1, 1] with their running min/max before
  ``update`` (``normalizes_rewards = False`` for every policy here); each docstring states the reward range its
  textbook guarantee assumes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

__all__ = ["POLICIES", "Boltzmann", "DiscountedUCB", "EpsilonGreedy", "Exp3", "Exp3S", "Greedy", "Policy",
           "SlidingWindowUCB", "ThompsonSampling", "UCB1", "Uniform", "make_policy"]  # fmt: skip


@runtime_checkable
class Policy(Protocol):
    """What the LEAD trainer and the benchmarks need from a bandit policy: ``select``, ``update`` and ``reset``.

    Optional members, used where present:

    * ``probabilities(mask=None) -> np.ndarray``: the exact distribution ``select`` draws from. LEAD's ``"mixture"``
      rounds split a round by it.
    * ``allocate(slots, mask=None) -> np.ndarray``: a batched round, the number of the round's ``slots`` each arm gets
      with the round's feedback after it (every policy here has one; each docstring gives its rule). A ``"mixture"``
      round of a policy without ``probabilities`` is split by these shares.
    * ``update_mixture(rewards, probabilities)``: the rewards of one mixture round (``{arm: reward}`` for the arms the
      round trained) with the probabilities the round was drawn from. Without it a mixture round calls
      ``update(arm, reward)`` once per arm.
    * ``state_dict()`` / ``load_state_dict(state)``: saved into and restored from LEAD checkpoints.
    * ``normalizes_rewards``: True makes the trainer pass raw rewards instead of rescaling them to [-1, 1].
    """

    def select(self, mask: np.ndarray | None = None) -> int: ...

    def update(self, arm: int, reward: float) -> None: ...

    def reset(self, num_arms: int, seed: int | None = None) -> None: ...


class _BasePolicy(ABC):
    """Shared plumbing: parameters, seeding, mask and arm checks, draws, JSON state.

    Subclasses list their state in ``_state_fields`` (attribute name -> numpy dtype, or ``None`` for a plain Python
    value), which is all ``state_dict``/``load_state_dict`` need to round-trip them.
    """

    name: ClassVar[str] = ""
    normalizes_rewards: ClassVar[bool] = False
    _state_fields: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = params
        self.num_arms: int = 0
        self.t: int = 0  # number of updates
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

    @abstractmethod
    def select(self, mask: np.ndarray | None = None) -> int: ...

    @abstractmethod
    def update(self, arm: int, reward: float) -> None: ...

    def allocate(self, slots: int, mask: np.ndarray | None = None) -> np.ndarray:
        """A batched round: how many of ``slots`` pulls each arm gets when the feedback comes after the round.

        ``slots`` successive ``select`` calls with no ``update`` between them (nothing is learned within the round).
        Policies with a cheaper rule of the same distribution override it."""
        mask = self._mask(mask)
        counts = np.zeros(self.num_arms, dtype=np.int64)
        for _ in range(int(slots)):
            counts[self.select(mask)] += 1
        return counts

    def update_mixture(self, rewards: Mapping[int, float], probabilities: np.ndarray) -> None:
        """Rewards of one mixture round (``{arm: reward}``), whose arms were drawn from ``probabilities``.

        Policies whose update does not depend on how the arm was drawn take them one by one.
        """
        for arm, reward in rewards.items():
            self.update(arm, reward)

    @property
    def rng(self) -> np.random.Generator:
        self._require_reset()
        return self._rng

    def _require_reset(self) -> None:
        if self._rng is None:
            raise RuntimeError(
                f"{self.name} policy used before reset(num_arms, seed): call reset() (or load_state_dict()) first"
            )

    def _mask(self, mask: Any) -> np.ndarray | None:
        """``mask`` checked and as a bool array (None stays None)."""
        self._require_reset()
        if mask is None:
            return None
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.num_arms,):
            raise ValueError(f"{self.name}: mask must have shape ({self.num_arms},), got {mask.shape}")
        if not np.count_nonzero(mask):
            raise ValueError(f"{self.name}: mask allows no arm (all False); at least one arm must be True")
        return mask

    def _check_arm(self, arm: int) -> int:
        self._require_reset()
        arm = int(arm)
        if not 0 <= arm < self.num_arms:
            raise ValueError(f"{self.name}: arm {arm} out of range [0, {self.num_arms})")
        return arm

    # ----------------------------------------------------------------- draws
    def _draw(self, p: np.ndarray) -> int:
        """An arm drawn from ``p`` by inverse CDF (one uniform); zero-probability arms are flat steps of the CDF,
        which ``side="right"`` never lands on."""
        cdf = np.add.accumulate(p)
        arm = int(cdf.searchsorted(self.rng.random() * cdf[-1], "right"))
        return arm if arm < len(p) else int(np.flatnonzero(p)[-1])  # u * total rounded up to total

    def _uniform_arm(self, mask: np.ndarray | None) -> int:
        """An allowed arm drawn uniformly."""
        if mask is None:
            return int(self.rng.integers(self.num_arms))
        allowed = np.flatnonzero(mask)
        return int(allowed[self.rng.integers(len(allowed))])

    def _argmax_random_ties(self, values: np.ndarray) -> int:
        """The arm of the largest value; ties broken at random (no draw when there is none)."""
        arm = int(values.argmax())
        best = values == values[arm]
        if np.count_nonzero(best) == 1:
            return arm
        best = np.flatnonzero(best)
        return int(best[self.rng.integers(len(best))])

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """JSON-serialisable state: parameters, counters, arrays as lists and the RNG state."""
        state = {}
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
        """Restore a ``state_dict()`` (also after a JSON round trip), parameters included, so the policy continues
        exactly where the saved one stopped; no ``reset`` needed."""
        if state.get("policy") != self.name:
            raise ValueError(f"state_dict is for policy {state.get('policy')!r}, cannot load it into {self.name!r}")
        self.__init__(**state["params"])  # re-validates the parameters
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
    """EXP3, exponential weights for adversarial bandits (Auer, Cesa-Bianchi, Freund & Schapire 2002, "The
    nonstochastic multiarmed bandit problem", SIAM J. Comput. 32(1), Sec. 3).

    ======== ======= ===================================================================
    param    default meaning
    ======== ======= ===================================================================
    gamma    0.1     exploration rate in (0, 1]; Cor. 3.2 takes
                     min(1, sqrt(K ln K / ((e - 1) g))) for a known bound g >= G_max
    ======== ======= ===================================================================

    p_i = (1 - gamma) w_i / sum_j w_j + gamma / K; after pulling arm j with reward x, w_j <- w_j exp(gamma xhat_j / K)
    with the importance-weighted estimate xhat_j = x / p_j (0 for the other arms). The regret bound assumes rewards
    in [0, 1]; negative rewards (LEAD's [-1, 1]) simply shrink the weight. Weights are kept as logs shifted so their
    max is 0, so long runs never overflow. Under a mask, weights and the gamma/K floor are renormalised over the
    allowed arms, and p_j is the probability the arm had when ``select`` drew it (in a mixture round: the round's).
    """

    name = "exp3"
    _state_fields = {"log_w": np.float64, "_last_p": np.float64}

    def __init__(self, gamma: float = 0.1) -> None:
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"{self.name}: gamma must be in (0, 1], got {gamma}")
        super().__init__(gamma=float(gamma))
        self.gamma = float(gamma)

    def _init_state(self) -> None:
        self.log_w = np.zeros(self.num_arms)
        self._last_p: np.ndarray | None = None  # the distribution of the last select, for its update

    def probabilities(self, mask: np.ndarray | None = None) -> np.ndarray:
        mask = self._mask(mask)
        w = np.exp(self.log_w)  # max(log_w) == 0: no overflow
        if mask is None:
            return w * ((1.0 - self.gamma) / w.sum()) + self.gamma / self.num_arms
        allowed = mask.astype(np.float64)
        return (w * ((1.0 - self.gamma) / w.dot(allowed)) + self.gamma / np.count_nonzero(mask)) * allowed

    def select(self, mask: np.ndarray | None = None) -> int:
        self._last_p = self.probabilities(mask)
        return self._draw(self._last_p)

    def update(self, arm: int, reward: float) -> None:
        """Reward of the arm the last ``select`` drew (without one: as if drawn from the unmasked weights)."""
        arm = self._check_arm(arm)
        p = self._last_p if self._last_p is not None else self.probabilities()
        self._last_p = None
        self._reweight(self._estimates({arm: reward}, p))

    def update_mixture(self, rewards: Mapping[int, float], probabilities: np.ndarray) -> None:
        """One update for a whole mixture round: every arm in ``rewards`` weighted by its probability in the round."""
        rewards = {self._check_arm(arm): reward for arm, reward in rewards.items()}
        self._last_p = None
        self._reweight(self._estimates(rewards, np.asarray(probabilities, dtype=np.float64)))

    def _estimates(self, rewards: Mapping[int, float], p: np.ndarray) -> dict[int, float]:
        """xhat_j = reward_j / p_j for each arm j played (xhat is 0 for the others)."""
        xhat = {}
        for arm, reward in rewards.items():
            if p[arm] <= 0.0:
                raise ValueError(f"{self.name}: arm {arm} had probability 0 (masked) when drawn; cannot update it")
            xhat[arm] = float(reward) / float(p[arm])
        return xhat

    def _reweight(self, xhat: dict[int, float]) -> None:
        """w_j <- w_j exp(gamma xhat_j / K) for the arms played."""
        for arm, estimate in xhat.items():
            self.log_w[arm] += self.gamma * estimate / self.num_arms
        self.log_w -= self.log_w[self.log_w.argmax()]  # max(log_w) == 0 again
        self.t += 1


class Exp3S(Exp3):
    """EXP3.S, EXP3 with weight sharing so it tracks a best arm that changes over time (Auer et al. 2002, SIAM J.
    Comput. 32(1), Sec. 8). LEAD's coarse stage uses it with gamma = 0.1.

    ======== ======= ===================================================================
    param    default meaning
    ======== ======= ===================================================================
    gamma    0.1     exploration rate in (0, 1] (LEAD paper: 0.1)
    alpha    0.01    weight-sharing rate >= 0; Cor. 8.3 takes alpha = 1/T. 0.01 suits
                     LEAD's tens to hundreds of rounds; over thousands of steps it keeps
                     the choice close to uniform, so pass alpha = 1/T there (the
                     benchmarks do); alpha = 0 is EXP3
    ======== ======= ===================================================================

    p_i as EXP3; after each round, w_i <- w_i exp(gamma xhat_i / K) + (e alpha / K) W with W = sum_j w_j (before the
    update) and xhat as EXP3's. The share goes to every arm, masked or not, so a masked cluster is not forgotten for
    good. Guarantee assumes rewards in [0, 1]. The log-weights (shifted to max 0; the rule is scale-free) are updated
    by ``logaddexp``, so large rewards cannot overflow, and the share keeps each above about log(e alpha / K).
    """

    name = "exp3s"

    def __init__(self, gamma: float = 0.1, alpha: float = 0.01) -> None:
        if alpha < 0.0:
            raise ValueError(f"{self.name}: alpha must be >= 0, got {alpha}")
        super().__init__(gamma=gamma)
        self.params["alpha"] = float(alpha)
        self.alpha = float(alpha)

    def _reweight(self, xhat: dict[int, float]) -> None:
        """w_i <- w_i exp(gamma xhat_i / K) + (e alpha / K) W, every arm (xhat_i = 0 for the arms not played)."""
        share = math.e * self.alpha / self.num_arms * np.exp(self.log_w).sum()
        gained = self.log_w.copy()  # log(w_i exp(gamma xhat_i / K))
        for arm, estimate in xhat.items():
            gained[arm] += self.gamma * estimate / self.num_arms
        self.log_w = np.logaddexp(gained, math.log(share) if share > 0.0 else -math.inf)
        self.log_w -= self.log_w[self.log_w.argmax()]  # max(log_w) == 0 again
        self.t += 1


# --------------------------------------------------------------------------- moving average, Boltzmann choice
class Boltzmann(_BasePolicy):
    """Boltzmann (softmax) choice over an exponential moving average of each arm's rewards, with a probability floor:
    the "Online" teacher of TSCL (Matiisen, Oliver, Cohen & Schulman 2019, "Teacher-student curriculum learning",
    IEEE TNNLS, Alg. 1 with Boltzmann exploration).

    =========== ======= ================================================================
    param       default meaning
    =========== ======= ================================================================
    temperature 0.2     tau > 0: p ~ exp(Q / tau); with LEAD's rewards in [-1, 1] an arm
                        whose average is 0.2 higher is drawn e times as often
    step        0.2     alpha in (0, 1]: Q_a <- Q_a + alpha (r - Q_a), memory ~1/alpha updates
    floor       0.1     share in [0, 1) spread uniformly over the allowed arms, so each keeps
                        at least floor / K of the mass and is never starved of measurements
    =========== ======= ================================================================

    p_a = (1 - floor) exp(Q_a / tau) / sum_b exp(Q_b / tau) + floor / K over the allowed arms (0 on masked ones).
    An arm's first reward sets its average (Q_a = r); arms never rewarded have Q_a = 0, the middle of [-1, 1]. Unlike
    EXP3 the probabilities follow the recent average, not the sum of all past rewards, so they move within a few
    rounds and move back when an arm's reward changes. A mixture round updates each arm it trained once with its own
    reward (how the arm was drawn does not enter a moving average). Any real reward; the softmax is shifted by its
    maximum, so large rewards cannot overflow.
    """

    name = "boltzmann"
    _state_fields = {"averages": np.float64, "rewarded": np.bool_}

    def __init__(self, temperature: float = 0.2, step: float = 0.2, floor: float = 0.1) -> None:
        if not temperature > 0.0:
            raise ValueError(f"{self.name}: temperature must be > 0, got {temperature}")
        if not 0.0 < step <= 1.0:
            raise ValueError(f"{self.name}: step must be in (0, 1], got {step}")
        if not 0.0 <= floor < 1.0:
            raise ValueError(f"{self.name}: floor must be in [0, 1), got {floor}")
        super().__init__(temperature=float(temperature), step=float(step), floor=float(floor))
        self.temperature, self.step, self.floor = float(temperature), float(step), float(floor)

    def _init_state(self) -> None:
        self.averages = np.zeros(self.num_arms)  # Q_a
        self.rewarded = np.zeros(self.num_arms, dtype=bool)  # whether arm a has had a reward (its first sets Q_a)

    def probabilities(self, mask: np.ndarray | None = None) -> np.ndarray:
        mask = self._mask(mask)
        allowed = np.ones(self.num_arms, bool) if mask is None else mask
        logits = np.where(allowed, self.averages / self.temperature, -np.inf)
        weights = np.exp(logits - logits.max())
        return (1.0 - self.floor) * weights / weights.sum() + allowed * (self.floor / np.count_nonzero(allowed))

    def select(self, mask: np.ndarray | None = None) -> int:
        return self._draw(self.probabilities(mask))

    def update(self, arm: int, reward: float) -> None:
        """Q_a <- Q_a + step (r - Q_a); the arm's first reward sets Q_a = r."""
        arm = self._check_arm(arm)
        reward = float(reward)
        if self.rewarded[arm]:
            self.averages[arm] += self.step * (reward - self.averages[arm])
        else:
            self.averages[arm], self.rewarded[arm] = reward, True
        self.t += 1


# --------------------------------------------------------------------------- stochastic: sample means
class _SampleMeanPolicy(_BasePolicy):
    """Policies built on each arm's number of pulls ``counts`` and sum of rewards ``sums``."""

    _state_fields = {"counts": np.float64, "sums": np.float64}

    def _init_state(self) -> None:
        self.counts = np.zeros(self.num_arms)
        self.sums = np.zeros(self.num_arms)

    def update(self, arm: int, reward: float) -> None:
        arm = self._check_arm(arm)
        self.counts[arm] += 1.0
        self.sums[arm] += float(reward)
        self.t += 1


class UCB1(_SampleMeanPolicy):
    """UCB1 (Auer, Cesa-Bianchi & Fischer 2002, "Finite-time analysis of the multiarmed bandit problem", Machine
    Learning 47, Fig. 1).

    =========== ======= ================================================================
    param       default meaning
    =========== ======= ================================================================
    exploration 2.0     c in the index mean_i + sqrt(c ln t / n_i); the paper's c = 2
    =========== ======= ================================================================

    Each allowed arm is played once first, then the arm with the highest index (ties at random). Logarithmic regret
    is proven for rewards in [0, 1]; for a range of width R scale c by R^2.

    Batched round (``allocate``; LEAD's mixture rounds): successive ``select`` calls with the round's feedback after
    it, UCB under delayed feedback (Joulani, Gyorgy & Szepesvari 2013, "Online learning under delayed feedback",
    ICML: the base policy runs on the feedback received so far). The index does not move within the round, so the
    arm of highest index takes every slot; never-played allowed arms tie first and share the slots at random (the
    first round spreads over them). SW-UCB and D-UCB do the same with their own index.
    """

    name = "ucb1"

    def __init__(self, exploration: float = 2.0) -> None:
        if exploration < 0:
            raise ValueError(f"{self.name}: exploration must be >= 0, got {exploration}")
        super().__init__(exploration=float(exploration))
        self.exploration = float(exploration)

    def _index(self, n: np.ndarray) -> np.ndarray:
        """mean_i + sqrt(c ln t / n_i), given the counts ``n``."""
        return self.sums / n + np.sqrt((self.exploration * math.log(self.t)) / n)

    def select(self, mask: np.ndarray | None = None) -> int:
        mask = self._mask(mask)
        unplayed = self.counts <= 0.0
        if mask is not None:
            unplayed &= mask
        if np.count_nonzero(unplayed):  # an allowed arm without data is played first
            return self._argmax_random_ties(unplayed)
        index = self._index(np.maximum(self.counts, 1e-300))  # a masked arm may lack data: keep its index finite
        if mask is not None:
            index[~mask] = -np.inf
        return self._argmax_random_ties(index)


class SlidingWindowUCB(UCB1):
    """SW-UCB, UCB on the last ``window`` steps only (Garivier & Moulines 2011, "On upper-confidence bound policies
    for switching bandit problems", ALT).

    ============ ======= ================================================================
    param        default meaning
    ============ ======= ================================================================
    window       500     tau: number of most recent steps (all arms) that count
    xi           0.6     index mean + B * sqrt(xi * ln(min(t, tau)) / N); analysis needs xi > 1/2
    reward_bound 1.0     B, a bound on |reward| (1 for LEAD's [-1, 1] and for [0, 1])
    ============ ======= ================================================================

    ``counts``/``sums`` cover the window only; an arm not played in the window is played next. The paper suggests
    tau = 2 B sqrt(T log(T) / Upsilon_T) for Upsilon_T change points in T steps. The window's (arm, reward) pairs
    are kept in a ring buffer, so a step costs O(K) whatever tau is.
    """

    name = "sw-ucb"
    _state_fields = {"counts": np.float64, "sums": np.float64, "_arms": np.int64, "_rewards": np.float64}

    def __init__(self, window: int = 500, xi: float = 0.6, reward_bound: float = 1.0) -> None:
        if int(window) < 1:
            raise ValueError(f"{self.name}: window must be >= 1, got {window}")
        _SampleMeanPolicy.__init__(self, window=int(window), xi=float(xi), reward_bound=float(reward_bound))
        self.window, self.xi, self.reward_bound = int(window), float(xi), float(reward_bound)

    def _init_state(self) -> None:
        super()._init_state()
        self._arms = np.full(self.window, -1, dtype=np.int64)  # ring buffer of the window's arms (-1: empty)
        self._rewards = np.zeros(self.window)

    def _index(self, n: np.ndarray) -> np.ndarray:
        """mean_i + B sqrt(xi ln(min(t, tau)) / N_i)."""
        scale = self.xi * math.log(min(self.t, self.window))
        return self.sums / n + self.reward_bound * np.sqrt(scale / n)

    def update(self, arm: int, reward: float) -> None:
        arm = self._check_arm(arm)
        slot = self.t % self.window
        old = self._arms[slot]
        if old >= 0:  # the step leaving the window
            self.counts[old] -= 1.0
            self.sums[old] -= self._rewards[slot]
            if self.counts[old] == 0.0:
                self.sums[old] = 0.0  # drop the rounding residue of the running sum
        self._arms[slot], self._rewards[slot] = arm, float(reward)
        super().update(arm, reward)


class DiscountedUCB(UCB1):
    """D-UCB, UCB on exponentially discounted counts and sums (Garivier & Moulines 2011, "On upper-confidence bound
    policies for switching bandit problems", ALT; after Kocsis & Szepesvari 2006).

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
        _SampleMeanPolicy.__init__(self, discount=float(discount), xi=float(xi), reward_bound=float(reward_bound))
        self.discount, self.xi, self.reward_bound = float(discount), float(xi), float(reward_bound)

    def _init_state(self) -> None:
        super()._init_state()
        self.n_total = 0.0  # n = sum_i N_i, by its own recursion n <- gamma n + 1

    def _index(self, n: np.ndarray) -> np.ndarray:
        """mean_i + 2 B sqrt(xi ln(n) / N_i)."""
        scale = self.xi * math.log(max(self.n_total, 1.0))
        return self.sums / n + (2.0 * self.reward_bound) * np.sqrt(scale / n)

    def update(self, arm: int, reward: float) -> None:
        arm = self._check_arm(arm)
        self.counts *= self.discount
        self.sums *= self.discount
        self.n_total = self.n_total * self.discount + 1.0
        super().update(arm, reward)


class Greedy(_SampleMeanPolicy):
    """Greedy: the arm with the highest empirical mean (never-played arms first, ties at random).

    No parameters. The no-exploration baseline (Sutton & Barto 2018, Sec. 2.2): it can lock on a bad arm forever,
    which is what the benchmarks should show. Any reward range.

    Batched round (``allocate``; LEAD's mixture rounds): successive ``select`` calls with the round's feedback after
    it (as UCB1's): the arm of highest mean takes every slot; never-played allowed arms tie first and share the slots
    at random.
    """

    name = "greedy"

    def __init__(self) -> None:
        super().__init__()

    def _means(self, mask: np.ndarray | None) -> np.ndarray:
        """Empirical means, +inf for never-played arms, -inf for masked ones."""
        means = self.sums / np.maximum(self.counts, 1.0)
        means[self.counts <= 0.0] = np.inf
        if mask is not None:
            means[~mask] = -np.inf
        return means

    def select(self, mask: np.ndarray | None = None) -> int:
        return self._argmax_random_ties(self._means(self._mask(mask)))


class EpsilonGreedy(Greedy):
    """Epsilon-greedy (Sutton & Barto 2018, "Reinforcement Learning: An Introduction", Sec. 2.2-2.3).

    ======= ======= ====================================================================
    param   default meaning
    ======= ======= ====================================================================
    epsilon 0.1     probability of a uniform draw over the allowed arms
    ======= ======= ====================================================================

    Otherwise greedy: the arm with the highest empirical mean, never-played arms first, ties at random (so the
    greedy mass splits evenly among them). ``select`` draws from exactly ``probabilities(mask)``. Any reward range; a
    constant epsilon gives linear regret, the price of tracking change.
    """

    name = "epsilon-greedy"

    def __init__(self, epsilon: float = 0.1) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"{self.name}: epsilon must be in [0, 1], got {epsilon}")
        super().__init__()
        self.params["epsilon"] = float(epsilon)
        self.epsilon = float(epsilon)

    def probabilities(self, mask: np.ndarray | None = None) -> np.ndarray:
        """1 - epsilon split over the best arms (by mean) plus epsilon split over the allowed arms."""
        mask = self._mask(mask)
        means = self._means(mask)
        best = means == means.max()
        allowed = np.ones(self.num_arms, bool) if mask is None else mask
        greedy = (1.0 - self.epsilon) / np.count_nonzero(best)
        return best * greedy + allowed * (self.epsilon / np.count_nonzero(allowed))

    def select(self, mask: np.ndarray | None = None) -> int:
        mask = self._mask(mask)
        if self.rng.random() >= self.epsilon:
            return self._argmax_random_ties(self._means(mask))
        return self._uniform_arm(mask)


class ThompsonSampling(_SampleMeanPolicy):
    """Gaussian Thompson sampling (Agrawal & Goyal 2013, "Further optimal regret bounds for Thompson sampling",
    AISTATS, Alg. 2), which works for any real reward, unlike Beta-Bernoulli sampling.

    ======= ======= ====================================================================
    param   default meaning
    ======= ======= ====================================================================
    sigma   1.0     scale of the posterior: theta_i ~ N(mu_i, sigma^2 / (n_i + 1)); the
                    paper's sigma = 1 (rewards in [0, 1]); 1 also covers LEAD's [-1, 1]
    ======= ======= ====================================================================

    mu_i = (sum of arm i's rewards) / (n_i + 1), i.e. a N(0, sigma^2) prior per arm; the arm with the largest sample
    is played. Not a ``probabilities`` policy: its distribution over arms has no closed form.

    Batched round (``allocate``; LEAD's mixture rounds): one posterior draw per slot, each slot to the arm of the
    largest sample, with the round's feedback after it (batched Thompson sampling: Kalkanli & Ozgur 2021, "Batched
    Thompson sampling", NeurIPS). An arm's expected share of the round is its posterior probability of being best.
    """

    name = "thompson"

    def __init__(self, sigma: float = 1.0) -> None:
        if sigma <= 0:
            raise ValueError(f"{self.name}: sigma must be > 0, got {sigma}")
        super().__init__(sigma=float(sigma))
        self.sigma = float(sigma)

    def select(self, mask: np.ndarray | None = None) -> int:
        return int(self._best_of_draws(self._mask(mask), 1)[0])

    def allocate(self, slots: int, mask: np.ndarray | None = None) -> np.ndarray:
        """One posterior draw per slot (the same draws as ``slots`` successive ``select`` calls)."""
        best = self._best_of_draws(self._mask(mask), int(slots))
        return np.bincount(best, minlength=self.num_arms).astype(np.int64)

    def _best_of_draws(self, mask: np.ndarray | None, draws: int) -> np.ndarray:
        """The arm of the largest posterior sample, for each of ``draws`` independent draws."""
        z = self.rng.standard_normal((draws, self.num_arms))
        n = self.counts + 1.0
        theta = self.sums / n + self.sigma / np.sqrt(n) * z  # a draw of each arm's posterior, per row
        if mask is not None:
            theta[:, ~mask] = -np.inf
        return theta.argmax(axis=1)


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
        return self._uniform_arm(self._mask(mask))

    def update(self, arm: int, reward: float) -> None:
        self._check_arm(arm)
        self.t += 1


POLICIES: dict[str, type[_BasePolicy]] = {
    cls.name: cls
    for cls in (
        Exp3,
        Exp3S,
        Boltzmann,
        UCB1,
        SlidingWindowUCB,
        DiscountedUCB,
        ThompsonSampling,
        EpsilonGreedy,
        Greedy,
        Uniform,
    )
}


def make_policy(name: str, **kwargs: Any) -> Policy:
    """Build a policy by registry name; call ``reset(num_arms, seed)`` on it before use."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; valid names: {', '.join(POLICIES)}") from None
    return cls(**kwargs)
