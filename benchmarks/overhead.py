"""What LEAD costs per training step: `SFTTrainer` vs `LEADSFTTrainer`, same model, data and steps.

A Llama-style model with a 32k vocabulary (the LM head dominates, as in real models) trains on the embedded pool.
SFT trains on exactly LEAD's batches (the samples LEAD chose, in its order, sequential sampler), so the step times
differ only by what LEAD adds. Runs go LEAD, SFT, SFT, LEAD, LEAD, SFT, ... (`--pairs` of each), so drift of the
machine hits both alike; each run is a fresh child process (one torch thread), so its peak resident memory is its
own. Reported: the median time per optimizer step (after the first round, which holds LEAD's one-off scoring pass,
reported apart) and peak memory, as ratios.
Targets: at most 3% more time and 5% more memory.

    python benchmarks/overhead.py [--pairs N]  ->  benchmarks/results/overhead.md
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import sys
import time

import numpy as np
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback
from trl import SFTConfig, SFTTrainer

from trl_lead import LEADConfig, LEADSFTTrainer
from trl_lead.cli import DEFAULT_DEMO_MIXTURE
from trl_lead.embedded import build_tokenizer
from trl_lead.files import atomic_write
from trl_lead.pool import make_instruction_pool

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from selection import cpu_training_args  # noqa: E402

STEPS, BATCH, ROUND, POOL = 40, 8, 80, 600  # rounds of 10 steps; a small pool keeps LEAD's scoring pass short


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.start)


def make_model(tokenizer) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32_000,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return LlamaForCausalLM(config)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))


def run(kind: str, order: list[int] | None = None) -> dict:
    """One training run in this (child) process; SFT trains on `pool.select(order)` in that order."""
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    tokenizer = build_tokenizer()
    pool, _ = make_instruction_pool(num_train=POOL, num_eval_per_family=2)
    output_dir = f"/tmp/overhead-{kind}"
    common = cpu_training_args(output_dir, BATCH, STEPS)
    timer = StepTimer()
    gc.collect()
    base_rss = rss_mb()  # after imports and data: what the run itself adds is measured against this
    if kind == "sft":
        trainer = SFTTrainer(
            model=make_model(tokenizer),
            args=SFTConfig(**common, train_sampling_strategy="sequential"),
            train_dataset=pool.select(order),
            processing_class=tokenizer,
            callbacks=[timer],
        )
    else:
        args = LEADConfig(**common, lead_cluster_column="family_id", lead_round_size=ROUND, lead_budget=0.5)
        trainer = LEADSFTTrainer(
            model=make_model(tokenizer), args=args, train_dataset=pool, processing_class=tokenizer, callbacks=[timer]
        )
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    steps_per_round = ROUND // BATCH
    times = np.array(timer.times[steps_per_round:])  # LEAD's first step of round 1 carries the scoring pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    order = [i for r in trainer.lead_state.rounds for i in r["sample_ids"]] if kind == "lead" else order
    return {
        "step_s": float(np.median(times)),
        "mean_step_s": float(times.mean()),
        "total_s": total,
        "peak_mb": peak,
        "peak_growth_mb": peak - base_rss,
        "params": trainer.model.num_parameters(),
        "order": order,
    }


def demo_scoring(seed: int = 0) -> dict:
    """At the demo's settings (`trl-lead demo`: the embedded base, the conflict-a pool, its LEADConfig defaults), the
    seconds of LEAD's one scoring pass over the pool (the initial scores the small-loss filter ranks, and the prompt
    embeddings), and of the k-means that groups those embeddings for the filter, against the seconds of the whole
    training run. There is no other held-out scoring: the defaults score nothing per round."""
    import tempfile

    import trl_lead.clustering
    from trl_lead.cli import DemoSettings, train_lead
    from trl_lead.embedded import load_embedded_default

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    base = load_embedded_default(seed=seed)
    base.train_dataset, base.eval_dataset = make_instruction_pool(mixture=DEFAULT_DEMO_MIXTURE, seed=seed)
    spent = []

    class TimedScoring(LEADSFTTrainer):
        def score_pool(self):
            start = time.perf_counter()
            try:
                return super().score_pool()
            finally:
                spent.append(time.perf_counter() - start)

    grouped = []
    embedding_groups = trl_lead.clustering.embedding_groups

    def timed_groups(*args, **kwargs):
        start = time.perf_counter()
        try:
            return embedding_groups(*args, **kwargs)
        finally:
            grouped.append(time.perf_counter() - start)

    trl_lead.clustering.embedding_groups = timed_groups  # the trainer imports it when it needs it
    with tempfile.TemporaryDirectory() as output_dir:
        start = time.perf_counter()
        trainer = train_lead(base, DemoSettings(seed=seed), output_dir, trainer_class=TimedScoring)
        total = time.perf_counter() - start
    return {
        "scoring_s": sum(spent),
        "grouping_s": sum(grouped),
        "passes": len(spent),
        "train_s": total,
        "filter": f"{trainer.args.lead_sample_filter!r}, lead_filter_groups={trainer.args.lead_filter_groups!r}",
    }


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="LEAD and SFT runs of each kind (alternating ABBA)")
    pairs = parser.parse_args(argv).pairs

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    results: dict[str, list[dict]] = {"sft": [], "lead": []}
    order = None
    # ABBA order (LEAD, SFT, SFT, LEAD, ...), so drift of the machine hits both alike
    for kind in [k for i in range(pairs) for k in (("lead", "sft") if i % 2 == 0 else ("sft", "lead"))]:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
            results[kind].append(child.submit(run, kind, order).result())
        order = results[kind][-1].pop("order")  # LEAD is deterministic: every LEAD run trains this order
        print(kind, results[kind][-1], flush=True)

    def median(kind: str, key: str) -> float:
        return float(np.median([r[key] for r in results[kind]]))

    demo = []
    for seed in range(3):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
            demo.append(child.submit(demo_scoring, seed).result())
        print("demo", demo[-1], flush=True)
    demo_rest = [d["train_s"] - d["scoring_s"] - d["grouping_s"] for d in demo]
    demo_share = [d["scoring_s"] / rest for d, rest in zip(demo, demo_rest)]
    group_share = [d["grouping_s"] / rest for d, rest in zip(demo, demo_rest)]

    sft_step, lead_step = median("sft", "step_s"), median("lead", "step_s")
    sft_mean, lead_mean = median("sft", "mean_step_s"), median("lead", "mean_step_s")
    lines = [
        "# Overhead of LEAD per training step",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, one torch thread, "
        f"{platform.platform()}, torch {torch.__version__}. Model: Llama-style, vocab 32k, "
        f"{results['sft'][0]['params'] / 1e6:.1f}M parameters (LEAD's update vectors are sketched above 1M). "
        f"{STEPS} steps of {BATCH} samples, LEAD rounds of {ROUND} samples ({ROUND // BATCH} steps); "
        f"{pairs} runs of each, alternating, each in a fresh process. Step times exclude the first round (LEAD's "
        "one-off scoring pass).",
        "",
        "| | SFTTrainer | LEADSFTTrainer | ratio |",
        "|---|---|---|---|",
        f"| median step time (ms) | {1e3 * sft_step:.1f} | {1e3 * lead_step:.1f} | {lead_step / sft_step:.3f} |",
        f"| mean step time (ms, rounds' ends included) | {1e3 * sft_mean:.1f} | {1e3 * lead_mean:.1f} | "
        f"{lead_mean / sft_mean:.3f} |",
        f"| whole run, scoring pass included (s) | {median('sft', 'total_s'):.1f} | {median('lead', 'total_s'):.1f} | "
        f"{median('lead', 'total_s') / median('sft', 'total_s'):.3f} |",
        f"| peak resident memory of the run's process (MB) | {median('sft', 'peak_mb'):.0f} | "
        f"{median('lead', 'peak_mb'):.0f} | {median('lead', 'peak_mb') / median('sft', 'peak_mb'):.3f} |",
        f"| peak memory added by the run itself (MB) | {median('sft', 'peak_growth_mb'):.0f} | "
        f"{median('lead', 'peak_growth_mb'):.0f} | "
        f"{median('lead', 'peak_growth_mb') / median('sft', 'peak_growth_mb'):.3f} |",
        "",
        "Targets: at most 3% more time per step and 5% more memory.",
        "",
        "## The scoring passes at the demo's settings",
        "",
        f"`trl-lead demo`'s LEAD run (embedded base, `{DEFAULT_DEMO_MIXTURE}` pool of 2,000 samples, 100 steps of 16, "
        f"`lead_sample_filter={demo[0]['filter']}`), 3 seeds, each in a fresh process: LEAD's one scoring pass over "
        "the pool (the initial scores the small-loss filter ranks by; the defaults score nothing per round) took "
        + ", ".join(f"{d['scoring_s']:.1f} s" for d in demo)
        + ", and the k-means grouping the prompt embeddings that pass yields "
        + ", ".join(f"{d['grouping_s']:.1f} s" for d in demo)
        + ", against "
        + ", ".join(f"{rest:.1f} s" for rest in demo_rest)
        + f" for the rest of the run: **{100 * np.median(demo_share):.0f}%** and "
        f"**{100 * np.median(group_share):.0f}%** of the training time (medians). The pass is one forward over the "
        "pool against forward and backward passes over budget x reuse samples, so its share grows with the pool "
        "(`lead_candidates` bounds it by a multiple of the budget: benchmarks/cost.py).",
    ]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "overhead.md")
    with atomic_write(path) as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
