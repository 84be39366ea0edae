"""LEAD's selection settings in one place: their choices, sizes as sample counts, and the checks between them.

Used by `LEADConfig` (its `lead_*` fields), `LEADSFTTrainer`, `RoundSelector`, the `ProxyTraining` and `LiveTraining`
environments and the benchmarks: `PRESETS` is the one source of the selection's defaults. Plain Python: importing it
imports neither torch nor numpy.
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


PRESETS: dict[str, dict[str, Any]] = {
    # What this project's measurements chose (docs/results.md): mixture rounds, uniform choice inside a cluster, the
    # first-visit reward, and the small-loss filter within groups of similar prompts with rounds split by size
    "default": {
        "policy": "exp3s",
        "round_mode": "mixture",
        "fine_selection": "random",
        "reward": "first_visit",
        "reward_scaling": "minmax",
        "sample_filter": "small_loss",
        "filter_z": 2.5,
        "filter_keep": None,  # follows the budget: `auto_filter_keep`
        "filter_groups": "prompts",
        "filter_min_spread": 0.6,
        "filter_revisits": False,
        "split_by_size": True,
        "budget_pace": 0.0,
        "max_reuse": 4,
        "smoothing": 0.5,
        "gradient_correction": True,
        "initial_score": "loss",
    },
    # Lin et al. (arXiv 2505.07437): EXP3-S over one cluster per round, the highest IDU inside it, the IDU drop as
    # reward, min-max reward scaling, no filter. The filter's settings have no effect without a filter; they are those
    # `benchmarks/selection.py`'s paper rows were measured with.
    "paper": {
        "policy": "exp3s",
        "round_mode": "single",
        "fine_selection": "top",
        "reward": "idu_drop",
        "reward_scaling": "minmax",
        "sample_filter": "none",
        "filter_z": 2.5,
        "filter_keep": 0.5,
        "filter_groups": "clusters",
        "filter_min_spread": 0.0,
        "filter_revisits": True,
        "split_by_size": False,
        "budget_pace": 0.0,
        "max_reuse": 4,
        "smoothing": 0.5,
        "gradient_correction": True,
        "initial_score": "loss",
    },
}
"""Named sets of selection settings (`LEADConfig(lead_preset=...)`, each key a `lead_*` field without its prefix):
`"default"` follows the evidence, `"paper"` is the paper's choices. Fields set one by one override their preset."""

PRESET_FIELDS = tuple(PRESETS["default"])
"""The settings a preset fixes (`LEADConfig`'s `lead_<name>` fields)."""


