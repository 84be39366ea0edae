"""Does LEAD select better data? Every method against honest baselines, at equal budget and equal steps.

From the same warmed-up base model of the embedded default, each method trains for the same number of optimizer
steps while touching at most `budget` distinct samples of the pool, then is scored by held-out exact match per task
family (`overall_learnable`: mean over the families whose answers can be learned). Wall time includes any scoring
pass a method needs (LEAD's initial scores, IFD, the loss-iterative re-scoring).

    python benchmarks/selection.py                       # the committed run (resumable: finished rows are kept)
    python benchmarks/selection.py --methods random,lead --seeds 1 --budgets 0.25   # a quick look

Writes benchmarks/results/selection.csv (one row per run), selection.md (mean, std and 95% interval per method and
budget) and selection.png (quality against budget).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FIELDS = ["method", "budget", "seed", "steps", "overall_learnable", "wall_time_s", "scoring_s", "rounds"]

# LEAD settings shared by every LEAD variant, each method overriding some of them: the paper's preset
# (`trl_lead.settings.PRESETS`), so a row keeps its meaning when the default preset moves
PAPER = {"lead_preset": "paper"}
METHODS: dict[str, dict] = {
    # baselines
    "random": {"kind": "subset", "how": "random"},
    "stratified": {"kind": "subset", "how": "stratified"},
    # the ceiling: a random subset of the clean rows only (no wrong, random or bad-source answer)
    "oracle": {"kind": "subset", "how": "oracle"},
    # what a perfect choice of clusters alone reaches: a random subset of the rows outside the noise family and the
    # bad source (the wrong answers inside the task families stay)
    "oracle_clusters": {"kind": "subset", "how": "oracle_clusters"},
    "full": {"kind": "full"},
    "ifd_topk": {"kind": "subset", "how": "ifd"},
    # the small-loss rule alone, without a bandit: a random subset of the rows in the lower half of their family by
    # the base model's loss (one scoring pass)
    "small_loss_subset": {"kind": "subset", "how": "small_loss"},
    # the same within groups of about 32 similar prompts (lead_filter_groups="prompts" without LEAD)
    "small_loss_prompts_subset": {"kind": "subset", "how": "small_loss_prompts"},
    # the ceiling of any filter that reads a model's loss: the small-loss subset, scored instead by a model trained
    # like the oracle (the base on a random subset of the clean rows only), which has learned each task from right
    # answers alone
    "clean_model_small_loss_subset": {"kind": "subset", "how": "clean_model_small_loss"},
    # the same scored by a model trained like the random subset (on a random subset of the pool, wrong answers
    # included): what re-scoring the pool with the model a run has trained so far would tell
    "trained_model_small_loss_subset": {"kind": "subset", "how": "trained_model_small_loss"},
    "loss_iterative": {"kind": "loss_iterative"},
    # LEAD as in the paper (family clusters, K = 8) and its ablations
    "lead": {"kind": "lead", **PAPER},
    "lead_no_correction": {"kind": "lead", **PAPER, "lead_gradient_correction": False},
    "lead_no_smoothing": {"kind": "lead", **PAPER, "lead_smoothing": 0.0},
    "lead_uniform_policy": {"kind": "lead", **PAPER, "lead_policy": "uniform"},
    "lead_no_clusters": {"kind": "lead", **PAPER, "no_clusters": True},
}
# The default of LEADConfig, chosen from the grid below: mixture rounds, uniform choice inside a cluster, first-visit
# reward (the paper's choices lost to random and stratified sampling here; see docs/results.md)
METHODS["lead_default"] = {
    "kind": "lead",
    **PAPER,
    "lead_round_mode": "mixture",
    "lead_fine_selection": "random",
    "lead_reward": "first_visit",
}
# The filter options the default combines: the small-loss cut within prompt groups, the size split, and without
# the trained-sample rules
_PROMPT = {"lead_sample_filter": "small_loss", "lead_filter_groups": "prompts"}
_PROMPT_SIZED = {**_PROMPT, "lead_split_by_size": True}
_PROMPT_SIZED_NOZ = {**_PROMPT_SIZED, "lead_filter_revisits": False}
# Mechanisms (LEADConfig options), each on top of `lead_default`, then all together
MECHANISMS = {
    "lead_filter": {"lead_sample_filter": "loss_z"},
    "lead_boltzmann": {"lead_policy": "boltzmann"},
    "lead_blend": {"lead_reward": "blend"},
    "lead_quantile": {"lead_reward_scaling": "quantile"},
    "lead_small_loss": {"lead_sample_filter": "small_loss"},
    "lead_gain": {"lead_sample_filter": "small_loss", "lead_reward": "heldout_gain", "lead_policy": "boltzmann"},
    "lead_gain_exp3s": {"lead_sample_filter": "small_loss", "lead_reward": "heldout_gain"},
    "lead_small_loss_keep30": {"lead_sample_filter": "small_loss", "lead_filter_keep": 0.3},
    "lead_small_loss_uniform": {"lead_sample_filter": "small_loss", "lead_policy": "uniform"},
    # the budget's new samples admitted evenly over the first half of the rounds (lead_budget_pace)
    "lead_paced": {"lead_sample_filter": "small_loss", "lead_budget_pace": 0.5},
    "lead_paced_full": {"lead_sample_filter": "small_loss", "lead_budget_pace": 1.0},
    "lead_paced_uniform": {"lead_sample_filter": "small_loss", "lead_budget_pace": 0.5, "lead_policy": "uniform"},
    "lead_paced_no_filter": {"lead_budget_pace": 0.5},
    # the small-loss cut within groups of similar prompts instead of within clusters (lead_filter_groups)
    "lead_prompt_filter": _PROMPT,
    "lead_prompt_paced": {**_PROMPT, "lead_budget_pace": 0.5},
    # mixture rounds split by each cluster's candidates (lead_split_by_size)
    "lead_sized": {"lead_sample_filter": "small_loss", "lead_split_by_size": True},
    "lead_prompt_sized": _PROMPT_SIZED,
    "lead_prompt_sized_keep25": {**_PROMPT_SIZED, "lead_filter_keep": 0.25},
    "lead_prompt_sized_paced": {**_PROMPT_SIZED, "lead_budget_pace": 0.5},
    # what separates LEAD from the static prompt-group subset: the bandit (uniform policy), the exclusions of trained
    # samples by their first-visit loss and loss drop (lead_filter_revisits; the rows were run with lead_filter_z=1e9,
    # which fires neither rule: the same plans), both
    "lead_prompt_sized_uniform": {**_PROMPT_SIZED, "lead_policy": "uniform"},
    "lead_prompt_sized_noz": _PROMPT_SIZED_NOZ,
    "lead_prompt_sized_uniform_noz": {**_PROMPT_SIZED_NOZ, "lead_policy": "uniform"},
    # LEADConfig's default (the "default" preset): all of the above that paid, the keep following the budget
    "lead_auto": {"lead_preset": "default"},
    "lead_prompt_uniform": {**_PROMPT, "lead_policy": "uniform"},
    # the keep against the budget (the default's rule gives 0.16 at 10%, 0.4 at 25%)
    "lead_prompt_sized_noz_keep25": {**_PROMPT_SIZED_NOZ, "lead_filter_keep": 0.25},
    "lead_prompt_sized_noz_keep16": {**_PROMPT_SIZED_NOZ, "lead_filter_keep": 0.16},
    "lead_auto_keep40": {**_PROMPT_SIZED_NOZ, "lead_filter_keep": 0.4},
}
# the default's bandit against no bandit (uniform) and a policy that moves within a few rounds (Boltzmann)
MECHANISMS["lead_auto_uniform"] = {**MECHANISMS["lead_auto"], "lead_policy": "uniform"}
MECHANISMS["lead_auto_boltzmann"] = {**MECHANISMS["lead_auto"], "lead_policy": "boltzmann"}
# the default without its small-loss filter: what remains where the base model's loss cannot tell right from wrong
MECHANISMS["lead_auto_nofilter"] = {**MECHANISMS["lead_auto"], "lead_sample_filter": "none"}
# the default with its small-loss filter cutting on every pool, whatever the spread of its scores (no gate)
MECHANISMS["lead_auto_always_filter"] = {**MECHANISMS["lead_auto"], "lead_filter_min_spread": 0.0}
# following the model: the revisit rules (a trained sample is left out when its first-visit loss stands out of its
# cluster's, or its loss did not fall where its peers' did: a loss trajectory); rewards measurable on revisits (the
# paper's IDU drop since the last visit; `blend`: the loss drop since the first visit once the budget is spent)
MECHANISMS["lead_auto_revisits"] = {**MECHANISMS["lead_auto"], "lead_filter_revisits": True}
MECHANISMS["lead_auto_idu_drop"] = {**MECHANISMS["lead_auto"], "lead_reward": "idu_drop"}
MECHANISMS["lead_auto_blend"] = {**MECHANISMS["lead_auto"], "lead_reward": "blend"}
# a cluster reward paired per sample (initial score minus the loss at first visit) once the filter has removed most
# of the bad source: does it now find the noise family?
MECHANISMS["lead_auto_gain"] = {**MECHANISMS["lead_auto"], "lead_reward": "heldout_gain"}
MECHANISMS["lead_auto_gain_boltzmann"] = {**MECHANISMS["lead_auto_gain"], "lead_policy": "boltzmann"}
# ...with most of the mass spread evenly (floor 0.6): it may demote a cluster to 0.6 of uniform, not pile onto one
MECHANISMS["lead_auto_gain_boltzmann_floor"] = {
    **MECHANISMS["lead_auto_gain_boltzmann"],
    "lead_policy_kwargs": {"floor": 0.6},
}
# the default scored and selected within a candidate subsample of 2, 4 or 8 times the budget, drawn once
# (lead_candidates; stratified by the family column where it is the clusters): the passes before the first step
# follow the budget, not the pool
for _multiple in (2, 4, 8):
    MECHANISMS[f"lead_auto_candidates{_multiple}"] = {**MECHANISMS["lead_auto"], "lead_candidates": float(_multiple)}
for _name, _options in MECHANISMS.items():
    METHODS[_name] = {**METHODS["lead_default"], **_options}
# (the first four mechanisms together; measured before "small_loss" and "heldout_gain" were added)
FIRST_FOUR = ("lead_filter", "lead_boltzmann", "lead_blend", "lead_quantile")
METHODS["lead_combined"] = {**METHODS["lead_default"], **{k: v for n in FIRST_FOUR for k, v in MECHANISMS[n].items()}}
# LEAD's option grid: round mode x fine selection x reward
for _mode in ("single", "mixture"):
    for _fine in ("top", "sample", "random"):
        for _reward in ("idu_drop", "first_visit"):
            METHODS[f"grid_{_mode}_{_fine}_{_reward}"] = {
                "kind": "lead",
                **PAPER,
                "lead_round_mode": _mode,
                "lead_fine_selection": _fine,
                "lead_reward": _reward,
            }
METHODS["grid_mixture_random_first_visit_warmup"] = {
    **METHODS["grid_mixture_random_first_visit"],
    "lead_warmup_steps": 20,
}
METHODS["grid_single_top_idu_drop_warmup"] = {**METHODS["grid_single_top_idu_drop"], "lead_warmup_steps": 20}


DEFAULT_METHOD = "lead_auto"
"""The method that runs `LEADConfig`'s defaults."""


