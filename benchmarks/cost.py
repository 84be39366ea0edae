"""What LEAD's selection costs a user against `SFTTrainer` at the same steps: arithmetic, then wall time.

1. Forward-pass arithmetic (no run): what runs before the first step, per round and per step, in units of one forward
   pass over one sample (F; a training visit of a sample is ~3 F: forward and backward), for a 0.5B and a 7B model on
   a 100k and a 1M pool, at the paper's settings (budget 2.5%, each selected sample trained 4 times) and at 10%.
2. Measured: the whole wall time of `LEADSFTTrainer` (trainer built, every pass before the first step, training; a
   fresh cache directory, so nothing is cached) against `SFTTrainer` on a random subset of the budget's size, same
   model, same optimizer steps (budget x 4 visits / batch 16), on the embedded pool, for LEAD's defaults and for the
   defaults with `lead_candidates`. Runs alternate in one process (one torch thread), so drift hits all alike.

3. Quality at equal compute (`--quality`, from `benchmarks/selection_mixtures.py` runs in
   benchmarks/results/cost_quality/): each LEAD setting against random and stratified subsets at the same optimizer
   steps and at the steps that match LEAD's passes (a pass over one sample counted as a third of a training visit),
   and each `lead_candidates` setting against the defaults over the whole pool, paired by seed.

    python benchmarks/cost.py [--pools 3200,32000] [--widths 64,256] [--budgets 0.025,0.05,0.1] [--candidates 2,4]
      [--quality benchmarks/results/cost_quality/selection_mixtures.csv]
      [--table benchmarks/results/mixtures_fresh_seeds/selection_mixtures.csv]  ->  benchmarks/results/cost.md
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from selection import cpu_training_args  # noqa: E402
from selection_mixtures import POOL_SIZE, describe_machine, paired  # noqa: E402

from trl_lead.clustering import PROMPT_GROUP_SIZE  # noqa: E402
from trl_lead.files import atomic_write  # noqa: E402

RESULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cost.md")
REUSE, BATCH, LAYERS = 4, 16, 4
TRAIN_FORWARDS = 3  # one training visit of a sample: a forward and a backward of about twice its cost
# Models of the arithmetic: parameters, hidden width (Qwen2.5-0.5B, Qwen2.5-7B; the width sets k-means' cost)
MODELS = {"0.5B": (0.49e9, 896), "7B": (7.6e9, 3584)}
TOKENS = 512
PROMPT_SHARE = 0.5  # share of a sample's tokens before its answer (the prompt pass's length, relative)
CPU_FLOPS = 50e9  # float32 FLOP/s of 2 cores with AVX2 FMA, roughly


def arithmetic(candidates: list[float]) -> list[str]:
    """The forward-pass table: passes before step 1 against the training, per option, model and pool."""
    lines = [
        "## Arithmetic: what runs before the first step, per round and per step",
        "",
        f"Units: F = one forward pass over one sample ({TOKENS} tokens, {PROMPT_SHARE:.0%} of them prompt); a "
        f"training visit is ~{TRAIN_FORWARDS} F (forward + backward). Training = budget x {REUSE} visits. Before "
        "step 1:",
        "",
        "- *three passes* (the prompt embeddings from a pass of their own): a scoring pass (N F), a prompt-only "
        "pass (~0.5 N F), k-means with N/32 groups on the prompt embeddings; with computed IFD clusters also an "
        "answer-only pass (~0.5 N F). Prompt and answer passes on rank 0 alone.",
        "- *one pass*: the scoring pass also yields the prompt embeddings (N F); the answer-only pass only for IFD "
        "clusters; every pass split over the ranks.",
        "- *candidates m*: the same on a subsample of m x budget drawn once (`lead_candidates=m`).",
        "",
        "Per round: no forward (planning is numpy over the pool's state, O(N); one copy of the trainable parameters "
        "or of their 65k-coordinate sketch). Per step: the per-sample losses are a reduction of the fused forward's "
        "outputs (no extra forward; `benchmarks/overhead.py`).",
        "",
        "k-means (CPU): any k-means assigns every point to its nearest of k centres at least once, 2 x points x k x "
        f"width FLOPs; the last column is that one assignment's time at {CPU_FLOPS / 1e9:g} GFLOP/s (2 cores, "
        "float32), a lower bound: Lloyd or mini-batch iterations come on top.",
        "",
        "| budget | model | pool | option | passes before step 1 (F) | training (F) | passes / training | "
        "groups (N/32) | one k-means assignment (CPU s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for budget in (0.025, 0.1):
        for model, (_, width) in MODELS.items():
            for pool in (100_000, 1_000_000):
                count = budget * pool
                training = TRAIN_FORWARDS * REUSE * count
                options = [("three passes", pool, 1 + PROMPT_SHARE), ("one pass", pool, 1.0)]
                options += [(f"candidates {m:g}", min(pool, m * count), 1.0) for m in candidates]
                for name, scored, per_sample in options:
                    passes = per_sample * scored
                    groups = math.ceil(scored / PROMPT_GROUP_SIZE)
                    assignment = 2 * scored * groups * width / CPU_FLOPS
                    lines.append(
                        f"| {budget:.1%} | {model} | {pool:,} | {name} | {passes:,.0f} | {training:,.0f} | "
                        f"{passes / training:.2f} | {groups:,} | {assignment:,.1f} |"
                    )
    lines += [
        "",
        f"With IFD clusters computed, add the answer-only pass: {1 - PROMPT_SHARE:g} F per scored sample. The "
        f"ratio of the passes to the training is 1 / ({TRAIN_FORWARDS} x {REUSE} x budget) over the whole pool "
        f"(3.3 at 2.5%, 0.83 at 10%) and m / {TRAIN_FORWARDS * REUSE} with m x budget candidates, whatever the "
        "budget: the 1.25x goal at 2.5% needs m <= 3, the 1.1x goal at 10% m <= 1.2 (counted in F; a no-grad "
        "forward in large batches costs less than a third of a training visit, so measured ratios are lower).",
        "",
    ]
    return lines


def build_model(tokenizer, width: int):
    from trl_lead.embedded import build_tiny_model

    return build_tiny_model(
        tokenizer,
        hidden_size=width,
        num_layers=LAYERS,
        num_heads=4,
        intermediate_size=4 * width,
        max_position_embeddings=128,
        seed=0,
    )


def timed_run(kind: str, pool, tokenizer, width: int, budget: float, candidates: float | None) -> dict:
    """One whole run: trainer built, passes, training. Returns wall seconds, seconds before the first step, steps."""
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from trl_lead import LEADConfig, LEADSFTTrainer

    count = math.ceil(budget * len(pool))
    steps = math.ceil(count * REUSE / BATCH)
    first_step: list[float] = []

    class FirstStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not first_step:
                first_step.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        os.environ["TRL_LEAD_CACHE"] = os.path.join(out, "cache")  # nothing cached
        common = cpu_training_args(os.path.join(out, "run"), BATCH, steps, logging_steps=10_000)
        model = build_model(tokenizer, width)
        start, cpu_start = time.perf_counter(), time.process_time()
        if kind == "sft":
            subset = pool.select(np.sort(np.random.default_rng(0).choice(len(pool), count, replace=False)))
            trainer = SFTTrainer(
                model=model, args=SFTConfig(**common), train_dataset=subset, processing_class=tokenizer
            )
        else:
            args = LEADConfig(**common, lead_budget=budget, lead_max_reuse=REUSE, lead_candidates=candidates)
            trainer = LEADSFTTrainer(model=model, args=args, train_dataset=pool, processing_class=tokenizer)
        trainer.add_callback(FirstStep())
        train_start = time.perf_counter()
        trainer.train()
        end, cpu_end = time.perf_counter(), time.process_time()
    return {
        "wall": end - start,
        "cpu": cpu_end - cpu_start,
        "before_step": first_step[0] - train_start,
        "steps": trainer.state.global_step,
        "train": end - first_step[0],
    }


def measure(pools: list[int], widths: list[int], budgets: list[float], candidates: list[float]) -> list[str]:
    import datasets
    import torch
    import transformers

    from trl_lead.embedded import build_tokenizer
    from trl_lead.pool import make_instruction_pool

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    tokenizer = build_tokenizer()
    # Imports and first-call set-up (scikit-learn, kernels) are paid once per process, not per run: warm both up
    small, _ = make_instruction_pool(num_train=200, num_eval_per_family=2, seed=0)
    for kind in ("sft", "lead"):
        timed_run(kind, small, tokenizer, 32, 0.1, None)
    lines = [
        "## Measured: whole wall time against SFTTrainer at the same steps",
        "",
        f"Embedded pool (default mixture), {LAYERS}-layer Llama-style model of the given width (character "
        f"vocabulary), batches of {BATCH}, steps = budget x {REUSE} visits / {BATCH}, LEAD's round 1% of the pool "
        "(its default), "
        f"`lead_max_reuse={REUSE}`, every other `lead_*` setting its default (family column not given: IFD clusters "
        "computed, so the answer-only pass runs; small-loss filter within prompt groups). SFTTrainer trains a "
        "random subset of the budget's size for the same steps. *before step 1*: seconds from `train()` to the "
        "first optimizer step (LEAD's passes, clustering, groups; the dataloader's start for both). *wall*: "
        "trainer built (tokenization included) to the end of `train()`. Ratios are against SFTTrainer's wall time "
        "in the same process, run just before (*steps*: LEAD's in brackets where it stopped earlier, every sample "
        "at the reuse cap). The machine is shared with other jobs, so wall times move with their "
        "load; *CPU* is the process's CPU time (one torch thread), what the run would take alone, and its ratio is "
        "the steadier one. Imports and first-call set-up are warmed up before the runs (paid once per process).",
        "",
        "| pool | width | budget | steps | SFTTrainer wall / CPU (s) | LEAD | before step 1 (s) | wall / CPU (s) | "
        "wall ratio | CPU ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pool_size in pools:
        pool, _ = make_instruction_pool(num_train=pool_size, num_eval_per_family=2, seed=0)
        for width in widths:
            for budget in budgets:
                sft = timed_run("sft", pool, tokenizer, width, budget, None)
                for m in [None, *candidates]:
                    lead = timed_run("lead", pool, tokenizer, width, budget, m)
                    # LEAD stops early when no sample is left under the reuse cap (a last round short of a full one)
                    assert sft["steps"] - lead["steps"] <= sft["steps"] // 20, (lead["steps"], sft["steps"])
                    steps = f"{sft['steps']}" + ("" if lead["steps"] == sft["steps"] else f" ({lead['steps']})")
                    name = "defaults" if m is None else f"defaults, `lead_candidates={m:g}`"
                    wall, cpu = lead["wall"] / sft["wall"], lead["cpu"] / sft["cpu"]
                    line = (
                        f"| {pool_size:,} | {width} | {budget:.1%} | {steps} | {sft['wall']:.1f} / "
                        f"{sft['cpu']:.1f} | {name} | {lead['before_step']:.1f} | {lead['wall']:.1f} / "
                        f"{lead['cpu']:.1f} | {wall:.2f}x | **{cpu:.2f}x** |"
                    )
                    print(line, flush=True)
                    lines.append(line)
    return lines + [""]


def pass_steps(method: str, mixture: str, budget: float) -> int:
    """Optimizer steps (batches of 16) whose compute equals LEAD's passes before the first step in
    `benchmarks/selection_mixtures.py`'s runs: a forward over one sample is a third of a training visit."""
    from selection import METHODS

    spec = METHODS[method]
    if spec["kind"] != "lead":
        return 0
    m = spec.get("lead_candidates")
    scored = POOL_SIZE if m is None else min(POOL_SIZE, math.ceil(m * round(budget * POOL_SIZE)))
    forwards = scored * (1.5 if mixture == "b" else 1.0)  # (b) computes IFD clusters: the answer-only pass
    return math.ceil(forwards / (TRAIN_FORWARDS * BATCH))


