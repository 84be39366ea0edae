"""`trl-lead` console script.

trl-lead demo [--output-dir DIR] [--max-steps N] [--seed S] [--mixture NAME] [--paper]
    LEAD end to end on the embedded default (tiny model, generated pool; by default a mixture with conflicting
    noise), next to a random subset of the same size trained for the same steps; prints a table of the rounds,
    the clean share of what each selected and the held-out exact match, writes a PNG.
trl-lead sft --config x.yaml [--lead_policy ucb1 ...]
    TRL's `trl sft` with LEADSFTTrainer and LEADConfig's `lead_*` fields.
trl-lead cluster --config x.yaml
    Computes the clusters (`lead_clusters`, `lead_num_clusters`); writes the dataset with a cluster column
    and a PNG of the clusters into `output_dir`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from trl_lead.files import atomic_directory, atomic_write

EMBEDDED = "trl-lead/embedded"  # `dataset_name` / `model_name_or_path` of the offline embedded default


@dataclass
class DemoSettings:
    """What the demo trains: both runs see the same distinct-sample budget and the same optimizer steps (one cell of
    `benchmarks/selection.py`)."""

    max_steps: int = 100
    batch_size: int = 16
    learning_rate: float = 1e-3
    budget: float = 0.25
    round_size: int = 32
    max_reuse: int = 8
    seed: int = 0


#: The pool the demo trains on by default: a mixture of `trl_lead.pool.MIXTURES` whose noise conflicts with the tasks,
#: so a clean subset beats a random one ("none": the embedded default pool, where they tie).
DEFAULT_DEMO_MIXTURE = "conflict-a"


def demo_training_args(settings: DemoSettings, output_dir: str) -> dict:
    """The SFTConfig fields both demo runs share."""
    return dict(
        output_dir=output_dir,
        assistant_only_loss=True,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        max_steps=settings.max_steps,
        max_length=64,
        logging_steps=20,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        # TRL defaults `gradient_checkpointing=True`, which transformers 5 takes as the deprecated alias of this field
        # (with a FutureWarning); setting this one leaves the alias unused, and checkpointing only slows a tiny model
        activation_checkpointing=False,
        disable_tqdm=True,  # no Trainer bar: the demo draws one bar per run (`_step_bar`)
        seed=settings.seed,
    )


def _step_bar(description: str):
    """A Trainer callback drawing one progress bar over the run's optimizer steps (and printing no log dicts)."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class StepBar(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = tqdm(total=state.max_steps, desc=description, unit="step", dynamic_ncols=True)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return StepBar()


