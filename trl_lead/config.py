"""`LEADConfig`: `SFTConfig` plus the `lead_*` fields of LEAD's data selection."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig

from .settings import (
    CLUSTER_FEATURES,
    FILTER_GROUPS,
    FINE_SELECTIONS,
    INITIAL_SCORES,
    PRESET_FIELDS,
    PRESETS,
    REWARD_SCALINGS,
    REWARDS,
    ROUND_MODES,
    SAMPLE_FILTERS,
    check_choice,
    check_numbers,
)

CLUSTER_DEFAULTS = {"lead_clusters": "ifd", "lead_num_clusters": 7}
"""How clusters are computed when no column is given (the defaults of `LEADConfig`'s fields)."""


@dataclass
class LEADConfig(SFTConfig):
    r"""
    Configuration class for [`LEADSFTTrainer`]: every field of [`~trl.SFTConfig`] plus LEAD's own.

    LEAD (Lin et al., arXiv 2505.07437) trains in rounds: a bandit policy picks a cluster of samples, the samples of
    highest Instance-level Dynamic Uncertainty (IDU) in it are trained on, and the round's result rewards the policy.
    One round is one Trainer epoch of `lead_round_size` samples. The selection settings come from one preset
    (`trl_lead.settings.PRESETS`), each field set one by one overriding it: `lead_preset="default"` is what this
    project's measurements chose (docs/results.md): mixture rounds, uniform choice inside a cluster, the first-visit
    reward and a small-loss filter the paper does not have (within groups of similar prompts, keeping a share that
    follows the budget, with rounds split by each cluster's candidates); `lead_preset="paper"` is the paper's choices
    (`trl-lead demo --paper`). Below, "preset" gives a field's value under `"default"` and, where it differs, under
    `"paper"`. A field set to a value that has no effect in its combination warns once, naming the field and why.

    Parameters:
        lead_enabled (`bool`, *optional*, defaults to `True`):
            `False` makes the trainer exactly `SFTTrainer`.
        lead_preset (`str`, *optional*, defaults to `"default"`):
            Named selection settings: `"default"` or `"paper"`; fields left unset take the preset's value.
        lead_cluster_column (`str`, *optional*):
            Dataset column holding each sample's cluster (int or str). When not set, clusters are computed
            (`lead_clusters`).
        lead_clusters (`str`, *optional*, defaults to `"ifd"`):
            How to cluster when no column is given: `"ifd"` (k-means on the IFD score, the paper) or `"embedding"`.
        lead_num_clusters (`int`, *optional*, defaults to `7`):
            Number of clusters when they are computed.
        lead_policy (`str`, *optional*, preset: `"exp3s"`):
            Bandit policy name for `trl_lead.policies.make_policy` (e.g. `"exp3s"`, the paper; `"boltzmann"`, a
            softmax over a moving average of rewards that moves within a few rounds); or pass `policy=` to the trainer.
        lead_policy_kwargs (`dict` or `str`, *optional*):
            Keyword arguments of the policy's constructor, e.g. `{"temperature": 0.1, "floor": 0.05}` for
            `"boltzmann"` (a JSON string on the command line, as for `lr_scheduler_kwargs`).
        lead_round_size (`float`, *optional*, defaults to `0.01`):
            Samples per round: a fraction of the pool when `< 1`, else a count.
        lead_budget (`float`, *optional*, defaults to `0.025`):
            Distinct samples selected in total: a fraction of the pool when `<= 1`, else a count.
        lead_budget_pace (`float`, *optional*, preset: `0.0`):
            Share of the run's rounds over which the budget's new samples are admitted evenly: the clusters of round
            `r` may bring the selected count up to `budget * (r + 1) / ceil(pace * rounds)`, the rest of the round
            revisits (a round revisits cannot fill takes new samples beyond the pace, so rounds stay full). Spreading
            them lets the policy's choices decide where the budget goes; at `0` (the paper's behaviour) the first
            `budget / round_size` rounds spend it before the policy has learned anything (docs/results.md).
        lead_max_reuse (`int`, *optional*, preset: `4`):
            Times one sample may be trained.
        lead_smoothing (`float`, *optional*, preset: `0.5`):
            Weight `b` of the sample's history in the IDU recursion `IDU = (1 - b) * (IU - dL') + b * IDU_prev`.
        lead_gradient_correction (`bool`, *optional*, preset: `True`):
            Subtract the gradient-based estimate `dL'` of the loss drop caused by the round's updates.
        lead_initial_score (`str`, *optional*, preset: `"loss"`):
            `"loss"`: one scoring pass of the base model gives every sample its initial IU. `"none"`: no pass; unseen
            samples tie (and rank first) and ties break at random.
        lead_round_mode (`str`, *optional*, preset: `"mixture"`, paper `"single"`):
            `"mixture"`: the round is split across clusters in proportion to the policy's arm probabilities; a policy
            without them (`ucb1`, `sw-ucb`, `d-ucb`, `thompson`, `greedy`) splits it by its batched round
            (`allocate`: each policy's docstring in `trl_lead.policies` gives its rule). `"single"`: one cluster per
            round (the paper).
        lead_fine_selection (`str`, *optional*, preset: `"random"`, paper `"top"`):
            Choice inside a cluster: `"random"`, `"top"` (highest IDU, the paper) or `"sample"` (softmax over
            standardised IDU, without replacement).
        lead_reward (`str`, *optional*, preset: `"first_visit"`, paper `"idu_drop"`):
            Bandit reward: `"first_visit"` (drop of the mean IU of never-trained samples since the cluster's last
            round, a held-out estimate), `"idu_drop"` (the paper), `"mean_idu"`, `"loss_drop"` (mean IU drop of the
            round's samples since their first visit) or `"blend"` (`"first_visit"` while the cluster's round has
            never-trained samples, else the loss drop of its revisited samples: still measured after the budget) or
            `"heldout_gain"` (mean over the round's never-trained samples of their initial score minus their loss
            now: paired per sample, so it needs few samples; ~0 for a cluster training does not help, < 0 for one
            it hurts; no reward once the budget is spent). `"heldout_gain"` needs `lead_initial_score="loss"`.
        lead_reward_scaling (`str`, *optional*, preset: `"minmax"`):
            How rewards are mapped to [-1, 1] for the policy: `"minmax"` (running min/max, the paper's code) or
            `"quantile"` (20th/80th percentiles of the last 1000 rewards, Graves et al. 2017).
        lead_sample_filter (`str`, *optional*, preset: `"small_loss"`, paper `"none"`):
            `"loss_z"`: exclude from selection the never-trained samples whose initial score stands out from their
            cluster's by a robust z-score above `lead_filter_z`. `"small_loss"`: of the never-trained samples only
            the `lead_filter_keep` share of each comparison group (`lead_filter_groups`) with the lowest initial
            score may be selected (Co-teaching's small-loss rule: the high-loss part of answers to similar prompts
            holds most of the wrong answers); needs `lead_initial_score="loss"`. With either, `lead_filter_revisits`
            adds rules for trained samples. From losses already measured: no extra pass.
        lead_filter_z (`float`, *optional*, preset: `2.5`):
            Threshold of `lead_sample_filter`, in robust standard deviations (1.4826 MAD).
        lead_filter_revisits (`bool`, *optional*, preset: `False`, paper `True`):
            Also keep trained samples out of later rounds when their first-visit loss stands out from their cluster's
            trained samples' by more than `lead_filter_z`, or their loss did not fall where their peers' did
            (Swayamdipta et al.'s data maps, Pleiss et al.'s AUM). Off by default: at a small budget the rounds
            revisit each sample many times, and the exclusions narrow those revisits to fewer samples
            (docs/results.md). No effect with
            `lead_sample_filter="none"`.
        lead_filter_keep (`float`, *optional*, preset: `not set`, paper `0.5`):
            Share of each comparison group's samples (see `lead_filter_groups`), lowest initial score first, that
            `lead_sample_filter="small_loss"` lets be selected for a first time. When not set, it follows the budget:
            `min(0.5, 1.6 * budget / pool size)` (0.16 at a 10% budget, 0.4 at 25%), so that the kept samples
            outnumber the budget 1.6 to 1 and a small budget takes only the clearest answers (docs/results.md).
        lead_filter_groups (`str`, *optional*, preset: `"prompts"`, paper `"clusters"`):
            What `lead_sample_filter="small_loss"` compares a never-trained sample's initial score with: those of
            about 32 samples with the most similar prompts (`"prompts"`: k-means on the model's mean hidden state over
            each prompt, read from the scoring pass: no pass of its own), or its cluster's (`"clusters"`). With
            `"prompts"`, answers to the same kind of instruction are compared across clusters, so a cluster of wrong
            answers to other clusters' prompts (a bad source) is filtered out. It needs a prompt (untrained leading
            tokens) in every sample: on a pool where some sample has none (language-modeling rows, or
            `assistant_only_loss`/`completion_only_loss` off) the trainer warns and uses `"clusters"`. No effect
            unless `lead_sample_filter="small_loss"`.
        lead_filter_min_spread (`float`, *optional*, preset: `0.6`, paper `0.0`):
            The gate of `lead_sample_filter="small_loss"`: it cuts only where the initial scores of comparable samples
            lie apart, i.e. the median over comparison groups of their interquartile range is at least this many nats
            per token; below it the filter excludes nothing (`lead/filtered` is 0). Where answers to similar prompts
            differ only by length or difficulty their losses lie close, and a cut by loss would keep the easy answers
            rather than the right ones (docs/results.md). `0` always cuts.
        lead_split_by_size (`bool`, *optional*, preset: `True`, paper `False`):
            Mixture rounds: weight each cluster's probability by the number of samples it can give (eligible, and
            kept by `lead_sample_filter`), so that where the policy is uniform a round samples those candidates evenly
            instead of the clusters (a cluster the filter mostly excludes gets a small share; large clusters are not
            starved). No effect with `lead_round_mode="single"`, nor where the filter's gate is closed
            (`lead_filter_min_spread`): with no verdicts to weigh, the policy alone splits the round.
        lead_candidates (`float`, *optional*):
            Before any pass, draw once a candidate subsample of `lead_candidates` times the budget (stratified by the
            cluster column when one is given, in proportion to each cluster's size); the scoring pass, the clusters
            and the comparison groups are computed on it alone and the rounds choose within it, so the work before
            the first step follows the budget instead of the pool. The small-loss filter then picks its share among
            the candidates instead of the pool, so it is less selective: `None` (the whole pool) stays the default
            until that trade is measured to pay (benchmarks/results/cost.md).
        lead_warmup_steps (`int`, *optional*, defaults to `0`):
            Optimizer steps on uniformly random samples before the first round (rounded up to whole rounds).
        lead_seed (`int`, *optional*):
            Seed of the selection randomness; `seed` when not set.
    """

    lead_enabled: bool = field(default=True, metadata={"help": "False makes the trainer exactly SFTTrainer."})
    lead_preset: str = field(
        default="default",
        metadata={
            "help": "Named selection settings: 'default' (what this project measured best) or 'paper' (the paper's "
            "choices); lead_* fields set one by one override it.",
            "choices": list(PRESETS),
        },
    )
    lead_cluster_column: str | None = field(
        default=None,
        metadata={"help": "Dataset column holding each sample's cluster (int or str). Computed when not set."},
    )
    lead_clusters: str = field(
        default=CLUSTER_DEFAULTS["lead_clusters"],
        metadata={"help": "How to cluster when no column is given.", "choices": list(CLUSTER_FEATURES)},
    )
    lead_num_clusters: int = field(
        default=CLUSTER_DEFAULTS["lead_num_clusters"], metadata={"help": "Number of clusters when they are computed."}
    )
    lead_policy: str | None = field(
        default=None, metadata={"help": "Bandit policy name (trl_lead.policies.make_policy). Preset: exp3s."}
    )
    lead_policy_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments of the policy, e.g. '{\"temperature\": 0.1}' for boltzmann (JSON)."},
    )
    lead_round_size: float = field(
        default=0.01, metadata={"help": "Samples per round: a fraction of the pool when < 1, else a count."}
    )
    lead_budget: float = field(
        default=0.025,
        metadata={"help": "Distinct samples selected in total: a fraction of the pool when <= 1, else a count."},
    )
    lead_budget_pace: float | None = field(
        default=None,
        metadata={
            "help": "Share of the run's rounds over which the budget's new samples are admitted evenly (0: asap)."
        },
    )
    lead_max_reuse: int | None = field(default=None, metadata={"help": "Times one sample may be trained (preset: 4)."})
    lead_smoothing: float | None = field(
        default=None, metadata={"help": "Weight b of the history in the IDU recursion (preset: 0.5)."}
    )
    lead_gradient_correction: bool | None = field(
        default=None, metadata={"help": "Subtract the gradient-based estimate of the loss drop (False: ablation)."}
    )
    lead_initial_score: str | None = field(
        default=None,
        metadata={"help": "Initial IU of unseen samples: one scoring pass or none.", "choices": list(INITIAL_SCORES)},
    )
    lead_round_mode: str | None = field(
        default=None,
        metadata={"help": "A mixture of clusters per round, or one (the paper).", "choices": list(ROUND_MODES)},
    )
    lead_fine_selection: str | None = field(
        default=None,
        metadata={"help": "Choice inside a cluster (the paper: top).", "choices": list(FINE_SELECTIONS)},
    )
    lead_reward: str | None = field(
        default=None, metadata={"help": "Bandit reward (the paper: idu_drop).", "choices": list(REWARDS)}
    )
    lead_reward_scaling: str | None = field(
        default=None,
        metadata={"help": "Reward to [-1, 1]: running min/max or quantiles.", "choices": list(REWARD_SCALINGS)},
    )
    lead_sample_filter: str | None = field(
        default=None,
        metadata={
            "help": "small_loss: select only the lowest initial scores of each comparison group; loss_z: exclude "
            "samples whose initial score stands out from their cluster's (robust z-score); none.",
            "choices": list(SAMPLE_FILTERS),
        },
    )
    lead_filter_z: float | None = field(
        default=None, metadata={"help": "Threshold of lead_sample_filter, in robust standard deviations."}
    )
    lead_filter_revisits: bool | None = field(
        default=None,
        metadata={
            "help": "Also exclude trained samples whose first-visit loss stands out from their cluster's, or whose "
            "loss did not fall where their peers' did."
        },
    )
    lead_filter_keep: float | None = field(
        default=None,
        metadata={
            "help": "small_loss filter: share of each comparison group, lowest initial score first, to select "
            "(None: min(0.5, 1.6 * budget / pool size))."
        },
    )
    lead_filter_groups: str | None = field(
        default=None,
        metadata={
            "help": "small_loss filter: compare initial scores within each cluster, or within groups of similar "
            "prompts.",
            "choices": list(FILTER_GROUPS),
        },
    )
    lead_filter_min_spread: float | None = field(
        default=None,
        metadata={
            "help": "small_loss filter: cut only where the median interquartile range of initial scores within "
            "comparison groups is at least this (nats per token; 0: always)."
        },
    )
    lead_split_by_size: bool | None = field(
        default=None,
        metadata={"help": "Mixture rounds: weight each cluster's probability by its eligible, filter-kept samples."},
    )
    lead_candidates: float | None = field(
        default=None,
        metadata={
            "help": "Score and select within a subsample of this many times the budget, drawn once (None: all)."
        },
    )
    lead_warmup_steps: int = field(
        default=0, metadata={"help": "Optimizer steps on random samples before the first round."}
    )
    lead_seed: int | None = field(default=None, metadata={"help": "Seed of the selection randomness (None: seed)."})

    _VALID_DICT_FIELDS = SFTConfig._VALID_DICT_FIELDS + ["lead_policy_kwargs"]

    def __post_init__(self):
        super().__post_init__()  # reads a JSON string in `lead_policy_kwargs` into a dict
        check_choice("lead_preset", self.lead_preset, tuple(PRESETS))
        preset = PRESETS[self.lead_preset]
        # the preset settings given a value other than the preset's (what a warning about a setting without effect
        # names; a value equal to the preset's changes nothing, so a round trip through `to_dict` warns the same)
        self.lead_overrides = {
            name: getattr(self, f"lead_{name}")
            for name in PRESET_FIELDS
            if getattr(self, f"lead_{name}") is not None and getattr(self, f"lead_{name}") != preset[name]
        }
        for name in PRESET_FIELDS:
            if getattr(self, f"lead_{name}") is None:
                setattr(self, f"lead_{name}", preset[name])
        if not self.lead_enabled:
            chosen = [f"lead_{name}" for name in self.lead_overrides] + [
                name for name, default in CLUSTER_DEFAULTS.items() if getattr(self, name) != default
            ]
            if chosen:
                warnings.warn(f"{chosen} have no effect: `lead_enabled=False` trains as SFTTrainer.", stacklevel=3)
            return
        self._check_choices()
        self._check_numbers()
        self._check_packing()
        self._check_policy_kwargs()
        for message in self.settings_without_effect():
            warnings.warn(message, stacklevel=3)

    @property
    def selection_seed(self) -> int:
        """The seed of the selection randomness: `lead_seed`, or `seed` where it is None."""
        return self.seed if self.lead_seed is None else self.lead_seed

    def _check_choices(self) -> None:
        """Each named setting one of its choices, the filter's numbers in range, initial scores where needed."""
        choices = {
            "lead_clusters": CLUSTER_FEATURES,
            "lead_initial_score": INITIAL_SCORES,
            "lead_round_mode": ROUND_MODES,
            "lead_fine_selection": FINE_SELECTIONS,
            "lead_reward": REWARDS,
            "lead_reward_scaling": REWARD_SCALINGS,
            "lead_sample_filter": SAMPLE_FILTERS,
            "lead_filter_groups": FILTER_GROUPS,
        }
        for name, allowed in choices.items():
            check_choice(name, getattr(self, name), allowed)
        check_numbers(self.selection_choices())
        needs_initial = {"lead_sample_filter": "small_loss", "lead_reward": "heldout_gain"}
        for name, value in needs_initial.items():
            if getattr(self, name) == value and self.lead_initial_score != "loss":
                raise ValueError(
                    f"`{name}={value!r}` needs each sample's initial score, which `lead_initial_score="
                    f"{self.lead_initial_score!r}` does not compute; set `lead_initial_score='loss'` or pick another "
                    f"`{name}`."
                )

    def _check_numbers(self) -> None:
        """Sizes, reuse cap, clusters, smoothing and warm-up in range."""
        positive = {"lead_round_size": self.lead_round_size, "lead_budget": self.lead_budget}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"`{name}={value}` must be > 0 (a fraction of the pool when <= 1, else a count).")
        if not 1 <= self.lead_max_reuse <= 32767:
            raise ValueError(f"`lead_max_reuse={self.lead_max_reuse}` must lie in [1, 32767] (times a sample trains).")
        if self.lead_num_clusters < 1:
            raise ValueError(f"`lead_num_clusters={self.lead_num_clusters}` must be >= 1.")
        if not 0.0 <= self.lead_smoothing < 1.0:
            raise ValueError(f"`lead_smoothing={self.lead_smoothing}` must lie in [0, 1): it weights the history.")
        if self.lead_candidates is not None and not self.lead_candidates >= 1:
            raise ValueError(
                f"`lead_candidates={self.lead_candidates}` must be >= 1 (a multiple of the budget: the candidates "
                "must hold the budget), or None for the whole pool."
            )
        if self.lead_warmup_steps < 0:
            raise ValueError(f"`lead_warmup_steps={self.lead_warmup_steps}` must be >= 0.")

    def _check_packing(self) -> None:
        """Packing keeps samples whole (BFD), so each has one loss."""
        if self.packing and self.packing_strategy != "bfd":
            cut = (
                "cuts the token stream at fixed lengths"
                if self.packing_strategy == "wrapped"
                else ("splits samples longer than `max_length` into separate sequences")
            )
            raise ValueError(
                f"`packing_strategy={self.packing_strategy!r}` {cut}, so a sample's loss is spread over pieces that "
                "attend to other samples' tokens or miss their own start; LEAD scores each whole sample. Use "
                "`packing_strategy='bfd'` (keeps samples whole), `padding_free=True`, or `lead_enabled=False`."
            )

    def _check_policy_kwargs(self) -> None:
        """`lead_policy_kwargs` builds `lead_policy`."""
        if self.lead_policy_kwargs is not None:
            from .policies import make_policy  # numpy only; the policy is built again by the trainer

            if not isinstance(self.lead_policy_kwargs, dict):
                raise ValueError(
                    f"`lead_policy_kwargs={self.lead_policy_kwargs!r}` must be a dict (or a JSON object string) of "
                    f"keyword arguments of the `{self.lead_policy}` policy."
                )
            try:
                make_policy(self.lead_policy, **self.lead_policy_kwargs)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"`lead_policy_kwargs={self.lead_policy_kwargs!r}` does not fit `lead_policy="
                    f"{self.lead_policy!r}`: {error}. See the policy's docstring in `trl_lead.policies` for its "
                    "parameters."
                ) from error

    def selection_choices(self) -> dict[str, Any]:
        """The preset settings this config resolves to (`PRESET_FIELDS`, names without `lead_`)."""
        return {name: getattr(self, f"lead_{name}") for name in PRESET_FIELDS}

    def settings_without_effect(self) -> list[str]:
        """One message per setting given a value (other than its preset's or default) that has no effect in this
        combination, naming the field and why; `__post_init__` warns each once."""
        chosen = set(self.lead_overrides)
        filtering, small_loss = self.lead_sample_filter != "none", self.lead_sample_filter == "small_loss"
        rules = {
            # (no effect when, why)
            "filter_z": (
                not (self.lead_sample_filter == "loss_z" or (filtering and self.lead_filter_revisits)),
                "the robust z-score threshold is used by `lead_sample_filter='loss_z'` and by `lead_filter_revisits`",
            ),
            "filter_keep": (not small_loss, "only `lead_sample_filter='small_loss'` keeps a share"),
            "filter_groups": (not small_loss, "only `lead_sample_filter='small_loss'` compares within groups"),
            "filter_min_spread": (not small_loss, "only `lead_sample_filter='small_loss'` has a gate"),
            "filter_revisits": (not filtering, "`lead_sample_filter='none'` filters nothing"),
            "split_by_size": (self.lead_round_mode != "mixture", "only mixture rounds are split across clusters"),
        }
        messages = [
            f"`lead_{name}={getattr(self, f'lead_{name}')!r}` has no effect: {why}."
            for name, (without_effect, why) in rules.items()
            if name in chosen and without_effect
        ]
        if self.lead_cluster_column is not None:
            messages += [
                f"`{name}={getattr(self, name)!r}` has no effect: clusters come from `lead_cluster_column="
                f"{self.lead_cluster_column!r}`, not computed."
                for name, default in CLUSTER_DEFAULTS.items()
                if getattr(self, name) != default
            ]
        elif self.lead_initial_score == "none" and self.lead_clusters == "ifd":
            messages.append(
                "`lead_initial_score='none'` still runs the scoring pass: IFD clusters (`lead_clusters='ifd'`) are "
                "computed from it. Its losses then cluster the pool and are not used as initial scores. To skip the "
                "pass, give a `lead_cluster_column` or set `lead_clusters='embedding'`."
            )
        return messages
