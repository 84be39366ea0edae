"""`trl-lead` console script.

trl-lead demo [--output-dir DIR] [--max-steps N] [--seed S]
    LEAD end to end on the embedded default (tiny model, generated pool), next to a random subset of the
    same size trained for the same steps; prints the rounds and held-out exact match, writes a PNG.
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


PAPER_CHOICES = {"lead_round_mode": "single", "lead_fine_selection": "top", "lead_reward": "idu_drop"}


def _training_args(settings: DemoSettings, output_dir: str) -> dict:
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
        seed=settings.seed,
    )


def _train_lead(base, settings: DemoSettings, output_dir: str, **lead_kwargs):
    from trl_lead import LEADConfig, LEADSFTTrainer

    lead = dict(
        lead_cluster_column="family_id",
        lead_round_size=settings.round_size,
        lead_budget=settings.budget,
        lead_max_reuse=settings.max_reuse,
    )
    args = LEADConfig(**{**_training_args(settings, output_dir), **lead, **lead_kwargs})
    trainer = LEADSFTTrainer(
        model=_fresh(base), args=args, train_dataset=base.train_dataset, processing_class=base.tokenizer
    )
    trainer.train()
    return trainer


def _train_random_subset(base, settings: DemoSettings, output_dir: str, budget_count: int):
    from trl import SFTConfig, SFTTrainer

    rng = np.random.default_rng(settings.seed)
    subset = base.train_dataset.select(np.sort(rng.choice(len(base.train_dataset), budget_count, replace=False)))
    args = SFTConfig(**_training_args(settings, output_dir))
    trainer = SFTTrainer(model=_fresh(base), args=args, train_dataset=subset, processing_class=base.tokenizer)
    trainer.train()
    return trainer


def _fresh(base):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base.model_path)


def plot_rounds(rounds: list[dict], families: list[str], cluster: np.ndarray, path: str) -> None:
    """Per round: the share of each cluster in the round's samples, the reward, and each cluster's mean IDU.
    Written as a PNG, temp-then-rename."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r for r in rounds if not r.get("warmup")]
    index = [r["round"] for r in rounds]
    k = len(families)
    shares = np.array([np.bincount(cluster[r["sample_ids"]], minlength=k) / len(r["sample_ids"]) for r in rounds])
    idu = np.array([[np.nan if v is None else v for v in r["cluster_mean_idu"]] for r in rounds], dtype=float)
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    top.stackplot(index, shares.T, labels=families)
    top.set_ylabel("share of the round")
    top.set_title("LEAD rounds on the embedded default")
    top.legend(ncol=4, fontsize=8, loc="upper right")
    middle.plot(index, [r["reward"] for r in rounds], marker=".", color="black")
    middle.set_ylabel("reward (raw)")
    for c, name in enumerate(families):
        bottom.plot(index, idu[:, c], label=name)
    bottom.set_xlabel("round")
    bottom.set_ylabel("mean IDU of the cluster")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def demo(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="trl-lead demo", description="LEAD vs a random subset, offline.")
    parser.add_argument("--output-dir", default="lead-demo")
    parser.add_argument("--max-steps", type=int, default=DemoSettings.max_steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="warm-up cache (default: $TRL_LEAD_CACHE or ~/.cache)")
    parser.add_argument("--paper", action="store_true", help="the paper's choices: single cluster, top IDU, IDU drop")
    options = parser.parse_args(argv)

    from trl_lead.embedded import torch_threads

    with torch_threads(1):  # a model this small trains faster on one thread than on two
        return _demo(options)


def _demo(options) -> dict:
    import transformers

    from trl_lead.embedded import FAMILIES, exact_match, load_embedded_default

    transformers.logging.set_verbosity_error()
    settings = DemoSettings(max_steps=options.max_steps, seed=options.seed)
    os.makedirs(options.output_dir, exist_ok=True)
    started = time.perf_counter()
    print("[1/4] warmed-up base model (built once, then cached)")
    base = load_embedded_default(cache_dir=options.cache_dir, seed=options.seed)
    print(f"      {base.model_path} - pool {len(base.train_dataset)} samples, {len(FAMILIES)} families")

    choices = PAPER_CHOICES if options.paper else {}
    described = "the paper's choices" if options.paper else "LEADConfig's defaults"
    print(f"[2/4] LEAD ({described}): {settings.max_steps} steps, budget {settings.budget:.0%} of the pool")
    lead_dir = os.path.join(options.output_dir, "lead")
    if os.path.exists(os.path.join(lead_dir, "lead_rounds.jsonl")):
        os.remove(os.path.join(lead_dir, "lead_rounds.jsonl"))  # a rerun starts a fresh log
    lead = _train_lead(base, settings, lead_dir, **choices)
    for r in lead.lead_state.rounds:
        clusters = r["cluster"] if isinstance(r["cluster"], list) else [r["cluster"]]
        names = ",".join(FAMILIES[c] for c in clusters) or "warm-up"
        print(f"      round {r['round']:3d}  reward {r['reward']:+.4f}  selected {r['selected']:4d}  clusters {names}")
    budget_count = lead.lead_settings.budget

    print(f"[3/4] random subset of {budget_count} samples, same steps")
    random_run = _train_random_subset(base, settings, os.path.join(options.output_dir, "random"), budget_count)

    print("[4/4] held-out exact match (%)")
    scores = {
        "base": exact_match(_fresh(base), base.tokenizer, base.eval_dataset),
        "random": exact_match(random_run.model, base.tokenizer, base.eval_dataset),
        "lead": exact_match(lead.model, base.tokenizer, base.eval_dataset),
    }
    keys = [*FAMILIES, "overall_learnable"]
    print(f"      {'family':18s}" + "".join(f"{name:>9s}" for name in scores))
    for key in keys:
        print(f"      {key:18s}" + "".join(f"{scores[name].get(key, float('nan')):9.1f}" for name in scores))
    png = os.path.join(options.output_dir, "lead_rounds.png")
    plot_rounds(lead.lead_state.rounds, list(FAMILIES), lead.lead_state.cluster, png)
    summary = {
        "scores": scores,
        "settings": {**settings.__dict__, **choices},
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
        seed=args.lead_seed,
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
