"""``trl_lead/ProxyTraining-v0``: a cheap surrogate of LEAD's training dynamics, driven round by round.

Each step is one LEAD round run through the trainer's own round logic (``trl_lead.selection.RoundSelector``: IDU,
gradient correction, fine selection, reuse cap, budget, every round mode and reward); only the model is replaced by
a few numpy arrays of per-sample losses. Questions about rewards, round modes or policies can then be asked in
seconds before paying for a training run, and the surrogate can be calibrated from a real run's
``lead_rounds.jsonl`` (:meth:`ProxyTraining.from_rounds`).

numpy only: no torch is imported (``trl_lead.selection`` is numpy only, and ``trl_lead`` imports its trainer lazily).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from envs.calibration import calibrate, read_rounds
from envs.round_env import ActionPolicy, RoundEnv
from envs.surrogate import SCALAR_DEFAULTS, Surrogate, World, per_cluster
from trl_lead.selection import LEADState, RoundSelector
from trl_lead.settings import SelectionSettings

__all__ = ["DEFAULT_CLUSTERS", "ProxyTraining"]


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
        if settings.sample_filter == "small_loss" and settings.filter_min_spread > 0:
            unmodeled["filter_min_spread"] = (
                "the gate reads the spread of the surrogate's initial scores, which `heterogeneity` and `noise` set; "
                "at the defaults it lies about the default gate, so the filter cuts on some seeds and not on others; "
                "set `filter_min_spread=0` to cut on every seed"
            )
    return unmodeled


def _num_clusters(num_clusters: int | None, **per_cluster_values: Any) -> int:
    """K: the length of every per-cluster argument given as a sequence, and ``num_clusters``; they must agree
    (``len(DEFAULT_CLUSTERS)`` when none is given)."""
    lengths = {name: len(v) for name, v in per_cluster_values.items() if v is not None and np.ndim(v) == 1}
    if num_clusters is not None:
        lengths["num_clusters"] = int(num_clusters)
    if len(set(lengths.values())) > 1:
        raise ValueError(f"Inconsistent number of clusters: {lengths}.")
    k = next(iter(lengths.values()), len(DEFAULT_CLUSTERS))
    if k < 1:
        raise ValueError(f"num_clusters must be >= 1, got {k}.")
    return k


def _cluster_sizes(k: int, pool_size: int, weights: np.ndarray) -> np.ndarray:
    """``pool_size`` samples split over ``k`` clusters in proportion to ``weights`` (largest remainders)."""
    if int(pool_size) < k:
        raise ValueError(f"pool_size={pool_size} must be at least the number of clusters ({k}).")
    exact = pool_size * weights / weights.sum()
    sizes = np.floor(exact).astype(np.int64)
    sizes[np.argsort(sizes - exact, kind="stable")[: pool_size - sizes.sum()]] += 1
    return sizes


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
    (:meth:`World.cosines`): ``same_cluster_cosine`` for two rounds of the same single cluster,
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
    (:meth:`World.fork`: same selection draws as the real step, no observation noise): exact expectations for
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
        k = _num_clusters(
            num_clusters,
            sizes=sizes,
            initial_loss=initial_loss,
            floor=floor,
            skill_rate=skill_rate,
            noise=noise,
            memorization=memorization,
            forgetting=forgetting,
            drift_level=drift_level,
            cluster_names=cluster_names,
        )
        table = list(DEFAULT_CLUSTERS.values()) if k == len(DEFAULT_CLUSTERS) else None

        def default(name: str) -> np.ndarray:
            return np.array([row[name] for row in table]) if table else np.full(k, SCALAR_DEFAULTS[name])

        if sizes is None:
            sizes = _cluster_sizes(k, pool_size, default("weight") if table else np.ones(k))
        self.num_clusters = k
        self.sizes = np.asarray(sizes, dtype=np.int64)
        if (self.sizes < 1).any():
            raise ValueError(f"Every cluster needs at least one sample; sizes={self.sizes.tolist()}.")
        self.pool_size = int(self.sizes.sum())
        given = {"initial_loss": initial_loss, "floor": floor, "skill_rate": skill_rate, "noise": noise}
        for name, value in given.items():  # the default clusters' (or a medium cluster's) where not given
            setattr(self, name, default(name) if value is None else per_cluster(name, value, k))
        learning = {"memorization": memorization, "forgetting": forgetting, "drift_level": drift_level}
        for name, value in learning.items():
            setattr(self, name, per_cluster(name, value, k))
        self.memory_decay = float(memory_decay)
        self.noise_timescale = float(noise_timescale)
        self.heterogeneity = float(heterogeneity)
        self.batch_size = int(batch_size)
        self.eta = float(eta)
        self.same_cluster_cosine = float(same_cluster_cosine)
        self.cross_cluster_cosine = float(cross_cluster_cosine)
        self._check_dynamics()
        default_names = list(DEFAULT_CLUSTERS) if table else None
        self.cluster_names = list(cluster_names) if cluster_names is not None else default_names

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
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {self.max_rounds}.")
        self.compute_expected = bool(compute_expected)
        self.render_mode = render_mode
        self.mixture = self.settings.round_mode == "mixture"
        self.cluster = np.repeat(np.arange(k), self.sizes)  # sample i's cluster; ids are grouped by cluster
        self.calibration: dict[str, Any] | None = None  # set by from_rounds

        self._make_spaces()
        self._world: World | None = None
        self._steps = 0
        self._expected_cache: np.ndarray | None = None

    def _check_dynamics(self) -> None:
        """The surrogate's parameters within their ranges (ValueError naming the first rule broken)."""
        if self.batch_size < 1 or min(self.heterogeneity, self.memory_decay, self.noise_timescale) < 0:
            raise ValueError("batch_size must be >= 1; heterogeneity, memory_decay and noise_timescale >= 0.")
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

    def _require_world(self) -> World:
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
        self._world = World(
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
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        fitted, report = calibrate([read_rounds(p) for p in paths], clusters, overrides, fit)
        env = cls(**{**fitted, **overrides})
        env.calibration = report
        return env