@dataclass
class Job:
    method: str
    budget: float
    seed: int
    steps: int
    batch_size: int = 16
    learning_rate: float = 1e-3
    round_size: int = 32
    max_reuse: int = 8
    mixture: str | None = None  # a name in trl_lead.pool.MIXTURES; None: the embedded default pool
    clusters: str = "family"  # "family": the family_id column; "computed": LEAD's own (the lead_clusters default)
    num_eval_per_family: int | None = None  # None: the embedded default's


def cpu_training_args(output_dir: str, batch_size: int, steps: int, **overrides) -> dict:
    """The `SFTConfig` arguments the benchmarks' runs share (the embedded model's length, CPU, assistant-only loss, no
    saving or reporting), with `overrides`."""
    return {
        "output_dir": output_dir,
        "assistant_only_loss": True,
        "per_device_train_batch_size": batch_size,
        "learning_rate": 1e-3,
        "max_steps": steps,
        "max_length": 64,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "bf16": False,
        "seed": 0,
        "disable_tqdm": True,
        "logging_steps": 1000,
        **overrides,
    }


def common_args(job: Job, output_dir: str) -> dict:
    return cpu_training_args(
        output_dir,
        job.batch_size,
        job.steps,
        per_device_eval_batch_size=128,
        learning_rate=job.learning_rate,
        lr_scheduler_type="constant",
        seed=job.seed,
        data_seed=job.seed,
    )


