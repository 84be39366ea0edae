"""The proxy's model and world: per-sample surrogate losses, one round's world, per-cluster parameters.

Shared by ``ProxyTraining`` (``envs.proxy_training``) and its calibration (``envs.calibration``). numpy only.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from envs.round_env import ActionPolicy

#: Defaults of a cluster when K differs from ``len(DEFAULT_CLUSTERS)`` (a medium cluster).
SCALAR_DEFAULTS = {"initial_loss": 1.5, "floor": 0.5, "skill_rate": 0.01, "noise": 0.15}


class Surrogate:
    """Per-sample losses standing in for the model: the proxy's whole "training" (numpy, deep-copyable).

    The loss of sample i of cluster k is

        loss_i = base_i - gap_i * (1 - (1 - skill_k) * (1 - mem_i))

    with ``base_i`` its initial loss and ``base_i - gap_i`` its floor. ``skill_k`` (0 at the start, below 1, negative
    once drift left the cluster worse than at the start) is what the model knows of cluster k; it transfers to unseen
    samples of the cluster. ``mem_i`` (in [0, 1)) is what it memorised of sample i. Training one batch, in which
    cluster k has ``c_k`` of the ``B`` samples:

    - learning: ``skill_k <- 1 - (1 - skill_k) * exp(-skill_rate_k * c_k)`` (saturates: easy clusters quickly);
    - drift: ``skill_k <- drift_level_k + (skill_k - drift_level_k) * exp(-forgetting_k * (B - c_k))``: training
      other clusters pulls a cluster back towards ``drift_level_k`` (0: the initial model; < 0: worse than it, as
      single-cluster rounds do to a small model);
    - memorisation: ``mem_i <- 1 - (1 - mem_i) * (1 - memorization_k)`` for the batch's samples, and every
      memorisation decays by ``exp(-memory_decay)`` per sample trained after it (kept lazily, O(batch) per batch).

    A cluster with ``gap = 0`` (floor = initial loss) is unlearnable: its loss never moves. The IU of a sample is its
    loss before the update of its own batch (the forward pass comes before the step) plus an observation offset:
    Gaussian, standard deviation ``noise_k``, persistent over time as an Ornstein-Uhlenbeck process (correlation
    ``exp(-n / noise_timescale)`` between two measurements ``n`` trained samples apart; ``noise_timescale = 0``
    makes it i.i.d. measurement noise). Why persistent: a real model's loss of a sample is measured exactly, and
    what a cluster-level model misses is mostly per-sample idiosyncrasy that lasts; i.i.d. noise would make top-IDU
    selection harvest pure regression to the mean (the samples picked for a high noisy initial score "improve" by
    themselves), which real runs do not show. Offsets are drawn lazily at measurement, O(batch). Without a generator
    (the noise-free simulations) the offset takes its conditional mean ``rho * previous offset``.
    """

    def __init__(
        self,
        cluster: np.ndarray,
        base: np.ndarray,
        gap: np.ndarray,
        skill_rate: np.ndarray,
        memorization: np.ndarray,
        forgetting: np.ndarray,
        drift_level: np.ndarray,
        noise: np.ndarray,
        memory_decay: float,
        noise_timescale: float = 0.0,
    ) -> None:
        self.cluster = np.asarray(cluster, np.int64)
        self.num_clusters = len(skill_rate)
        self.base = np.asarray(base, np.float64)
        self.gap = np.asarray(gap, np.float64)
        self.skill_rate = np.asarray(skill_rate, np.float64)
        self.memorization = np.asarray(memorization, np.float64)
        self.forgetting = np.asarray(forgetting, np.float64)
        self.drift_level = np.asarray(drift_level, np.float64)
        self.noise = np.asarray(noise, np.float64)
        self.memory_decay = float(memory_decay)
        self.skill = np.zeros(self.num_clusters)
        self.mem = np.zeros(len(self.cluster))
        self.mem_time = np.zeros(len(self.cluster))
        self.noise_timescale = float(noise_timescale)
        self.offset = np.zeros(len(self.cluster))
        self.offset_time = np.full(len(self.cluster), -np.inf)  # -inf: never measured (stationary draw)
        self.time = 0  # samples trained so far

    def observe(self, ids: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Observation offsets of ``ids`` now (see the class docstring), recorded as their latest."""
        elapsed = self.time - self.offset_time[ids]
        rho = np.exp(-elapsed / self.noise_timescale) if self.noise_timescale > 0 else np.zeros(len(ids))
        rho = np.where(np.isfinite(elapsed), rho, 0.0)
        offset = rho * self.offset[ids]
        if rng is not None:
            offset = offset + self.noise[self.cluster[ids]] * np.sqrt(1.0 - rho**2) * rng.standard_normal(len(ids))
        self.offset[ids] = offset
        self.offset_time[ids] = self.time
        return offset

    def _memory(self, ids: np.ndarray) -> np.ndarray:
        return self.mem[ids] * np.exp(-self.memory_decay * (self.time - self.mem_time[ids]))

    def loss(self, ids: np.ndarray | None = None) -> np.ndarray:
        """Noise-free current loss of samples ``ids`` (all samples when None)."""
        ids = np.arange(len(self.cluster)) if ids is None else np.asarray(ids, np.int64)
        c = self.cluster[ids]
        return self.base[ids] - self.gap[ids] * (1.0 - (1.0 - self.skill[c]) * (1.0 - self._memory(ids)))

    def train(self, ids: np.ndarray, batch_size: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Train ``ids`` in order, ``batch_size`` per step; return each sample's IU (loss before its own step)."""
        ids = np.asarray(ids, np.int64)
        out = np.empty(len(ids))
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            c = self.cluster[batch]
            memory = self._memory(batch)
            loss = self.base[batch] - self.gap[batch] * (1.0 - (1.0 - self.skill[c]) * (1.0 - memory))
            out[start : start + len(batch)] = loss + self.observe(batch, rng)
            counts = np.bincount(c, minlength=self.num_clusters)
            skill = 1.0 - (1.0 - self.skill) * np.exp(-self.skill_rate * counts)
            self.skill = self.drift_level + (skill - self.drift_level) * np.exp(
                -self.forgetting * (len(batch) - counts)
            )
            self.time += len(batch)
            self.mem[batch] = 1.0 - (1.0 - memory) * (1.0 - self.memorization[c])
            self.mem_time[batch] = self.time
        return out


class World:
    """Everything one round changes: selector (with its LEADState and generator), surrogate, update directions.

    Kept together so that :meth:`fork` can copy it for the noise-free "what would arm k give" simulations.
    """

    def __init__(
        self,
        selector: Any,
        surrogate: Surrogate,
        adapter: ActionPolicy,
        batch_size: int,
        eta: float,
        same_cluster_cosine: float,
        cross_cluster_cosine: float,
    ) -> None:
        self.selector = selector
        self.surrogate = surrogate
        self.adapter = adapter
        self.batch_size = batch_size
        self.eta = eta
        self.same_cluster_cosine = same_cluster_cosine
        self.cross_cluster_cosine = cross_cluster_cosine
        self.last_share: dict[int, np.ndarray] = {}  # per cluster: cluster shares of the round that last trained it

    def cosines(self, ids: np.ndarray) -> dict[int, float]:
        """Cosine between this round's update and that of the round that last trained each cluster present.

        A round's update direction is modelled as ``sqrt(c) * g(share) + sqrt(1 - c) * z``: ``share`` the round's
        cluster shares, ``g`` its direction in a space where two clusters' directions have cosine
        ``cross_cluster_cosine`` (1 with themselves), ``z`` a round-specific direction orthogonal to everything and
        ``c = same_cluster_cosine``. So two rounds of the same single cluster have cosine ``same_cluster_cosine``
        (1.0 by default: the trainer's reading when a cluster's update keeps its direction), and mixtures in
        between. Records the shares for the clusters present.
        """
        k = self.surrogate.num_clusters
        share = np.bincount(self.surrogate.cluster[ids], minlength=k) / max(len(ids), 1)
        rho = self.cross_cluster_cosine

        def dot(u: np.ndarray, v: np.ndarray) -> float:
            return (1.0 - rho) * float(u @ v) + rho * float(u.sum() * v.sum())

        result = {}
        for cluster in np.flatnonzero(share).tolist():
            last = self.last_share.get(cluster)
            if last is not None:
                norm = math.sqrt(dot(share, share) * dot(last, last))
                result[cluster] = self.same_cluster_cosine * (dot(share, last) / norm if norm > 0 else 1.0)
            self.last_share[cluster] = share
        return result

    def run_round(self, action: Any, rng: np.random.Generator | None) -> dict[str, Any] | None:
        """Plan (asking the adapter for ``action``), train in the surrogate, finish; the round's record or None."""
        self.adapter.action = action
        planned = self.selector.plan_round()
        if planned is None or len(planned.sample_ids) == 0:
            return None
        return self.finish(planned, rng)

    def finish(self, planned: Any, rng: np.random.Generator | None) -> dict[str, Any]:
        ids = planned.sample_ids
        losses = self.surrogate.train(ids, self.batch_size, rng)
        cosines = self.cosines(ids)
        return self.selector.finish_round(planned, ids, losses, eta=self.eta, cos_with_last_visit=cosines)

    def fork(self) -> World:
        """Independent deep copy, sharing what no round mutates (labels, parameters, settings); the round log is
        copied shallowly (rounds only append to it)."""
        state, surrogate = self.selector.state, self.surrogate
        memo: dict[int, Any] = {id(state.rounds): list(state.rounds)}  # a shallow copy: only its length is read
        shared = [state.cluster, state.initial_iu, self.selector.settings]
        shared += [surrogate.cluster, surrogate.base, surrogate.gap, surrogate.skill_rate, surrogate.memorization]
        shared += [
            surrogate.forgetting,
            surrogate.drift_level,
            surrogate.noise,
            self.selector.cluster_members,
        ]
        for obj in shared:
            if obj is not None:
                memo[id(obj)] = obj
        return copy.deepcopy(self, memo)


def per_cluster(name: str, value: Any, k: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return np.full(k, float(array))
    if array.shape != (k,):
        raise ValueError(f"`{name}` must be a scalar or have one value per cluster ({k}), got shape {array.shape}.")
    return array.copy()
