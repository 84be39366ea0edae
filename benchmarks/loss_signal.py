"""Can a model's loss tell a wrong answer from a right one? (a diagnostic for the sample filters)

A filter of LEAD's can only keep the right answers where some loss ranks them below the wrong ones. For each pool and
seed this trains the warmed-up base on a random subset (the budget's size, the selection benchmarks' steps and
learning rate, as `benchmarks/selection.py` trains its baselines) and, per task with wrong answers, measures the AUC
of the answer loss: the chance that a wrong answer's loss lies above a right one's (0.5: no information; 1: a perfect
cut). Signals, as a filter would read them:

* `base`: the warmed-up base model's loss, the small-loss filter's signal;
* `trained, step k`: the current model's loss of the rows it has trained, after k steps (a filter of revisits);
* `untrained, step k`: its loss of rows it has not trained (scoring fresh candidates with the current model);
* `trajectory`: each trained row's mean loss over the checkpoints (Dataset Cartography's confidence);
* `greedy disagreement`: whether the current model's greedy answer differs from the row's (a yes/no score);
* `clean-trained`: the untrained rows' loss under a model trained the same way on a random subset of the clean rows
  only: what a model that learned each task from right answers alone would tell (by its loss, and by greedy
  disagreement).

    python benchmarks/loss_signal.py --pools a,c,d,default --seeds 5 --workers 2    # ~10 min on 2 cores

Writes benchmarks/results/loss_signal.csv (one row per pool, seed, signal and task) and loss_signal.md.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from selection import RESULTS, Job, load_base, train_on_rows  # noqa: E402
from selection_mixtures import MIXTURES, describe_machine  # noqa: E402

CHECKPOINTS = (50, 100, 200)  # optimizer steps at which the current model's losses are read
NAME = "loss_signal"


def task_aucs(losses: np.ndarray, rows: np.ndarray, wrong: np.ndarray, family: np.ndarray) -> dict[str, float]:
    """Per task (a family with right and wrong answers among `rows`), the AUC of `losses` of its wrong over its right
    answers among `rows`."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for name in np.unique(family[rows]):
        own = rows[family[rows] == name]
        if wrong[own].any() and not wrong[own].all():
            out[str(name)] = float(roc_auc_score(wrong[own], losses[own]))
    return out


