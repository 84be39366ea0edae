"""Does a small trusted validation set tell LEAD's clusters apart, round by round? (a diagnostic)

Trains the warmed-up base on a conflict mixture with LEAD's defaults, except one cluster per round chosen uniformly
at random (`lead_round_mode="single"`, `lead_policy="uniform"`), and after every round scores a clean validation set
that is not part of the pool (16 items per learnable family, generated with another seed). Reports, per trained
cluster, the mean change of each family's validation loss (a transfer matrix, with t-statistics over the rounds),
and how well the per-round "largest drop over the families" separates the task clusters from the noise family and
the bad source (d': difference of means over the pooled standard deviation of one round).

    python benchmarks/validation_signal.py                  # 6 seeds on conflict-a at 25% (~4 min on 2 cores)

Writes benchmarks/results/validation_signal.json (every round's changes) and validation_signal.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from selection import RESULTS, Job, common_args  # noqa: E402
from selection_mixtures import describe_machine  # noqa: E402

UNLEARNABLE = ("noise", "bad_source")


def run_seed(seed: int, mixture: str, budget: float, steps: int, per_family: int) -> list[dict]:
    """One run; per round, the trained cluster's name and each validation family's loss change (after - before)."""
    import torch
    import transformers
    from transformers import TrainerCallback

    from trl_lead import LEADConfig, LEADSFTTrainer
    from trl_lead.embedded import load_embedded_default
    from trl_lead.pool import MIXTURE_NUM_EVAL_PER_FAMILY, make_instruction_pool
    from trl_lead.scoring import answer_losses

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    base = load_embedded_default()
    train, _ = make_instruction_pool(
        mixture=mixture, num_eval_per_family=MIXTURE_NUM_EVAL_PER_FAMILY
    )  # the benchmark's pool
    _, validation = make_instruction_pool(mixture=mixture, seed=1000 + seed, num_eval_per_family=per_family)
    validation = validation.filter(lambda row: row["family"] != "noise")
    family = np.asarray(validation["family"])
    families = sorted(set(family.tolist()))
    names = dict(zip(train["family_id"], train["family"]))
    rounds: list[dict] = []

    class Scored(TrainerCallback):
        """Scores the validation set before training and after each round (the trainer's round-end event)."""

        def validation_losses(self, model) -> np.ndarray:
            losses = answer_losses(model, base.tokenizer, validation, batch_size=128, show_progress=False)
            return np.array([losses[family == f].mean() for f in families])

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.before = self.validation_losses(model)

        def on_round_end(self, args, state, control, record, trainer, **kwargs):
            after = self.validation_losses(trainer.model)
            change = dict(zip(families, (after - self.before).tolist()))
            rounds.append({"seed": seed, "round": record["round"], "cluster": names[record["cluster"]], **change})
            self.before = after

    count = round(budget * len(train))
    with tempfile.TemporaryDirectory() as output_dir:
        args = LEADConfig(
            **common_args(Job("validation_signal", budget, seed, steps), output_dir),
            lead_cluster_column="family_id",
            lead_round_size=32,
            lead_budget=count,
            lead_max_reuse=max(8, -(-steps * 16 // count)),
            lead_round_mode="single",
            lead_policy="uniform",
        )
        model = transformers.AutoModelForCausalLM.from_pretrained(base.model_path)
        trainer = LEADSFTTrainer(model=model, args=args, train_dataset=train, processing_class=base.tokenizer)
        trainer.add_callback(Scored())
        trainer.train()
    return rounds


def summarize(rounds: list[dict], options: argparse.Namespace) -> str:
    """The transfer matrix (mean change x 100, t) and the per-round separation of the largest drop."""
    families = sorted(k for k in rounds[0] if k not in ("seed", "round", "cluster"))
    clusters = sorted({r["cluster"] for r in rounds})
    lines = [
        "# Validation signal per cluster (diagnostic)",
        "",
        f"Machine: {describe_machine()}. Mixture {options.mixture}, budget {options.budget:.0%}, "
        f"{options.steps} steps, {options.seeds} seeds, one uniformly chosen cluster per round, "
        f"{options.per_family} clean validation items per learnable family (not in the pool). Cell: mean change of "
        "the family's validation loss after a round of the "
        "row's cluster, x 100 (negative: the round taught that family), and its t over the rounds.",
        "",
        "| trained cluster | rounds | " + " | ".join(families) + " |",
        "|---|---|" + "---|" * len(families),
    ]
    largest_drop: dict[str, np.ndarray] = {}
    for cluster in clusters:
        changes = np.array([[r[f] for f in families] for r in rounds if r["cluster"] == cluster])
        mean, se = changes.mean(0), changes.std(0, ddof=1) / np.sqrt(len(changes))
        cells = [f"{100 * m:+.1f} ({m / s:+.1f})" for m, s in zip(mean, se)]
        lines.append(f"| {cluster} | {len(changes)} | " + " | ".join(cells) + " |")
        largest_drop[cluster] = (-changes).max(1)
    tasks = np.concatenate([v for k, v in largest_drop.items() if k not in UNLEARNABLE])
    bad = np.concatenate([v for k, v in largest_drop.items() if k in UNLEARNABLE])
    pooled = np.sqrt((tasks.var(ddof=1) + bad.var(ddof=1)) / 2)
    d_prime = (tasks.mean() - bad.mean()) / pooled
    per_cluster = (2 * np.sqrt(2) / d_prime) ** 2 if d_prime > 0 else float("inf")
    lines += [
        "",
        "Largest drop over the families in one round (the reward a policy would see): "
        + ", ".join(f"{k} {v.mean():.3f} (sd {v.std(ddof=1):.3f})" for k, v in largest_drop.items())
        + f". Tasks {tasks.mean():.3f} against noise and bad source {bad.mean():.3f}: d' = {d_prime:.2f} per round, "
        f"so about {per_cluster:.0f} rounds of each cluster separate a task from a bad cluster at 2 standard errors.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixture", default="conflict-a")
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--per-family", type=int, default=16)
    parser.add_argument("--out", default=RESULTS)
    options = parser.parse_args()
    from trl_lead.embedded import load_embedded_default

    load_embedded_default()  # build the cached warm-up once
    rounds = []
    for seed in tqdm(range(options.seeds), desc="validation signal"):
        rounds += run_seed(seed, options.mixture, options.budget, options.steps, options.per_family)
    os.makedirs(options.out, exist_ok=True)
    for name, text in (
        ("validation_signal.json", json.dumps(rounds)),
        ("validation_signal.md", summarize(rounds, options)),
    ):
        path = os.path.join(options.out, name)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    print(summarize(rounds, options))


if __name__ == "__main__":
    main()
