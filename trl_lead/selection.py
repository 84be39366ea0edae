"""LEAD's round logic in numpy: IDU recursion, coarse (cluster) and fine (sample) selection, budget, rewards.

Shared by `LEADSFTTrainer` and the `ProxyTraining` environment, so it imports no torch. The algorithm is the one of
docs/design.md (What LEAD computes); one round is:

1. `RoundSelector.plan_round()`: the policy picks a cluster (or a mixture), the fine rule picks samples among the
   eligible ones (reuse cap, budget; with `budget_pace_rounds`, new samples at the pace's rate and the rest of the
   round revisits), shortfalls are filled from other clusters.
2. The caller trains on `round.sample_ids` and records one loss (IU) per trained sample.
3. `RoundSelector.finish_round(ids, losses, ...)`: IU/IDU updated with the gradient correction, reward computed,
   normalised and fed to the policy.

The sample filter lives in `trl_lead.filters`, the reward rules and their scaling in `trl_lead.rewards`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .filters import group_cuts, group_spread, loss_z_excluded
from .rewards import REWARD_RULES, ClusterVisit, QuantileNormalizer, RewardNormalizer, give_rewards
from .settings import SelectionSettings, auto_filter_keep, check_budget, check_policy


def predicted_drop(eta: float, d_prev: float, d_k: float | None, cos_phi: float) -> tuple[float, float]:
    """Gradient-based estimate `dL'` of a cluster's loss drop, and the `beta*` it uses (docs/design.md).

    `dL' = eta * ||beta u + (1 - beta) v||^2` with `||u||^2 = d_k`, `||v||^2 = d_prev`, `<u, v> = sqrt(d_k d_prev)
    cos(phi)`, at the `beta*` that minimises it (clipped to [0, 1]; 0/0 -> 1). Without `d_k` (the cluster's first
    visit) it is `eta * d_prev` (beta = 0), as the official code does. Negative sizes are clipped to 0.

    Args:
        eta (`float`): learning-rate factor.
        d_prev (`float`): size of the previous round's update.
        d_k (`float` or `None`): size of the update of the round that last trained the cluster.
        cos_phi (`float`): cosine of the angle between those two updates.
    """
    d_prev = max(float(d_prev), 0.0)
    if d_k is None or not math.isfinite(d_k):
        return eta * d_prev, 0.0
    d_k = max(float(d_k), 0.0)
    cross = math.sqrt(d_k * d_prev) * float(np.clip(cos_phi, -1.0, 1.0))
    denominator = d_k + d_prev - 2.0 * cross
    beta = 1.0 if denominator <= 1e-30 else float(np.clip((d_prev - cross) / denominator, 0.0, 1.0))
    drop = eta * (beta**2 * d_k + (1 - beta) ** 2 * d_prev + 2 * beta * (1 - beta) * cross)
    return max(drop, 0.0), beta


def draw_candidates(count: int, pool_size: int, seed: int, clusters: np.ndarray | None = None) -> np.ndarray:
    """`count` distinct samples of `0..pool_size-1`, sorted, drawn once (`lead_candidates`): uniformly, or with
    `clusters` each cluster's share of them in proportion to its size (largest remainders), so that the candidates
    keep the pool's make-up and a small cluster is not left out by chance."""
    rng = np.random.default_rng(seed)
    if clusters is None:
        return np.sort(rng.choice(pool_size, count, replace=False))
    labels, sizes = np.unique(clusters, return_counts=True)
    quota = count * sizes / pool_size
    take = np.floor(quota).astype(np.int64)
    take[np.argsort(-(quota - take), kind="stable")[: count - take.sum()]] += 1
    picked = [rng.choice(np.flatnonzero(clusters == k), t, replace=False) for k, t in zip(labels, take)]
    return np.sort(np.concatenate(picked))


def round_distribution(policy: Any, mask: np.ndarray, slots: int) -> np.ndarray:
    """The arm distribution a mixture round is split by: the policy's `probabilities(mask)`, or for a policy without
    them its batched round, the share of the round's `slots` each arm gets from `allocate(slots, mask)` (each
    policy's docstring gives its rule)."""
    if callable(getattr(policy, "probabilities", None)):
        return np.asarray(policy.probabilities(mask), dtype=np.float64)
    counts = np.asarray(policy.allocate(slots, mask), dtype=np.float64)
    return counts / counts.sum()