def quality(csv_path: str) -> list[str]:
    """Paired tables of the LEAD settings against random and stratified, at the same and at equal compute."""
    from selection import read_rows

    score: dict[tuple[str, float], dict[tuple[str, int], dict[int, float]]] = {}
    for row in read_rows(csv_path):
        key = (row["mixture"], float(row["budget"]))
        method = (row["method"], int(row["steps"]))
        score.setdefault(key, {}).setdefault(method, {})[int(row["seed"])] = float(row["overall_learnable"])

    def cell(values: dict[int, float], reference: dict[int, float] | None) -> str:
        if not reference:
            return ""
        mean, low, high, n = paired(values, reference)
        if math.isnan(low):
            return f"{mean:+.1f} (n={n})"
        return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}] (n={n})"

    lines = [
        "## Quality at equal compute",
        "",
        "Held-out exact match (%) over the learnable families (`benchmarks/selection_mixtures.py`: warmed-up base, "
        "batch 16, 200 optimizer steps, at most `budget` distinct samples of the 2,000-sample pool), differences "
        "paired by seed, mean [95% t-interval]. *equal compute*: random and stratified subsets trained for 200 + s "
        "steps, s the steps whose compute equals the LEAD setting's passes before step 1 (a forward over one sample "
        "= a third of a training visit); *steps of passes*: that s for each setting.",
        "",
    ]
    for (mixture, budget), methods in sorted(score.items()):
        lines += [
            f"### ({mixture}) budget {budget:.1%}",
            "",
            "| method | steps of passes | exact match | − random (200) | − stratified (200) | − random (equal "
            "compute) | − stratified (equal compute) | − lead_auto |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (method, steps), values in sorted(methods.items()):
            if steps != 200:
                continue
            extra = pass_steps(method, mixture, budget)
            mean = np.mean(list(values.values()))
            row = [method, str(extra), f"{mean:.1f} (n={len(values)})"]
            for baseline in ("random", "stratified"):
                row.append(cell(values, methods.get((baseline, 200))) if extra else "")
            for baseline in ("random", "stratified"):
                matched = methods.get((baseline, 200 + extra)) if extra else None
                row.append(cell(values, matched) if matched else ("" if not extra else "not run"))
            lead = methods.get(("lead_auto", 200))
            row.append(cell(values, lead) if method.startswith("lead_auto_") else "")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return lines


def against_table(csv_path: str, table_csv: str, method: str) -> list[str]:
    """`method`'s lead over random and stratified next to the defaults' in `table_csv` (the same seeds, baselines
    and steps), and `method` against those defaults, paired by seed."""
    from selection import read_rows
    from selection_mixtures import with_b_baselines

    def scores(rows: list[dict]) -> dict[tuple[str, float, str], dict[int, float]]:
        out: dict[tuple[str, float, str], dict[int, float]] = {}
        for row in rows:
            if int(row["steps"]) == 200:
                key = (row["mixture"], float(row["budget"]), row["method"])
                out.setdefault(key, {})[int(row["seed"])] = float(row["overall_learnable"])
        return out

    table, new = scores(with_b_baselines(read_rows(table_csv))), scores(read_rows(csv_path))

    def cell(values, reference) -> str:
        mean, low, high, n = paired(values, reference)
        return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}] (n={n})" if n >= 2 else "n/a"

    lines = [
        f"## `{method}` against the defaults' table (`{os.path.relpath(table_csv, os.path.dirname(RESULT))}`)",
        "",
        "The same seeds, pools and 200 steps; the random and stratified rows are that table's. Paired by seed.",
        "",
        f"| mixture | budget | table's lead_auto − random | {method} here − random | table's lead_auto − "
        f"stratified | {method} here − stratified | {method} here − table's lead_auto |",
        "|---|---|---|---|---|---|---|",
    ]
    for mixture, budget, name in sorted(k for k in new if k[2] == method):
        values, old = new[(mixture, budget, name)], table.get((mixture, budget, "lead_auto"))
        random, stratified = table.get((mixture, budget, "random")), table.get((mixture, budget, "stratified"))
        if not (old and random and stratified):
            continue
        lines.append(
            f"| ({mixture}) | {budget:.0%} | {cell(old, random)} | {cell(values, random)} | {cell(old, stratified)} | "
            f"{cell(values, stratified)} | {cell(values, old)} |"
        )
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", default="3200,32000")
    parser.add_argument("--widths", default="64,256")
    parser.add_argument("--budgets", default="0.025,0.05,0.1")
    parser.add_argument("--candidates", default="2,4", help="lead_candidates values measured besides the defaults")
    parser.add_argument("--no-measure", action="store_true", help="no training runs (arithmetic, --quality tables)")
    parser.add_argument("--quality", help="selection_mixtures.py CSV of the quality runs to summarise")
    parser.add_argument("--table", help="selection_mixtures.py CSV of the defaults' table to compare against")
    parser.add_argument("--table-method", default="lead_auto_candidates4", help="the setting compared with it")
    parser.add_argument("--out", default=RESULT)
    options = parser.parse_args()
    candidates = [float(m) for m in options.candidates.split(",") if m]
    lines = ["# What selection costs before and during training", "", f"Machine: {describe_machine()}.", ""]
    lines += arithmetic(candidates)
    print("\n".join(lines), flush=True)
    if options.no_measure:
        lines += [
            "Whole runs against SFTTrainer: `cost_3200.md` and `cost_32000.md` (this script with `--pools 3200` and "
            "`--pools 32000`).",
            "",
        ]
    else:
        lines += measure(
            [int(p) for p in options.pools.split(",")],
            [int(w) for w in options.widths.split(",")],
            [float(b) for b in options.budgets.split(",")],
            candidates,
        )
    if options.quality:
        lines += quality(options.quality)
        if options.table:
            lines += against_table(options.quality, options.table, options.table_method)
    lines.append(f"Command: `python benchmarks/cost.py {' '.join(sys.argv[1:])}`.")
    os.makedirs(os.path.dirname(options.out), exist_ok=True)
    with atomic_write(options.out) as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