def _subset(base, job: Job, how: str, count: int) -> tuple[np.ndarray, float]:
    """Rows of a fixed subset of `count` samples, and the seconds spent scoring for it."""
    rng = np.random.default_rng(job.seed)
    n = len(base.train_dataset)
    if how == "random":
        return rng.choice(n, count, replace=False), 0.0
    if how in ("oracle", "oracle_clusters"):
        from trl_lead.pool import BAD_SOURCE, NOISE_FAMILY

        if how == "oracle":
            keep = ~np.asarray(base.train_dataset["is_corrupted"])
        else:
            keep = ~np.isin(np.asarray(base.train_dataset["family"]), [NOISE_FAMILY, BAD_SOURCE])
        rows = np.flatnonzero(keep)
        return rng.choice(rows, min(count, len(rows)), replace=False), 0.0
    if how == "stratified":
        # Equal share per cluster (family), capped by cluster size, the remainder spread over the others
        family = np.asarray(base.train_dataset["family_id"])
        members = [rng.permutation(np.flatnonzero(family == k)) for k in np.unique(family)]
        take, left = [0] * len(members), count
        while left > 0:
            open_ = [i for i, m in enumerate(members) if take[i] < len(m)]
            for i in open_[:left] if left < len(open_) else open_:
                take[i] += 1
                left -= 1
        return np.concatenate([m[:t] for m, t in zip(members, take)]), 0.0
    if how in ("small_loss", "small_loss_prompts", "clean_model_small_loss", "trained_model_small_loss"):
        from trl_lead.scoring import answer_losses

        start = time.perf_counter()
        model = base.model
        if how in ("clean_model_small_loss", "trained_model_small_loss"):
            rows = np.arange(n)
            if how == "clean_model_small_loss":
                rows = np.flatnonzero(~np.asarray(base.train_dataset["is_corrupted"]))
            model = train_on_rows(base, rng.choice(rows, min(count, len(rows)), replace=False), job)
        losses = answer_losses(model, base.tokenizer, base.train_dataset, batch_size=128, show_progress=False)
        family = np.asarray(base.train_dataset["family_id"])
        if how == "small_loss_prompts":  # groups of about 32 similar prompts instead of the families
            from trl_lead.kmeans import cluster_embeddings
            from trl_lead.scoring import embed

            prompts = [row[0]["content"] for row in base.train_dataset["messages"]]
            features = embed(prompts, base.model, base.tokenizer, normalize=True, show_progress=False)
            family = cluster_embeddings(features, math.ceil(n / 32), "kmeans", 0, show_progress=False)
        rows = np.concatenate(
            [m[losses[m] <= np.median(losses[m])] for m in (np.flatnonzero(family == k) for k in np.unique(family))]
        )
        return rng.choice(rows, min(count, len(rows)), replace=False), time.perf_counter() - start
    # "ifd": static top-k by IFD of the base model (score once, train on the highest)
    from trl_lead.scoring import ifd_scores

    start = time.perf_counter()
    scores = ifd_scores(base.model, base.tokenizer, base.train_dataset, batch_size=128, show_progress=False)
    return np.argsort(-scores)[:count], time.perf_counter() - start