@dataclass
class PlannedRound:
    """One round's plan: which samples, from which cluster, and why."""

    index: int
    arms: list[int]  # clusters the policy chose (one in single mode)
    sample_ids: np.ndarray  # int64, training order
    filled: np.ndarray  # bool per sample: taken from another cluster to fill a shortfall
    probabilities: list[float] | None = None  # the policy's arm distribution, when it has one
    warmup: bool = False
    filtered: dict[str, int] = field(default_factory=dict)  # per chosen cluster: eligible samples the filter excluded


class LEADState:
    """Per-sample selection state of a pool of N samples (docs/design.md, Selection state: `trainer.lead_state`).

    Arrays (length N): `iu` last instantaneous loss (NaN = never observed), `idu` dynamic uncertainty (NaN = never
    observed), `first_iu` the IU at a sample's first training, `use_count`, `cluster`. Per cluster: `cluster_drop`
    (the loss drop of the round that last trained it, `d_k`), `cluster_round` (that round's index) and
    `cluster_first_visit_iu` (mean IU of first-time samples at its last visit). `rounds`: one dict per round.
    """

    def __init__(self, cluster: np.ndarray, num_clusters: int | None = None):
        cluster = np.asarray(cluster)
        if cluster.ndim != 1 or len(cluster) == 0:
            raise ValueError("`cluster` must be a non-empty 1-D array of cluster labels, one per sample.")
        if not np.issubdtype(cluster.dtype, np.integer) or cluster.min() < 0:
            raise ValueError("`cluster` labels must be integers >= 0; map strings to ids first.")
        n = len(cluster)
        self.num_clusters = int(num_clusters if num_clusters is not None else cluster.max() + 1)
        # Compact per-sample arrays (float32 losses, int32 cluster, int16 count: 18 bytes, 22 with initial scores),
        # so a pool of 10M samples costs ~220 MB
        self.cluster = cluster.astype(np.int32)
        self.iu = np.full(n, np.nan, dtype=np.float32)
        self.idu = np.full(n, np.nan, dtype=np.float32)
        self.first_iu = np.full(n, np.nan, dtype=np.float32)
        self.use_count = np.zeros(n, dtype=np.int16)
        self.cluster_drop = np.full(self.num_clusters, np.nan)
        self.cluster_round = np.full(self.num_clusters, -1, dtype=np.int64)
        self.cluster_first_visit_iu = np.full(self.num_clusters, np.nan)
        self.rounds: list[dict[str, Any]] = []
        self.initial_iu: np.ndarray | None = None  # the base model's loss per sample (`set_initial_scores`)
        self.filter_group: np.ndarray | None = None  # the small-loss filter's comparison groups; None: the clusters
        self._cuts: tuple[float, np.ndarray] | None = None
        self._spread: float | None = None
        self.version = 0  # bumped when arrays are replaced wholesale, so selectors rebuild their caches

    def __len__(self) -> int:
        return len(self.cluster)

    @property
    def num_selected(self) -> int:
        return int((self.use_count > 0).sum())

    def set_initial_scores(self, losses: np.ndarray) -> None:
        """The base model's loss of every sample: the initial IU and IDU of samples not yet trained."""
        losses = np.asarray(losses, dtype=np.float32)
        if losses.shape != self.iu.shape:
            raise ValueError(f"Expected {len(self)} initial scores, got shape {losses.shape}.")
        unseen = self.use_count == 0
        self.iu[unseen] = losses[unseen]
        self.idu[unseen] = losses[unseen]
        self.initial_iu = losses.copy()
        self._cuts = self._spread = None
        self.version += 1

    def set_idu(self, values: np.ndarray) -> None:
        """Replace every sample's IDU (e.g. with fresh scores of the current model; NaN: never observed)."""
        values = np.asarray(values, dtype=np.float32)
        if values.shape != self.idu.shape:
            raise ValueError(f"Expected {len(self)} IDU values, got shape {values.shape}.")
        self.idu[:] = values
        self.version += 1  # selectors rebuild their per-cluster caches

    def set_filter_groups(self, groups: np.ndarray) -> None:
        """Comparison groups of the small-loss filter, one label (>= 0) per sample: a never-trained sample may be
        selected when its initial score is among the lowest `keep` share of its group's (rather than its cluster's).

        Groups of similar prompts (`lead_filter_groups="prompts"`) compare answers to the same kind of instruction
        across clusters, so a cluster of wrong answers to other clusters' prompts (a bad source) loses to them."""
        groups = np.asarray(groups)
        if groups.shape != self.cluster.shape or not np.issubdtype(groups.dtype, np.integer) or groups.min() < 0:
            raise ValueError(f"Expected {len(self)} integer filter groups >= 0, got {groups.dtype} {groups.shape}.")
        self.filter_group = groups.astype(np.int32)
        self._cuts = self._spread = None
        self.version += 1

    def small_loss_cuts(self, keep: float) -> np.ndarray:
        """Per sample, the small-loss cut of its filter group: the `ceil(keep * m)`-th lowest of the group's m finite
        initial scores (NaN where the group has none, which excludes nothing). Computed once per `keep`."""
        if self._cuts is None or self._cuts[0] != keep:
            self._cuts = (keep, group_cuts(self.initial_iu, self.filter_group, keep))
        return self._cuts[1]

    def filter_spread(self) -> float:
        """`trl_lead.filters.group_spread` of the initial scores within the filter groups (the clusters when there
        are none): the small-loss filter's gate (`lead_filter_min_spread`). NaN without initial scores."""
        if self._spread is None:
            groups = self.filter_group if self.filter_group is not None else self.cluster
            self._spread = math.nan if self.initial_iu is None else group_spread(self.initial_iu, groups)
        return self._spread

    _ARRAYS = ("cluster", "iu", "idu", "first_iu", "use_count", "cluster_drop", "cluster_round",
               "cluster_first_visit_iu")  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in self._ARRAYS}
        optional = {"initial_iu": self.initial_iu, "filter_group": self.filter_group}
        state.update({name: value for name, value in optional.items() if value is not None})
        state["num_clusters"] = np.int64(self.num_clusters)
        return state

    def load_state_dict(self, state: dict[str, Any], rounds: list[dict[str, Any]] | None = None) -> None:
        if len(state["cluster"]) != len(self) or not np.array_equal(state["cluster"], self.cluster):
            raise ValueError("The saved LEAD state belongs to another pool (its clusters differ from this dataset's).")
        for name in self._ARRAYS:
            setattr(self, name, np.array(state[name], dtype=getattr(self, name).dtype))
        if "initial_iu" in state:
            self.initial_iu = np.array(state["initial_iu"])
        if "filter_group" in state:
            self.filter_group = np.array(state["filter_group"], dtype=np.int32)
        self._cuts = self._spread = None
        if rounds is not None:
            self.rounds = list(rounds)
        self.version += 1


