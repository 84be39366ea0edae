"""What a `LEADConfig` and the trainer's arguments resolve to before training: the given clusters, the selection
settings over the pool, and the policy."""

from __future__ import annotations

import math
import warnings

import numpy as np
from datasets import Dataset

from .config import CLUSTER_DEFAULTS, LEADConfig
from .policies import make_policy
from .selection import draw_candidates
from .settings import SelectionSettings, auto_filter_keep, check_policy, resolve_sizes
from .steps import run_steps, steps_per_round


def given_clusters(dataset: Dataset, args: LEADConfig, clusters) -> np.ndarray | None:
    """The pool's cluster labels as int64 codes, from `clusters` or `lead_cluster_column` (None: computed)."""
    if clusters is not None:
        unused = [name for name, value in CLUSTER_DEFAULTS.items() if getattr(args, name) != value]
        unused += ["lead_cluster_column"] if args.lead_cluster_column is not None else []
        if unused:
            warnings.warn(
                f"{unused} have no effect: the `clusters` passed to the trainer are the clusters.", stacklevel=4
            )
        clusters = np.asarray(clusters)
        if len(clusters) != len(dataset):
            raise ValueError(f"`clusters` has {len(clusters)} labels for {len(dataset)} samples; give one each.")
    elif args.lead_cluster_column is not None:
        if args.lead_cluster_column not in dataset.column_names:
            raise ValueError(
                f"`lead_cluster_column={args.lead_cluster_column!r}` is not a column of the training dataset "
                f"(columns: {dataset.column_names}). Name an existing column, or leave it unset to compute "
                f"clusters (`lead_clusters`)."
            )
        clusters = np.asarray(dataset[args.lead_cluster_column])
    else:
        return None  # computed when training starts (needs the model)
    if clusters.dtype.kind not in "iu":
        _, clusters = np.unique(clusters.astype(str), return_inverse=True)
    elif clusters.min() < 0:
        raise ValueError("Cluster labels must be >= 0 (or strings).")
    return clusters.astype(np.int64)


def resolve_settings(args: LEADConfig, n: int, candidates: int | None = None) -> SelectionSettings:
    """Settings with sizes as counts over a pool of `n` samples, selected from `candidates` of them (all by
    default): the automatic filter share keeps 1.6 times the budget of those."""
    round_size, budget = resolve_sizes(args.lead_round_size, args.lead_budget, n)
    per_round = steps_per_round(args, round_size)
    warmup_rounds = math.ceil(args.lead_warmup_steps / per_round)
    rounds = math.ceil(run_steps(args, round_size, budget, warmup_rounds)[1] / per_round)  # the run's rounds
    choices = args.selection_choices()
    if choices["filter_keep"] is None:
        choices["filter_keep"] = auto_filter_keep(budget, candidates or n)
    return SelectionSettings.for_pool(
        n, args.lead_round_size, args.lead_budget, args.lead_preset, rounds, warmup_rounds, **choices
    )


def resolve_policy(args: LEADConfig, policy):
    """The policy choosing the clusters: `policy`, or `make_policy(args.lead_policy, **args.lead_policy_kwargs)`."""
    named = [name for name, given in [("lead_policy", "policy" in args.lead_overrides),
                                      ("lead_policy_kwargs", bool(args.lead_policy_kwargs))] if given]  # fmt: skip
    if policy is not None and named:
        warnings.warn(
            f"{named} have no effect: the `policy` passed to the trainer chooses the clusters.", stacklevel=4
        )
    if policy is None:
        try:
            policy = make_policy(args.lead_policy, **(args.lead_policy_kwargs or {}))
        except ValueError as error:
            raise ValueError(f"`lead_policy={args.lead_policy!r}`: {error}") from error
    check_policy(policy, args.lead_round_mode)
    return policy


def candidate_rows_of(args: LEADConfig, n: int, clusters: np.ndarray | None) -> np.ndarray | None:
    """The dataset rows of the candidate subsample (`lead_candidates` times the budget, stratified by the given
    `clusters`), drawn once from the selection seed; `None` when there is none to draw or it would hold every row."""
    if args.lead_candidates is None:
        return None
    budget = resolve_sizes(args.lead_round_size, args.lead_budget, n)[1]
    count = min(n, math.ceil(args.lead_candidates * budget))
    if count == n:
        return None
    return draw_candidates(count, n, args.selection_seed, clusters)