def load_base(mixture: str | None, num_eval_per_family: int | None = None):
    """The warmed-up base model (`EmbeddedDefault`) with the pool and held-out items of `mixture` (a name in
    `trl_lead.pool.MIXTURES`; None: the embedded default pool). The base is warmed up on the embedded default pool, or
    on the mixture's noisy pool itself where the mixture says so (`pool_warmup_steps`)."""
    from trl_lead.embedded import load_embedded_default
    from trl_lead.pool import MIXTURES, make_instruction_pool

    pool_warmup = 0 if mixture is None else MIXTURES[mixture].pool_warmup_steps
    base = load_embedded_default(mixture=mixture, warmup_steps=pool_warmup) if pool_warmup else load_embedded_default()
    if mixture is not None or num_eval_per_family is not None:
        # The warmed-up base model, fine-tuned on another pool of the same tasks
        pool_args = {"mixture": mixture}
        if num_eval_per_family is not None:
            pool_args["num_eval_per_family"] = num_eval_per_family
        base.train_dataset, base.eval_dataset = make_instruction_pool(**pool_args)
    return base


def train_on_rows(base, rows: np.ndarray, job: Job, callbacks: tuple = ()):
    """A fresh copy of the base model trained on `rows` of its pool with `SFTTrainer`, as the subsets of `job` are."""
    import tempfile

    import transformers
    from trl import SFTConfig, SFTTrainer

    fresh = transformers.AutoModelForCausalLM.from_pretrained(base.model_path)
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = SFTTrainer(
            model=fresh,
            args=SFTConfig(**common_args(job, output_dir)),
            train_dataset=base.train_dataset.select(np.sort(rows)),
            processing_class=base.tokenizer,
            callbacks=list(callbacks),
        )
        trainer.train()
    return trainer.model