@dataclass
class RoundSelector:
    """Plans and finishes LEAD rounds over a `LEADState` with a bandit `policy` (see the module docstring)."""

    state: LEADState
    policy: Any
    settings: SelectionSettings
    seed: int = 0
    normalizer: RewardNormalizer | QuantileNormalizer | None = None  # None: as `settings.reward_scaling` says

    def __post_init__(self):
        if self.normalizer is None:
            quantile = self.settings.reward_scaling == "quantile"
            self.normalizer = QuantileNormalizer() if quantile else RewardNormalizer()
        self.rng = np.random.default_rng(self.seed)
        # Per-cluster caches, built by `_sync` for the state version `_synced` (-1: not yet)
        self._synced = -1
        self._members: list[np.ndarray] = []
        self._open = self._open_selected = self._idu_count = np.zeros(0, np.int64)
        self._idu_sum = np.zeros(0)
        self._num_selected = 0
        check_budget(self.settings.budget, len(self.state))
        check_policy(self.policy, self.settings.round_mode)

    @property
    def cluster_members(self) -> list[np.ndarray]:
        """Each cluster's sample ids (the selector's own index: read it, do not modify it)."""
        self._sync()
        return self._members

    # ----- per-cluster caches ------------------------------------------------------------------------------------
    def _sync(self) -> None:
        """Build the per-cluster caches (O(N)) when the state was replaced wholesale; rounds update them in O(round).

        Caches: each cluster's member ids; per cluster the number of samples under the reuse cap (`_open`) and of
        those already selected (`_open_selected`); the number of distinct selected samples; per-cluster sum and
        count of finite IDU. They keep `plan_round` and `finish_round` independent of the pool size.
        """
        state = self.state
        if self._synced == state.version:
            return
        k, cap = state.num_clusters, self.settings.max_reuse
        order = np.argsort(state.cluster, kind="stable")
        order = order.astype(np.int32 if len(order) < 2**31 else np.int64)
        bounds = np.searchsorted(state.cluster[order], np.arange(k + 1))
        self._members = [order[bounds[c] : bounds[c + 1]] for c in range(k)]
        open_ = state.use_count < cap
        self._open = np.bincount(state.cluster[open_], minlength=k)
        self._open_selected = np.bincount(state.cluster[open_ & (state.use_count > 0)], minlength=k)
        self._num_selected = state.num_selected
        seen = np.isfinite(state.idu)
        self._idu_sum = np.bincount(state.cluster[seen], state.idu[seen].astype(np.float64), k).astype(np.float64)
        self._idu_count = np.bincount(state.cluster[seen], minlength=k)
        self._synced = state.version

    def paced_budget(self) -> int:
        """Distinct samples that the rounds so far and the one being planned may select by their clusters' choice:
        the budget, or with `budget_pace_rounds` set, the share `(round + 1) / budget_pace_rounds` of it (admitted
        evenly, so that the policy's choices shape where the budget goes instead of the first rounds spending it).
        A round that revisits cannot fill still takes new samples beyond it (see `plan_round`)."""
        s = self.settings
        if s.budget_pace_rounds <= 0:
            return s.budget
        return min(s.budget, math.ceil(s.budget * (len(self.state.rounds) + 1) / s.budget_pace_rounds))

    @property
    def budget_spent(self) -> bool:
        self._sync()
        return self._num_selected >= self.settings.budget

    def eligible(self) -> np.ndarray:
        """Samples that may still be trained: under the reuse cap, and already selected once the budget is spent."""
        state = self.state
        ok = state.use_count < self.settings.max_reuse
        if self.budget_spent:
            ok &= state.use_count > 0
        return ok

    def arm_mask(self) -> np.ndarray:
        """True for clusters with at least one eligible sample (the policy's action mask).

        With `lead_sample_filter` on, a cluster whose eligible samples the filter all excludes is masked too (a policy
        that chose it would train none of its samples and measure nothing), unless that leaves no cluster: then the
        clusters with eligible samples, whose rounds fall back to the excluded samples (see `plan_round`)."""
        self._sync()
        return self._mask(self._filtered_candidates()[0] if self.settings.sample_filter != "none" else None)

    def _mask(self, candidates: list[np.ndarray] | None) -> np.ndarray:
        """`arm_mask` from each cluster's filtered candidates (None: the filter is off)."""
        mask = (self._open_selected if self.budget_spent else self._open) > 0
        if candidates is None or not mask.any():
            return mask
        kept = np.array([len(c) > 0 for c in candidates])
        return kept if kept.any() else mask

    def _filtered_candidates(self) -> tuple[list[np.ndarray], dict[str, int]]:
        """Per cluster, the eligible members `lead_sample_filter` keeps; and per cluster how many it excludes."""
        excluded: dict[str, int] = {}
        return [self._candidates(k, excluded) for k in range(self.state.num_clusters)], excluded

    def _candidates(self, cluster: int, filtered: dict[str, int] | None = None) -> np.ndarray:
        """Eligible members of `cluster`, less those `lead_sample_filter` excludes (counted into `filtered`)."""
        members = self._members[cluster]
        use = self.state.use_count[members]
        ok = use < self.settings.max_reuse
        if self.budget_spent:
            ok &= use > 0
        if self.settings.sample_filter != "none":
            excluded = ok & self._filter_excludes(members)
            if filtered is not None:
                filtered[str(cluster)] = int(excluded.sum())
            ok &= ~excluded
        return members[ok].astype(np.int64)

    def _filter_excludes(self, members: np.ndarray) -> np.ndarray:
        """`lead_sample_filter` over one cluster's `members`: True for each member it excludes."""
        s = self.settings
        keep = None
        if s.sample_filter == "small_loss":
            keep = s.filter_keep if s.filter_keep is not None else auto_filter_keep(s.budget, len(self.state))
            if self.filter_held_back():
                keep = 1.0  # every never-trained sample may be selected
        return loss_z_excluded(self.state, members, s.filter_z, keep, s.filter_revisits)

    def filter_held_back(self) -> bool:
        """Whether the small-loss filter is on but its gate closed: the initial scores within comparison groups spread
        by less than `filter_min_spread` nats per token (`LEADState.filter_spread`; a spread that cannot be measured
        leaves the gate open). Then it excludes nothing, and mixture rounds are split by the policy alone
        (`split_by_size` has no verdicts to weigh)."""
        s = self.settings
        return s.sample_filter == "small_loss" and self.state.filter_spread() < s.filter_min_spread

    # ----- fine selection -----------------------------------------------------------------------------------------
    def _keys(self, candidates: np.ndarray, rule: str) -> np.ndarray:
        """Sort keys of the fine rule (taken in decreasing order); call on randomly permuted candidates."""
        if rule == "random":
            return np.zeros(len(candidates))  # the permutation alone decides
        scores = self.state.idu[candidates].astype(np.float64)
        if rule == "top":
            return np.where(np.isnan(scores), np.inf, scores)  # unseen samples (NaN) rank first
        # "sample": draws without replacement with p ~ softmax(z-scored IDU), by the Gumbel-top-k trick
        finite = np.isfinite(scores)
        if finite.sum() >= 2 and np.std(scores[finite]) > 0:
            z = (scores - scores[finite].mean()) / scores[finite].std()
            z = np.where(finite, z, z[finite].max())
        else:
            z = np.zeros(len(candidates))
        return z + self.rng.gumbel(size=len(candidates))

    def _choose(
        self, candidates: np.ndarray, n: int, new_quota: int, rule: str | None = None
    ) -> tuple[np.ndarray, int]:
        """`n` samples of `candidates` by the fine rule, at most `new_quota` of them never selected (the budget).

        Ties break at random (the candidates are permuted first and sorts are stable). Only the first `n` are
        ordered unless the budget may exclude some of them.
        """
        if len(candidates) == 0 or n <= 0:
            return candidates[:0], new_quota
        candidates = self.rng.permutation(candidates)
        keys = -self._keys(candidates, rule or self.settings.fine_selection)
        is_new = self.state.use_count[candidates] == 0
        if new_quota >= min(n, int(is_new.sum())) and n < len(candidates):
            top = np.argpartition(keys, n - 1)[:n]
            return candidates[top[np.argsort(keys[top], kind="stable")]], new_quota - int(is_new[top].sum())
        order = np.argsort(keys, kind="stable")
        allowed = ~is_new[order] | (np.cumsum(is_new[order]) <= new_quota)
        chosen = order[allowed][:n]
        return candidates[chosen], new_quota - int(is_new[chosen].sum())

    def _split_quota(self, new_quota: int, shares: dict[int, int]) -> dict[int, int]:
        """`new_quota` split over the arms in proportion to `shares`, at most each arm's share (largest remainders,
        ties at random); with a quota of at least the round's size every arm may take its whole share new."""
        arms = list(shares)
        total = sum(shares.values())
        if new_quota >= total or total == 0:
            return dict(shares)
        exact = np.array([new_quota * shares[a] / total for a in arms])
        quotas = np.floor(exact).astype(np.int64)
        left = new_quota - int(quotas.sum())
        if left > 0:
            # largest remainder first; the random key breaks ties
            order = np.lexsort((self.rng.random(len(arms)), -(exact - quotas)))
            quotas[order[:left]] += 1
        return {a: int(q) for a, q in zip(arms, quotas)}

    # ----- planning -------------------------------------------------------------------------------------------------
    def plan_round(self) -> PlannedRound | None:
        """The next round, or None when no sample is eligible.

        The policy picks the arms and their shares of the round (`_choose_arms`), the budget's new samples are split
        over them (`_split_quota`), the fine rule picks each arm's samples, and a shortfall is filled from the other
        clusters (`_fill`). The filter is evaluated once per round: for the mask, the chosen clusters and the fill.
        """
        s = self.settings
        self._sync()
        index = len(self.state.rounds)
        filtering = s.sample_filter != "none"
        candidates, excluded = self._filtered_candidates() if filtering else (None, {})
        mask = self._mask(candidates)
        if not mask.any():
            return None
        if index < s.warmup_rounds:
            # Warm-up: uniform over the pool, the policy is not asked
            left = max(s.budget - self._num_selected, 0)  # not paced: nothing to revisit yet, and no policy to learn
            ids, _ = self._choose(np.flatnonzero(self.eligible()), s.round_size, left, rule="random")
            return PlannedRound(index, [], ids, np.zeros(len(ids), bool), warmup=True)
        new_quota = max(self.paced_budget() - self._num_selected, 0)
        arms, shares, probabilities = self._choose_arms(mask, candidates)
        # The new samples the budget allows are split over the arms in proportion to their shares (taken in arm order
        # they would all go to the lowest-numbered clusters whenever the budget allows fewer than the round's size)
        quotas, spare, chosen = self._split_quota(new_quota, shares), 0, []
        for arm in arms:
            ids, left = self._choose(candidates[arm] if filtering else self._candidates(arm), shares[arm], quotas[arm])
            spare += left
            chosen.append(ids)
        ids = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
        used = sum(quotas.values()) - spare  # new samples the chosen clusters took
        ids, filled = self._fill(
            ids, candidates, max(new_quota - used, 0), max(s.budget - self._num_selected - used, 0)
        )
        filtered = {str(arm): excluded[str(arm)] for arm in arms} if filtering else {}
        return PlannedRound(index, arms, ids.astype(np.int64), filled, probabilities, filtered=filtered)

    def _choose_arms(
        self, mask: np.ndarray, candidates: list[np.ndarray] | None
    ) -> tuple[list[int], dict[int, int], list[float] | None]:
        """The round's arms, each one's share of the round's samples, and the policy's arm distribution (if any).

        Single mode: the policy's choice takes the whole round. Mixture mode: the shares are a multinomial draw from
        the round's distribution (`round_distribution`), with `lead_split_by_size` weighted by the samples each
        cluster can give."""
        s = self.settings
        if s.round_mode == "single":
            arm = int(self.policy.select(mask))
            if not mask[arm]:
                raise RuntimeError(f"The policy chose cluster {arm}, which has no eligible sample (masked).")
            has_probabilities = callable(getattr(self.policy, "probabilities", None))
            probabilities = [float(p) for p in self.policy.probabilities(mask)] if has_probabilities else None
            return [arm], {arm: s.round_size}, probabilities
        p = round_distribution(self.policy, mask, s.round_size)
        probabilities = [float(x) for x in p]
        if s.split_by_size and not self.filter_held_back():
            # each cluster's probability times the samples it can give: the round samples the candidates evenly
            # where the policy is uniform (rather than the clusters), and the filter's verdicts weigh in. Where the
            # gate holds the filter back there are no verdicts, and sizes alone would only copy the pool's make-up
            pools = candidates if candidates is not None else [self._candidates(k) for k in range(len(p))]
            sizes = np.array([len(pool) for pool in pools])
            if (p * sizes).sum() > 0:
                p = p * sizes
        counts = self.rng.multinomial(s.round_size, p / p.sum())
        arms = [int(k) for k in np.flatnonzero(counts)]
        return arms, {k: int(counts[k]) for k in arms}, probabilities

    def _fill(
        self, ids: np.ndarray, candidates: list[np.ndarray] | None, paced_left: int, whole_left: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The round's samples with a shortfall filled, and per sample whether it was filled.

        A chosen cluster ran short: fill from the other clusters with the same fine rule, over all of them, first
        among the samples the filter keeps, then (rather than train a short round) among those it excludes. New
        samples: first within the pace (`paced_left`); then, rather than train a short round, what is left of the whole
        budget (`whole_left`), so that every round has the same optimizer steps (the Trainer's epochs and an exact
        resume rely on it)."""
        filled = np.zeros(len(ids), bool)
        filters = (True, False) if candidates is not None else (False,)
        for use_filter, beyond_pace in itertools.product(filters, (False, True)):
            shortfall = self.settings.round_size - len(ids)
            if shortfall <= 0:
                break
            if beyond_pace and whole_left == paced_left:
                continue  # the pace allows what the whole budget does (always so without pacing): nothing to add
            if use_filter:  # the union of the clusters' filtered candidates: eligible and not excluded
                rest = np.zeros(len(self.state), bool)
                rest[np.concatenate(candidates)] = True
            else:
                rest = self.eligible()
            rest[ids] = False
            quota = whole_left if beyond_pace else paced_left
            extra, left = self._choose(np.flatnonzero(rest), shortfall, quota)
            taken = quota - left
            whole_left, paced_left = whole_left - taken, max(paced_left - taken, 0)
            ids = np.concatenate([ids, extra])
            filled = np.concatenate([filled, np.ones(len(extra), bool)])
        return ids, filled

    # ----- finishing ------------------------------------------------------------------------------------------------
    def finish_round(
        self,
        planned: PlannedRound,
        ids: np.ndarray,
        losses: np.ndarray,
        eta: float = 1.0,
        cos_with_last_visit: dict[int, float] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Update IU/IDU from the round's recorded losses, reward the policy, and log the round.

        Args:
            planned (`PlannedRound`): the round as planned.
            ids (`np.ndarray`): sample ids whose loss was recorded (each once).
            losses (`np.ndarray`): their IU, in the same order.
            eta (`float`): learning-rate factor of the gradient correction.
            cos_with_last_visit (`dict[int, float]`, *optional*): per cluster, the cosine between this round's update
                and that of the round that last trained the cluster (1.0 where missing).
            extra (`dict`, *optional*): more fields for the round's record.
        """
        ids = np.asarray(ids, dtype=np.int64)
        losses = np.asarray(losses, dtype=np.float64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("finish_round got a sample id twice; de-duplicate the gathered losses first.")
        self._sync()
        clusters = self.state.cluster[ids]
        groups = {int(k): clusters == k for k in np.unique(clusters)}  # each cluster present: its samples
        idu_before = self.state.idu[ids].astype(np.float64)
        first_time = self.state.use_count[ids] == 0
        corrections = self._corrections(groups, idu_before, losses, eta, cos_with_last_visit or {})
        self._update_samples(ids, losses, idu_before, corrections, groups)
        visits = {k: self._visit(k, ids[in_k], losses[in_k], idu_before[in_k], first_time[in_k])
                  for k, in_k in groups.items()}  # fmt: skip
        rewards = {k: REWARD_RULES[self.settings.reward](visit) for k, visit in visits.items()}
        self._update_clusters(planned.index, corrections, visits)
        rewarded = self._reward_policy(planned, rewards)
        record = self._round_record(planned, ids, first_time, rewards, rewarded, corrections)
        record.update(extra or {})
        self.state.rounds.append(record)
        return record

    def _corrections(
        self,
        groups: dict[int, np.ndarray],
        idu_before: np.ndarray,
        losses: np.ndarray,
        eta: float,
        cos_with_last_visit: dict[int, float],
    ) -> dict[int, dict[str, float]]:
        """Per cluster present: `d`, the loss drop the round's update caused on it (mean IDU before, the corrected
        estimate, minus mean IU observed during the round, over samples that had an estimate), and the gradient
        correction's `predicted_drop` and `beta` (`predicted_drop`)."""
        state = self.state
        corrections = {}
        for k, in_k in groups.items():
            known = in_k & np.isfinite(idu_before)
            d_round = float(np.mean(idu_before[known] - losses[known])) if known.any() else 0.0
            d_last = state.cluster_drop[k] if state.cluster_round[k] >= 0 else None
            drop, beta = predicted_drop(eta, d_round, d_last, cos_with_last_visit.get(k, 1.0))
            corrections[k] = {"d": d_round, "predicted_drop": drop, "beta": beta}
        return corrections

    def _update_samples(
        self,
        ids: np.ndarray,
        losses: np.ndarray,
        idu_before: np.ndarray,
        corrections: dict[int, dict[str, float]],
        groups: dict[int, np.ndarray],
    ) -> None:
        """IU, IDU (smoothed, with the gradient correction), first-visit IU and use counts of the round's samples."""
        state, b = self.state, self.settings.smoothing
        correction = np.zeros(len(ids))
        if self.settings.gradient_correction:
            for k, in_k in groups.items():
                correction[in_k] = corrections[k]["predicted_drop"]
        corrected = losses - correction
        first_time = state.use_count[ids] == 0
        state.iu[ids] = losses
        state.idu[ids] = np.where(np.isnan(idu_before), corrected, (1 - b) * corrected + b * idu_before)
        state.first_iu[ids[first_time]] = losses[first_time]
        use_before = state.use_count[ids].astype(np.int64)
        state.use_count[ids] += 1
        self._update_caches(state.cluster[ids], use_before, idu_before, state.idu[ids].astype(np.float64))

    def _visit(
        self, k: int, ids: np.ndarray, losses: np.ndarray, idu_before: np.ndarray, first_time: np.ndarray
    ) -> ClusterVisit:
        """What the round measured on cluster `k`'s samples `ids` (after their update), for the reward rules."""
        state = self.state
        return ClusterVisit(
            losses=losses,
            idu_before=idu_before,
            idu_after=state.idu[ids],
            first_iu=state.first_iu[ids],
            first_time=first_time,
            initial=None if state.initial_iu is None else state.initial_iu[ids],
            last_first_visit_iu=float(state.cluster_first_visit_iu[k]),
        )

    def _update_clusters(
        self, index: int, corrections: dict[int, dict[str, float]], visits: dict[int, ClusterVisit]
    ) -> None:
        """Per cluster present: its drop `d_k` and round (the next visit's gradient correction) and the mean IU of its
        never-trained samples this round (the next visit's `first_visit` reward)."""
        state = self.state
        for k, visit in visits.items():
            state.cluster_drop[k] = corrections[k]["d"]
            state.cluster_round[k] = index
            if visit.first_time.any():
                state.cluster_first_visit_iu[k] = float(np.mean(visit.losses[visit.first_time]))

    def _reward_policy(self, planned: PlannedRound, rewards: dict[int, float | None]) -> list[int]:
        """Give the policy the measured rewards of the round's arms (`give_rewards`); the arms rewarded."""
        rewarded = [a for a in planned.arms if rewards.get(a) is not None] if not planned.warmup else []
        mixture = self.settings.round_mode == "mixture"
        give_rewards(self.policy, {a: rewards[a] for a in rewarded}, planned.probabilities, self.normalizer, mixture)
        return rewarded

    def _round_record(
        self,
        planned: PlannedRound,
        ids: np.ndarray,
        first_time: np.ndarray,
        rewards: dict[int, float | None],
        rewarded: list[int],
        corrections: dict[int, dict[str, float]],
    ) -> dict[str, Any]:
        """The round's log record (`LEADState.rounds`, `lead_rounds.jsonl`)."""
        rewards = {k: 0.0 if v is None else v for k, v in rewards.items()}  # the log keeps plain numbers
        # an arm with no sample of its own this round (only possible under the filter's fallback) counts as 0 here
        reward = float(np.mean([rewards.get(a, 0.0) for a in planned.arms])) if planned.arms else 0.0
        return {
            "round": planned.index,
            "cluster": planned.arms[0] if len(planned.arms) == 1 else planned.arms,
            "sample_ids": [int(i) for i in planned.sample_ids],
            "filled": int(planned.filled.sum()),
            "filtered": int(sum(planned.filtered.values())),  # eligible samples of the chosen clusters filtered out
            "filtered_by_cluster": dict(planned.filtered),
            "reward": reward,
            "cluster_rewards": {str(k): v for k, v in rewards.items()},
            "rewarded": rewarded,  # arms whose reward was measured and given to the policy
            "probabilities": planned.probabilities,
            "warmup": planned.warmup,
            "selected": self._num_selected,
            "new": int(first_time.sum()),  # never-trained samples in the round (lead_budget_pace spreads them)
            "mean_idu": float(np.mean(self.state.idu[ids])) if len(ids) else float("nan"),
            "cluster_mean_idu": [None if np.isnan(v) else float(v) for v in self.cluster_mean_idu()],
            "correction": {str(k): v for k, v in corrections.items()},
        }

    def _update_caches(self, clusters, use_before, idu_before, idu_after) -> None:
        k, cap = self.state.num_clusters, self.settings.max_reuse
        use_after = use_before + 1

        def per_cluster(flags, weights=None):
            return np.bincount(clusters[flags], None if weights is None else weights[flags], k)

        self._open += per_cluster(use_after < cap) - per_cluster(use_before < cap)
        self._open_selected += per_cluster(use_after < cap) - per_cluster((use_before > 0) & (use_before < cap))
        self._num_selected += int((use_before == 0).sum())
        seen_before, seen_after = np.isfinite(idu_before), np.isfinite(idu_after)
        self._idu_sum += per_cluster(seen_after, idu_after) - per_cluster(seen_before, idu_before)
        self._idu_count += per_cluster(seen_after) - per_cluster(seen_before)

    def cluster_mean_idu(self) -> np.ndarray:
        """Mean IDU of each cluster over its observed samples (NaN for a cluster with none)."""
        self._sync()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._idu_count > 0, self._idu_sum / np.maximum(self._idu_count, 1), np.nan)

    # ----- persistence -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "normalizer": self.normalizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.normalizer.load_state_dict(state["normalizer"])
