"""``trl_lead/ProxyTraining-v0``: a cheap surrogate of LEAD's training dynamics, driven round by round.

Each step is one LEAD round run through the trainer's own round logic (``trl_lead.selection.RoundSelector``: IDU,
gradient correction, fine selection, reuse cap, budget, every round mode and reward); only the model is replaced by
a few numpy arrays of per-sample losses. Questions about rewards, round modes or policies can then be asked in
seconds before paying for a training run, and the surrogate can be calibrated from a real run's
``lead_rounds.jsonl`` (:meth:`ProxyTraining.from_rounds`).

numpy only: no torch is imported (``trl_lead.selection`` is numpy only, and ``trl_lead`` imports its trainer lazily).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from envs.round_env import ActionPolicy, RoundEnv
from trl_lead.selection import LEADState, RoundSelector
from trl_lead.settings import SelectionSettings

__all__ = ["DEFAULT_CLUSTERS", "ProxyTraining", "Surrogate"]


#: Default clusters, mimicking the embedded pool's families (``trl_lead.embedded.FAMILIES``): one easy cluster that
#: saturates within a few rounds, several medium ones, a hard one, one that is mostly memorisation and one
#: unlearnable ``noise`` cluster (floor = initial loss). Per cluster: relative size, initial mean loss (close to the
#: warmed-up embedded model's), floor, skill rate (per trained sample), and observation noise of one IU.
DEFAULT_CLUSTERS: dict[str, dict[str, float]] = {
    "easy": {"weight": 1.0, "initial_loss": 1.2, "floor": 0.1, "skill_rate": 0.05, "noise": 0.12},
    "copy": {"weight": 1.0, "initial_loss": 1.9, "floor": 0.3, "skill_rate": 0.02, "noise": 0.19},
    "format": {"weight": 0.75, "initial_loss": 2.2, "floor": 0.4, "skill_rate": 0.02, "noise": 0.22},
    "reverse": {"weight": 1.0, "initial_loss": 2.1, "floor": 0.6, "skill_rate": 0.01, "noise": 0.21},
    "sort": {"weight": 1.0, "initial_loss": 0.65, "floor": 0.15, "skill_rate": 0.02, "noise": 0.07},
    "add": {"weight": 2.0, "initial_loss": 1.1, "floor": 0.5, "skill_rate": 0.004, "noise": 0.11},
    "lookup": {"weight": 2.0, "initial_loss": 0.75, "floor": 0.3, "skill_rate": 0.002, "noise": 0.08},
    "noise": {"weight": 1.5, "initial_loss": 2.85, "floor": 2.85, "skill_rate": 0.0, "noise": 0.28},
}
#: Defaults of a cluster when K differs from ``len(DEFAULT_CLUSTERS)`` (a medium cluster).
_SCALAR_DEFAULTS = {"initial_loss": 1.5, "floor": 0.5, "skill_rate": 0.01, "noise": 0.15}


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


class _World:
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

    def fork(self) -> _World:
        """Independent deep copy, sharing what no round mutates (labels, parameters, settings); the round log is
        copied shallowly (rounds only append to it)."""
        state, surrogate = self.selector.state, self.surrogate
        memo: dict[int, Any] = {id(state.rounds): list(state.rounds)}  # a shallow copy: only its length is read
        shared = [state.cluster, getattr(state, "initial_iu", None), self.selector.settings]
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


def _per_cluster(name: str, value: Any, k: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return np.full(k, float(array))
    if array.shape != (k,):
        raise ValueError(f"`{name}` must be a scalar or have one value per cluster ({k}), got shape {array.shape}.")
    return array.copy()


def unmodeled_settings(settings: SelectionSettings) -> dict[str, str]:
    """The settings in `settings` the proxy cannot model, each with why (empty when it models them all)."""
    unmodeled = {}
    if settings.sample_filter != "none":
        unmodeled["sample_filter"] = (
            "the surrogate's samples hold no wrong answers: the filter narrows selection by loss alone, and what it "
            "is for (keeping wrong answers out) does not happen"
        )
        if settings.sample_filter == "small_loss" and settings.filter_groups == "prompts":
            unmodeled["filter_groups"] = "the surrogate has no prompts: the small-loss filter compares within clusters"
    return unmodeled


class ProxyTraining(RoundEnv):
    """LEAD rounds on a numpy surrogate of the training dynamics, through the trainer's own selection code.

    ## Description

    A pool of ``N`` samples in ``K`` clusters, each cluster with its own size, initial loss, floor, learning rate
    and noise (:class:`Surrogate` has the equations). Each step is ONE LEAD round, planned and finished by
    ``trl_lead.selection.RoundSelector`` with the env's settings (``self.settings``: the same ``SelectionSettings`` the
    trainer builds, from the same preset, ``"default"`` unless ``preset`` says otherwise, with the env's round size,
    budget and warm-up rounds) exactly as ``LEADSFTTrainer`` does: the action
    picks the cluster, the fine rule picks the samples, the surrogate "trains" them in batches of ``batch_size``, and
    the loss of each trained sample measured before its own update (plus observation noise) is its IU. Samples fall
    as they are trained (memorisation) and as their cluster is trained (a skill that transfers to unseen samples),
    and rise back as the model drifts (training other clusters pulls a cluster's skill towards ``drift_level``).

    Gradient correction: ``eta`` is fixed (1.0 = a constant learning-rate schedule, where the trainer passes
    ``lr / peak_lr`` = 1) and the cosine between two rounds' updates comes from their cluster shares
    (:meth:`_World.cosines`): ``same_cluster_cosine`` for two rounds of the same single cluster,
    ``cross_cluster_cosine`` between different clusters.

    Settings are given by the ``lead_*`` names without ``lead_`` (``round_mode="single"``, ``reward``, ``max_reuse``,
    ``initial_score``, ``sample_filter``, ...; not ``policy``: the agent acting on the env is the policy).
    What the proxy cannot model (``self.unmodeled``, reported by ``envs.benchmark``): the sample filter's purpose (its
    samples hold no wrong answers, so ``sample_filter`` narrows selection by loss alone) and prompt groups (it has no
    prompts, so ``filter_groups="prompts"`` compares within clusters).

    ## Action Space

    ``round_mode="single"``: ``Discrete(K)``, the cluster of the round. A masked cluster (no eligible sample,
    ``info["action_mask"]`` False) is a ``ValueError``, as the trainer's policies never choose one.
    ``round_mode="mixture"``: ``Box(0, 1, (K,), float32)``, arm weights; masked arms are zeroed, the rest normalised
    to the probabilities the selector splits the round by (all zero: uniform over the allowed arms).

    ## Observation Space

    ``Box(float32, (2K,))``: per cluster the mean IDU of its observed samples (NaN -> 0, clipped to
    +-``IDU_BOUND``), then per cluster the fraction of its samples still eligible (under the reuse cap, and already
    selected once the budget is spent), in [0, 1].

    ## Rewards

    The trainer's reward: ``record["reward"]`` of ``RoundSelector.finish_round`` for the env's ``reward``
    (``"idu_drop"``, ``"first_visit"``, ``"mean_idu"``, ``"loss_drop"``), raw (not normalised). In mixture mode,
    the mean of the per-cluster rewards of the arms present, as in the trainer.

    ## Starting State

    ``reset(seed=s)`` draws everything from ``self.np_random``: each sample's initial loss (its cluster's times a
    log-normal factor of spread ``heterogeneity``; the floor scales with it), the initial scores (``initial_score=
    "loss"``: initial losses plus observation noise, the base model's scoring pass; ``"none"``: no scores), the
    selector's seed and the observation noise of every step. Warm-up rounds (``warmup_rounds``) are run inside
    ``reset``. The same seed and actions give the same trajectory, also with ``compute_expected=False``.

    ## Episode End

    ``terminated`` when no sample is eligible any more (the selector would plan no round: budget spent and every
    selected sample at the reuse cap); ``truncated`` after ``max_rounds`` steps.

    ## Info

    A fresh dict per ``reset``/``step``:

    | key | meaning |
    |---|---|
    | ``expected_rewards`` | float64 (K,): per arm, the reward of this step's round on that arm alone, noise-free |
    | ``regret`` | ``nanmax(expected_rewards) - expected reward of the action`` (step only) |
    | ``action_mask`` | bool (K,): ``selector.arm_mask()`` for the NEXT step (clusters with eligible samples) |
    | ``quality`` | held-out quality proxy: mean skill over learnable clusters (gap > 0), see below |
    | ``quality_detail`` | ``{"skill", "loss", "loss_learnable"}``: per cluster the skill and the held-out loss |
    | ``round``, ``cluster``, ``selected``, ``filled``, ``cluster_rewards`` | the round's record (step only) |

    ``expected_rewards`` are computed by running each allowed arm's round on a copy of the surrogate and selector
    (:meth:`_World.fork`: same selection draws as the real step, no observation noise): exact expectations for
    rewards linear in the noise (``idu_drop``, ``mean_idu``, ``loss_drop``, ``first_visit``) up to the clipping
    inside the gradient correction. Masked arms get NaN. Cost: one deep copy and one round per allowed arm (about
    1.5 ms each at the defaults, K = 8, N = 2000, so a step takes ~12-15 ms instead of ~1.5 ms; the copies grow
    with N); ``compute_expected=False`` skips them, and then ``expected_rewards`` is all NaN and ``regret`` NaN.
    In mixture mode ``regret`` compares the best single arm with the action's own mixture round (one more
    simulation), so it may be negative.

    ``quality``: mean over learnable clusters of ``skill_k``, the share of a cluster's learnable loss (initial loss
    minus floor) the model has removed on samples it never trained on: a held-out score of the surrogate model, 0 at
    the start, up to 1, negative when drift left a cluster worse than at the start. ``LiveTraining`` reports under the
    same key the real model's held-out exact match over the learnable families (a fraction): both rank the models
    a policy trains, higher being better, but the proxy's is a share of loss removed, not an exact-match rate (it
    starts at 0 where the live one starts at the base model's exact match). ``quality_detail["loss"]``: per cluster
    the held-out loss ``initial_loss - skill * (initial_loss - floor)``; ``"loss_learnable"``: its mean over the
    learnable clusters.

    ## Arguments

    | argument | default | meaning |
    |---|---|---|
    | ``num_clusters`` | None | K; default: the length of a per-cluster argument, else ``len(DEFAULT_CLUSTERS)`` |
    | ``pool_size`` | 2000 | N when ``sizes`` is not given (split by the default weights, or evenly) |
    | ``sizes`` | None | samples per cluster |
    | ``initial_loss``, ``floor``, ``skill_rate``, ``noise`` | ``DEFAULT_CLUSTERS`` | per cluster or scalar |
    | ``memorization`` | 0.3 | per cluster or scalar: share of a sample's loss memorised per training |
    | ``forgetting`` | 0.005 | per cluster or scalar: drift rate per sample trained from other clusters |
    | ``drift_level`` | -1.0 | per cluster or scalar: skill that drift pulls towards (0 = initial model) |
    | ``memory_decay`` | 0.0005 | memorisation decay per sample trained |
    | ``noise_timescale`` | 1000 | samples trained over which a sample's observation offset decorrelates (0: i.i.d.) |
    | ``heterogeneity`` | 0.3 | log-normal spread of per-sample initial losses within a cluster |
    | ``batch_size`` | 16 | samples per optimizer step inside a round |
    | ``eta``, ``same_cluster_cosine``, ``cross_cluster_cosine`` | 1.0, 1.0, 0.2 | gradient correction inputs |
    | ``round_size`` | 32 | samples per round (int, or fraction of N when < 1) |
    | ``budget`` | 0.25 | distinct samples ever selected (fraction of N when <= 1, else count) |
    | ``preset`` | "default" | the selection settings' preset (``trl_lead.settings.PRESETS``), as ``lead_preset`` |
    | other preset settings | the preset's | ``lead_*`` names without ``lead_``: ``round_mode``, ``reward``, ... |
    | ``warmup_rounds`` | 0 | uniform random rounds run in ``reset`` before the first step |
    | ``max_rounds`` | 60 | steps before truncation (``max_steps`` is an alias, the name ``envs.benchmark`` sets) |
    | ``compute_expected`` | True | compute ``expected_rewards``/``regret`` (K extra rounds per step) |
    | ``cluster_names`` | None | names for the clusters (reporting only) |

    ## Example

    >>> import gymnasium, envs
    >>> env = gymnasium.make("trl_lead/ProxyTraining-v0", reward="first_visit")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(0)
    >>> bool(info["regret"] >= 0)
    True
    """

    def __init__(
        self,
        num_clusters: int | None = None,
        pool_size: int = 2000,
        sizes: Sequence[int] | None = None,
        initial_loss: float | Sequence[float] | None = None,
        floor: float | Sequence[float] | None = None,
        skill_rate: float | Sequence[float] | None = None,
        noise: float | Sequence[float] | None = None,
        memorization: float | Sequence[float] = 0.3,
        forgetting: float | Sequence[float] = 0.005,
        drift_level: float | Sequence[float] = -1.0,
        memory_decay: float = 0.0005,
        noise_timescale: float = 1000.0,
        heterogeneity: float = 0.3,
        batch_size: int = 16,
        eta: float = 1.0,
        same_cluster_cosine: float = 1.0,
        cross_cluster_cosine: float = 0.2,
        round_size: float = 32,
        budget: float = 0.25,
        warmup_rounds: int = 0,
        max_rounds: int = 60,
        max_steps: int | None = None,
        compute_expected: bool = True,
        cluster_names: Sequence[str] | None = None,
        render_mode: str | None = None,
        preset: str = "default",
        **selection: Any,
    ) -> None:
        if render_mode is not None:
            raise ValueError("ProxyTraining has no rendering; use render_mode=None")
        per_cluster = {
            "sizes": sizes,
            "initial_loss": initial_loss,
            "floor": floor,
            "skill_rate": skill_rate,
            "noise": noise,
            "memorization": memorization,
            "forgetting": forgetting,
            "drift_level": drift_level,
            "cluster_names": cluster_names,
        }
        lengths = {name: len(v) for name, v in per_cluster.items() if v is not None and np.ndim(v) == 1}
        if num_clusters is not None:
            lengths["num_clusters"] = int(num_clusters)
        if len(set(lengths.values())) > 1:
            raise ValueError(f"Inconsistent number of clusters: {lengths}.")
        k = next(iter(lengths.values()), len(DEFAULT_CLUSTERS))
        if k < 1:
            raise ValueError(f"num_clusters must be >= 1, got {k}.")
        table = list(DEFAULT_CLUSTERS.values()) if k == len(DEFAULT_CLUSTERS) else None

        def default(name: str) -> np.ndarray:
            return np.array([row[name] for row in table]) if table else np.full(k, _SCALAR_DEFAULTS[name])

        if sizes is None:
            if int(pool_size) < k:
                raise ValueError(f"pool_size={pool_size} must be at least the number of clusters ({k}).")
            weights = default("weight") if table else np.ones(k)
            exact = pool_size * weights / weights.sum()
            sizes_ = np.floor(exact).astype(np.int64)
            sizes_[np.argsort(sizes_ - exact, kind="stable")[: pool_size - sizes_.sum()]] += 1
        else:
            sizes_ = np.asarray(sizes, dtype=np.int64)
        if (sizes_ < 1).any():
            raise ValueError(f"Every cluster needs at least one sample; sizes={sizes_.tolist()}.")
        self.num_clusters = k
        self.sizes = sizes_
        self.pool_size = int(sizes_.sum())
        self.initial_loss = (
            default("initial_loss") if initial_loss is None else _per_cluster("initial_loss", initial_loss, k)
        )
        self.floor = default("floor") if floor is None else _per_cluster("floor", floor, k)
        self.skill_rate = default("skill_rate") if skill_rate is None else _per_cluster("skill_rate", skill_rate, k)
        self.noise = default("noise") if noise is None else _per_cluster("noise", noise, k)
        self.memorization = _per_cluster("memorization", memorization, k)
        self.forgetting = _per_cluster("forgetting", forgetting, k)
        self.drift_level = _per_cluster("drift_level", drift_level, k)
        checks = {
            "initial_loss >= floor": self.initial_loss >= self.floor,
            "skill_rate >= 0": self.skill_rate >= 0,
            "noise >= 0": self.noise >= 0,
            "0 <= memorization < 1": (self.memorization >= 0) & (self.memorization < 1),
            "forgetting >= 0": self.forgetting >= 0,
            "drift_level <= 0": self.drift_level <= 0,
        }
        for rule, ok in checks.items():
            if not np.all(ok):
                raise ValueError(f"Per-cluster parameters must satisfy {rule}; check the values passed.")
        if int(batch_size) < 1 or min(heterogeneity, memory_decay, noise_timescale) < 0:
            raise ValueError("batch_size must be >= 1; heterogeneity, memory_decay and noise_timescale >= 0.")
        self.memory_decay = float(memory_decay)
        self.noise_timescale = float(noise_timescale)
        self.heterogeneity = float(heterogeneity)
        self.batch_size = int(batch_size)
        self.eta = float(eta)
        self.same_cluster_cosine = float(same_cluster_cosine)
        self.cross_cluster_cosine = float(cross_cluster_cosine)
        self.cluster_names = (
            list(cluster_names) if cluster_names is not None else list(DEFAULT_CLUSTERS) if table else None
        )

        if "policy" in selection:
            raise ValueError("ProxyTraining takes no `policy`: the agent acting on the env is the policy.")
        self.max_rounds = int(max_steps if max_steps is not None else max_rounds)
        # The same settings object as the trainer's, from the same preset (budget pacing over the episode's rounds)
        self.settings = SelectionSettings.for_pool(
            self.pool_size, round_size, budget, preset, self.max_rounds, int(warmup_rounds), prefix="", **selection
        )
        self.initial_score = self.settings.initial_score
        self.round_size = self.settings.round_size
        self.unmodeled = unmodeled_settings(self.settings)
        self.max_rounds = int(max_steps if max_steps is not None else max_rounds)
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {self.max_rounds}.")
        self.compute_expected = bool(compute_expected)
        self.render_mode = render_mode
        self.mixture = self.settings.round_mode == "mixture"
        self.cluster = np.repeat(np.arange(k), self.sizes)  # sample i's cluster; ids are grouped by cluster
        self.calibration: dict[str, Any] | None = None  # set by from_rounds

        self._make_spaces()
        self._world: _World | None = None
        self._steps = 0
        self._expected_cache: np.ndarray | None = None

    # ------------------------------------------------------------------ views
    @property
    def lead_state(self) -> Any:
        """The ``LEADState`` of the current episode (as ``trainer.lead_state``)."""
        return self._require_world().selector.state

    @property
    def selector(self) -> Any:
        """The ``RoundSelector`` of the current episode."""
        return self._require_world().selector

    @property
    def surrogate(self) -> Surrogate:
        """The :class:`Surrogate` of the current episode."""
        return self._require_world().surrogate

    def _require_world(self) -> _World:
        if self._world is None:
            raise RuntimeError("Call reset() before using the environment.")
        return self._world

    def quality(self) -> float:
        """Mean skill over learnable clusters (see the class docstring); NaN if no cluster is learnable."""
        learnable = self.initial_loss > self.floor
        return float(np.mean(self.surrogate.skill[learnable])) if learnable.any() else math.nan

    def quality_detail(self) -> dict[str, Any]:
        """Per cluster the skill and the held-out loss (a never-trained sample's loss, see the class docstring)."""
        skill = self.surrogate.skill
        loss = self.initial_loss - skill * (self.initial_loss - self.floor)
        learnable = self.initial_loss > self.floor
        return {
            "skill": skill.tolist(),
            "loss": loss.tolist(),
            "loss_learnable": float(np.mean(loss[learnable])) if learnable.any() else math.nan,
        }

    def _observation(self) -> np.ndarray:
        return self._observation_of(self._world.selector)

    # ------------------------------------------------------------------ expected rewards
    def _action_for_arm(self, arm: int) -> Any:
        if not self.mixture:
            return arm
        weights = np.zeros(self.num_clusters, np.float32)
        weights[arm] = 1.0
        return weights

    def _simulate(self, action: Any) -> float:
        record = self._world.fork().run_round(action, None)
        return math.nan if record is None else float(record["reward"])

    def _expected_rewards(self) -> np.ndarray:
        mask = self._world.selector.arm_mask()
        return np.array(
            [self._simulate(self._action_for_arm(a)) if mask[a] else math.nan for a in range(self.num_clusters)]
        )

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        k = self.num_clusters
        spread = self.heterogeneity
        factor = np.exp(spread * rng.standard_normal(self.pool_size) - spread**2 / 2)  # mean 1
        base = self.initial_loss[self.cluster] * factor
        gap = (self.initial_loss - self.floor)[self.cluster] * factor
        surrogate = Surrogate(
            self.cluster, base, gap, self.skill_rate, self.memorization, self.forgetting, self.drift_level,
            self.noise, self.memory_decay, self.noise_timescale,
        )  # fmt: skip
        state = LEADState(self.cluster, num_clusters=k)
        if self.initial_score == "loss":  # the base model's scoring pass: initial losses as observed
            state.set_initial_scores(base + surrogate.observe(np.arange(self.pool_size), rng))
        adapter = ActionPolicy(k, mixture=self.mixture)
        selector = RoundSelector(state, adapter, self.settings, seed=int(rng.integers(2**31)))
        self._world = _World(
            selector, surrogate, adapter, self.batch_size, self.eta, self.same_cluster_cosine,
            self.cross_cluster_cosine,
        )  # fmt: skip
        self._steps = 0
        for _ in range(self.settings.warmup_rounds):
            if self._world.run_round(None, rng) is None:
                break
        self._expected_cache = self._expected_rewards() if self.compute_expected else None
        info = {
            "expected_rewards": (
                self._expected_cache.copy() if self._expected_cache is not None else np.full(k, math.nan)
            ),
            "action_mask": selector.arm_mask().copy(),
            "quality": self.quality(),
            "quality_detail": self.quality_detail(),
        }
        return self._observation(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        world = self._require_world()
        mask = world.selector.arm_mask()
        if not mask.any():
            raise RuntimeError("No sample is eligible: the episode has terminated; call reset().")
        action = self._checked_action(action, mask)
        if self.compute_expected:
            expected = self._expected_cache if self._expected_cache is not None else self._expected_rewards()
            expected = expected.copy()
            chosen = self._simulate(action) if self.mixture else expected[action]
            regret = float(np.nanmax(expected) - chosen)
        else:
            expected, regret = np.full(self.num_clusters, math.nan), math.nan
        self._expected_cache = None
        record = world.run_round(action, self.np_random)
        self._steps += 1
        next_mask = world.selector.arm_mask().copy()
        info = {
            "expected_rewards": expected,
            "regret": regret,
            "action_mask": next_mask,
            "quality": self.quality(),
            "quality_detail": self.quality_detail(),
            **self._record_info(record),
        }
        terminated = not next_mask.any()
        truncated = self._steps >= self.max_rounds and not terminated
        return self._observation(), float(record["reward"]), terminated, truncated, info

    # ------------------------------------------------------------------ calibration
    @classmethod
    def from_rounds(
        cls,
        path: str | os.PathLike[str],
        *,
        clusters: Sequence[int] | np.ndarray | None = None,
        fit: bool = True,
        **overrides: Any,
    ) -> ProxyTraining:
        """A proxy calibrated on real runs' ``lead_rounds.jsonl`` (a file, an output folder holding one, or a list).

        Several runs on the same pool (e.g. different seeds or policies) are fitted jointly, which constrains the
        per-cluster parameters better than one run's few visits per cluster. What is read from the records, and how:

        - K: the length of ``cluster_mean_idu``. Sizes: from ``clusters`` (the pool's cluster label per sample id,
          e.g. ``train_dataset["family_id"]``) when given, else ``sizes``/``pool_size`` overrides, else an even split
          of ``max(sample id) + 1`` (the records do not hold the pool's cluster sizes).
        - Round size: the largest round; budget: the largest ``selected``; batch size: round size over optimizer
          steps per round (from the ``step`` field), each unless overridden.
        - Initial loss per cluster: the first record's ``cluster_mean_idu``, with the IDU change of the samples that
          round trained added back (mean over runs).
        - ``eta`` (median ``predicted_drop / d`` where ``beta = 0``) and ``same_cluster_cosine`` (median cosine that
          reproduces the recorded ``predicted_drop`` where ``0 < beta < 1``) from the gradient-correction records.
        - Per cluster: floor and skill rate; shared by all clusters: drift level, forgetting and memorisation.
          Fitted by weighted least squares on the recorded per-(round, cluster) loss drops ``correction[k]["d"]`` (mean
          IDU before minus IU during the round, weighted by the cluster's samples in the round): the recorded rounds
          (same sample ids, same order) are replayed noise-free through the same ``finish_round``, and a grid
          search by coordinate descent (``envs.calibration._FIT_STAGES``, two sweeps) picks the parameters. In such a
          replay the drops of a cluster scale with its learnable gap (initial loss minus floor), which is therefore
          solved in closed form, and clusters do not interact, so one replay per grid point fits every cluster at
          once (~40 replays per run, 1-2 s per run of 60 rounds).
        - Observation noise: ``envs.calibration.NOISE_SHARE`` times the initial loss. The records cannot tell noise
          from misfit (a fit of it on the residuals gave noise so large that top-IDU selection harvested regression
          to the mean); override ``noise`` to change it.

        Settings the records do not hold (``smoothing``, ``gradient_correction``, ``reward``, ``fine_selection``,
        ``max_reuse``, ``initial_score``, ``round_mode``, ...) are those of ``preset`` (``"default"`` unless given in
        ``overrides``) unless overridden: pass the real run's. Any constructor argument in ``overrides`` replaces the
        fitted value (and fixes it in the fit). ``fit=False`` skips the least squares (default dynamics). The
        result's ``calibration`` attribute holds the
        fitted values and per cluster the R^2 of the fitted drops.
        """
        from envs.calibration import calibrate, read_rounds  # it builds on this module

        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        fitted, report = calibrate([read_rounds(p) for p in paths], clusters, overrides, fit)
        env = cls(**{**fitted, **overrides})
        env.calibration = report
        return env