def run_job(job: Job) -> dict:
    """Train one method from the warmed-up base and score it. Runs in a worker process (one torch thread)."""
    import torch
    import transformers

    from trl_lead.embedded import exact_match

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    base = load_base(job.mixture, job.num_eval_per_family)
    spec = dict(METHODS[job.method])
    kind = spec.pop("kind")
    n = len(base.train_dataset)
    count = int(round(job.budget * n))
    start = time.perf_counter()
    scoring, rounds = 0.0, 0
    if kind in ("subset", "full"):
        rows, scoring = _subset(base, job, spec["how"], count) if kind == "subset" else (np.arange(n), 0.0)
        model = train_on_rows(base, rows, job)
        visits = [np.sort(rows)] * 3
    else:
        trainer = _train_lead(base, job, kind, spec, count)
        model, rounds = trainer.model, len(trainer.lead_state.rounds)
        visits = visits_by_thirds(trainer.lead_state.rounds)
        assert trainer.lead_state.num_selected <= count
        scoring = getattr(trainer, "loss_iterative_scoring_s", 0.0)
    wall = time.perf_counter() - start  # includes every scoring pass
    scores = exact_match(model, base.tokenizer, base.eval_dataset, batch_size=200)
    return {
        "method": job.method,
        "budget": job.budget,
        "seed": job.seed,
        "steps": job.steps,
        "overall_learnable": scores["overall_learnable"],
        "wall_time_s": round(wall, 2),
        "scoring_s": round(scoring, 2),
        "rounds": rounds,
        **{f"em_{k}": v for k, v in scores.items() if k not in ("overall", "overall_learnable")},
        **visit_shares(base.train_dataset, visits),
    }


def _train_lead(base, job: Job, kind: str, spec: dict, count: int):
    """A fresh copy of the base trained by `LEADSFTTrainer` (or the loss-iterative baseline) with the method's
    `spec` over the whole pool, at most `count` distinct samples; the trainer after training."""
    import tempfile

    import transformers

    from trl_lead import LEADConfig, LEADSFTTrainer

    no_clusters = spec.pop("no_clusters", False)
    if kind == "loss_iterative":
        spec = dict(
            lead_policy="uniform",
            lead_smoothing=0.0,
            lead_gradient_correction=False,
            lead_round_mode="single",
            lead_fine_selection="top",
        )
        no_clusters = True
    fresh = transformers.AutoModelForCausalLM.from_pretrained(base.model_path)
    with tempfile.TemporaryDirectory() as output_dir:
        args = LEADConfig(
            **common_args(job, output_dir),
            lead_cluster_column=None if no_clusters or job.clusters == "computed" else "family_id",
            lead_round_size=job.round_size,
            lead_budget=count,
            lead_max_reuse=job.max_reuse,
            **spec,
        )
        trainer_class = _loss_iterative_trainer() if kind == "loss_iterative" else LEADSFTTrainer
        trainer = trainer_class(
            model=fresh,
            args=args,
            train_dataset=base.train_dataset,
            processing_class=base.tokenizer,
            clusters=np.zeros(len(base.train_dataset), dtype=np.int64) if no_clusters else None,
        )
        trainer.train()
    return trainer