def train_and_read(base, rows: np.ndarray, seed: int, budget: float) -> tuple[dict[int, np.ndarray], object]:
    """Train a fresh copy of the base on `rows` for the benchmarks' steps: every row's loss at the checkpoints, and
    the trained model."""
    from transformers import TrainerCallback

    from trl_lead.scoring import answer_losses

    losses: dict[int, np.ndarray] = {}

    class Checkpoints(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step in CHECKPOINTS:
                data = base.train_dataset
                losses[state.global_step] = answer_losses(model, base.tokenizer, data, 128, show_progress=False)

    model = train_on_rows(base, rows, Job("random", budget, seed, max(CHECKPOINTS)), (Checkpoints(),))
    return losses, model


def disagreement(model, base) -> np.ndarray:
    """1.0 where the model's greedy answer to a row's prompt differs from the row's answer, else 0.0."""
    from trl_lead.embedded import generate_answers

    prompts = [row[:-1] for row in base.train_dataset["messages"]]
    answers = generate_answers(model, base.tokenizer, prompts, batch_size=200, num_threads=None)
    labels = [row[-1]["content"].strip() for row in base.train_dataset["messages"]]
    return np.array([answer != label for answer, label in zip(answers, labels)], dtype=np.float64)


def run_pool(pool: str, seed: int, budget: float) -> list[dict]:
    """Every signal's AUC per task, on one pool and seed."""
    import torch
    import transformers

    from trl_lead.scoring import answer_losses

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    base = load_base(MIXTURES[pool][0])
    data = base.train_dataset
    wrong, family = np.asarray(data["is_corrupted"]), np.asarray(data["family"])
    n, rng, last = len(data), np.random.default_rng(seed), max(CHECKPOINTS)
    everything = np.arange(n)
    signals = {"base": task_aucs(answer_losses(base.model, base.tokenizer, data, 128, show_progress=False),
                                 everything, wrong, family)}  # fmt: skip
    trained = rng.choice(n, round(budget * n), replace=False)
    untrained = np.setdiff1d(everything, trained)
    current, model = train_and_read(base, trained, seed, budget)
    for step, losses in current.items():
        signals[f"trained, step {step}"] = task_aucs(losses, trained, wrong, family)
        signals[f"untrained, step {step}"] = task_aucs(losses, untrained, wrong, family)
    signals["trajectory"] = task_aucs(np.mean(list(current.values()), axis=0), trained, wrong, family)
    greedy = disagreement(model, base)
    signals[f"greedy disagreement, trained, step {last}"] = task_aucs(greedy, trained, wrong, family)
    signals[f"greedy disagreement, untrained, step {last}"] = task_aucs(greedy, untrained, wrong, family)
    clean = rng.choice(np.flatnonzero(~wrong), round(budget * n), replace=False)
    unseen = np.setdiff1d(everything, clean)
    clean_losses, clean_model = train_and_read(base, clean, seed, budget)
    signals[f"clean-trained, step {last}"] = task_aucs(clean_losses[last], unseen, wrong, family)
    signals[f"clean-trained greedy disagreement, step {last}"] = task_aucs(
        disagreement(clean_model, base), unseen, wrong, family
    )
    return [{"pool": pool, "seed": seed, "signal": signal, "task": task, "auc": round(value, 4)}
            for signal, values in signals.items() for task, value in values.items()]  # fmt: skip


def summarize(rows: list[dict], budget: float) -> str:
    """The markdown table: per pool and signal, the AUC per task (mean over seeds) and their median."""
    pools = list(dict.fromkeys(row["pool"] for row in rows))
    signals = list(dict.fromkeys(row["signal"] for row in rows))
    lines = [
        "# Can the loss tell a wrong answer from a right one?",
        "",
        f"Machine: {describe_machine()}. `python benchmarks/loss_signal.py`: per task with wrong answers, the AUC "
        "of the answer loss, wrong over right (0.5: no information, 1: a perfect cut), mean over seeds "
        f"{sorted({int(r['seed']) for r in rows})}. Trained rows: a random {budget:.0%} of the pool, trained with the "
        "selection benchmarks' steps and learning rate; clean-trained: the same on clean rows only, read on the rows "
        "it did not train.",
        "",
    ]
    for pool in pools:
        tasks = sorted({r["task"] for r in rows if r["pool"] == pool})
        lines += [f"## ({pool}) {MIXTURES[pool][0] or 'embedded default pool'}", "",
                  "| signal | median over tasks | " + " | ".join(tasks) + " |",
                  "|---|---|" + "---|" * len(tasks)]  # fmt: skip
        for signal in signals:
            means = [np.mean([r["auc"] for r in rows if (r["pool"], r["signal"], r["task"]) == (pool, signal, t)])
                     for t in tasks]  # fmt: skip
            lines.append(f"| {signal} | {np.nanmedian(means):.2f} | " + " | ".join(f"{m:.2f}" for m in means) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", default="a,c,d,default", help=f"comma-separated, of {sorted(MIXTURES)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=0.1, help="the trained subset's share of the pool")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=RESULTS)
    options = parser.parse_args()
    pools = options.pools.split(",")
    unknown = [p for p in pools if p not in MIXTURES]
    if unknown:
        parser.error(f"--pools: unknown {unknown}; choose from {sorted(MIXTURES)}")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=options.workers, mp_context=context) as executor:
        futures = [executor.submit(run_pool, p, s, options.budget) for p in pools for s in range(options.seeds)]
        rows = [row for future in futures for row in future.result()]
    os.makedirs(options.out, exist_ok=True)
    with open(os.path.join(options.out, f"{NAME}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(options.out, f"{NAME}.md"), "w") as f:
        f.write(summarize(rows, options.budget) + "\n")
    print(summarize(rows, options.budget))


if __name__ == "__main__":
    main()