def train_lead(
    base, settings: DemoSettings, output_dir: str, callbacks: list | None = None, trainer_class=None, **lead_kwargs
):
    from transformers import PrinterCallback

    from trl_lead import LEADConfig, LEADSFTTrainer

    lead = dict(
        lead_cluster_column="family_id",
        lead_round_size=settings.round_size,
        lead_budget=settings.budget,
        lead_max_reuse=settings.max_reuse,
    )
    args = LEADConfig(**{**demo_training_args(settings, output_dir), **lead, **lead_kwargs})
    trainer = (trainer_class or LEADSFTTrainer)(  # a subclass overriding the trainer's hooks
        model=fresh_model(base),
        args=args,
        train_dataset=base.train_dataset,
        processing_class=base.tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # no log dict per step; they stay in `trainer.state.log_history`
    trainer.train()
    return trainer


def _random_rows(settings: DemoSettings, pool_size: int, count: int) -> np.ndarray:
    """Pool rows of the random subset: `count` distinct rows drawn with the demo's seed, in pool order."""
    rng = np.random.default_rng(settings.seed)
    return np.sort(rng.choice(pool_size, count, replace=False))


def _train_random_subset(
    base, settings: DemoSettings, output_dir: str, budget_count: int, callbacks: list | None = None
):
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    subset = base.train_dataset.select(_random_rows(settings, len(base.train_dataset), budget_count))
    args = SFTConfig(**demo_training_args(settings, output_dir))
    trainer = SFTTrainer(
        model=fresh_model(base), args=args, train_dataset=subset, processing_class=base.tokenizer, callbacks=callbacks
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return trainer


def fresh_model(base):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base.model_path)


def _cluster_names() -> tuple[str, ...]:
    """The name of each `family_id` (LEAD's cluster in the demo): the families, then the bad source."""
    from trl_lead.pool import BAD_SOURCE, BAD_SOURCE_ID, FAMILIES

    assert BAD_SOURCE_ID == len(FAMILIES)
    return (*FAMILIES, BAD_SOURCE)


def _unlearnable() -> tuple[str, ...]:
    """Clusters whose answers cannot be learned: random answers (noise) and wrong ones (the bad source)."""
    from trl_lead.pool import BAD_SOURCE, NOISE_FAMILY

    return (NOISE_FAMILY, BAD_SOURCE)


@dataclass
class CleanShares:
    """Share of clean rows (pool column `is_corrupted` False) in the pool and in the distinct samples each run trained.

    | Field | Meaning |
    |---|---|
    | `pool` | clean share of the whole pool |
    | `lead` | clean share of the distinct samples LEAD's rounds selected |
    | `random` | clean share of the random subset |
    | `equal_clusters` | expected clean share of a subset of LEAD's size with an equal share from every cluster (capped
      by the cluster's size): what choosing clusters uniformly gives, without learning anything |
    | `chance` | two standard errors of the clean share of a uniformly random draw of LEAD's size from the pool |
    """

    pool: float
    lead: float
    random: float
    equal_clusters: float
    chance: float

    @property
    def lead_beats_pool(self) -> bool:
        """LEAD's clean share is above the pool's by more than a random draw of its size would give by chance."""
        return bool(self.lead - self.pool > self.chance)

    @property
    def lead_beats_equal_clusters(self) -> bool:
        """LEAD's clean share is above an equal share per cluster's by more than the same chance margin."""
        return bool(self.lead - self.equal_clusters > self.chance)

    def verdict(self) -> str:
        """One line: did the selection beat the pool's clean share, and, if so, more than uniform clusters do."""
        did = "beat" if self.lead_beats_pool else "did not beat"
        line = (
            f"selection {did} the pool's clean share (LEAD {self.lead:.1%} vs pool {self.pool:.1%}, "
            f"±{self.chance:.1%} by chance)"
        )
        if self.lead_beats_pool and not self.lead_beats_equal_clusters:
            line += f", but not an equal share per cluster ({self.equal_clusters:.1%})"
        return line


def clean_shares(rounds: list[dict], cluster: np.ndarray, clean: np.ndarray, random_rows: np.ndarray) -> CleanShares:
    """Clean shares of the pool, of the distinct samples of `rounds` (warm-up rounds included: they train too), of
    `random_rows` and of an equal share per cluster; `clean` is the pool's `~is_corrupted`, `cluster` LEAD's."""
    clean = np.asarray(clean, dtype=bool)
    distinct = np.unique(np.concatenate([np.asarray(r["sample_ids"], dtype=np.int64) for r in rounds]))
    p, n, size = clean.mean(), len(distinct), len(clean)
    # A draw of n rows without replacement: hypergeometric variance of the share
    std = np.sqrt(p * (1 - p) / n * (size - n) / max(size - 1, 1))
    # Equal shares: the smallest clusters are taken whole, the rest split evenly among the others (water-filling)
    sizes = np.bincount(cluster)
    order = [k for k in np.argsort(sizes, kind="stable") if sizes[k] > 0]
    take, left = np.zeros(len(sizes)), float(n)
    for i, k in enumerate(order):
        take[k] = min(sizes[k], left / (len(order) - i))
        left -= take[k]
    clean_by_cluster = np.bincount(cluster, weights=clean, minlength=len(sizes)) / np.maximum(sizes, 1)
    equal = float(take @ clean_by_cluster / take.sum())
    return CleanShares(
        pool=float(p),
        lead=float(clean[distinct].mean()),
        random=float(clean[random_rows].mean()),
        equal_clusters=equal,
        chance=float(2 * std),
    )


def round_view(rounds: list[dict], cluster: np.ndarray, clean: np.ndarray, budget: int) -> dict:
    """What the rounds plot shows, per non-warm-up round.

    | Key | Value |
    |---|---|
    | `round` | round indices |
    | `clusters` | ids of the clusters present in the pool, unlearnable ones last |
    | `cluster_share` | (rounds, clusters): share of the round's samples from each of `clusters` |
    | `clean_share` | share of the round's samples that are clean |
    | `distinct_clean_share` | clean share of the distinct samples selected up to and including the round |
    | `reward` | the round's reward, NaN where none was measured (e.g. the budget is spent and no sample is new) |
    | `budget_spent` | the first round after which `budget` distinct samples were selected (None: never) |
    | `pool_learnable_share` | share of the pool's samples in learnable clusters |
    """
    names = _cluster_names()
    cluster, clean = np.asarray(cluster), np.asarray(clean, dtype=bool)
    present = np.unique(cluster).tolist()
    unlearnable = [c for c in present if names[c] in _unlearnable()]
    clusters = [c for c in present if c not in unlearnable] + unlearnable
    seen = np.zeros(len(cluster), dtype=bool)
    view = {k: [] for k in ("round", "cluster_share", "clean_share", "distinct_clean_share", "reward")}
    view["budget_spent"] = None
    for r in rounds:
        ids = np.asarray(r["sample_ids"], dtype=np.int64)
        seen[ids] = True
        if r.get("warmup"):
            continue
        counts = np.bincount(cluster[ids], minlength=max(present) + 1)[clusters]
        view["round"].append(r["round"])
        view["cluster_share"].append(counts / len(ids))
        view["clean_share"].append(clean[ids].mean())
        view["distinct_clean_share"].append(clean[seen].mean())
        view["reward"].append(r["reward"] if r.get("rewarded", True) else np.nan)
        if view["budget_spent"] is None and r["selected"] >= budget:
            view["budget_spent"] = r["round"]
    view = {k: np.asarray(v, dtype=float) if isinstance(v, list) else v for k, v in view.items()}
    view["round"] = view["round"].astype(int)
    view["clusters"] = clusters
    view["pool_learnable_share"] = float((~np.isin(cluster, unlearnable)).mean())
    return view


def round_figure(view: dict, shares: CleanShares, pool_name: str):
    """The rounds figure: each round's share of the learnable families and of each unlearnable cluster (top), clean
    shares against the pool's (middle), the reward (bottom); the title says whether the selection beat the pool's
    clean share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, unlearnable = _cluster_names(), _unlearnable()
    index = view["round"]
    # The learnable families as one band, each unlearnable cluster as its own (the round table has every family)
    learnable = np.array([names[c] not in unlearnable for c in view["clusters"]])
    per_cluster = view["cluster_share"]
    bands = [per_cluster[:, learnable].sum(axis=1)] + [per_cluster[:, i] for i in np.flatnonzero(~learnable)]
    labels = ["the learnable task families"] + [f"{names[view['clusters'][i]]} (unlearnable)"
                                                  for i in np.flatnonzero(~learnable)]  # fmt: skip
    colors = ["tab:blue"] + ["0.45", "0.7"][: len(bands) - 1]
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    top.stackplot(index, np.array(bands), labels=labels, colors=colors, hatch=[""] + ["//"] * (len(bands) - 1))
    top.axhline(view["pool_learnable_share"], ls="--", color="black", label="the pool's unlearnable share above")
    top.set_ylabel("share of the round")
    top.set_ylim(0, 1)
    middle.plot(index, view["clean_share"], marker=".", lw=0.8, color="tab:green", label="LEAD: the round's samples")
    middle.plot(index, view["distinct_clean_share"], lw=2, color="darkgreen", label="LEAD: distinct samples so far")
    middle.axhline(shares.pool, ls="--", color="black", label=f"pool ({shares.pool:.0%})")
    middle.axhline(shares.random, ls=":", color="tab:orange", label=f"random subset ({shares.random:.0%})")
    middle.axhline(shares.equal_clusters, ls="-.", color="tab:blue",
                   label=f"equal share per cluster ({shares.equal_clusters:.0%})")  # fmt: skip
    middle.set_ylabel("clean share")
    middle.set_ylim(0, 1)
    bottom.plot(index, view["reward"], marker=".", color="black", label="reward")
    if view["budget_spent"] is not None:
        bottom.axvline(view["budget_spent"], ls=":", color="tab:red", label="budget spent: no new samples, no reward")
    bottom.set_xlabel("round")
    bottom.set_ylabel("reward (raw)")
    for ax in (top, middle, bottom):
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"LEAD rounds on pool {pool_name!r}\n{shares.verdict()}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_rounds(view: dict, shares: CleanShares, pool_name: str, path: str) -> None:
    """`round_figure` written as a PNG, temp-then-rename."""
    import matplotlib.pyplot as plt

    fig = round_figure(view, shares, pool_name)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def print_round_table(rounds: list[dict], cluster: np.ndarray) -> None:
    """One line per round: reward, samples selected, samples the filter excluded (when rounds record it), distinct
    samples so far, and the clusters of the round's samples by name, largest first."""
    names = _cluster_names()
    has_filter = any("filtered" in r for r in rounds)
    filtered = f"{'filtered':>9s}" if has_filter else ""
    print(f"      {'round':>5s}{'reward':>9s}{'selected':>9s}{filtered}{'distinct':>9s}  clusters (samples)")
    for r in rounds:
        ids = np.asarray(r["sample_ids"], dtype=np.int64)
        counts = np.bincount(cluster[ids], minlength=len(names))
        chosen = ", ".join(f"{names[c]} {counts[c]}" for c in np.argsort(-counts, kind="stable") if counts[c])
        reward = f"{r['reward']:+9.4f}" if r.get("rewarded", True) else f"{'-':>9s}"
        filtered = f"{r.get('filtered', 0):9d}" if has_filter else ""
        warmup = "warm-up: " if r.get("warmup") else ""
        print(f"      {r['round']:5d}{reward}{len(ids):9d}{filtered}{r['selected']:9d}  {warmup}{chosen}")


def demo(argv: list[str] | None = None) -> dict:
    """`trl-lead demo`: LEAD and a random subset of the same size on the embedded default; returns the summary."""
    from trl_lead.pool import MIXTURES

    parser = argparse.ArgumentParser(prog="trl-lead demo", description="LEAD vs a random subset, offline.")
    parser.add_argument("--output-dir", default="lead-demo")
    parser.add_argument("--max-steps", type=int, default=DemoSettings.max_steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="warm-up cache (default: $TRL_LEAD_CACHE or ~/.cache)")
    parser.add_argument(
        "--mixture",
        choices=["none", *MIXTURES],
        default=DEFAULT_DEMO_MIXTURE,
        help="the pool: a mixture with conflicting noise (trl_lead.pool.MIXTURES) or 'none', the embedded default",
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="the paper's choices (LEADConfig(lead_preset='paper'): EXP3-S, single cluster, top IDU, IDU drop, "
        "no filter, min-max scaling, no pacing)",
    )
    options = parser.parse_args(argv)
    if options.max_steps < 1:
        parser.error(f"--max-steps={options.max_steps}: train at least one step")

    import transformers

    from trl_lead.embedded import quiet, torch_threads

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        # No dataset-processing or weight-loading bars (restored after); one thread: a model this small trains faster
        # on one thread than on two
        with quiet(True), torch_threads(1):
            return _demo(options)
    finally:
        transformers.logging.set_verbosity(verbosity)


def _demo_base(options) -> Any:
    """The demo's step 1: the warmed-up embedded base with the pool of `options.mixture` (printed)."""
    from trl_lead.embedded import load_embedded_default
    from trl_lead.pool import make_instruction_pool

    print("[1/4] warmed-up base model (built once, then cached)")
    base = load_embedded_default(cache_dir=options.cache_dir, seed=options.seed)
    if options.mixture != "none":
        # The same warmed-up base (warmed up on the default pool), fine-tuned on a pool of the same tasks whose noise
        # conflicts with them, as `benchmarks/selection.py` does
        base.train_dataset, base.eval_dataset = make_instruction_pool(mixture=options.mixture, seed=options.seed)
    pool = base.train_dataset
    cluster, clean = np.asarray(pool["family_id"]), ~np.asarray(pool["is_corrupted"])
    names = [_cluster_names()[c] for c in np.unique(cluster)]
    print(f"      {base.model_path}")
    print(f"      pool {options.mixture!r}: {len(pool)} samples, {clean.mean():.1%} clean, clusters by family: "
          f"{', '.join(names)}")  # fmt: skip
    return base


def _held_out_scores(base: Any, models: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The demo's step 4: each model's held-out exact match (%) per family and overall (printed as a table)."""
    from trl_lead.embedded import exact_match
    from trl_lead.pool import FAMILIES

    scores = {name: exact_match(model, base.tokenizer, base.eval_dataset) for name, model in models.items()}
    print(f"      {'family':18s}" + "".join(f"{name:>9s}" for name in scores))
    for key in [*FAMILIES, "overall_learnable"]:
        if key in scores["base"]:
            print(f"      {key:18s}" + "".join(f"{scores[name][key]:9.1f}" for name in scores))
    return scores


def _demo(options) -> dict:
    settings = DemoSettings(max_steps=options.max_steps, seed=options.seed)
    os.makedirs(options.output_dir, exist_ok=True)
    started = time.perf_counter()
    base = _demo_base(options)
    pool = base.train_dataset
    cluster, clean = np.asarray(pool["family_id"]), ~np.asarray(pool["is_corrupted"])

    preset = "paper" if options.paper else "default"
    described = "the paper's choices" if options.paper else "LEADConfig's defaults"  # the two presets
    print(f"[2/4] LEAD ({described}): {settings.max_steps} steps, budget {settings.budget:.0%} of the pool")
    lead_dir = os.path.join(options.output_dir, "lead")
    if os.path.exists(os.path.join(lead_dir, "lead_rounds.jsonl")):
        os.remove(os.path.join(lead_dir, "lead_rounds.jsonl"))  # a rerun starts a fresh log
    lead = train_lead(base, settings, lead_dir, callbacks=[_step_bar("LEAD")], lead_preset=preset)
    rounds = lead.lead_state.rounds
    print_round_table(rounds, lead.lead_state.cluster)
    budget_count = lead.lead_settings.budget

    print(f"[3/4] random subset of {budget_count} samples, same steps")
    random_dir = os.path.join(options.output_dir, "random")
    random_run = _train_random_subset(base, settings, random_dir, budget_count, callbacks=[_step_bar("random")])
    shares = clean_shares(rounds, cluster, clean, _random_rows(settings, len(pool), budget_count))
    print(f"      clean share of the distinct samples trained: LEAD {shares.lead:.1%}, random {shares.random:.1%} "
          f"(pool {shares.pool:.1%}, an equal share per cluster {shares.equal_clusters:.1%})")  # fmt: skip
    print(f"      {shares.verdict()}")

    print("[4/4] held-out exact match (%)")
    scores = _held_out_scores(base, {"base": fresh_model(base), "random": random_run.model, "lead": lead.model})
    png = os.path.join(options.output_dir, "lead_rounds.png")
    plot_rounds(round_view(rounds, lead.lead_state.cluster, clean, budget_count), shares, options.mixture, png)
    summary = {
        "mixture": options.mixture,
        "scores": scores,
        "clean_share": {
            **shares.__dict__,
            "lead_beats_pool": shares.lead_beats_pool,
            "lead_beats_equal_clusters": shares.lead_beats_equal_clusters,
        },
        "settings": {**settings.__dict__, "lead_preset": preset},
        "seconds": time.perf_counter() - started,
    }
    with atomic_write(os.path.join(options.output_dir, "summary.json")) as f:
        json.dump(summary, f, indent=2)
    print(f"      plot: {png}   rounds: {os.path.join(lead_dir, 'lead_rounds.jsonl')}")
    print(f"      total {summary['seconds']:.0f} s")
    return summary


def sft(argv: list[str] | None = None) -> None:
    """`trl sft` with LEAD: the same dataclasses, `SFTConfig` replaced by `LEADConfig`."""
    from trl import get_peft_config

    from trl_lead import LEADSFTTrainer

    script_args, training_args, model_args, model, tokenizer, dataset = _load_model_and_data(argv, "trl-lead sft")
    trainer = LEADSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset[script_args.dataset_train_split],
        eval_dataset=dataset[script_args.dataset_test_split] if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")


def _load_model_and_data(argv: list[str] | None, prog: str):
    """`trl sft`-style parsing shared by the subcommands: (script_args, LEADConfig, model_args, model, tokenizer,
    dataset dict). `trl-lead/embedded` as model or dataset name is the offline embedded default."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, TrlParser, get_dataset

    from trl_lead import LEADConfig

    parser = TrlParser((ScriptArguments, LEADConfig, ModelConfig, DatasetMixtureConfig), prog=prog)
    script_args, training_args, model_args, dataset_args = parser.parse_args_and_config(
        args=argv, fail_with_unknown_args=True
    )
    model, tokenizer = model_args.model_name_or_path, None
    if model == EMBEDDED or script_args.dataset_name == EMBEDDED:
        from trl_lead.embedded import load_embedded_default

        base = load_embedded_default(seed=training_args.seed)
    if model == EMBEDDED:
        model, tokenizer = base.model_path, base.tokenizer
    if script_args.dataset_name == EMBEDDED:
        dataset = {script_args.dataset_train_split: base.train_dataset, script_args.dataset_test_split: None}
    elif dataset_args.datasets:
        dataset = get_dataset(dataset_args)
    elif script_args.dataset_name:
        dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config)
    else:
        raise ValueError("Either `datasets` or `dataset_name` must be provided.")
    if prog.endswith("cluster"):  # the clustering pass needs the model itself, not a name
        model = AutoModelForCausalLM.from_pretrained(model, **(training_args.model_init_kwargs or {}))
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    return script_args, training_args, model_args, model, tokenizer, dataset


def cluster(argv: list[str] | None = None) -> str:
    """Compute LEAD's clusters (`lead_clusters`, `lead_num_clusters`) and write the dataset with a `cluster` column
    (`save_to_disk`) and a PNG of the clusters into `output_dir`."""
    from trl_lead.clustering import compute_clusters, plot_clusters_2d

    script_args, args, _, model, tokenizer, dataset = _load_model_and_data(argv, "trl-lead cluster")
    train = dataset[script_args.dataset_train_split]
    labels, features = compute_clusters(
        model,
        tokenizer,
        train,
        how=args.lead_clusters,
        k=args.lead_num_clusters,
        seed=args.selection_seed,
        max_length=args.max_length,
        append_eos=True,
        return_features=True,
    )
    os.makedirs(args.output_dir, exist_ok=True)
    column = args.lead_cluster_column or "cluster"
    if column in train.column_names:
        train = train.remove_columns(column)
    path = os.path.join(args.output_dir, "clustered")
    with atomic_directory(path) as tmp:
        train.add_column(column, labels.tolist()).save_to_disk(str(tmp))
    png = plot_clusters_2d(features, labels, os.path.join(args.output_dir, "clusters.png"))
    sizes = np.bincount(labels, minlength=args.lead_num_clusters)
    print(f"{len(labels)} samples in {args.lead_num_clusters} clusters (sizes {sizes.tolist()})")
    print(f"dataset with a {column!r} column: {path} (load with datasets.load_from_disk)\nplot: {png}")
    return path


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"demo": demo, "sft": sft, "cluster": cluster}
    if not argv or argv[0] not in commands:
        print(__doc__)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