def visits_by_thirds(rounds: list[dict]) -> list[np.ndarray]:
    """The sample ids trained in the first, middle and last third of a run's rounds (one id per visit)."""
    thirds = np.array_split(np.arange(len(rounds)), 3)
    return [np.array([i for r in part for i in rounds[r]["sample_ids"]], dtype=np.int64) for part in thirds]


def visit_shares(dataset, visits: list[np.ndarray]) -> dict:
    """Per third of the run: the share of visits to wrong answers (`is_corrupted`) and to the noise family and the
    bad source. And how the answer lengths (characters) of the distinct samples trained compare with the pool's: their
    mean over the pool's mean, and the share of them at or below the pool's lower quartile, and at or above its upper
    quartile, each over the pool's share there (1.0: as in the pool)."""
    from trl_lead.pool import BAD_SOURCE, NOISE_FAMILY

    wrong = np.asarray(dataset["is_corrupted"])
    bad = np.isin(np.asarray(dataset["family"]), [NOISE_FAMILY, BAD_SOURCE])
    length = np.array([len(m[-1]["content"]) for m in dataset["messages"]], dtype=np.float64)
    shares = {}
    for third, ids in zip(("first", "middle", "last"), visits):
        shares[f"wrong_visits_{third}"] = round(float(wrong[ids].mean()), 4) if len(ids) else ""
        shares[f"bad_visits_{third}"] = round(float(bad[ids].mean()), 4) if len(ids) else ""
    trained = np.unique(np.concatenate(visits))
    shares["answer_length_ratio"] = round(float(length[trained].mean() / length.mean()), 4)
    low, high = np.quantile(length, [0.25, 0.75])
    for name, tail in (("short", length <= low), ("long", length >= high)):
        shares[f"{name}_answers_ratio"] = round(float(tail[trained].mean() / tail.mean()), 4)
    return shares


def _loss_iterative_trainer():
    from trl_lead import LEADSFTTrainer

    class LossIterative(LEADSFTTrainer):
        """The "iterative model-aware" baseline LEAD avoids: before every round, one extra forward pass re-scores the
        whole pool, and the round takes the samples of highest current loss (one cluster, no bandit, no smoothing)."""

        loss_iterative_scoring_s = 0.0

        def plan_round(self):
            if self.lead_state.rounds:  # the first round's scores come from the trainer's own scoring pass
                start = time.perf_counter()
                self.lead_state.set_idu(self.score_pool())
                self.loss_iterative_scoring_s += time.perf_counter() - start
            return super().plan_round()

    return LossIterative


