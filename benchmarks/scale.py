"""Selection state memory and round-planning time on large pools. Run by hand:

    OMP_NUM_THREADS=1 python benchmarks/scale.py  ->  benchmarks/results/scale.md

For N in (1M, 10M) samples and K = 64 clusters: bytes per sample of `LEADState` and the selector's per-cluster
member index, and the median wall time of
`RoundSelector.plan_round` (choosing one round: policy, eligibility, masks, top-IDU in the cluster) and of
`finish_round` (IDU update, reward, per-cluster means) over 20 rounds of 10,000 samples, after a warm-up round.

    OMP_NUM_THREADS=2 python benchmarks/scale.py --groups 100000,1000000  ->  benchmarks/results/scale_groups.md

The comparison groups of the small-loss filter (`trl_lead.clustering.embedding_groups`, about 32 samples each) of N
896-wide embeddings (Qwen2.5-0.5B's width): N / 32 kinds of prompt, each a random centre plus noise; wall time and
how well the groups recover the kinds (adjusted Rand index on a 20,000-sample subset).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from envs.policies import make_policy
from trl_lead.selection import LEADState, RoundSelector
from trl_lead.settings import SelectionSettings


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def measure(n: int, k: int = 64, rounds: int = 20, round_size: int = 10_000) -> dict[str, float]:
    rng = np.random.default_rng(0)
    state = LEADState(rng.integers(0, k, n), num_clusters=k)
    state.set_initial_scores(rng.gamma(2.0, 1.0, n).astype(np.float32))
    per_sample = sum(a.nbytes for a in state.state_dict().values() if isinstance(a, np.ndarray) and a.size == n) / n
    policy = make_policy("exp3s")
    policy.reset(k, seed=0)
    # the settings the committed rows were measured with: mixture rounds, no filter, no size split
    settings = SelectionSettings(round_size=round_size, budget=n // 4, sample_filter="none", split_by_size=False)
    selector = RoundSelector(state, policy, settings, seed=0)
    plan_times, finish_times = [], []
    for r in range(rounds + 1):
        start = time.perf_counter()
        planned = selector.plan_round()
        planned_at = time.perf_counter()
        losses = state.idu[planned.sample_ids] * 0.9
        selector.finish_round(planned, planned.sample_ids, losses)
        finished = time.perf_counter()
        if r:  # the first round warms caches
            plan_times.append(planned_at - start)
            finish_times.append(finished - planned_at)
    per_sample += sum(m.nbytes for m in selector.cluster_members) / n  # the selector's per-cluster member index
    return {
        "bytes_per_sample": per_sample,
        "plan_ms": 1e3 * float(np.median(plan_times)),
        "plan_ms_max": 1e3 * float(np.max(plan_times)),
        "finish_ms": 1e3 * float(np.median(finish_times)),
    }


def measure_groups(n: int, width: int = 896) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score

    from trl_lead.clustering import PROMPT_GROUP_SIZE, embedding_groups

    rng = np.random.default_rng(0)
    kinds = n // PROMPT_GROUP_SIZE
    truth = rng.integers(0, kinds, n)
    x = rng.standard_normal((kinds, width), dtype=np.float32)[truth]
    x += 0.5 * rng.standard_normal((n, width), dtype=np.float32)
    start, cpu = time.perf_counter(), time.process_time()
    groups = embedding_groups(x, seed=0)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    sizes = np.bincount(groups)
    check = rng.choice(n, min(n, 20_000), replace=False)
    return {
        "seconds": seconds,
        "cpu": cpu,
        "groups": int((sizes > 0).sum()),
        "median_size": float(np.median(sizes[sizes > 0])),
        "ari": adjusted_rand_score(truth[check], groups[check]),
    }


def groups_main(sizes: list[int]) -> None:
    lines = [
        "# Comparison groups at scale",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), "
        f"{platform.platform()}, shared with other jobs (the wall time moves with their load; the CPU time of the 2 "
        "threads, halved, is what an idle machine would take, but above 10,000 samples the many small k-means and the "
        "passes run on one thread, so there it is closer to the CPU time unhalved). `embedding_groups` on N x 896 "
        "float32 embeddings, N / 32 kinds of prompt (random centres, noise 0.5 per coordinate); adjusted Rand index "
        "against the kinds on 20,000 samples.",
        "",
        "| N | wall (s) | CPU time, both threads (s) | groups | median group size | adjusted Rand index |",
        "|---|---|---|---|---|---|",
    ]
    for n in sizes:
        m = measure_groups(n)
        lines.append(
            f"| {n:,} | {m['seconds']:.0f} | {m['cpu']:.0f} | {m['groups']:,} | {m['median_size']:.0f} | "
            f"{m['ari']:.3f} |"
        )
        print(lines[-1], flush=True)
    command = f"OMP_NUM_THREADS=2 python benchmarks/scale.py --groups {','.join(map(str, sizes))}"
    lines += ["", f"Target: at most 5 minutes at 1M on 2 cores. Command: `{command}`."]
    path = os.path.join(os.path.dirname(__file__), "results", "scale_groups.md")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", help="comma-separated pool sizes: measure the comparison groups instead")
    options = parser.parse_args()
    if options.groups:
        groups_main([int(n) for n in options.groups.split(",")])
        return
    lines = [
        "# Selection state at scale",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores (run with OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
        f"), {platform.platform()}, numpy {np.__version__}. K = 64 clusters, rounds of 10,000 samples, policy exp3s,",
        "fine selection top-IDU, budget N/4; median of 20 rounds after one warm-up round.",
        "",
        "| pool N | state bytes / sample | plan_round median (ms) | plan_round max (ms) | finish_round median (ms) |",
        "|---|---|---|---|---|",
    ]
    for n in (1_000_000, 10_000_000):
        m = measure(n)
        lines.append(
            f"| {n:,} | {m['bytes_per_sample']:.0f} | {m['plan_ms']:.1f} | {m['plan_ms_max']:.1f} | "
            f"{m['finish_ms']:.1f} |"
        )
        print(lines[-1], flush=True)
    lines += ["", "Targets: at most 32 bytes per sample; one round chosen over 10M samples in under 100 ms."]
    path = os.path.join(os.path.dirname(__file__), "results", "scale.md")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
