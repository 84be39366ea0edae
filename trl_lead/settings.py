"""LEAD's selection settings in one place: their choices, sizes as sample counts, and the checks between them.

Used by `LEADConfig` (its `lead_*` fields), `LEADSFTTrainer`, `RoundSelector` and the `ProxyTraining` environment.
Plain Python: importing it imports neither torch nor numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ROUND_MODES = ("single", "mixture")
FINE_SELECTIONS = ("top", "sample", "random")
REWARDS = ("idu_drop", "first_visit", "mean_idu", "loss_drop", "blend", "heldout_gain")
SAMPLE_FILTERS = ("none", "loss_z", "small_loss")
"""Within-cluster filters (`lead_sample_filter`): none, the robust z-score of losses against cluster peers, or that
plus the small-loss rule for never-trained samples (only the `lead_filter_keep` lowest initial scores of a cluster)."""
FILTER_GROUPS = ("clusters", "prompts")
"""What the small-loss filter compares a never-trained sample's initial score with (`lead_filter_groups`): its
cluster's, or those of the samples with the most similar prompts (`trl_lead.clustering.prompt_groups`)."""
REWARD_SCALINGS = ("minmax", "quantile")
"""How raw rewards are mapped to [-1, 1] for the policy (`lead_reward_scaling`)."""
INITIAL_SCORES = ("loss", "none")
CLUSTER_FEATURES = ("ifd", "embedding")
"""What computed clusters group (`lead_clusters`): IFD scores or embeddings (`compute_clusters(how=...)`)."""


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    """A clear error when `value` of setting `name` is not one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"`{name}={value!r}` is not one of {list(allowed)}; pick one of them.")


def check_filter_z(value: float, name: str = "lead_filter_z") -> None:
    """The filter's threshold is a positive number of robust standard deviations."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(
            f"`{name}={value!r}` must be a finite number > 0: the robust z-score above which the filter excludes a "
            "sample (2 to 3 keeps the bulk of a cluster)."
        )


def check_filter_keep(value: float, name: str = "lead_filter_keep") -> None:
    """The small-loss filter keeps a share in (0, 1] of each cluster's never-trained samples."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 < value <= 1.0):
        raise ValueError(
            f"`{name}={value!r}` must be a fraction in (0, 1]: the share of each cluster's samples, by lowest initial "
            "score, that `lead_sample_filter='small_loss'` lets be selected (0.5 keeps the lower half)."
        )


def auto_filter_keep(budget: int, pool_size: int) -> float:
    """`lead_filter_keep` when not set: `min(0.5, 1.6 * budget / pool_size)`, so that the samples the small-loss filter
    keeps outnumber the budget 1.6 to 1 (0.16 at a 10% budget, 0.4 at 25%, 0.5 from 31.25%): the smaller the budget,
    the clearer the answers it takes. Measured on the benchmark mixtures (docs/results.md)."""
    return min(0.5, 8 * budget / (5 * pool_size))  # 1.6 as a ratio of integers: 0.16 and 0.4 exactly as written


def check_budget_pace(value: float, name: str = "lead_budget_pace") -> None:
    """The pace is a share in [0, 1] of the run's rounds."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(
            f"`{name}={value!r}` must be a fraction in [0, 1]: the share of the run's rounds over which the budget's "
            "new samples are admitted evenly (0 admits them as early as possible, as the paper does)."
        )


def resolve_count(value: float, pool_size: int, name: str) -> int:
    """A size given as a fraction of the pool (`value <= 1`) or as a count, as a count of samples."""
    count = math.ceil(value * pool_size) if value <= 1 else int(value)
    if count < 1:
        raise ValueError(f"`{name}={value}` gives no sample out of a pool of {pool_size}; set it higher.")
    return count


def check_budget(budget: int, pool_size: int, name: str = "lead_budget") -> None:
    """The budget (distinct samples, a count) fits the pool."""
    if budget > pool_size:
        raise ValueError(
            f"`{name}` gives {budget} distinct samples but the pool has only {pool_size}; set it to at most "
            f"{pool_size} (or to a fraction <= 1)."
        )


def resolve_sizes(round_size: float, budget: float, pool_size: int, prefix: str = "lead_") -> tuple[int, int]:
    """Round size and budget, each a fraction of the pool (`<= 1`) or a count, as counts; the budget must fit.

    Args:
        round_size (`float`): samples per round.
        budget (`float`): distinct samples selected in total.
        pool_size (`int`): samples in the pool.
        prefix (`str`, *optional*, defaults to `"lead_"`): prefix of the settings' names in error messages.
    """
    budget_count = resolve_count(budget, pool_size, f"{prefix}budget")
    check_budget(budget_count, pool_size, f"{prefix}budget={budget}")
    return resolve_count(round_size, pool_size, f"{prefix}round_size"), budget_count


def check_policy(policy: Any, round_mode: str) -> None:
    """The policy has what a round calls: `select`, `update`, `reset`, and `probabilities(mask)` in mixture rounds."""
    missing = [method for method in ("select", "update", "reset") if not callable(getattr(policy, method, None))]
    if missing:
        raise ValueError(f"`policy` lacks {missing}; it must follow `trl_lead.policies.Policy`.")
    if round_mode == "mixture" and not callable(getattr(policy, "probabilities", None)):
        raise ValueError(
            f"`lead_round_mode='mixture'` splits a round by the policy's arm probabilities, and "
            f"{type(policy).__name__} has no `probabilities(mask)`; use a policy that has one (exp3, exp3s, "
            "boltzmann, epsilon-greedy, uniform) or `lead_round_mode='single'`."
        )


@dataclass
class SelectionSettings:
    """The numpy side of `LEADConfig`'s `lead_*` fields, with sizes already resolved to counts."""

    round_size: int
    budget: int
    max_reuse: int = 4
    smoothing: float = 0.5
    gradient_correction: bool = True
    round_mode: str = "mixture"
    fine_selection: str = "random"
    reward: str = "first_visit"
    warmup_rounds: int = 0
    sample_filter: str = "none"
    filter_z: float = 2.5
    filter_keep: float = 0.5
    reward_scaling: str = "minmax"
    budget_pace_rounds: int = 0
    split_by_size: bool = False
    filter_revisits: bool = True

    def __post_init__(self):
        check_choice("round_mode", self.round_mode, ROUND_MODES)
        check_choice("fine_selection", self.fine_selection, FINE_SELECTIONS)
        check_choice("reward", self.reward, REWARDS)
        check_choice("sample_filter", self.sample_filter, SAMPLE_FILTERS)
        check_choice("reward_scaling", self.reward_scaling, REWARD_SCALINGS)
        check_filter_z(self.filter_z, "filter_z")
        check_filter_keep(self.filter_keep, "filter_keep")
        if self.round_size < 1:
            raise ValueError(f"`round_size={self.round_size}` must be >= 1.")
        if self.budget < 1:
            raise ValueError(f"`budget={self.budget}` must be >= 1.")
        if self.budget_pace_rounds < 0:
            raise ValueError(f"`budget_pace_rounds={self.budget_pace_rounds}` must be >= 0 (0: no pacing).")