def read_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def append_row(path: str, row: dict) -> None:
    """Append `row` to the CSV at `path`; a row with columns the file lacks rewrites it with them (empty in the
    rows before), atomically, so the columns always line up."""
    from trl_lead.files import atomic_write

    rows = read_rows(path)
    header = list(rows[0]) if rows else list(row)
    if rows and set(row) - set(header):
        header += [key for key in row if key not in header]
        with atomic_write(path) as f:
            writer = csv.DictWriter(f, fieldnames=header, restval="")
            writer.writeheader()
            writer.writerows([*rows, row])
        return
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, restval="")
        if not rows:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def summarize(rows: list[dict], out_dir: str, machine: str) -> None:
    """selection.md and selection.png from the CSV rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for row in rows:
        key = (row["method"], float(row["budget"]))
        table.setdefault(key, []).append((float(row["overall_learnable"]), float(row["wall_time_s"])))
    budgets = sorted({b for _, b in table})
    methods = list(dict.fromkeys(m for m in METHODS if any((m, b) in table for b in budgets)))
    lines = [
        "# Selection benchmark (embedded default)",
        "",
        f"Machine: {machine}. Each cell: held-out exact match (%) over the learnable families, mean ± std over seeds "
        "[95% t-interval], and mean wall time including scoring passes. Same base model, same optimizer steps, same "
        "budget of distinct samples for every method. Wall times are only comparable between runs made under the same "
        "load: the committed ones were measured while other jobs shared the 2 cores.",
        "",
        "| method | " + " | ".join(f"budget {b:.0%}" for b in budgets) + " | wall time (s) |",
        "|---|" + "---|" * (len(budgets) + 1),
    ]
    t95 = {1: float("nan"), 2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57}
    for method in methods:
        cells, walls = [], []
        for b in budgets:
            values = table.get((method, b), [])
            if not values:
                cells.append("")
                continue
            quality = np.array([v[0] for v in values])
            walls += [v[1] for v in values]
            half = t95.get(len(quality), 2.0) * quality.std(ddof=1) / np.sqrt(len(quality)) if len(quality) > 1 else 0
            cells.append(
                f"{quality.mean():.1f} ± {quality.std(ddof=1) if len(quality) > 1 else 0:.1f} "
                f"[{quality.mean() - half:.1f}, {quality.mean() + half:.1f}] (n={len(quality)})"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {np.mean(walls):.1f} |")
    with open(os.path.join(out_dir, "selection.md.tmp"), "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(os.path.join(out_dir, "selection.md.tmp"), os.path.join(out_dir, "selection.md"))

    # Quality against budget for the baselines and the paper's LEAD (wall times, measured on shared cores, are in the
    # table only: they do not compare across runs)
    fig, left = plt.subplots(figsize=(8, 4.5))
    labels = {"full": "full data, same steps", "ifd_topk": "static IFD top-k", "lead": "LEAD, the paper's choices"}
    highlight = [m for m in ("random", "stratified", "full", "ifd_topk", "lead", "lead_default") if m in methods]
    for method in highlight:
        xs = [b for b in budgets if (method, b) in table]
        means = [np.mean([v[0] for v in table[(method, b)]]) for b in xs]
        stds = [np.std([v[0] for v in table[(method, b)]], ddof=1) if len(table[(method, b)]) > 1 else 0 for b in xs]
        left.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=labels.get(method, method))
    left.set_xlabel("budget (share of the pool)")
    left.set_ylabel("held-out exact match,\nlearnable families (%)")
    left.set_title("Quality against budget on the embedded pool (mean ± std over seeds)", fontsize=10)
    left.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "selection.tmp.png"), dpi=110)
    plt.close(fig)
    os.replace(os.path.join(out_dir, "selection.tmp.png"), os.path.join(out_dir, "selection.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="all", help="comma-separated names, 'all', 'core' or 'grid'")
    parser.add_argument("--budgets", default="0.1,0.25,0.5")
    parser.add_argument("--grid-budgets", default="0.25", help="budgets of the option grid, full and loss_iterative")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=RESULTS)
    options = parser.parse_args()
    os.makedirs(options.out, exist_ok=True)
    csv_path = os.path.join(options.out, "selection.csv")
    core = [m for m in METHODS if not m.startswith("grid_")]
    grid = [m for m in METHODS if m.startswith("grid_")]
    chosen = {"all": core + grid, "core": core, "grid": grid}.get(options.methods, options.methods.split(","))
    budgets = [float(b) for b in options.budgets.split(",")]
    grid_budgets = [float(b) for b in options.grid_budgets.split(",")]
    # The option grid is large, "full" ignores the budget, and "loss_iterative" costs a pool pass per round: those
    # run at the grid budgets only
    single = {m for m in chosen if m.startswith("grid_") or m in ("full", "loss_iterative")}
    jobs = [
        Job(method, budget, seed, options.steps)
        for method in chosen
        for budget in (grid_budgets if method in single else budgets)
        for seed in range(options.seeds)
    ]
    done = {(r["method"], float(r["budget"]), int(r["seed"]), int(r["steps"])) for r in read_rows(csv_path)}
    todo = [j for j in jobs if (j.method, j.budget, j.seed, j.steps) not in done]
    from trl_lead.embedded import load_embedded_default

    load_embedded_default()  # build the cached warm-up once, before the workers start
    import multiprocessing

    # spawn: torch in forked workers can hang on OpenMP state inherited from the parent
    with ProcessPoolExecutor(max_workers=options.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, job) for job in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc="selection benchmark"):
            append_row(csv_path, future.result())
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    summarize(read_rows(csv_path), options.out, machine)
    print(open(os.path.join(options.out, "selection.md")).read())


if __name__ == "__main__":
    main()