def preset_settings(name: str, **overrides: Any) -> dict[str, Any]:
    """The settings of preset `name` (see `PRESETS`), with `overrides` (names without `lead_`; None: the preset's)."""
    check_choice("lead_preset", name, tuple(PRESETS))
    unknown = sorted(set(overrides) - set(PRESET_FIELDS))
    if unknown:
        raise ValueError(f"{unknown} are not preset settings; the settings a preset fixes are {list(PRESET_FIELDS)}.")
    return {**PRESETS[name], **{key: value for key, value in overrides.items() if value is not None}}


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    """A clear error when `value` of setting `name` is not one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"`{name}={value!r}` is not one of {list(allowed)}; pick one of them.")


#: The numeric preset settings' ranges: name -> (low, high, whether `low` itself is allowed, what the number means).
NUMBER_RANGES: dict[str, tuple[float, float, bool, str]] = {
    "filter_z": (0.0, math.inf, False, "the robust z-score above which the filter excludes a sample (2 to 3 keeps "
                 "the bulk of a cluster)"),
    "filter_keep": (0.0, 1.0, False, "the share of each cluster's samples, by lowest initial score, that "
                    "`lead_sample_filter='small_loss'` lets be selected (0.5 keeps the lower half)"),
    "filter_min_spread": (0.0, math.inf, True, "the median interquartile range of initial scores within comparison "
                          "groups, in nats per token, below which `lead_sample_filter='small_loss'` excludes nothing "
                          "(0 always filters)"),
    "budget_pace": (0.0, 1.0, True, "the share of the run's rounds over which the budget's new samples are admitted "
                    "evenly (0 admits them as early as possible, as the paper does)"),
}  # fmt: skip


def check_numbers(settings: dict[str, Any], prefix: str = "lead_") -> None:
    """A clear error for the first of `settings` (names without `prefix`) outside its `NUMBER_RANGES` range; `None`
    (not set) passes."""
    for name, (low, high, low_allowed, meaning) in NUMBER_RANGES.items():
        value = settings.get(name)
        if value is None:
            continue
        in_range = isinstance(value, (int, float)) and math.isfinite(value) and value <= high
        if not (in_range and (value >= low if low_allowed else value > low)):
            bound = ">=" if low_allowed else ">"
            where = f"{bound} {low:g}" if math.isinf(high) else f"in {'[' if low_allowed else '('}{low:g}, {high:g}]"
            raise ValueError(f"`{prefix}{name}={value!r}` must be a finite number {where}: {meaning}.")


def auto_filter_keep(budget: int, pool_size: int) -> float:
    """`lead_filter_keep` when not set: `min(0.5, 1.6 * budget / pool_size)`, so that the samples the small-loss filter
    keeps outnumber the budget 1.6 to 1 (0.16 at a 10% budget, 0.4 at 25%, 0.5 from 31.25%): the smaller the budget,
    the clearer the answers it takes. Measured on the benchmark mixtures (docs/results.md)."""
    return min(0.5, 8 * budget / (5 * pool_size))  # 1.6 as a ratio of integers: 0.16 and 0.4 exactly as written


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
    """The policy has what a round calls: `select`, `update`, `reset`, and in mixture rounds `probabilities(mask)` or
    a batched round `allocate(slots, mask)`."""
    missing = [method for method in ("select", "update", "reset") if not callable(getattr(policy, method, None))]
    if missing:
        raise ValueError(f"`policy` lacks {missing}; it must follow `trl_lead.policies.Policy`.")
    splits = [method for method in ("probabilities", "allocate") if callable(getattr(policy, method, None))]
    if round_mode == "mixture" and not splits:
        raise ValueError(
            f"`lead_round_mode='mixture'` splits a round by the policy's arm probabilities or its batched round, and "
            f"{type(policy).__name__} has neither `probabilities(mask)` nor `allocate(slots, mask)`; add one (see "
            "`trl_lead.policies.Policy`) or use `lead_round_mode='single'`."
        )


_DEFAULT = PRESETS["default"]


@dataclass
class SelectionSettings:
    """The numpy side of `LEADConfig`'s `lead_*` fields, with sizes already resolved to counts.

    Every choice defaults to the `"default"` preset; `SelectionSettings.for_pool` builds one from a preset, a pool
    size and sizes given as fractions or counts, as the trainer and the environments do. `filter_keep=None` follows
    the budget (`auto_filter_keep`); `budget_pace_rounds` is `budget_pace` resolved over a run's rounds (what the
    selector uses; `budget_pace` itself is kept for reference). `initial_score` and `filter_groups` are read by
    whoever scores the pool and groups the prompts (the trainer, the proxy), not by the selector.
    """

    round_size: int
    budget: int
    max_reuse: int = _DEFAULT["max_reuse"]
    smoothing: float = _DEFAULT["smoothing"]
    gradient_correction: bool = _DEFAULT["gradient_correction"]
    round_mode: str = _DEFAULT["round_mode"]
    fine_selection: str = _DEFAULT["fine_selection"]
    reward: str = _DEFAULT["reward"]
    warmup_rounds: int = 0
    sample_filter: str = _DEFAULT["sample_filter"]
    filter_z: float = _DEFAULT["filter_z"]
    filter_keep: float | None = _DEFAULT["filter_keep"]
    reward_scaling: str = _DEFAULT["reward_scaling"]
    budget_pace_rounds: int = 0
    split_by_size: bool = _DEFAULT["split_by_size"]
    filter_revisits: bool = _DEFAULT["filter_revisits"]
    filter_groups: str = _DEFAULT["filter_groups"]
    filter_min_spread: float = _DEFAULT["filter_min_spread"]
    initial_score: str = _DEFAULT["initial_score"]
    budget_pace: float = _DEFAULT["budget_pace"]

    def __post_init__(self):
        check_choice("round_mode", self.round_mode, ROUND_MODES)
        check_choice("fine_selection", self.fine_selection, FINE_SELECTIONS)
        check_choice("reward", self.reward, REWARDS)
        check_choice("sample_filter", self.sample_filter, SAMPLE_FILTERS)
        check_choice("reward_scaling", self.reward_scaling, REWARD_SCALINGS)
        check_choice("filter_groups", self.filter_groups, FILTER_GROUPS)
        check_choice("initial_score", self.initial_score, INITIAL_SCORES)
        check_numbers(self.choices(), prefix="")
        if self.round_size < 1:
            raise ValueError(f"`round_size={self.round_size}` must be >= 1.")
        if self.budget < 1:
            raise ValueError(f"`budget={self.budget}` must be >= 1.")
        if self.budget_pace_rounds < 0:
            raise ValueError(f"`budget_pace_rounds={self.budget_pace_rounds}` must be >= 0 (0: no pacing).")

    @classmethod
    def for_pool(
        cls,
        pool_size: int,
        round_size: float,
        budget: float,
        preset: str = "default",
        rounds: int | None = None,
        warmup_rounds: int = 0,
        prefix: str = "lead_",
        **choices: Any,
    ) -> SelectionSettings:
        """Settings of preset `preset` with `choices` overriding it (names without `lead_`; None: the preset's),
        over a pool of `pool_size` samples.

        Args:
            pool_size (`int`): samples in the pool.
            round_size, budget (`float`): a fraction of the pool (`<= 1`) or a count (`resolve_sizes`).
            preset (`str`, *optional*, defaults to `"default"`): a name in `PRESETS`.
            rounds (`int`, *optional*): the run's rounds, over which `budget_pace` is resolved (needed when the pace
                is > 0).
            warmup_rounds (`int`, *optional*, defaults to 0): uniform random rounds before the first.
            prefix (`str`, *optional*, defaults to `"lead_"`): prefix of the settings' names in error messages.
        """
        chosen = preset_settings(preset, **choices)
        chosen.pop("policy")  # the policy object is the selector's argument, not a setting
        round_count, budget_count = resolve_sizes(round_size, budget, pool_size, prefix)
        pace = chosen["budget_pace"]
        if pace > 0 and rounds is None:
            raise ValueError(f"`{prefix}budget_pace={pace}` needs the run's number of rounds to spread the budget on.")
        pace_rounds = math.ceil(pace * rounds) if pace > 0 else 0
        return cls(
            round_size=round_count,
            budget=budget_count,
            warmup_rounds=warmup_rounds,
            budget_pace_rounds=pace_rounds,
            **chosen,
        )

    def choices(self) -> dict[str, Any]:
        """The preset settings this object holds (every name of `PRESET_FIELDS` but `policy`), as `preset_settings`
        returns them: what two entry points compare to say they run the same selection."""
        return {name: getattr(self, name) for name in PRESET_FIELDS if name != "policy"}
